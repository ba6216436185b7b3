"""A worker's read-only view of the node's store, and the check that keeps its catalog fresh.

Owns: opening the primary's LMDB environment read-only in another process
(`ReadOnlyLmdbStore`: the same key mapping and scans as `LmdbStore`, never a write), and the
catalog freshness check (`CatalogView.refresh`) run before every local read.

Why a read here is as fresh as one in the primary: the primary applies a committed group to
LMDB in one write transaction and commits it before it wakes the writers (keeldb/storage/
replog.py), so an acknowledged write is in LMDB before its answer leaves the primary. Every
read here starts a new LMDB read transaction after its request arrived, and LMDB's readers see
the last transaction committed when they begin, in any process. So a read that starts after a
write was acknowledged sees it (and a read never sees a write that is not yet durable).

The catalog is cached in memory (the engine's `catalog_state`), so it needs the same
property: before each local read the worker reads the catalog entry of every table the
request names, in a new read transaction, and compares it with the bytes its cache was built
from; any difference (a table created, changed or deleted) reloads the whole catalog from
one consistent scan. A catalog change is acknowledged only after its entry is committed, so a
read that starts after the answer sees the new entry. ListTables and other requests without
one table name reload the catalog every time (they are rare, and the catalog is small), in
one read transaction, so that the cache is always one committed state of the catalog.

It must never write to the store: the primary is its only writer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.schema import Table
from keeldb.storage.lmdb_store import SCAN_CHUNK_PAIRS, STORE_DBS_MAX, LmdbStore

_ITEMS_DB = b"items"
_META_DB = b"meta"
# A table name in a request or an ARN longer than this is refused by the engine anyway
# (DynamoDB's 1024-character ARN bound); the check does not read such names.
TABLE_REFERENCE_LENGTH_MAX = 2048


class ReadOnlyLmdbStore(LmdbStore):
    """The primary's store, opened read-only in another process (shares its lock file)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._env = lmdb.open(
            str(self.path),
            map_size=0,  # adopt the map size the writer recorded
            max_dbs=STORE_DBS_MAX,
            subdir=True,
            readonly=True,
            readahead=False,
            lock=True,
        )
        # Reader slots left by processes that died (a killed worker) are freed, so that they
        # do not keep LMDB from reusing pages.
        self._env.reader_check()
        self._items = self._env.open_db(_ITEMS_DB, create=False)
        self._meta = self._env.open_db(_META_DB, create=False)
        self._txn: Any = None
        self._closed = False
        self._applied_lsn = 0

    def get(self, key: bytes) -> bytes | None:
        try:
            return super().get(key)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)  # the writer grew the map: adopt its size and retry
            return super().get(key)

    def _scan_chunk(
        self,
        start: bytes,
        end: bytes | None,
        reverse: bool,
        after: bytes | None,
        pairs_max: int = SCAN_CHUNK_PAIRS,
    ) -> list[tuple[bytes, bytes]]:
        try:
            return super()._scan_chunk(start, end, reverse, after, pairs_max)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)
            return super()._scan_chunk(start, end, reverse, after, pairs_max)

    def scan_in_one_transaction(self, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """Every pair in [start, end), read in one read transaction: one committed state."""
        pairs_max = 1 << 62
        try:
            return super()._scan_chunk(start, end, False, None, pairs_max)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)
            return super()._scan_chunk(start, end, False, None, pairs_max)

    def applied_lsn(self) -> int:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(b"applied_lsn")
        return 0 if raw is None else int.from_bytes(raw[:8], "little")

    def write(self, puts: Any, deletes: Any, applied_lsn: int) -> None:
        raise AssertionError("a worker never writes to the store")

    def delete_range(self, start: bytes, end: bytes, applied_lsn: int) -> None:
        raise AssertionError("a worker never writes to the store")

    def sync(self) -> None:
        raise AssertionError("a worker never writes to the store")

    def snapshot(self, destination: Path) -> int:
        raise AssertionError("snapshots are the primary's")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._env.close()


def _catalog_end() -> bytes:
    prefix = catalog.CATALOG_PREFIX
    return prefix[:-1] + bytes([prefix[-1] + 1])


class CatalogView:
    """Keeps a read-only database's catalog cache equal to the store's committed catalog."""

    def __init__(self, db: Database, store: ReadOnlyLmdbStore) -> None:
        self._db = db
        self._store = store
        self._entries: dict[str, bytes] = {}  # table name -> the entry the cache was built from
        self.reloads = 0
        self.reload()

    def reload(self) -> None:
        """Rebuild the cache from one scan of the catalog's entries."""
        db = self._db
        entries: dict[str, bytes] = {}
        tables: dict[str, Table] = {}
        # One read transaction, so that the cache is one committed state of the catalog (a
        # chunked scan could mix entries from before and after a change).
        for key, value in self._store.scan_in_one_transaction(
            catalog.CATALOG_PREFIX, _catalog_end()
        ):
            table = Table.from_record(msgpack.unpackb(value, raw=False))
            tables[table.name] = table
            entries[key[len(catalog.CATALOG_PREFIX) :].decode("utf-8")] = value
        db.state[catalog.STATE_KEY] = catalog.CatalogState(
            tables, {t.table_id: t for t in tables.values()}
        )
        self._entries = entries
        self.reloads += 1

    def refresh(self, names: Iterable[Any] | None) -> None:
        """Make the cache current for a request naming these tables (None: unknown tables,
        reload). Names that are not table names are left to the engine's checks."""
        if names is None:
            self.reload()
            return
        get = self._store.get
        entries = self._entries
        for name in names:
            if not isinstance(name, str) or len(name) > TABLE_REFERENCE_LENGTH_MAX:
                continue
            if name.startswith("arn:"):
                # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME (a wrong ARN fails later).
                _, _, rest = name.partition(":table/")
                name = rest.split("/", 1)[0]
                if not name:
                    continue
            if get(catalog.catalog_key(name)) != entries.get(name):
                self.reload()
                return


def table_names(operation: str, body: dict[str, Any]) -> list[Any] | None:
    """The tables a local read names (None: it names none, or no single one)."""
    if operation == "BatchGetItem":
        requested = body.get("RequestItems")
        return list(requested) if isinstance(requested, dict) else []
    name = body.get("TableName")
    if name is None:
        return None
    return [name]
