"""The completion-based fdatasync (io_uring) and the log's "async" sync mode built on it."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from keeldb.storage import async_sync, replog
from keeldb.storage.async_sync import DoneFn, UringSync, open_uring_sync
from keeldb.storage.memory import MemoryStore
from keeldb.storage.protocols import Entry
from keeldb.storage.replog import LocalLog, LogFailedError
from keeldb.storage.wal import FsyncFailedError, WriteAheadLog

WAIT_SECONDS_MAX = 10.0  # generous: the host may be loaded


def apply_into(store: MemoryStore) -> object:
    def apply(entries: Sequence[Entry]) -> None:
        for lsn, record in entries:
            assert lsn == store.applied_lsn() + 1, "entries applied out of order"
            store.write([(b"k%d" % lsn, record)], [], applied_lsn=lsn)

    return apply


def ring_or_skip(loop: asyncio.AbstractEventLoop) -> UringSync:
    syncer = open_uring_sync(loop)
    if syncer is None:
        pytest.skip("io_uring is not available here")
    return syncer


async def sync_result(syncer: UringSync, fd: int) -> OSError | None:
    """What the callback of one fdatasync of `fd` through `syncer` was given."""
    result: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()
    syncer.fdatasync(fd, result.set_result)
    return await asyncio.wait_for(result, WAIT_SECONDS_MAX)


class ManualSync:
    """A syncer whose fdatasyncs complete when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, DoneFn]] = []
        self.submitted = 0

    def fdatasync(self, fd: int, done: DoneFn) -> None:
        self.submitted += 1
        self.pending.append((fd, os.fstat(fd).st_ino, done))

    def in_flight(self) -> int:
        return len(self.pending)

    def complete(self, error: OSError | None = None) -> None:
        fd, inode, done = self.pending.pop(0)
        # The kernel looks the descriptor up when it starts the sync: it must still be the
        # file it was submitted for (not closed, nor its number reused, by a roll-over).
        assert os.fstat(fd).st_ino == inode, "the synced descriptor changed file"
        done(error)

    def close(self) -> None:
        self.pending.clear()


async def open_async(tmp_path: Path, **kwargs: object) -> tuple[MemoryStore, LocalLog]:
    store = MemoryStore()
    log = await LocalLog.open(
        tmp_path / "wal",
        store,
        apply_into(store),  # type: ignore[arg-type]
        sync_mode="async",
        **kwargs,  # type: ignore[arg-type]
    )
    return store, log


async def until(condition: object, what: str) -> None:
    for _ in range(int(WAIT_SECONDS_MAX / 0.002)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


def test_the_ring_completes_fdatasyncs_on_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        syncer = ring_or_skip(loop)
        fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            results: list[tuple[int, OSError | None, int]] = []
            finished = loop.create_future()
            for number in range(3):
                os.write(fd, b"record %d\n" % number)

                def done(error: OSError | None, number: int = number) -> None:
                    results.append((number, error, threading.get_ident()))
                    if len(results) == 3:
                        finished.set_result(None)

                syncer.fdatasync(fd, done)
            assert syncer.in_flight() == 3
            await asyncio.wait_for(finished, WAIT_SECONDS_MAX)
            assert [number for number, _, _ in results] == [0, 1, 2]  # in submission order
            assert all(error is None for _, error, _ in results)
            assert {thread for _, _, thread in results} == {threading.get_ident()}
            assert syncer.in_flight() == 0
        finally:
            syncer.close()
            os.close(fd)

    asyncio.run(scenario())


def test_a_failed_fdatasync_reaches_its_callback_as_an_error() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        syncer = ring_or_skip(loop)
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)  # a descriptor number that is not open: the kernel answers EBADF
        try:
            error = await sync_result(syncer, fd)
            assert isinstance(error, OSError)
            assert error.errno == errno.EBADF
        finally:
            syncer.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("code", sorted(async_sync.SYNC_NOT_RUN_ERRNOS))
def test_a_sync_the_kernel_did_not_run_is_done_again_and_reported_in_order(
    tmp_path: Path, code: int
) -> None:
    """An fdatasync that completes with EINTR, EAGAIN or ECANCELED did not run: it is done
    again on the loop, and its callback (then the next one's) sees success."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        syncer = ring_or_skip(loop)
        fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT, 0o644)
        take = syncer._take_completions
        turned: list[int] = []

        def first_not_run() -> list[tuple[int, int]]:
            taken = take()
            if taken and not turned:
                turned.append(taken[0][0])
                taken[0] = (taken[0][0], -code)  # as if the kernel had answered so
            return taken

        again: list[int] = []

        def fdatasync_again(descriptor: int) -> None:
            again.append(descriptor)
            os.fdatasync(descriptor)

        syncer._take_completions = first_not_run  # type: ignore[method-assign]
        syncer.fdatasync_again = fdatasync_again
        try:
            results: list[tuple[int, OSError | None]] = []
            finished = loop.create_future()
            for number in range(2):
                os.write(fd, b"record %d\n" % number)

                def done(error: OSError | None, number: int = number) -> None:
                    results.append((number, error))
                    if len(results) == 2:
                        finished.set_result(None)

                syncer.fdatasync(fd, done)
            await asyncio.wait_for(finished, WAIT_SECONDS_MAX)
            assert turned, "no completion was seen"
            assert again == [fd]
            assert results == [(0, None), (1, None)]
            assert syncer.in_flight() == 0
        finally:
            syncer.close()
            os.close(fd)

    asyncio.run(scenario())


def test_a_sync_done_again_that_fails_reaches_its_callback_as_the_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        syncer = ring_or_skip(loop)
        fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT, 0o644)
        take = syncer._take_completions

        def not_run() -> list[tuple[int, int]]:
            return [(user_data, -errno.EINTR) for user_data, _ in take()]

        def broken_disk(descriptor: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        syncer._take_completions = not_run  # type: ignore[method-assign]
        syncer.fdatasync_again = broken_disk
        try:
            error = await sync_result(syncer, fd)
            assert isinstance(error, OSError)
            assert error.errno == errno.EIO
        finally:
            syncer.close()
            os.close(fd)

    asyncio.run(scenario())


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EPERM, errno.EACCES, errno.ENOMEM])
def test_a_refused_ring_is_reported_as_unavailable(code: int) -> None:
    def refusing_syscall(number: int, *args: object) -> int:
        ctypes.set_errno(code)
        return -1

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        assert open_uring_sync(loop, syscall=refusing_syscall) is None
        assert open_uring_sync(loop, machine="aarch64") is None

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_without_a_ring_the_async_mode_falls_back_to_the_disk_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replog, "open_uring_sync", lambda loop: None)

    async def scenario() -> None:
        store, log = await open_async(tmp_path)
        assert log._syncer is None
        assert await asyncio.gather(*(log.append(b"r%d" % i) for i in range(5))) == [1, 2, 3, 4, 5]
        assert log.timings.async_groups == 0
        assert log.timings.groups == log.fsync_count >= 1
        await log.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_the_async_mode_commits_through_the_ring(tmp_path: Path) -> None:
    async def scenario() -> None:
        ring_or_skip(asyncio.get_running_loop()).close()
        store, log = await open_async(tmp_path)
        assert isinstance(log._syncer, UringSync)
        for _ in range(3):
            lsns = await asyncio.gather(*(log.append(b"r") for _ in range(8)))
            assert sorted(lsns) == list(range(min(lsns), max(lsns) + 1))
        assert store.applied_lsn() == log.committed_lsn() == 24
        assert log.timings.groups == log.fsync_count >= 3
        # (The first group wrote the segment's first zeroes, in the disk thread.)
        assert log.timings.async_groups >= 2
        assert await log.seal()
        assert await log.append(b"after the seal") == 25
        await log.close()
        # What was acknowledged is in the log.
        wal = WriteAheadLog(tmp_path / "wal")
        assert wal.last_lsn() == 25
        wal.close()

    asyncio.run(scenario())


async def open_manual(tmp_path: Path, **kwargs: object) -> tuple[MemoryStore, LocalLog, ManualSync]:
    """A log whose fdatasyncs complete when the test says so; without preallocation (unless
    asked), so that every group is written on the loop until it fills its segment."""
    kwargs.setdefault("preallocate_bytes", 0)
    store, log = await open_async(tmp_path, fsync=lambda fd: None, **kwargs)
    assert log._syncer is not None
    log._syncer.close()
    manual = ManualSync()
    log._syncer = manual
    return store, log, manual


@pytest.mark.timeout(60)
def test_a_group_is_applied_and_answered_only_after_its_fdatasync_completes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store, log, manual = await open_manual(tmp_path)
        first = [asyncio.ensure_future(log.append(b"a%d" % i)) for i in range(3)]
        await until(lambda: manual.submitted == 1, "the first group's fdatasync")
        # Records queued meanwhile are written and their sync submitted behind it.
        second = [asyncio.ensure_future(log.append(b"b%d" % i)) for i in range(4)]
        await until(lambda: manual.submitted == 2, "the second group's fdatasync")
        third = asyncio.ensure_future(log.append(b"c"))
        for _ in range(20):
            await asyncio.sleep(0)
        # Written, not yet durable: nothing applied or answered; a third group waits.
        assert (store.applied_lsn(), log.committed_lsn()) == (0, 0)
        assert not any(future.done() for future in [*first, *second, third])
        assert manual.submitted == 2, "a third group in flight"
        manual.complete()
        # The first group is answered; the third was written and submitted at once.
        assert store.applied_lsn() == 3
        assert await asyncio.gather(*first) == [1, 2, 3]
        assert manual.submitted == 3
        assert not any(future.done() for future in [*second, third])
        manual.complete()
        assert await asyncio.gather(*second) == [4, 5, 6, 7]
        assert not third.done()
        manual.complete()
        assert await third == 8
        assert log.committed_time_us() > 0
        await log.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_group_that_rolls_over_to_a_new_segment_waits_for_the_sync_in_flight(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store, log, manual = await open_manual(tmp_path, segment_bytes=300)
        first = asyncio.ensure_future(log.append(b"a" * 100))
        await until(lambda: manual.submitted == 1, "the first group's fdatasync")
        second = asyncio.ensure_future(log.append(b"b" * 150))  # needs a new segment
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert manual.submitted == 1, "written while the segment's sync was in flight"
        assert len(log.wal_segment_paths()) == 1
        manual.complete()  # ManualSync checks the descriptor is still the segment's
        assert await first == 1
        # The roll-over (a sync, a new file) ran in the disk thread, not through the ring.
        assert await asyncio.wait_for(second, WAIT_SECONDS_MAX) == 2
        assert manual.submitted == 1 and len(log.wal_segment_paths()) == 2
        third = asyncio.ensure_future(log.append(b"c"))
        await until(lambda: manual.submitted == 2, "the next group through the ring")
        manual.complete()
        assert await third == 3
        await log.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_group_that_needs_zeroes_written_ahead_goes_to_the_disk_thread(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store, log, manual = await open_manual(tmp_path, preallocate_bytes=4096)
        # The segment has no zeroes ahead yet: the first group writes them, off the loop.
        assert await asyncio.wait_for(log.append(b"a"), WAIT_SECONDS_MAX) == 1
        assert manual.submitted == 0 and log.timings.async_groups == 0
        # The next fits in the zeroes: written on the loop, synced through the ring.
        second = asyncio.ensure_future(log.append(b"b"))
        await until(lambda: manual.submitted == 1, "the second group through the ring")
        manual.complete()
        assert await second == 2
        assert log.timings.async_groups == 1
        await log.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_seal_waits_until_the_group_in_flight_completes(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, log, manual = await open_manual(tmp_path)
        appended = asyncio.ensure_future(log.append(b"x"))
        await until(lambda: manual.submitted == 1, "the group's fdatasync")
        sealed = asyncio.ensure_future(log.seal())
        checkpointed = asyncio.ensure_future(log.checkpoint())
        for _ in range(20):
            await asyncio.sleep(0.001)
        # The segment's descriptor is still the one the sync was submitted for.
        assert not sealed.done() and not checkpointed.done()
        assert log.sealed_segments() == []
        later = asyncio.ensure_future(log.append(b"y"))
        manual.complete()  # ManualSync checks the descriptor is still open
        assert await asyncio.wait_for(sealed, WAIT_SECONDS_MAX) is True
        await asyncio.wait_for(checkpointed, WAIT_SECONDS_MAX)
        assert await appended == 1  # (the checkpoint then removed the sealed segment)
        await until(lambda: manual.submitted == 2, "the next group after the seal")
        manual.complete()
        assert await later == 2
        await log.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_failed_fdatasync_fails_the_group_and_stops_the_log(tmp_path: Path) -> None:
    fatal: list[BaseException] = []

    async def scenario() -> None:
        store, log, manual = await open_manual(tmp_path, on_fatal=fatal.append)
        appended = asyncio.ensure_future(log.append(b"x"))
        await until(lambda: manual.submitted == 1, "the group's fdatasync")
        queued = asyncio.ensure_future(log.append(b"y"))
        await asyncio.sleep(0)
        manual.complete(OSError(errno.EIO, "Input/output error"))
        for future in (appended, queued):
            with pytest.raises(LogFailedError):
                await asyncio.wait_for(future, WAIT_SECONDS_MAX)
        assert len(fatal) == 1 and isinstance(fatal[0], FsyncFailedError)
        assert (store.applied_lsn(), log.committed_lsn(), manual.submitted) == (0, 0, 1)
        with pytest.raises(LogFailedError):
            await log.append(b"z")
        await log.close()

    asyncio.run(scenario())


def test_a_refused_submission_stops_the_log(tmp_path: Path) -> None:
    fatal: list[BaseException] = []

    class RefusingSync(ManualSync):
        def fdatasync(self, fd: int, done: DoneFn) -> None:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    async def scenario() -> None:
        store, log, _ = await open_manual(tmp_path, on_fatal=fatal.append)
        log._syncer = RefusingSync()
        with pytest.raises(LogFailedError):
            await asyncio.wait_for(log.append(b"x"), WAIT_SECONDS_MAX)
        assert len(fatal) == 1 and store.applied_lsn() == 0
        await log.close()

    asyncio.run(scenario())


def test_the_module_keeps_the_kernel_structure_sizes() -> None:
    assert async_sync.SQE.size == 64
    assert async_sync.CQE.size == 16
    assert ctypes.sizeof(async_sync._Params) == 120
