"""BatchWriteItem's one redo record: every after-image is in the pending overlay while the
record is in flight and leaves it when the record is applied or its proposal fails; an item
held by a prepared transaction refuses the whole batch; a table with indexes and a stream
gets the same entries, statistics and stream records as from one PutItem per item."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.engine import batch  # noqa: F401  (registers the operations)
from keeldb.engine.database import Database
from keeldb.engine.item_store import items_state, storage_key
from keeldb.engine.items import find_table
from keeldb.model.errors import TransactionConflictException
from keeldb.storage.memory import MemoryLog, MemoryStore


class FailingLog(MemoryLog):
    """A log whose appends fail while `failing` is set, as a failed fsync makes them."""

    failing = False

    async def append(self, record: bytes) -> int:
        if self.failing:
            raise OSError("the disk is gone")
        return await super().append(record)


def s(text: str) -> dict[str, str]:
    return {"S": text}


def database() -> tuple[Database, FailingLog]:
    db = Database(MemoryStore())
    log = FailingLog(db.apply)
    db.attach_log(log)
    return db, log


def run(db: Database, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(db.dispatch(operation, body))


def create(db: Database, name: str, **extra: Any) -> None:
    run(
        db,
        "CreateTable",
        {
            "TableName": name,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]
            + ([{"AttributeName": "g", "AttributeType": "S"}] if extra else []),
            "BillingMode": "PAY_PER_REQUEST",
            **extra,
        },
    )


def puts(table: str, count: int) -> dict[str, Any]:
    return {
        "RequestItems": {
            table: [
                {"PutRequest": {"Item": {"pk": s(f"k{i}"), "g": s(f"g{i % 2}"), "v": s("x")}}}
                for i in range(count)
            ]
        }
    }


def test_a_failed_proposal_leaves_no_image_in_the_overlay() -> None:
    db, log = database()
    create(db, "tbl")
    log.failing = True
    with pytest.raises(OSError):
        run(db, "BatchWriteItem", puts("tbl", 5))
    assert items_state(db).pending == {}
    log.failing = False
    run(db, "BatchWriteItem", puts("tbl", 5))
    assert items_state(db).pending == {}
    assert run(db, "DescribeTable", {"TableName": "tbl"})["Table"]["ItemCount"] == 5


def test_images_are_in_the_overlay_while_the_record_is_in_flight() -> None:
    db, log = database()
    create(db, "tbl")
    seen: list[int] = []
    real_append = log.append

    async def watching_append(record: bytes) -> int:
        seen.append(len(items_state(db).pending))
        return await real_append(record)

    log.append = watching_append  # type: ignore[method-assign]
    run(db, "BatchWriteItem", puts("tbl", 7))
    assert seen == [7]
    assert items_state(db).pending == {}


def test_an_item_held_by_a_transaction_refuses_the_whole_batch() -> None:
    db, log = database()
    create(db, "tbl")
    run(db, "BatchWriteItem", puts("tbl", 3))
    lsn = log.committed_lsn()
    held_key = storage_key(find_table(db, "tbl"), {"pk": s("k2")})
    items_state(db).held[held_key] = "txn-1"
    # The batch writes the three items again; one of them is held.
    with pytest.raises(TransactionConflictException):
        run(db, "BatchWriteItem", puts("tbl", 3))
    assert log.committed_lsn() == lsn
    assert items_state(db).pending == {}


def test_a_batch_maintains_indexes_statistics_and_streams_as_single_puts_do() -> None:
    extra = {
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }
    batched, _ = database()
    single, _ = database()
    for db in (batched, single):
        create(db, "tbl", **extra)
    run(batched, "BatchWriteItem", puts("tbl", 6))
    for request in puts("tbl", 6)["RequestItems"]["tbl"]:
        run(single, "PutItem", {"TableName": "tbl", **request["PutRequest"]})

    def state(db: Database) -> Any:
        described = run(db, "DescribeTable", {"TableName": "tbl"})["Table"]
        index = described["GlobalSecondaryIndexes"][0]
        by_g = run(
            db,
            "Query",
            {
                "TableName": "tbl",
                "IndexName": "by_g",
                "KeyConditionExpression": "g = :g",
                "ExpressionAttributeValues": {":g": s("g1")},
            },
        )["Items"]
        return (
            described["ItemCount"],
            described["TableSizeBytes"],
            index["ItemCount"],
            index["IndexSizeBytes"],
            sorted(item["pk"]["S"] for item in by_g),
        )

    assert state(batched) == state(single)
    assert state(batched)[0] == 6
    assert state(batched)[4] == ["k1", "k3", "k5"]


def test_put_records_carry_the_stored_value_and_older_records_with_the_item_still_apply() -> None:
    from keeldb.engine.database import decode_record, encode_record
    from keeldb.engine.item_store import committed_item, decode_stored, encode_item

    db, log = database()
    create(db, "tbl")
    proposed: list[dict[str, Any]] = []
    real_append = log.append

    async def recording_append(record: bytes) -> int:
        proposed.append(decode_record(record))
        return await real_append(record)

    log.append = recording_append  # type: ignore[method-assign]
    item = {"pk": s("a"), "v": s("x")}
    run(db, "PutItem", {"TableName": "tbl", "Item": item})
    assert "item" not in proposed[-1]
    assert decode_stored(proposed[-1]["value"]) == (item, 5)
    # A record in the older form (as an existing log may hold) applies the same way.
    table = find_table(db, "tbl")
    key = storage_key(table, {"pk": s("b")})
    older = {"kind": "put", "table": table.table_id, "name": "tbl", "key": key}
    older.update(item={"pk": s("b"), "w": s("yy")}, size=6)
    db.apply([(log.committed_lsn() + 1, encode_record(older))])
    assert committed_item(db, key) == ({"pk": s("b"), "w": s("yy")}, 6)
    assert db.store.get(key) == encode_item({"pk": s("b"), "w": s("yy")}, 6)
    described = run(db, "DescribeTable", {"TableName": "tbl"})["Table"]
    assert (described["ItemCount"], described["TableSizeBytes"]) == (2, 11)
