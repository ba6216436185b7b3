"""The node's backup service: the archiver, and the background jobs behind the backup
operations (restores, on-demand backups, exports, imports).

This module owns:

- `attach(node)`: opens the backup store the node's configuration names, starts the
  archiver (when the node keeps its data on disk), registers `BackupService` as the hooks of
  `keeldb.engine.backups`, and resumes the jobs a stop interrupted (tables still loading,
  backups still being created, exports still in progress);
- the objects of on-demand backups (`backups/ID/backup.json`, a descriptor, and one part per
  hash range of the table: msgpack [[item, size], ...]), of exports (`jobs/exports/ID.json`
  plus the export's files in its bucket) and of imports (`jobs/imports/ID.json`), all under
  the node's own prefix of the backup store (`nodes/NODE_ID/`), so that servers may share one
  store;
- loading tables: a restore reads the state as of its instant (`rebuild.rebuild_at`) or a
  backup's parts, an import reads data files; the table's key space is cut into
  `load_workers` hash ranges loaded in parallel (Aurora's parallel recovery on one node), each
  worker proposing "load_items" records in turn.

All blocking work (uploads, downloads, LMDB copies and scans) runs in worker threads; the
event loop only proposes records. It never writes the live store except through records.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb import crypto
from keeldb.backup import exports as export_format
from keeldb.backup.archive import ARCHIVE_RETRY_SECONDS, Archiver, setting
from keeldb.backup.rebuild import rebuild_at
from keeldb.backup.store import (
    BackupStore,
    ObjectMissingError,
    get_verified,
    open_store,
    put_verified,
)
from keeldb.engine import backups as ops
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.item_store import decode_stored, table_stats
from keeldb.engine.schema import Table
from keeldb.model.errors import ContinuousBackupsUnavailableException
from keeldb.model.keys import HASH_SPACE, hash_range_bounds, key_after
from keeldb.model.values import item_size, validate_item
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.wal import fsync_directory

if TYPE_CHECKING:
    from keeldb.node import Closer, Node

log = logging.getLogger(__name__)

LOAD_WORKERS = 4  # hash ranges a table is loaded in, in parallel
READ_CHUNK_ITEMS = 500  # items a load worker reads from its source at a time
NODE_ID_FILE = "node-id"  # in the data directory: names the node's prefix in the store
BACKUPS_PREFIX = "backups/"
EXPORTS_PREFIX = "jobs/exports/"
IMPORTS_PREFIX = "jobs/imports/"


class PrefixedStore:
    """A view of a backup store under one key prefix (one node's part of a shared store)."""

    def __init__(self, base: BackupStore, prefix: str) -> None:
        self.base = base
        self.prefix = prefix

    def put(self, key: str, data: bytes) -> None:
        self.base.put(self.prefix + key, data)

    def put_file(self, key: str, path: Path) -> None:
        self.base.put_file(self.prefix + key, path)

    def get(self, key: str) -> bytes:
        return self.base.get(self.prefix + key)

    def get_file(self, key: str, path: Path) -> None:
        self.base.get_file(self.prefix + key, path)

    def list(self, prefix: str) -> list[str]:
        return [k[len(self.prefix) :] for k in self.base.list(self.prefix + prefix)]

    def delete(self, key: str) -> None:
        self.base.delete(self.prefix + key)

    def bucket(self, name: str) -> BackupStore:
        return self.base.bucket(name)

    def describe(self) -> str:
        return f"{self.base.describe().rstrip('/')}/{self.prefix}"


def node_id(data_dir: Path | None) -> str:
    """The node's stable id (kept in its data directory; a new one for a node in memory)."""
    if data_dir is None:
        return uuid.uuid4().hex
    path = Path(data_dir) / NODE_ID_FILE
    if path.exists():
        return path.read_text().strip()
    value = uuid.uuid4().hex
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as stream:
        stream.write(value + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)  # a lost id would start a second archive for the node
    return value


def node_store(base: BackupStore, data_dir: Path | None) -> PrefixedStore:
    return PrefixedStore(base, f"nodes/{node_id(data_dir)}/")


@dataclass(slots=True)
class Progress:
    """How far one background job is, for Describe* answers and the CLI."""

    items: int = 0
    bytes: int = 0
    total_bytes: int = 0
    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)
    loading_since: float | None = None  # when items started to go in (after any rebuild)
    finished: float | None = None


def _id_of(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


class BackupService:
    """The `keeldb.engine.backups.BackupHooks` of a node."""

    def __init__(
        self,
        database: Database,
        store: BackupStore,
        archiver: Archiver | None,
        workdir: Path,
        *,
        live_store: Any = None,
        load_workers: int | None = None,
    ) -> None:
        self.db = database
        self.store = store
        self.archiver = archiver
        self.workdir = workdir
        self.live_store = live_store
        self.load_workers = int(
            load_workers or setting("KEELDB_RESTORE_WORKERS", float(LOAD_WORKERS))
        )
        # Items per "load_items" record (smaller batches let tests stop a load half-way).
        self.batch_items = int(
            setting("KEELDB_RESTORE_BATCH_ITEMS", float(ops.LOAD_BATCH_ITEMS_MAX))
        )
        self.threads = ThreadPoolExecutor(
            max_workers=self.load_workers + 2, thread_name_prefix="keeldb-backup"
        )
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.progress: dict[str, Progress] = {}
        self.failures: dict[str, str] = {}  # table id or job id -> why it failed
        self._closing = False

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    def _spawn(self, key: str, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"keeldb-backup-{key}")
        self.tasks[key] = task
        task.add_done_callback(lambda _: self.tasks.pop(key, None))

    async def close(self) -> None:
        self._closing = True
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

    async def resume_forever(self) -> None:
        """`resume`, retried until the backup store answers."""
        while not self._closing:
            try:
                await self.resume()
                return
            except Exception as error:  # noqa: BLE001 - the store may come back
                log.warning("cannot resume backup jobs yet, retrying: %r", error)
                await asyncio.sleep(ARCHIVE_RETRY_SECONDS)

    async def resume(self) -> None:
        """Restart the jobs a stop interrupted: they are restartable from their start."""
        for table in ops.loading_tables(self.db):
            self.start_load(table)
        for backup in await self.list_backups():
            if backup["BackupStatus"] == "CREATING":
                self._spawn(backup["BackupArn"], self._finish_backup(backup, None))
        for export in await self.list_exports():
            if export["ExportStatus"] == "IN_PROGRESS":
                self._spawn(export["ExportArn"], self._export(export))

    # --- the archive's window --------------------------------------------------------------

    def restorable_window(self) -> tuple[float, float] | None:
        if self.archiver is None:
            return None
        manifest = self.archiver.manifest
        earliest = manifest.earliest_time_us()
        if earliest is None:
            return None
        return earliest / 1e6, max(manifest.archived_time_us(), earliest) / 1e6

    # --- loading tables --------------------------------------------------------------------

    def start_load(self, table: Table) -> None:
        if table.table_id in self.tasks:
            return
        self.progress[table.table_id] = Progress()
        self._spawn(table.table_id, self._load(table))

    async def _load(self, table: Table) -> None:
        load = table.extra[ops.LOAD_KEY]
        progress = self.progress[table.table_id]
        try:
            if load["source"] == "pitr":
                await self._load_from_archive(table, load, progress)
            elif load["source"] == "backup":
                await self._load_from_backup(table, load, progress)
            else:
                assert load["source"] == "import", load
                await self._load_from_import(table, load, progress)
            if load["source"] != "import":
                await ops.finish_load(self.db, table)
            seconds = time.monotonic() - progress.started
            log.info(
                "table %s loaded: %d items, %d bytes in %.2f s (%.1f MB/s, %d workers)",
                table.name,
                progress.items,
                progress.bytes,
                seconds,
                progress.bytes / 1e6 / max(seconds, 1e-9),
                self.load_workers,
            )
        except asyncio.CancelledError:
            raise  # the node is stopping: the load resumes when it starts again
        except Exception as error:  # noqa: BLE001 - a failed load is reported, not raised
            log.error("loading table %s failed: %s", table.name, error)
            self.failures[table.table_id] = str(error)
            if load["source"] == "import":
                await self._fail_import(load["import_id"], error)
            try:
                await ops.abandon_load(self.db, table)
            except Exception:
                log.exception("could not remove table %s after its load failed", table.name)

    async def _load_ranges(self, table: Table, read_range: Any, progress: Progress) -> None:
        """Run `load_workers` workers, worker k loading what `read_range(k, cursor)` returns
        (a list of (item, size) and the next cursor, None when the range is done)."""

        async def worker(number: int) -> None:
            cursor: Any = None
            while True:
                chunk, cursor = await self._run(read_range, number, cursor)
                for batch in ops.load_batches(chunk, self.batch_items):
                    await ops.load_items(self.db, table, batch)
                    progress.items += len(batch)
                    progress.bytes += sum(size for _, size in batch)
                if cursor is None:
                    return

        progress.phase = "loading"
        progress.loading_since = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(self.load_workers)))
        progress.finished = time.monotonic()

    def _ranges(self, table_id: str) -> list[tuple[bytes, bytes]]:
        step = HASH_SPACE // self.load_workers
        bounds = [n * step for n in range(self.load_workers)] + [HASH_SPACE]
        return [
            hash_range_bounds(table_id, 0, low, high) for low, high in itertools.pairwise(bounds)
        ]

    async def _load_from_archive(
        self, table: Table, load: dict[str, Any], progress: Progress
    ) -> None:
        if self.archiver is None:
            raise RuntimeError("this node keeps no archive")
        progress.phase = "archiving"
        manifest = await self.archiver.flush()
        workdir = Path(tempfile.mkdtemp(prefix="restore-", dir=self.workdir))
        progress.phase = "rebuilding"

        def on_progress(phase: str, done: int, total: int) -> None:
            progress.phase = phase
            progress.total_bytes = total

        rebuilt = await self._run(
            lambda: rebuild_at(
                self.store,
                manifest,
                load["time_us"],
                workdir,
                self._scratch_database,
                table_ids=frozenset([load["table_id"]]),
                progress=on_progress,
            )
        )
        try:
            source = catalog.get_table_by_id(rebuilt.database, load["table_id"])
            if source is None:
                raise RuntimeError(f"table {load['table_name']} did not exist at the restore time")
            ranges = self._ranges(source.table_id)

            def read_range(number: int, cursor: bytes | None) -> tuple[list[Any], bytes | None]:
                start, end = ranges[number]
                return _read_items(rebuilt.database.store, cursor or start, end)

            await self._load_ranges(table, read_range, progress)
        finally:
            await self._run(rebuilt.close)

    def _scratch_database(self, store: Any) -> Database:
        """A database over a copy of this node's store, reading and writing it as the node
        does (with its keyring and record codec when data is encrypted at rest)."""
        keyring = crypto.keyring_of(self.live_store)
        return Database(
            crypto.sibling_store(self.live_store, store),
            region=self.db.region,
            account_id=self.db.account_id,
            # A codec of its own: the node's remembers what the node sealed, and this one
            # runs in a worker thread.
            record_codec=None if keyring is None else keyring.record_codec,
        )

    def _seal(self, table_id: str, key: str, data: bytes) -> bytes:
        keyring = crypto.keyring_of(self.live_store)
        return data if keyring is None else crypto.seal_object(keyring, table_id, key, data)

    def _open(self, key: str, data: bytes) -> bytes:
        keyring = crypto.keyring_of(self.live_store)
        return data if keyring is None else crypto.open_object(keyring, key, data)

    async def _load_from_backup(
        self, table: Table, load: dict[str, Any], progress: Progress
    ) -> None:
        backup = await self.backup(load["backup_arn"])
        if backup is None or backup["BackupStatus"] != "AVAILABLE":
            raise RuntimeError(f"backup {load['backup_arn']} is not available")
        parts = backup["parts"]
        progress.total_bytes = backup.get("TableSizeBytes", 0)
        queue = list(parts)

        def read_range(number: int, cursor: Any) -> tuple[list[Any], Any]:
            # Worker k takes parts k, k + workers, ...; one part per call.
            index = number if cursor is None else cursor
            if index >= len(queue):
                return [], None
            part = queue[index]
            data = self._open(part["key"], get_verified(self.store, part["key"], part["sha256"]))
            items = [(item, size) for item, size in msgpack.unpackb(data, raw=False)]
            following = index + self.load_workers
            return items, following if following < len(queue) else None

        await self._load_ranges(table, read_range, progress)

    async def _load_from_import(
        self, table: Table, load: dict[str, Any], progress: Progress
    ) -> None:
        job = await self._run(self._read_job, IMPORTS_PREFIX, load["import_id"])
        if job is None:
            raise RuntimeError(f"import {load['import_id']} has no description")
        source = job["S3BucketSource"]
        bucket = self.store.bucket(source["S3Bucket"])
        prefix = source.get("S3KeyPrefix", "")
        keys = [k for k in await self._run(bucket.list, prefix) if export_format.is_data_file(k)]
        compression = job.get("InputCompressionType", "NONE")
        counts = {"processed": 0, "imported": 0, "errors": 0, "bytes": 0}

        def read_range(number: int, cursor: Any) -> tuple[list[Any], Any]:
            index = number if cursor is None else cursor
            if index >= len(keys):
                return [], None
            data = bucket.get(keys[index])
            counts["bytes"] += len(data)
            items = []
            for entry in export_format.read_data_file(data, compression):
                counts["processed"] += 1
                checked = _import_item(table, entry)
                if checked is None:
                    counts["errors"] += 1
                    continue
                items.append(checked)
            counts["imported"] += len(items)
            following = index + self.load_workers
            return items, following if following < len(keys) else None

        await self._load_ranges(table, read_range, progress)
        # The import is COMPLETED once its table is ACTIVE: a client that sees the status may
        # use the table at once.
        await ops.finish_load(self.db, table)
        job.update(
            ImportStatus="COMPLETED",
            EndTime=catalog.current_time(self.db),
            ProcessedItemCount=counts["processed"],
            ImportedItemCount=counts["imported"],
            ErrorCount=counts["errors"],
            ProcessedSizeBytes=counts["bytes"],
        )
        await self._run(self._write_job, IMPORTS_PREFIX, load["import_id"], job)

    # --- on-demand backups -----------------------------------------------------------------

    def _backup_key(self, arn: str) -> str:
        return f"{BACKUPS_PREFIX}{_id_of(arn)}/backup.json"

    async def create_backup(self, table: Table, name: str, arn: str, now: float) -> dict[str, Any]:
        item_count, size_bytes = table_stats(self.db, table)
        backup: dict[str, Any] = {
            "BackupArn": arn,
            "BackupName": name,
            "BackupStatus": "CREATING",
            "BackupType": "USER",
            "BackupCreationDateTime": now,
            "BackupSizeBytes": size_bytes,
            "ItemCount": item_count,
            "TableSizeBytes": size_bytes,
            "table": table.to_record(),
            "parts": [],
        }
        # The copy is taken before the answer, so the backup holds the table as it was when
        # it was asked for, even if the table is changed or deleted right after.
        copy_dir = Path(tempfile.mkdtemp(prefix="backup-", dir=self.workdir))
        try:
            await self._run(self._copy_store, copy_dir)
            await self._run(self._write_backup, backup)
        except BaseException:
            shutil.rmtree(copy_dir, ignore_errors=True)
            raise
        self._spawn(arn, self._finish_backup(backup, copy_dir))
        return ops.backup_details(backup)

    def _copy_store(self, copy_dir: Path) -> int:
        snapshot = getattr(self.live_store, "snapshot", None)
        if snapshot is None:
            raise ContinuousBackupsUnavailableException(
                "Backups are not available: this server keeps its data in memory"
            )
        lsn: int = snapshot(copy_dir / "store")
        return lsn

    async def _finish_backup(self, backup: dict[str, Any], copy_dir: Path | None) -> None:
        """Dump the backed-up table's items, one part per hash range, from the copy taken
        when the backup was asked for; resumed after a stop (the copy is gone then), from
        the state as of the backup's creation time rebuilt from the archive."""
        arn = backup["BackupArn"]
        progress = self.progress[arn] = Progress(phase="copying")
        rebuilt = None
        copy: Any = None
        try:
            table = Table.from_record(backup["table"])
            if copy_dir is not None:
                copy = LmdbStore(copy_dir / "store")
                readable = crypto.sibling_store(self.live_store, copy)
            else:
                if self.archiver is None:
                    raise RuntimeError("the backup was interrupted and this node keeps no archive")
                manifest = await self.archiver.flush()
                workdir = Path(tempfile.mkdtemp(prefix="backup-", dir=self.workdir))
                time_us = int(backup["BackupCreationDateTime"] * 1_000_000)
                rebuilt = await self._run(
                    lambda: rebuild_at(
                        self.store,
                        manifest,
                        time_us,
                        workdir,
                        self._scratch_database,
                        table_ids=frozenset([table.table_id]),
                    )
                )
                readable = rebuilt.database.store
            ranges = self._ranges(table.table_id)

            def dump(number: int) -> dict[str, Any]:
                start, end = ranges[number]
                items: list[Any] = []
                cursor: bytes | None = start
                while cursor is not None:
                    chunk, cursor = _read_items(readable, cursor, end)
                    items.extend([item, size] for item, size in chunk)
                key = f"{BACKUPS_PREFIX}{_id_of(arn)}/part-{number:04d}.msgpack"
                # A part is sealed with its table's data key when data is encrypted at rest.
                data = self._seal(table.table_id, key, msgpack.packb(items, use_bin_type=True))
                sha = put_verified(self.store, key, data)
                progress.items += len(items)
                progress.bytes += len(data)
                return {"key": key, "sha256": sha, "bytes": len(data), "items": len(items)}

            parts = await asyncio.gather(*(self._run(dump, n) for n in range(len(ranges))))
            backup["parts"] = list(parts)
            backup["ItemCount"] = sum(p["items"] for p in parts)
            backup["BackupStatus"] = "AVAILABLE"
            await self._run(self._write_backup, backup)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - reported through the backup's status
            log.error("backup %s failed: %s", arn, error)
            self.failures[arn] = str(error)
            backup["BackupStatus"] = "DELETED"
            await self._run(self._write_backup, backup)
        finally:
            if copy is not None:
                await self._run(copy.close)
            if rebuilt is not None:
                await self._run(rebuilt.close)
            if copy_dir is not None:
                shutil.rmtree(copy_dir, ignore_errors=True)

    def _write_backup(self, backup: dict[str, Any]) -> None:
        put_verified(self.store, self._backup_key(backup["BackupArn"]), _dumps(backup))

    async def backup(self, arn: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = json.loads(self.store.get(self._backup_key(arn)))
            except ObjectMissingError:
                return None
            return found if found["BackupArn"] == arn else None

        found: dict[str, Any] | None = await self._run(read)
        return found

    async def list_backups(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            found = []
            for key in self.store.list(BACKUPS_PREFIX):
                if key.endswith("/backup.json"):
                    found.append(json.loads(self.store.get(key)))
            return found

        found: list[dict[str, Any]] = await self._run(read)
        return found

    async def delete_backup(self, arn: str) -> dict[str, Any]:
        backup = await self.backup(arn)
        assert backup is not None

        def delete() -> None:
            for part in backup["parts"]:
                self.store.delete(part["key"])
            self.store.delete(self._backup_key(arn))

        await self._run(delete)
        return dict(backup, BackupStatus="DELETED")

    # --- exports ---------------------------------------------------------------------------

    def _read_job(self, prefix: str, job_id: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.store.get(f"{prefix}{job_id}.json"))
        except ObjectMissingError:
            return None
        return found

    def _write_job(self, prefix: str, job_id: str, job: dict[str, Any]) -> None:
        put_verified(self.store, f"{prefix}{job_id}.json", _dumps(job))

    async def start_export(
        self, table: Table, request: dict[str, Any], arn: str, now: float
    ) -> dict[str, Any]:
        export_id = _id_of(arn)
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
        await self._run(self._write_job, EXPORTS_PREFIX, export_id, description)
        self._spawn(arn, self._export(description))
        return description

    async def _export(self, description: dict[str, Any]) -> None:
        arn = description["ExportArn"]
        export_id = _id_of(arn)
        progress = self.progress[arn] = Progress(phase="archiving")
        try:
            if self.archiver is None:
                raise RuntimeError("this node keeps no archive")
            manifest = await self.archiver.flush()
            workdir = Path(tempfile.mkdtemp(prefix="export-", dir=self.workdir))
            time_us = int(description["ExportTime"] * 1_000_000)
            progress.phase = "rebuilding"
            rebuilt = await self._run(
                lambda: rebuild_at(
                    self.store,
                    manifest,
                    time_us,
                    workdir,
                    self._scratch_database,
                    table_ids=frozenset([description["TableId"]]),
                )
            )
            try:
                bucket = self.store.bucket(description["S3Bucket"])
                root = export_format.export_root(description.get("S3Prefix"), export_id)
                source = catalog.get_table_by_id(rebuilt.database, description["TableId"])
                if source is None:
                    raise RuntimeError("the table did not exist at the export time")
                ranges = self._ranges(source.table_id)
                progress.phase = "writing"

                def write_part(number: int) -> tuple[dict[str, Any], int]:
                    start, end = ranges[number]
                    items: list[Any] = []
                    size = 0
                    cursor: bytes | None = start
                    while cursor is not None:
                        chunk, cursor = _read_items(rebuilt.database.store, cursor, end)
                        items.extend(item for item, _ in chunk)
                        size += sum(s for _, s in chunk)
                    data = export_format.encode_data_file(items)
                    key = f"{root}data/{uuid.uuid4().hex[:26]}.json.gz"
                    put_verified(bucket, key, data)
                    progress.items += len(items)
                    progress.bytes += size
                    return export_format.data_file_entry(key, data, len(items)), size

                results = []
                for number in range(len(ranges)):
                    results.append(await self._run(write_part, number))
                finished = export_format.finish_export(
                    description,
                    root=root,
                    results=results,
                    end_time=catalog.current_time(self.db),
                    iso_time=ops.iso_time,
                )

                def finish() -> None:
                    for key, data in finished.objects:
                        put_verified(bucket, key, data)

                await self._run(finish)
                description.update(finished.completed)
            finally:
                await self._run(rebuilt.close)
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
        await self._run(self._write_job, EXPORTS_PREFIX, export_id, description)

    async def export(self, arn: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._run(self._read_job, EXPORTS_PREFIX, _id_of(arn))
        if found is None or found["ExportArn"] != arn:
            return None
        progress = self.progress.get(arn)
        if found["ExportStatus"] == "IN_PROGRESS" and progress is not None:
            found["ItemCount"] = progress.items
            found["BilledSizeBytes"] = progress.bytes
        return found

    async def list_exports(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            return [json.loads(self.store.get(k)) for k in self.store.list(EXPORTS_PREFIX)]

        found: list[dict[str, Any]] = await self._run(read)
        return found

    # --- imports ---------------------------------------------------------------------------

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
        await self._run(self._write_job, IMPORTS_PREFIX, _id_of(arn), description)
        self.start_load(table)
        return description

    async def _fail_import(self, import_id: str, error: Exception) -> None:
        job = await self._run(self._read_job, IMPORTS_PREFIX, import_id)
        if job is None:
            return
        job.update(
            ImportStatus="FAILED",
            EndTime=catalog.current_time(self.db),
            FailureCode="ImportFailed",
            FailureMessage=str(error),
        )
        await self._run(self._write_job, IMPORTS_PREFIX, import_id, job)

    async def import_(self, arn: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._run(self._read_job, IMPORTS_PREFIX, _id_of(arn))
        if found is None or found["ImportArn"] != arn:
            return None
        progress = self.progress.get(found["TableId"])
        if found["ImportStatus"] == "IN_PROGRESS" and progress is not None:
            found["ImportedItemCount"] = progress.items
        return found

    async def list_imports(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            return [json.loads(self.store.get(k)) for k in self.store.list(IMPORTS_PREFIX)]

        found: list[dict[str, Any]] = await self._run(read)
        return found


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _read_items(store: Any, start: bytes, end: bytes) -> tuple[list[Any], bytes | None]:
    """Up to READ_CHUNK_ITEMS (item, size) pairs of [start, end), and where to go on from
    (None at the end of the range)."""
    items = []
    last = None
    for key, value in store.scan(start, end):
        items.append(decode_stored(value))
        last = key
        if len(items) == READ_CHUNK_ITEMS:
            return items, key_after(last)
    return items, None


def _import_item(table: Table, entry: Any) -> tuple[Any, int] | None:
    """An import line's item with its size, or None if it is not a valid item of `table`
    (counted in the import's ErrorCount, as DynamoDB counts bad lines)."""
    if isinstance(entry, Exception):
        return None
    try:
        item = validate_item(entry)
    except Exception:  # noqa: BLE001 - any invalid item is one error
        return None
    for key in (table.hash_key, table.range_key):
        if key is None:
            continue
        value = item.get(key.name)
        if value is None or key.type not in value:
            return None
    return item, item_size(item)


async def attach(node: Node) -> Closer | None:
    config = node.config
    base = open_store(
        config.data_dir,
        config.backup_dir,
        config.backup_s3,
        config.backup_s3_endpoint,
        config.region,
    )
    if base is None:
        return None
    store = node_store(base, config.data_dir)
    if config.data_dir is not None:
        workdir = Path(config.data_dir) / "backup-work"
        shutil.rmtree(workdir, ignore_errors=True)  # what a stop left of jobs that restart
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="keeldb-backup-work-"))
    archiver = None
    snapshot = getattr(node.store, "snapshot", None)
    archiving = os.environ.get("KEELDB_ARCHIVE", "on") != "off"
    if archiving and snapshot is not None and hasattr(node.log, "seal"):
        extras = None
        if crypto.keyring_of(node.store) is not None and config.data_dir is not None:
            # The wrapped data keys travel with the archive (never the master key).
            keyring_path = crypto.keyring_file(Path(config.data_dir))
            extras = lambda: {"keyring": keyring_path}
        archiver = Archiver(store, node.log, snapshot, extras=extras, workdir=workdir)
        await archiver.start()
    service = BackupService(node.database, store, archiver, workdir, live_store=node.store)
    node.database.state[ops.HOOKS_KEY] = service
    service._spawn("resume", service.resume_forever())

    async def close() -> None:
        await service.close()
        if archiver is not None:
            await archiver.close()
        if config.data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    return close
