"""How a partition's database learns the catalog from the metadata group.

The metadata group's database is the one authority on tables and indexes: CreateTable,
UpdateTable, DeleteTable and UpdateTimeToLive run there. After each such change the
metadata leader proposes one `catalog_sync` redo record to every partition group, holding
the whole catalog as the metadata group applied it at `meta_lsn`. A partition applies the
newest sync it has not yet applied and ignores older or repeated ones, so a sync may be sent
any number of times, by any metadata leader, in any order: the partition ends with the
newest catalog. Tables are matched by TableId: a deleted table's items are removed with it.

Index builds belong to each partition: a global index added by the metadata group is
created here CREATING and backfilled by the partition's own leader over its own items; an
index the partition has already built keeps its own status, and an index the metadata group
dropped is marked DELETING so that the partition removes its entries. A streaming table's
stream opens the partition's shard in the same store write (`streams.partition_synced`).

A table being loaded (restored or imported) is CREATING in the metadata group until its
load is done; its partitions make it ACTIVE first, in their own groups, before the metadata
group does (`keeldb.cluster.backup_route`), so that it is served everywhere once it is
reported ACTIVE. A sync never takes a table a partition serves back to CREATING: no table
goes from ACTIVE back to CREATING, so such a sync was read before the load ended.

It never proposes records itself and never does IO beyond its store writes.
"""

from __future__ import annotations

from typing import Any

import msgpack

from keeldb.engine import catalog, streams
from keeldb.engine.database import Database, redo_kind
from keeldb.engine.items import SERVING_STATUSES
from keeldb.engine.schema import STATUS_CREATING, STATUS_DELETING, Table
from keeldb.model.keys import table_bounds

KIND = "catalog_sync"
# The store key of (meta_lsn of the newest applied sync, LSN of the entry that applied it).
SYNC_STATE_KEY = b"k/catalog_sync"


def catalog_snapshot(db: Database) -> dict[str, Any]:
    """Every table record of a database's catalog, by name."""
    return {table.name: table.to_record() for table in catalog.list_tables(db)}


def sync_record(meta_lsn: int, tables: dict[str, Any]) -> dict[str, Any]:
    return {"kind": KIND, "meta_lsn": meta_lsn, "tables": tables}


def applied_meta_lsn(db: Database) -> int:
    raw = db.store.get(SYNC_STATE_KEY)
    return 0 if raw is None else int(msgpack.unpackb(raw)[0])


def _merge_indexes(incoming: dict[str, Any], local: dict[str, Any] | None) -> dict[str, Any]:
    """The incoming table record with the partition's own index build states."""
    merged = dict(incoming)
    if local is None:
        # A table new to this partition has no items yet: its indexes need no backfill.
        return merged
    mine = {i["name"]: i for i in local["global_indexes"]}
    indexes = []
    for index in incoming["global_indexes"]:
        own = mine.pop(index["name"], None)
        if own is not None and own.get("index_id") == index.get("index_id"):
            if index["status"] == STATUS_DELETING:
                indexes.append(dict(own, status=STATUS_DELETING))
            else:
                # Capacity and other settings from the authority, build state of our own.
                indexes.append(dict(index, status=own["status"]))
        elif index["status"] == STATUS_DELETING:
            continue  # never built here: nothing to remove
        else:
            indexes.append(dict(index, status=STATUS_CREATING))
    for own in mine.values():
        # Dropped by the metadata group: remove its entries here too.
        indexes.append(dict(own, status=STATUS_DELETING))
    merged["global_indexes"] = indexes
    return merged


@redo_kind(KIND)
def apply_catalog_sync(db: Database, lsn: int, record: dict[str, Any]) -> None:
    if lsn <= db.store.applied_lsn():
        return
    meta_lsn: int = record["meta_lsn"]
    raw = db.store.get(SYNC_STATE_KEY)
    if raw is not None:
        done_meta, done_at = msgpack.unpackb(raw)
        # A crash between this applier's two store calls replays the same entry: go on.
        if done_meta >= meta_lsn and done_at != lsn:
            db.store.write([], [], lsn)
            return
    state = catalog.catalog_state(db)
    incoming: dict[str, Any] = record["tables"]
    gone = [
        t
        for name, t in state.tables.items()
        if name not in incoming or incoming[name]["table_id"] != t.table_id
    ]
    # Range deletes first, recording lsn - 1, then everything else with lsn (as DeleteTable).
    db.store.write([(SYNC_STATE_KEY, msgpack.packb([meta_lsn, lsn]))], [], lsn - 1)
    for table in gone:
        start, end = table_bounds(table.table_id)
        db.store.delete_range(start, end, lsn - 1)
    puts: list[tuple[bytes, bytes]] = []
    deletes: list[bytes] = []
    tables: dict[str, Table] = {}
    for table in gone:
        if table.name not in incoming:
            deletes.append(catalog.catalog_key(table.name))
    for name, table_record in sorted(incoming.items()):
        local = state.tables.get(name)
        same = local is not None and local.table_id == table_record["table_id"]
        merged = _merge_indexes(table_record, local.to_record() if same and local else None)
        served = local.status if same and local is not None else None
        if served in SERVING_STATUSES and merged["status"] == STATUS_CREATING:
            merged["status"] = served  # the load ended here first: never back to CREATING
        puts.append((catalog.catalog_key(name), msgpack.packb(merged)))
        tables[name] = Table.from_record(merged)
        # A stream the partition learns of opens its shard here, before any record of it.
        puts.extend(streams.partition_synced(db, lsn, tables[name]))
    db.store.write(puts, deletes, lsn)
    state.tables.clear()
    state.tables.update(tables)
    state.by_id.clear()
    state.by_id.update({t.table_id: t for t in tables.values()})
