"""The scrub: rebuild a stopped node's state from its archive and compare it with its store.

This module owns `verify_node` (what `keeldb verify` runs): it reads the node's archive
manifest, starts from the newest archived snapshot at or below the store's applied LSN,
replays the archived segments (every object checked against its SHA-256) and then the node's
own log segments for records the archive does not hold yet, up to the store's applied LSN,
through the same appliers as the node; then it walks both stores in key order (the whole
store, or one table's range) and reports every key that is missing, extra or different. Like
DynamoDB's continuous durability checks, it proves that the archive and the log reproduce
the store.

It only reads the node's data directory (it never cuts a torn tail, takes the log's lock
or writes the store), so run it on a stopped node: a running node's store moves on while the
comparison reads it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keeldb.backup.archive import load_manifest
from keeldb.backup.manifest import ArchiveGapError
from keeldb.backup.rebuild import REPLAY_BATCH_RECORDS, _apply
from keeldb.backup.store import BackupStore, get_file_verified, get_verified
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.model.keys import table_bounds
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.wal import (
    SEGMENT_NAME_PATTERN,
    CorruptLogError,
    read_segment,
)

DIFFERENCES_SHOWN_MAX = 20  # differences listed in the report; all are counted

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


class VerifyError(Exception):
    """The check could not be made (no archive, a table that does not exist ...)."""


@dataclass(slots=True)
class Report:
    lsn: int = 0  # the LSN both states were compared at
    keys_compared: int = 0
    missing: int = 0  # in the rebuilt state, not in the store
    extra: int = 0  # in the store, not in the rebuilt state
    different: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.different

    def note(self, text: str) -> None:
        if len(self.examples) < DIFFERENCES_SHOWN_MAX:
            self.examples.append(text)


def _local_records(wal_dir: Path, after_lsn: int) -> Iterator[tuple[int, int, bytes]]:
    """The node's own log records after `after_lsn`, read without changing anything; the
    last segment may end with a torn record, which is where its records end."""
    segments = sorted(
        int(m.group(1)) for p in wal_dir.iterdir() if (m := SEGMENT_NAME_PATTERN.match(p.name))
    )
    for index, first_lsn in enumerate(segments):
        following = segments[index + 1] if index + 1 < len(segments) else None
        if following is not None and following <= after_lsn + 1:
            continue
        data = (wal_dir / f"{first_lsn:020d}.wal").read_bytes()
        records = read_segment(data, first_lsn)
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except CorruptLogError:
                if following is None:
                    break  # a torn tail: never acknowledged, never applied
                raise
            yield record


def verify_node(
    data_dir: Path,
    store: BackupStore,
    *,
    table: str | None = None,
    progress: ProgressFn | None = None,
    keyring: Any = None,
) -> Report:
    """Rebuild the state of the node in `data_dir` from `store` (its part of the backup store)
    and its log, and compare it with its item store. A node encrypted at rest is read with
    its `keyring` (`keeldb.crypto.Keyring`): records are opened to be replayed, and values
    are compared as plaintext (sealing the same value twice never gives the same bytes)."""
    manifest = load_manifest(store)
    if not manifest.snapshots:
        raise VerifyError(f"{store.describe()} holds no archive of this node")
    live = LmdbStore(Path(data_dir) / "store")
    workdir = Path(tempfile.mkdtemp(prefix="keeldb-verify-"))
    try:
        target = live.applied_lsn()
        candidates = [s for s in manifest.snapshots if s.lsn <= target]
        if not candidates:
            raise VerifyError(
                f"the archive's oldest snapshot holds record {manifest.snapshots[0].lsn}, "
                f"past the store's {target}"
            )
        snapshot = candidates[-1]
        (workdir / "store").mkdir()
        if progress is not None:
            progress("snapshot", 0, snapshot.bytes)
        get_file_verified(store, snapshot.key, snapshot.sha256, workdir / "store" / "data.mdb")
        if progress is not None:
            progress("snapshot", snapshot.bytes, snapshot.bytes)
        rebuilt = LmdbStore(workdir / "store")
        try:
            codec = None if keyring is None else keyring.record_codec
            database = Database(_readable(rebuilt, keyring), record_codec=codec)
            lsn = snapshot.lsn
            segments = [s for s in manifest.segments if s.last_lsn > lsn and s.first_lsn <= target]
            total = sum(s.bytes for s in segments)
            done = 0
            batch: list[tuple[int, bytes]] = []

            def take(record_lsn: int, payload: bytes) -> None:
                nonlocal lsn, batch
                if record_lsn <= lsn or record_lsn > target:
                    return
                if record_lsn != lsn + 1:
                    raise ArchiveGapError(f"records {lsn + 1}..{record_lsn - 1} are missing")
                lsn = record_lsn
                batch.append((record_lsn, payload))
                if len(batch) >= REPLAY_BATCH_RECORDS:
                    _apply(database, rebuilt, batch)
                    batch = []

            for segment in segments:
                data = get_verified(store, segment.key, segment.sha256)
                for record_lsn, _, payload in read_segment(data, segment.first_lsn):
                    take(record_lsn, payload)
                done += segment.bytes
                if progress is not None:
                    progress("replay", done, total)
            if lsn < target:
                for record_lsn, _, payload in _local_records(Path(data_dir) / "wal", lsn):
                    take(record_lsn, payload)
            _apply(database, rebuilt, batch)
            if lsn != target:
                raise ArchiveGapError(
                    f"the archive and the log reach record {lsn}, the store holds {target}"
                )
            start, end = b"", None
            if table is not None:
                found = catalog.find_table(Database(_readable(live, keyring)), table)
                if found is None:
                    raise VerifyError(f"no table {table} in the store")
                start, end_bytes = table_bounds(found.table_id)
                end = end_bytes
            report = Report(lsn=target)
            _compare(
                _readable(rebuilt, keyring), _readable(live, keyring), start, end, report, progress
            )
            return report
        finally:
            rebuilt.close()
    finally:
        live.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _readable(store: LmdbStore, keyring: Any) -> Any:
    if keyring is None:
        return store
    from keeldb.crypto import EncryptingStore

    return EncryptingStore(store, keyring, owns_keyring=False)


def _compare(
    rebuilt: Any,
    live: Any,
    start: bytes,
    end: bytes | None,
    report: Report,
    progress: ProgressFn | None,
) -> None:
    expected = rebuilt.scan(start, end)
    found = live.scan(start, end)
    left = next(expected, None)
    right = next(found, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right[0]):
            assert left is not None
            report.missing += 1
            report.note(f"missing from the store: key {left[0].hex()}")
            left = next(expected, None)
        elif left is None or right[0] < left[0]:
            report.extra += 1
            report.note(f"in the store but not in the archive: key {right[0].hex()}")
            right = next(found, None)
        else:
            if left[1] != right[1]:
                report.different += 1
                report.note(f"different value: key {left[0].hex()}")
            left = next(expected, None)
            right = next(found, None)
        report.keys_compared += 1
        if progress is not None and report.keys_compared % 1000 == 0:
            progress("compare", report.keys_compared, 0)
    if progress is not None:
        progress("compare", report.keys_compared, report.keys_compared)
