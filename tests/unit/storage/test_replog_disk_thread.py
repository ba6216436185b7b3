"""Where a group is written and fsynced: the disk thread, or the loop thread (inline)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from keeldb.storage.memory import MemoryStore
from keeldb.storage.protocols import Entry
from keeldb.storage.replog import DiskThread, LocalLog


class RecordingFsync:
    """An fsync that syncs nothing and remembers which thread called it."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, fd: int) -> None:
        self.threads.append(threading.get_ident())


def apply_into(store: MemoryStore) -> object:
    def apply(entries: Sequence[Entry]) -> None:
        for lsn, record in entries:
            store.write([(b"k%d" % lsn, record)], [], applied_lsn=lsn)

    return apply


def test_the_disk_thread_runs_work_in_order_and_hands_back_results_and_errors() -> None:
    async def scenario() -> None:
        disk = DiskThread(asyncio.get_running_loop(), name="test-disk")
        order: list[int] = []

        def work(n: int) -> int:
            order.append(n)
            return n * 10

        def fail() -> None:
            raise OSError("disk full")

        futures = [disk.run(work, n) for n in range(20)]
        failed = disk.run(fail)
        assert await asyncio.gather(*futures) == [n * 10 for n in range(20)]
        with pytest.raises(OSError, match="disk full"):
            await failed
        assert order == list(range(20))
        disk.shutdown(wait=True)
        with pytest.raises(RuntimeError):
            disk.run(work, 1)

    asyncio.run(scenario())


@pytest.mark.parametrize("sync_mode", ["thread", "inline"])
def test_groups_are_fsynced_on_the_loop_thread_only_when_inline(
    tmp_path: Path, sync_mode: str
) -> None:
    async def scenario() -> None:
        fsync = RecordingFsync()
        store = MemoryStore()
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            apply_into(store),  # type: ignore[arg-type]
            fsync=fsync,
            sync_mode=sync_mode,
        )
        fsync.threads.clear()  # the fsyncs of opening the log
        loop_thread = threading.get_ident()
        lsns = await asyncio.gather(*(log.append(b"r%d" % i) for i in range(10)))
        assert sorted(lsns) == list(range(1, 11))
        assert store.applied_lsn() == 10
        assert fsync.threads, "no group was fsynced"
        on_loop = [thread == loop_thread for thread in fsync.threads]
        assert all(on_loop) if sync_mode == "inline" else not any(on_loop)
        await log.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)  # a loop blocked on the files would hang here
def test_an_inline_group_that_finds_the_files_busy_waits_in_the_disk_thread_not_the_loop(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        fsync = RecordingFsync()
        store = MemoryStore()
        log = await LocalLog.open(
            tmp_path / "wal",
            store,
            apply_into(store),  # type: ignore[arg-type]
            fsync=fsync,
            sync_mode="inline",
        )
        fsync.threads.clear()
        # The files are busy (as during a seal or a checkpoint in the disk thread).
        log._files_lock.acquire()
        append = asyncio.ensure_future(log.append(b"while busy"))
        for _ in range(20):
            await asyncio.sleep(0.005)  # the loop keeps running meanwhile
        assert not append.done()
        log._files_lock.release()
        assert await asyncio.wait_for(append, 10) == 1
        assert fsync.threads and threading.get_ident() not in fsync.threads
        # Once the files are free again, groups are fsynced on the loop thread.
        fsync.threads.clear()
        assert await log.append(b"after") == 2
        assert fsync.threads == [threading.get_ident()]
        await log.close()

    asyncio.run(scenario())
