"""`LocalLog`: the `ReplicatedLog` of a replica group of one, with group commit.

This module owns the single-member write path: queueing records, writing and fsyncing them
in groups, applying committed entries to the store in LSN order, recovery at open, and
periodic checkpoints. It never interprets records (the apply callback does) and never
acknowledges a record before the fsync that covers it has returned.

How a node wires it (the store first, since the database that provides `apply` needs it)::

    store = LmdbStore(data_dir / "store")
    db = Database(store)
    log = await LocalLog.open(data_dir / "wal", store, db.apply)
    db.attach_log(log)
    ...
    await log.close()   # final fsync and checkpoint
    store.close()

Group commit: `append` puts a record in a queue and waits. The disk thread writes
everything queued (up to BATCH_RECORDS_MAX records or BATCH_BYTES_MAX bytes) and fsyncs
once, so that the event loop keeps parsing requests and queueing the next group while the
disk works. Back on the loop thread the group is applied once, in LSN order, inside one
store transaction when the store offers `batch()`, and then every waiter is woken. Many
concurrent writers therefore share one fsync.

The disk thread takes each group itself, when it comes to the write job (the flusher keeps
GROUPS_IN_FLIGHT_MAX jobs in its queue): so the next group's write starts as soon as the
previous fsync returns, with everything that arrived during it, instead of after the result
has crossed back to the loop, been applied and the next job has crossed over again (that
hand-off both ways took 0.15-0.8 ms of wall time per group on a busy two-core host:
docs/performance.md, "Where a durable write's time goes"). Only what an fsync covered is
ever applied or acknowledged: a group is answered after its own fsync, and groups are
applied in the order they were written. Checkpoints wait until no group is in flight.
`timings` (`GroupTimings`) sums where the groups' wall time went; with KEELDB_LOG_STATS
set they are written to that file every second (`benchmarks/write_decompose.py`).

Checkpoint: every CHECKPOINT_INTERVAL_SECONDS (if anything was applied) or after
CHECKPOINT_WAL_BYTES of log, and at close, the flusher makes the store durable
(`store.sync()`) and then removes the log segments wholly below the store's applied LSN.
The order matters: segments are removed only once the state they produced is on disk.
A retention hook (`retain_from`) can keep segments longer: the archive of continuous backups
sets it so that no segment is removed before it has been copied to the backup store.
The environment variables KEELDB_CHECKPOINT_INTERVAL_SECONDS, KEELDB_CHECKPOINT_WAL_BYTES and
KEELDB_WAL_SEGMENT_BYTES override those sizes (the crash test makes them small so that kills
land during checkpoints and segment roll-overs).

Commit times: every record is written with its group's commit time (microseconds since the
epoch, `WriteAheadLog(commit_times=True)`), taken from the clock when the group is written and
never below the previous group's time, so that times are non-decreasing in LSN order even if
the wall clock steps back (also across restarts: the last time is read back at open).

The disk thread and the interpreter lock: when an fsync returns, the disk thread needs the GIL
to hand the group back to the event loop. If the loop is busy (serving reads of other clients)
it gives the GIL up only every switch interval, 5 ms by default, and every acknowledgement of
the group waits for it: on workload A (50 % UpdateItem, 8 in flight) UpdateItem p50 was
9.3 ms with the default and 6.1 ms with 0.5 ms, throughput +36 % (docs/performance.md). So
opening a log lowers the process's switch interval to GIL_SWITCH_INTERVAL_SECONDS (never
raises it); with a single busy thread the interval has no effect.

Where a group is fsynced: by default ("async", `SYNC_MODE_DEFAULT`) by the kernel, completed
on the loop (see "Completion-based fsync" below) where io_uring is available, else ("thread")
in the disk thread, as above. KEELDB_WAL_SYNC=inline writes and fsyncs each group on the
event-loop thread itself instead, which saves the hand-off to the disk thread and back but
serves no request while the fsync runs. KEELDB_WAL_SYNC=auto chooses per group: inline when
no write job is in flight and every request the log's owner holds (`set_demand`: the
database's requests in `dispatch`) is a writer in the group, since then nothing could be
served during the fsync; the disk thread otherwise. On the shared two-core development
machine none of thread, inline and auto was consistently faster than the others on
workloads load and A; async was faster than thread by 7 % at the median of ten interleaved
pairs on each (docs/performance.md), and is the default. In the thread, inline and auto
modes, sealing, checkpoints and close run in the disk thread; a lock on the files keeps them
apart from an inline group, and a group that finds the files busy goes to the disk thread
after them instead of blocking the loop.

Completion-based fsync: KEELDB_WAL_SYNC=async writes each group on the loop thread (into
the page cache: cheap, the segments being preallocated) and submits its fdatasync to the
kernel through io_uring (`keeldb/storage/async_sync.py`); the loop keeps serving, and when
the kernel posts the completion the loop, in `_synced`, first writes and submits the next
group (everything queued meanwhile) and then applies and answers the completed one. No
thread of ours waits for the disk, so nothing waits for the interpreter lock on the way
back. Up to GROUPS_IN_FLIGHT_MAX groups are in flight: records queued while a sync runs are
written at once (by one callback at the end of the loop turn they were appended in,
`_start_appended`, rather than by waking the flusher task) and their sync submitted behind
it, and the kernel starts it when the one before completes (IOSQE_IO_DRAIN), without
waiting for the loop; so completions come in LSN order, each group is answered after a sync
submitted after its write, and groups are applied in order. A group that would roll over to
a new segment, or write zeroes ahead in it, goes to the disk thread once nothing is in
flight (the loop writes records only). The kernel looks the segment's descriptor up when it
runs the sync, so seals, checkpoints and close run between groups (the flusher waits until
nothing is in flight, and `_synced` starts no group while one is requested). A failed
fdatasync is fatal as in the other modes. Where io_uring is missing or refused (an old
kernel, io_uring_disabled, a seccomp filter, a machine other than x86-64) the log falls
back to the disk thread. A disk given by a test (`fsync`) is run on the loop in a later
iteration instead of the kernel's (`CallSync`), so that the same completion path is
exercised.

An fsync failure is fatal (see `WriteAheadLog.sync`): every waiter gets `LogFailedError`
and `on_fatal` is called, which by default ends the process so that a restart recovers from
what is really on disk.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from keeldb.storage.async_sync import AsyncSyncer, CallSync, open_uring_sync
from keeldb.storage.protocols import ApplyFn, Entry, Store
from keeldb.storage.wal import (
    PREALLOCATE_BYTES,
    RECORD_BYTES_MAX,
    RECORD_HEADER_BYTES,
    SEGMENT_BYTES,
    CorruptLogError,
    FsyncFailedError,
    FsyncFn,
    RecordTooLargeError,
    WriteAheadLog,
)

log = logging.getLogger(__name__)

BATCH_RECORDS_MAX = 4096  # records written and fsynced together, at most
BATCH_BYTES_MAX = 8 * 1024 * 1024  # payload bytes in one group, at most (a group can exceed
# it by one record, so a single large record is never starved)
REPLAY_BATCH_RECORDS = 1024  # entries handed to `apply` at a time during recovery
CHECKPOINT_INTERVAL_SECONDS = 60.0  # a checkpoint at least this often while writes arrive
CHECKPOINT_WAL_BYTES = 128 * 1024 * 1024  # ... and whenever this much log was written since
STATS_WRITE_INTERVAL_SECONDS = 1.0  # how often KEELDB_LOG_STATS is rewritten, when set
GIL_SWITCH_INTERVAL_SECONDS = 0.0005  # see "The disk thread and the interpreter lock" above
# Where a group is written and fsynced: in the disk thread, or "inline" on the event-loop
# thread (no hand-off to the disk thread and back; see "Where a group is fsynced" above).
# "async": written on the loop thread, fdatasync completed on it through io_uring (see
# "Completion-based fsync" above).
SYNC_MODES = ("inline", "thread", "auto", "async")
SYNC_MODE_DEFAULT = "async"  # "thread" where io_uring cannot be used
# Write jobs given to the disk thread at once: one writing and fsyncing, one waiting to take
# what arrives meanwhile and write it as soon as that fsync returns. More would only split
# the writers into smaller groups, each with its own fsync.
GROUPS_IN_FLIGHT_MAX = 2
EXIT_FSYNC_FAILED = 70  # exit status when the log cannot be made durable (EX_SOFTWARE)

FatalFn = Callable[[BaseException], None]
DemandFn = Callable[[], int]  # how many requests the log's owner holds now
ClockFn = Callable[[], int]  # microseconds since the epoch
RetainFn = Callable[[], int]  # the lowest LSN whose segment must be kept
_T = TypeVar("_T")


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class LogFailedError(Exception):
    """The log can no longer make records durable: an operating error.

    Raised to the writers whose records were in flight, and to every later `append`.
    """


def exit_process(error: BaseException) -> None:
    """The default reaction to a fatal log error: stop the process at once."""
    sys.stderr.write(f"keeldb: fatal storage error, stopping: {error!r}\n")
    sys.stderr.flush()
    os._exit(EXIT_FSYNC_FAILED)


class LocalLog:
    """A durable, ordered log of one member: an entry commits when its fsync returns."""

    def __init__(
        self,
        wal: WriteAheadLog,
        store: Store,
        apply: ApplyFn,
        *,
        on_fatal: FatalFn,
        checkpoint_interval_seconds: float,
        checkpoint_wal_bytes: int,
        clock_us: ClockFn = wall_clock_us,
        sync_mode: str = "thread",
        syncer: AsyncSyncer | None = None,
    ) -> None:
        """Use `open`; this constructor does no recovery."""
        assert sync_mode in SYNC_MODES, sync_mode
        assert (syncer is not None) == (sync_mode == "async"), (sync_mode, syncer)
        self._wal = wal
        # The store's `batch` (one transaction for a group's writes), if it has one.
        self._batch: Callable[[], AbstractContextManager[object]] | None = getattr(
            store, "batch", None
        )
        # "async": completes each group's fdatasync on the loop (`_start_async_group`);
        # the groups whose fdatasync is in flight, oldest first (they complete in order).
        self._syncer = syncer
        self._in_sync: collections.deque[_Written] = collections.deque()
        # `seal` callers in the "async" mode, which seals between groups (see `seal`).
        self._seal_waiters: list[asyncio.Future[bool]] = []
        self._sync_inline = sync_mode == "inline"
        # "auto": inline when every request its owner holds is a writer in the group (see
        # `set_demand`), else the disk thread.
        self._auto = sync_mode == "auto"
        self._demand: DemandFn | None = None
        # Held by whichever thread works on the log files (the loop thread writing a group
        # inline, or the disk thread sealing, checkpointing or closing), so that the two
        # never interleave; the loop thread never waits for it (it hands the group to the
        # disk thread instead).
        self._files_lock = threading.Lock()
        self._clock_us = clock_us
        # Written only while holding the files: the time given to the last group written.
        self._last_time_us = wal.last_commit_time_us()
        self._committed_time_us = self._last_time_us  # ... of the last group committed
        self._retain: RetainFn | None = None
        self._store = store
        self._apply = apply
        self._on_fatal = on_fatal
        self._checkpoint_interval_seconds = checkpoint_interval_seconds
        self._checkpoint_wal_bytes = checkpoint_wal_bytes
        # (record, its writer's future, when it was appended: perf_counter seconds)
        self._queue: list[tuple[bytes, asyncio.Future[int], float]] = []
        self._group: list[tuple[bytes, asyncio.Future[int], float]] = []  # being committed
        # Write jobs in the disk thread or on their way back (the disk thread's flusher).
        self._writing = 0
        # Whether a record was queued since the last write job was started: a job takes
        # everything queued when it runs, so a new job is only worth starting for these.
        self._fresh = False
        self._wakeup = asyncio.Event()
        # "async": a call of `_start_appended` is due at the end of this loop turn.
        self._start_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._committed_lsn = wal.last_lsn()
        self._failure: BaseException | None = None
        self._closing = False
        self._bytes_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpointed_lsn = store.applied_lsn()
        # One thread for all disk work of this log, so its operations stay in order.
        self._disk = DiskThread(self._loop, name="keeldb-wal")
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoint_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._stats_timer: asyncio.TimerHandle | None = None
        self.fsync_count = 0  # group commits so far: one fsync each
        self.appended_count = 0  # records committed so far
        self.timings = GroupTimings()  # where a group commit's wall time goes
        stats_path = os.environ.get("KEELDB_LOG_STATS")
        self._stats_path = Path(stats_path) if stats_path else None

    @classmethod
    async def open(
        cls,
        wal_dir: Path,
        store: Store,
        apply: ApplyFn,
        *,
        on_fatal: FatalFn = exit_process,
        checkpoint_interval_seconds: float | None = None,
        checkpoint_wal_bytes: int | None = None,
        segment_bytes: int | None = None,
        fsync: FsyncFn | None = None,
        clock_us: ClockFn = wall_clock_us,
        sync_mode: str | None = None,
        preallocate_bytes: int | None = None,
    ) -> LocalLog:
        """Open the log in `wal_dir`, replay what the store lacks through `apply`, start.

        `segment_bytes`, `fsync` and `preallocate_bytes` are passed to the `WriteAheadLog`
        (tests use small segments and a disk that records or fails its fsyncs; 0 bytes
        preallocated turns preallocation off). Sizes and intervals left out
        come from the environment (see `_setting`), else from the named defaults.
        """
        if checkpoint_interval_seconds is None:
            checkpoint_interval_seconds = _setting(
                "KEELDB_CHECKPOINT_INTERVAL_SECONDS", CHECKPOINT_INTERVAL_SECONDS
            )
        if checkpoint_wal_bytes is None:
            checkpoint_wal_bytes = int(
                _setting("KEELDB_CHECKPOINT_WAL_BYTES", CHECKPOINT_WAL_BYTES)
            )
        if segment_bytes is None:
            segment_bytes = int(_setting("KEELDB_WAL_SEGMENT_BYTES", SEGMENT_BYTES))
        if preallocate_bytes is None:
            raw = os.environ.get("KEELDB_WAL_PREALLOCATE_BYTES")
            preallocate_bytes = PREALLOCATE_BYTES if raw is None else int(raw)
        if preallocate_bytes < 0:
            raise ValueError(f"KEELDB_WAL_PREALLOCATE_BYTES must be >= 0, not {preallocate_bytes}")
        if sync_mode is None:
            sync_mode = os.environ.get("KEELDB_WAL_SYNC", SYNC_MODE_DEFAULT)
        if sync_mode not in SYNC_MODES:
            raise ValueError(f"KEELDB_WAL_SYNC must be one of {SYNC_MODES}, not {sync_mode!r}")
        loop = asyncio.get_running_loop()
        syncer: AsyncSyncer | None = None
        if sync_mode == "async":
            # A disk given by a test (recording or failing its fsyncs) is completed on the
            # loop too; else the kernel's io_uring, or the disk thread where it is missing.
            syncer = CallSync(loop, fsync) if fsync is not None else open_uring_sync(loop)
            if syncer is None:
                sync_mode = "thread"
        applied_lsn = store.applied_lsn()
        switch_interval_seconds = _setting(
            "KEELDB_GIL_SWITCH_INTERVAL_SECONDS", GIL_SWITCH_INTERVAL_SECONDS
        )
        if sys.getswitchinterval() > switch_interval_seconds:
            sys.setswitchinterval(switch_interval_seconds)

        def open_wal() -> WriteAheadLog:
            if fsync is None:
                return WriteAheadLog(
                    wal_dir,
                    start_lsn=applied_lsn,
                    segment_bytes=segment_bytes,
                    commit_times=True,
                    preallocate_bytes=preallocate_bytes,
                )
            return WriteAheadLog(
                wal_dir,
                start_lsn=applied_lsn,
                segment_bytes=segment_bytes,
                fsync=fsync,
                commit_times=True,
                preallocate_bytes=preallocate_bytes,
            )

        wal = await loop.run_in_executor(None, open_wal)
        try:
            if wal.last_lsn() < applied_lsn:
                raise CorruptLogError(
                    f"{wal_dir}: the log ends at record {wal.last_lsn()} but the store has "
                    f"applied up to {applied_lsn}: acknowledged records are missing"
                )
            self = cls(
                wal,
                store,
                apply,
                on_fatal=on_fatal,
                checkpoint_interval_seconds=checkpoint_interval_seconds,
                checkpoint_wal_bytes=checkpoint_wal_bytes,
                clock_us=clock_us,
                sync_mode=sync_mode,
                syncer=syncer,
            )
            replayed = self._recover(applied_lsn)
        except BaseException:
            wal.close()
            if syncer is not None:
                syncer.close()
            raise
        if replayed:
            log.info("replayed %d log records after LSN %d", replayed, applied_lsn)
        self._flusher = asyncio.create_task(self._flush_forever(), name="keeldb-log-flusher")
        self._schedule_timer()
        self._schedule_stats()
        return self

    def _recover(self, applied_lsn: int) -> int:
        """Apply every logged entry the store has not applied yet, in order."""
        replayed = 0
        for chunk in _chunks(self._wal.replay(applied_lsn), REPLAY_BATCH_RECORDS):
            with self._store_batch():
                self._apply(chunk)
            replayed += len(chunk)
            self._bytes_since_checkpoint += sum(len(p) + RECORD_HEADER_BYTES for _, p in chunk)
        assert self._store.applied_lsn() <= self._wal.last_lsn()
        return replayed

    def _store_batch(self) -> AbstractContextManager[object]:
        batch = self._batch
        if batch is None:
            return nullcontext()
        context: AbstractContextManager[object] = batch()
        return context

    # --- the ReplicatedLog interface -----------------------------------------------------

    async def append(self, record: bytes) -> int:
        if len(record) > RECORD_BYTES_MAX:
            # The engine's limits keep records far below this; refuse it here, alone, rather
            # than fail the group it would have joined.
            raise RecordTooLargeError(
                f"record of {len(record)} bytes exceeds {RECORD_BYTES_MAX} bytes"
            )
        if self._failure is not None:
            raise LogFailedError("the log has failed") from self._failure
        if self._closing:
            raise LogFailedError("the log is closed")
        future: asyncio.Future[int] = self._loop.create_future()
        self._queue.append((record, future, time.perf_counter()))
        self._fresh = True
        if self._syncer is None:
            self._wakeup.set()
        elif not self._start_scheduled:
            # Once per loop turn, after the callbacks already ready (whose appends join
            # the same group), as the flusher's wake-up would, without a task step.
            self._start_scheduled = True
            self._loop.call_soon(self._start_appended)
        return await future

    def _start_appended(self) -> None:
        """The "async" mode's start of groups for new appends, at the end of the loop turn
        they arrived in: what the flusher would do when woken (`_flush_pipelined_until_closed`),
        done here; anything else (a failure, a seal or a checkpoint to run between groups)
        is left to the flusher. It acts for the flusher: once that has ended (or was
        cancelled), no group starts here either."""
        self._start_scheduled = False
        flusher = self._flusher
        if flusher is None or flusher.done():
            return
        while self._queue and self._fresh and self._writing < GROUPS_IN_FLIGHT_MAX:
            if self._flusher_work_due():
                self._wakeup.set()
                return
            self._fresh = False
            try:
                self._start_async_group()
            except Exception as error:  # noqa: BLE001 - as in the flusher: never leave
                # writers waiting on a log that no longer flushes.
                self._fail(error)
                return

    def _flusher_work_due(self) -> bool:
        """Whether the flusher has something to do before the next group starts: fail what
        is queued, or run a seal or a checkpoint between groups."""
        return (
            self._failure is not None
            or bool(self._seal_waiters)
            or bool(self._checkpoint_waiters)
            or self._checkpoint_due()
        )

    def committed_lsn(self) -> int:
        return self._committed_lsn

    def committed_time_us(self) -> int:
        """The commit time of the last committed record (microseconds; 0 if none yet)."""
        return self._committed_time_us

    def now_us(self) -> int:
        """The log's clock now, never below the last commit time (microseconds)."""
        return max(self._clock_us(), self._last_time_us)

    def retain_from(self, retain: RetainFn | None) -> None:
        """Keep every segment holding an LSN at or above `retain()` at checkpoints (None: no
        hold). `retain` is called in the log's disk thread and must only read a number."""
        self._retain = retain

    async def seal(self) -> bool:
        """Seal the segment being written, in order with the groups written before; returns
        whether there was anything to seal. Sealed segments are the archive's unit."""
        if self._failure is not None:
            raise LogFailedError("the log has failed") from self._failure
        if self._flusher is None:
            raise LogFailedError("the log is closed")
        if self._syncer is not None:
            # The segment's descriptor must stay open while a group's fdatasync is in
            # flight: the flusher seals between groups, as it checkpoints.
            sealed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._seal_waiters.append(sealed)
            self._wakeup.set()
            return await sealed
        try:
            return await self._disk.run(self._locked, self._wal.seal)
        except FsyncFailedError as error:
            self._fail(error)
            raise LogFailedError(f"the log failed: {error}") from error

    def sealed_segments(self) -> list[tuple[int, Path]]:
        """(first LSN, path) of every sealed segment still on disk, oldest first."""
        return self._wal.sealed_segments()

    async def close(self) -> None:
        """Commit what is queued, checkpoint, and stop. Idempotent."""
        if self._flusher is None:
            return
        self._closing = True
        self._wakeup.set()
        flusher, self._flusher = self._flusher, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stats_timer is not None:
            self._stats_timer.cancel()
            self._stats_timer = None
        await flusher
        self.write_stats()
        if self._failure is None:
            try:
                await self._disk.run(self._locked, self._checkpoint_on_disk)
            except FsyncFailedError as error:
                self._fail(error)
        await self._disk.run(self._locked, self._wal.close)
        self._disk.shutdown(wait=True)
        if self._syncer is not None:
            self._syncer.close()

    async def checkpoint(self) -> None:
        """Make the store durable now and drop the log below it (tests, backups).

        The flusher runs it between two groups, never while a group is being applied.
        """
        if self._failure is not None:
            raise LogFailedError("the log has failed") from self._failure
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._checkpoint_waiters.append(done)
        self._wakeup.set()
        await done

    # --- the flusher ---------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        try:
            await self._flush_until_closed()
        except Exception as error:  # noqa: BLE001 - the flusher must never die silently
            # A bug or an unexpected disk error: stop, rather than leave writers waiting on
            # a log that no longer flushes.
            self._fail(error)

    async def _flush_until_closed(self) -> None:
        if self._sync_inline:
            await self._flush_inline_until_closed()
        else:
            await self._flush_pipelined_until_closed()

    async def _flush_pipelined_until_closed(self) -> None:
        """The disk thread's flusher: it keeps up to GROUPS_IN_FLIGHT_MAX write jobs in the
        disk thread, and each job takes its group from the queue when the disk thread comes
        to it (`_take_write_sync`), so that a group is written as soon as the fsync before
        it returns, with everything that arrived meanwhile, instead of after the previous
        group's result has crossed back to the event loop. Each group is still acknowledged
        only after its own fsync (`_group_written`, on the loop, in log order)."""
        while True:
            if self._failure is not None:
                if not self._writing:
                    self._fail_queued(self._failure)
                    return
            elif self._seal_waiters or self._checkpoint_waiters or self._checkpoint_due():
                if not self._writing:
                    if self._seal_waiters:
                        await self._seal_between_groups()
                    else:
                        await self._checkpoint_between_groups()
                    continue
                # Else wait until the groups in flight are applied: no new group meanwhile.
            elif self._queue and self._fresh and self._writing < GROUPS_IN_FLIGHT_MAX:
                if self._syncer is not None:
                    self._fresh = False
                    self._start_async_group()
                    continue
                if self._inline_now() and self._files_lock.acquire(blocking=False):
                    self._fresh = False
                    self._commit_inline()
                    continue
                self._fresh = False
                self._writing += 1
                self._disk.run_then(self._group_written, self._take_write_sync)
                continue
            elif self._closing and not self._queue and not self._writing:
                return
            # Woken by an append, a group written, a checkpoint request, close, or the
            # checkpoint timer. (Not asyncio.wait_for: on Python 3.11 it can swallow a
            # cancellation.)
            await self._wakeup.wait()
            self._wakeup.clear()

    def set_demand(self, demand: DemandFn | None) -> None:
        """`demand()` tells how many requests the log's owner holds (the database: those in
        its `dispatch`); in the "auto" sync mode a group is written and fsynced on the
        loop thread when every one of them is a writer in the group, since then nobody
        could be served during the fsync anyway, and in the disk thread otherwise."""
        self._demand = demand

    def _inline_now(self) -> bool:
        if not self._auto or self._writing or self._demand is None:
            return False
        return self._demand() <= min(len(self._queue), BATCH_RECORDS_MAX)

    def _commit_inline(self) -> None:
        """On the loop thread, holding the files: write, fsync, apply and answer one group."""
        group = self._take_group()
        if self._queue:
            self._fresh = True  # the group was full: the rest goes in the next one
        self._group = group
        lsn_before = self._wal.last_lsn()
        started = time.perf_counter()
        try:
            last_lsn = self._write_and_sync([record for record, _, _ in group])
        except (FsyncFailedError, OSError) as error:
            self._group_write_failed(group, error, lsn_before)
            return
        finally:
            self._files_lock.release()
        self._finish_group(group, last_lsn, started, time.perf_counter(), inline=True)

    async def _seal_between_groups(self) -> None:
        """The "async" mode's seals, in the disk thread while no group is in flight."""
        requested, self._seal_waiters = self._seal_waiters, []
        try:
            sealed = await self._disk.run(self._locked, self._wal.seal)
        except BaseException as error:  # noqa: BLE001 - handed to the callers of seal
            for done in requested:
                if not done.done():
                    done.set_exception(
                        LogFailedError(f"the log failed: {error}")
                        if isinstance(error, FsyncFailedError)
                        else error
                    )
            if isinstance(error, FsyncFailedError):
                self._fail(error)
            elif not isinstance(error, Exception):
                raise
            return
        for done in requested:
            if not done.done():
                done.set_result(sealed)

    async def _checkpoint_between_groups(self) -> None:
        requested, self._checkpoint_waiters = self._checkpoint_waiters, []
        if self._failure is None:
            try:
                await self._disk.run(self._locked, self._checkpoint_on_disk)
            except FsyncFailedError as error:
                self._fail(error)
        for done in requested:
            if done.done():
                continue
            if self._failure is None:
                done.set_result(None)
            else:
                done.set_exception(LogFailedError(f"the log failed: {self._failure}"))

    async def _flush_inline_until_closed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self._checkpoint_waiters:
                if self._closing or self._failure is not None:
                    return
                # Woken by an append, a checkpoint request, close, or the checkpoint timer.
                await self._wakeup.wait()
                self._wakeup.clear()
            if self._failure is not None:
                self._fail_queued(self._failure)
                return
            if self._queue:
                await self._commit_group(loop)
            if self._checkpoint_waiters or (self._failure is None and self._checkpoint_due()):
                await self._checkpoint_between_groups()

    def _take_write_sync(self) -> _Written:
        """Runs in the disk thread: take what is queued (one group) and write and fsync it.

        Failures are returned with the group they belong to, so that the loop answers
        exactly those writers (`_group_written`)."""
        with self._files_lock:
            started = time.perf_counter()
            group = self._take_group() if self._failure is None else []
            left_behind = bool(group) and bool(self._queue)
            if not group:
                return _Written(group, 0, None, False, started, started)
            lsn_before = self._wal.last_lsn()
            try:
                last_lsn = self._write_and_sync([record for record, _, _ in group])
            except BaseException as error:  # noqa: BLE001 - handed to the loop with its group
                kept_nothing = self._wal.last_lsn() == lsn_before
                return _Written(
                    group, lsn_before, error, kept_nothing, started, started, left_behind
                )
            durable = time.perf_counter()
            return _Written(group, last_lsn, None, False, started, durable, left_behind)

    def _group_written(self, written: _Written | None, error: BaseException | None) -> None:
        """On the loop: a write job is back from the disk thread; apply and acknowledge its
        group, or fail its writers. Jobs come back in the order they ran, so groups are
        applied in LSN order."""
        self._writing -= 1
        if written is not None and written.left_behind:
            self._fresh = True
        try:
            if error is not None or written is None:
                # The job itself broke (a bug): its group is unknown, so everything stops.
                self._fail(error if error is not None else AssertionError("no write result"))
                return
            group = written.group
            if not group:
                return
            if self._failure is not None:
                # Written after the log failed: never acknowledged (the process is stopping).
                for _, future, _ in group:
                    if not future.done():
                        future.set_exception(LogFailedError(f"the log failed: {self._failure}"))
                return
            if written.error is not None:
                self._group = group
                failed_write = isinstance(written.error, OSError) and not isinstance(
                    written.error, FsyncFailedError
                )
                if failed_write and written.kept_nothing:
                    # A write failed (a full disk, say) and nothing of the group was kept:
                    # these writers get the error, later groups may succeed.
                    log.error("log write failed: %r", written.error)
                    self._fail_group(group, written.error)
                    return
                self._fail(written.error)
                return
            self._finish_group(
                group, written.last_lsn, written.started, written.durable, inline=False
            )
        except Exception as unexpected:  # noqa: BLE001 - never leave writers waiting
            self._fail(unexpected)
        finally:
            if self._syncer is not None and self._queue:
                # Records left queued while this group was in the disk thread.
                self._fresh = True
            self._wake_flusher_if_needed()

    def _wake_flusher_if_needed(self) -> None:
        """After a group came back: wake the flusher if it has a group to start, or waits
        for the groups in flight to drain; otherwise it sleeps on (one task wake-up less
        per group)."""
        if (self._queue and self._fresh) or (
            not self._writing
            and (
                self._closing
                or self._failure is not None
                or self._seal_waiters
                or self._checkpoint_waiters
                or self._checkpoint_due()
            )
        ):
            self._wakeup.set()

    # --- the "async" mode: the fdatasync completes on the loop ---------------------------

    def _start_async_group(self) -> None:
        """On the loop: write the next group into the file (the page cache) and submit its
        fdatasync, to start when the one in flight (if any) has completed; `_synced`
        applies and answers it on completion.

        A group that needs more than a write of its records (a roll-over to a new segment,
        which syncs and closes the segment, the descriptor of a sync in flight; or zeroes
        written ahead in a preallocated segment, a few hundred system calls) is written and
        synced in the disk thread instead, once nothing is in flight, and the groups after it
        wait for it: the records stay queued until `_synced` or `_group_written` comes."""
        assert self._syncer is not None
        assert self._writing < GROUPS_IN_FLIGHT_MAX, self._writing
        if len(self._in_sync) != self._writing:
            return  # a group is in the disk thread: it is applied first
        group = self._peek_group()
        payloads = [record for record, _, _ in group]
        if not self._wal.writes_in_place(payloads):
            if not self._writing:
                self._writing += 1
                self._disk.run_then(self._group_written, self._take_write_sync)
            return
        if not self._files_lock.acquire(blocking=False):
            # Seals and checkpoints run between groups in this mode, so the files are
            # free; were they not, the disk thread takes the group after them, unless a
            # group is in flight (it would be applied first): then `_synced` starts it.
            if not self._writing:
                self._writing += 1
                self._disk.run_then(self._group_written, self._take_write_sync)
            return
        del self._queue[: len(group)]  # the group peeked above
        if self._queue:
            self._fresh = True  # the group was full: the rest goes in the next one
        self._group = group  # until it is in flight: an unexpected error fails its writers
        lsn_before = self._wal.last_lsn()
        started = time.perf_counter()
        try:
            last_lsn = self._write_group(payloads)
            # Submitted while holding the files: nothing closes the segment's descriptor
            # before the kernel has completed the sync (seals wait for `_synced`).
            self._syncer.fdatasync(self._wal.sync_fd(), self._synced)
        except (FsyncFailedError, OSError) as error:
            # A write that kept nothing fails its writers alone; a roll-over's failed
            # fsync, a write that kept part of the group, or a refused submission (the
            # group is in the file, unsynced) stops the log.
            self._group_write_failed(group, error, lsn_before)
            return
        finally:
            self._files_lock.release()
        self._group = []
        self._writing += 1
        written = time.perf_counter()
        self._in_sync.append(
            _Written(
                group, last_lsn, None, False, started, written, commit_time_us=self._last_time_us
            )
        )

    def _synced(self, error: OSError | None) -> None:
        """On the loop: the fdatasync of the oldest group in flight completed. Start the
        next group (so the disk works while this one is applied), then apply and answer
        this one; a failed fdatasync stops the log."""
        written = self._in_sync.popleft()
        self._writing -= 1
        durable = time.perf_counter()
        group = written.group
        try:
            self.timings.add_disk(written.durable - written.started, durable - written.durable)
            if error is not None and self._failure is None:
                self._group = group
                self._fail(self._wal.sync_failed(error))
                return
            if self._queue and not self._flusher_work_due():
                self._fresh = False
                self._start_async_group()
            if self._failure is not None:
                # Never acknowledged once the log failed (the process is stopping).
                for _, future, _ in group:
                    if not future.done():
                        future.set_exception(LogFailedError(f"the log failed: {self._failure}"))
                return
            self.timings.async_groups += 1
            self._finish_group(
                group,
                written.last_lsn,
                written.started,
                durable,
                inline=False,
                commit_time_us=written.commit_time_us,
            )
        except Exception as unexpected:  # noqa: BLE001 - never leave writers waiting
            self._fail(unexpected)  # fails the next group, if it was being started
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(LogFailedError(f"the log failed: {unexpected}"))
        finally:
            self._wake_flusher_if_needed()

    def _schedule_timer(self) -> None:
        """Wake the flusher every checkpoint interval, so an idle log still checkpoints."""

        def tick() -> None:
            self._wakeup.set()
            self._schedule_timer()

        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._checkpoint_interval_seconds, tick)

    def _schedule_stats(self) -> None:
        """With KEELDB_LOG_STATS set, write `timings` to that file every
        STATS_WRITE_INTERVAL_SECONDS, so that a benchmark can read a running server's."""
        if self._stats_path is None or self._flusher is None:
            return

        def write() -> None:
            self.write_stats()
            self._schedule_stats()

        self._stats_timer = asyncio.get_running_loop().call_later(
            STATS_WRITE_INTERVAL_SECONDS, write
        )

    def write_stats(self) -> None:
        """Write the counters to the KEELDB_LOG_STATS file (atomically: a reader never
        sees half of it)."""
        if self._stats_path is None:
            return
        stats = {
            **self.timings.as_dict(),
            "fsync_count": self.fsync_count,
            "appended_count": self.appended_count,
            "disk_thread_id": self._disk.native_id,
        }
        temporary = self._stats_path.with_name(self._stats_path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(stats))
            temporary.replace(self._stats_path)
        except OSError as error:
            log.warning("cannot write log statistics to %s: %r", self._stats_path, error)

    def _take_group(self) -> list[tuple[bytes, asyncio.Future[int], float]]:
        group = self._peek_group()
        del self._queue[: len(group)]
        return group

    def _peek_group(self) -> list[tuple[bytes, asyncio.Future[int], float]]:
        """The records the next group would take from the queue."""
        count = 0
        group_bytes = 0
        for record, _, _ in self._queue:
            if count == BATCH_RECORDS_MAX or (
                count and group_bytes + len(record) > BATCH_BYTES_MAX
            ):
                break
            count += 1
            group_bytes += len(record)
        return self._queue[:count]

    async def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._take_group()
        # Kept until answered, so that even an unexpected error fails these writers.
        self._group = group
        payloads = [record for record, _, _ in group]
        lsn_before = self._wal.last_lsn()
        started = time.perf_counter()
        inline = False
        try:
            if self._sync_inline and self._files_lock.acquire(blocking=False):
                # The files are free (no seal or checkpoint in the disk thread): write and
                # fsync here. os.write and os.fdatasync release the interpreter lock, so the
                # archive thread runs meanwhile; requests that arrive wait in their sockets
                # and form the next group.
                inline = True
                try:
                    last_lsn = self._write_and_sync(payloads)
                finally:
                    self._files_lock.release()
            else:
                last_lsn = await self._disk.run(self._locked, self._write_and_sync, payloads)
        except (FsyncFailedError, OSError) as error:
            self._group_write_failed(group, error, lsn_before)
            return
        self._finish_group(group, last_lsn, started, time.perf_counter(), inline=inline)

    def _group_write_failed(
        self,
        group: list[tuple[bytes, asyncio.Future[int], float]],
        error: BaseException,
        lsn_before: int,
    ) -> None:
        """A group's write or fsync raised `error`. A failed fsync, or a write that kept
        part of the group, stops the log; a write that kept nothing (a full disk, say)
        fails these writers alone, and later groups may succeed."""
        if isinstance(error, FsyncFailedError) or self._wal.last_lsn() != lsn_before:
            self._fail(error)
            return
        log.error("log write failed: %r", error)
        self._fail_group(group, error)

    def _fail_group(
        self, group: list[tuple[bytes, asyncio.Future[int], float]], error: BaseException
    ) -> None:
        for _, future, _ in group:
            if not future.done():
                future.set_exception(LogFailedError(f"log write failed: {error}"))
        self._group = []

    def _finish_group(
        self,
        group: list[tuple[bytes, asyncio.Future[int], float]],
        last_lsn: int,
        started: float,
        durable: float,
        *,
        inline: bool,
        commit_time_us: int | None = None,
    ) -> None:
        """On the loop, after the group's fsync: apply it, then acknowledge its writers.
        `commit_time_us` is the group's commit time if a later group may have been written
        since (else the time of the last group written)."""
        received = time.perf_counter()
        self._group = group
        first_lsn = last_lsn - len(group) + 1
        assert first_lsn == self._committed_lsn + 1, (first_lsn, self._committed_lsn)
        entries: list[Entry] = [(first_lsn + i, record) for i, (record, _, _) in enumerate(group)]
        try:
            with self._store_batch():
                self._apply(entries)
        except Exception as error:  # noqa: BLE001 - any failure of apply stops the log
            # Applying a committed entry must not fail; if it does, the replica's state no
            # longer follows its log and it must stop (a restart replays the entries).
            self._fail(error)
            return
        assert self._store.applied_lsn() <= last_lsn
        self._committed_lsn = last_lsn
        self._committed_time_us = self._last_time_us if commit_time_us is None else commit_time_us
        self.fsync_count += 1
        self.appended_count += len(entries)
        self._bytes_since_checkpoint += sum(
            len(record) + RECORD_HEADER_BYTES for record, _, _ in group
        )
        for (_, future, _), (lsn, _) in zip(group, entries, strict=True):
            if not future.done():
                future.set_result(lsn)
        self._group = []
        self.timings.add(group, started, durable, received, time.perf_counter(), inline=inline)

    def _locked(self, work: Callable[..., _T], *args: object) -> _T:
        """Runs in the disk thread: `work(*args)` while holding the files."""
        with self._files_lock:
            return work(*args)

    def _write_group(self, payloads: list[bytes]) -> int:
        """Write the group with its commit time (holding the files); returns its last LSN."""
        commit_time_us = max(self._clock_us(), self._last_time_us)
        self._last_time_us = commit_time_us
        self._wal.set_commit_time(commit_time_us)
        return self._wal.append(payloads)

    def _write_and_sync(self, payloads: list[bytes]) -> int:
        """Write the group, then one fsync for all of it (holding the files)."""
        written = time.perf_counter()
        last_lsn = self._write_group(payloads)
        synced = time.perf_counter()
        self._wal.sync()
        self.timings.add_disk(synced - written, time.perf_counter() - synced)
        return last_lsn

    def _checkpoint_due(self) -> bool:
        if self._store.applied_lsn() == self._checkpointed_lsn:
            return False
        if self._bytes_since_checkpoint >= self._checkpoint_wal_bytes:
            return True
        elapsed = time.monotonic() - self._last_checkpoint
        return elapsed >= self._checkpoint_interval_seconds

    def _checkpoint_on_disk(self) -> None:
        """Runs in the disk thread, between groups: store durable first, then drop the log.

        No group is applied meanwhile (the flusher waits for this), so the applied LSN read
        here is exactly what `store.sync()` makes durable.
        """
        applied_lsn = self._store.applied_lsn()
        self._store.sync()
        keep_from = applied_lsn + 1
        if self._retain is not None:
            keep_from = min(keep_from, self._retain())
        removed = self._wal.truncate_before(keep_from)
        self._checkpointed_lsn = applied_lsn
        self._bytes_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        if removed:
            log.info("checkpoint at LSN %d removed %d log segments", applied_lsn, removed)

    def _fail(self, error: BaseException) -> None:
        """Stop for good: fail every writer waiting (in the current group or queued)."""
        if self._failure is None:
            self._failure = error
            log.critical("the log failed and stops accepting records: %r", error)
        group, self._group = self._group, []
        for _, future, _ in group:
            if not future.done():
                failed = LogFailedError(f"the log failed: {error}")
                failed.__cause__ = error
                future.set_exception(failed)
        self._fail_queued(error)
        self._on_fatal(error)

    def _fail_queued(self, error: BaseException) -> None:
        waiting: list[asyncio.Future[Any]]
        waiting, self._checkpoint_waiters = list(self._checkpoint_waiters), []
        waiting += self._seal_waiters
        self._seal_waiters = []
        for done in waiting:
            if not done.done():
                done.set_exception(LogFailedError(f"the log failed: {error}"))
        queued, self._queue = self._queue, []
        for _, future, _ in queued:
            if not future.done():
                failed = LogFailedError(f"the log failed: {error}")
                failed.__cause__ = error
                future.set_exception(failed)

    def wal_segment_paths(self) -> list[Path]:
        return self._wal.segment_paths()


@dataclass(slots=True)
class _Written:
    """What a write job hands back from the disk thread: its group, the group's last LSN
    (before the group, if it failed), the failure if any and whether the failed write left
    nothing in the log, and when it started and became durable (perf_counter seconds)."""

    group: list[tuple[bytes, asyncio.Future[int], float]]
    last_lsn: int
    error: BaseException | None
    kept_nothing: bool
    started: float
    durable: float
    # Records were still queued after the group was taken (it was full): another job must
    # take them even if no record arrives after this one.
    left_behind: bool = False
    commit_time_us: int | None = None  # the group's (the "async" mode; else not needed)


class GroupTimings:
    """Where the wall time of group commits went, summed since the log opened.

    Cheap enough to keep always (a clock read per record and five per group); read by
    `benchmarks/write_decompose.py` through the file KEELDB_LOG_STATS names, and by tests.
    The disk fields are added by whichever thread wrote the group.
    """

    # Its fields, as `as_dict` names them (a compiled class has no `__slots__` to read).
    FIELDS: ClassVar[tuple[str, ...]] = (
        "apply_seconds",
        "async_groups",
        "commit_seconds",
        "group_sizes",
        "groups",
        "handback_seconds",
        "inline_groups",
        "queue_wait_seconds",
        "records",
        "sync_seconds",
        "write_seconds",
    )
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.groups = 0
        self.inline_groups = 0  # written and fsynced on the loop thread
        self.async_groups = 0  # written on the loop thread, fdatasync completed on it
        self.records = 0
        # Per record: from its append to the start of its group's write (waiting for the
        # group before it to be fsynced and applied, then for the flusher to run).
        self.queue_wait_seconds = 0.0
        # Per group: from the start of its write to its fsync's return (inline, or when the
        # disk thread could not take it: to the loop holding the result again).
        self.commit_seconds = 0.0
        # Per group: from its fsync's return in the disk thread to the loop applying it.
        self.handback_seconds = 0.0
        self.write_seconds = 0.0  # per group: the write system calls
        self.sync_seconds = 0.0  # per group: the fdatasync
        self.apply_seconds = 0.0  # per group: applying it to the store, waking its writers
        self.group_sizes: dict[int, int] = {}

    def add(
        self,
        group: list[tuple[bytes, asyncio.Future[int], float]],
        started: float,
        durable: float,
        received: float,
        answered: float,
        *,
        inline: bool,
    ) -> None:
        self.groups += 1
        self.inline_groups += inline
        self.records += len(group)
        self.queue_wait_seconds += sum(started - appended for _, _, appended in group)
        self.commit_seconds += durable - started
        self.handback_seconds += received - durable
        self.apply_seconds += answered - received
        self.group_sizes[len(group)] = self.group_sizes.get(len(group), 0) + 1

    def add_disk(self, write_seconds: float, sync_seconds: float) -> None:
        self.write_seconds += write_seconds
        self.sync_seconds += sync_seconds

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GroupTimings.FIELDS}


class DiskThread:
    """One thread that runs a log's disk work in the order it is given, for the event loop.

    `run(fn, *args)` returns an asyncio future of `fn(*args)`, settled on the loop. It does
    what `loop.run_in_executor` with a one-thread pool did, without the pool's per-call
    `concurrent.futures.Future` (a Condition and a lock each), work item, idle-thread
    semaphore and the chaining of two futures: the hand-off to the disk thread and back is
    paid once per group commit (docs/performance.md, "The group commit's own cost").
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, name: str) -> None:
        self._loop = loop
        # (the future to settle, or the callback to call, on the loop; the work; its args)
        self._jobs: collections.deque[tuple[Any, Callable[..., Any], tuple[Any, ...]] | None] = (
            collections.deque()
        )
        # Wakes the thread when a job is queued. An eventfd rather than a lock (as in
        # queue.SimpleQueue): os.eventfd_write releases the interpreter lock during the
        # system call, so when waking the thread gets the loop thread descheduled (two
        # cores, more runnable threads than cores) the woken thread can run Python
        # meanwhile; with a lock's release the loop thread was descheduled holding the
        # interpreter lock (8.7-9.6 % of its samples in a py-spy --gil profile of A).
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
        self._stopped = False
        self._worker_thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker_thread.start()
        self.native_id = self._worker_thread.native_id  # the kernel's id of the thread (/proc)

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        if self._stopped:
            raise RuntimeError("the disk thread was shut down")
        future: asyncio.Future[_T] = self._loop.create_future()
        self._put((future, fn, args))
        return future

    def run_then(
        self, done: Callable[[Any, BaseException | None], None], fn: Callable[[], Any]
    ) -> None:
        """Run `fn()` in the disk thread, then `done(result, error)` on the loop: one hop
        back, without a future for the loop to wake a task with."""
        if self._stopped:
            raise RuntimeError("the disk thread was shut down")
        self._put((done, fn, ()))

    def _put(self, job: tuple[Any, Callable[..., Any], tuple[Any, ...]] | None) -> None:
        self._jobs.append(job)
        os.eventfd_write(self._wake_fd, 1)

    def shutdown(self, wait: bool = True) -> None:
        """Stop after the work already given (and wait for it, with `wait`)."""
        if not self._stopped:
            self._stopped = True
            self._put(None)
        if wait:
            self._worker_thread.join()

    def _work(self) -> None:
        jobs = self._jobs
        try:
            while True:
                # Appended before the eventfd is written, so an empty deque here is always
                # followed by a write that ends the read: no wake-up is lost.
                while not jobs:
                    os.eventfd_read(self._wake_fd)
                job = jobs.popleft()
                if job is None:
                    return
                self._do(job)
        finally:
            os.close(self._wake_fd)

    def _do(self, job: tuple[Any, Callable[..., Any], tuple[Any, ...]]) -> None:
        target, fn, args = job
        try:
            result = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            self._hand_back(target, None, error)
        else:
            self._hand_back(target, result, None)

    def _hand_back(self, target: Any, result: Any, error: BaseException | None) -> None:
        try:
            if isinstance(target, asyncio.Future):
                self._loop.call_soon_threadsafe(_settle, target, result, error)
            else:
                self._loop.call_soon_threadsafe(target, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _setting(name: str, default: float) -> float:
    """A size or interval overridden by an environment variable: for tests that need
    checkpoints and segment roll-overs to happen while a real server runs, and for tuning.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def _chunks(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
