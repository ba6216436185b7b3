"""The archiver: copies sealed log segments and periodic store snapshots to the backup store.

This module owns the node's continuous backup (Aurora's and DynamoDB's "the log is the
database", carried to the archive): every `ARCHIVE_INTERVAL_SECONDS` it seals the segment
being written (if it holds records), then, in a worker thread, uploads each sealed segment
the archive lacks, reads it back and compares its SHA-256, and publishes a new manifest that
names it; every `SNAPSHOT_INTERVAL_SECONDS` (and first of all, and whenever the local log no
longer reaches back to the archive's end) it uploads a compact copy of the store the same way.
It holds the log's segments until they are archived (`LocalLog.retain_from`), so a checkpoint
never removes a segment the archive lacks.

It never blocks the event loop (file copies and uploads run in its own thread), never
changes the log or the store, and never names an object in the manifest before that object
was verified.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from keeldb.backup.manifest import (
    MANIFEST_KEY,
    Manifest,
    SegmentEntry,
    SnapshotEntry,
    segment_key,
    snapshot_key,
)
from keeldb.backup.store import (
    BackupStore,
    ObjectMissingError,
    put_file_verified,
    put_verified,
    sha256_bytes,
)
from keeldb.storage.wal import verify_segment

log = logging.getLogger(__name__)

ARCHIVE_INTERVAL_SECONDS = 5.0  # how often the segment being written is sealed and copied
SNAPSHOT_INTERVAL_SECONDS = 600.0  # a new snapshot at least this often while writes arrive
SNAPSHOT_LOG_BYTES = 256 * 1024 * 1024  # ... and after this much log was archived since one
ARCHIVE_RETRY_SECONDS = 5.0  # after a failed pass (the store unreachable), wait this long
CLOSE_FLUSH_SECONDS = 30.0  # at a clean stop, the last pass may take this long, at most
# What the archive keeps: DynamoDB's longest recovery period (RecoveryPeriodInDays 35).
ARCHIVE_RETENTION_SECONDS = 35 * 86400.0

SnapshotFn = Callable[[Path], int]  # copy the store into a new directory; its applied LSN


def setting(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def load_manifest(store: BackupStore) -> Manifest:
    try:
        return Manifest.from_json(store.get(MANIFEST_KEY))
    except ObjectMissingError:
        return Manifest()


def publish_manifest(store: BackupStore, manifest: Manifest) -> None:
    """Replace the manifest in one atomic put, read back and compared."""
    put_verified(store, MANIFEST_KEY, manifest.to_json())


class Archiver:
    """The archive of one node's log. Start it with `start()`, stop it with `close()`."""

    def __init__(
        self,
        store: BackupStore,
        log_: Any,
        snapshot: SnapshotFn,
        *,
        interval_seconds: float | None = None,
        snapshot_interval_seconds: float | None = None,
        extras: Callable[[], dict[str, Path]] | None = None,
        workdir: Path | None = None,
    ) -> None:
        """`log_` is the node's `LocalLog` (sealing, sealed segments, retention hold, commit
        times); `snapshot` copies the store; `extras` names files to keep with the archive
        (a keyring), re-uploaded when they change; `workdir` is where a pass copies
        snapshots (the data directory's filesystem; default: the system's temporary one)."""
        self.store = store
        self.log = log_
        self._snapshot = snapshot
        self.interval_seconds = interval_seconds or setting(
            "KEELDB_ARCHIVE_INTERVAL_SECONDS", ARCHIVE_INTERVAL_SECONDS
        )
        self.snapshot_interval_seconds = snapshot_interval_seconds or setting(
            "KEELDB_SNAPSHOT_INTERVAL_SECONDS", SNAPSHOT_INTERVAL_SECONDS
        )
        self.retention_seconds = setting(
            "KEELDB_ARCHIVE_RETENTION_SECONDS", ARCHIVE_RETENTION_SECONDS
        )
        self._extras = extras
        self._workdir = workdir
        self.manifest = Manifest()
        self._loaded = False  # whether `manifest` is the published one
        self._archived_lsn = 0  # read by the log's disk thread (retention hold)
        self._last_snapshot = 0.0  # time.monotonic() of the last snapshot
        self._bytes_since_snapshot = 0
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keeldb-archive")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.passes = 0
        self._first_done = False  # the first pass after start has run
        self.failure: BaseException | None = None

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Hold every local segment the archive lacks from now on (all of them until the
        # manifest is read). Segments below the archive's end that a checkpoint removed while
        # no archiver ran leave a gap, which the next pass closes with a snapshot.
        self.log.retain_from(lambda: self._archived_lsn + 1)
        # On a new archive the first pass runs before the node serves: its snapshot is where
        # the restorable window starts. On an archive that has one, every pass runs in the
        # background, the first at once, so that a restart (which after a crash may need a
        # new snapshot of a large store) does not wait for it; restores, backups and exports
        # reach the present through `flush` anyway.
        try:
            await self._load()
            if not self.manifest.snapshots:
                await self.flush()
                self._first_done = True
        except Exception as error:  # noqa: BLE001 - the background passes keep trying
            self.failure = error
            log.warning("the first archive pass failed, retrying in the background: %r", error)
        self._task = loop.create_task(self._run(), name="keeldb-archiver")

    async def close(self) -> None:
        """Archive what is committed (a clean stop leaves a complete archive, within
        CLOSE_FLUSH_SECONDS), then stop. The retention hold stays: the log keeps whatever is
        not archived."""
        if self._task is not None and self.failure is None:
            try:
                await asyncio.wait_for(self.flush(), CLOSE_FLUSH_SECONDS)
            except Exception as error:  # noqa: BLE001 - the log still holds the records
                log.warning("the last archive pass failed: %r", error)
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        async with self._lock:
            self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while not self._closing:
            try:
                if self._first_done:
                    await asyncio.sleep(self.interval_seconds)
                self._first_done = True
                await self.flush()
                self.failure = None
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the archiver must keep trying
                # An unreachable or failing backup store: nothing was published, the log
                # keeps the segments, and the next pass retries.
                self.failure = error
                log.warning("archive pass failed, retrying: %r", error)
                await asyncio.sleep(ARCHIVE_RETRY_SECONDS)

    # --- passes ----------------------------------------------------------------------------

    async def flush(self, *, snapshot: bool = False) -> Manifest:
        """Seal the log and archive everything committed so far; returns the manifest.

        Restores, exports and backups call it so that the archive reaches the present.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            await self._load_locked()
            if self.log.committed_lsn() > self._archived_lsn:
                await self.log.seal()
            await loop.run_in_executor(self._thread, self._pass, snapshot)
            self.passes += 1
            return self.manifest

    async def _load(self) -> None:
        async with self._lock:
            await self._load_locked()

    async def _load_locked(self) -> None:
        if not self._loaded:
            # Never publish before the published manifest is known: it would be replaced by
            # one that forgets what it named.
            loop = asyncio.get_running_loop()
            self.manifest = await loop.run_in_executor(self._thread, load_manifest, self.store)
            self._archived_lsn = self.manifest.archived_lsn()
            self._loaded = True

    def _pass(self, force_snapshot: bool) -> None:
        """Runs in the archive thread."""
        if self._workdir is None:
            with tempfile.TemporaryDirectory(prefix="keeldb-archive-") as scratch_name:
                self._pass_in(Path(scratch_name), force_snapshot)
            return
        scratch = self._workdir / "archive-pass"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            self._pass_in(scratch, force_snapshot)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _pass_in(self, scratch: Path, force_snapshot: bool) -> None:
        manifest = self.manifest
        changed = False
        if not manifest.snapshots:
            self._take_snapshot(manifest, scratch)
            changed = True
        for first_lsn, path in self.log.sealed_segments():
            if self._closing:
                break
            if (
                first_lsn > manifest.archived_lsn() + 1
                and manifest.snapshots[-1].lsn < first_lsn - 1
            ):
                # The local log starts after the archive's end (it was trimmed while no
                # archiver ran): a snapshot taken now covers the missing records, and
                # restores start from it.
                self._take_snapshot(manifest, scratch)
                changed = True
            if changed:
                publish_manifest(self.store, manifest)
                changed = False
            entry = self._archive_segment(first_lsn, path, manifest.archived_lsn())
            if entry is None:
                continue
            manifest.segments.append(entry)
            self._bytes_since_snapshot += entry.bytes
            publish_manifest(self.store, manifest)
            self._archived_lsn = manifest.archived_lsn()
        due = (
            time.monotonic() - self._last_snapshot >= self.snapshot_interval_seconds
            or self._bytes_since_snapshot >= SNAPSHOT_LOG_BYTES
        )
        if force_snapshot or (due and self.log.committed_lsn() > manifest.snapshots[-1].lsn):
            self._take_snapshot(manifest, scratch)
            changed = True
        changed = self._upload_extras(manifest) or changed
        cutoff_us = self.log.now_us() - int(self.retention_seconds * 1_000_000)
        dropped = manifest.prune(cutoff_us)
        if changed or dropped:
            publish_manifest(self.store, manifest)
        # Deleted only once no published manifest names them.
        for key in dropped:
            self.store.delete(key)
        self._archived_lsn = manifest.archived_lsn()

    def _archive_segment(self, first_lsn: int, path: Path, archived: int) -> SegmentEntry | None:
        """Upload one sealed segment if it holds records past `archived`, verified."""
        data = path.read_bytes()
        # Checking every record's CRC verifies the local copy before it becomes the
        # archive's (in one tight loop: this thread shares the interpreter with requests).
        summary = verify_segment(data, first_lsn)
        if not summary.records or summary.last_lsn <= archived:
            return None
        last_lsn = summary.last_lsn
        key = segment_key(first_lsn, last_lsn)
        sha = put_verified(self.store, key, data)
        return SegmentEntry(
            key=key,
            sha256=sha,
            bytes=len(data),
            first_lsn=first_lsn,
            last_lsn=last_lsn,
            first_time_us=summary.first_time_us,
            last_time_us=summary.last_time_us,
        )

    def _take_snapshot(self, manifest: Manifest, scratch: Path) -> None:
        target = scratch / "snapshot"
        if target.exists():
            shutil.rmtree(target)
        lsn = self._snapshot(target)
        # Every record up to `lsn` was committed before the copy ended, so the time read
        # now is at or after all of theirs: a restore to an instant before it starts from
        # an older snapshot, never from one holding later records.
        # An empty store is the state as of any instant. A log without commit times (records
        # written before times were logged) gets the log's present: later than all of them.
        time_us = self.log.committed_time_us()
        if time_us == 0 and lsn > 0:
            time_us = self.log.now_us()
        key = snapshot_key(lsn, time_us)
        data_file = target / "data.mdb"
        sha = put_file_verified(self.store, key, data_file, scratch)
        manifest.snapshots.append(
            SnapshotEntry(
                key=key, sha256=sha, bytes=data_file.stat().st_size, lsn=lsn, time_us=time_us
            )
        )
        shutil.rmtree(target)
        self._last_snapshot = time.monotonic()
        self._bytes_since_snapshot = 0

    def _upload_extras(self, manifest: Manifest) -> bool:
        if self._extras is None:
            return False
        changed = False
        for name, path in sorted(self._extras().items()):
            if not path.exists():
                continue
            data = path.read_bytes()
            sha = sha256_bytes(data)
            current = manifest.extras.get(name)
            if current is not None and current["sha256"] == sha:
                continue
            key = f"archive/extras/{name}-{sha[:16]}"
            put_verified(self.store, key, data)
            manifest.extras[name] = {"key": key, "sha256": sha}
            changed = True
        return changed
