"""Rebuilding a node's state as of an instant from the archive (point-in-time recovery).

This module owns the one recovery rule of continuous backups: the state as of instant T is
the newest archived snapshot whose records were all committed at or before T, plus the replay,
in LSN order, of every archived record committed at or before T. Records are applied through
a scratch `Database` over a private copy of the snapshot, with the same appliers (and so the
same record codec) as the live node, so the rebuilt state is exactly what the node held.
Every object read from the archive is checked against the manifest's SHA-256 first, and a
damaged one is refused (`ArchiveCorruptError`).

It runs in a worker thread (it blocks on downloads and LMDB) and never touches the live
node: callers copy what they need out of the rebuilt state.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from keeldb.backup.manifest import ArchiveGapError, Manifest
from keeldb.backup.store import BackupStore, get_file_verified, get_verified
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.wal import read_segment

REPLAY_BATCH_RECORDS = 1024  # records applied per store transaction while replaying
CATALOG_KINDS = frozenset({"create_table", "update_table", "delete_table"})

DatabaseFactory = Callable[[Any], Database]  # a scratch Database over a store
ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(slots=True)
class Rebuilt:
    """A scratch database holding the state as of `time_us` (records 1..`lsn`). Read it
    through `database.store` (which opens sealed values when data is encrypted at rest),
    never through `store` (the raw copy)."""

    database: Database
    store: LmdbStore
    directory: Path
    lsn: int
    time_us: int

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _belongs(database: Database, record_bytes: bytes, table_ids: frozenset[str] | None) -> bool:
    """Whether a record may change one of `table_ids` (True for catalog records, and for
    records that cannot be read here)."""
    if table_ids is None:
        return True
    try:
        if database.record_codec is not None:
            record_bytes = database.record_codec.open(record_bytes)
        record = msgpack.unpackb(record_bytes, raw=False)
    except Exception:  # noqa: BLE001 - not readable here: the applier decides
        return True
    if not isinstance(record, dict):
        return True
    kind = record.get("kind")
    if kind in ("put", "delete"):
        return record.get("table") in table_ids
    if kind in CATALOG_KINDS:
        return True  # tables are created, changed and dropped in the catalog: always applied
    table_id = record.get("table_id")
    return table_id is None or table_id in table_ids


def rebuild_at(
    store: BackupStore,
    manifest: Manifest,
    time_us: int,
    workdir: Path,
    make_database: DatabaseFactory,
    *,
    table_ids: frozenset[str] | None = None,
    progress: ProgressFn | None = None,
) -> Rebuilt:
    """The state as of `time_us` in a new directory under `workdir`; records of item writes
    to tables other than `table_ids` (when given) are skipped, since the caller reads only
    those tables."""
    snapshot = manifest.snapshot_for(time_us)
    if snapshot is None:
        raise ArchiveGapError("the archive holds no snapshot at or before that instant")
    segments = manifest.segments_after(snapshot.lsn, time_us)
    directory = Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    store_dir = directory / "store"
    store_dir.mkdir()
    get_file_verified(store, snapshot.key, snapshot.sha256, store_dir / "data.mdb")
    scratch = LmdbStore(store_dir)
    try:
        database = make_database(scratch)
        lsn = scratch.applied_lsn()
        assert lsn == snapshot.lsn, (lsn, snapshot.lsn)
        reached_time = snapshot.time_us
        total = sum(s.bytes for s in segments)
        done = 0
        if progress is not None:
            progress("replay", 0, total)
        finished = False
        for segment in segments:
            data = get_verified(store, segment.key, segment.sha256)
            batch: list[tuple[int, bytes]] = []
            for record_lsn, record_time, payload in read_segment(data, segment.first_lsn):
                if record_lsn <= lsn:
                    continue
                if record_time > time_us:
                    finished = True
                    break
                assert record_lsn == lsn + 1, (record_lsn, lsn)
                lsn = record_lsn
                reached_time = record_time
                if _belongs(database, payload, table_ids):
                    batch.append((record_lsn, payload))
                if len(batch) >= REPLAY_BATCH_RECORDS:
                    _apply(database, scratch, batch)
                    batch = []
            _apply(database, scratch, batch)
            done += segment.bytes
            if progress is not None:
                progress("replay", done, total)
            if finished:
                break
        return Rebuilt(database, scratch, directory, lsn, max(reached_time, 0))
    except BaseException:
        scratch.close()
        raise


def _apply(database: Database, store: LmdbStore, batch: list[tuple[int, bytes]]) -> None:
    if not batch:
        return
    with store.batch():
        database.apply(batch)
