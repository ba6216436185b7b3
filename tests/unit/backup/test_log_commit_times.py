"""The log's commit times, sealing and retention hold: what point-in-time restore relies on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.protocols import Entry
from keeldb.storage.replog import LocalLog
from keeldb.storage.wal import (
    RECORD_BYTES_MAX,
    SEGMENT_MAGIC,
    SEGMENT_MAGIC_TIMED,
    CorruptLogError,
    WriteAheadLog,
    read_segment,
)


class FakeClock:
    """Microseconds that the test sets, stepping back when it likes."""

    def __init__(self, now_us: int = 1_000_000) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def applier(store: LmdbStore):  # type: ignore[no-untyped-def]
    def apply(entries: Sequence[Entry]) -> None:
        for lsn, record in entries:
            key, _, value = record.partition(b"=")
            store.write([(key, value)], [], applied_lsn=lsn)

    return apply


async def open_log(path: Path, clock: FakeClock, **kwargs: object) -> tuple[LmdbStore, LocalLog]:
    store = LmdbStore(path / "store")
    log = await LocalLog.open(path / "wal", store, applier(store), clock_us=clock, **kwargs)  # type: ignore[arg-type]
    return store, log


def test_a_wal_with_commit_times_records_each_records_time(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, commit_times=True)
    wal.set_commit_time(111)
    wal.append([b"a", b"b"])
    wal.set_commit_time(222)
    wal.append([b"c"])
    assert list(wal.replay_timed(0)) == [(1, 111, b"a"), (2, 111, b"b"), (3, 222, b"c")]
    assert list(wal.replay(1)) == [(2, b"b"), (3, b"c")]
    wal.close()
    assert (tmp_path / "00000000000000000001.wal").read_bytes()[:8] == SEGMENT_MAGIC_TIMED
    reopened = WriteAheadLog(tmp_path, commit_times=True)
    assert reopened.last_commit_time_us() == 222
    reopened.close()


def test_a_wal_without_commit_times_keeps_the_first_format(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.set_commit_time(5)
    wal.append([b"a"])
    assert list(wal.replay_timed(0)) == [(1, 0, b"a")]
    wal.close()
    assert (tmp_path / "00000000000000000001.wal").read_bytes()[:8] == SEGMENT_MAGIC


def test_an_old_segment_is_continued_in_its_own_format_and_the_next_one_is_timed(
    tmp_path: Path,
) -> None:
    old = WriteAheadLog(tmp_path, segment_bytes=200)
    old.append([b"x" * 10])
    old.close()
    wal = WriteAheadLog(tmp_path, segment_bytes=200, commit_times=True)
    wal.set_commit_time(7)
    wal.append([b"y" * 10])
    assert wal.seal()
    wal.append([b"z" * 10])
    assert list(wal.replay_timed(0)) == [(1, 0, b"x" * 10), (2, 0, b"y" * 10), (3, 7, b"z" * 10)]
    wal.close()


def test_a_largest_record_still_fits_with_its_commit_time(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, commit_times=True)
    payload = b"p" * RECORD_BYTES_MAX
    wal.set_commit_time(9)
    wal.append([payload])
    wal.sync()
    wal.close()
    reopened = WriteAheadLog(tmp_path, commit_times=True)
    assert [(lsn, t, len(p)) for lsn, t, p in reopened.replay_timed(0)] == [(1, 9, len(payload))]
    reopened.close()


def test_sealing_closes_the_segment_only_when_it_holds_records(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, commit_times=True)
    assert not wal.seal()
    wal.append([b"a"])
    assert wal.seal()
    assert not wal.seal()
    assert [first for first, _ in wal.sealed_segments()] == [1]
    data = wal.sealed_segments()[0][1].read_bytes()
    assert [lsn for lsn, _, _ in read_segment(data, 1)] == [1]
    wal.close()


def test_reading_a_sealed_segment_refuses_any_damaged_byte(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, commit_times=True)
    wal.append([b"first", b"second"])
    wal.seal()
    path = wal.sealed_segments()[0][1]
    wal.close()
    data = path.read_bytes()
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        with pytest.raises(CorruptLogError):
            list(read_segment(bytes(damaged), 1))
    with pytest.raises(CorruptLogError):
        list(read_segment(data, 2))  # the header names another first record


def test_commit_times_never_decrease_when_the_clock_steps_back_even_across_a_restart(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        clock = FakeClock(5_000_000)
        store, log = await open_log(tmp_path, clock)
        await log.append(b"a=1")
        clock.now_us = 1_000_000  # the wall clock steps back four seconds
        await log.append(b"b=1")
        assert log.committed_time_us() == 5_000_000
        clock.now_us = 6_000_000
        await log.append(b"c=1")
        await log.close()
        store.close()
        clock.now_us = 2_000_000  # and back again while the node was down
        store, log = await open_log(tmp_path, clock)
        await log.append(b"d=1")
        await log.close()
        store.close()

    asyncio.run(scenario())
    wal = WriteAheadLog(tmp_path / "wal", commit_times=True)
    times = [t for _, t, _ in wal.replay_timed(0)]
    wal.close()
    assert times == [5_000_000, 5_000_000, 6_000_000, 6_000_000]


def test_a_checkpoint_keeps_every_segment_the_retention_hold_asks_for(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        store, log = await open_log(tmp_path, FakeClock(), segment_bytes=100)
        held_from = 1
        log.retain_from(lambda: held_from)
        for number in range(12):
            await log.append(b"k%d=%d" % (number, number))
        await log.checkpoint()
        kept = [first for first, _ in log.sealed_segments()]
        assert kept[0] == 1  # nothing below the hold was removed
        held_from = 8
        await log.checkpoint()
        after = [first for first, _ in log.sealed_segments()]
        await log.close()
        store.close()
        return after

    after = asyncio.run(scenario())
    # Segments wholly below record 8 are gone; the one holding record 8 stays.
    assert after[0] <= 8
    assert after[0] > 1


def test_without_a_hold_a_checkpoint_removes_sealed_segments_below_the_store(
    tmp_path: Path,
) -> None:
    async def scenario() -> list[int]:
        store, log = await open_log(tmp_path, FakeClock(), segment_bytes=100)
        for number in range(12):
            await log.append(b"k%d=%d" % (number, number))
        await log.seal()
        await log.checkpoint()
        kept = [first for first, _ in log.sealed_segments()]
        await log.close()
        store.close()
        return kept

    assert asyncio.run(scenario()) == []
