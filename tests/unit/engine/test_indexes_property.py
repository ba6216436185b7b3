"""Property: after any sequence of puts, updates and deletes (with a global index added and
backfilled part-way through, and another deleted), every secondary index holds exactly the
entries a slow, obvious reference derives from the base items, its statistics count them, a
deleted index leaves nothing behind, and replaying the log into a new store gives the same
bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.engine import indexes
from keeldb.engine.catalog import find_table
from keeldb.engine.database import Database
from keeldb.engine.item_store import decode_stored
from keeldb.model.errors import ClientError
from keeldb.model.keys import (
    INDEX_ID_BYTES,
    INDEX_ID_MAX,
    index_bounds,
    index_item_key,
    table_bounds,
    table_prefix,
)
from keeldb.model.values import item_size
from keeldb.storage.memory import MemoryLog, MemoryStore

Item = dict[str, Any]
TABLE = "prop"


class RecordingLog(MemoryLog):
    def __init__(self, apply: Any) -> None:
        super().__init__(apply)
        self.entries: list[tuple[int, bytes]] = []

    async def append(self, record: bytes) -> int:
        self.entries.append((self.committed_lsn() + 1, record))
        return await super().append(record)


def definition(name: str, type_: str) -> dict[str, str]:
    return {"AttributeName": name, "AttributeType": type_}


CREATE = {
    "TableName": TABLE,
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        definition("pk", "S"),
        definition("sk", "N"),
        definition("l", "S"),
        definition("g", "S"),
        definition("r", "N"),
    ],
    "BillingMode": "PAY_PER_REQUEST",
    "LocalSecondaryIndexes": [
        {
            "IndexName": "by_l",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "l", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]},
        }
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by_g",
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        },
        {
            "IndexName": "by_gr",
            "KeySchema": [
                {"AttributeName": "g", "KeyType": "HASH"},
                {"AttributeName": "r", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ],
}
ADD_INDEX = {
    "TableName": TABLE,
    "AttributeDefinitions": [definition("b", "S")],
    "GlobalSecondaryIndexUpdates": [
        {
            "Create": {
                "IndexName": "by_b",
                "KeySchema": [{"AttributeName": "b", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a", "g"]},
            }
        }
    ],
}

DROP_INDEX = {
    "TableName": TABLE,
    "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "by_gr"}}],
}

# Small domains, so that index keys collide and entries move between partitions.
pks = st.sampled_from(["p0", "p1", "p2"])
sks = st.integers(min_value=0, max_value=5)
strings = st.sampled_from(["u", "v", "w", "x"])
optional = {
    "l": strings.map(lambda v: {"S": v}),
    "g": strings.map(lambda v: {"S": v}),
    "r": st.integers(-2, 2).map(lambda v: {"N": str(v)}),
    "a": strings.map(lambda v: {"S": v * 50}),
    "b": st.one_of(strings.map(lambda v: {"S": v}), st.just({"N": "1"})),
    "z": strings.map(lambda v: {"S": v}),
}


@st.composite
def puts(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    item: Item = {"pk": {"S": draw(pks)}, "sk": {"N": str(draw(sks))}}
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        item[name] = draw(optional[name])
    return "PutItem", {"TableName": TABLE, "Item": item}


@st.composite
def updates(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    names = sorted(draw(st.sets(st.sampled_from(sorted(optional)), min_size=1)))
    sets: list[str] = []
    removes: list[str] = []
    values: dict[str, Any] = {}
    for i, name in enumerate(names):
        if draw(st.booleans()):
            sets.append(f"{name} = :v{i}")
            values[f":v{i}"] = draw(optional[name])
        else:
            removes.append(name)
    expression = ""
    if sets:
        expression += "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    body: dict[str, Any] = {
        "TableName": TABLE,
        "Key": {"pk": {"S": draw(pks)}, "sk": {"N": str(draw(sks))}},
        "UpdateExpression": expression.strip(),
    }
    if values:
        body["ExpressionAttributeValues"] = values
    return "UpdateItem", body


@st.composite
def deletes(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    key = {"pk": {"S": draw(pks)}, "sk": {"N": str(draw(sks))}}
    return "DeleteItem", {"TableName": TABLE, "Key": key}


steps = st.one_of(
    puts(),
    puts(),
    updates(),
    deletes(),
    st.just(("AddIndex", {})),
    st.just(("DropIndex", {})),
    st.just(("Backfill", {})),
)


def reference(table: Any, index: Any, items: list[Item]) -> dict[bytes, Item]:
    out: dict[bytes, Item] = {}
    iid = indexes.index_id(table, index)
    for item in items:
        values = []
        for attribute in (index.hash_key, index.range_key):
            if attribute is None:
                continue
            value = item.get(attribute.name)
            if value is None or attribute.type not in value or value[attribute.type] == "":
                break
            values.append(value)
        else:
            if index.projection_type == "ALL":
                image = item
            else:
                names = set(table.key_names) | set(index.key_names)
                if index.projection_type == "INCLUDE":
                    names |= set(index.non_key_attributes)
                image = {k: v for k, v in item.items() if k in names}
            range_value = values[1] if len(values) > 1 else None
            key = index_item_key(
                table.table_id, iid, values[0], range_value, item["pk"], item["sk"]
            )
            out[key] = image
    return out


def check(db: Database, store: MemoryStore, *, complete: bool) -> None:
    """Indexes equal the reference (a CREATING index: a subset of it, until complete)."""
    table = find_table(db, TABLE)
    assert table is not None
    start, end = index_bounds(table.table_id, 0)
    items = [decode_stored(data)[0] for _, data in store.scan(start, end)]
    for index in table.local_indexes + table.global_indexes:
        start, end = index_bounds(table.table_id, indexes.index_id(table, index))
        stored = {k: decode_stored(v)[0] for k, v in store.scan(start, end)}
        expected = reference(table, index, items)
        if index.status == "DELETING" and not complete:
            continue  # no longer maintained; its entries go with it
        if index.status == "CREATING" and not complete:
            assert all(expected.get(k) == v for k, v in stored.items()), index.name
        else:
            assert index.status == "ACTIVE", index.name
            assert stored == expected, index.name
        count, size = indexes.index_stats(db, table, index)
        assert count == len(stored)
        assert size == sum(
            item_size(e) + indexes.INDEX_ENTRY_OVERHEAD_BYTES for e in stored.values()
        )
    # The item collections of the local index's table add up too.
    for pk in ("p0", "p1", "p2"):
        collection = [i for i in items if i["pk"] == {"S": pk}]
        by_l = table.index("by_l")
        expected_size = sum(item_size(i) for i in collection) + sum(
            item_size(e) + indexes.INDEX_ENTRY_OVERHEAD_BYTES
            for e in reference(table, by_l, collection).values()
        )
        assert indexes.collection_bytes(db, table, {"S": pk}) == expected_size


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(steps, max_size=40))
def test_indexes_always_hold_exactly_the_reference_entries(
    script: list[tuple[str, dict[str, Any]]],
) -> None:
    store = MemoryStore()
    db = Database(store)
    log = RecordingLog(db.apply)
    db.attach_log(log)
    loop = asyncio.new_event_loop()
    db.state[indexes.STATE_KEY] = loop.create_future()  # backfills run when the script says
    try:
        loop.run_until_complete(db.dispatch("CreateTable", CREATE))
        added = False
        for operation, body in script:
            if operation == "AddIndex":
                if not added:
                    try:
                        loop.run_until_complete(db.dispatch("UpdateTable", ADD_INDEX))
                        added = True
                    except ClientError:
                        pass  # one online index change at a time
                continue
            if operation == "DropIndex":
                # Delete by_gr (an ALL index) unless another index change is under way.
                try:
                    loop.run_until_complete(db.dispatch("UpdateTable", DROP_INDEX))
                except ClientError:
                    pass  # one online index change at a time, or already deleted
                continue
            if operation == "Backfill":
                loop.run_until_complete(indexes.step(db))
                continue
            try:
                loop.run_until_complete(db.dispatch(operation, body))
            except ClientError:
                pass  # a refused write (a wrongly typed index key) changes nothing
            check(db, store, complete=False)
        while loop.run_until_complete(indexes.step(db)):
            pass
        check(db, store, complete=True)
        table = find_table(db, TABLE)
        assert table is not None
        ids = {indexes.index_id(table, i) for i in table.local_indexes + table.global_indexes}
        start, end = table_bounds(table.table_id)
        for key, _ in store.scan(start, end):
            # Every stored key belongs to the base table, a live index, or the meta range.
            index_part = key[len(table_prefix(table.table_id)) :][:INDEX_ID_BYTES]
            assert int.from_bytes(index_part, "big") in ids | {0, INDEX_ID_MAX}
        rebuilt = MemoryStore()
        Database(rebuilt).apply(log.entries)
        assert list(rebuilt.scan(b"", None)) == list(store.scan(b"", None))
    finally:
        loop.close()


QUERY_TABLE = "queried"
QUERY_CREATE = {
    "TableName": QUERY_TABLE,
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        definition("pk", "S"),
        definition("sk", "N"),
        definition("g", "S"),
        definition("r", "N"),
    ],
    "BillingMode": "PAY_PER_REQUEST",
    "LocalSecondaryIndexes": [
        {
            "IndexName": "by_r",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "r", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by_gr",
            "KeySchema": [
                {"AttributeName": "g", "KeyType": "HASH"},
                {"AttributeName": "r", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]},
        }
    ],
}
query_items = st.lists(
    st.fixed_dictionaries(
        {"pk": pks, "sk": sks},
        optional={
            "g": st.sampled_from(["u", "v"]),
            "r": st.integers(-3, 3),
            "a": strings,
            "z": strings,
        },
    ),
    max_size=30,
)


def wire(item: dict[str, Any]) -> Item:
    return {k: {"N": str(v)} if isinstance(v, int) else {"S": v} for k, v in item.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query_items,
    st.sampled_from(["by_r", "by_gr"]),
    st.sampled_from(["p0", "p1", "u", "v"]),
    st.one_of(st.none(), st.integers(-3, 3)),
    st.booleans(),
    st.integers(1, 7),
)
def test_paged_index_queries_return_the_reference_entries_in_index_order(
    items: list[dict[str, Any]],
    index_name: str,
    hash_value: str,
    low: int | None,
    forward: bool,
    limit: int,
) -> None:
    store = MemoryStore()
    db = Database(store)
    db.attach_log(MemoryLog(db.apply))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(db.dispatch("CreateTable", QUERY_CREATE))
        final: dict[tuple[str, int], dict[str, Any]] = {}
        for item in items:
            loop.run_until_complete(
                db.dispatch("PutItem", {"TableName": QUERY_TABLE, "Item": wire(item)})
            )
            final[(item["pk"], item["sk"])] = item
        hash_name = "pk" if index_name == "by_r" else "g"
        projected = {"pk", "sk", "r"} | ({"g", "a"} if index_name == "by_gr" else set())
        expected = [
            {k: v for k, v in item.items() if k in projected}
            for item in final.values()
            if item.get(hash_name) == hash_value
            and "r" in item
            and (low is None or item["r"] >= low)
        ]
        # Index order: the index sort key, then the base table's key (ties in DynamoDB come
        # back in an order of its own; here they follow the base key).
        expected.sort(key=lambda i: (i["r"], i["pk"], i["sk"]), reverse=not forward)
        condition = f"{hash_name} = :h" + ("" if low is None else " AND r >= :r")
        values: dict[str, Any] = {":h": {"S": hash_value}}
        if low is not None:
            values[":r"] = {"N": str(low)}
        got: list[Item] = []
        start = None
        for _ in range(len(expected) + 2):
            body: dict[str, Any] = {
                "TableName": QUERY_TABLE,
                "IndexName": index_name,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": values,
                "ScanIndexForward": forward,
                "Limit": limit,
            }
            if start is not None:
                body["ExclusiveStartKey"] = start
            page = loop.run_until_complete(db.dispatch("Query", body))
            got.extend(page["Items"])
            start = page.get("LastEvaluatedKey")
            if start is None:
                break
        assert start is None
        assert got == [wire(i) for i in expected]
    finally:
        loop.close()
