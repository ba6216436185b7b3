"""`GroupLog`: one member of a Multi-Paxos replica group, run on a node's event loop.

Owns the driver loop around a sans-IO `consensus.replica.Replica` (docs/consensus.md,
"Interface"): ticks from a monotonic clock, messages to and from the group's peers over the
node's shared `net.transport.Transport` (one channel per group), the replica's records in a
per-member WAL (`group_storage.GroupWal`, fsynced before anything in `send_after_persist`
leaves), committed COMMAND entries handed to the state machine's `ApplyFn` in order and
once, client proposals answered when applied (or failed with `NotLeader`), snapshots taken
when the core suggests them and installed when a leader sends one, and configuration
changes. It implements `storage.protocols.ReplicatedLog`, so the engine runs on it exactly
as on the single-node `LocalLog`.

It never interprets records (the ApplyFn does), never answers a strong read itself (the
caller asks `read_lease()` first) and never decides placement (the control plane gives it
its configuration and tells the transport where the members' nodes listen).

Members and nodes. Consensus names members by positive integers (`NodeId`); a node's
transport names it by a string. The member with NodeId n lives on the node whose transport
id is `member_name(n)` = "node<n>" (prefix configurable in `GroupOptions`), and a node
hosts at most one member of each group: "node3" hosts member 3 of every group it is in.
Messages of group G travel on the transport channel "group/G"; a message whose claimed
source is not the authenticated sending node is dropped.

LSNs. A group's LSN is the consensus slot: the ApplyFn sees (slot, command bytes) for the
COMMAND entries only, in increasing slot order with gaps where no-ops and configuration
entries sit, identically on every member. The store's `applied_lsn()` is therefore the
last command slot it applied; at restart the replica hands out every chosen entry again
and those at or below `applied_lsn()` are skipped, so recovery is idempotent. `append`
returns the slot of the record.

Time. A tick is `GroupOptions.tick_seconds` of `time.monotonic()`. Every elapsed tick is
delivered before a message is stepped and before `read_lease()` answers, so a process that
was stopped (SIGSTOP, a long pause) sees its lease expire instead of trusting a stale clock
(docs/consensus.md, "Leases").
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import re
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from mypy_extensions import mypyc_attr

from keeldb.cluster.group_codec import decode_message, packed_messages
from keeldb.cluster.group_storage import MEMBER_TOKEN_FILE, GroupWal, NodeRound, NodeWal
from keeldb.consensus.codec import CodecError
from keeldb.consensus.messages import (
    Accept,
    CatchUp,
    CommitRecord,
    Heartbeat,
    InstallSnapshot,
    Message,
    Promise,
    Record,
    SnapshotRecord,
)
from keeldb.consensus.replica import DurableState, Options, Ready, Replica
from keeldb.consensus.types import (
    Ballot,
    Config,
    ConfigError,
    EntryKind,
    NodeId,
    ProposalId,
    Slot,
)
from keeldb.net.transport import Transport, TransportError
from keeldb.storage.async_sync import AsyncSyncer, open_uring_sync
from keeldb.storage.protocols import ApplyFn, Entry, Store
from keeldb.storage.replog import (
    GIL_SWITCH_INTERVAL_SECONDS,
    DiskThread,
    FatalFn,
    exit_process,
)
from keeldb.storage.wal import RECORD_BYTES_MAX, RecordTooLargeError

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "group/"
REWRITE_RECORDS_MIN = 8192  # records appended since the last rewrite before another
LEADER_SEEN_TICKS = 6  # a leader heard from this recently counts as known (3 heartbeats)
SNAPSHOT_CHUNK_KEYS = 4096  # keys per write when a snapshot replaces a store's state
# Readys the driver has advanced while their records are still on the way to disk, at
# most: it takes the next Ready during the previous one's fsync (docs/transport.md,
# "Pipelining"); this bounds the records a crash may find unsynced and the memory held.
PIPELINE_READYS_MAX = 8
DRIVER_WAKE_TICKS = 20  # a driver with nothing to do is woken for its housekeeping (log
# rewrites a node log waits for) once per this many ticks (1 s at the default tick)

SNAPSHOT_CHANNEL_PREFIX = "groupsnap/"
SNAPSHOT_PULL_SECONDS = 60.0  # one pull of a store's state from a member, at most
SNAPSHOT_PULL_ROUNDS_MAX = 20  # rounds over every member before giving up (fatal)
SNAPSHOT_PULL_PAUSE_SECONDS = 0.5  # between rounds
STORE_TOKEN = "store-at"  # snapshot bytes that stand for "the holder's store"

NODE_LOG_DIRNAME = "node-log"  # DATA/node-log: the log every member on a node shares
GROUPS_DIRNAME = "groups"  # a cluster node keeps member G's files in DATA/groups/G/
# Where the node log writes and fsyncs a round: "async" written on the event-loop thread
# with its fdatasync completed there through io_uring ("thread" where io_uring cannot be
# used), "thread" in its disk thread, or "inline" on the event-loop thread (see `NodeLog`);
# the environment's KEELDB_NODE_LOG_SYNC.
NODE_LOG_SYNC_ENV = "KEELDB_NODE_LOG_SYNC"
NODE_LOG_SYNC_MODES = ("async", "thread", "inline")
NODE_LOG_SYNC_DEFAULT = "async"

# The messages only a leader sends: whoever sends one leads (as far as this member knows).
_FROM_LEADER: frozenset[type] = frozenset({Heartbeat, Accept, CatchUp, InstallSnapshot})

SnapshotSource = Callable[[], bytes]
# Called with a snapshot's bytes and slot; may return an awaitable (the driver waits for it
# before applying anything after the snapshot).
SnapshotInstaller = Callable[[bytes, int], "Awaitable[None] | None"]


class GroupError(Exception):
    """The group could not take the request: an operating error the caller handles."""


class NotLeader(GroupError):
    """This member does not lead (or lost the proposal's slot); `leader_hint` names the
    member's node believed to lead, or None."""

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class AppendTimeout(GroupError):
    """The outcome is unknown: no answer within the timeout, or leadership changed while the
    record was in flight. It may or may not be committed (retries must be deduplicated)."""


class GroupClosed(GroupError):
    """The group member is closed (or failed) and takes no more requests."""


class GroupBusy(GroupError):
    """The leader's proposal queue is full, or a configuration change is in progress."""


def member_name(node_id: int, prefix: str = "node") -> str:
    """The transport id of the node hosting member `node_id`."""
    return f"{prefix}{node_id}"


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def member_node_id(name: str) -> NodeId:
    """The member number a node id names: its trailing decimal digits ("node3" -> 3)."""
    match = _TRAILING_NUMBER.search(name)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"node id {name!r} does not end in a positive member number")
    return NodeId(int(match.group(1)))


@dataclass(frozen=True, slots=True)
class GroupOptions:
    # One consensus tick. With the core's defaults (heartbeat 2 ticks, lease 8, election
    # timeout 10 to 20) this gives a heartbeat every 100 ms, a 400 ms lease and a failover
    # within about 1.5 s of a leader's death.
    tick_seconds: float = 0.05
    # Accepts go to a phase-2 quorum only; the other replicas catch up once per heartbeat
    # (`Options.thrifty_accepts`): on a shared machine each follower's fsync and apply per
    # write is CPU the others need.
    replica: Options = field(default_factory=lambda: Options(thrifty_accepts=True))
    # How long `append` waits for its outcome before raising AppendTimeout.
    append_timeout_seconds: float = 30.0
    node_prefix: str = "node"
    # Called when the log cannot be made durable or apply fails; default: end the process.
    on_fatal: FatalFn = exit_process
    # Members on one transport whose log directories follow a cluster node's layout
    # (DATA/groups/<group>/log) share one log, DATA/node-log (see `NodeLog`).
    share_node_log: bool = True


def store_token(store: Store) -> bytes:
    """The default snapshot: the store itself, made durable. The bytes only say so; a member
    that installs such a snapshot pulls the state from a member that has it."""
    store.sync()
    data: bytes = msgpack.packb([STORE_TOKEN, store.applied_lsn()], use_bin_type=True)
    return data


def store_token_lsn(state: bytes) -> int | None:
    """The store LSN a `store_token` names, or None for other snapshot bytes.

    A token taken at snapshot slot S names the store at its applied LSN A <= S; the slots
    between A and S hold no commands (no-ops and configuration entries), so the store at A,
    or at any later applied LSN, is a state at or after the snapshot.
    """
    try:
        plain = msgpack.unpackb(state, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if isinstance(plain, list) and len(plain) == 2 and plain[0] == STORE_TOKEN:
        lsn = plain[1]
        return lsn if isinstance(lsn, int) else None
    return None


def is_store_token(state: bytes) -> bool:
    return store_token_lsn(state) is not None


def store_snapshot(store: Store) -> bytes:
    """The whole state of a store, as snapshot bytes (sorted key/value pairs)."""
    data: bytes = msgpack.packb(
        ["kvsnap1", [[k, v] for k, v in store.scan(b"", None)]], use_bin_type=True
    )
    return data


def install_store_snapshot(store: Store, state: bytes, lsn: int) -> None:
    """Replace the store's state by a snapshot taken with `store_snapshot`, atomically when
    the store has `batch()`, recording `lsn` as applied. ValueError (before any change) for
    bytes that are not such a snapshot: they may come from the network."""
    try:
        plain = msgpack.unpackb(state, raw=False)
        if not isinstance(plain, list) or len(plain) != 2 or plain[0] != "kvsnap1":
            raise ValueError("not a store snapshot")
        pairs = [(bytes(k), bytes(v)) for k, v in plain[1]]
    except (TypeError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise ValueError("the bytes are not a store snapshot") from None
    wanted = {k for k, _ in pairs}
    stale = [k for k, _ in store.scan(b"", None) if k not in wanted]
    batch = getattr(store, "batch", None)
    context: AbstractContextManager[object] = batch() if batch is not None else nullcontext()
    with context:
        store.write([], stale, applied_lsn=lsn)
        for i in range(0, len(pairs), SNAPSHOT_CHUNK_KEYS):
            store.write(pairs[i : i + SNAPSHOT_CHUNK_KEYS], [], applied_lsn=lsn)
        if not pairs:
            store.write([], [], applied_lsn=lsn)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def node_log_directory(data_dir: Path, group_id: str) -> Path | None:
    """The shared log of the node whose member of `group_id` keeps its log in `data_dir`,
    when that directory follows a cluster node's layout (DATA/groups/<group>/log, giving
    DATA/node-log); None otherwise."""
    data_dir = Path(data_dir)
    if (
        data_dir.name == "log"
        and data_dir.parent.name == group_id
        and data_dir.parent.parent.name == GROUPS_DIRNAME
    ):
        return data_dir.parent.parent.parent / NODE_LOG_DIRNAME
    return None


def _waits_for_nothing(rd: Ready) -> bool:
    """Whether a Ready's records are only commit points that nothing sent or counted
    depends on: no message waits for them and they carry no vote of this member's."""
    return (
        not rd.send_after_persist
        and not rd.self_accepted
        and rd.self_promise is None
        and all(type(record) is CommitRecord for record in rd.persist)
    )


def _holds_segments(directory: Path) -> bool:
    return directory.is_dir() and any(p.suffix == ".wal" for p in directory.iterdir())


# Tests put a disk of their own (a slow one) under a member, compiled or not.
@mypyc_attr(allow_interpreted_subclasses=True)
class _MemberDisk:
    """Where one member's records go: its own `GroupWal` (the member's own disk thread), or
    its share of the node's `NodeLog`. Every method is awaited on the event loop."""

    async def open(self) -> list[Record]:
        raise NotImplementedError

    async def append(self, records: Sequence[Record]) -> None:
        """Durable (fsynced) when this returns."""
        await self.submit(records)

    def submit(
        self, records: Sequence[Record], on_durable: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        """Queue `records` behind everything submitted before; the future is done once they
        (and so everything before them) are durable, or failed. `on_durable` is called then
        (after the future is settled, whether or not it failed), on the loop."""
        raise NotImplementedError

    def submit_lazily(self, records: Sequence[Record]) -> None:
        """Queue `records` behind everything submitted before, with nobody waiting for them
        (they may go with a later round)."""
        self.submit(records)

    def records_since_rewrite(self) -> int:
        raise NotImplementedError

    def rebase_wanted(self) -> bool:
        """Whether a rewrite of this member would let the log free old segments now."""
        return False

    async def rewrite(self, compact: Sequence[Record]) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _OwnWal(_MemberDisk):
    """A member's own log in its own directory (a group outside a cluster node's layout,
    or a member whose directory already holds its own log)."""

    def __init__(self, group_id: str, directory: Path) -> None:
        self._directory = directory
        self._wal: GroupWal | None = None
        self._disk = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"keeldb-group-{group_id}"
        )

    async def open(self) -> list[Record]:
        directory = self._directory

        def open_wal() -> tuple[GroupWal, list[Record]]:
            wal = GroupWal(directory)
            try:
                return wal, wal.read_all()
            except BaseException:
                wal.close()
                raise

        loop = asyncio.get_running_loop()
        self._wal, records = await loop.run_in_executor(self._disk, open_wal)
        return records

    def submit(
        self, records: Sequence[Record], on_durable: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        assert self._wal is not None
        # One disk thread: appends run, and fsync, in the order submitted.
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._disk, self._wal.append, records)
        if on_durable is not None:
            future.add_done_callback(lambda _: on_durable())
        return future

    def records_since_rewrite(self) -> int:
        return self._wal.records_since_rewrite if self._wal is not None else 0

    async def rewrite(self, compact: Sequence[Record]) -> int:
        assert self._wal is not None
        loop = asyncio.get_running_loop()
        removed: int = await loop.run_in_executor(self._disk, self._wal.rewrite, compact)
        return removed

    async def close(self) -> None:
        if self._wal is not None:
            wal, self._wal = self._wal, None
            await asyncio.get_running_loop().run_in_executor(self._disk, wal.close)
        self._disk.shutdown(wait=True)


# The node log of each transport (one transport per node process), from its first
# member's open to its last member's close. A plain dict: a compiled `Transport` takes no
# weak references (keeldb/native.py).
_NODE_LOGS: dict[Transport, NodeLog] = {}


# A member's records queued for the node log: (group, records, the future of their fsync or
# None when nobody waits, what to call once a round settled them or None).
_Queued = tuple[str, Sequence[Record], "asyncio.Future[None] | None", "Callable[[], None] | None"]


def _call_each(queued: Sequence[_Queued]) -> None:
    """Call every distinct `on_durable` of `queued`, once each, in the order first queued.
    A caller's exception is its own failure: it is logged and the others still run."""
    seen: set[Callable[[], None]] = set()
    for _, _, _, on_durable in queued:
        if on_durable is None or on_durable in seen:
            continue
        seen.add(on_durable)
        try:
            on_durable()
        except Exception:  # noqa: BLE001 - one member's failure must not stop the others
            log.exception("a member failed to finish a node-log round")


class NodeLog:
    """The log every group member on one node shares: group commit across groups.

    Members hand their `Ready.persist` records to `append` and wait; one flusher task
    takes everything queued, writes it to the `NodeWal` and fsyncs once, then wakes every
    member whose records that fsync covered. So a node leading several groups and following
    others pays one fsync per round for all of them, and nothing a member sends after
    persisting leaves before the fsync covering it.

    Where a round is written and fsynced: by default ("async") the loop writes it and
    submits its fdatasync to the kernel through io_uring (`keeldb.storage.async_sync`, as
    the single node's log does); the loop keeps receiving votes and requests meanwhile and
    the round completes in a callback when the kernel reports the fdatasync done. The files
    stay locked from the write to that completion, so no rewrite or close in the disk thread
    closes the descriptor being synced. A round that needs more than a write (a new segment,
    zeroes ahead) goes to the disk thread, as every round does where io_uring cannot be used
    or with KEELDB_NODE_LOG_SYNC=thread. KEELDB_NODE_LOG_SYNC=inline does it
    on the event-loop thread itself, as the single node's log does
    (`keeldb.storage.replog`), saving two thread wake-ups per round; what arrives during
    the fsync then waits in its socket and joins the next round. Measured on workload A
    (docs/performance.md, "Cluster"), inline was no faster on a cluster node (0.22 vs 0.31
    and 0.29 vs 0.30 of the single node in two runs): a cluster node's loop also carries
    the followers' votes, which an inline fsync holds back. In inline mode, opening,
    rewriting and closing still run in the disk thread; a lock keeps them apart from an
    inline round, and a round that finds the files busy goes to the disk thread after them
    instead of blocking the loop.

    One per transport (i.e. per node process): `for_transport` finds or makes it, members
    register with `open_member` and leave with `close_member`; the last to leave closes it.
    """

    def __init__(self, directory: Path, sync_mode: str | None = None) -> None:
        self.directory = Path(directory)
        if sync_mode is None:
            sync_mode = os.environ.get(NODE_LOG_SYNC_ENV, NODE_LOG_SYNC_DEFAULT)
        if sync_mode not in NODE_LOG_SYNC_MODES:
            raise ValueError(
                f"{NODE_LOG_SYNC_ENV} must be one of {NODE_LOG_SYNC_MODES}, not {sync_mode!r}"
            )
        self._sync_inline = sync_mode == "inline"
        self._async = sync_mode == "async"
        # The io_uring ring of the "async" mode, opened with the log (None: not in use).
        self._syncer: AsyncSyncer | None = None
        # Held by whichever thread works on the files: the loop thread writing a round
        # inline, or the disk thread opening, rewriting or closing. The loop never waits
        # for it.
        self._files_lock = threading.Lock()
        self._wal: NodeWal | None = None
        self._members: set[str] = set()
        # The disk thread (`keeldb.storage.replog.DiskThread`: one eventfd wake-up and one
        # call_soon_threadsafe back per round, no pool futures), started with the log.
        self._disk: DiskThread | None = None
        # Queued records, who waits for them (None: nobody, `submit_lazily`) and what to
        # call once a round settled them.
        self._queue: list[_Queued] = []
        self._flush_scheduled = False  # a round starts at the end of this loop turn
        # The node's transport, whose peers' queued messages a round's completion writes
        # at once (`_round_done`).
        self._transport: Transport | None = None
        self._flushing: list[_Queued] | None = None
        self._open_lock = asyncio.Lock()
        self._failure: BaseException | None = None
        self.flush_count = 0  # fsyncs of appended records
        self.appends_flushed = 0  # member appends those fsyncs covered
        self.lazy_flushed = 0  # and records that nobody waited for (`submit_lazily`)
        self.inline_flushes = 0  # of those, written and fsynced on the loop thread
        self.async_flushes = 0  # of those, written on the loop and synced through io_uring
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_SECONDS:
            # The disk thread and the loop hand the interpreter lock back and forth
            # (`keeldb.storage.replog`, "The disk thread and the interpreter lock").
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` holding the files (in the disk thread)."""
        with self._files_lock:
            return fn(*args)

    def _in_disk_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        assert self._disk is not None
        return self._disk.run(self._locked, fn, *args)

    @classmethod
    def for_transport(cls, transport: Transport, directory: Path) -> NodeLog:
        node_log = _NODE_LOGS.get(transport)
        if node_log is None:
            node_log = cls(directory)
            node_log._transport = transport
            _NODE_LOGS[transport] = node_log
        elif node_log.directory != Path(directory):
            raise GroupError(
                f"members on one node share one log: {node_log.directory}, not {directory}"
            )
        return node_log

    @property
    def wal(self) -> NodeWal | None:
        return self._wal

    async def open_member(self, group_id: str, token_file: Path) -> list[Record]:
        """Register a member; its records as the log holds them (none if `token_file` does
        not name the history the log holds for it: see `NodeWal`)."""
        async with self._open_lock:
            assert group_id not in self._members, f"group {group_id} is open on this node"
            if self._wal is None:
                directory = self.directory
                if self._disk is None:
                    self._disk = DiskThread(asyncio.get_running_loop(), name="keeldb-node-log")
                if self._async and self._syncer is None:
                    self._syncer = open_uring_sync(asyncio.get_running_loop())
                self._wal = await self._in_disk_thread(
                    lambda: NodeWal(directory, groups_dir=directory.parent / GROUPS_DIRNAME)
                )
            wal = self._wal
            records: list[Record] = await self._in_disk_thread(wal.open_group, group_id, token_file)
            self._members.add(group_id)
            return records

    async def append(self, group_id: str, records: Sequence[Record]) -> None:
        await self.submit(group_id, records)

    def submit(
        self,
        group_id: str,
        records: Sequence[Record],
        on_durable: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        """Queue a member's records for the next round; the future is done once a round's
        fsync covers them (rounds are written in the order queued). What every member
        submits in one turn of the event loop goes in one round.

        `on_durable` is called straight from the round's completion, once every future of
        the round is settled: one call per callable per round, in the order first queued,
        so a node's members finish a round in one pass with no callback scheduled per
        member (the same callable given twice in a round runs once)."""
        if self._failure is not None:
            raise GroupClosed(f"the node log failed: {self._failure}")
        assert self._wal is not None and group_id in self._members
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((group_id, records, future, on_durable))
        if self._flushing is None and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_round)
        return future

    def submit_lazily(self, group_id: str, records: Sequence[Record]) -> None:
        """Queue a member's records for whichever round comes next, starting none: for
        records nothing waits on (commit points, which a restart may learn again)."""
        if self._failure is not None:
            raise GroupClosed(f"the node log failed: {self._failure}")
        assert self._wal is not None and group_id in self._members
        self._queue.append((group_id, records, None, None))

    def _start_round(self) -> None:
        """Write and fsync everything queued: inline on this thread when so configured and
        the files are free, else in the disk thread (`_round_done` follows either way)."""
        self._flush_scheduled = False
        if self._flushing is not None or not self._queue or self._wal is None:
            return
        batch, self._queue = self._queue, []
        self._flushing = batch
        wal = self._wal
        rounds = [(group, records) for group, records, _, _ in batch]
        if self._syncer is not None and self._files_lock.acquire(blocking=False):
            if self._start_async_round(wal, rounds):
                return
        elif self._sync_inline and self._files_lock.acquire(blocking=False):
            # os.write and os.fsync release the interpreter lock: other threads run
            # meanwhile, and what arrives waits in its socket for the next round.
            try:
                wal.append(rounds)
            except Exception as error:  # noqa: BLE001 - every waiting member learns of it
                self._round_done(None, error)
                return
            finally:
                self._files_lock.release()
            self.inline_flushes += 1
            self._round_done(None, None)
            return
        assert self._disk is not None
        self._disk.run_then(self._round_done, lambda: self._locked(wal.append, rounds))

    def _start_async_round(self, wal: NodeWal, rounds: list[tuple[str, Sequence[Record]]]) -> bool:
        """Holding the files: write the round on the loop and submit its fdatasync; the
        files stay held until `_async_synced`. False (files released) when the round needs
        the disk thread."""
        syncer = self._syncer
        assert syncer is not None
        try:
            round_ = wal.prepare(rounds)
            if round_ is None:  # nothing to write: the round is done
                self._files_lock.release()
                self._round_done(None, None)
                return True
            if not wal.writes_in_place(round_):
                self._files_lock.release()
                return False
            wal.write(round_)
            syncer.fdatasync(wal.sync_fd(), lambda error: self._async_synced(wal, round_, error))
        except Exception as error:  # noqa: BLE001 - every waiting member learns of it
            # A write that failed, or a refused submission (the round is in the file,
            # unsynced): the log stops, as after a failed fsync.
            self._files_lock.release()
            self._round_done(None, error)
        return True

    def _async_synced(self, wal: NodeWal, round_: NodeRound, error: OSError | None) -> None:
        self._files_lock.release()
        if error is not None:
            self._round_done(None, wal.sync_failed(error))
            return
        try:
            wal.synced(round_)
        except Exception as unexpected:  # noqa: BLE001 - every waiting member learns of it
            self._round_done(None, unexpected)
            return
        self.async_flushes += 1
        self._round_done(None, None)

    def _round_done(self, result: Any, error: BaseException | None) -> None:
        del result
        batch, self._flushing = self._flushing, None
        assert batch is not None
        if error is not None:
            self._failure = error
            for _, _, future, _ in batch:
                if future is not None and not future.done():
                    future.set_exception(error)
            self._fail_queued(error)
            _call_each(batch)
            return
        self.flush_count += 1
        for _, _, future, _ in batch:
            if future is None:
                self.lazy_flushed += 1
                continue
            self.appends_flushed += 1
            if not future.done():
                future.set_result(None)
        # The members finish what the round made durable (send their votes, take their
        # next Readys) here; what they submit meanwhile joins the round started next.
        _call_each(batch)
        # What they sent (votes, Accepts held back for this round) leaves now, not in a
        # callback of the next turn of the loop.
        if self._transport is not None:
            self._transport.flush_now()
        if (
            self._queue
            and self._flushing is None
            and not (self._sync_inline and self._flush_scheduled)
        ):
            # Queued during this round's fsync: the next round starts at once. (An inline
            # round takes what the members just queued at the end of this loop turn, as
            # `submit` arranged, rather than in a round nested in this one.)
            self._start_round()

    def start_now(self) -> None:
        """Start the round `submit` scheduled for the end of this loop turn now (with no
        round in flight, and unless rounds run inline)."""
        if self._flush_scheduled and self._flushing is None and not self._sync_inline:
            self._start_round()

    def _fail_queued(self, error: BaseException) -> None:
        queued, self._queue = self._queue, []
        for _, _, future, _ in queued:
            if future is not None and not future.done():
                future.set_exception(error)
        _call_each(queued)

    def records_since_rewrite(self, group_id: str) -> int:
        return self._wal.records_since_rewrite(group_id) if self._wal is not None else 0

    def rebase_wanted(self, group_id: str) -> bool:
        return self._wal is not None and self._wal.rebase_wanted(group_id)

    async def rewrite(self, group_id: str, compact: Sequence[Record]) -> int:
        """The member's compact record list as its new base (the caller has no append of
        its own in flight, so nothing of it is queued behind this)."""
        assert self._wal is not None and group_id in self._members
        removed: int = await self._in_disk_thread(self._wal.rewrite, group_id, compact)
        return removed

    async def close_member(self, group_id: str) -> None:
        async with self._open_lock:
            self._members.discard(group_id)
            if self._members or self._wal is None:
                return
            self._fail_queued(GroupClosed("the node log closed"))
            wal, self._wal = self._wal, None
            # After any round in flight: the disk thread runs its work in order.
            await self._in_disk_thread(wal.close)
            syncer, self._syncer = self._syncer, None
            if syncer is not None:
                syncer.close()  # its last completion came before the close got the files
            disk, self._disk = self._disk, None
            if disk is not None:
                disk.shutdown(wait=False)
            if self._transport is not None and _NODE_LOGS.get(self._transport) is self:
                del _NODE_LOGS[self._transport]


class _SharedLog(_MemberDisk):
    """A member's share of its node's `NodeLog`."""

    def __init__(self, group_id: str, node_log: NodeLog, token_file: Path) -> None:
        self._group_id = group_id
        self._node_log = node_log
        self._token_file = token_file
        self._open = False

    async def open(self) -> list[Record]:
        records = await self._node_log.open_member(self._group_id, self._token_file)
        self._open = True
        return records

    def submit(
        self, records: Sequence[Record], on_durable: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        return self._node_log.submit(self._group_id, records, on_durable)

    def submit_lazily(self, records: Sequence[Record]) -> None:
        self._node_log.submit_lazily(self._group_id, records)

    def records_since_rewrite(self) -> int:
        return self._node_log.records_since_rewrite(self._group_id)

    def rebase_wanted(self) -> bool:
        return self._node_log.rebase_wanted(self._group_id)

    async def rewrite(self, compact: Sequence[Record]) -> int:
        return await self._node_log.rewrite(self._group_id, compact)

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._node_log.close_member(self._group_id)


class _Ticker:
    """One timer for every group driver of an event loop with the same tick length: a
    node hosting a member of every partition arms one timer per tick, not one per group.
    Each tick runs every registered driver's `_on_timer`, in registration order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_seconds: float) -> None:
        self._loop = loop
        self._tick_seconds = tick_seconds
        self._groups: dict[GroupLog, None] = {}
        self._handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, tick_seconds: float) -> _Ticker:
        tickers = _TICKERS.setdefault(loop, {})
        ticker = tickers.get(tick_seconds)
        if ticker is None:
            ticker = tickers[tick_seconds] = cls(loop, tick_seconds)
        return ticker

    def add(self, group: GroupLog) -> None:
        self._groups[group] = None
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick_seconds, self._fire)

    def remove(self, group: GroupLog) -> None:
        self._groups.pop(group, None)
        if not self._groups and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = self._loop.call_later(self._tick_seconds, self._fire)
        for group in list(self._groups):
            try:
                group._on_timer()
            except Exception:  # one driver's bug must not stop the others' clocks
                log.exception("group %s: tick failed", group.group_id)


_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Ticker]] = (
    weakref.WeakKeyDictionary()
)


class _DrivePass:
    """One callback per loop turn for every group driver with work on an event loop: the
    drivers a turn kicks (messages stepped, proposals, ticks) are driven one after the
    other in that callback, in the order kicked, instead of a callback each; so the
    messages they send to one peer leave in one frame and their records in one node-log
    round, and a node hosting many groups pays the loop's per-callback cost once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[GroupLog] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _DrivePass:
        drive_pass = _DRIVE_PASSES.get(loop)
        if drive_pass is None:
            drive_pass = _DRIVE_PASSES[loop] = cls(loop)
        return drive_pass

    def add(self, group: GroupLog) -> None:
        """Drive `group` at the end of this loop turn (the caller adds it once per turn)."""
        if not self._due:
            self._loop.call_soon(self._run)
        self._due.append(group)

    def _run(self) -> None:
        due, self._due = self._due, []
        for group in due:
            try:
                group._drive_callback()
            except Exception:  # one driver's bug must not stop the others
                log.exception("group %s: drive failed", group.group_id)
        # What the pass queued goes out at its end rather than in callbacks of the next
        # turn of the loop: its messages in one frame per peer (first: a follower's fsync
        # is the longer path), then its records in one node-log round. Each callback of a
        # turn waits behind everything the turn's I/O brought in.
        for transport in {group._transport for group in due}:
            transport.flush_now()
            node_log = _NODE_LOGS.get(transport)
            if node_log is not None:
                node_log.start_now()


_DRIVE_PASSES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DrivePass] = (
    weakref.WeakKeyDictionary()
)


class GroupLog:
    """One member of one replica group (see the module docstring)."""

    def __init__(
        self,
        group_id: str,
        member_id: str,
        config: Config,
        transport: Transport,
        data_dir: Path,
        store: Store,
        apply: ApplyFn,
        *,
        options: GroupOptions | None = None,
        snapshot_source: SnapshotSource | None = None,
        snapshot_installer: SnapshotInstaller | None = None,
        node_log_dir: Path | None = None,
    ) -> None:
        self.group_id = group_id
        self.member_id = member_id
        self._options = options if options is not None else GroupOptions()
        self._node_id = member_node_id(member_id)
        assert member_name(self._node_id, self._options.node_prefix) == member_id, (
            f"member {member_id!r} must be named {self._options.node_prefix}<n>"
        )
        config.validate()
        self._initial_config = config
        self._transport = transport
        self._data_dir = Path(data_dir)
        self._store = store
        self._apply = apply
        self._snapshot_source = snapshot_source or (lambda: store_token(store))
        self._snapshot_installer: SnapshotInstaller = (
            snapshot_installer or self._install_from_store_snapshot
        )
        self._channel = CHANNEL_PREFIX + group_id
        self._member_names: dict[NodeId, str] = {}  # member -> the node hosting it
        self._snapshot_channel = SNAPSHOT_CHANNEL_PREFIX + group_id
        # Who sent us a snapshot at a slot (it holds the state): the first member to ask.
        self._snapshot_senders: dict[int, NodeId] = {}
        self._replica: Replica | None = None
        # The shared node log, given or found from the layout (None: the member's own).
        if node_log_dir is None and self._options.share_node_log:
            node_log_dir = node_log_directory(self._data_dir, group_id)
        self._node_log_dir = node_log_dir
        self._disk_log: _MemberDisk | None = None
        self._work = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._ticker: _Ticker | None = None
        self._drive_pass: _DrivePass | None = None
        self._timer_count = 0
        self._parked = False  # the driver task waits (between Readys, or for a full pipeline)
        # The driver task waits between Readys with nothing half done: new work is then
        # done by a callback at the end of the loop turn (`_kick`), not by waking the task.
        self._idle = False
        self._driving = False  # `_drive` runs (it looks for more work before it returns)
        self._drive_scheduled = False  # a `_drive_callback` is due this loop turn
        # A Ready taken by `_drive` that installs a snapshot: the task finishes it (awaits).
        self._handoff: Ready | None = None
        self._clock_start = 0.0
        self._ticks = 0
        self._next_tick_at = math.inf  # time.monotonic() when the next tick is due
        self._pending: dict[ProposalId, asyncio.Future[int]] = {}
        self._pending_slot: dict[ProposalId, int] = {}
        # (deadline on time.monotonic(), future) of every append waiting, oldest first.
        self._deadlines: deque[tuple[float, asyncio.Future[int]]] = deque()
        # The ballot each pending proposal was made under, and the ballot we last led at.
        self._pending_ballot: dict[ProposalId, Ballot] = {}
        self._leading_ballot: Ballot | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._leader_seen: tuple[NodeId, int] | None = None  # (leader, tick heard)
        self._leader_commit_seen = 0
        # When a message of each member last arrived (time.monotonic()): how fresh this
        # member's view of the group is (`staleness_seconds`).
        self._heard_at: dict[NodeId, float] = {}
        self._snapshot_slot_at_rewrite = 0
        self._leader_changed = asyncio.Event()
        # Readys advanced whose records are on the way to disk, oldest first, each with
        # the future of its persist (None: nothing to persist, durable with the one before).
        self._unsynced: deque[tuple[Ready, asyncio.Future[None] | None]] = deque()
        self._rewrite_due = False  # a snapshot record went to the log: rewrite when synced
        self._advanced = asyncio.Event()  # set after every Ready the driver completes
        self._round_waiters: list[asyncio.Future[None]] = []  # woken then, too
        self._last_leader: NodeId | None = None
        # Counters for metrics and tests.
        self.persist_count = 0  # fsyncs of the group log
        self.applied_count = 0  # commands handed to apply
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.rewrites = 0  # log rewrites at a snapshot

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the member's log, rebuild the replica from it, join the group."""
        disk: _MemberDisk
        if self._node_log_dir is not None and not _holds_segments(self._data_dir):
            disk = _SharedLog(
                self.group_id,
                NodeLog.for_transport(self._transport, self._node_log_dir),
                self._data_dir / MEMBER_TOKEN_FILE,
            )
        else:
            disk = _OwnWal(self.group_id, self._data_dir)
        records = await disk.open()
        self._disk_log = disk
        durable = DurableState.replay(records) if records else None
        seed = int.from_bytes(os.urandom(8), "little")
        self._replica = Replica(
            self._node_id, self._initial_config, random.Random(seed), self._options.replica, durable
        )
        self._clock_start = time.monotonic()
        self._ticks = 0
        self._next_tick_at = self._clock_start + self._options.tick_seconds
        self._transport.register(self._channel, self._on_message)
        self._transport.register(self._snapshot_channel, self._on_snapshot_pull)
        self._pump_task = asyncio.create_task(self._pump(), name=f"keeldb-group-{self.group_id}")
        loop = asyncio.get_running_loop()
        self._drive_pass = _DrivePass.of(loop)
        self._ticker = _Ticker.of(loop, self._options.tick_seconds)
        self._ticker.add(self)
        if self._initial_config.n == 1 and self._initial_config.can_lead(self._node_id):
            self._replica.campaign()  # a group of one need not wait for an election timeout
        self._work.set()

    async def close(self) -> None:
        """Leave the group: stop ticking and receiving, fail waiting appends, close the log."""
        if self._closing:
            return
        self._closing = True
        self._transport.unregister(self._channel)
        self._transport.unregister(self._snapshot_channel)
        if self._ticker is not None:
            self._ticker.remove(self)
            self._ticker = None
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
            self._pump_task = None
        self._fail_pending(GroupClosed(f"group {self.group_id} member {self.member_id} closed"))
        if self._disk_log is not None:
            disk, self._disk_log = self._disk_log, None
            await disk.close()

    # --- the ReplicatedLog interface -----------------------------------------------------

    async def append(self, record: bytes) -> int:
        """Propose `record`; its LSN once it is committed and applied here. Raises NotLeader
        (with a hint) when this member does not lead or the proposal lost its slot,
        AppendTimeout when the outcome is still unknown after the timeout, GroupBusy when
        the proposal queue is full, GroupClosed after close or a fatal error."""
        if len(record) > RECORD_BYTES_MAX:
            raise RecordTooLargeError(
                f"record of {len(record)} bytes exceeds {RECORD_BYTES_MAX} bytes"
            )
        replica = self._live_replica()
        if not replica.is_leader:
            raise NotLeader(self.leader_hint)
        pid = replica.propose(record)
        if pid is None:
            raise GroupBusy(f"group {self.group_id}: the proposal queue is full")
        return await self._await_outcome(pid)

    async def _await_outcome(self, pid: ProposalId) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending[pid] = future
        self._pending_ballot[pid] = self._live_replica().ballot
        self._kick()
        # No timer per append: the ticks expire overdue appends (`_expire_overdue`), at most
        # a tick late. Deadlines are appended in increasing order (one timeout per group).
        self._deadlines.append((time.monotonic() + self._options.append_timeout_seconds, future))
        try:
            return await future
        finally:
            self._pending.pop(pid, None)
            self._pending_slot.pop(pid, None)
            self._pending_ballot.pop(pid, None)

    def _expire_overdue(self) -> None:
        """Fail the appends whose timeout has passed (and forget the settled ones)."""
        deadlines = self._deadlines
        now = time.monotonic()
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            self._expire(deadlines.popleft()[1])

    def _expire(self, future: asyncio.Future[int]) -> None:
        if not future.done():
            future.set_exception(
                AppendTimeout(
                    f"group {self.group_id}: no outcome within "
                    f"{self._options.append_timeout_seconds} s"
                )
            )

    def committed_lsn(self) -> int:
        """The highest slot known chosen here (every command at or below it is committed)."""
        return int(self._replica.commit_slot) if self._replica is not None else 0

    # --- leadership, leases, lag ---------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._replica is not None and self._replica.is_leader

    @property
    def leader_hint(self) -> str | None:
        """The node of the member believed to lead (this one included), or None."""
        if self._replica is None:
            return None
        hint = self._replica.leader_hint
        return None if hint is None else member_name(hint, self._options.node_prefix)

    @property
    def config(self) -> Config:
        """The configuration governing the group's next slot, as this member knows it."""
        return self._live_replica().config

    @property
    def replica(self) -> Replica:
        """The consensus core (read-only use: status, tests)."""
        return self._live_replica()

    def read_lease(self) -> bool:
        """True iff a strongly consistent read may be answered from this member's store now
        (it leads under a valid lease and has applied everything it acknowledged)."""
        if self._replica is None or self._failure is not None or self._closing:
            return False
        self._deliver_ticks()
        return self._replica.read_lease()

    async def wait_read_lease(self, timeout_seconds: float) -> bool:
        """`read_lease()`, waiting up to `timeout_seconds` for it while this member leads.

        A leader's lease reads are refused between learning that entries are chosen and
        finishing the Ready that applies them (its state would miss writes it is about to
        acknowledge); under steady writes that is much of the time, so a strong read waits
        for the Ready in progress instead of failing. False at once on a non-leader.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            if self.read_lease():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.is_leader:
                return False
            # Woken after the driver's next Ready, or at the next tick (the lease may start
            # to hold with time alone): a future and a timer, no task per wait.
            waiter: asyncio.Future[None] = loop.create_future()
            self._round_waiters.append(waiter)
            timer = loop.call_later(min(remaining, self._options.tick_seconds), _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()

    def campaign(self) -> bool:
        """Start an election now, skipping the "do you still hear the leader?" pre-check:
        for a preferred leader at startup and for leadership transfer. False when this
        member may not lead (log-only, or not a member). An unneeded campaign is safe but
        deposes a working leader, so callers check `leader_hint` first."""
        started = self._live_replica().campaign()
        self._kick()
        return started

    async def wait_for_leader(self, timeout_seconds: float) -> str:
        """The node of the group's leader once one is known (this member leading, or a
        leader heard from within the last few heartbeats); TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            leader = self._known_leader()
            if leader is not None:
                return leader
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"group {self.group_id}: no leader within {timeout_seconds} s")
            self._leader_changed.clear()
            try:
                await asyncio.wait_for(
                    self._leader_changed.wait(), min(remaining, self._options.tick_seconds * 2)
                )
            except TimeoutError:
                pass

    def _known_leader(self) -> str | None:
        replica = self._replica
        if replica is None:
            return None
        if replica.is_leader:
            return self.member_id
        seen = self._leader_seen
        hint = replica.leader_hint
        if seen is None or hint is None or seen[0] != hint:
            return None
        if replica.now - seen[1] > LEADER_SEEN_TICKS:
            return None
        return member_name(hint, self._options.node_prefix)

    def lag(self) -> int:
        """Slots this member's applied state is behind the leader's commit point (as last
        heard from the leader; 0 on the leader once it has applied what it committed)."""
        replica = self._replica
        if replica is None:
            return 0
        head = max(self._leader_commit_seen, int(replica.commit_slot))
        return max(0, head - int(replica.applied_slot))

    def staleness_seconds(self) -> float | None:
        """How old this member's knowledge of the group's progress may be: on a follower, the
        time since it last heard from the leader (whose messages carry the commit point
        `lag` counts from); on the leader, the time since a phase-2 quorum of the governing
        configuration (itself included) was last heard from, since a leader cut off from its
        peers may already have been replaced. None when it never heard from them."""
        replica = self._replica
        if replica is None:
            return None
        now = time.monotonic()
        if replica.is_leader:
            config = replica.config
            heard = self._heard_at
            ages = sorted(
                0.0 if m.node_id == self._node_id else now - heard.get(m.node_id, -math.inf)
                for m in config.members
            )
            age = ages[config.q2 - 1]
            return None if math.isinf(age) else age
        leader = replica.leader_hint
        if leader is None or leader not in self._heard_at:
            return None
        return now - self._heard_at[leader]

    def status(self) -> dict[str, Any]:
        replica = self._replica
        if replica is None:
            return {"group": self.group_id, "member": self.member_id, "started": False}
        return {
            "group": self.group_id,
            "member": self.member_id,
            "role": replica.role.value,
            "leader": self.leader_hint,
            "ballot": str(replica.ballot),
            "commit": int(replica.commit_slot),
            "applied": int(replica.applied_slot),
            "lag": self.lag(),
            "lease": self.read_lease(),
            "config": str(replica.config),
            "log_only": replica.log_only,
        }

    # --- configuration changes -----------------------------------------------------------

    async def change_config(self, new_config: Config, timeout_seconds: float = 30.0) -> Config:
        """Propose `new_config` (any change of members, log-only flags or quorums) and wait
        until it governs the group; returns it with its epoch. Raises ConfigError for an
        unsafe configuration, NotLeader, GroupBusy while another change is in progress,
        AppendTimeout when it did not take effect in time."""
        replica = self._live_replica()
        new_config.validate()
        if not replica.is_leader:
            raise NotLeader(self.leader_hint)
        pid = replica.propose_reconfig(new_config)
        if pid is None:
            raise GroupBusy(f"group {self.group_id}: a configuration change is in progress")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        slot = await asyncio.wait_for(self._await_outcome(pid), timeout_seconds)
        while True:
            current = self._live_replica().config
            if current.epoch >= slot:
                return current
            if loop.time() > deadline:
                raise AppendTimeout(f"configuration chosen at slot {slot} did not take effect")
            await asyncio.sleep(self._options.tick_seconds)

    # --- the driver loop -----------------------------------------------------------------

    def _live_replica(self) -> Replica:
        if self._failure is not None:
            raise GroupClosed(f"group {self.group_id} failed: {self._failure}")
        if self._closing or self._replica is None:
            raise GroupClosed(f"group {self.group_id} member {self.member_id} is not running")
        return self._replica

    def _on_timer(self) -> None:
        """Deliver the elapsed ticks here and wake the driver only when they made work for
        it (a heartbeat, an election, a lease that ran out), when the leadership it knows
        changed, or once per DRIVER_WAKE_TICKS for its housekeeping (rewrites): a node
        hosting many groups would otherwise wake every group's driver on every tick."""
        if self._closing:
            return
        replica = self._replica
        if replica is None or self._failure is not None:
            self._work.set()
            return
        self._timer_count += 1
        if self._deadlines:
            self._expire_overdue()
        try:
            self._deliver_ticks()
        except Exception as error:  # noqa: BLE001 - as in the driver: never die silently
            self._fail(error)
            return
        leader = replica.leader_hint if replica.is_leader or replica.leader_hint else None
        if (
            self._timer_count % DRIVER_WAKE_TICKS == 0
            or leader != self._last_leader
            or (replica.is_leader and replica.ballot != self._leading_ballot)
        ):
            self._kick()

    def _deliver_ticks(self, now: float | None = None) -> None:
        """Give the replica every tick that has elapsed on the monotonic clock (`now`, read
        here unless the caller just did)."""
        replica = self._replica
        assert replica is not None
        if now is None:
            now = time.monotonic()
        if now < self._next_tick_at:
            return  # nothing new: whoever changed the replica since woke the driver
        tick_seconds = self._options.tick_seconds
        due = int((now - self._clock_start) / tick_seconds)
        while self._ticks < due:
            self._ticks += 1
            replica.tick()
        self._next_tick_at = self._clock_start + (self._ticks + 1) * tick_seconds
        if replica.has_ready():
            self._kick()

    def _on_message(self, sender: str, payload: Any) -> None:
        if self._replica is None or self._closing or self._failure is not None:
            return
        try:
            msg = decode_message(payload)
        except CodecError as error:
            log.warning("group %s: undecodable message from %s: %s", self.group_id, sender, error)
            return
        if msg.dst != self._node_id:
            return
        src = msg.src
        name = self._member_names.get(src)
        if name is None:
            name = self._member_names[src] = member_name(src, self._options.node_prefix)
        if name != sender:
            log.warning(
                "group %s: %s sent a message claiming to be from member %s",
                self.group_id,
                sender,
                msg.src,
            )
            return
        now = time.monotonic()
        self._heard_at[src] = now
        self._deliver_ticks(now)
        kind = type(msg)
        if kind is InstallSnapshot or kind is Promise:
            snapshot = msg.snapshot  # type: ignore[union-attr]
            if snapshot is not None:
                self._snapshot_senders[int(snapshot.slot)] = src  # it holds that state
        if kind in _FROM_LEADER:
            self._leader_seen = (src, self._replica.now)
            if kind is InstallSnapshot:
                commit = int(msg.snapshot.slot)  # type: ignore[union-attr]
            else:
                commit = int(msg.commit_slot)  # type: ignore[union-attr]
            self._leader_commit_seen = max(self._leader_commit_seen, commit)
        replica = self._replica
        replica.step(msg)
        # A message that gave the core nothing to do (a vote for a slot already chosen, a
        # retransmission) wakes no driver, unless the leadership it knows changed.
        if (
            replica.has_ready()
            or replica.leader_hint != self._last_leader
            or (replica.is_leader and replica.ballot != self._leading_ballot)
        ):
            self._kick()

    def _send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        send = self._transport.send_packed
        names = self._member_names
        channel = self._channel
        for msg, data in zip(messages, packed_messages(messages), strict=True):
            name = names.get(msg.dst)
            if name is None:
                name = names[msg.dst] = member_name(msg.dst, self._options.node_prefix)
            send(name, channel, data)

    async def _pump(self) -> None:
        try:
            await self._pump_forever()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the driver must never die silently
            self._fail(error)

    async def _pump_forever(self) -> None:
        """The driver task. The Readys themselves are done by `_drive`, here or, while this
        task waits between Readys, in a callback at the end of the loop turn that brought
        the work (`_kick`): a message, a proposal or a finished disk round then costs no
        task wake-up. This task keeps what awaits: installing a snapshot, waiting for the
        oldest persist while the pipeline is full, and rewriting the member's log."""
        replica = self._replica
        assert replica is not None
        unsynced = self._unsynced
        while True:
            self._parked = self._idle = True
            try:
                await self._work.wait()
            finally:
                self._parked = self._idle = False
            self._work.clear()
            rd = self._handoff
            if rd is not None:
                self._handoff = None
                await self._install_snapshot_of(rd)
                self._apply_entries(rd)
                self._finish_ready(replica, rd)
            if not self._drive(replica):
                continue
            if self._handoff is not None:
                self._work.set()
            elif len(unsynced) >= PIPELINE_READYS_MAX:
                # Full: wait for the oldest persist itself (the event may be set again at
                # once by ticks while the core has a Ready, which would spin the loop).
                head = unsynced[0][1]
                assert head is not None, "a Ready with nothing to persist completes at once"
                self._parked = True
                try:
                    await asyncio.wait((head,))
                finally:
                    self._parked = False
                self._work.set()
            elif not unsynced:
                # Rewrites restate the member's durable state: only with nothing in flight.
                if self._rewrite_due:
                    self._rewrite_due = False
                    await self._maybe_rewrite(replica)
                if self._rebase_wanted(replica):
                    await self._rewrite(replica, "the node log's oldest segment waits for it")
                self._note_leader(replica)
                if replica.has_ready():
                    self._work.set()

    def _kick(self) -> None:
        """There is work for the driver (a message stepped, a proposal, ticks, a disk round
        done). With the task waiting between Readys, one callback at the end of this loop
        turn does it, whatever else the turn brings; otherwise the task is woken (or is
        running `_drive`, which looks for more work before it returns)."""
        if self._driving:
            return
        if self._idle and not self._work.is_set():
            if not self._drive_scheduled:
                self._drive_scheduled = True
                drive_pass = self._drive_pass
                assert drive_pass is not None
                drive_pass.add(self)
            return
        self._work.set()

    def _drive_callback(self) -> None:
        self._drive_scheduled = False
        replica = self._replica
        if replica is None or self._closing or self._failure is not None:
            return
        if not self._idle or self._work.is_set():
            self._work.set()  # the task runs (or is mid-way): it does the work
            return
        self._drive_here(replica)

    def _drive_here(self, replica: Replica) -> None:
        """Drive from a callback; the task takes over what `_drive` leaves it."""
        try:
            needs_task = self._drive(replica)
        except Exception as error:  # noqa: BLE001 - as in the driver: never die silently
            self._fail(error)
            return
        if needs_task:
            self._work.set()

    def _drive(self, replica: Replica) -> bool:
        """Do every Ready the core has, pipelined: a Ready's records go to the disk and the
        next Ready is taken at once, so a proposal or a vote that arrives during an fsync is
        answered by the next round instead of waiting for that fsync. What may not leave
        before the records are durable (votes, and whatever the core holds back while an
        earlier Ready is unsynced: `Replica.advance`) leaves in `_complete_durable`, in
        order, and only then does the core count this member's own votes.

        Synchronous; True when what is left needs the driver task (a snapshot to install,
        in `_handoff`; a full pipeline; a log rewrite), False when all is done."""
        assert not self._driving, "the driver does not run twice at once"
        assert self._handoff is None, "the task finishes a handed-off Ready first"
        unsynced = self._unsynced
        self._driving = True
        try:
            self._deliver_ticks()
            self._complete_durable(replica)
            while len(unsynced) < PIPELINE_READYS_MAX and replica.has_ready():
                rd = replica.ready()
                self._send(rd.send_now)
                if rd.install_snapshot is not None:
                    self._handoff = rd
                    return True
                self._apply_entries(rd)
                self._finish_ready(replica, rd)
            if len(unsynced) >= PIPELINE_READYS_MAX:
                return True
            if not unsynced:
                if self._rewrite_due or self._rebase_wanted(replica):
                    return True
            self._note_leader(replica)
            return False
        finally:
            self._driving = False

    def _finish_ready(self, replica: Replica, rd: Ready) -> None:
        """After a Ready's messages went out and its entries were applied: its records to
        the disk (or straight on, with nothing to persist), the core advanced."""
        # Applied and answered before this Ready's fsync: every entry handed out is already
        # chosen (durable on a Q2 quorum: the leader counts its own vote only once it is on
        # disk, a follower learns a slot chosen from the leader), so the local records only
        # speed up recovery. A crash before the fsync leaves the store ahead of the
        # member's log; the replay skips what the store has.
        unsynced = self._unsynced
        if rd.persist and _waits_for_nothing(rd):
            # Only a commit point, and nothing waits for it: it goes with the next round
            # instead of paying one (a restart may learn it again).
            disk = self._disk_log
            assert disk is not None
            disk.submit_lazily(rd.persist)
            rd.persist = []
        if rd.persist or unsynced:
            future: asyncio.Future[None] | None = None
            if rd.persist:
                disk = self._disk_log
                assert disk is not None
                future = disk.submit(rd.persist, self._on_synced)
                if any(isinstance(r, SnapshotRecord) for r in rd.persist):
                    self._rewrite_due = True
            replica.advance(rd, durable=False)
            unsynced.append((rd, future))
        else:
            self._send(rd.send_after_persist)
            replica.advance(rd)
        self._advanced.set()
        if self._round_waiters:
            waiters, self._round_waiters = self._round_waiters, []
            for waiter in waiters:
                _wake(waiter)
        if rd.snapshot_suggested:
            self._take_snapshot(replica)
        self._deliver_ticks()
        self._complete_durable(replica)

    def _on_synced(self) -> None:
        """A round of the disk finished (called from the node log's round completion, once
        per round however many of this member's Readys it covered): with the driver task
        waiting between Readys, the Readys it made durable are finished here at once (their
        held-back messages sent, the core told) and whatever that gave the core to do with
        them; else the task is woken. Mid-Ready (a snapshot install awaits) the task does
        it."""
        replica = self._replica
        if replica is None or self._closing or self._failure is not None:
            self._work.set()
            return
        if self._driving or not self._idle or self._work.is_set():
            self._work.set()
            return
        self._drive_here(replica)

    def _complete_durable(self, replica: Replica) -> None:
        """Finish, in order, every Ready whose records are now on disk: send what waited
        for them and let the core count this member's votes."""
        unsynced = self._unsynced
        while unsynced:
            rd, future = unsynced[0]
            if future is not None:
                if not future.done():
                    return
                error = future.exception()
                if error is not None:
                    raise error
                self.persist_count += 1
            unsynced.popleft()
            self._send(rd.send_after_persist)
            replica.persisted(rd)
            if future is not None and replica.has_ready():
                self._kick()

    def _note_leader(self, replica: Replica) -> None:
        if replica.is_leader and replica.ballot != self._leading_ballot:
            self._leading_ballot = replica.ballot
            self._forget_earlier_proposals(replica.ballot)
        leader = replica.leader_hint if replica.is_leader or replica.leader_hint else None
        if leader != self._last_leader:
            self._last_leader = leader
            self._leader_changed.set()
            if replica.is_leader:
                log.info(
                    "group %s: %s leads at ballot %s", self.group_id, self.member_id, replica.ballot
                )

    def _forget_earlier_proposals(self, ballot: Ballot) -> None:
        """Leading again at a new ballot, the core forgets the proposals it made under an
        earlier one whose outcome it never learned (docs/consensus.md, "Interface"): they
        would only time out, so they fail now, with their outcome unknown."""
        for pid, proposed_at in list(self._pending_ballot.items()):
            future = self._pending.get(pid)
            if proposed_at != ballot and future is not None and not future.done():
                future.set_exception(
                    AppendTimeout(
                        f"group {self.group_id}: leadership changed while the record was in "
                        "flight; it may or may not be committed"
                    )
                )

    async def _install_snapshot_of(self, rd: Ready) -> None:
        """Install the snapshot a Ready carries, unless the store already holds its state."""
        snap = rd.install_snapshot
        assert snap is not None
        store = self._store
        token_lsn = store_token_lsn(snap.state)
        # The store already holds the snapshot's state (a restart, or a snapshot of a
        # state we have): a token names a store LSN, other bytes the slot itself.
        held = token_lsn if token_lsn is not None else int(snap.slot)
        # A log-only member keeps no state: a snapshot it installs only moves its log.
        if held > store.applied_lsn() and not self._live_replica().log_only:
            installing = self._snapshot_installer(snap.state, int(snap.slot))
            if inspect.isawaitable(installing):
                await installing
            self.snapshots_installed += 1
            assert store.applied_lsn() >= held, "the installed state is older than its snapshot"
        self._snapshot_senders.clear()

    def _apply_entries(self, rd: Ready) -> None:
        """Hand a Ready's chosen commands to the state machine (one store batch) and answer
        the proposals it settles."""
        store = self._store
        applied_lsn = store.applied_lsn()
        batch: list[Entry] = []
        pending = self._pending
        node_id = self._node_id
        command = EntryKind.COMMAND
        for slot, entry in rd.apply:
            if pending and entry.origin == node_id and entry.proposal_id in pending:
                self._pending_slot[entry.proposal_id] = int(slot)
            if entry.kind is command and slot > applied_lsn:
                batch.append((int(slot), entry.command))
        if batch:
            batch_context = getattr(store, "batch", None)
            context: AbstractContextManager[object] = (
                batch_context() if batch_context is not None else nullcontext()
            )
            with context:
                self._apply(batch)
            self.applied_count += len(batch)
        for pid in rd.acknowledged:
            future = pending.get(pid)
            if future is not None and not future.done():
                slot_of = self._pending_slot.get(pid)
                future.set_result(slot_of if slot_of is not None else int(self._replica_commit()))
        for pid in rd.dropped:
            future = pending.get(pid)
            if future is not None and not future.done():
                future.set_exception(NotLeader(self.leader_hint))

    def _replica_commit(self) -> int:
        return int(self._replica.commit_slot) if self._replica is not None else 0

    async def _install_from_store_snapshot(self, state: bytes, slot: int) -> None:
        """The default installer: the state a store token names is fetched from a member
        holding it (the sender of the snapshot first), a full dump is installed as it is.

        The state fetched may be newer than the token's LSN (the holder kept applying):
        that is the state after a later chosen slot, and the entries up to it are then
        skipped because the store's applied LSN covers them.
        """
        needed = store_token_lsn(state)
        if needed is None:
            install_store_snapshot(self._store, state, slot)
            return
        prefix = self._options.node_prefix
        first = self._snapshot_senders.get(slot)
        members = sorted(set(self._live_replica().config.node_ids) | {first or self._node_id})
        order = ([first] if first is not None else []) + [
            n for n in members if n != first and n != self._node_id
        ]
        for round_number in range(SNAPSHOT_PULL_ROUNDS_MAX):
            for member in order:
                node = member_name(member, prefix)
                try:
                    reply = await self._transport.call(
                        node,
                        self._snapshot_channel,
                        {"slot": slot, "lsn": needed},
                        SNAPSHOT_PULL_SECONDS,
                    )
                except TransportError as error:
                    log.warning(
                        "group %s: cannot pull the state at %d from %s: %s",
                        self.group_id,
                        slot,
                        node,
                        error,
                    )
                    continue
                if not isinstance(reply, dict) or not isinstance(reply.get("state"), bytes):
                    continue  # that member does not hold the state (yet)
                lsn = reply.get("lsn")
                if not isinstance(lsn, int) or lsn < needed or lsn <= self._store.applied_lsn():
                    continue
                try:
                    install_store_snapshot(self._store, reply["state"], lsn)
                except ValueError as error:
                    log.warning("group %s: %s sent a bad state: %s", self.group_id, node, error)
                    continue
                log.info(
                    "group %s: installed the state at %d (snapshot %d) from %s",
                    self.group_id,
                    lsn,
                    slot,
                    node,
                )
                return
            await asyncio.sleep(SNAPSHOT_PULL_PAUSE_SECONDS * (round_number + 1))
        raise GroupError(f"group {self.group_id}: no member gave the state at slot {slot}")

    async def _on_snapshot_pull(self, sender: str, payload: Any) -> dict[str, Any]:
        """A member installing a snapshot asks for our store's state (read in one go on the
        loop, so it is the state after exactly `lsn`)."""
        needed = payload.get("lsn") if isinstance(payload, dict) else None
        if not isinstance(needed, int) or self._replica is None or self._replica.log_only:
            return {"error": "no state here"}
        lsn = self._store.applied_lsn()
        if lsn < needed:
            return {"error": f"this member has applied up to {lsn} only"}
        # The store holds exactly the state after `slot`: its last command is `lsn` and it
        # has applied every slot up to the replica's applied slot (no command since lsn).
        slot = max(lsn, int(self._replica.applied_slot))
        return {"lsn": lsn, "slot": slot, "state": store_snapshot(self._store)}

    async def restore_state(self, timeout_seconds: float = SNAPSHOT_PULL_SECONDS) -> bool:
        """Rebuild a promoted log replica (a log-only member that the configuration now makes
        a full member) from the state of a full member plus the log since
        (`Replica.restore_state`). True once this member holds state (at once if it already
        did); False when no member gave a usable state within the timeout (call again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            replica = self._live_replica()
            if not replica.log_only:
                return True
            if loop.time() >= deadline or not replica.config.can_lead(self._node_id):
                return False
            for member in sorted(replica.config.node_ids):
                config = replica.config
                if member == self._node_id or not config.can_lead(member):
                    continue
                node = member_name(member, self._options.node_prefix)
                try:
                    reply = await self._transport.call(
                        node,
                        self._snapshot_channel,
                        {"slot": 0, "lsn": 0},
                        max(0.1, min(SNAPSHOT_PULL_SECONDS, deadline - loop.time())),
                    )
                except TransportError as error:
                    log.info("group %s: no state from %s: %s", self.group_id, node, error)
                    continue
                if not isinstance(reply, dict) or not isinstance(reply.get("state"), bytes):
                    continue
                lsn, slot = reply.get("lsn"), reply.get("slot")
                if not isinstance(lsn, int) or not isinstance(slot, int) or slot < lsn:
                    continue
                if lsn < self._store.applied_lsn():
                    continue  # older than a state fetched before: a newer one will come
                # Wait to know the state's slot chosen (it may be a heartbeat ahead of us).
                while self._live_replica().commit_slot < slot and loop.time() < deadline:
                    await asyncio.sleep(self._options.tick_seconds)
                if not self._live_replica().log_only:
                    return True
                try:
                    install_store_snapshot(self._store, reply["state"], lsn)
                except ValueError as error:
                    log.warning("group %s: %s sent a bad state: %s", self.group_id, node, error)
                    continue
                if self._live_replica().restore_state(Slot(slot), store_token(self._store)):
                    self._kick()
                    log.info(
                        "group %s: rebuilt from %s at slot %d (store at %d)",
                        self.group_id,
                        node,
                        slot,
                        lsn,
                    )
                    return True
            await asyncio.sleep(SNAPSHOT_PULL_PAUSE_SECONDS)

    def _take_snapshot(self, replica: Replica) -> None:
        """The state machine's bytes after the last applied slot (apply is synchronous on
        this loop, so the store holds exactly that state now)."""
        if replica.log_only:
            return
        slot = replica.applied_slot
        if self._store.applied_lsn() > slot:
            # Restarted with a store ahead of the replica's own log (applied before a
            # crash lost the fsync): the store's bytes are not the state after `slot`.
            return
        replica.take_snapshot(slot, self._snapshot_source())
        self.snapshots_taken += 1
        self._kick()

    def _rebase_wanted(self, replica: Replica) -> bool:
        """Whether to restate this member's state now because the node log's oldest segment
        waits for it. Never for a log-only member: it keeps every entry (it has no snapshot
        to restate them with), so a rewrite would copy its whole log to the head again, and
        the copies of every log-only member on a node would fill the segments that ask for
        the next rewrites, without end; its entries keep their segments instead."""
        disk = self._disk_log
        return (
            disk is not None
            and not replica.log_only
            and disk.rebase_wanted()
            and not replica.has_ready()
        )

    async def _maybe_rewrite(self, replica: Replica) -> None:
        disk = self._disk_log
        assert disk is not None
        state = replica.durable_state()
        snap_slot = state.snapshot.slot if state.snapshot is not None else 0
        if disk.records_since_rewrite() < REWRITE_RECORDS_MIN:
            return
        if snap_slot <= self._snapshot_slot_at_rewrite:
            return
        self._snapshot_slot_at_rewrite = snap_slot
        await self._rewrite(replica, f"snapshot {snap_slot}")

    async def _rewrite(self, replica: Replica, reason: str) -> None:
        """Restate the member's durable state as its log's new base (between Readys, so
        the records of every Ready handed out so far are already in the log)."""
        disk = self._disk_log
        assert disk is not None
        removed = await disk.rewrite(replica.durable_state().records())
        self.rewrites += 1
        log.info(
            "group %s: rewrote its log (%s; %d segments removed)", self.group_id, reason, removed
        )

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
            log.critical("group %s member %s failed: %r", self.group_id, self.member_id, error)
        self._fail_pending(GroupClosed(f"group {self.group_id} failed: {error}"))
        self._options.on_fatal(error)

    def _fail_pending(self, error: GroupError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


__all__ = [
    "AppendTimeout",
    "Config",
    "ConfigError",
    "GroupBusy",
    "GroupClosed",
    "GroupError",
    "GroupLog",
    "GroupOptions",
    "NotLeader",
    "install_store_snapshot",
    "member_name",
    "member_node_id",
    "store_snapshot",
]
