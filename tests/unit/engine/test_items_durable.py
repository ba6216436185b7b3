"""Item operations over the durable storage (LMDB store and write-ahead log): items and the
table statistics survive a restart, and replaying the log never counts a write twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from keeldb.engine.database import Database
from keeldb.engine.item_store import table_stats
from keeldb.engine.items import find_table
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog


async def _open(data_dir: Path) -> tuple[Database, LmdbStore, LocalLog]:
    store = LmdbStore(data_dir / "store")
    db = Database(store)
    log = await LocalLog.open(data_dir / "wal", store, db.apply)
    db.attach_log(log)
    return db, store, log


async def _close(store: LmdbStore, log: LocalLog) -> None:
    await log.close()
    store.close()


def _table_body() -> dict[str, Any]:
    return {
        "TableName": "durable",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


def test_items_and_statistics_survive_a_restart(tmp_path: Path) -> None:
    async def first_life() -> None:
        db, store, log = await _open(tmp_path)
        await db.dispatch("CreateTable", _table_body())
        writes = [
            db.dispatch(
                "PutItem",
                {"TableName": "durable", "Item": {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}}},
            )
            for i in range(50)
        ]
        await asyncio.gather(*writes)  # concurrent writes share fsyncs
        await db.dispatch("DeleteItem", {"TableName": "durable", "Key": {"pk": {"S": "k0"}}})
        await db.dispatch(
            "UpdateItem",
            {
                "TableName": "durable",
                "Key": {"pk": {"S": "k1"}},
                "UpdateExpression": "ADD v :d",
                "ExpressionAttributeValues": {":d": {"N": "10"}},
            },
        )
        await _close(store, log)

    async def second_life() -> tuple[Any, tuple[int, int]]:
        db, store, log = await _open(tmp_path)
        try:
            got = await db.dispatch("GetItem", {"TableName": "durable", "Key": {"pk": {"S": "k1"}}})
            gone = await db.dispatch(
                "GetItem", {"TableName": "durable", "Key": {"pk": {"S": "k0"}}}
            )
            assert gone == {}
            return got, table_stats(db, find_table(db, "durable"))
        finally:
            await _close(store, log)

    asyncio.run(first_life())
    got, stats = asyncio.run(second_life())
    assert got == {"Item": {"pk": {"S": "k1"}, "v": {"N": "11"}}}
    # 49 items: "pk" (2) + "k1".."k49" (2 or 3) + "v" (1) + a 1- or 2-byte number each.
    expected_bytes = sum(2 + len(f"k{i}") + 1 + 2 for i in range(1, 50))
    assert stats == (49, expected_bytes)


def test_replaying_the_whole_log_into_a_fresh_store_rebuilds_the_same_statistics(
    tmp_path: Path,
) -> None:
    async def write() -> tuple[int, int]:
        db, store, log = await _open(tmp_path)
        await db.dispatch("CreateTable", _table_body())
        for i in range(20):
            await db.dispatch(
                "PutItem",
                {"TableName": "durable", "Item": {"pk": {"S": f"k{i % 7}"}, "n": {"N": str(i)}}},
            )
        stats = table_stats(db, find_table(db, "durable"))
        await _close(store, log)
        return stats

    async def replay() -> tuple[int, int]:
        # A store that lost everything: the log alone rebuilds it, record by record. (These few
        # records fit in the segment being written, which a checkpoint never removes.)
        (tmp_path / "store").rename(tmp_path / "lost-store")
        store = LmdbStore(tmp_path / "store")
        db = Database(store)
        wal_only = await LocalLog.open(tmp_path / "wal", store, db.apply)
        db.attach_log(wal_only)
        try:
            return table_stats(db, find_table(db, "durable"))
        finally:
            await _close(store, wal_only)

    before = asyncio.run(write())
    assert before[0] == 7
    assert asyncio.run(replay()) == before
