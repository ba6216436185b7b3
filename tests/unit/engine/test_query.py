"""Query driven through `Database.dispatch` over an in-memory store and log: key conditions,
order, paging, filters, projections, Select, capacity, indexes, and DynamoDB's error types
and messages in its order of checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine import paging
from keeldb.engine.database import Database
from keeldb.model.errors import (
    ClientError,
    ResourceNotFoundException,
    SerializationException,
    ValidationException,
)
from keeldb.storage.memory import MemoryLog, MemoryStore


class Harness:
    """A database over a MemoryStore and MemoryLog, with a private event loop."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.log = MemoryLog(self.db.apply)
        self.db.attach_log(self.log)
        self.loop = asyncio.new_event_loop()

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    def error(self, operation: str, body: dict[str, Any]) -> ClientError:
        with pytest.raises(ClientError) as caught:
            self(operation, body)
        return caught.value

    def create(self, name: str, keys: list[tuple[str, str, str]], **extra: Any) -> None:
        definitions = [{"AttributeName": a, "AttributeType": t} for a, t, _ in keys]
        definitions.extend(extra.pop("more_definitions", []))
        self(
            "CreateTable",
            {
                "TableName": name,
                "KeySchema": [{"AttributeName": a, "KeyType": k} for a, _, k in keys],
                "AttributeDefinitions": definitions,
                "BillingMode": "PAY_PER_REQUEST",
                **extra,
            },
        )

    def put(self, table: str, item: dict[str, Any]) -> None:
        self("PutItem", {"TableName": table, "Item": item})

    def close(self) -> None:
        self.loop.close()


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.create("range", [("pk", "S", "HASH"), ("sk", "N", "RANGE")])
    harness.create("hash", [("pk", "S", "HASH")])
    harness.create("strs", [("pk", "S", "HASH"), ("sk", "S", "RANGE")])
    for i in range(10):
        harness.put("range", {"pk": s("a"), "sk": n(str(i)), "v": n(str(i % 3))})
    harness.put("range", {"pk": s("b"), "sk": n("1")})
    for word in ("apple", "apricot", "banana", "ap", "b"):
        harness.put("strs", {"pk": s("p"), "sk": s(word)})
    harness.put("hash", {"pk": s("x"), "v": s("1")})
    yield harness
    harness.close()


def q(h: Harness, condition: str, values: dict[str, Any], **more: Any) -> dict[str, Any]:
    body = {"TableName": more.pop("table", "range"), "KeyConditionExpression": condition}
    body["ExpressionAttributeValues"] = values
    body.update(more)
    return h("Query", body)


def sks(answer: dict[str, Any]) -> list[str]:
    return [next(iter(item["sk"].values())) for item in answer["Items"]]


def message(h: Harness, body: dict[str, Any], error: type = ValidationException) -> str:
    caught = h.error("Query", body)
    assert isinstance(caught, error), caught
    return caught.message


BASE = {
    "TableName": "range",
    "KeyConditionExpression": "pk = :p",
    "ExpressionAttributeValues": {":p": s("a")},
}

# --- Key conditions and order -----------------------------------------------------------------


def test_query_returns_one_partition_in_ascending_sort_key_order(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("a")})
    assert sks(answer) == [str(i) for i in range(10)]
    assert answer["Count"] == answer["ScannedCount"] == 10
    assert "LastEvaluatedKey" not in answer


def test_scan_index_forward_false_returns_descending_order(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("a")}, ScanIndexForward=False)
    assert sks(answer) == [str(i) for i in reversed(range(10))]


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        ("sk = :x", {":x": n("3")}, ["3"]),
        ("sk < :x", {":x": n("3")}, ["0", "1", "2"]),
        ("sk <= :x", {":x": n("3")}, ["0", "1", "2", "3"]),
        ("sk > :x", {":x": n("7")}, ["8", "9"]),
        ("sk >= :x", {":x": n("7")}, ["7", "8", "9"]),
        ("sk BETWEEN :x AND :y", {":x": n("2"), ":y": n("4")}, ["2", "3", "4"]),
        (":x < sk", {":x": n("7")}, ["8", "9"]),
    ],
)
def test_sort_key_conditions_select_their_range(
    h: Harness, condition: str, values: dict[str, Any], expected: list[str]
) -> None:
    answer = q(h, f"pk = :p AND {condition}", {":p": s("a"), **values})
    assert sks(answer) == expected


def test_begins_with_selects_the_sort_keys_with_the_prefix(h: Harness) -> None:
    answer = q(h, "pk = :p AND begins_with(sk, :x)", {":p": s("p"), ":x": s("ap")}, table="strs")
    assert sks(answer) == ["ap", "apple", "apricot"]


def test_a_partition_without_items_returns_an_empty_page(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("none")})
    assert answer["Items"] == []
    assert answer["Count"] == answer["ScannedCount"] == 0


def test_query_on_a_hash_only_table_returns_the_one_item(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("x")}, table="hash")
    assert answer["Items"] == [{"pk": s("x"), "v": s("1")}]


# --- Paging -----------------------------------------------------------------------------------


def test_limit_stops_the_page_and_returns_the_last_evaluated_key(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("a")}, Limit=3)
    assert sks(answer) == ["0", "1", "2"]
    assert answer["LastEvaluatedKey"] == {"pk": s("a"), "sk": n("2")}


def test_exclusive_start_key_continues_after_the_last_evaluated_key(h: Harness) -> None:
    seen: list[str] = []
    start = None
    pages = 0
    while True:
        more = {} if start is None else {"ExclusiveStartKey": start}
        answer = q(h, "pk = :p", {":p": s("a")}, Limit=4, **more)
        seen += sks(answer)
        pages += 1
        start = answer.get("LastEvaluatedKey")
        if start is None:
            break
    assert seen == [str(i) for i in range(10)]
    assert pages == 3


def test_paging_backwards_continues_below_the_start_key(h: Harness) -> None:
    first = q(h, "pk = :p", {":p": s("a")}, Limit=4, ScanIndexForward=False)
    second = q(
        h,
        "pk = :p",
        {":p": s("a")},
        Limit=4,
        ScanIndexForward=False,
        ExclusiveStartKey=first["LastEvaluatedKey"],
    )
    assert sks(first) == ["9", "8", "7", "6"]
    assert sks(second) == ["5", "4", "3", "2"]


def test_a_limit_equal_to_the_items_left_still_returns_a_last_evaluated_key(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("a")}, Limit=10)
    assert answer["Count"] == 10
    assert answer["LastEvaluatedKey"] == {"pk": s("a"), "sk": n("9")}
    after = q(h, "pk = :p", {":p": s("a")}, Limit=10, ExclusiveStartKey=answer["LastEvaluatedKey"])
    assert after["Items"] == []
    assert "LastEvaluatedKey" not in after


def test_limit_counts_items_read_before_the_filter(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("a"), ":z": n("0")}, Limit=4, FilterExpression="v = :z")
    assert sks(answer) == ["0", "3"]
    assert answer["Count"] == 2
    assert answer["ScannedCount"] == 4
    # The last key read, not the last key returned, is where the next page starts.
    assert answer["LastEvaluatedKey"] == {"pk": s("a"), "sk": n("3")}


def test_a_page_stops_after_one_megabyte_of_items_read(h: Harness) -> None:
    h.create("big", [("pk", "S", "HASH"), ("sk", "N", "RANGE")])
    blob = "x" * (100 * 1024)
    for i in range(15):
        h.put("big", {"pk": s("a"), "sk": n(str(i)), "payload": s(blob)})
    answer = q(
        h, "pk = :p", {":p": s("a"), ":no": s("no")}, table="big", FilterExpression="payload = :no"
    )
    # Eleven items of about 100 KB reach 1 MB: the page stops there, before the filter.
    assert answer["ScannedCount"] == 11
    assert answer["Count"] == 0
    assert answer["LastEvaluatedKey"] == {"pk": s("a"), "sk": n("10")}
    rest = q(
        h,
        "pk = :p",
        {":p": s("a")},
        table="big",
        ExclusiveStartKey=answer["LastEvaluatedKey"],
        Select="COUNT",
    )
    assert rest["Count"] == 4


# --- Filter, projection, Select ----------------------------------------------------------------


def test_filter_expression_keeps_matching_items_and_counts_both(h: Harness) -> None:
    answer = q(h, "pk = :p", {":p": s("a"), ":z": n("1")}, FilterExpression="v = :z")
    assert sks(answer) == ["1", "4", "7"]
    assert answer["Count"] == 3
    assert answer["ScannedCount"] == 10


def test_filter_expression_may_not_name_a_key_attribute(h: Harness) -> None:
    body = dict(
        BASE, FilterExpression="sk > :z", ExpressionAttributeValues={":p": s("a"), ":z": n("1")}
    )
    assert message(h, body) == (
        "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk"
    )


def test_projection_expression_returns_only_named_attributes(h: Harness) -> None:
    answer = q(h, "pk = :p AND sk = :k", {":p": s("a"), ":k": n("4")}, ProjectionExpression="v")
    assert answer["Items"] == [{"v": n("1")}]


def test_select_count_returns_counts_without_items(h: Harness) -> None:
    answer = q(
        h, "pk = :p", {":p": s("a"), ":z": n("2")}, Select="COUNT", FilterExpression="v = :z"
    )
    assert "Items" not in answer
    assert answer["Count"] == 3
    assert answer["ScannedCount"] == 10


def test_select_specific_attributes_with_a_projection_is_accepted(h: Harness) -> None:
    answer = q(
        h,
        "pk = :p AND sk = :k",
        {":p": s("a"), ":k": n("4")},
        Select="SPECIFIC_ATTRIBUTES",
        ProjectionExpression="sk",
    )
    assert answer["Items"] == [{"sk": n("4")}]


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        (
            "ALL_ATTRIBUTES",
            "Cannot specify the ProjectionExpression when choosing to get ALL_ATTRIBUTES",
        ),
        (
            "ALL_PROJECTED_ATTRIBUTES",
            "Cannot specify the ProjectionExpression when choosing to get ALL_PROJECTED_ATTRIBUTES",
        ),
        ("COUNT", "Cannot specify the ProjectionExpression when choosing to get only the Count"),
    ],
)
def test_select_other_than_specific_attributes_refuses_a_projection(
    h: Harness, select: str, expected: str
) -> None:
    assert message(h, dict(BASE, Select=select, ProjectionExpression="v")) == expected


def test_select_specific_attributes_requires_a_projection(h: Harness) -> None:
    assert message(h, dict(BASE, Select="SPECIFIC_ATTRIBUTES")) == (
        "Must specify the AttributesToGet or ProjectionExpression when choosing to get "
        "SPECIFIC_ATTRIBUTES"
    )


def test_select_all_projected_attributes_requires_an_index(h: Harness) -> None:
    assert message(h, dict(BASE, Select="ALL_PROJECTED_ATTRIBUTES")) == (
        "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"
    )


# --- Capacity ---------------------------------------------------------------------------------


def test_consumed_capacity_rounds_the_page_size_up_to_4_kb_once(h: Harness) -> None:
    h.create("cap", [("pk", "S", "HASH"), ("sk", "N", "RANGE")])
    for i in range(3):
        # Each item is a little over 1.5 KB; three of them are about 4.6 KB: two units.
        h.put("cap", {"pk": s("a"), "sk": n(str(i)), "d": s("y" * 1500)})
    strong = q(
        h,
        "pk = :p",
        {":p": s("a")},
        table="cap",
        ConsistentRead=True,
        ReturnConsumedCapacity="TOTAL",
    )
    assert strong["ConsumedCapacity"] == {"TableName": "cap", "CapacityUnits": 2.0}
    eventual = q(h, "pk = :p", {":p": s("a")}, table="cap", ReturnConsumedCapacity="INDEXES")
    assert eventual["ConsumedCapacity"] == {
        "TableName": "cap",
        "CapacityUnits": 1.0,
        "Table": {"CapacityUnits": 1.0},
    }


def test_a_query_that_reads_nothing_consumes_the_minimum(h: Harness) -> None:
    eventual = q(h, "pk = :p", {":p": s("none")}, ReturnConsumedCapacity="TOTAL")
    strong = q(h, "pk = :p", {":p": s("none")}, ReturnConsumedCapacity="TOTAL", ConsistentRead=True)
    assert eventual["ConsumedCapacity"]["CapacityUnits"] == 0.5
    assert strong["ConsumedCapacity"]["CapacityUnits"] == 1.0


def test_return_consumed_capacity_none_reports_nothing(h: Harness) -> None:
    assert "ConsumedCapacity" not in q(h, "pk = :p", {":p": s("a")}, ReturnConsumedCapacity="NONE")


# --- Request validation -------------------------------------------------------------------------


def test_a_missing_table_is_resource_not_found(h: Harness) -> None:
    caught = h.error("Query", dict(BASE, TableName="nothere"))
    assert isinstance(caught, ResourceNotFoundException)
    assert caught.message == "Requested resource not found"


def test_missing_table_name_and_bad_limit_are_reported_together(h: Harness) -> None:
    body = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": s("a")}}
    assert message(h, dict(body, Limit=0, Select="NONE")) == (
        "3 validation errors detected: "
        "Value null at 'tableName' failed to satisfy constraint: Member must not be null; "
        "Value 'NONE' at 'select' failed to satisfy constraint: Member must satisfy enum value "
        "set: [ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES, SPECIFIC_ATTRIBUTES, COUNT]; "
        "Value '0' at 'limit' failed to satisfy constraint: Member must have value greater "
        "than or equal to 1"
    )


def test_a_limit_of_the_wrong_json_type_is_a_serialization_error(h: Harness) -> None:
    caught = h.error("Query", dict(BASE, Limit="3"))
    assert isinstance(caught, SerializationException)
    assert caught.message == "STRING_VALUE can not be converted to an Integer"


def test_a_query_without_key_condition_is_refused(h: Harness) -> None:
    assert message(h, {"TableName": "range"}) == (
        "Either the KeyConditions or KeyConditionExpression parameter must be specified in the "
        "request."
    )


def test_legacy_key_conditions_mixed_with_expressions_are_refused(h: Harness) -> None:
    body = dict(
        BASE, KeyConditions={"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("a")]}}
    )
    assert message(h, body) == (
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {KeyConditions} Expression parameters: "
        "{KeyConditionExpression}"
    )


def test_legacy_key_conditions_and_query_filter_are_answered_as_expressions(h: Harness) -> None:
    body = {
        "TableName": "range",
        "KeyConditions": {
            "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("a")]},
            "sk": {"ComparisonOperator": "GE", "AttributeValueList": [n("5")]},
        },
        "QueryFilter": {"v": {"ComparisonOperator": "EQ", "AttributeValueList": [n("0")]}},
        "AttributesToGet": ["sk"],
    }
    answer = h("Query", body)
    assert answer["Items"] == [{"sk": n("6")}, {"sk": n("9")}]
    assert answer["ScannedCount"] == 5


def test_a_legacy_query_filter_on_a_key_attribute_is_named_as_such(h: Harness) -> None:
    body = {
        "TableName": "range",
        "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("a")]}},
        "QueryFilter": {"sk": {"ComparisonOperator": "GT", "AttributeValueList": [n("1")]}},
    }
    assert message(h, body) == (
        "QueryFilter can only contain non-primary key attributes: Primary key attribute: sk"
    )


def test_key_condition_on_a_non_key_attribute_is_refused(h: Harness) -> None:
    body = dict(BASE, KeyConditionExpression="v = :p")
    assert message(h, body) == "Query condition missed key schema element: pk"


def test_key_condition_with_a_wrong_value_type_is_refused(h: Harness) -> None:
    body = dict(BASE, ExpressionAttributeValues={":p": n("1")})
    assert message(h, body) == (
        "One or more parameter values were invalid: Condition parameter type does not match "
        "schema type"
    )


def test_key_condition_with_an_inequality_on_the_partition_key_is_refused(h: Harness) -> None:
    assert message(h, dict(BASE, KeyConditionExpression="pk > :p")) == (
        "Query key condition not supported"
    )


def test_unused_expression_values_are_refused(h: Harness) -> None:
    body = dict(BASE, ExpressionAttributeValues={":p": s("a"), ":q": s("b")})
    assert message(h, body) == (
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:q}"
    )


def test_an_unknown_index_is_refused(h: Harness) -> None:
    assert message(h, dict(BASE, IndexName="nope")) == (
        "The table does not have the specified index: nope"
    )


# --- ExclusiveStartKey ------------------------------------------------------------------------


def test_a_start_key_with_a_bad_attribute_value_is_refused(h: Harness) -> None:
    body = dict(BASE, ExclusiveStartKey={"pk": s("a"), "sk": {"N": "x"}})
    assert message(h, body).startswith("The provided starting key is invalid: ")


def test_a_start_key_missing_the_sort_key_is_refused(h: Harness) -> None:
    body = dict(BASE, ExclusiveStartKey={"pk": s("a")})
    assert message(h, body) == "The provided starting key is invalid"


def test_a_start_key_with_a_wrong_key_type_is_refused(h: Harness) -> None:
    body = dict(BASE, ExclusiveStartKey={"pk": s("a"), "sk": s("1")})
    assert message(h, body) == "The provided key element does not match the schema"


def test_a_start_key_with_a_foreign_attribute_is_refused(h: Harness) -> None:
    body = dict(BASE, ExclusiveStartKey={"pk": s("a"), "zz": n("1")})
    assert message(h, body) == "The provided starting key is invalid"


def test_a_start_key_in_another_partition_is_outside_the_query(h: Harness) -> None:
    body = dict(BASE, ExclusiveStartKey={"pk": s("b"), "sk": n("1")})
    assert message(h, body) == (
        "The provided starting key is outside query boundaries based on provided conditions"
    )


def test_a_start_key_outside_the_sort_key_condition_is_refused(h: Harness) -> None:
    body = dict(
        BASE,
        KeyConditionExpression="pk = :p AND sk > :k",
        ExpressionAttributeValues={":p": s("a"), ":k": n("5")},
        ExclusiveStartKey={"pk": s("a"), "sk": n("2")},
    )
    assert message(h, body) == "The provided starting key does not match the range key predicate"


# --- Indexes ----------------------------------------------------------------------------------


@pytest.fixture
def indexed(h: Harness) -> Harness:
    h.create(
        "idx",
        [("pk", "S", "HASH"), ("sk", "S", "RANGE")],
        more_definitions=[
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "l", "AttributeType": "N"},
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by_l",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "l", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["extra"]},
            }
        ],
    )
    for i, (g, l) in enumerate([("G1", 30), ("G1", 10), ("G2", 20)]):
        item = {"pk": s("p"), "sk": s(f"s{i}"), "g": s(g), "l": n(str(l))}
        item.update({"extra": s(f"e{i}"), "other": s(f"o{i}")})
        h.put("idx", item)
    return h


def test_a_local_index_is_read_in_index_sort_key_order(indexed: Harness) -> None:
    answer = q(indexed, "pk = :p", {":p": s("p")}, table="idx", IndexName="by_l")
    assert [item["l"]["N"] for item in answer["Items"]] == ["10", "20", "30"]
    # KEYS_ONLY: the table's and the index's keys only.
    assert answer["Items"][0] == {"pk": s("p"), "sk": s("s1"), "l": n("10")}


def test_an_index_page_returns_index_and_table_keys_as_last_evaluated_key(indexed: Harness) -> None:
    answer = q(indexed, "pk = :p", {":p": s("p")}, table="idx", IndexName="by_l", Limit=1)
    assert answer["LastEvaluatedKey"] == {"pk": s("p"), "sk": s("s1"), "l": n("10")}
    rest = q(
        indexed,
        "pk = :p",
        {":p": s("p")},
        table="idx",
        IndexName="by_l",
        ExclusiveStartKey=answer["LastEvaluatedKey"],
    )
    assert [item["l"]["N"] for item in rest["Items"]] == ["20", "30"]


def test_select_all_attributes_on_a_local_index_fetches_the_items(indexed: Harness) -> None:
    answer = q(
        indexed,
        "pk = :p AND l = :l",
        {":p": s("p"), ":l": n("20")},
        table="idx",
        IndexName="by_l",
        Select="ALL_ATTRIBUTES",
        ReturnConsumedCapacity="INDEXES",
    )
    assert answer["Items"] == [
        {
            "pk": s("p"),
            "sk": s("s2"),
            "g": s("G2"),
            "l": n("20"),
            "extra": s("e2"),
            "other": s("o2"),
        }
    ]
    consumed = answer["ConsumedCapacity"]
    assert consumed["LocalSecondaryIndexes"] == {"by_l": {"CapacityUnits": 0.5}}
    assert consumed["Table"] == {"CapacityUnits": 0.5}
    assert consumed["CapacityUnits"] == 1.0


def test_a_global_index_returns_its_projected_attributes(indexed: Harness) -> None:
    answer = q(indexed, "g = :g", {":g": s("G1")}, table="idx", IndexName="by_g")
    assert sorted(item["sk"]["S"] for item in answer["Items"]) == ["s0", "s1"]
    assert all(set(item) == {"pk", "sk", "g", "extra"} for item in answer["Items"])


def test_a_consistent_read_on_a_global_index_is_refused(indexed: Harness) -> None:
    body = {
        "TableName": "idx",
        "IndexName": "by_g",
        "KeyConditionExpression": "g = :g",
        "ExpressionAttributeValues": {":g": s("G1")},
        "ConsistentRead": True,
    }
    assert (
        message(indexed, body) == "Consistent reads are not supported on global secondary indexes"
    )


def test_select_all_attributes_on_a_global_index_without_all_projection_is_refused(
    indexed: Harness,
) -> None:
    body = {
        "TableName": "idx",
        "IndexName": "by_g",
        "KeyConditionExpression": "g = :g",
        "ExpressionAttributeValues": {":g": s("G1")},
        "Select": "ALL_ATTRIBUTES",
    }
    assert message(indexed, body) == (
        "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported "
        "for global secondary index by_g because its projection type is not ALL"
    )


def test_a_filter_on_an_index_key_is_refused_on_that_index(indexed: Harness) -> None:
    body = {
        "TableName": "idx",
        "IndexName": "by_l",
        "KeyConditionExpression": "pk = :p",
        "FilterExpression": "l > :l",
        "ExpressionAttributeValues": {":p": s("p"), ":l": n("1")},
    }
    assert message(indexed, body) == (
        "Filter Expression can only contain non-primary key attributes: Primary key attribute: l"
    )


class CountingStore(MemoryStore):
    """A MemoryStore that counts the entries its range reads hand out."""

    def __init__(self) -> None:
        super().__init__()
        self.entries_read = 0

    def scan(self, start: bytes, end: bytes | None, *, reverse: bool = False) -> Iterator[Any]:
        for entry in super().scan(start, end, reverse=reverse):
            self.entries_read += 1
            yield entry


def test_a_query_reads_no_more_entries_than_its_page_holds() -> None:
    h = Harness()
    store = CountingStore()
    h.store = store
    h.db = Database(store)
    h.log = MemoryLog(h.db.apply)
    h.db.attach_log(h.log)
    h.create("count", [("pk", "S", "HASH"), ("sk", "N", "RANGE")])
    for p in ("a", "b", "c"):
        for i in range(100):
            h.put("count", {"pk": s(p), "sk": n(str(i))})
    store.entries_read = 0
    answer = q(h, "pk = :p AND sk >= :k", {":p": s("b"), ":k": n("40")}, table="count", Limit=10)
    assert answer["Count"] == 10
    assert store.entries_read == 10
    store.entries_read = 0
    q(
        h,
        "pk = :p",
        {":p": s("b")},
        table="count",
        Limit=10,
        ExclusiveStartKey=answer["LastEvaluatedKey"],
    )
    assert store.entries_read == 10
    h.close()


def test_a_scan_of_a_global_index_returns_its_entries(indexed: Harness) -> None:
    answer = indexed("Scan", {"TableName": "idx", "IndexName": "by_g"})
    assert answer["Count"] == 3
    assert all(set(item) == {"pk", "sk", "g", "extra"} for item in answer["Items"])
    first = indexed("Scan", {"TableName": "idx", "IndexName": "by_g", "Limit": 2})
    assert set(first["LastEvaluatedKey"]) == {"pk", "sk", "g"}
    rest = indexed(
        "Scan",
        {"TableName": "idx", "IndexName": "by_g", "ExclusiveStartKey": first["LastEvaluatedKey"]},
    )
    assert first["Items"] + rest["Items"] == answer["Items"]


def test_a_scan_of_an_unknown_index_with_a_start_key_is_an_invalid_start_key(
    indexed: Harness,
) -> None:
    body = {"TableName": "idx", "IndexName": "nope", "ExclusiveStartKey": {"pk": s("p")}}
    with pytest.raises(ValidationException) as caught:
        indexed("Scan", body)
    assert caught.value.message == "The provided starting key is invalid"


def test_a_batch_write_reports_item_collection_metrics_for_a_table_with_a_local_index(
    indexed: Harness,
) -> None:
    answer = indexed(
        "BatchWriteItem",
        {
            "RequestItems": {
                "idx": [{"PutRequest": {"Item": {"pk": s("m"), "sk": s("1"), "l": n("1")}}}],
                "range": [{"PutRequest": {"Item": {"pk": s("m"), "sk": n("1")}}}],
            },
            "ReturnItemCollectionMetrics": "SIZE",
        },
    )
    assert answer["ItemCollectionMetrics"] == {
        "idx": [{"ItemCollectionKey": {"pk": s("m")}, "SizeEstimateRangeGB": [0.0, 1.0]}]
    }


def test_an_index_still_backfilling_cannot_be_read(indexed: Harness) -> None:
    from dataclasses import replace

    from keeldb.engine.items import find_table

    table = find_table(indexed.db, "idx")
    source = paging.source_for(table, "by_g")
    building = replace(source, index=replace(source.index, status="CREATING"))
    with pytest.raises(ValidationException) as caught:
        paging.check_index_read(building, {})
    assert caught.value.message == "Cannot read from backfilling global secondary index: by_g"
    paging.check_index_read(source, {})


def test_a_batch_write_reports_the_capacity_of_each_index_it_touches(indexed: Harness) -> None:
    item = {"pk": s("w"), "sk": s("1"), "g": s("G9"), "l": n("5")}
    answer = indexed(
        "BatchWriteItem",
        {
            "RequestItems": {"idx": [{"PutRequest": {"Item": item}}]},
            "ReturnConsumedCapacity": "INDEXES",
        },
    )
    assert answer["ConsumedCapacity"] == [
        {
            "TableName": "idx",
            "CapacityUnits": 3.0,
            "Table": {"CapacityUnits": 1.0},
            "LocalSecondaryIndexes": {"by_l": {"CapacityUnits": 1.0}},
            "GlobalSecondaryIndexes": {"by_g": {"CapacityUnits": 1.0}},
        }
    ]
    found = q(indexed, "g = :g", {":g": s("G9")}, table="idx", IndexName="by_g")
    assert found["Items"] == [{"pk": s("w"), "sk": s("1"), "g": s("G9")}]
