"""Read-only inspection of a node's log, for operators: `python -m keeldb.storage.inspect DIR`.

Owns a report of what a log directory holds (segments, their LSN ranges and sizes, whether
every record verifies) and where the first damage is, so that a node refusing to start with
`CorruptLogError` can be diagnosed. It never writes: no torn tail is cut, no lock is taken,
nothing is repaired.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keeldb.storage.wal import (
    RECORD_BYTES_MAX,
    RECORD_HEADER,
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    SEGMENT_NAME_PATTERN,
    decode_segment_header,
    record_end,
)


@dataclass(frozen=True, slots=True)
class SegmentReport:
    path: Path
    first_lsn: int
    records: int  # whole records that verify, from the start of the segment
    bytes: int  # the file's size
    good_bytes: int  # where the verified records end
    problem: str | None  # what stops the verification, if it stops before the end


def inspect_segment(path: Path) -> SegmentReport:
    match = SEGMENT_NAME_PATTERN.match(path.name)
    assert match is not None, path
    first_lsn = int(match.group(1))
    data = path.read_bytes()
    header = decode_segment_header(data)
    if header is None:
        return SegmentReport(path, first_lsn, 0, len(data), 0, "segment header does not verify")
    if header[0] != first_lsn:
        return SegmentReport(path, first_lsn, 0, len(data), 0, f"header says first LSN {header[0]}")
    salt = header[1]
    offset = SEGMENT_HEADER_BYTES
    lsn = first_lsn
    while offset < len(data):
        end = record_end(data, offset, lsn, salt)
        if end is None:
            return SegmentReport(
                path, first_lsn, lsn - first_lsn, len(data), offset, _why(data, offset, lsn)
            )
        offset = end
        lsn += 1
    return SegmentReport(path, first_lsn, lsn - first_lsn, len(data), offset, None)


def _why(data: bytes, offset: int, lsn: int) -> str:
    where = f"record {lsn} at byte {offset}"
    if data.count(0, offset) == len(data) - offset:
        # What a preallocating log leaves after its last record when it is not closed.
        return f"{where}: zeroes to the end ({len(data) - offset} bytes, preallocated)"
    if offset + RECORD_HEADER_BYTES > len(data):
        return f"{where}: header cut short ({len(data) - offset} bytes)"
    length, _crc, found_lsn = RECORD_HEADER.unpack_from(data, offset)
    if found_lsn != lsn:
        return f"{where}: header holds LSN {found_lsn}"
    if length > RECORD_BYTES_MAX:
        return f"{where}: length {length} exceeds {RECORD_BYTES_MAX}"
    if offset + RECORD_HEADER_BYTES + length > len(data):
        return f"{where}: payload cut short"
    return f"{where}: checksum mismatch"


def inspect_log(directory: Path) -> list[SegmentReport]:
    paths = sorted(p for p in Path(directory).iterdir() if SEGMENT_NAME_PATTERN.match(p.name))
    return [inspect_segment(path) for path in paths]


def render(reports: Sequence[SegmentReport]) -> str:
    lines = []
    expected: int | None = None
    for report in reports:
        last = report.first_lsn + report.records - 1
        state = "ok" if report.problem is None else report.problem
        if expected is not None and report.first_lsn != expected:
            state = f"gap: expected first LSN {expected}; {state}"
        lines.append(
            f"{report.path.name}  LSN {report.first_lsn}..{last}  {report.records} records  "
            f"{report.good_bytes}/{report.bytes} bytes  {state}"
        )
        expected = last + 1
    if not reports:
        lines.append("no segments")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keeldb.storage.inspect",
        description="Verify a KeelDB log directory (read-only).",
    )
    parser.add_argument("directory", type=Path, help="the log directory, e.g. keeldb-data/wal")
    args = parser.parse_args(argv)
    reports = inspect_log(args.directory)
    print(render(reports))
    damaged = [r for r in reports[:-1] if r.problem is not None]
    # Only the last segment may end in a torn tail; opening the log would cut it off.
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
