"""`verify_segment` checks a sealed segment exactly as `read_segment` does: the same summary
for a good segment, and CorruptLogError for every damage `read_segment` refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.storage.wal import (
    CorruptLogError,
    SegmentSummary,
    WriteAheadLog,
    read_segment,
    verify_segment,
)


def sealed_segment(
    directory: Path, groups: list[list[bytes]], *, timed: bool = True, start_lsn: int = 0
) -> tuple[int, bytes]:
    wal = WriteAheadLog(directory, start_lsn=start_lsn, fsync=lambda fd: None, commit_times=timed)
    try:
        for number, group in enumerate(groups):
            if timed:
                wal.set_commit_time(1_000_000 + number * 7)
            wal.append(group)
        wal.seal()
        ((first_lsn, path),) = wal.sealed_segments()
        return first_lsn, path.read_bytes()
    finally:
        wal.close()


def summary_by_reading(data: bytes, first_lsn: int | None) -> Any:
    try:
        records = [(lsn, time_us) for lsn, time_us, _ in read_segment(data, first_lsn)]
    except CorruptLogError:
        return "corrupt"
    if not records:
        # Cut right after the header: a segment without records (times unknown: 0).
        assert first_lsn is not None
        return (first_lsn, first_lsn - 1, 0, 0)
    return (records[0][0], records[-1][0], records[0][1], records[-1][1])


def summary_by_verifying(data: bytes, first_lsn: int | None) -> Any:
    try:
        summary = verify_segment(data, first_lsn)
    except CorruptLogError:
        return "corrupt"
    return (summary.first_lsn, summary.last_lsn, summary.first_time_us, summary.last_time_us)


groups_strategy = st.lists(
    st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=4), min_size=1, max_size=5
)


@settings(max_examples=60, deadline=None)
@given(groups_strategy, st.booleans(), st.data())
def test_verify_and_read_agree_on_good_and_damaged_segments(
    tmp_path_factory: pytest.TempPathFactory, groups: list[list[bytes]], timed: bool, data: Any
) -> None:
    first_lsn, segment = sealed_segment(tmp_path_factory.mktemp("wal"), groups, timed=timed)
    assert summary_by_verifying(segment, first_lsn) == summary_by_reading(segment, first_lsn)
    records = sum(len(group) for group in groups)
    summary = verify_segment(segment, first_lsn)
    assert summary.records == records
    # Damage: one flipped byte anywhere, or the segment cut short.
    at = data.draw(st.integers(0, len(segment) - 1))
    flipped = (
        segment[:at] + bytes([segment[at] ^ data.draw(st.integers(1, 255))]) + segment[at + 1 :]
    )
    assert summary_by_verifying(flipped, first_lsn) == summary_by_reading(flipped, first_lsn)
    assert summary_by_verifying(flipped, first_lsn) == "corrupt"
    cut = segment[: data.draw(st.integers(0, len(segment) - 1))]
    assert summary_by_verifying(cut, first_lsn) == summary_by_reading(cut, first_lsn)


def test_a_segment_with_another_first_lsn_is_refused(tmp_path: Path) -> None:
    first_lsn, segment = sealed_segment(tmp_path, [[b"a", b"b"]], start_lsn=41)
    assert first_lsn == 42
    assert verify_segment(segment, 42) == SegmentSummary(42, 43, 1_000_000, 1_000_000)
    with pytest.raises(CorruptLogError, match="first LSN 42, not 41"):
        verify_segment(segment, 41)


def test_commit_times_come_from_the_first_and_last_records(tmp_path: Path) -> None:
    _, segment = sealed_segment(tmp_path, [[b"x"], [b"y", b"z"], [b"w"]])
    summary = verify_segment(segment)
    assert (summary.first_time_us, summary.last_time_us) == (1_000_000, 1_000_014)
    assert summary.records == 4
