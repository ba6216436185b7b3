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

import os
from collections.abc import Sequence
from dataclasses import dataclass
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


# --- one log for every member a node hosts ----------------------------------------------

NODE_LOG_SEGMENTS_SOFT_MAX = 8  # past this many segments, members whose base is in the
# oldest segment are asked to restate their state (a rewrite), so that a quiet group does
# not keep every other group's records on disk
GROUP_ID_BYTES_MAX = 255  # a group id is stored with a one-byte length
MEMBER_TOKEN_FILE = "node-log-member"  # in the member's own directory: which history is its


def _group_prefix(group_id: str) -> bytes:
    name = group_id.encode()
    if not name or len(name) > GROUP_ID_BYTES_MAX:
        raise ValueError(f"group id {group_id!r} must have 1 to {GROUP_ID_BYTES_MAX} bytes")
    return bytes([len(name)]) + name


def _split_tagged(payload: bytes) -> tuple[str, bytes]:
    """The group id and the record bytes of a node log entry; CorruptLogError otherwise."""
    if not payload or len(payload) < 1 + payload[0]:
        raise CorruptLogError("a node log entry does not start with a group id")
    end = 1 + payload[0]
    try:
        group_id = payload[1:end].decode()
    except UnicodeDecodeError:
        raise CorruptLogError("a node log entry's group id is not UTF-8") from None
    return group_id, payload[end:]


def _token_marker(payload: bytes) -> tuple[int, str | None] | None:
    """(record count, member token) of a base marker in the node log, or None."""
    if not payload.startswith(b"\x93\xa4base") and not payload.startswith(_MARKER_PREFIX):
        return None
    plain = msgpack.unpackb(payload, raw=False)
    if not isinstance(plain, list) or plain[0] != BASE_MARKER or not isinstance(plain[1], int):
        return None
    token = plain[2] if len(plain) == 3 and isinstance(plain[2], str) else None
    return plain[1], token


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_token(path: Path, token: str) -> None:
    """The member's token, durable (file and directory) when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as file:
        file.write(token)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(slots=True)
class _GroupHistory:
    token: str | None  # the token of the group's last complete base
    base_lsn: int  # where its replay starts
    records: list[Record]


@dataclass(slots=True)
class NodeRound:
    """One round of the node log: its record payloads and records per group."""

    payloads: list[bytes]
    counts: dict[str, int]


class NodeWal:
    """The consensus records of every group member a node hosts, in one `WriteAheadLog`, so
    that one fsync makes a whole round of every group's records durable.

    Each entry is the group id (one length byte, UTF-8) followed by a record as `GroupWal`
    stores it, or a base marker `["base", n, token]`. Replay splits the entries per group: a
    group's history starts at its last base marker whose n records (the group's next n
    entries) are all present.

    Member tokens. A member's history belongs to its directory: the token of its last base
    is also in the file `MEMBER_TOKEN_FILE` of the member's own directory. A member whose
    file is missing or names another token (its directory was removed, as when a node stops
    holding a replica, and perhaps made again) starts empty under a new token, exactly as a
    member with its own log would after its directory was removed; and such a group's old
    entries hold back no segment.

    A segment is removed only when every group whose history is live has its base after it.

    Not thread-safe: one disk thread uses it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = GROUP_SEGMENT_BYTES,
        groups_dir: Path | None = None,
    ) -> None:
        self._wal = WriteAheadLog(directory, segment_bytes=segment_bytes)
        # Where a group's token file is when it has not been opened here: the cluster
        # node's layout, groups_dir/<group>/log/MEMBER_TOKEN_FILE (None: unknown, live).
        self._groups_dir = groups_dir
        self._token_files: dict[str, Path] = {}
        self._base_lsn: dict[str, int] = {}
        self._records_since_base: dict[str, int] = {}
        self._scanned: dict[str, _GroupHistory] | None = None
        # Groups whose base is in the oldest segment while the log holds more than
        # NODE_LOG_SEGMENTS_SOFT_MAX segments; recomputed when the segment count changes.
        self._pinning: frozenset[str] = frozenset()
        self._segments_seen = 0
        self._segment_bytes = segment_bytes
        self._bytes_unchecked = 0  # appended since the segments were last looked at
        self.fsync_count = 0

    @property
    def directory(self) -> Path:
        return self._wal.directory

    def _scan(self) -> dict[str, _GroupHistory]:
        entries: dict[str, list[tuple[int, bytes]]] = {}
        first = self._wal.first_lsn()
        for lsn, payload in self._wal.replay(first - 1):
            group_id, data = _split_tagged(payload)
            entries.setdefault(group_id, []).append((lsn, data))
        out: dict[str, _GroupHistory] = {}
        for group_id, items in entries.items():
            start, token = 0, None
            for index, (_, data) in enumerate(items):
                marker = _token_marker(data)
                if marker is not None and index + marker[0] < len(items):
                    start, token = index, marker[1]
            records = [
                decode_record(data) for _, data in items[start:] if _token_marker(data) is None
            ]
            out[group_id] = _GroupHistory(token, items[start][0], records)
            self._base_lsn.setdefault(group_id, items[start][0])
            self._records_since_base.setdefault(group_id, len(records))
        return out

    def read_all(self) -> dict[str, list[Record]]:
        """Every group's records as the log holds them (whatever the member tokens say)."""
        return {group: history.records for group, history in self._scan().items()}

    def open_group(self, group_id: str, token_file: Path) -> list[Record]:
        """The records of the member whose token is in `token_file`: its history if the
        tokens agree, else none (and it starts afresh under a new token)."""
        if self._scanned is None:
            self._scanned = self._scan()
        history = self._scanned.pop(group_id, None)
        if history is None and group_id in self._base_lsn:
            history = self._scan().get(group_id)  # opened before in this process
        self._token_files[group_id] = token_file
        token = _read_token(token_file)
        if history is not None and history.token is not None and history.token == token:
            self._base_lsn[group_id] = history.base_lsn
            self._records_since_base[group_id] = len(history.records)
            return history.records
        self._new_base(group_id, [], os.urandom(16).hex(), token_file)
        return []

    def _new_base(
        self, group_id: str, compact: Sequence[Record], token: str, token_file: Path
    ) -> None:
        prefix = _group_prefix(group_id)
        marker_lsn = self._wal.last_lsn() + 1
        marker: bytes = msgpack.packb([BASE_MARKER, len(compact), token], use_bin_type=True)
        self._wal.append([prefix + marker, *(prefix + encode_record(r) for r in compact)])
        self._wal.sync()
        self.fsync_count += 1
        if _read_token(token_file) != token:
            _write_token(token_file, token)
        self._base_lsn[group_id] = marker_lsn
        self._records_since_base[group_id] = len(compact)

    def append(self, batch: Sequence[tuple[str, Sequence[Record]]]) -> None:
        """Write every group's records, then fsync once: all durable when this returns."""
        round_ = self.prepare(batch)
        if round_ is None:
            return
        self.write(round_)
        self._wal.sync()
        self.synced(round_)

    # A round split in its steps, for a caller that completes the fsync itself (the node
    # log's "async" mode): prepare, check `writes_in_place`, write, fdatasync `sync_fd`
    # (not closing it meanwhile: no rewrite, close or other append), then `synced`.

    def prepare(self, batch: Sequence[tuple[str, Sequence[Record]]]) -> NodeRound | None:
        """The round's payloads, tagged with their groups; None when it has no records."""
        payloads: list[bytes] = []
        counts: dict[str, int] = {}
        for group_id, records in batch:
            assert group_id in self._token_files, f"group {group_id} was not opened"
            prefix = _group_prefix(group_id)
            payloads.extend(prefix + encode_record(r) for r in records)
            counts[group_id] = counts.get(group_id, 0) + len(records)
        if not payloads:
            return None
        return NodeRound(payloads, counts)

    def writes_in_place(self, round_: NodeRound) -> bool:
        """Whether writing the round only writes its records (no new segment, no zeroes
        ahead): then `sync_fd` stays the descriptor to sync."""
        return self._wal.writes_in_place(round_.payloads)

    def write(self, round_: NodeRound) -> None:
        """Write the round into the log, not yet durable."""
        self._wal.append(round_.payloads)

    def sync_fd(self) -> int:
        return self._wal.sync_fd()

    def sync_failed(self, error: OSError) -> BaseException:
        """A caller's fdatasync of `sync_fd` failed: the log refuses all further use."""
        return self._wal.sync_failed(error)

    def synced(self, round_: NodeRound) -> None:
        """The round's fsync completed: count it."""
        self.fsync_count += 1
        for group_id, count in round_.counts.items():
            self._records_since_base[group_id] = self._records_since_base.get(group_id, 0) + count
        # A new segment starts only after a segment's worth of bytes: look for one (listing
        # the segments costs a path per segment) once a quarter of that has been written.
        self._bytes_unchecked += sum(len(p) for p in round_.payloads)
        if self._bytes_unchecked >= self._segment_bytes // 4:
            self._note_segments()

    def _note_segments(self) -> None:
        self._bytes_unchecked = 0
        segments = self._wal.segment_paths()
        if len(segments) == self._segments_seen:
            return
        self._segments_seen = len(segments)
        if len(segments) <= NODE_LOG_SEGMENTS_SOFT_MAX:
            self._pinning = frozenset()
            return
        second_first_lsn = int(segments[1].name.split(".")[0])
        self._pinning = frozenset(
            group for group, base in self._base_lsn.items() if base < second_first_lsn
        )

    def records_since_rewrite(self, group_id: str) -> int:
        return self._records_since_base.get(group_id, 0)

    def rewrite(self, group_id: str, compact: Sequence[Record]) -> int:
        """Append the group's `compact` record list (it replays to the group's whole state)
        after a base marker, fsync, then remove the segments no live group needs any more;
        returns how many were removed."""
        token_file = self._token_files[group_id]
        token = _read_token(token_file) or os.urandom(16).hex()
        self._new_base(group_id, compact, token, token_file)
        live = [lsn for group, lsn in self._base_lsn.items() if self._live(group)]
        removed = self._wal.truncate_before(min(live))
        self._segments_seen = 0
        self._note_segments()
        return removed

    def _live(self, group_id: str) -> bool:
        """Whether the group's entries may still be someone's history: its token file
        exists (if its place is known at all)."""
        token_file = self._token_files.get(group_id)
        if token_file is None and self._groups_dir is not None:
            token_file = self._groups_dir / group_id / "log" / MEMBER_TOKEN_FILE
        return token_file is None or token_file.exists()

    def rebase_wanted(self, group_id: str) -> bool:
        """Whether the group's base holds back the removal of old segments (the log has
        more than NODE_LOG_SEGMENTS_SOFT_MAX segments and the group's base is in the
        oldest): a rewrite of the group lets them go."""
        return group_id in self._pinning

    def segment_paths(self) -> list[Path]:
        return self._wal.segment_paths()

    def close(self) -> None:
        self._wal.close()
