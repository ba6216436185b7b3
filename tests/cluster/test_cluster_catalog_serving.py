"""A table being loaded (restored or imported) on a cluster: its partitions make it ACTIVE in
their own groups before the metadata group does, and no catalog sync read before the load
ended takes it back to CREATING there (on in-memory databases)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.cluster import catalog_sync
from keeldb.engine import backups as ops
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.schema import Table
from keeldb.model.errors import ResourceNotFoundException

REQUEST = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


def _loading(meta: Database, name: str) -> Table:
    load = {"source": "pitr", "table_id": "source-id", "time_us": 1}
    return asyncio.run(ops.create_loading_table(meta, {"TableName": name, **REQUEST}, load, None))


def _sync(partition: Database, meta: Database) -> None:
    record = catalog_sync.sync_record(meta.store.applied_lsn(), catalog_sync.catalog_snapshot(meta))
    asyncio.run(partition.propose(record))


def _status(db: Database, name: str) -> str | None:
    table = catalog.find_table(db, name)
    return None if table is None else table.status


def _get(db: Database, name: str) -> Any:
    return asyncio.run(db.dispatch("GetItem", {"TableName": name, "Key": {"pk": {"S": "k"}}}))


def test_a_partition_serves_a_loaded_table_before_the_metadata_group_says_active() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    table = _loading(meta, "restored")
    _sync(partition, meta)
    assert _status(partition, "restored") == "CREATING"
    with pytest.raises(ResourceNotFoundException):
        _get(partition, "restored")
    local = catalog.find_table(partition, "restored")
    assert local is not None
    asyncio.run(ops.finish_load(partition, local))
    assert _status(partition, "restored") == "ACTIVE"
    assert _status(meta, "restored") == "CREATING"
    assert _get(partition, "restored") == {}
    asyncio.run(ops.finish_load(meta, table))
    _sync(partition, meta)
    assert _status(partition, "restored") == "ACTIVE"


def test_a_sync_read_before_the_load_ended_leaves_a_served_table_active() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _loading(meta, "restored")
    _sync(partition, meta)
    local = catalog.find_table(partition, "restored")
    assert local is not None
    asyncio.run(ops.finish_load(partition, local))
    asyncio.run(meta.dispatch("CreateTable", {"TableName": "other", **REQUEST}))
    _sync(partition, meta)  # a newer sync, in which "restored" is still CREATING
    assert _status(partition, "other") == "ACTIVE"
    assert _status(partition, "restored") == "ACTIVE"
    assert _get(partition, "restored") == {}


def test_a_table_re_created_under_the_same_name_is_not_served_before_its_own_load() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    first = _loading(meta, "restored")
    _sync(partition, meta)
    local = catalog.find_table(partition, "restored")
    assert local is not None
    asyncio.run(ops.finish_load(partition, local))
    asyncio.run(ops.abandon_load(meta, first))
    second = _loading(meta, "restored")
    assert second.table_id != first.table_id
    _sync(partition, meta)
    mine = catalog.find_table(partition, "restored")
    assert mine is not None
    assert mine.table_id == second.table_id
    assert mine.status == "CREATING"
