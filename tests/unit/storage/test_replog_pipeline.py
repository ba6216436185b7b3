"""The disk thread's flusher: the next group is written as soon as an fsync returns, and a
group is still acknowledged only after its own fsync, applied in log order."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from keeldb.storage.memory import MemoryStore
from keeldb.storage.protocols import Entry
from keeldb.storage.replog import DiskThread, LocalLog, LogFailedError

WAIT_SECONDS_MAX = 10.0  # generous: the host may be loaded


class GatedFsync:
    """An fsync that syncs nothing and, for the fsyncs named in `held`, waits until the
    test opens its gate; it counts the fsyncs that returned."""

    def __init__(self, held: set[int]) -> None:
        self.held = held
        self.gates = {number: threading.Event() for number in held}
        self.started: list[int] = []
        self.returned = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self._lock:
            self.calls += 1
            number = self.calls
        self.started.append(number)
        if number in self.gates:
            assert self.gates[number].wait(WAIT_SECONDS_MAX), f"fsync {number} never released"
        self.returned += 1


def recording_apply(store: MemoryStore, applied: list[list[int]]) -> object:
    def apply(entries: Sequence[Entry]) -> None:
        applied.append([lsn for lsn, _ in entries])
        for lsn, record in entries:
            store.write([(b"k%d" % lsn, record)], [], applied_lsn=lsn)

    return apply


async def until(condition: object, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS_MAX
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def test_a_group_written_behind_another_is_acknowledged_only_after_its_own_fsync(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        applied: list[list[int]] = []
        # The log's own fsyncs at open are not gated: count them first.
        fsync = GatedFsync(held=set())
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            recording_apply(store, applied),
            fsync=fsync,
            sync_mode="thread",  # the disk thread's pipeline, whatever KEELDB_WAL_SYNC says
        )
        opened = fsync.calls
        first_group, second_group = opened + 1, opened + 2
        fsync.gates = {n: threading.Event() for n in (first_group, second_group)}

        first = [asyncio.ensure_future(log.append(b"a%d" % i)) for i in range(3)]
        await until(lambda: first_group in fsync.started, "the first group's fsync")
        second = [asyncio.ensure_future(log.append(b"b%d" % i)) for i in range(4)]
        await asyncio.sleep(0.05)  # the second job waits in the disk thread
        assert not any(f.done() for f in first + second)

        fsync.gates[first_group].set()
        await until(lambda: all(f.done() for f in first), "the first group's answers")
        # The second group was written right after the first fsync returned, in the disk
        # thread; its own fsync is held, so none of its writers may hear back.
        await until(lambda: second_group in fsync.started, "the second group's fsync")
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in second)
        assert store.applied_lsn() == 3

        fsync.gates[second_group].set()
        assert await asyncio.gather(*second) == [4, 5, 6, 7]
        assert [f.result() for f in first] == [1, 2, 3]
        assert applied == [[1, 2, 3], [4, 5, 6, 7]]
        await log.close()

    asyncio.run(scenario())


def test_a_checkpoint_waits_until_the_groups_in_flight_are_applied(tmp_path: Path) -> None:
    synced_at: list[int] = []

    class SyncRecordingStore(MemoryStore):
        def sync(self) -> None:
            synced_at.append(self.applied_lsn())

    async def scenario() -> None:
        store = SyncRecordingStore()
        applied: list[list[int]] = []
        fsync = GatedFsync(held=set())
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            recording_apply(store, applied),
            fsync=fsync,
            sync_mode="thread",  # the disk thread's pipeline, whatever KEELDB_WAL_SYNC says
        )
        held = fsync.calls + 1
        fsync.gates = {held: threading.Event()}
        writers = [asyncio.ensure_future(log.append(b"a"))]
        await until(lambda: held in fsync.started, "the first group's fsync")
        writers += [asyncio.ensure_future(log.append(b"b%d" % i)) for i in range(3)]
        await asyncio.sleep(0.01)
        checkpoint = asyncio.ensure_future(log.checkpoint())
        await asyncio.sleep(0.05)
        assert not checkpoint.done()
        assert synced_at == []
        fsync.gates[held].set()
        await checkpoint
        await asyncio.gather(*writers)
        # The store was synced with both groups applied: never between a group's fsync
        # and its apply.
        assert synced_at == [4]
        await log.close()

    asyncio.run(scenario())


def test_group_timings_count_every_record_and_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        applied: list[list[int]] = []
        log = await LocalLog.open(
            tmp_path / "wal", store, recording_apply(store, applied), fsync=lambda fd: None
        )
        for _ in range(5):
            await asyncio.gather(*(log.append(b"x%d" % i) for i in range(7)))
        timings = log.timings
        assert timings.records == 35 == log.appended_count
        assert timings.groups == log.fsync_count == len(applied)
        assert sum(size * count for size, count in timings.group_sizes.items()) == 35
        assert timings.queue_wait_seconds >= 0
        assert timings.sync_seconds > 0
        assert timings.inline_groups == 0
        await log.close()

    asyncio.run(scenario())


def test_the_statistics_file_is_written_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = tmp_path / "stats.json"
    monkeypatch.setenv("KEELDB_LOG_STATS", str(stats))

    async def scenario() -> None:
        store = MemoryStore()
        log = await LocalLog.open(
            tmp_path / "wal", store, recording_apply(store, []), fsync=lambda fd: None
        )
        await asyncio.gather(*(log.append(b"y%d" % i) for i in range(4)))
        await log.close()

    asyncio.run(scenario())
    written = json.loads(stats.read_text())
    assert written["records"] == 4
    assert written["appended_count"] == 4
    assert sum(written["group_sizes"].values()) == written["groups"]


def test_run_then_hands_results_and_errors_back_to_the_loop_in_order() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        disk = DiskThread(loop, name="test-disk")
        loop_thread = threading.get_ident()
        seen: list[tuple[object, str | None, bool]] = []
        finished = asyncio.Event()

        def done(result: object, error: BaseException | None) -> None:
            seen.append(
                (
                    result,
                    None if error is None else str(error),
                    threading.get_ident() == loop_thread,
                )
            )
            if len(seen) == 4:
                finished.set()

        def fail() -> None:
            raise OSError("no disk")

        disk.run_then(done, lambda: 1)
        disk.run_then(done, fail)
        disk.run_then(done, lambda: 3)
        disk.run_then(done, lambda: 4)
        await asyncio.wait_for(finished.wait(), WAIT_SECONDS_MAX)
        assert seen == [(1, None, True), (None, "no disk", True), (3, None, True), (4, None, True)]
        disk.shutdown(wait=True)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("others_in_progress", "inline_expected"), [(0, True), (1, False)], ids=["alone", "others"]
)
def test_auto_mode_fsyncs_on_the_loop_only_when_every_request_held_is_in_the_group(
    tmp_path: Path, others_in_progress: int, inline_expected: bool
) -> None:
    fsync_threads: list[int] = []

    async def scenario() -> None:
        store = MemoryStore()
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            recording_apply(store, []),
            fsync=lambda fd: fsync_threads.append(threading.get_ident()),
            sync_mode="auto",
        )
        writers = 5
        # What the database would report: its writers (all in the queue by the time the
        # flusher runs) and, in the second case, one more request doing something else.
        log.set_demand(lambda: writers + others_in_progress)
        fsync_threads.clear()
        lsns = await asyncio.gather(*(log.append(b"w%d" % i) for i in range(writers)))
        assert lsns == [1, 2, 3, 4, 5]
        assert log.timings.inline_groups == (1 if inline_expected else 0)
        on_loop = [thread == threading.get_ident() for thread in fsync_threads]
        assert on_loop == [inline_expected]
        await log.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("sync_mode", ["thread", "auto"])
def test_records_left_behind_by_a_full_group_are_written_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_mode: str
) -> None:
    from keeldb.storage import replog

    monkeypatch.setattr(replog, "BATCH_RECORDS_MAX", 3)

    async def scenario() -> None:
        store = MemoryStore()
        applied: list[list[int]] = []
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            recording_apply(store, applied),
            fsync=lambda fd: None,
            sync_mode=sync_mode,
        )
        log.set_demand(lambda: 0)
        lsns = await asyncio.wait_for(
            asyncio.gather(*(log.append(b"r%d" % i) for i in range(10))), WAIT_SECONDS_MAX
        )
        assert lsns == list(range(1, 11))
        assert applied == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
        await log.close()

    asyncio.run(scenario())


# It replaces a method of the write-ahead log.
@pytest.mark.interpreted
def test_an_inline_group_on_a_full_disk_fails_alone_and_a_broken_write_stops_the_log(
    tmp_path: Path,
) -> None:
    fatal: list[BaseException] = []

    class FullDisk:
        full = False

        def __call__(self, fd: int, data: memoryview) -> int:
            if self.full:
                raise OSError(28, "No space left on device")
            return os.write(fd, data)

    async def scenario() -> None:
        store = MemoryStore()
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            recording_apply(store, []),
            fsync=lambda fd: None,
            sync_mode="auto",
            on_fatal=fatal.append,
        )
        log.set_demand(lambda: 1)  # one writer at a time: every group goes inline
        disk = FullDisk()
        log._wal._write_fn = disk
        assert await log.append(b"a") == 1
        disk.full = True
        with pytest.raises(LogFailedError, match="No space left"):
            await log.append(b"b")
        disk.full = False
        assert await log.append(b"c") == 2
        assert (log.timings.inline_groups, fatal) == (2, [])

        def broken_append(payloads: list[bytes]) -> int:
            raise ValueError("a bug in the log")

        log._wal.append = broken_append  # type: ignore[method-assign]
        with pytest.raises(LogFailedError):
            await asyncio.wait_for(log.append(b"d"), WAIT_SECONDS_MAX)
        assert isinstance(fatal[0], ValueError)
        # The files were released: closing does not hang on them.
        await asyncio.wait_for(log.close(), WAIT_SECONDS_MAX)

    asyncio.run(scenario())
