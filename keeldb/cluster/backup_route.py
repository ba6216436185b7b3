"""Backups, point-in-time restore, exports and imports on a cluster.

This module owns the cluster side of DynamoDB's backup API (docs/backup.md, "On a cluster"):

- commit times in partition records: `TimedCodec` stamps every record a replica proposes
  with its commit time ("ct", microseconds, taken by the proposing leader, so every replica
  of the group sees the same time), and hands every record a replica applies to its
  `PartitionArchive`;
- `PartitionArchive`: on each replica of a partition group, a base snapshot of the
  replica's store and every record applied after it with its commit time, in segments
  (`DATA_DIR/groups/GROUP/pitr/`), from which the partition is rebuilt as of any instant of
  its window (`rebuild`), kept to a single node's retention (`trim`, every minute);
- the "kv.backup" transport channel: backup operations run on the metadata group's leader
  (step "op", with `ClusterBackupHooks` as the engine's `BackupHooks`), and the work on a
  table's items runs on each partition's leader (steps "window", "copy", "dump_at", "load",
  "export_part", "knows"), next to the data;
- restores of any shape: a backup is found by its ARN under this cluster's prefix of the
  store or another server's (a single node's, another cluster's), and every item a restore
  loads is placed by this cluster's ring (`route_items`), whatever the hash ranges of the
  part or partition it came from;
- `attach(node)`: opens the cluster's backup store (shared by every node: `backup_dir`,
  `backup_s3` / `backup_s3_endpoint` in the cluster file, else `backups` next to the
  cluster file), answers the channel, serves the backup operations at the node's router, and
  resumes (or fails cleanly) the jobs a stop interrupted once this node leads the metadata
  group.

Metadata: point-in-time recovery settings and tables being loaded are catalog state, kept by
the metadata group (`update_table` / `create_table` / `load_done` records) and synced to the
partitions; backup, export and import descriptors are objects of the cluster's backup store
(`clusters/CLUSTER_ID/...`), readable by whichever node leads the metadata group.

It never writes a live store except through records proposed by a group's leader, and never
answers a client directly: the router does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb.backup import exports as export_format
from keeldb.backup.archive import ARCHIVE_RETENTION_SECONDS, setting
from keeldb.backup.service import (
    BACKUPS_PREFIX,
    EXPORTS_PREFIX,
    IMPORTS_PREFIX,
    PrefixedStore,
    _dumps,
    _id_of,
    _import_item,
    _read_items,
)
from keeldb.backup.store import ObjectMissingError, get_verified, open_store, put_verified
from keeldb.cluster import keyroute, topology
from keeldb.cluster.placement import META_GROUP, partition_group
from keeldb.cluster.protocol import ERROR, OK, REDIRECT, UNAVAILABLE, error_answer, raise_error
from keeldb.engine import backups as ops
from keeldb.engine import catalog
from keeldb.engine.database import OPERATIONS, Database, decode_record, encode_record
from keeldb.engine.items import SERVING_STATUSES
from keeldb.engine.schema import STATUS_CREATING, Table
from keeldb.model.errors import ClientError, InternalServerError
from keeldb.model.keys import HASH_SPACE, hash_range_bounds
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.wal import RECORD_BYTES_MAX, fsync_directory

if TYPE_CHECKING:
    from keeldb.cluster.node import ClusterNode

log = logging.getLogger("keeldb.cluster.backup")

CHANNEL_BACKUP = "kv.backup"
BACKUP_OPERATIONS = frozenset(
    {
        "UpdateContinuousBackups",
        "DescribeContinuousBackups",
        "RestoreTableToPointInTime",
        "CreateBackup",
        "DescribeBackup",
        "ListBackups",
        "DeleteBackup",
        "RestoreTableFromBackup",
        "ExportTableToPointInTime",
        "DescribeExport",
        "ListExports",
        "ImportTable",
        "DescribeImport",
        "ListImports",
    }
)
# Operations that may change the catalog (a table's PITR settings, a new table): the
# partitions are synced before the client hears of it.
CATALOG_CHANGING = frozenset(
    {
        "UpdateContinuousBackups",
        "RestoreTableToPointInTime",
        "RestoreTableFromBackup",
        "ImportTable",
    }
)
# Operations that read the archive's restorable window of every partition first.
WINDOW_READING = frozenset(
    {
        "UpdateContinuousBackups",
        "DescribeContinuousBackups",
        "RestoreTableToPointInTime",
        "ExportTableToPointInTime",
    }
)
# "off" leaves partition records without commit times and unarchived (for benchmarks): point-in-
# time restores and exports then answer ContinuousBackupsUnavailableException, as on one node.
ARCHIVE_SWITCH_ENV = "KEELDB_ARCHIVE"
COMMIT_TIME_KEY = "ct"  # a partition record's commit time, microseconds since the epoch
OPERATION_SECONDS_MAX = 60.0  # one backup operation at the router (CreateBackup copies first)
STEP_SECONDS_MAX = 600.0  # one step on a partition leader (a rebuild, a dump, a load)
LEASE_WAIT_SECONDS_MAX = 3.0  # a new leader's step waits this long for its lease
LEASE_POLL_SECONDS = 0.01
RETRY_PAUSE_SECONDS = 0.1  # before asking another member when no leader is known
SYNC_SECONDS_MAX = 10.0  # a catalog change waits this long for every partition
CATALOG_WAIT_SECONDS_MAX = 120.0  # a load waits this long for every partition to know its table
CATALOG_POLL_SECONDS = 0.2
RESUME_CHECK_SECONDS = 1.0  # how often a node checks whether it leads the metadata group now
PART_WAIT_SECONDS_MAX = 120.0  # a backup's finisher waits this long for a partition's part
PART_POLL_SECONDS = 0.05
PART_STATUS_SECONDS = 1.0  # how often the finisher asks whether a part is being dumped
IMPORT_STEP_ITEMS_MAX = 500  # items of an import sent to a partition leader in one step
REPLAY_BATCH_RECORDS = 1024  # archived records applied per store transaction in a rebuild
READ_CHUNK_BYTES = 1024 * 1024  # an archive file is read this much at a time
# A frame holds one record (at most the group log's record limit) and its time: the reader's
# buffer holds a chunk plus the frame it cuts.
FRAME_READ_BUFFER_BYTES_MAX = 2 * RECORD_BYTES_MAX + READ_CHUNK_BYTES
THREADS = 4  # worker threads for copies, rebuilds and uploads on one node
BASE_DIR = "base"
BASE_FILE = "base.json"
RECORDS_FILE = "records.bin"  # the first segment of an archive's records
# A partition archive is kept as long as a single node's (KEELDB_ARCHIVE_RETENTION_SECONDS,
# DynamoDB's longest recovery period): its records are cut into segments, each closed after
# SEGMENT_BYTES_MAX or once it spans SEGMENT_SECONDS_MAX of commit times, and every
# TRIM_CHECK_SECONDS each node rolls its archives' bases forward over the segments committed
# wholly before the cutoff. So a window holds the retention and at most one segment more.
SEGMENT_BYTES_MAX = 64 * 1024 * 1024
SEGMENT_SECONDS_MAX = 3600.0
SEGMENT_SECONDS_ENV = "KEELDB_ARCHIVE_SEGMENT_SECONDS"
TRIM_CHECK_SECONDS = 60.0
TRIM_CHECK_ENV = "KEELDB_ARCHIVE_TRIM_SECONDS"
# A deliberately broken restore, only for the test that proves its check catches one: a
# target table whose name starts with this variable's value (never set in production) is
# loaded part by part, each part as it is through one partition, without re-partitioning.
RESTORE_AS_IS_FAULT_ENV = "KEELDB_FAULT_RESTORE_AS_IS"
# Another, for the test that proves a loaded table is served everywhere once ACTIVE: a table
# whose name starts with this variable's value is made ACTIVE in the metadata group without
# waiting for its partitions' replicas to serve it (the catalog sync after it tells them).
ACTIVE_FIRST_FAULT_ENV = "KEELDB_FAULT_ACTIVE_FIRST"
# A slow schedule, not a broken one, for the test that a table is served exactly when
# DescribeTable says ACTIVE: for a table whose name starts with this variable's value, the
# metadata group waits ACTIVE_LATE_SECONDS after every partition serves the table before it
# makes it ACTIVE (as a slow metadata proposal would), so that requests surely arrive while
# the partitions serve it and the metadata group still says CREATING.
ACTIVE_LATE_FAULT_ENV = "KEELDB_FAULT_ACTIVE_LATE"
ACTIVE_LATE_SECONDS = 2.0
# Before the metadata group makes a loaded table ACTIVE, every replica of every partition is
# asked until it serves the table: DynamoDB serves every request to a table once DescribeTable
# says ACTIVE, and an eventually consistent read may be served by any replica. A replica that
# cannot be reached, or is still behind when the wait ends, is left to catch up (it answers
# eventually consistent reads only while it is up to date, and strong reads never).
SERVE_WAIT_SECONDS_MAX = 5.0
SERVE_POLL_SECONDS = 0.01
SERVE_CALL_SECONDS = 1.0  # one "do you serve it" question to one replica
# Prefixes of the shared backup store under which other servers keep their backups: a single
# node's (`nodes/NODE_ID/`) and other clusters' (`clusters/CLUSTER_ID/`).
FOREIGN_PREFIXES = ("nodes/", "clusters/")
FRAME_RECORD = 0  # [0, commit time, record bytes]
FRAME_MARK = 1  # [1, store's applied LSN after the records before it]


def _now_us() -> int:
    return time.time_ns() // 1000


# --- commit times and the partition archive -------------------------------------------------


_TIME_KEY_BYTES = msgpack.packb(COMMIT_TIME_KEY)
_UINT64 = 0xCF  # msgpack's tag of an unsigned 64-bit integer (a commit time in microseconds)
_FIXMAP_ENTRIES_MAX = 15  # a msgpack fixmap holds up to 15 entries; a map16 up to 65535
_MAP16 = 0xDE
_MAP16_ENTRIES_MAX = 65535


def _map_header(data: bytes) -> tuple[int, int] | None:
    """(entries, header bytes) of a msgpack map with a fixmap or map16 header, else None."""
    if not data:
        return None
    tag = data[0]
    if 0x80 <= tag <= 0x8F:
        return tag & 0x0F, 1
    if tag == _MAP16 and len(data) >= 3:
        return int.from_bytes(data[1:3], "big"), 3
    return None


def stamp_record(data: bytes, stamp: int) -> bytes:
    """An encoded record with COMMIT_TIME_KEY = `stamp` as its first entry. The map's header
    is rewritten in place of decoding and encoding the whole record."""
    assert 0 <= stamp < 1 << 64, stamp
    header = _map_header(data)
    value = bytes([_UINT64]) + stamp.to_bytes(8, "big")
    if header is None or header[0] >= _MAP16_ENTRIES_MAX:
        record = decode_record(data)
        return encode_record({COMMIT_TIME_KEY: stamp, **record})
    entries, size = header
    if entries + 1 <= _FIXMAP_ENTRIES_MAX:
        head = bytes([0x80 | (entries + 1)])
    else:
        head = bytes([_MAP16]) + (entries + 1).to_bytes(2, "big")
    return head + _TIME_KEY_BYTES + value + data[size:]


def record_time(data: bytes) -> int:
    """The commit time `stamp_record` put in an encoded record (0 if it has none)."""
    header = _map_header(data)
    if header is not None:
        at = header[1]
        key_end = at + len(_TIME_KEY_BYTES)
        if (
            data[at:key_end] == _TIME_KEY_BYTES
            and len(data) >= key_end + 9
            and data[key_end] == _UINT64
        ):
            return int.from_bytes(data[key_end + 1 : key_end + 9], "big")
    stamp = decode_record(data).get(COMMIT_TIME_KEY, 0)
    return stamp if isinstance(stamp, int) else 0


class TimedCodec:
    """A `Database.record_codec` that stamps records with their commit time when proposed
    and shows every applied record to the replica's archive. The record stays a plain record
    (an extra key that appliers ignore), so a log written with it replays without it."""

    def __init__(self, archive: Any, clock: Callable[[], int] | None = None) -> None:
        self.archive = archive
        self.clock = clock or _now_us
        self.last_us = 0

    def seal(self, data: bytes) -> bytes:
        # Never below a time this replica has seen, so times do not step back when the clock
        # does, or when the leadership moves to a node whose clock is behind.
        stamp = max(self.clock(), self.last_us + 1)
        self.last_us = stamp
        return stamp_record(data, stamp)

    def open(self, data: bytes) -> bytes:
        stamp = record_time(data)
        self.last_us = max(self.last_us, stamp)
        self.archive.note(stamp, data)
        return data


@dataclass(slots=True)
class _Segment:
    """One file of an archive's records (`records.bin`, then `records-00000001.bin` ...)."""

    seq: int
    bytes: int = 0
    first_stamp: int = 0  # the first record's commit time (0: no record yet)
    last_stamp: int = 0  # the latest commit time of its records
    last_mark: int | None = None  # the store's applied LSN its last mark names
    tail: bool = False  # record frames after its last mark (read at open only)


def _segment_name(seq: int) -> str:
    return RECORDS_FILE if seq == 0 else f"records-{seq:08d}.bin"


def _segment_seq(name: str) -> int | None:
    if name == RECORDS_FILE:
        return 0
    if name.startswith("records-") and name.endswith(".bin") and name[8:-4].isdigit():
        return int(name[8:-4])
    return None


class PartitionArchive:
    """One replica's archive of its partition: a base snapshot of the store and every record
    applied after it, with commit times, in segment files. A window starts at its base
    snapshot; a replica that applied records without archiving them (a crash that lost the
    archive's tail, a snapshot installed from the leader) starts a new window from a new
    base.

    The window is kept to the retention of a single node's archive: a segment is closed
    after `segment_bytes` or once it spans `segment_seconds` of commit times, and `trim`
    rolls the base forward over the closed segments whose records were all committed before
    the cutoff (a copy of the base with their records applied, then one atomic replace of
    `base.json`), so the disk holds the retention and at most one segment more."""

    def __init__(
        self,
        directory: Path,
        store: LmdbStore,
        clock: Callable[[], int] | None = None,
        *,
        segment_bytes: int | None = None,
        segment_seconds: float | None = None,
    ) -> None:
        self.directory = directory
        self.store = store
        self.clock = clock or _now_us
        self.segment_bytes = segment_bytes or SEGMENT_BYTES_MAX
        self.segment_us = int(
            (segment_seconds or setting(SEGMENT_SECONDS_ENV, SEGMENT_SECONDS_MAX)) * 1_000_000
        )
        self.last_stamp = 0  # the newest commit time archived
        self.group_log: Any = None
        self.base_time_us: int | None = None
        self.base_name = BASE_DIR  # the base snapshot's directory, named by base.json
        self.base_lsn = 0  # the store's applied LSN the base holds (its last mark)
        self.segments: list[_Segment] = []  # oldest first; records go to the last
        self.generation = 0  # moves at each new window and trim
        self._file: Any = None
        # The frames of the store batch being applied, written by `flush` just before it
        # commits.
        self._pending: list[bytes] = []
        self._scheduled = False
        self._installed = 0
        # Rebuilds read the base and the segments in worker threads; a trim replaces them
        # only while none does (it tries again later otherwise).
        self._lock = threading.Lock()
        self._readers = 0
        store.batch_hook = self  # `before_commit` and `aborted`

    def open(self) -> None:
        """Continue the window on disk if it holds every record the store applied, else
        start a new one (called before the group's log replays anything)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        base_file = self.directory / BASE_FILE
        base: dict[str, Any] | None = None
        segments: list[_Segment] = []
        if base_file.exists():
            base = json.loads(base_file.read_text())
            self.base_name = str(base.get("dir", BASE_DIR))
            segments = self._read_segments(int(base.get("first_segment", 0)))
        if base is None or not (self.directory / self.base_name).exists() or not segments:
            self.new_window()
            return
        # A store batch's frames and its mark are written before the store commits the
        # batch, so a mark may name a position the store never reached (a kill between the
        # two): the archive then holds more than the store, and the log applies the rest
        # again, archived again. Frames after the last mark (records applied outside a
        # store batch, whose mark follows after the loop turn) were written before their
        # records reached the store. Only a store that applied records the archive never
        # saw needs a new window.
        marked: int = base["lsn"]
        tail = False  # record frames after the last mark
        for segment in segments:
            if segment.last_mark is not None:
                marked, tail = segment.last_mark, segment.tail
            else:
                tail = tail or segment.tail
        if marked < self.store.applied_lsn() and not tail:
            self.new_window()
            return
        self.base_time_us = int(base["time_us"])
        self.base_lsn = int(base["lsn"])
        self.segments = segments
        self.last_stamp = max(s.last_stamp for s in segments)
        self._remove_strays()
        self._file = open(self._path(segments[-1].seq), "ab")  # noqa: SIM115

    def _path(self, seq: int) -> Path:
        return self.directory / _segment_name(seq)

    def _read_segments(self, first: int) -> list[_Segment]:
        """The segments from `first` on, read whole (empty if one is missing)."""
        found = sorted(
            seq
            for path in self.directory.iterdir()
            if (seq := _segment_seq(path.name)) is not None and seq >= first
        )
        if not found or found != list(range(first, first + len(found))):
            return []
        segments = []
        for seq in found:
            segment = _Segment(seq)
            for frame in _frames(self._path(seq)):
                if frame[0] == FRAME_MARK:
                    segment.last_mark, segment.tail = frame[1], False
                else:
                    segment.first_stamp = segment.first_stamp or frame[1]
                    segment.last_stamp = max(segment.last_stamp, frame[1])
                    segment.tail = True
            segment.bytes = self._path(seq).stat().st_size
            segments.append(segment)
        return segments

    def _remove_strays(self) -> None:
        """What a trim or a new window left when it stopped midway: base directories and
        segments that base.json does not name."""
        first = self.segments[0].seq if self.segments else 0
        for path in self.directory.iterdir():
            seq = _segment_seq(path.name)
            if seq is not None and seq < first:
                path.unlink(missing_ok=True)
            elif path.name.startswith(BASE_DIR) and path.is_dir() and path.name != self.base_name:
                shutil.rmtree(path, ignore_errors=True)

    def new_window(self) -> None:
        # Never inside a store batch: the base must hold every record before the window's.
        assert not self._pending, "a new window while a batch's records wait"
        if self._file is not None:
            self._file.close()
        for path in self.directory.iterdir():
            if _segment_seq(path.name) is not None:
                path.unlink()
            elif path.name.startswith(BASE_DIR) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        lsn = self.store.snapshot(self.directory / BASE_DIR)
        # Every record in the base was committed at or before this time.
        time_us = max(self.clock(), self.last_stamp)
        self._write_base({"lsn": lsn, "time_us": time_us})
        self.base_name = BASE_DIR
        self.base_lsn = lsn
        self.segments = [_Segment(0)]
        self._file = open(self._path(0), "ab")  # noqa: SIM115
        self.base_time_us = time_us
        self.generation += 1
        if self.group_log is not None:
            self._installed = self.group_log.snapshots_installed
        log.info("partition archive %s: a new window from %d", self.directory.name, time_us)

    def _write_base(self, base: dict[str, Any]) -> None:
        """Replace base.json in one atomic step (the commit point of a new window or trim)."""
        temporary = self.directory / (BASE_FILE + ".tmp")
        with open(temporary, "w") as stream:
            stream.write(json.dumps(base))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.directory / BASE_FILE)
        fsync_directory(self.directory)

    def note(self, stamp: int, data: bytes) -> None:
        """Archive one record as it is applied: written to the file (the operating system's
        cache) before the store commits the batch it is in, so a killed process loses none.
        Inside a store batch (a replica's apply) the frame waits for `before_commit`,
        which the store calls just before it commits the batch; outside one it is written
        at once and the mark of the store's position follows after the loop turn (`mark`)."""
        if self._file is None:
            return
        if stamp > self.last_stamp:
            self.last_stamp = stamp
        frame = msgpack.packb([FRAME_RECORD, stamp, data], use_bin_type=True)
        segment = self.segments[-1]
        if not segment.first_stamp:
            segment.first_stamp = stamp
        if stamp > segment.last_stamp:
            segment.last_stamp = stamp
        if self.store.in_batch:
            self._pending.append(frame)
            return
        self._write(frame)
        self._schedule_mark()

    def before_commit(self) -> None:
        """(The store's batch hook.) Write the batch's frames and the mark of the
        position the store commits with them in one write to the file (the operating
        system's cache, so a killed process loses none), before the store commits the
        batch: the file is never behind the store."""
        if not self._pending:
            return
        frames = self._pending
        self._pending = []
        if self.group_log is not None and self.group_log.snapshots_installed != self._installed:
            # The store took a snapshot since the last mark: `mark`, after this batch
            # commits, starts a new window whose base holds these records.
            self._write(b"".join(frames))
            self._schedule_mark()
            return
        self._write_marked(frames)

    def aborted(self) -> None:
        """(The store's batch hook.) Nothing of the batch was kept: neither are its frames
        (the log applies its records again)."""
        self._pending = []

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        self.segments[-1].bytes += len(data)

    def _schedule_mark(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.mark)

    def check(self) -> bool:
        """Start a new window if the store jumped over records this archive never saw (a
        snapshot installed from the leader); True if it did."""
        if self.group_log is not None and self.group_log.snapshots_installed != self._installed:
            self.new_window()
            return True
        return False

    def mark(self) -> None:
        self._scheduled = False
        if self._file is None or self.check():
            return
        self._write_marked([])

    def _write_marked(self, frames: list[bytes]) -> None:
        """Write `frames` and a mark of the store's applied LSN after them in one write;
        then start the next segment once this one is full or spans its time, so a segment
        holds whole batches."""
        applied = self.store.applied_lsn()
        frames.append(msgpack.packb([FRAME_MARK, applied]))
        self._write(b"".join(frames))
        segment = self.segments[-1]
        segment.last_mark = applied
        if segment.bytes >= self.segment_bytes or (
            segment.first_stamp and segment.last_stamp - segment.first_stamp >= self.segment_us
        ):
            self._file.close()
            self.segments.append(_Segment(segment.seq + 1))
            self._file = open(self._path(segment.seq + 1), "ab")  # noqa: SIM115

    def _reading(self) -> tuple[Path, list[tuple[Path, int]]]:
        """Count a reader in (the caller counts it out with `_done`): the base directory and
        every segment with its size now."""
        with self._lock:
            self._readers += 1
            files = [(self._path(s.seq), s.bytes) for s in self.segments]
            return self.directory / self.base_name, files

    def _done(self) -> None:
        with self._lock:
            self._readers -= 1

    def rebuild(self, time_us: int, workdir: Path) -> tuple[Database, Callable[[], None]]:
        """A scratch database holding this partition as of `time_us` (in a worker thread):
        the base snapshot, then every archived record committed at or before `time_us`, in
        the order applied. Returns it and the function that removes it."""
        base, files = self._reading()
        try:
            if self.base_time_us is None or time_us < self.base_time_us:
                raise RuntimeError("the instant is before this partition's archive window")
            scratch = Path(tempfile.mkdtemp(prefix="pitr-", dir=workdir))
            shutil.copytree(base, scratch / "store")
            store = LmdbStore(scratch / "store")
            database = Database(store)
            _replay(database, files, time_us)
        finally:
            self._done()

        def remove() -> None:
            store.close()
            shutil.rmtree(scratch, ignore_errors=True)

        return database, remove

    async def trim(self, cutoff_us: int, workdir: Path, run: Callable[..., Awaitable[Any]]) -> bool:
        """Roll the base forward over the closed segments whose records were all committed
        at or before `cutoff_us`, once the window starts a segment's span before it; the
        window then starts at the latest of those commit times. The work runs in a worker
        thread (`run`); the replacement is one atomic
        replace of base.json, made only if no rebuild read the archive meanwhile and no new
        window started. True if the archive was trimmed."""
        if self.base_time_us is None or self.base_time_us >= cutoff_us - self.segment_us:
            # Within a segment's span of the cutoff: a trim copies the whole base, so it
            # waits until it can drop about a segment's span of records.
            return False
        consumed: list[_Segment] = []
        for segment in self.segments[:-1]:
            if segment.last_stamp > cutoff_us:
                break
            consumed.append(segment)
        if not consumed:
            return False
        generation = self.generation
        name = f"{BASE_DIR}-{consumed[-1].seq + 1:08d}"
        target = self.directory / name
        await run(self._roll, [(self._path(s.seq), s.bytes) for s in consumed], target, workdir)
        lsn = self.base_lsn
        for segment in consumed:
            lsn = segment.last_mark if segment.last_mark is not None else lsn
        time_us = max([self.base_time_us] + [s.last_stamp for s in consumed])
        old = self.directory / self.base_name
        if self.generation != generation or not self._lock.acquire(blocking=False):
            await run(shutil.rmtree, target, True)
            return False
        try:
            if self._readers:
                committed = False
            else:
                first = consumed[-1].seq + 1
                self._write_base(
                    {"lsn": lsn, "time_us": time_us, "dir": name, "first_segment": first}
                )
                self.base_name, self.base_lsn, self.base_time_us = name, lsn, time_us
                self.segments = self.segments[len(consumed) :]
                self.generation += 1
                committed = True
        finally:
            self._lock.release()
        if not committed:
            await run(shutil.rmtree, target, True)
            return False

        def remove() -> None:
            shutil.rmtree(old, ignore_errors=True)
            for segment in consumed:
                self._path(segment.seq).unlink(missing_ok=True)

        await run(remove)
        log.info("partition archive %s: trimmed to a window from %d", self.directory, time_us)
        return True

    def _roll(self, files: list[tuple[Path, int]], target: Path, workdir: Path) -> None:
        """(In a worker thread) the base with every record of `files` applied, as a compact
        copy in `target`."""
        base, _ = self._reading()
        try:
            scratch = Path(tempfile.mkdtemp(prefix="trim-", dir=workdir))
            try:
                shutil.copytree(base, scratch / "store")
                store = LmdbStore(scratch / "store")
                try:
                    _replay(Database(store), files, None)
                    shutil.rmtree(target, ignore_errors=True)
                    store.snapshot(target)
                    # On disk before base.json names it: a power loss after the replace
                    # must not leave a base that is only partly written.
                    for path in target.iterdir():
                        with open(path, "rb+") as stream:
                            os.fsync(stream.fileno())
                finally:
                    store.close()
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        finally:
            self._done()


def _replay(database: Database, files: list[tuple[Path, int]], time_us: int | None) -> None:
    """Apply the records of archive segments (each up to its size) committed at or before
    `time_us` (every one if None), in order, to a scratch database."""
    store = database.store
    lsn = store.applied_lsn()
    batch: list[tuple[int, bytes]] = []
    for path, size in files:
        for frame in _frames(path, size):
            if frame[0] != FRAME_RECORD or (time_us is not None and frame[1] > time_us):
                continue
            lsn += 2  # appliers may record lsn - 1 first: keep the positions apart
            batch.append((lsn, frame[2]))
            if len(batch) >= REPLAY_BATCH_RECORDS:
                with store.batch():  # type: ignore[attr-defined]
                    database.apply(batch)
                batch = []
    if batch:
        with store.batch():  # type: ignore[attr-defined]
            database.apply(batch)


def _frames(path: Path, size: int | None = None) -> Iterator[Any]:
    """The whole frames of an archive file (its first `size` bytes), read a chunk at a time;
    a torn last frame is left out."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after the last frame
    except FileNotFoundError:
        return
    with stream:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=FRAME_READ_BUFFER_BYTES_MAX)
        remaining = size
        while remaining is None or remaining > 0:
            want = READ_CHUNK_BYTES if remaining is None else min(READ_CHUNK_BYTES, remaining)
            chunk = stream.read(want)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            unpacker.feed(chunk)
            try:
                yield from unpacker
            except (ValueError, msgpack.UnpackException):
                return  # a damaged frame: what came before it stands


def open_archive(node: ClusterNode, group_id: str, group_dir: Path, store: Any, apply: Any) -> Any:
    """Give a partition replica's database its timed codec and archive, before its log opens
    (the archive must see every record the replica applies). Returns the archive (None for
    the metadata group, or with the archive off), which the node hands its group log."""
    if group_id == META_GROUP or os.environ.get(ARCHIVE_SWITCH_ENV, "on") == "off":
        return None
    database = getattr(apply, "__self__", None)
    if not isinstance(database, Database) or not isinstance(store, LmdbStore):
        return None
    archive = PartitionArchive(group_dir / "pitr", store)
    archive.open()
    database.record_codec = TimedCodec(archive)
    archives: dict[str, PartitionArchive] = node.__dict__.setdefault("_pitr_archives", {})
    archives[group_id] = archive
    return archive


# --- the service ------------------------------------------------------------------------------


def _items_of(database: Database, table_id: str) -> tuple[list[Any], int]:
    """Every (item, size) of a table in a (scratch or copied) store, and their bytes."""
    start, end = hash_range_bounds(table_id, 0, 0, HASH_SPACE)
    items: list[Any] = []
    cursor: bytes | None = start
    while cursor is not None:
        chunk, cursor = _read_items(database.store, cursor, end)
        items.extend(chunk)
    return items, sum(size for _, size in items)


def _partition_of(replica: Any) -> int:
    group_id: str = replica.group_id
    assert group_id.startswith("p"), group_id
    return int(group_id[1:])


def route_items(ring: Any, table: Table, items: list[Any]) -> dict[int, list[Any]]:
    """(item, size) pairs by the partition of `ring` that owns each item's partition key, in
    their order. The source of a restore may have been cut into other hash ranges (a single
    node's parts, a cluster with another number of partitions): each item is placed by the
    target's ring, never by the part it came in."""
    by_partition: dict[int, list[Any]] = {}
    for item, size in items:
        partition = keyroute.key_partition(ring, table, item)
        if partition is None:
            raise RuntimeError(
                f"an item of the source has no valid partition key {table.hash_key.name!r}"
            )
        by_partition.setdefault(partition, []).append((item, size))
    return by_partition


def _as_is_fault(table: Table) -> bool:
    prefix = os.environ.get(RESTORE_AS_IS_FAULT_ENV, "")
    return prefix != "" and table.name.startswith(prefix)


def _active_first_fault(table: Table) -> bool:
    prefix = os.environ.get(ACTIVE_FIRST_FAULT_ENV, "")
    return prefix != "" and table.name.startswith(prefix)


def _active_late_fault(table: Table) -> bool:
    prefix = os.environ.get(ACTIVE_LATE_FAULT_ENV, "")
    return prefix != "" and table.name.startswith(prefix)


def serves(replica: Any, table_id: str) -> bool:
    """Whether a replica answers item requests on a table (a log replica, which keeps no
    store and answers no reads, counts as serving it)."""
    if replica.log.replica.log_only:
        return True
    table = catalog.get_table_by_id(replica.database, table_id)
    return table is not None and table.status in SERVING_STATUSES


class ClusterBackupService:
    def __init__(self, node: ClusterNode, store: PrefixedStore, workdir: Path) -> None:
        self.node = node
        self.store = store
        self.workdir = workdir
        self.threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="keeldb-pitr")
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.window: tuple[float, float] | None = None
        self.failures: dict[str, str] = {}
        self._watch: asyncio.Task[None] | None = None
        self._trim: asyncio.Task[None] | None = None
        self.retention_seconds = setting(
            "KEELDB_ARCHIVE_RETENTION_SECONDS", ARCHIVE_RETENTION_SECONDS
        )
        self.trim_seconds = setting(TRIM_CHECK_ENV, TRIM_CHECK_SECONDS)
        self._resumed_leading = False
        self._closing = False

    @property
    def archives(self) -> dict[str, PartitionArchive]:
        found: dict[str, PartitionArchive] = self.node.__dict__.get("_pitr_archives", {})
        return found

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    def _spawn(self, key: str, coroutine: Awaitable[None]) -> None:
        if key in self.tasks:
            coroutine.close()  # type: ignore[attr-defined]
            return
        task = asyncio.get_running_loop().create_task(coroutine, name=f"keeldb-backup-{key}")  # type: ignore[arg-type]
        self.tasks[key] = task
        task.add_done_callback(lambda _: self.tasks.pop(key, None))

    async def close(self) -> None:
        self._closing = True
        for loop_task in (self._watch, self._trim):
            if loop_task is not None:
                loop_task.cancel()
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            try:
                await task
            except asyncio.CancelledError:
                continue
            except Exception:
                log.exception("a backup job failed while the node stopped")
        self.threads.shutdown(wait=True)

    # --- calls to group leaders --------------------------------------------------------------

    async def leader_call(
        self, group_id: str, payload: dict[str, Any], timeout: float, *, retry_unknown: bool
    ) -> Any:
        """The answer of `group_id`'s leader to a "kv.backup" step, following redirects.
        A step whose outcome is unknown (the call timed out or broke after it was sent) is
        asked again only if `retry_unknown` (steps that may run twice)."""
        from keeldb.net.transport import CallTimeout, PeerUnavailable, RemoteError, TransportError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        placement = self.node.placements[group_id]
        router = self.node.router
        leaders = router.leaders if router is not None else {}
        node_id = leaders.get(group_id, placement.preferred_leader)
        position = 0
        while loop.time() < deadline:
            try:
                answer = await self.node.call(
                    node_id, CHANNEL_BACKUP, {"g": group_id, **payload}, deadline - loop.time()
                )
            except RemoteError:
                raise InternalServerError("Internal server error") from None
            except (CallTimeout, PeerUnavailable, TransportError) as error:
                if isinstance(error, CallTimeout) and not retry_unknown:
                    raise InternalServerError("Internal server error") from None
                answer = [UNAVAILABLE, repr(error)]
            kind = answer[0]
            if kind == OK:
                leaders[group_id] = node_id
                return answer[1]
            if kind == ERROR:
                raise_error(answer)
            hint = answer[1] if kind == REDIRECT else None
            if isinstance(hint, int) and hint in placement.node_ids and hint != node_id:
                node_id = hint
                continue
            position += 1
            node_id = placement.node_ids[position % len(placement.node_ids)]
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
        raise InternalServerError("Internal server error")

    async def partition_step(self, partition: int, payload: dict[str, Any]) -> Any:
        return await self.leader_call(
            partition_group(partition), payload, STEP_SECONDS_MAX, retry_unknown=True
        )

    def partitions(self) -> range:
        return range(len(self.node.ring))

    # --- the router's side ---------------------------------------------------------------------

    async def route(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run a backup operation on the metadata group's leader."""
        result: dict[str, Any] = await self.leader_call(
            META_GROUP,
            {"do": "op", "op": op, "body": body},
            OPERATION_SECONDS_MAX,
            retry_unknown=op.startswith(("Describe", "List")),
        )
        return result

    # --- the channel -------------------------------------------------------------------------

    async def _leading(self, replica: Any) -> list[Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEASE_WAIT_SECONDS_MAX
        while True:
            if not replica.log.is_leader:
                return [REDIRECT, replica.leader()]
            if replica.log.read_lease():
                return None
            if loop.time() >= deadline:
                return [UNAVAILABLE, "the leader has no lease yet"]
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def on_step(self, sender: str, payload: Any) -> list[Any]:
        del sender
        from keeldb.cluster.group import GroupError

        storage = self.node.storage
        replica = None if storage is None else storage.replicas.get(payload["g"])
        if replica is None:
            return [REDIRECT, None]
        step = payload["do"]
        if step == "serving":  # asked of every replica, the leader's or not
            return [OK, serves(replica, payload["table_id"])]
        refused = await self._leading(replica)
        if refused is not None:
            return refused
        try:
            if step == "op":
                return [OK, await self._operation(replica, payload["op"], payload["body"])]
            result = await self._partition_step(replica, step, payload)
        except ClientError as error:
            return error_answer(error)
        except GroupError:
            return [REDIRECT, replica.leader()]
        except Exception as error:
            # Answered, not raised: the caller must not take a step that fails for good (a
            # damaged part, an instant outside the window) for an unreachable leader.
            log.exception("backup step %s on %s failed", step, replica.group_id)
            detail = "Internal server error" if step == "op" else f"{step} failed: {error}"
            return error_answer(InternalServerError(detail))
        return [OK, result]

    async def _operation(self, replica: Any, op: str, body: dict[str, Any]) -> Any:
        db = replica.database
        hooks = db.state.get(ops.HOOKS_KEY)
        if not isinstance(hooks, ClusterBackupHooks):
            hooks = db.state[ops.HOOKS_KEY] = ClusterBackupHooks(self, db)
        if op in WINDOW_READING:
            self.window = await self.restorable_window()
        answer = await OPERATIONS[op](db, body)
        if op in CATALOG_CHANGING:
            await self.sync_partitions()
        return answer

    async def sync_partitions(self) -> None:
        storage = self.node.storage
        assert storage is not None
        try:
            await asyncio.wait_for(storage.sync_partitions(), SYNC_SECONDS_MAX)
        except TimeoutError:
            log.warning("catalog sync of some partitions is late; it will be retried")

    async def restorable_window(self) -> tuple[float, float] | None:
        """The instants every partition's archive can restore, or None."""
        try:
            earliest = await asyncio.gather(
                *(self.partition_step(p, {"do": "window"}) for p in self.partitions())
            )
        except (ClientError, InternalServerError):
            return None
        if any(e is None for e in earliest):
            return None
        return max(earliest) / 1e6, time.time()

    async def _partition_step(self, replica: Any, step: str, payload: dict[str, Any]) -> Any:
        archive = self.archives.get(replica.group_id)
        if archive is not None:
            archive.check()
        if step == "window":
            return None if archive is None else archive.base_time_us
        if step == "copy":
            return await self._copy(replica, payload)
        if step == "part_status":
            return payload["key"] in self.tasks
        if step == "knows":
            return catalog.get_table_by_id(replica.database, payload["table_id"]) is not None
        if step == "serve":
            return await self._serve(replica, payload["table_id"])
        if step == "dump_at":
            return await self._dump_at(archive, payload)
        if step == "load":
            return await self._load_part(replica, archive, payload)
        if step == "export_part":
            return await self._export_part(archive, payload)
        raise AssertionError(f"unknown backup step {step!r}")

    async def _serve(self, replica: Any, table_id: str) -> None:
        """Make a loaded table ACTIVE in this partition's own catalog (its "load_done" record
        in this group), before the metadata group does; a catalog sync that still says
        CREATING leaves it so (`catalog_sync`)."""
        table = catalog.get_table_by_id(replica.database, table_id)
        if table is None:
            raise RuntimeError("the table being loaded is not in this partition's catalog")
        if table.status == STATUS_CREATING:
            await ops.finish_load(replica.database, table)

    async def await_serving(self, table_id: str, seconds: float) -> list[str]:
        """Ask every replica of every partition, until it serves the table or `seconds`
        pass; the replicas still not serving then (GROUP/NODE), for the log."""
        from keeldb.net.transport import TransportError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        waiting = {
            (partition_group(p), node_id)
            for p in self.partitions()
            for node_id in self.node.placements[partition_group(p)].node_ids
        }
        while waiting:

            async def ask(group_id: str, node_id: int) -> bool:
                payload = {"g": group_id, "do": "serving", "table_id": table_id}
                try:
                    answer = await self.node.call(
                        node_id, CHANNEL_BACKUP, payload, SERVE_CALL_SECONDS
                    )
                except TransportError:
                    return True  # unreachable: it serves nobody until it catches up
                # A node without a replica of the group (it moved) answers a redirect.
                return answer[0] != OK or bool(answer[1])

            asked = sorted(waiting)
            answers = await asyncio.gather(*(ask(g, n) for g, n in asked))
            waiting = {member for member, done in zip(asked, answers, strict=True) if not done}
            if not waiting or loop.time() >= deadline:
                break
            await asyncio.sleep(SERVE_POLL_SECONDS)
        return [f"{g}/{n}" for g, n in sorted(waiting)]

    def _rebuilt(self, archive: PartitionArchive | None, time_us: int) -> Any:
        if archive is None:
            raise RuntimeError("this replica keeps no archive")
        return archive.rebuild(time_us, self.workdir)

    async def _copy(self, replica: Any, payload: dict[str, Any]) -> None:
        """Copy the partition's store now (before answering), and dump the table's items
        from the copy into the backup part in the background."""
        copy_dir = Path(tempfile.mkdtemp(prefix="backup-", dir=self.workdir))
        await self._run(replica.store.snapshot, copy_dir / "store")

        async def dump() -> None:
            try:

                def work() -> None:
                    copy = LmdbStore(copy_dir / "store")
                    try:
                        items, size = _items_of(Database(copy), payload["table_id"])
                    finally:
                        copy.close()
                    self._write_part(payload["key"], items, size)

                await self._run(work)
            except Exception:
                log.exception("backup part %s failed", payload["key"])
            finally:
                shutil.rmtree(copy_dir, ignore_errors=True)

        self._spawn(payload["key"], dump())

    def _write_part(self, key: str, items: list[Any], size: int) -> dict[str, Any]:
        data = msgpack.packb([[item, s] for item, s in items], use_bin_type=True)
        sha = put_verified(self.store, key, data)
        part = {"key": key, "sha256": sha, "bytes": len(data), "items": len(items), "size": size}
        put_verified(self.store, key + ".json", _dumps(part))
        return part

    async def _dump_at(self, archive: PartitionArchive | None, payload: dict[str, Any]) -> Any:
        def work() -> dict[str, Any]:
            database, remove = self._rebuilt(archive, payload["time_us"])
            try:
                items, size = _items_of(database, payload["table_id"])
            finally:
                remove()
            return self._write_part(payload["key"], items, size)

        return await self._run(work)

    async def _load_part(
        self, replica: Any, archive: PartitionArchive | None, payload: dict[str, Any]
    ) -> dict[str, int]:
        """Propose "load_items" records of a table being loaded, on this partition."""
        db = replica.database
        table = catalog.get_table_by_id(db, payload["table_id"])
        if table is None:
            raise RuntimeError("the table being loaded is not in this partition's catalog")
        if "pitr" in payload:
            source = payload["pitr"]

            def read_pitr() -> list[Any]:
                database, remove = self._rebuilt(archive, source["time_us"])
                try:
                    return _items_of(database, source["table_id"])[0]
                finally:
                    remove()

            items = await self._run(read_pitr)
        elif "backup" in payload:
            part = payload["backup"]
            store = self.store
            if payload.get("prefix", self.store.prefix) != self.store.prefix:
                store = PrefixedStore(self.store.base, payload["prefix"])  # another server's
            data = await self._run(get_verified, store, part["key"], part["sha256"])
            try:
                items = [(item, size) for item, size in msgpack.unpackb(data, raw=False)]
            except (ValueError, TypeError, msgpack.UnpackException) as error:
                # A single node's part sealed with its table's data key (encryption at rest):
                # a cluster holds no keyring to open it.
                raise RuntimeError(
                    f"backup part {part['key']} cannot be read here (sealed by a node that "
                    f"encrypts at rest, or damaged): {error}"
                ) from None
        else:
            items = [(item, size) for item, size in payload["items"]]
        here = _partition_of(replica)
        if payload.get("as_is"):
            routed = {here: items}
        else:
            routed = route_items(self.node.ring, table, items)
        forwarded = [
            self.partition_step(
                partition, {"do": "load", "table_id": table.table_id, "items": batch}
            )
            for partition, share in routed.items()
            if partition != here
            for batch in ops.load_batches(share)
        ]
        for batch in ops.load_batches(routed.get(here, [])):
            await ops.load_items(db, table, batch)
        # The part's step answers once every item is in its partition: the table becomes
        # ACTIVE only after every step answered.
        await asyncio.gather(*forwarded)
        return {"items": len(items), "bytes": sum(size for _, size in items)}

    async def _export_part(self, archive: PartitionArchive | None, payload: dict[str, Any]) -> Any:
        def work() -> list[Any]:
            database, remove = self._rebuilt(archive, payload["time_us"])
            try:
                items, size = _items_of(database, payload["table_id"])
            finally:
                remove()
            data = export_format.encode_data_file([item for item, _ in items])
            bucket = self.store.bucket(payload["bucket"])
            put_verified(bucket, payload["key"], data)
            return [export_format.data_file_entry(payload["key"], data, len(items)), size]

        return await self._run(work)

    # --- trimming the partition archives -------------------------------------------------------

    async def trim_archives(self) -> int:
        """Trim every partition archive of this node to the retention; how many were."""
        cutoff_us = _now_us() - int(self.retention_seconds * 1_000_000)
        trimmed = 0
        for group_id, archive in sorted(self.archives.items()):
            try:
                trimmed += await archive.trim(cutoff_us, self.workdir, self._run)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - an archive is trimmed at the next check
                log.warning("could not trim the archive of %s: %r", group_id, error)
        return trimmed

    async def trim_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.trim_seconds)
            await self.trim_archives()

    # --- resuming jobs -------------------------------------------------------------------------

    async def watch_leadership(self) -> None:
        """Resume the jobs a stop interrupted whenever this node becomes the metadata leader."""
        while not self._closing:
            await asyncio.sleep(RESUME_CHECK_SECONDS)
            storage = self.node.storage
            meta = None if storage is None else storage.replicas.get(META_GROUP)
            leading = meta is not None and meta.log.is_leader and meta.log.read_lease()
            if not leading:
                self._resumed_leading = False
                continue
            if self._resumed_leading:
                continue
            try:
                hooks = meta.database.state.get(ops.HOOKS_KEY)
                if not isinstance(hooks, ClusterBackupHooks):
                    hooks = meta.database.state[ops.HOOKS_KEY] = ClusterBackupHooks(
                        self, meta.database
                    )
                await hooks.resume()
                self._resumed_leading = True
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the store or a partition may come back
                log.warning("cannot resume backup jobs yet, retrying: %r", error)


class ClusterBackupHooks:
    """`keeldb.engine.backups.BackupHooks` of the metadata group's database: the operations
    run there, and their work on items runs on the partition leaders."""

    def __init__(self, service: ClusterBackupService, db: Database) -> None:
        self.service = service
        self.db = db
        self.store = service.store

    def restorable_window(self) -> tuple[float, float] | None:
        return self.service.window

    async def _read(self, key: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = json.loads(self.store.get(key))
            except ObjectMissingError:
                return None
            return found

        found: dict[str, Any] | None = await self.service._run(read)
        return found

    async def _write(self, key: str, value: dict[str, Any]) -> None:
        await self.service._run(put_verified, self.store, key, _dumps(value))

    async def _list(self, prefix: str, suffix: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            return [
                json.loads(self.store.get(k))
                for k in self.store.list(prefix)
                if k.endswith(suffix) and not k.endswith(".msgpack.json")
            ]

        found: list[dict[str, Any]] = await self.service._run(read)
        return found

    async def resume(self) -> None:
        for table in ops.loading_tables(self.db):
            self.start_load(table)
        for backup in await self.list_backups():
            if backup["BackupStatus"] == "CREATING":
                self.service._spawn(backup["BackupArn"], self._finish_backup(backup))
        for export in await self.list_exports():
            if export["ExportStatus"] == "IN_PROGRESS":
                self.service._spawn(export["ExportArn"], self._export(export))

    # --- loading tables ----------------------------------------------------------------------

    def start_load(self, table: Table) -> None:
        self.service._spawn(table.table_id, self._load(table))

    async def _load(self, table: Table) -> None:
        from keeldb.cluster.group import GroupError

        load = table.extra[ops.LOAD_KEY]
        service = self.service
        started = time.monotonic()
        try:
            await self._await_catalog(table)  # every partition knows the new table first
            counts: list[Any]
            if load["source"] == "pitr":
                source = {"table_id": load["table_id"], "time_us": load["time_us"]}
                counts = await asyncio.gather(
                    *(
                        service.partition_step(
                            p, {"do": "load", "table_id": table.table_id, "pitr": source}
                        )
                        for p in service.partitions()
                    )
                )
            elif load["source"] == "backup":
                counts = await self._load_backup(table, load)
            else:
                assert load["source"] == "import", load
                counts = await self._load_import(table, load)
            if not _active_first_fault(table):
                await self._serve_everywhere(table)
            if _active_late_fault(table):
                await asyncio.sleep(ACTIVE_LATE_SECONDS)
            await ops.finish_load(self.db, table)
            await service.sync_partitions()
            if load["source"] == "import":
                await self._finish_import(load["import_id"], counts)
            log.info(
                "table %s loaded: %d items in %.2f s",
                table.name,
                sum(c["items"] for c in counts),
                time.monotonic() - started,
            )
        except asyncio.CancelledError:
            raise
        except GroupError as error:
            # This node no longer leads the metadata group: its new leader resumes the load.
            log.warning("loading table %s stopped here: %s", table.name, error)
        except Exception as error:  # noqa: BLE001 - a failed load is reported, not raised
            log.error("loading table %s failed: %s", table.name, error)
            service.failures[table.table_id] = str(error)
            if load["source"] == "import":
                await self._fail_import(load["import_id"], error)
            try:
                await ops.abandon_load(self.db, table)
                await service.sync_partitions()
            except Exception:
                log.exception("could not remove table %s after its load failed", table.name)

    async def _serve_everywhere(self, table: Table) -> None:
        """Every partition serves the loaded table before the metadata group says it is
        ACTIVE: each partition's leader makes it ACTIVE in its own group, and every replica
        is asked until it has applied that (bounded), so that a client who reads ACTIVE
        through any router and at once reads the table, from any replica, finds it."""
        service = self.service
        await asyncio.gather(
            *(
                service.partition_step(p, {"do": "serve", "table_id": table.table_id})
                for p in service.partitions()
            )
        )
        late = await service.await_serving(table.table_id, SERVE_WAIT_SECONDS_MAX)
        if late:
            log.warning("table %s is ACTIVE before replicas %s serve it", table.name, late)

    async def _await_catalog(self, table: Table) -> None:
        """Sync the catalog until every partition's leader knows the table being loaded: a
        sync may leave out a partition whose group is still electing (a cluster just started),
        and a load step there would fail the restore."""
        service = self.service
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATALOG_WAIT_SECONDS_MAX
        while True:
            await service.sync_partitions()
            known = await asyncio.gather(
                *(
                    service.partition_step(p, {"do": "knows", "table_id": table.table_id})
                    for p in service.partitions()
                )
            )
            if all(known):
                return
            if loop.time() > deadline:
                raise RuntimeError(f"partitions {known} did not learn table {table.name}")
            await asyncio.sleep(CATALOG_POLL_SECONDS)

    async def _load_backup(self, table: Table, load: dict[str, Any]) -> list[Any]:
        found = await self._find_backup(load["backup_arn"])
        if found is None or found[0]["BackupStatus"] != "AVAILABLE":
            raise RuntimeError(f"backup {load['backup_arn']} is not available")
        backup, prefix = found
        parts = backup["parts"]
        partitions = len(self.service.partitions())
        # Part N of a backup of this cluster holds partition N's hash range: it loads through
        # partition N's leader with no item crossing the network. A backup of another shape
        # (a single node's parts, another cluster's partitions) is re-partitioned as it
        # loads: part N is read by partition N mod P's leader, which sends each item to the
        # partition of this ring that owns it (route_items).
        as_is = _as_is_fault(table)
        counts: list[Any] = await asyncio.gather(
            *(
                self.service.partition_step(
                    number % partitions,
                    {
                        "do": "load",
                        "table_id": table.table_id,
                        "backup": part,
                        "prefix": prefix,
                        "as_is": as_is,
                    },
                )
                for number, part in enumerate(parts)
            )
        )
        return counts

    async def _load_import(self, table: Table, load: dict[str, Any]) -> list[Any]:
        service = self.service
        job = await self._read(f"{IMPORTS_PREFIX}{load['import_id']}.json")
        if job is None:
            raise RuntimeError(f"import {load['import_id']} has no description")
        source = job["S3BucketSource"]
        bucket = self.store.bucket(source["S3Bucket"])
        prefix = source.get("S3KeyPrefix", "")
        keys = [k for k in await service._run(bucket.list, prefix) if export_format.is_data_file(k)]
        compression = job.get("InputCompressionType", "NONE")
        totals = {"processed": 0, "errors": 0, "bytes": 0, "items": 0}
        ring = service.node.ring
        for key in keys:
            data = await service._run(bucket.get, key)
            totals["bytes"] += len(data)
            by_partition: dict[int, list[Any]] = {}
            for entry in export_format.read_data_file(data, compression):
                totals["processed"] += 1
                checked = _import_item(table, entry)
                partition = (
                    None if checked is None else keyroute.key_partition(ring, table, checked[0])
                )
                if checked is None or partition is None:
                    totals["errors"] += 1
                    continue
                by_partition.setdefault(partition, []).append([checked[0], checked[1]])

            async def send(partition: int, items: list[Any]) -> None:
                for start in range(0, len(items), IMPORT_STEP_ITEMS_MAX):
                    chunk = items[start : start + IMPORT_STEP_ITEMS_MAX]
                    await service.partition_step(
                        partition, {"do": "load", "table_id": table.table_id, "items": chunk}
                    )
                    totals["items"] += len(chunk)

            await asyncio.gather(*(send(p, items) for p, items in by_partition.items()))
        return [totals]

    async def _finish_import(self, import_id: str, counts: list[Any]) -> None:
        (totals,) = counts
        key = f"{IMPORTS_PREFIX}{import_id}.json"
        job = await self._read(key)
        if job is None:
            return
        job.update(
            ImportStatus="COMPLETED",
            EndTime=catalog.current_time(self.db),
            ProcessedItemCount=totals["processed"],
            ImportedItemCount=totals["items"],
            ErrorCount=totals["errors"],
            ProcessedSizeBytes=totals["bytes"],
        )
        await self._write(key, job)

    async def _fail_import(self, import_id: str, error: Exception) -> None:
        key = f"{IMPORTS_PREFIX}{import_id}.json"
        job = await self._read(key)
        if job is None:
            return
        job.update(
            ImportStatus="FAILED",
            EndTime=catalog.current_time(self.db),
            FailureCode="ImportFailed",
            FailureMessage=str(error),
        )
        await self._write(key, job)

    # --- on-demand backups ---------------------------------------------------------------------

    def _backup_key(self, arn: str) -> str:
        return f"{BACKUPS_PREFIX}{_id_of(arn)}/backup.json"

    def _part_key(self, arn: str, partition: int) -> str:
        return f"{BACKUPS_PREFIX}{_id_of(arn)}/part-{partition:04d}.msgpack"

    async def create_backup(self, table: Table, name: str, arn: str, now: float) -> dict[str, Any]:
        backup: dict[str, Any] = {
            "BackupArn": arn,
            "BackupName": name,
            "BackupStatus": "CREATING",
            "BackupType": "USER",
            "BackupCreationDateTime": now,
            "BackupSizeBytes": 0,
            "ItemCount": 0,
            "TableSizeBytes": 0,
            "table": table.to_record(),
            "parts": [],
        }
        await self._write(self._backup_key(arn), backup)
        # Every partition leader copies its store before the answer, so the backup holds
        # every write acknowledged before the request and none made after the answer.
        try:
            await asyncio.gather(
                *(
                    self.service.partition_step(
                        p,
                        {"do": "copy", "table_id": table.table_id, "key": self._part_key(arn, p)},
                    )
                    for p in self.service.partitions()
                )
            )
        except Exception:
            backup["BackupStatus"] = "DELETED"
            await self._write(self._backup_key(arn), backup)
            raise
        self.service._spawn(arn, self._finish_backup(backup))
        return ops.backup_details(backup)

    async def _finish_backup(self, backup: dict[str, Any]) -> None:
        """Wait for every partition's part; a part a stop lost is dumped again from the
        partition's archive as of the backup's creation time."""
        arn = backup["BackupArn"]
        service = self.service
        table_id = backup["table"]["table_id"]
        loop = asyncio.get_running_loop()

        async def part(partition: int) -> dict[str, Any]:
            key = self._part_key(arn, partition)
            deadline = loop.time() + PART_WAIT_SECONDS_MAX
            asked = loop.time()
            while loop.time() < deadline:
                found = await self._read(key + ".json")
                if found is not None:
                    return found
                if loop.time() - asked >= PART_STATUS_SECONDS:
                    # A leader that is not dumping the part (it restarted, or the leadership
                    # moved) never will: the part is dumped again from the archive.
                    asked = loop.time()
                    dumping = await service.partition_step(
                        partition, {"do": "part_status", "key": key}
                    )
                    if not dumping and await self._read(key + ".json") is None:
                        break
                await asyncio.sleep(PART_POLL_SECONDS)
            time_us = int(backup["BackupCreationDateTime"] * 1_000_000)
            # Under a key of its own: a slow first dump may still finish and write its own.
            again = key.replace(".msgpack", "-again.msgpack")
            found = await service.partition_step(
                partition, {"do": "dump_at", "table_id": table_id, "key": again, "time_us": time_us}
            )
            assert isinstance(found, dict)
            return found

        try:
            parts = await asyncio.gather(*(part(p) for p in service.partitions()))
            backup["parts"] = list(parts)
            backup["ItemCount"] = sum(p["items"] for p in parts)
            backup["TableSizeBytes"] = sum(p["size"] for p in parts)
            backup["BackupSizeBytes"] = sum(p["bytes"] for p in parts)
            backup["BackupStatus"] = "AVAILABLE"
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - reported through the backup's status
            log.error("backup %s failed: %s", arn, error)
            service.failures[arn] = str(error)
            backup["BackupStatus"] = "DELETED"
        await self._write(self._backup_key(arn), backup)

    async def _find_backup(self, arn: str) -> tuple[dict[str, Any], str] | None:
        """A backup and the prefix of the store it is kept under: this cluster's own, else
        (found by its ARN) one of another server sharing the backup store, a single node or
        another cluster, so that it can be restored here."""
        found = await self._read(self._backup_key(arn))
        if found is not None and found["BackupArn"] == arn:
            return found, self.store.prefix
        suffix = "/" + self._backup_key(arn)

        def search() -> tuple[dict[str, Any], str] | None:
            base = self.store.base
            for owners in FOREIGN_PREFIXES:
                for key in base.list(owners):
                    if not key.endswith(suffix) or key.startswith(self.store.prefix):
                        continue
                    try:
                        other: dict[str, Any] = json.loads(base.get(key))
                    except ObjectMissingError:
                        continue  # deleted meanwhile
                    if other.get("BackupArn") == arn:
                        return other, key[: -len(suffix) + 1]
            return None

        result: tuple[dict[str, Any], str] | None = await self.service._run(search)
        return result

    async def backup(self, arn: str) -> dict[str, Any] | None:
        found = await self._find_backup(arn)
        return None if found is None else found[0]

    async def list_backups(self) -> list[dict[str, Any]]:
        return await self._list(BACKUPS_PREFIX, "/backup.json")

    async def delete_backup(self, arn: str) -> dict[str, Any]:
        found = await self._find_backup(arn)
        assert found is not None
        backup, owner = found
        store = PrefixedStore(self.store.base, owner)

        def delete() -> None:
            prefix = self._backup_key(arn).rsplit("/", 1)[0] + "/"
            for key in store.list(prefix):
                if key != self._backup_key(arn):
                    store.delete(key)
            store.delete(self._backup_key(arn))

        await self.service._run(delete)
        return dict(backup, BackupStatus="DELETED")

    # --- exports -------------------------------------------------------------------------------

    async def start_export(
        self, table: Table, request: dict[str, Any], arn: str, now: float
    ) -> dict[str, Any]:
        description: dict[str, Any] = {
            "ExportArn": arn,
            "ExportStatus": "IN_PROGRESS",
            "StartTime": now,
            "TableArn": table.arn,
            "TableId": table.table_id,
            "ExportTime": request["ExportTime"],
            "S3Bucket": request["S3Bucket"],
            "S3SseAlgorithm": request.get("S3SseAlgorithm", "AES256"),
            "ExportFormat": "DYNAMODB_JSON",
            "ExportType": "FULL_EXPORT",
        }
        for member in ("ClientToken", "S3Prefix", "S3BucketOwner", "S3SseKmsKeyId"):
            if request.get(member) is not None:
                description[member] = request[member]
        await self._write(f"{EXPORTS_PREFIX}{_id_of(arn)}.json", description)
        self.service._spawn(arn, self._export(description))
        return description

    async def _export(self, description: dict[str, Any]) -> None:
        arn = description["ExportArn"]
        export_id = _id_of(arn)
        service = self.service
        try:
            root = export_format.export_root(description.get("S3Prefix"), export_id)
            time_us = int(description["ExportTime"] * 1_000_000)
            results = await asyncio.gather(
                *(
                    service.partition_step(
                        p,
                        {
                            "do": "export_part",
                            "table_id": description["TableId"],
                            "time_us": time_us,
                            "bucket": description["S3Bucket"],
                            "key": f"{root}data/{uuid.uuid4().hex[:26]}.json.gz",
                        },
                    )
                    for p in service.partitions()
                )
            )
            finished = export_format.finish_export(
                description,
                root=root,
                results=[(entry, size) for entry, size in results],
                end_time=catalog.current_time(self.db),
                iso_time=ops.iso_time,
            )
            bucket = self.store.bucket(description["S3Bucket"])

            def finish() -> None:
                for key, data in finished.objects:
                    put_verified(bucket, key, data)

            await service._run(finish)
            description.update(finished.completed)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - reported through the export's status
            log.error("export %s failed: %s", arn, error)
            description.update(
                ExportStatus="FAILED",
                EndTime=catalog.current_time(self.db),
                FailureCode="ExportFailed",
                FailureMessage=str(error),
            )
        await self._write(f"{EXPORTS_PREFIX}{export_id}.json", description)

    async def export(self, arn: str) -> dict[str, Any] | None:
        found = await self._read(f"{EXPORTS_PREFIX}{_id_of(arn)}.json")
        return found if found is not None and found["ExportArn"] == arn else None

    async def list_exports(self) -> list[dict[str, Any]]:
        return await self._list(EXPORTS_PREFIX, ".json")

    # --- imports -------------------------------------------------------------------------------

    async def start_import(
        self, table: Table, request: dict[str, Any], arn: str, now: float
    ) -> dict[str, Any]:
        description: dict[str, Any] = {
            "ImportArn": arn,
            "ImportStatus": "IN_PROGRESS",
            "TableArn": table.arn,
            "TableId": table.table_id,
            "S3BucketSource": request["S3BucketSource"],
            "ErrorCount": 0,
            "InputFormat": request["InputFormat"],
            "InputCompressionType": request.get("InputCompressionType", "NONE"),
            "TableCreationParameters": request["TableCreationParameters"],
            "StartTime": now,
            "ProcessedSizeBytes": 0,
            "ProcessedItemCount": 0,
            "ImportedItemCount": 0,
        }
        if request.get("ClientToken") is not None:
            description["ClientToken"] = request["ClientToken"]
        await self._write(f"{IMPORTS_PREFIX}{_id_of(arn)}.json", description)
        self.start_load(table)
        return description

    async def import_(self, arn: str) -> dict[str, Any] | None:
        found = await self._read(f"{IMPORTS_PREFIX}{_id_of(arn)}.json")
        return found if found is not None and found["ImportArn"] == arn else None

    async def list_imports(self) -> list[dict[str, Any]]:
        return await self._list(IMPORTS_PREFIX, ".json")


def cluster_store(node: ClusterNode) -> PrefixedStore | None:
    """The cluster's backup store, under a prefix of its own (derived from the cluster
    secret, the same on every node): `backup_dir` or `backup_s3` of the cluster file, else
    the directory `backups` next to the cluster file."""
    spec = node.spec
    cluster_file = Path(node.config.cluster_file)
    backup_dir: Path | None = None
    if spec.extra.get("backup_s3") is None:
        configured = spec.extra.get("backup_dir")
        backup_dir = Path(configured) if configured else Path("backups")
        if not backup_dir.is_absolute():
            backup_dir = cluster_file.parent / backup_dir
    base = open_store(
        node.config.data_dir,
        backup_dir,
        spec.extra.get("backup_s3"),
        spec.extra.get("backup_s3_endpoint"),
        node.config.region,
    )
    if base is None:
        return None
    secret_file = node.config.secret_file or topology.secret_path(spec, cluster_file)
    cluster_id = hashlib.sha256(b"keeldb-cluster:" + topology.read_secret(secret_file)).hexdigest()
    return PrefixedStore(base, f"clusters/{cluster_id[:16]}/")


async def attach(node: ClusterNode) -> Callable[[], Awaitable[None]] | None:
    """Serve backups on a cluster node (after its replicas opened, before it serves)."""
    store = cluster_store(node)
    if store is None:
        return None
    workdir = Path(node.config.data_dir) / "backup-work"
    shutil.rmtree(workdir, ignore_errors=True)  # what a stop left of jobs that restart
    workdir.mkdir(parents=True, exist_ok=True)
    service = ClusterBackupService(node, store, workdir)
    for archive_group, archive in service.archives.items():
        replica = None if node.storage is None else node.storage.replicas.get(archive_group)
        if replica is not None:
            archive.group_log = replica.log
            archive._installed = replica.log.snapshots_installed
    if node.storage is not None:
        node.storage.handlers[CHANNEL_BACKUP] = service.on_step
        node.transport.register(CHANNEL_BACKUP, service.on_step)
    server = node.server
    assert server is not None
    routed = server.dispatch

    def dispatch(op: str, body: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        # The router's own coroutine for every other operation, not one more around it.
        if op in BACKUP_OPERATIONS:
            return service.route(op, body)
        return routed(op, body)

    server.dispatch = dispatch
    service._watch = asyncio.get_running_loop().create_task(service.watch_leadership())
    service._trim = asyncio.get_running_loop().create_task(service.trim_forever())

    async def close() -> None:
        # The archives stay open: the replicas apply records until the storage closes.
        await service.close()

    return close
