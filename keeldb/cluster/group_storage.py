"""The durable state of one member of a replica group: its consensus records in a WAL.

Owns the on-disk form of the records a `Replica` asks its driver to persist (promises, votes,
chosen values, commit points, snapshots, incarnations): each record is one entry of a
`storage.wal.WriteAheadLog` (so the same framing, per-record CRC with a segment salt, and
torn-tail handling), holding `msgpack(group_codec.encode_record(record))`. Also owns the rewrite that
keeps the log short: the compact record list of the replica's state is appended, then the
segments wholly before it are removed.

It never decides what to persist or when a message may leave (the replica and the group
driver do), and its methods block on the disk: the driver calls them from one worker thread.

A rewrite writes a marker, `["base", n]`, then the n records of the compact list. Replay
starts at the last marker whose n records are all present and ignores what precedes it:
older records must not be mixed in (a surviving older commit record would make the replay
skip the compact list's votes above the snapshot, whose own older records are gone). A
marker whose list is torn is ignored, and its partial list then follows the complete older
history, which it only restates (the rewrite removes nothing before its list is synced).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgpack

from keeldb.cluster import group_codec
from keeldb.consensus.codec import CodecError
from keeldb.consensus.messages import Record
from keeldb.storage.wal import CorruptLogError, WriteAheadLog

GROUP_SEGMENT_BYTES = 8 * 1024 * 1024  # small segments, so a rewrite frees space soon


BASE_MARKER = "base"  # precedes the compact record list of a rewrite
_MARKER_PREFIX = b"\x92\xa4base"  # msgpack of a two-item list starting with "base"


def _base_marker(payload: bytes) -> int | None:
    """The record count of a rewrite's marker, or None for an ordinary record."""
    if not payload.startswith(_MARKER_PREFIX):
        return None
    plain = msgpack.unpackb(payload, raw=False)
    if isinstance(plain, list) and len(plain) == 2 and isinstance(plain[1], int):
        return plain[1]
    return None


def encode_record(record: Record) -> bytes:
    data: bytes = msgpack.packb(group_codec.encode_record(record), use_bin_type=True)
    return data


def decode_record(data: bytes) -> Record:
    """A persisted record; CorruptLogError when the bytes are not one (the CRC passed, so
    this is a bug or a foreign file, never a torn write)."""
    try:
        record = group_codec.decode_record(msgpack.unpackb(data, raw=False))
    except (CodecError, ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as error:
        raise CorruptLogError(f"a group log entry is not a consensus record: {error}") from None
    return record


class GroupWal:
    """One member's record log. Not thread-safe: one disk thread uses it."""

    def __init__(self, directory: Path, *, segment_bytes: int = GROUP_SEGMENT_BYTES) -> None:
        self._wal = WriteAheadLog(directory, segment_bytes=segment_bytes)
        self.records_since_rewrite = 0

    @property
    def directory(self) -> Path:
        return self._wal.directory

    def read_all(self) -> list[Record]:
        """The records that make up the member's state, in the order appended: from the
        last complete rewrite on (see the module docstring)."""
        first = self._wal.first_lsn()
        payloads = [payload for _, payload in self._wal.replay(first - 1)]
        start = 0
        index = 0
        while index < len(payloads):
            count = _base_marker(payloads[index])
            # A complete base supersedes everything before it; a torn one (fewer than its
            # count of records follow) is ignored, keeping the older history it restates.
            if count is not None and index + count < len(payloads):
                start = index + 1
            index += 1
        records = [
            decode_record(payload) for payload in payloads[start:] if _base_marker(payload) is None
        ]
        self.records_since_rewrite = len(records)
        return records

    def append(self, records: Sequence[Record]) -> None:
        """Write the records and fsync: they are durable when this returns."""
        if not records:
            return
        self._wal.append([encode_record(r) for r in records])
        self._wal.sync()
        self.records_since_rewrite += len(records)

    def rewrite(self, compact: Sequence[Record]) -> int:
        """Append `compact` (a record list that replays to the whole current state), fsync,
        then remove the segments wholly before it; returns how many were removed."""
        first_lsn = self._wal.last_lsn() + 1
        marker: bytes = msgpack.packb([BASE_MARKER, len(compact)], use_bin_type=True)
        self._wal.append([marker, *(encode_record(r) for r in compact)])
        self._wal.sync()
        self.records_since_rewrite = len(compact)
        return self._wal.truncate_before(first_lsn)

    def segment_paths(self) -> list[Path]:
        return self._wal.segment_paths()

    def close(self) -> None:
        self._wal.close()
