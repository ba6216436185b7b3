"""The read-only log inspection reports segments, LSN ranges and the first damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeldb.storage.inspect import inspect_log, main
from keeldb.storage.wal import WriteAheadLog


def write_segments(directory: Path) -> list[Path]:
    wal = WriteAheadLog(directory, segment_bytes=200)
    for i in range(30):
        wal.append([b"payload-%02d" % i])
    wal.sync()
    wal.close()
    return sorted(directory.glob("*.wal"))


def test_a_healthy_log_reports_every_record_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    segments = write_segments(tmp_path)
    reports = inspect_log(tmp_path)
    assert [r.path for r in reports] == segments
    assert sum(r.records for r in reports) == 30
    assert all(r.problem is None for r in reports)
    assert main([str(tmp_path)]) == 0
    assert "LSN 1.." in capsys.readouterr().out


def test_damage_in_an_older_segment_is_named_and_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    segments = write_segments(tmp_path)
    data = bytearray(segments[1].read_bytes())
    data[-3] ^= 0xFF
    segments[1].write_bytes(bytes(data))
    before = [p.read_bytes() for p in segments]
    assert main([str(tmp_path)]) == 1
    assert "checksum mismatch" in capsys.readouterr().out
    # Inspection never writes.
    assert [p.read_bytes() for p in segments] == before


def test_a_torn_last_segment_is_reported_but_is_not_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    segments = write_segments(tmp_path)
    segments[-1].write_bytes(segments[-1].read_bytes()[:-5])
    assert main([str(tmp_path)]) == 0
    assert "payload cut short" in capsys.readouterr().out


def test_a_missing_segment_shows_as_a_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    segments = write_segments(tmp_path)
    segments[1].unlink()
    main([str(tmp_path)])
    assert "gap: expected first LSN" in capsys.readouterr().out


def test_the_zeroes_after_a_preallocated_last_record_are_named_and_are_not_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wal = WriteAheadLog(tmp_path, preallocate_bytes=4096)
    wal.append([b"one", b"two"])
    wal.sync()
    (segment,) = sorted(tmp_path.glob("*.wal"))
    data = segment.read_bytes()  # as a kill -9 leaves it: the zeroes are still there
    wal.close()
    segment.write_bytes(data)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 records" in out
    assert "zeroes to the end" in out
