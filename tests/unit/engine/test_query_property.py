"""Property tests: paging through a Query or a Scan with random limits returns exactly the
items a plain reference over a dict returns, in DynamoDB's order; parallel scan segments are
disjoint and their union is the full scan."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.engine import batch, query, scan  # noqa: F401  (registers the operations)
from keeldb.engine.database import Database
from keeldb.model.keys import partition_hash
from keeldb.storage.memory import MemoryLog, MemoryStore

PARTITIONS = ("a", "b", "c", "d")
EXAMPLES = 60


def run(db: Database, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(db.dispatch(operation, body))
    finally:
        loop.close()


def make_db(items: dict[tuple[str, int], int]) -> Database:
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    run(
        db,
        "CreateTable",
        {
            "TableName": "prop",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    for (pk, sk), v in items.items():
        item = {"pk": {"S": pk}, "sk": {"N": str(sk)}, "v": {"N": str(v)}}
        run(db, "PutItem", {"TableName": "prop", "Item": item})
    return db


def page_through(
    db: Database, operation: str, body: dict[str, Any], limits: list[int]
) -> list[Any]:
    """Every item of a paged read, each page with the next limit of `limits` (cycled)."""
    seen: list[tuple[str, int, int]] = []
    start = None
    for page in range(10_000):
        request = dict(body)
        limit = limits[page % len(limits)] if limits else 0
        if limit:
            request["Limit"] = limit
        if start is not None:
            request["ExclusiveStartKey"] = start
        answer = run(db, operation, request)
        assert answer["ScannedCount"] <= (limit or answer["ScannedCount"])
        assert answer["Count"] == len(answer["Items"])
        seen += [
            (item["pk"]["S"], int(item["sk"]["N"]), int(item["v"]["N"])) for item in answer["Items"]
        ]
        start = answer.get("LastEvaluatedKey")
        if start is None:
            return seen
    raise AssertionError("paging did not end")


items_strategy = st.dictionaries(
    st.tuples(st.sampled_from(PARTITIONS), st.integers(-50, 50)), st.integers(0, 3), max_size=40
)
limits_strategy = st.lists(st.integers(0, 6), max_size=4)
conditions = st.sampled_from(["", "=", "<", "<=", ">", ">=", "BETWEEN"])


def matches(op: str, sk: int, x: int, y: int) -> bool:
    return {
        "": True,
        "=": sk == x,
        "<": sk < x,
        "<=": sk <= x,
        ">": sk > x,
        ">=": sk >= x,
        "BETWEEN": x <= sk <= y,
    }[op]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=items_strategy,
    limits=limits_strategy,
    partition=st.sampled_from(PARTITIONS),
    op=conditions,
    bounds=st.tuples(st.integers(-60, 60), st.integers(-60, 60)).map(sorted),
    forward=st.booleans(),
    filter_value=st.none() | st.integers(0, 3),
)
def test_paged_query_returns_the_reference_items_in_order(
    items: dict[tuple[str, int], int],
    limits: list[int],
    partition: str,
    op: str,
    bounds: list[int],
    forward: bool,
    filter_value: int | None,
) -> None:
    db = make_db(items)
    x, y = bounds
    condition = "pk = :p"
    values: dict[str, Any] = {":p": {"S": partition}}
    if op == "BETWEEN":
        condition += " AND sk BETWEEN :x AND :y"
        values.update({":x": {"N": str(x)}, ":y": {"N": str(y)}})
    elif op:
        condition += f" AND sk {op} :x"
        values[":x"] = {"N": str(x)}
    body: dict[str, Any] = {
        "TableName": "prop",
        "KeyConditionExpression": condition,
        "ScanIndexForward": forward,
    }
    if filter_value is not None:
        body["FilterExpression"] = "v = :f"
        values[":f"] = {"N": str(filter_value)}
    body["ExpressionAttributeValues"] = values

    expected = sorted(
        (
            (pk, sk, v)
            for (pk, sk), v in items.items()
            if pk == partition
            and matches(op, sk, x, y)
            and (filter_value is None or v == filter_value)
        ),
        key=lambda row: Decimal(row[1]),
        reverse=not forward,
    )
    assert page_through(db, "Query", body, limits) == expected


def scan_order(row: tuple[str, int, int]) -> tuple[bytes, Decimal]:
    return partition_hash({"S": row[0]}), Decimal(row[1])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=items_strategy,
    limits=limits_strategy,
    filter_value=st.none() | st.integers(0, 3),
)
def test_paged_scan_returns_the_reference_items_in_hash_order(
    items: dict[tuple[str, int], int], limits: list[int], filter_value: int | None
) -> None:
    db = make_db(items)
    body: dict[str, Any] = {"TableName": "prop"}
    if filter_value is not None:
        body["FilterExpression"] = "v = :f"
        body["ExpressionAttributeValues"] = {":f": {"N": str(filter_value)}}
    expected = sorted(
        ((pk, sk, v) for (pk, sk), v in items.items() if filter_value is None or v == filter_value),
        key=scan_order,
    )
    assert page_through(db, "Scan", body, limits) == expected


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=items_strategy, limits=limits_strategy, total=st.integers(1, 9))
def test_parallel_scan_segments_are_disjoint_and_union_to_the_full_scan(
    items: dict[tuple[str, int], int], limits: list[int], total: int
) -> None:
    db = make_db(items)
    full = page_through(db, "Scan", {"TableName": "prop"}, [])
    union: list[tuple[str, int, int]] = []
    for segment in range(total):
        body = {"TableName": "prop", "Segment": segment, "TotalSegments": total}
        part = page_through(db, "Scan", body, limits)
        # Each segment is itself in hash order.
        assert part == sorted(part, key=scan_order)
        union += part
    assert len(union) == len(set(union))
    assert sorted(union, key=scan_order) == full


def make_indexed_db(items: dict[tuple[str, int], tuple[str | None, int]]) -> Database:
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    run(
        db,
        "CreateTable",
        {
            "TableName": "prop",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
                {"AttributeName": "g", "AttributeType": "S"},
                {"AttributeName": "r", "AttributeType": "N"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "by_g",
                    "KeySchema": [
                        {"AttributeName": "g", "KeyType": "HASH"},
                        {"AttributeName": "r", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    for (pk, sk), (g, r) in items.items():
        item: dict[str, Any] = {"pk": {"S": pk}, "sk": {"N": str(sk)}, "r": {"N": str(r)}}
        if g is not None:
            item["g"] = {"S": g}
        run(db, "PutItem", {"TableName": "prop", "Item": item})
    return db


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.dictionaries(
        st.tuples(st.sampled_from(PARTITIONS), st.integers(-5, 5)),
        st.tuples(st.none() | st.sampled_from(["x", "y"]), st.integers(0, 4)),
        max_size=30,
    ),
    limits=limits_strategy,
    forward=st.booleans(),
)
def test_paged_query_of_a_global_index_returns_its_entries_in_index_order(
    items: dict[tuple[str, int], tuple[str | None, int]], limits: list[int], forward: bool
) -> None:
    db = make_indexed_db(items)
    body = {
        "TableName": "prop",
        "IndexName": "by_g",
        "KeyConditionExpression": "g = :g",
        "ExpressionAttributeValues": {":g": {"S": "x"}},
        "ScanIndexForward": forward,
    }
    seen: list[tuple[int, str, int]] = []
    start = None
    for page in range(10_000):
        request = dict(body)
        limit = limits[page % len(limits)] if limits else 0
        if limit:
            request["Limit"] = limit
        if start is not None:
            request["ExclusiveStartKey"] = start
        answer = run(db, "Query", request)
        seen += [(int(i["r"]["N"]), i["pk"]["S"], int(i["sk"]["N"])) for i in answer["Items"]]
        start = answer.get("LastEvaluatedKey")
        if start is None:
            break
        assert set(start) == {"pk", "sk", "g", "r"}
    # Equal index keys are ordered by the table's key (pk as bytes, then sk as a number).
    expected = sorted(
        ((r, pk, sk) for (pk, sk), (g, r) in items.items() if g == "x"),
        key=lambda row: (row[0], row[1].encode(), row[2]),
        reverse=not forward,
    )
    assert seen == expected
