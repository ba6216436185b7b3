"""Scan driven through `Database.dispatch` over an in-memory store and log: hash order,
paging, filters, projections, Select, parallel segments, capacity, and DynamoDB's error types
and messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine import batch, query, scan  # noqa: F401  (registers the operations)
from keeldb.engine.database import Database
from keeldb.model.errors import ClientError, ResourceNotFoundException, ValidationException
from keeldb.model.keys import partition_hash
from keeldb.storage.memory import MemoryLog, MemoryStore


class Harness:
    """A database over a MemoryStore and MemoryLog, with a private event loop."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.db.attach_log(MemoryLog(self.db.apply))
        self.loop = asyncio.new_event_loop()

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    def message(self, body: dict[str, Any]) -> str:
        with pytest.raises(ValidationException) as caught:
            self("Scan", body)
        return caught.value.message

    def create(self, name: str, keys: list[tuple[str, str, str]]) -> None:
        self(
            "CreateTable",
            {
                "TableName": name,
                "KeySchema": [{"AttributeName": a, "KeyType": k} for a, _, k in keys],
                "AttributeDefinitions": [
                    {"AttributeName": a, "AttributeType": t} for a, t, _ in keys
                ],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

    def put(self, table: str, item: dict[str, Any]) -> None:
        self("PutItem", {"TableName": table, "Item": item})


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


ITEMS = 40


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.create("hash", [("pk", "S", "HASH")])
    harness.create("range", [("pk", "N", "HASH"), ("sk", "N", "RANGE")])
    for i in range(ITEMS):
        harness.put("hash", {"pk": s(f"k{i}"), "v": n(str(i % 4))})
    for i in range(5):
        for j in range(3):
            harness.put("range", {"pk": n(str(i)), "sk": n(str(j))})
    yield harness
    harness.loop.close()


def pks(answer: dict[str, Any]) -> list[str]:
    return [item["pk"]["S"] for item in answer["Items"]]


def test_scan_returns_every_item_in_partition_key_hash_order(h: Harness) -> None:
    answer = h("Scan", {"TableName": "hash"})
    assert answer["Count"] == answer["ScannedCount"] == ITEMS
    assert "LastEvaluatedKey" not in answer
    expected = sorted((f"k{i}" for i in range(ITEMS)), key=lambda k: partition_hash(s(k)))
    assert pks(answer) == expected


def test_scan_returns_a_partition_in_sort_key_order(h: Harness) -> None:
    answer = h("Scan", {"TableName": "range"})
    by_partition: dict[str, list[str]] = {}
    for item in answer["Items"]:
        by_partition.setdefault(item["pk"]["N"], []).append(item["sk"]["N"])
    assert all(sks == ["0", "1", "2"] for sks in by_partition.values())
    assert len(by_partition) == 5


def test_paging_with_limit_returns_every_item_once(h: Harness) -> None:
    seen: list[str] = []
    start = None
    while True:
        body: dict[str, Any] = {"TableName": "hash", "Limit": 7}
        if start is not None:
            body["ExclusiveStartKey"] = start
        answer = h("Scan", body)
        assert answer["ScannedCount"] <= 7
        seen += pks(answer)
        start = answer.get("LastEvaluatedKey")
        if start is None:
            break
    assert sorted(seen) == sorted(f"k{i}" for i in range(ITEMS))
    assert len(seen) == ITEMS


def test_filter_and_projection_apply_to_a_scan(h: Harness) -> None:
    answer = h(
        "Scan",
        {
            "TableName": "hash",
            "FilterExpression": "v = :z",
            "ProjectionExpression": "pk",
            "ExpressionAttributeValues": {":z": n("0")},
        },
    )
    assert answer["Count"] == ITEMS // 4
    assert answer["ScannedCount"] == ITEMS
    assert all(set(item) == {"pk"} for item in answer["Items"])


def test_a_scan_filter_may_name_key_attributes(h: Harness) -> None:
    answer = h(
        "Scan",
        {
            "TableName": "hash",
            "FilterExpression": "pk = :k",
            "ExpressionAttributeValues": {":k": s("k3")},
        },
    )
    assert pks(answer) == ["k3"]


def test_select_count_on_a_scan_returns_no_items(h: Harness) -> None:
    answer = h("Scan", {"TableName": "hash", "Select": "COUNT"})
    assert "Items" not in answer
    assert answer["Count"] == ITEMS


@pytest.mark.parametrize("total", [1, 2, 3, 7, 64])
def test_parallel_segments_are_disjoint_and_cover_the_table(h: Harness, total: int) -> None:
    seen: list[str] = []
    for segment in range(total):
        answer = h("Scan", {"TableName": "hash", "Segment": segment, "TotalSegments": total})
        seen += pks(answer)
    assert sorted(seen) == sorted(f"k{i}" for i in range(ITEMS))


def test_a_segment_pages_within_itself(h: Harness) -> None:
    whole = pks(h("Scan", {"TableName": "hash", "Segment": 1, "TotalSegments": 3}))
    first = h("Scan", {"TableName": "hash", "Segment": 1, "TotalSegments": 3, "Limit": 2})
    rest = h(
        "Scan",
        {
            "TableName": "hash",
            "Segment": 1,
            "TotalSegments": 3,
            "ExclusiveStartKey": first["LastEvaluatedKey"],
        },
    )
    assert pks(first) + pks(rest) == whole


def test_a_start_key_from_another_segment_is_refused(h: Harness) -> None:
    first = h("Scan", {"TableName": "hash", "Segment": 0, "TotalSegments": 2, "Limit": 1})
    body = {
        "TableName": "hash",
        "Segment": 1,
        "TotalSegments": 2,
        "ExclusiveStartKey": first["LastEvaluatedKey"],
    }
    assert h.message(body) == (
        "The provided starting key is invalid: Invalid ExclusiveStartKey. Please use "
        "ExclusiveStartKey with correct Segment. TotalSegments: 2 Segment: 1"
    )


def test_segment_without_total_segments_is_refused(h: Harness) -> None:
    assert h.message({"TableName": "hash", "Segment": 1}) == (
        "The TotalSegments parameter is required but was not present in the request when "
        "Segment parameter is present"
    )


def test_total_segments_without_segment_is_refused(h: Harness) -> None:
    assert h.message({"TableName": "hash", "TotalSegments": 2}) == (
        "The Segment parameter is required but was not present in the request when parameter "
        "TotalSegments is present"
    )


def test_segment_must_be_below_total_segments(h: Harness) -> None:
    assert h.message({"TableName": "hash", "Segment": 2, "TotalSegments": 2}) == (
        "The Segment parameter is zero-based and must be less than parameter TotalSegments: "
        "Segment: 2 is not less than TotalSegments: 2"
    )


def test_total_segments_above_a_million_is_a_constraint_violation(h: Harness) -> None:
    assert h.message({"TableName": "hash", "Segment": 0, "TotalSegments": 1_000_001}) == (
        "1 validation error detected: Value '1000001' at 'totalSegments' failed to satisfy "
        "constraint: Member must have value less than or equal to 1000000"
    )


def test_a_start_key_that_does_not_match_the_schema_is_refused(h: Harness) -> None:
    assert h.message({"TableName": "hash", "ExclusiveStartKey": {"pk": s("a"), "x": s("b")}}) == (
        "The provided starting key is invalid: The provided key element does not match the schema"
    )
    assert h.message({"TableName": "hash", "ExclusiveStartKey": {"pk": n("1")}}) == (
        "The provided starting key is invalid: The provided key element does not match the schema"
    )


def test_select_rules_apply_to_a_scan(h: Harness) -> None:
    assert h.message({"TableName": "hash", "Select": "COUNT", "ProjectionExpression": "v"}) == (
        "Cannot specify the ProjectionExpression when choosing to get only the Count"
    )
    assert h.message({"TableName": "hash", "Select": "ALL_PROJECTED_ATTRIBUTES"}) == (
        "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"
    )


def test_a_legacy_scan_filter_is_answered_as_a_filter_expression(h: Harness) -> None:
    body = {
        "TableName": "hash",
        "ScanFilter": {"v": {"ComparisonOperator": "EQ", "AttributeValueList": [n("3")]}},
        "AttributesToGet": ["v"],
    }
    answer = h("Scan", body)
    assert answer["Items"] == [{"v": n("3")}] * (ITEMS // 4)
    assert answer["ScannedCount"] == ITEMS


def test_a_scan_mixing_legacy_and_expression_parameters_is_refused(h: Harness) -> None:
    body = {
        "TableName": "hash",
        "ScanFilter": {"v": {"ComparisonOperator": "NOT_NULL"}},
        "ProjectionExpression": "v",
    }
    assert h.message(body) == (
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {ScanFilter} Expression parameters: {ProjectionExpression}"
    )


def test_a_scan_of_a_missing_table_is_resource_not_found(h: Harness) -> None:
    with pytest.raises(ResourceNotFoundException):
        h("Scan", {"TableName": "nothere"})


def test_scan_capacity_rounds_the_page_once_and_halves_eventual_reads(h: Harness) -> None:
    h.create("cap", [("pk", "S", "HASH")])
    for i in range(4):
        h.put("cap", {"pk": s(f"c{i}"), "d": s("z" * 2000)})
    eventual = h("Scan", {"TableName": "cap", "ReturnConsumedCapacity": "TOTAL"})
    strong = h(
        "Scan", {"TableName": "cap", "ReturnConsumedCapacity": "TOTAL", "ConsistentRead": True}
    )
    # About 8 KB in total: two 4 KB units, halved for an eventually consistent read.
    assert eventual["ConsumedCapacity"] == {"TableName": "cap", "CapacityUnits": 1.0}
    assert strong["ConsumedCapacity"] == {"TableName": "cap", "CapacityUnits": 2.0}


def test_a_scan_after_deletes_skips_the_deleted_items(h: Harness) -> None:
    h("DeleteItem", {"TableName": "hash", "Key": {"pk": s("k5")}})
    answer = h("Scan", {"TableName": "hash"})
    assert "k5" not in pks(answer)
    assert answer["Count"] == ITEMS - 1


def test_errors_are_client_errors_never_crashes(h: Harness) -> None:
    with pytest.raises(ClientError):
        h("Scan", {"TableName": "hash", "ExclusiveStartKey": {"pk": {}}})


def test_select_beside_attributes_to_get_names_attributes_to_get(h: Harness) -> None:
    body = {"TableName": "hash", "AttributesToGet": ["v"], "Select": "ALL_ATTRIBUTES"}
    assert h.message(body) == (
        "Cannot specify the AttributesToGet when choosing to get ALL_ATTRIBUTES"
    )
