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

Group commit: `append` puts a record in a queue and waits. One flusher task takes everything
queued (up to BATCH_RECORDS_MAX records or BATCH_BYTES_MAX bytes), writes it and fsyncs once
in a worker thread, so that the event loop keeps parsing requests and queueing the next group
while the disk works. Back on the loop thread it calls `apply` once with the whole group in
LSN order, inside one store transaction when the store offers `batch()`, then wakes every
waiter. Many concurrent writers therefore share one fsync.

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

Where a group is fsynced: by default ("thread", `SYNC_MODE_DEFAULT`) in the disk thread, as
above (`DiskThread`: one plain thread fed by a queue, results handed back with
`call_soon_threadsafe`). KEELDB_WAL_SYNC=inline writes and fsyncs each group on the
event-loop thread itself instead, which saves the two thread wake-ups per group (the disk
thread, then the loop again: about 90 µs of CPU per group in-process) but serves no request
while the fsync runs. On the shared two-core development machine, where an fdatasync takes
0.13-0.35 ms at the median and up to 1.7 ms at p90, inline was slower than the disk thread
on workload A in most rounds, by up to 3x (docs/performance.md), so it is not the default. Sealing, checkpoints and close
always run in the disk thread; a lock on the files keeps them apart from an inline group,
and a group that finds the files busy goes to the disk thread after them instead of
blocking the loop.

An fsync failure is fatal (see `WriteAheadLog.sync`): every waiter gets `LogFailedError`
and `on_fatal` is called, which by default ends the process so that a restart recovers from
what is really on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

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
GIL_SWITCH_INTERVAL_SECONDS = 0.0005  # see "The disk thread and the interpreter lock" above
# Where a group is written and fsynced: in the disk thread, or "inline" on the event-loop
# thread (no hand-off to the disk thread and back; see "Where a group is fsynced" above).
SYNC_MODES = ("inline", "thread")
SYNC_MODE_DEFAULT = "thread"
EXIT_FSYNC_FAILED = 70  # exit status when the log cannot be made durable (EX_SOFTWARE)

FatalFn = Callable[[BaseException], None]
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
        sync_mode: str = SYNC_MODE_DEFAULT,
    ) -> None:
        """Use `open`; this constructor does no recovery."""
        assert sync_mode in SYNC_MODES, sync_mode
        self._wal = wal
        self._inline = sync_mode == "inline"
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
        self._queue: list[tuple[bytes, asyncio.Future[int]]] = []
        self._group: list[tuple[bytes, asyncio.Future[int]]] = []  # being committed
        self._wakeup = asyncio.Event()
        self._committed_lsn = wal.last_lsn()
        self._failure: BaseException | None = None
        self._closing = False
        self._bytes_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpointed_lsn = store.applied_lsn()
        # One thread for all disk work of this log, so its operations stay in order.
        self._disk = DiskThread(asyncio.get_running_loop(), name="keeldb-wal")
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoint_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.fsync_count = 0  # group commits so far: one fsync each
        self.appended_count = 0  # records committed so far

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
        applied_lsn = store.applied_lsn()
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_SECONDS:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)

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
            )
            replayed = self._recover(applied_lsn)
        except BaseException:
            wal.close()
            raise
        if replayed:
            log.info("replayed %d log records after LSN %d", replayed, applied_lsn)
        self._flusher = asyncio.create_task(self._flush_forever(), name="keeldb-log-flusher")
        self._schedule_timer()
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
        batch = getattr(self._store, "batch", None)
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
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        self._wakeup.set()
        return await future

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
        await flusher
        if self._failure is None:
            try:
                await self._disk.run(self._locked, self._checkpoint_on_disk)
            except FsyncFailedError as error:
                self._fail(error)
        await self._disk.run(self._locked, self._wal.close)
        self._disk.shutdown(wait=True)

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
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self._checkpoint_waiters:
                if self._closing or self._failure is not None:
                    return
                # Woken by an append, a checkpoint request, close, or the checkpoint timer.
                # (Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation.)
                await self._wakeup.wait()
                self._wakeup.clear()
            if self._failure is not None:
                self._fail_queued(self._failure)
                return
            if self._queue:
                await self._commit_group(loop)
            requested, self._checkpoint_waiters = self._checkpoint_waiters, []
            if self._failure is None and (requested or self._checkpoint_due()):
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

    def _schedule_timer(self) -> None:
        """Wake the flusher every checkpoint interval, so an idle log still checkpoints."""

        def tick() -> None:
            self._wakeup.set()
            self._schedule_timer()

        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._checkpoint_interval_seconds, tick)

    def _take_group(self) -> list[tuple[bytes, asyncio.Future[int]]]:
        count = 0
        group_bytes = 0
        for record, _ in self._queue:
            if count == BATCH_RECORDS_MAX or (
                count and group_bytes + len(record) > BATCH_BYTES_MAX
            ):
                break
            count += 1
            group_bytes += len(record)
        group = self._queue[:count]
        del self._queue[:count]
        return group

    async def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._take_group()
        # Kept until answered, so that even an unexpected error fails these writers.
        self._group = group
        payloads = [record for record, _ in group]
        lsn_before = self._wal.last_lsn()
        try:
            if self._inline and self._files_lock.acquire(blocking=False):
                # The files are free (no seal or checkpoint in the disk thread): write and
                # fsync here. os.write and os.fdatasync release the interpreter lock, so the
                # archive thread runs meanwhile; requests that arrive wait in their sockets
                # and form the next group.
                try:
                    last_lsn = self._write_and_sync(payloads)
                finally:
                    self._files_lock.release()
            else:
                last_lsn = await self._disk.run(self._locked, self._write_and_sync, payloads)
        except FsyncFailedError as error:
            self._fail(error)
            return
        except OSError as error:
            # A write failed (a full disk, say) and nothing of the group was kept: these
            # writers get the error, later groups may succeed.
            if self._wal.last_lsn() != lsn_before:
                self._fail(error)
                return
            log.error("log write failed: %r", error)
            for _, future in group:
                if not future.done():
                    future.set_exception(LogFailedError(f"log write failed: {error}"))
            self._group = []
            return
        first_lsn = last_lsn - len(payloads) + 1
        assert first_lsn == lsn_before + 1
        entries: list[Entry] = [(first_lsn + i, p) for i, p in enumerate(payloads)]
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
        self._committed_time_us = self._last_time_us
        self.fsync_count += 1
        self.appended_count += len(entries)
        self._bytes_since_checkpoint += sum(len(p) + RECORD_HEADER_BYTES for p in payloads)
        for (_, future), (lsn, _) in zip(group, entries, strict=True):
            if not future.done():
                future.set_result(lsn)
        self._group = []

    def _locked(self, work: Callable[..., _T], *args: object) -> _T:
        """Runs in the disk thread: `work(*args)` while holding the files."""
        with self._files_lock:
            return work(*args)

    def _write_and_sync(self, payloads: list[bytes]) -> int:
        """Write the group, then one fsync for all of it (holding the files)."""
        commit_time_us = max(self._clock_us(), self._last_time_us)
        self._last_time_us = commit_time_us
        self._wal.set_commit_time(commit_time_us)
        last_lsn = self._wal.append(payloads)
        self._wal.sync()
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
        for _, future in group:
            if not future.done():
                failed = LogFailedError(f"the log failed: {error}")
                failed.__cause__ = error
                future.set_exception(failed)
        self._fail_queued(error)
        self._on_fatal(error)

    def _fail_queued(self, error: BaseException) -> None:
        waiting, self._checkpoint_waiters = self._checkpoint_waiters, []
        for done in waiting:
            if not done.done():
                done.set_exception(LogFailedError(f"the log failed: {error}"))
        queued, self._queue = self._queue, []
        for _, future in queued:
            if not future.done():
                failed = LogFailedError(f"the log failed: {error}")
                failed.__cause__ = error
                future.set_exception(failed)

    def wal_segment_paths(self) -> list[Path]:
        return self._wal.segment_paths()


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
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        if self._stopped:
            raise RuntimeError("the disk thread was shut down")
        future: asyncio.Future[_T] = self._loop.create_future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Stop after the work already given (and wait for it, with `wait`)."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(None)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            try:
                result = fn(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
                self._hand_back(future, None, error)
            else:
                self._hand_back(future, result, None)

    def _hand_back(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        try:
            self._loop.call_soon_threadsafe(_settle, future, result, error)
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
