"""How a partition's database takes the catalog from the metadata group: the newest sync
wins, repeats and older syncs change nothing, a deleted table takes its items with it, and
index builds stay the partition's own."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from keeldb.cluster import catalog_sync
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.model.keys import table_bounds


def _create(db: Database, name: str, **extra: Any) -> dict[str, Any]:
    body = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
        **extra,
    }
    if "GlobalSecondaryIndexes" in extra:
        body["AttributeDefinitions"].append({"AttributeName": "g", "AttributeType": "S"})
    answer: dict[str, Any] = asyncio.run(db.dispatch("CreateTable", body))
    return answer


GSI = {
    "IndexName": "by_g",
    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
    "Projection": {"ProjectionType": "ALL"},
}


def _sync(partition: Database, meta: Database, meta_lsn: int | None = None) -> None:
    lsn = meta.store.applied_lsn() if meta_lsn is None else meta_lsn
    record = catalog_sync.sync_record(lsn, catalog_sync.catalog_snapshot(meta))
    asyncio.run(partition.propose(record))


def test_a_partition_learns_the_tables_of_the_metadata_group_with_their_ids() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "orders")
    _sync(partition, meta)
    mine = catalog.find_table(partition, "orders")
    theirs = catalog.find_table(meta, "orders")
    assert mine is not None and theirs is not None
    assert mine.table_id == theirs.table_id
    assert catalog_sync.applied_meta_lsn(partition) == meta.store.applied_lsn()


def test_an_older_or_repeated_sync_changes_nothing() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "first")
    old_lsn = meta.store.applied_lsn()
    old = catalog_sync.sync_record(old_lsn, catalog_sync.catalog_snapshot(meta))
    _create(meta, "second")
    _sync(partition, meta)
    asyncio.run(partition.propose(old))
    assert [t.name for t in catalog.list_tables(partition)] == ["first", "second"]
    _sync(partition, meta)
    assert [t.name for t in catalog.list_tables(partition)] == ["first", "second"]


def test_a_table_deleted_by_the_metadata_group_takes_its_items_along() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "gone")
    _sync(partition, meta)
    asyncio.run(partition.dispatch("PutItem", {"TableName": "gone", "Item": {"pk": {"S": "a"}}}))
    table = catalog.find_table(partition, "gone")
    assert table is not None
    start, end = table_bounds(table.table_id)
    assert any(True for _ in partition.store.scan(start, end))
    asyncio.run(meta.dispatch("DeleteTable", {"TableName": "gone"}))
    _sync(partition, meta)
    assert catalog.find_table(partition, "gone") is None
    assert not any(True for _ in partition.store.scan(start, end))


def test_a_re_created_table_replaces_the_old_one_and_its_items() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "again")
    _sync(partition, meta)
    asyncio.run(partition.dispatch("PutItem", {"TableName": "again", "Item": {"pk": {"S": "a"}}}))
    asyncio.run(meta.dispatch("DeleteTable", {"TableName": "again"}))
    _create(meta, "again")
    _sync(partition, meta)
    answer = asyncio.run(
        partition.dispatch("GetItem", {"TableName": "again", "Key": {"pk": {"S": "a"}}})
    )
    assert "Item" not in answer
    theirs = catalog.find_table(meta, "again")
    mine = catalog.find_table(partition, "again")
    assert theirs is not None and mine is not None and mine.table_id == theirs.table_id


def test_an_index_added_later_is_built_by_the_partition_itself() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "late")
    _sync(partition, meta)
    asyncio.run(
        partition.dispatch(
            "PutItem", {"TableName": "late", "Item": {"pk": {"S": "a"}, "g": {"S": "x"}}}
        )
    )
    asyncio.run(
        meta.dispatch(
            "UpdateTable",
            {
                "TableName": "late",
                "AttributeDefinitions": [{"AttributeName": "g", "AttributeType": "S"}],
                "GlobalSecondaryIndexUpdates": [{"Create": GSI}],
            },
        )
    )
    # The metadata group has no items: it may already call the index ACTIVE.
    _sync(partition, meta)
    table = catalog.find_table(partition, "late")
    assert table is not None
    assert [i.status for i in table.global_indexes] == ["CREATING"]


def test_an_index_of_a_new_table_needs_no_build() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "indexed", GlobalSecondaryIndexes=[GSI])
    _sync(partition, meta)
    table = catalog.find_table(partition, "indexed")
    assert table is not None
    assert [i.status for i in table.global_indexes] == ["ACTIVE"]


def test_the_sync_state_is_kept_in_the_partitions_store() -> None:
    meta, partition = Database.in_memory(), Database.in_memory()
    _create(meta, "kept")
    _sync(partition, meta)
    raw = partition.store.get(catalog_sync.SYNC_STATE_KEY)
    assert raw is not None
    meta_lsn, entry_lsn = msgpack.unpackb(raw)
    assert meta_lsn == meta.store.applied_lsn()
    assert entry_lsn == partition.store.applied_lsn()
