"""LocalLog: group commit, apply order, recovery, checkpoints and fatal fsync failures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from keeldb.storage.async_sync import CallSync
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.protocols import Entry, Store
from keeldb.storage.replog import LocalLog, LogFailedError
from keeldb.storage.wal import (
    RECORD_BYTES_MAX,
    CorruptLogError,
    FsyncFailedError,
    RecordTooLargeError,
    WriteAheadLog,
)


class KeyValueApplier:
    """A tiny state machine: each record is b"key=value"; one store write per entry."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[list[int]] = []

    def __call__(self, entries: Sequence[Entry]) -> None:
        self.calls.append([lsn for lsn, _ in entries])
        for lsn, record in entries:
            key, _, value = record.partition(b"=")
            self.store.write([(key, value)], [], applied_lsn=lsn)


async def open_node(
    data_dir: Path, **kwargs: object
) -> tuple[LmdbStore, KeyValueApplier, LocalLog]:
    store = LmdbStore(data_dir / "store")
    applier = KeyValueApplier(store)
    log = await LocalLog.open(data_dir / "wal", store, applier, **kwargs)  # type: ignore[arg-type]
    return store, applier, log


@pytest.fixture(autouse=True, params=["thread", "async"])
def sync_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with groups fsynced in the disk thread and with the fdatasync
    completed on the loop (io_uring, or the tests' own disk run from the loop)."""
    mode: str = request.param
    monkeypatch.setenv("KEELDB_WAL_SYNC", mode)
    return mode


def die(log: LocalLog) -> None:
    """What kill -9 leaves behind: no close, no checkpoint, the files as they are."""
    assert log._flusher is not None
    log._flusher.cancel()
    if log._syncer is not None:
        log._syncer.close()  # a sync in flight never completes
    log._wal.close()  # the kernel closes a dead process's files and releases its lock
    log._disk.shutdown(wait=False)


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_append_returns_lsn_after_the_entry_is_applied(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _, log = await open_node(tmp_path)
        assert await log.append(b"a=1") == 1
        assert store.get(b"a") == b"1"
        assert await log.append(b"a=2") == 2
        assert (store.get(b"a"), log.committed_lsn(), store.applied_lsn()) == (b"2", 2, 2)
        await log.close()
        store.close()

    run(scenario())


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, applier, log = await open_node(tmp_path)
        writers = 200
        lsns = await asyncio.gather(*(log.append(b"k%d=v" % i) for i in range(writers)))
        assert sorted(lsns) == list(range(1, writers + 1))
        assert log.appended_count == writers
        # 200 writers queued together: far fewer fsyncs than records.
        assert log.fsync_count <= writers // 10
        # One apply call per group, each in LSN order, groups in LSN order.
        flattened = [lsn for call in applier.calls for lsn in call]
        assert flattened == list(range(1, writers + 1))
        assert len(applier.calls) == log.fsync_count
        await log.close()
        store.close()

    run(scenario())


# It replaces a method of the write-ahead log.
@pytest.mark.interpreted
def test_the_next_group_queues_while_the_disk_works(tmp_path: Path) -> None:
    """Writers arriving during an fsync are committed together in the following group."""

    async def scenario() -> None:
        store = LmdbStore(tmp_path / "store")
        applier = KeyValueApplier(store)
        log = await LocalLog.open(tmp_path / "wal", store, applier)
        wal_sync = log._wal.sync  # the real fsync, slowed down

        def sync_slowly() -> None:
            import time

            time.sleep(0.05)
            wal_sync()

        log._wal.sync = sync_slowly  # type: ignore[method-assign]
        first = asyncio.ensure_future(log.append(b"first=1"))
        await asyncio.sleep(0.01)  # the first group is now in its fsync
        rest = [asyncio.ensure_future(log.append(b"k%d=v" % i)) for i in range(50)]
        await asyncio.gather(first, *rest)
        assert applier.calls[0] == [1]
        assert applier.calls[1] == list(range(2, 52))
        await log.close()
        store.close()

    run(scenario())


def test_recovery_replays_what_the_store_had_not_applied(tmp_path: Path) -> None:
    # A log written, fsynced and never applied: the node died between fsync and apply.
    wal = WriteAheadLog(tmp_path / "wal")
    wal.append([b"a=1", b"b=2", b"a=3"])
    wal.sync()
    wal.close()

    async def scenario() -> None:
        store, applier, log = await open_node(tmp_path)
        assert applier.calls == [[1, 2, 3]]
        assert (store.get(b"a"), store.get(b"b"), log.committed_lsn()) == (b"3", b"2", 3)
        assert await log.append(b"c=4") == 4
        await log.close()
        store.close()

    run(scenario())


def test_recovery_skips_entries_the_store_already_applied(tmp_path: Path) -> None:
    async def first_life() -> None:
        store, _, log = await open_node(tmp_path)
        for i in range(10):
            await log.append(b"k=%d" % i)
        die(log)  # no final checkpoint: the log keeps all records
        store.close()

    async def second_life() -> None:
        store, applier, log = await open_node(tmp_path)
        assert store.applied_lsn() == 10
        assert applier.calls == []
        assert store.get(b"k") == b"9"
        await log.close()
        store.close()

    run(first_life())
    run(second_life())


def test_checkpoint_removes_old_segments_and_recovery_still_works(tmp_path: Path) -> None:
    async def first_life() -> None:
        store, _, log = await open_node(tmp_path, segment_bytes=400)
        for i in range(100):
            await log.append(b"key%d=value%d" % (i % 7, i))
        assert len(log.wal_segment_paths()) > 5
        await log.checkpoint()
        assert len(log.wal_segment_paths()) == 1
        for i in range(100, 110):
            await log.append(b"key%d=value%d" % (i % 7, i))
        die(log)
        store.close()

    async def second_life() -> None:
        store, _, log = await open_node(tmp_path, segment_bytes=400)
        assert store.applied_lsn() == 110
        assert store.get(b"key1") == b"value106"
        assert await log.append(b"after=1") == 111
        await log.close()
        store.close()

    run(first_life())
    run(second_life())


def test_checkpoints_run_by_themselves_after_enough_log_bytes(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _, log = await open_node(tmp_path, segment_bytes=300, checkpoint_wal_bytes=1000)
        for i in range(200):
            await log.append(b"k=%040d" % i)
        assert len(log.wal_segment_paths()) <= 6
        await log.close()
        store.close()

    run(scenario())


def test_close_commits_queued_records_then_checkpoints(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _, log = await open_node(tmp_path, segment_bytes=300)
        writers = [asyncio.ensure_future(log.append(b"k%d=v" % i)) for i in range(40)]
        await asyncio.sleep(0)
        await log.close()
        assert sorted(await asyncio.gather(*writers)) == list(range(1, 41))
        assert len(log.wal_segment_paths()) == 1
        with pytest.raises(LogFailedError):
            await log.append(b"late=1")
        store.close()

    run(scenario())


def test_a_store_ahead_of_its_log_refuses_to_open(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "store")
    store.write([(b"a", b"1")], [], applied_lsn=5)
    wal = WriteAheadLog(tmp_path / "wal")
    wal.append([b"a=1"])
    wal.sync()
    wal.close()

    async def scenario() -> None:
        with pytest.raises(CorruptLogError, match="acknowledged records are missing"):
            await LocalLog.open(tmp_path / "wal", store, KeyValueApplier(store))

    run(scenario())
    store.close()


def test_a_failed_fsync_fails_the_writers_and_stops_the_log(tmp_path: Path) -> None:
    fatal: list[BaseException] = []

    async def scenario() -> None:
        store, _, log = await open_node(tmp_path, on_fatal=fatal.append)
        assert await log.append(b"a=1") == 1

        def broken_disk(fd: int) -> None:
            raise OSError(5, "Input/output error")

        log._wal._fsync = broken_disk  # the disk fails from now on
        if log._syncer is not None:  # ... also for the fdatasyncs completed on the loop
            log._syncer.close()
            log._syncer = CallSync(asyncio.get_running_loop(), broken_disk)
        results = await asyncio.gather(
            *(log.append(b"b=%d" % i) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, LogFailedError) for r in results)
        assert len(fatal) == 1 and isinstance(fatal[0], FsyncFailedError)
        # Nothing of the failed group was applied or acknowledged.
        assert (store.get(b"b"), store.applied_lsn(), log.committed_lsn()) == (None, 1, 1)
        with pytest.raises(LogFailedError):
            await log.append(b"c=1")
        await log.close()
        store.close()

    run(scenario())


def test_a_failed_apply_stops_the_log(tmp_path: Path) -> None:
    fatal: list[BaseException] = []

    def broken_apply(entries: Sequence[Entry]) -> None:
        raise AssertionError("apply is broken")

    async def scenario() -> None:
        store = LmdbStore(tmp_path / "store")
        log = await LocalLog.open(tmp_path / "wal", store, broken_apply, on_fatal=fatal.append)
        with pytest.raises(LogFailedError):
            await log.append(b"a=1")
        assert len(fatal) == 1
        await log.close()
        store.close()

    run(scenario())


def test_the_default_fatal_reaction_ends_the_process(tmp_path: Path) -> None:
    script = f"""
import asyncio, os
from pathlib import Path
from keeldb.storage.async_sync import CallSync
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog

async def main():
    store = LmdbStore(Path({str(tmp_path)!r}) / "store")
    log = await LocalLog.open(Path({str(tmp_path)!r}) / "wal", store, lambda entries: None)
    def broken_disk(fd):
        raise OSError(5, "Input/output error")
    log._wal._fsync = broken_disk
    if log._syncer is not None:
        log._syncer.close()
        log._syncer = CallSync(asyncio.get_running_loop(), broken_disk)
    await log.append(b"x")
    print("still running")

asyncio.run(main())
"""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 70
    assert "still running" not in result.stdout
    assert "fatal storage error" in result.stderr


def test_a_full_disk_fails_only_the_writers_of_that_group(tmp_path: Path) -> None:
    fatal: list[BaseException] = []

    class FullDisk:
        full = False

        def __call__(self, fd: int, data: memoryview) -> int:
            if self.full:
                raise OSError(28, "No space left on device")
            return os.write(fd, data)

    async def scenario() -> None:
        store, _, log = await open_node(tmp_path, on_fatal=fatal.append)
        disk = FullDisk()
        log._wal._write_fn = disk
        assert await log.append(b"a=1") == 1
        disk.full = True
        with pytest.raises(LogFailedError, match="No space left"):
            await log.append(b"b=2")
        disk.full = False
        assert await log.append(b"c=3") == 2
        assert (store.get(b"b"), store.get(b"c"), fatal) == (None, b"3", [])
        await log.close()
        store.close()

    run(scenario())


def test_an_oversized_record_is_refused_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _, log = await open_node(tmp_path)
        big = b"k=" + b"x" * RECORD_BYTES_MAX
        results = await asyncio.gather(
            log.append(b"a=1"), log.append(big), log.append(b"b=2"), return_exceptions=True
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], RecordTooLargeError)
        await log.close()
        store.close()

    run(scenario())


# It replaces a method of the write-ahead log.
@pytest.mark.interpreted
def test_an_unexpected_error_in_the_flusher_fails_writers_instead_of_hanging(
    tmp_path: Path,
) -> None:
    fatal: list[BaseException] = []

    async def scenario() -> None:
        store, _, log = await open_node(tmp_path, on_fatal=fatal.append)

        def broken_append(payloads: list[bytes]) -> int:
            raise ValueError("a bug in the log")

        log._wal.append = broken_append  # type: ignore[method-assign]
        with pytest.raises(LogFailedError):
            await asyncio.wait_for(log.append(b"a=1"), timeout=10)
        assert isinstance(fatal[0], ValueError)
        await log.close()
        store.close()

    run(scenario())


def test_a_node_restored_from_a_snapshot_continues_the_log_after_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _, log = await open_node(tmp_path / "old")
        for i in range(5):
            await log.append(b"k%d=v" % i)
        assert store.snapshot(tmp_path / "new" / "store") == 5
        await log.close()
        store.close()
        restored, applier, log = await open_node(tmp_path / "new")
        assert applier.calls == []
        assert restored.get(b"k4") == b"v"
        assert await log.append(b"k5=v") == 6
        await log.close()
        restored.close()

    run(scenario())
