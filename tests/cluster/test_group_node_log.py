"""One log per node shared by every group member it hosts: records split back per group,
one fsync covers several groups, a segment stays until every group's base has passed it,
nothing is reported durable before its fsync, and members recover from it after a restart."""

from __future__ import annotations

import asyncio
import functools
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from keeldb.cluster import group as group_module
from keeldb.cluster import group_storage
from keeldb.cluster.group import (
    DRIVER_WAKE_TICKS,
    NODE_LOG_SYNC_ENV,
    GroupClosed,
    GroupLog,
    GroupOptions,
    NodeLog,
    member_name,
    node_log_directory,
)
from keeldb.cluster.group_kv import KEY_PREFIX, KvMachine, KvService
from keeldb.cluster.group_storage import (
    MEMBER_TOKEN_FILE,
    NODE_LOG_SEGMENTS_SOFT_MAX,
    NodeWal,
)
from keeldb.consensus.messages import (
    AcceptRecord,
    CommitRecord,
    IncarnationRecord,
    PromiseRecord,
)
from keeldb.consensus.replica import DurableState
from keeldb.consensus.types import Ballot, Config, Entry, EntryKind, LogEntry, Member, NodeId
from keeldb.net.transport import Transport
from keeldb.storage.lmdb_store import LmdbStore

SECRET = b"node-log-test-secret-0123456789abcdef"
TEST_SECONDS_MAX = 60.0
PUT_SECONDS_MAX = 15.0
TICK_SECONDS = 0.05  # the NodeSet's groups' tick
SMALL_SEGMENT_BYTES = 64 * 1024
REWRITE_TEST_WRITES = 120


def _accept(slot: int, tag: bytes) -> AcceptRecord:
    return AcceptRecord(LogEntry(slot, Ballot(1, 1), Entry(EntryKind.COMMAND, tag, 1, slot)))


def _history(tag: bytes, count: int) -> list:
    return [IncarnationRecord(1), PromiseRecord(Ballot(1, 1))] + [
        _accept(slot, tag) for slot in range(1, count + 1)
    ]


def _open(wal: NodeWal, base: Path, *groups: str) -> dict[str, list]:
    return {g: wal.open_group(g, base / "groups" / g / "log" / MEMBER_TOKEN_FILE) for g in groups}


def test_node_log_gives_each_group_back_its_own_records_in_order(tmp_path: Path) -> None:
    wal = NodeWal(tmp_path / "node-log")
    assert _open(wal, tmp_path, "p0", "p1") == {"p0": [], "p1": []}
    a, b = _history(b"a", 30), _history(b"b", 20)
    for i in range(len(a)):
        batch = [("p0", a[i : i + 1])]
        if i < len(b):
            batch.append(("p1", b[i : i + 1]))
        wal.append(batch)
    wal.close()
    again = NodeWal(tmp_path / "node-log")
    assert _open(again, tmp_path, "p0", "p1") == {"p0": a, "p1": b}
    assert again.records_since_rewrite("p0") == len(a)
    again.close()


def test_one_fsync_covers_a_batch_of_several_groups(tmp_path: Path) -> None:
    wal = NodeWal(tmp_path / "node-log")
    _open(wal, tmp_path, "p0", "p1", "meta")
    before = wal.fsync_count
    wal.append([("p0", [_accept(1, b"a")]), ("p1", [_accept(1, b"b")]), ("meta", [])])
    assert wal.fsync_count == before + 1
    wal.close()


def test_a_member_whose_directory_was_removed_starts_empty_and_holds_nothing_back(
    tmp_path: Path,
) -> None:
    wal = NodeWal(tmp_path / "node-log", segment_bytes=2048, groups_dir=tmp_path / "groups")
    _open(wal, tmp_path, "gone", "busy")
    wal.append([("gone", _history(b"g", 5))])
    busy = _history(b"busy" * 20, 200)
    for i in range(0, len(busy), 10):
        wal.append([("busy", busy[i : i + 10])])
    wal.close()
    # The node stops holding a replica of "gone": its directory goes, as it did when each
    # member had its own log there.
    shutil.rmtree(tmp_path / "groups" / "gone")
    again = NodeWal(tmp_path / "node-log", segment_bytes=2048, groups_dir=tmp_path / "groups")
    assert _open(again, tmp_path, "busy") == {"busy": busy}
    # Its old records hold back no segment once "busy" has a new base ...
    assert again.rewrite("busy", DurableState.replay(busy).records()) > 0
    assert int(again.segment_paths()[0].name.split(".")[0]) > 5
    # ... and a member of it made here again starts empty, as with a removed directory.
    assert _open(again, tmp_path, "gone") == {"gone": []}
    again.close()
    third = NodeWal(tmp_path / "node-log", segment_bytes=2048)
    assert _open(third, tmp_path, "gone")["gone"] == []
    third.close()


def test_a_segment_stays_until_every_groups_base_has_passed_it(tmp_path: Path) -> None:
    wal = NodeWal(tmp_path / "node-log", segment_bytes=2048)
    _open(wal, tmp_path, "quiet", "busy")
    busy, quiet = _history(b"busy" * 20, 200), _history(b"q", 3)
    wal.append([("quiet", quiet)])
    for i in range(0, 200, 10):
        wal.append([("busy", busy[i : i + 10])])
    assert len(wal.segment_paths()) > 3
    # The busy group restates its state: the quiet group's records are in the first
    # segment, so nothing may go yet.
    state = DurableState.replay(busy)
    assert wal.rewrite("busy", state.records()) == 0
    # Once the quiet group has a base too, every segment before both bases goes.
    removed = wal.rewrite("quiet", DurableState.replay(quiet).records())
    assert removed > 0
    wal.close()
    again = NodeWal(tmp_path / "node-log", segment_bytes=2048)
    records = _open(again, tmp_path, "quiet", "busy")
    assert DurableState.replay(records["busy"]) == state
    assert DurableState.replay(records["quiet"]) == DurableState.replay(quiet)
    again.close()


def test_a_quiet_group_is_asked_to_rebase_when_it_holds_old_segments(tmp_path: Path) -> None:
    wal = NodeWal(tmp_path / "node-log", segment_bytes=2048)
    _open(wal, tmp_path, "quiet", "busy")
    wal.append([("quiet", _history(b"q", 2))])
    busy = _history(b"busy" * 20, 400)
    for i in range(0, len(busy), 10):
        wal.append([("busy", busy[i : i + 10])])
    segments_before = len(wal.segment_paths())
    assert segments_before > NODE_LOG_SEGMENTS_SOFT_MAX
    assert wal.rebase_wanted("quiet")
    assert wal.rebase_wanted("busy")  # its base is in the oldest segment too
    wal.rewrite("busy", DurableState.replay(busy).records())
    wal.rewrite("quiet", DurableState.replay(_history(b"q", 2)).records())
    assert not wal.rebase_wanted("quiet")
    # What is left starts after both groups' old records.
    remaining = wal.segment_paths()
    assert int(remaining[0].name.split(".")[0]) > len(busy)
    wal.close()


def test_a_torn_rewrite_of_one_group_keeps_its_history_and_the_other_groups(
    tmp_path: Path,
) -> None:
    wal = NodeWal(tmp_path / "node-log")
    _open(wal, tmp_path, "p0", "p1")
    a, b = _history(b"a", 10), _history(b"b", 10)
    wal.append([("p0", a), ("p1", b)])
    wal.rewrite("p0", DurableState.replay(a).records())
    wal.append([("p1", [CommitRecord(10)])])
    wal.close()
    # Cut the last records off: p0's base loses part of its list, p1 its commit record.
    segment = max((tmp_path / "node-log").glob("*.wal"))
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 60])
    again = NodeWal(tmp_path / "node-log")
    records = _open(again, tmp_path, "p0", "p1")
    assert DurableState.replay(records["p0"]) == DurableState.replay(a)
    assert records["p1"] == b
    again.close()


async def _close_and_check_a_then_b(node_log: NodeLog, tmp_path: Path) -> None:
    """Close both members; the log then holds p0's two records and p1's one, in order."""
    await node_log.close_member("p0")
    await node_log.close_member("p1")
    reopened = NodeWal(tmp_path / "node-log")
    assert _open(reopened, tmp_path, "p0", "p1") == {
        "p0": [_accept(1, b"a"), _accept(2, b"a")],
        "p1": [_accept(1, b"b")],
    }
    reopened.close()


def test_records_are_reported_durable_only_after_the_fsync_covering_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk thread does the rounds here, so that the test can hold one back.
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "thread")

    async def body() -> None:
        transport = Transport("node1", "127.0.0.1", 0, SECRET)
        node_log = NodeLog.for_transport(transport, tmp_path / "node-log")
        tokens = tmp_path / "groups"
        assert await node_log.open_member("p0", tokens / "p0" / "log" / MEMBER_TOKEN_FILE) == []
        assert await node_log.open_member("p1", tokens / "p1" / "log" / MEMBER_TOKEN_FILE) == []
        wal = node_log.wal
        assert wal is not None
        gate = threading.Event()
        synced: list[int] = []
        real_append = wal.append

        def gated_append(batch: list) -> None:
            gate.wait(10)
            real_append(batch)
            synced.append(len(batch))

        wal.append = gated_append  # type: ignore[method-assign]
        first = asyncio.ensure_future(node_log.append("p0", [_accept(1, b"a")]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(node_log.append("p1", [_accept(1, b"b")]))
        third = asyncio.ensure_future(node_log.append("p0", [_accept(2, b"a")]))
        await asyncio.sleep(0.2)
        assert not first.done() and not second.done() and not third.done()
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second, third), 10)
        # The two appends queued behind the first flush share the next one.
        assert synced == [1, 2]
        await _close_and_check_a_then_b(node_log, tmp_path)

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


def test_a_round_is_fsynced_on_the_loop_thread_unless_the_files_are_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "inline")

    async def body() -> None:
        transport = Transport("node1", "127.0.0.1", 0, SECRET)
        node_log = NodeLog.for_transport(transport, tmp_path / "node-log")
        tokens = tmp_path / "groups"
        assert await node_log.open_member("p0", tokens / "p0" / "log" / MEMBER_TOKEN_FILE) == []
        wal = node_log.wal
        assert wal is not None
        threads: list[int] = []
        real_append = wal.append

        def noting_append(batch: list) -> None:
            threads.append(threading.get_ident())
            real_append(batch)

        wal.append = noting_append  # type: ignore[method-assign]
        await node_log.append("p0", [_accept(1, b"a")])
        assert threads == [threading.get_ident()]  # the loop's own thread
        assert node_log.inline_flushes == 1
        # A rewrite holds the files in the disk thread: the next round waits for it there
        # instead of blocking the loop.
        release = threading.Event()
        held = threading.Event()

        def hold_files() -> None:
            with node_log._files_lock:
                held.set()
                release.wait(10)

        holder = asyncio.get_running_loop().run_in_executor(None, hold_files)
        await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
        second = asyncio.ensure_future(node_log.append("p0", [_accept(2, b"a")]))
        await asyncio.sleep(0.1)
        assert not second.done()  # the loop went on; the round waits for the files
        release.set()
        await asyncio.wait_for(second, 10)
        await holder
        assert len(threads) == 2 and threads[1] != threading.get_ident()
        assert node_log.inline_flushes == 1 and node_log.flush_count == 2
        await node_log.close_member("p0")
        reopened = NodeWal(tmp_path / "node-log")
        assert _open(reopened, tmp_path, "p0") == {"p0": [_accept(1, b"a"), _accept(2, b"a")]}
        reopened.close()

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


class _HeldSync:
    """The node log's io_uring syncer with its completions held until the test lets them
    through (the kernel's real fdatasync then runs)."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.held: list[tuple[int, Callable[[OSError | None], None]]] = []

    def fdatasync(self, fd: int, done: Callable[[OSError | None], None]) -> None:
        self.held.append((fd, done))

    def release(self, error: OSError | None = None) -> None:
        held, self.held = self.held, []
        for fd, done in held:
            if error is None:
                self.real.fdatasync(fd, done)  # type: ignore[attr-defined]
            else:
                done(error)

    def in_flight(self) -> int:
        return len(self.held)

    def close(self) -> None:
        self.real.close()  # type: ignore[attr-defined]


def test_an_async_round_is_written_on_the_loop_and_durable_only_after_its_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "async")

    async def body() -> None:
        transport = Transport("node1", "127.0.0.1", 0, SECRET)
        node_log = NodeLog.for_transport(transport, tmp_path / "node-log")
        tokens = tmp_path / "groups"
        for group in ("p0", "p1"):
            await node_log.open_member(group, tokens / group / "log" / MEMBER_TOKEN_FILE)
        if node_log._syncer is None:
            pytest.skip("io_uring is not available here")
        held = _HeldSync(node_log._syncer)
        node_log._syncer = held  # type: ignore[assignment]
        wal = node_log.wal
        assert wal is not None
        threads: list[int] = []
        real_write = wal.write

        def noting_write(round_: object) -> None:
            threads.append(threading.get_ident())
            real_write(round_)  # type: ignore[arg-type]

        wal.write = noting_write  # type: ignore[method-assign]
        first = node_log.submit("p0", [_accept(1, b"a")])
        await asyncio.sleep(0.05)
        second = node_log.submit("p1", [_accept(1, b"b")])
        third = node_log.submit("p0", [_accept(2, b"a")])
        await asyncio.sleep(0.1)
        assert threads == [threading.get_ident()]  # written by the loop's own thread
        assert len(held.held) == 1
        assert not first.done() and not second.done() and not third.done()
        assert node_log._files_lock.locked()  # no rewrite or close while it syncs
        held.release()
        await asyncio.wait_for(first, 10)
        assert not second.done()  # the next round: its own fdatasync, held
        for _ in range(100):
            if held.held:
                break
            await asyncio.sleep(0.01)
        assert len(held.held) == 1
        held.release()
        await asyncio.wait_for(asyncio.gather(second, third), 10)
        assert node_log.async_flushes == 2 and node_log.flush_count == 2
        assert not node_log._files_lock.locked()
        await _close_and_check_a_then_b(node_log, tmp_path)

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


def test_a_failed_async_fdatasync_fails_the_round_and_stops_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "async")

    async def body() -> None:
        transport = Transport("node1", "127.0.0.1", 0, SECRET)
        node_log = NodeLog.for_transport(transport, tmp_path / "node-log")
        await node_log.open_member("p0", tmp_path / "groups" / "p0" / "log" / MEMBER_TOKEN_FILE)
        if node_log._syncer is None:
            pytest.skip("io_uring is not available here")
        held = _HeldSync(node_log._syncer)
        node_log._syncer = held  # type: ignore[assignment]
        first = node_log.submit("p0", [_accept(1, b"a")])
        await asyncio.sleep(0.05)
        held.release(OSError(5, "Input/output error"))
        with pytest.raises(Exception, match="fsync"):
            await asyncio.wait_for(first, 10)
        with pytest.raises(GroupClosed):
            node_log.submit("p0", [_accept(2, b"a")])

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


def test_only_a_cluster_nodes_layout_shares_the_node_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert node_log_directory(data / "groups" / "p0" / "log", "p0") == data / "node-log"
    assert node_log_directory(data / "groups" / "p0" / "log", "p1") is None
    assert node_log_directory(tmp_path / "node1" / "group", "kv") is None


GROUPS = ("meta", "p0", "p1")


class NodeSet:
    """Three nodes on this event loop, each hosting a member of every group in GROUPS,
    with a cluster node's directory layout (so their members share one log per node)."""

    def __init__(self, base: Path, config: Config | None = None) -> None:
        self.base = base
        self.config = Config.standard([1, 2, 3]) if config is None else config
        self.names = [member_name(n) for n in (1, 2, 3)]
        self.ports = dict.fromkeys(self.names, 0)
        self.transports: dict[str, Transport] = {}
        self.groups: dict[tuple[str, str], GroupLog] = {}
        self.stores: dict[tuple[str, str], LmdbStore] = {}
        self.services: dict[tuple[str, str], KvService] = {}
        self.fatal: list[BaseException] = []

    async def start(self) -> None:
        for name in self.names:
            transport = Transport(name, "127.0.0.1", self.ports[name], SECRET)
            self.ports[name] = await transport.start()
            self.transports[name] = transport
        for name, transport in self.transports.items():
            for other, port in self.ports.items():
                if other != name:
                    transport.add_peer(other, "127.0.0.1", port)
        options = GroupOptions(tick_seconds=TICK_SECONDS, on_fatal=self.fatal.append)
        for name in self.names:
            for group_id in GROUPS:
                group_dir = self.base / name / "groups" / group_id
                store = LmdbStore(group_dir / "store")
                machine = KvMachine(store)
                group = GroupLog(
                    group_id,
                    name,
                    self.config,
                    self.transports[name],
                    group_dir / "log",
                    store,
                    machine.apply,
                    options=options,
                )
                await group.start()
                self.groups[name, group_id] = group
                self.stores[name, group_id] = store
                self.services[name, group_id] = KvService(group, machine)

    async def stop(self) -> None:
        for name in self.names:
            await self.transports[name].close()
            for group_id in GROUPS:
                await self.groups[name, group_id].close()
                self.stores[name, group_id].close()
        self.groups.clear()
        assert self.fatal == []

    async def put(self, group_id: str, key: str, value: bytes) -> None:
        deadline = time.monotonic() + PUT_SECONDS_MAX
        while True:
            for name in self.names:
                if self.groups[name, group_id].is_leader:
                    reply = await self.services[name, group_id].handle(
                        "client", {"op": "put", "key": key, "value": value}
                    )
                    if reply["ok"]:
                        return
            assert time.monotonic() < deadline, f"no write to {group_id} within the deadline"
            await asyncio.sleep(0.02)

    def values(self, name: str, group_id: str) -> dict[bytes, bytes]:
        store = self.stores[name, group_id]
        return dict(store.scan(KEY_PREFIX, KEY_PREFIX + b"\xff"))


@pytest.mark.process
def test_members_of_several_groups_share_one_log_per_node_and_recover_from_it(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        nodes = NodeSet(tmp_path)
        await nodes.start()

        async def writer(group_id: str) -> None:
            for i in range(40):
                await nodes.put(group_id, f"k{i % 5}", b"%s-%d" % (group_id.encode(), i))

        await asyncio.gather(*(writer(g) for g in GROUPS))
        persists = sum(nodes.groups["node1", g].persist_count for g in GROUPS)
        node_log = NodeLog.for_transport(nodes.transports["node1"], tmp_path / "node1" / "node-log")
        # Every member's persists went through the node log (rounds of different groups
        # share an fsync when they meet; how often depends on timing).
        # (a member may be between its append and its count: at most one each)
        assert persists <= node_log.appends_flushed <= persists + len(GROUPS)
        # Every round holds at least one submission: an append, or commit points queued
        # lazily that a finished round found waiting (a round of those alone).
        assert 0 < node_log.flush_count <= node_log.appends_flushed + node_log.lazy_flushed
        for group_id in GROUPS:
            assert not list((tmp_path / "node1" / "groups" / group_id / "log").glob("*.wal"))
        assert list((tmp_path / "node1" / "node-log").glob("*.wal"))
        await nodes.stop()

        again = NodeSet(tmp_path)
        again.ports = nodes.ports
        await again.start()
        for group_id in GROUPS:
            # Each member rebuilt its own consensus state from its share of the log (its
            # commit point as last persisted; a later one is learned again from the leader).
            assert again.groups["node1", group_id].replica.commit_slot > 0
            await again.put(group_id, "after", b"restart")
        # Every member of every group ends with every write (the last of each key).
        deadline = time.monotonic() + PUT_SECONDS_MAX
        for group_id in GROUPS:
            expected = {KEY_PREFIX + b"after": b"restart"}
            expected.update(
                {KEY_PREFIX + b"k%d" % j: b"%s-%d" % (group_id.encode(), 35 + j) for j in range(5)}
            )
            for name in again.names:
                while again.values(name, group_id) != expected:
                    assert time.monotonic() < deadline, f"{name} lacks writes of {group_id}"
                    await asyncio.sleep(0.02)
        await again.stop()

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


@pytest.mark.process
def test_a_log_only_member_is_never_asked_to_rewrite_for_the_oldest_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 3 holds log-only members: they keep every entry, so their base stays in the
    node log's oldest segment. Full members there are asked to restate their state (a
    rewrite) to free old segments; a log-only member never is, since its rewrite would
    copy its whole log to the head, and those copies would fill the segments that ask
    for the next rewrites."""
    monkeypatch.setattr(group_storage, "NODE_LOG_SEGMENTS_SOFT_MAX", 2)
    monkeypatch.setattr(
        group_module, "NodeWal", functools.partial(NodeWal, segment_bytes=SMALL_SEGMENT_BYTES)
    )
    config = Config(
        (
            Member(NodeId(1), "a"),
            Member(NodeId(2), "b"),
            Member(NodeId(3), "c", log_only=True),
        ),
        q1=2,
        q2=2,
    )

    async def body() -> None:
        nodes = NodeSet(tmp_path, config)
        await nodes.start()
        assert all(nodes.groups["node3", g].replica.log_only for g in GROUPS)
        value = b"v" * 2000

        async def writer(group_id: str) -> None:
            for i in range(REWRITE_TEST_WRITES):
                await nodes.put(group_id, f"k{i % 5}", value)

        await asyncio.gather(*(writer(g) for g in GROUPS))
        node3_log = NodeLog.for_transport(
            nodes.transports["node3"], tmp_path / "node3" / "node-log"
        )
        segments = len(node3_log.wal.segment_paths()) if node3_log.wal is not None else 0
        assert segments > group_storage.NODE_LOG_SEGMENTS_SOFT_MAX
        # The full members were asked (at their housekeeping, once a second) to rewrite.
        deadline = time.monotonic() + PUT_SECONDS_MAX
        while not all(
            sum(nodes.groups[n, g].rewrites for g in GROUPS) > 0 for n in ("node1", "node2")
        ):
            assert time.monotonic() < deadline, "no full member rewrote for the oldest segment"
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * TICK_SECONDS * DRIVER_WAKE_TICKS)  # two housekeeping wakes
        assert [nodes.groups["node3", g].rewrites for g in GROUPS] == [0, 0, 0]
        # Its log still holds every entry it accepted: none was dropped in its place.
        for group_id in GROUPS:
            member = nodes.groups["node3", group_id].replica
            assert len(member.durable_state().log) >= REWRITE_TEST_WRITES
        await nodes.stop()

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


def test_a_lazy_commit_point_starts_no_round_and_goes_with_the_next_one(tmp_path: Path) -> None:
    async def body() -> None:
        transport = Transport("node1", "127.0.0.1", 0, SECRET)
        node_log = NodeLog.for_transport(transport, tmp_path / "node-log")
        tokens = tmp_path / "groups"
        assert await node_log.open_member("p0", tokens / "p0" / "log" / MEMBER_TOKEN_FILE) == []
        await node_log.append("p0", [_accept(1, b"a")])
        rounds = node_log.flush_count
        node_log.submit_lazily("p0", [CommitRecord(1)])
        await asyncio.sleep(0.1)
        assert node_log.flush_count == rounds  # no round of its own
        await node_log.append("p0", [_accept(2, b"a")])
        assert node_log.flush_count == rounds + 1
        assert node_log.lazy_flushed == 1
        await node_log.close_member("p0")
        reopened = NodeWal(tmp_path / "node-log")
        # In the order submitted, written by the round that followed.
        assert _open(reopened, tmp_path, "p0") == {
            "p0": [_accept(1, b"a"), CommitRecord(1), _accept(2, b"a")]
        }
        reopened.close()

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


def test_a_round_calls_each_members_finisher_once_after_every_future_is_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "thread")

    async def body() -> None:
        transport = Transport("node1", "127.0.0.1", 0, SECRET)
        node_log = NodeLog.for_transport(transport, tmp_path / "node-log")
        tokens = tmp_path / "groups"
        for group in ("p0", "p1"):
            await node_log.open_member(group, tokens / group / "log" / MEMBER_TOKEN_FILE)
        wal = node_log.wal
        assert wal is not None
        gate = threading.Event()
        real_append = wal.append

        def gated_append(batch: list) -> None:
            gate.wait(10)
            real_append(batch)

        wal.append = gated_append  # type: ignore[method-assign]
        calls: list[tuple[str, list[bool]]] = []
        futures: list[asyncio.Future[None]] = []

        def finisher(name: str) -> Callable[[], None]:
            def finish() -> None:  # sees every future of the round settled
                calls.append((name, [f.done() for f in futures]))

            return finish

        p0, p1 = finisher("p0"), finisher("p1")
        futures.append(node_log.submit("p0", [_accept(1, b"a")], p0))
        await asyncio.sleep(0.05)  # the first round is in the disk thread, held
        futures.append(node_log.submit("p1", [_accept(1, b"b")], p1))
        futures.append(node_log.submit("p0", [_accept(2, b"a")], p0))  # same round, p0 again
        futures.append(node_log.submit("p1", [_accept(2, b"b")]))  # nobody to call
        futures.append(node_log.submit("p0", [_accept(3, b"a")], p0))  # and again
        assert not calls
        gate.set()
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert calls == [("p0", [True] + [False] * 4), ("p1", [True] * 5), ("p0", [True] * 5)]
        # A round that fails still calls them (the futures hold the error).
        failed: list[bool] = []

        def broken_append(batch: list) -> None:
            raise OSError("the disk is gone")

        wal.append = broken_append  # type: ignore[method-assign]
        future = node_log.submit("p0", [_accept(4, b"a")], lambda: failed.append(future.done()))
        with pytest.raises(OSError):
            await asyncio.wait_for(future, 10)
        assert failed == [True]
        wal.append = real_append  # type: ignore[method-assign]
        await node_log.close_member("p0")
        await node_log.close_member("p1")

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


class _PassMember:
    """Stands in for a group driver in a drive pass: its drive sends one message to the
    peer and queues one record for the node log, as a Ready does."""

    def __init__(self, transport: Transport, node_log: NodeLog, group: str) -> None:
        self._transport = transport
        self.group_id = group
        self._node_log = node_log
        self.futures: list[asyncio.Future[None]] = []

    def _drive_callback(self) -> None:
        assert self._transport.send("node2", "ch", self.group_id)
        self.futures.append(self._node_log.submit(self.group_id, [_accept(1, b"a")]))


async def _connected_pair(node_log_dir: Path) -> tuple[Transport, Transport, NodeLog]:
    a = Transport("node1", "127.0.0.1", 0, SECRET)
    b = Transport("node2", "127.0.0.1", 0, SECRET)
    await a.start()
    await b.start()
    a.add_peer("node2", "127.0.0.1", b.port)

    async def echo(sender: str, payload: object) -> object:
        return payload

    b.register("echo", echo)
    b.register("ch", lambda sender, payload: None)
    assert await a.call("node2", "echo", "up", 5) == "up"  # connected
    return a, b, NodeLog.for_transport(a, node_log_dir)


@pytest.mark.interpreted  # fakes stand in for GroupLog, whose type compiled code checks
def test_a_drive_pass_sends_its_messages_and_starts_its_round_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "thread")

    async def body() -> None:
        a, b, node_log = await _connected_pair(tmp_path / "node-log")
        tokens = tmp_path / "groups"
        for group in ("p0", "p1"):
            await node_log.open_member(group, tokens / group / "log" / MEMBER_TOKEN_FILE)
        frames = a.stats()["peers"]["node2"]["frames_sent"]
        rounds = node_log.flush_count
        members = [_PassMember(a, node_log, g) for g in ("p0", "p1")]
        drive_pass = group_module._DrivePass.of(asyncio.get_running_loop())
        for member in members:
            drive_pass.add(member)  # type: ignore[arg-type]
        drive_pass._run()  # the callback `add` scheduled, run here to look right after it
        # Both members' messages left in one frame, and one round holds both records,
        # before any other callback of the loop ran.
        assert a.stats()["peers"]["node2"]["frames_sent"] == frames + 1
        assert node_log._flushing is not None and len(node_log._flushing) == 2
        await asyncio.wait_for(asyncio.gather(*(f for m in members for f in m.futures)), 10)
        assert node_log.flush_count == rounds + 1
        await node_log.close_member("p0")
        await node_log.close_member("p1")
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


def test_what_members_send_when_a_round_completes_leaves_with_the_completion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NODE_LOG_SYNC_ENV, "thread")

    async def body() -> None:
        a, b, node_log = await _connected_pair(tmp_path / "node-log")
        await node_log.open_member("p0", tmp_path / "groups" / "p0" / "log" / MEMBER_TOKEN_FILE)

        def frames_sent() -> int:
            sent: int = a.stats()["peers"]["node2"]["frames_sent"]
            return sent

        frames = frames_sent()
        seen: list[int] = []

        def vote() -> None:  # a member sends its vote once the round made it durable
            assert a.send("node2", "ch", "vote")

        future = node_log.submit("p0", [_accept(1, b"a")], vote)
        # The future's callbacks were scheduled when the round settled it, before the
        # member's send: this one runs ahead of any callback that send could have left.
        future.add_done_callback(lambda _: seen.append(frames_sent()))
        await asyncio.wait_for(future, 10)
        await asyncio.sleep(0)
        assert seen == [frames + 1]  # written by the completion itself
        await node_log.close_member("p0")
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))
