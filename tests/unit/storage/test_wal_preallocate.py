"""The log with preallocated segments: zeroes ahead of the records, never taken for records.

A preallocating log zeroes its segment ahead of the records it writes, so that the fdatasync
of a group changes neither the file's size nor its allocation (the journal is not
committed). These tests hold it to the same format as a log that does not preallocate:
sealed segments end at their last record, a clean close leaves no zeroes, and after a kill
the zeroes are cut at the next open without being reported as a torn tail.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import keeldb.storage.wal as wal_module
from keeldb.storage.wal import (
    SEGMENT_HEADER_BYTES,
    ZERO_WRITE_BYTES,
    WriteAheadLog,
    verify_segment,
)

PREALLOCATE_BYTES = 4096


def no_fsync(fd: int) -> None:
    """For tests of formats, not of durability: a disk that syncs instantly."""


def kill(wal: WriteAheadLog) -> None:
    """What kill -9 does to an open log: its files are closed as they are."""
    for fd in (wal._fd, wal._lock_fd):
        if fd >= 0:
            os.close(fd)
    wal._fd = wal._lock_fd = -1


def open_log(directory: Path, **kwargs: object) -> WriteAheadLog:
    return WriteAheadLog(
        directory,
        fsync=no_fsync,
        preallocate_bytes=PREALLOCATE_BYTES,
        **kwargs,  # type: ignore[arg-type]
    )


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def test_a_preallocating_log_keeps_the_file_size_while_groups_are_synced(
    tmp_path: Path,
) -> None:
    wal = open_log(tmp_path)
    wal.append([b"first"])
    wal.sync()
    (path,) = segments(tmp_path)
    size = path.stat().st_size
    assert size >= SEGMENT_HEADER_BYTES + PREALLOCATE_BYTES
    for i in range(20):
        wal.append([b"record %d" % i])
        wal.sync()
        assert path.stat().st_size == size  # no metadata to commit with these fdatasyncs
    wal.close()


def test_a_preallocating_log_zeroes_further_when_its_records_reach_the_zeroes(
    tmp_path: Path,
) -> None:
    wal = open_log(tmp_path)
    for i in range(3 * PREALLOCATE_BYTES // 100):
        wal.append([bytes([i % 251]) * 100])
        wal.sync()
    (path,) = segments(tmp_path)
    assert path.stat().st_size > 3 * PREALLOCATE_BYTES
    kill(wal)
    assert [payload for _, payload in open_log(tmp_path).replay(0)] == [
        bytes([i % 251]) * 100 for i in range(3 * PREALLOCATE_BYTES // 100)
    ]


def test_a_sealed_segment_ends_at_its_last_record(tmp_path: Path) -> None:
    wal = open_log(tmp_path, segment_bytes=600)
    for i in range(30):
        wal.append([b"x" * 40 + b"%d" % i])
        wal.sync()
    assert wal.seal()
    sealed = wal.sealed_segments()
    assert len(sealed) >= 2
    for first_lsn, path in sealed:
        data = path.read_bytes()
        assert not data.endswith(b"\0" * 8), path  # no zeroes left after the records
        summary = verify_segment(data, first_lsn)  # raises on anything that is not a record
        assert summary.records > 0
    assert [lsn for lsn, _ in wal.replay(0)] == list(range(1, 31))
    wal.close()


def test_a_clean_close_leaves_no_zeroes(tmp_path: Path) -> None:
    wal = open_log(tmp_path)
    wal.append([b"a", b"b", b"c"])
    wal.sync()
    (path,) = segments(tmp_path)
    assert path.stat().st_size > SEGMENT_HEADER_BYTES + PREALLOCATE_BYTES // 2
    wal.close()
    data = path.read_bytes()
    assert verify_segment(data, 1).records == 3
    assert not data.endswith(b"\0" * 8)


def test_after_a_kill_the_zeroes_are_cut_quietly_and_writing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = open_log(tmp_path)
    wal.append([b"one", b"two"])
    wal.sync()
    kill(wal)
    with caplog.at_level(logging.INFO, logger="keeldb.storage.wal"):
        wal = open_log(tmp_path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert wal.last_lsn() == 2
    wal.append([b"three"])
    wal.sync()
    kill(wal)
    wal = open_log(tmp_path)
    assert list(wal.replay(0)) == [(1, b"one"), (2, b"two"), (3, b"three")]
    wal.close()


def test_a_torn_record_before_the_zeroes_is_still_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = open_log(tmp_path)
    wal.append([b"whole", b"torn record"])
    wal.sync()
    kill(wal)
    (path,) = segments(tmp_path)
    data = bytearray(path.read_bytes())
    end = len(bytes(data).rstrip(b"\0"))
    data[end - 3] ^= 0xFF  # the last record's payload
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="keeldb.storage.wal"):
        wal = open_log(tmp_path)
    assert wal.last_lsn() == 1
    assert any("torn tail" in r.getMessage() for r in caplog.records)
    wal.close()


def test_a_log_without_preallocation_reads_a_preallocated_one(tmp_path: Path) -> None:
    wal = open_log(tmp_path)
    wal.append([b"p", b"q"])
    wal.sync()
    kill(wal)
    plain = WriteAheadLog(tmp_path, fsync=no_fsync)
    assert list(plain.replay(0)) == [(1, b"p"), (2, b"q")]
    plain.append([b"r"])
    plain.close()
    wal = open_log(tmp_path)
    assert list(wal.replay(0)) == [(1, b"p"), (2, b"q"), (3, b"r")]
    wal.close()


def test_zeroes_are_written_a_page_at_a_time_on_page_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A larger write of zeroes would leave a large page-cache folio, which the kernel counts
    # whole as written at every later fdatasync of a record inside it.
    writes: list[tuple[int, int]] = []
    real_pwrite = os.pwrite

    def recording_pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        writes.append((offset, len(data)))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(wal_module.os, "pwrite", recording_pwrite)
    wal = WriteAheadLog(tmp_path, fsync=no_fsync, preallocate_bytes=1024 * 1024)
    for i in range(40):
        wal.append([bytes([i]) * 3000])
        wal.sync()
    zeroed = sum(length for _, length in writes)
    assert zeroed >= 40 * 3000
    for offset, length in writes:
        assert 0 < length <= ZERO_WRITE_BYTES
        # within one page
        assert offset // ZERO_WRITE_BYTES == (offset + length - 1) // ZERO_WRITE_BYTES
    kill(wal)
    assert [p for _, p in open_log(tmp_path).replay(0)] == [bytes([i]) * 3000 for i in range(40)]
