"""The durable state of one member of a replica group: its consensus records in a WAL.

Owns the on-disk form of the records a `Replica` asks its driver to persist (promises, votes,
chosen values, commit points, snapshots, incarnations): each record is one entry of a
`storage.wal.WriteAheadLog` (so the same framing, per-record CRC with a segment salt, and
torn-tail handling), holding `msgpack(group_codec.encode_record(record))`. Also owns the rewrite that
keeps the log short: the compact record list of the replica's state is appended, then the
segments wholly before it are removed.

It never decides what to persist or when a message may leave (the replica and the group
driver do), and its methods block on the disk: the driver calls them from one worker thread.

Replaying after a rewrite reads the remaining old records and then the compact list; the
records describe only facts that grow (a promised ballot only rises, a vote is replaced
only by a later vote for the same slot, commit points and snapshots only advance), so the
compact list that follows them yields the same state as it would alone, and a torn compact
list leaves the older records, which still replay to a state at least as old.
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
        """Every record still held, in the order appended."""
        first = self._wal.first_lsn()
        records = [decode_record(payload) for _, payload in self._wal.replay(first - 1)]
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
        self._wal.append([encode_record(r) for r in compact])
        self._wal.sync()
        self.records_since_rewrite = len(compact)
        return self._wal.truncate_before(first_lsn)

    def segment_paths(self) -> list[Path]:
        return self._wal.segment_paths()

    def close(self) -> None:
        self._wal.close()
