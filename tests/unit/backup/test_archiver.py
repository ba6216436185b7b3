"""The archiver on a real log, store and database: verified uploads only, the log's hold on
unarchived segments, pruning, and a damaged archive refused by a restore."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keeldb.backup.archive import Archiver, load_manifest
from keeldb.backup.rebuild import rebuild_at
from keeldb.backup.store import ArchiveCorruptError, DirectoryStore
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog

TABLE = {
    "TableName": "arch",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


class SegmentDamagingStore(DirectoryStore):
    """Its disk damages every log segment written to it (the manifest and snapshots are fine)."""

    def put(self, key: str, data: bytes) -> None:
        if key.endswith(".wal"):
            data = data[:-1] + bytes([data[-1] ^ 1])
        super().put(key, data)


async def open_node(path: Path) -> tuple[LmdbStore, Database, LocalLog]:
    store = LmdbStore(path / "store")
    database = Database(store)
    log = await LocalLog.open(
        path / "wal", store, database.apply, segment_bytes=512, checkpoint_interval_seconds=3600
    )
    database.attach_log(log)
    return store, database, log


async def put(database: Database, count: int, tag: str = "") -> None:
    for number in range(count):
        await database.dispatch(
            "PutItem", {"TableName": "arch", "Item": {"pk": {"S": f"{tag}{number}"}}}
        )


def test_a_segment_that_reads_back_damaged_is_never_named_and_stays_on_the_node(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[Any, list[int]]:
        store, database, log = await open_node(tmp_path)
        archiver = Archiver(
            SegmentDamagingStore(tmp_path / "b"), log, store.snapshot, interval_seconds=3600
        )
        await archiver.start()
        await database.dispatch("CreateTable", TABLE)
        await put(database, 15)
        with pytest.raises(ArchiveCorruptError, match="read back with sha256"):
            await archiver.flush()
        await log.checkpoint()
        kept = [first for first, _ in log.sealed_segments()]
        await archiver.close()
        await log.close()
        store.close()
        return archiver.manifest, kept

    manifest, kept = asyncio.run(scenario())
    published = load_manifest(DirectoryStore(tmp_path / "b"))
    assert published.segments == []
    assert len(published.snapshots) == 1
    assert manifest.segments == []
    assert kept[0] == 1  # the checkpoint removed none of the unarchived segments


def test_old_snapshots_and_segments_are_pruned_and_the_rest_still_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEELDB_ARCHIVE_RETENTION_SECONDS", "0.000001")
    backups = DirectoryStore(tmp_path / "b")

    async def scenario() -> tuple[str, int]:
        store, database, log = await open_node(tmp_path)
        archiver = Archiver(backups, log, store.snapshot, interval_seconds=3600)
        await archiver.start()
        await database.dispatch("CreateTable", TABLE)
        await put(database, 20, "a")
        await archiver.flush(snapshot=True)
        await put(database, 20, "b")
        await archiver.flush(snapshot=True)
        await put(database, 5, "c")
        await archiver.flush()
        table_id = catalog.get_table(database, "arch").table_id
        now_us = log.committed_time_us()
        await archiver.close()
        await log.close()
        store.close()
        return table_id, now_us

    table_id, now_us = asyncio.run(scenario())
    manifest = load_manifest(backups)
    assert len(manifest.snapshots) == 1
    named = {e.key for e in manifest.segments} | {e.key for e in manifest.snapshots}
    stored = {k for k in backups.list("archive/") if not k.endswith("manifest.json")}
    assert stored == named  # pruned objects were deleted, nothing named is missing
    rebuilt = rebuild_at(backups, manifest, now_us, tmp_path / "r", Database)
    try:
        table = catalog.get_table_by_id(rebuilt.database, table_id)
        assert table is not None
        assert rebuilt.lsn == max(e.last_lsn for e in manifest.segments)
    finally:
        rebuilt.close()


def test_a_restore_refuses_a_damaged_archived_segment_and_names_it(tmp_path: Path) -> None:
    backups = DirectoryStore(tmp_path / "b")

    async def scenario() -> int:
        store, database, log = await open_node(tmp_path)
        archiver = Archiver(backups, log, store.snapshot, interval_seconds=3600)
        await archiver.start()
        await database.dispatch("CreateTable", TABLE)
        await put(database, 30)
        await archiver.flush()
        now_us = log.committed_time_us()
        await archiver.close()
        await log.close()
        store.close()
        return now_us

    now_us = asyncio.run(scenario())
    manifest = load_manifest(backups)
    victim = manifest.segments[len(manifest.segments) // 2]
    path = tmp_path / "b" / victim.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorruptError, match=f"{victim.key} is damaged"):
        rebuild_at(backups, manifest, now_us, tmp_path / "r", Database)
