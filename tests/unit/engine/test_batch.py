"""BatchGetItem and BatchWriteItem driven through `Database.dispatch` over an in-memory store
and log: responses, limits, duplicates, unprocessed keys, capacity, and that a refused batch
writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine import batch, query, scan  # noqa: F401  (registers the operations)
from keeldb.engine.database import Database
from keeldb.model.errors import ClientError, ResourceNotFoundException, ValidationException
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
        """The client error a request gets; the store and the log must be unchanged by it."""
        before = list(self.store.scan(b"", None))
        lsn = self.log.committed_lsn()
        with pytest.raises(ClientError) as caught:
            self(operation, body)
        assert list(self.store.scan(b"", None)) == before
        assert self.log.committed_lsn() == lsn
        return caught.value

    def message(self, operation: str, body: dict[str, Any]) -> str:
        caught = self.error(operation, body)
        assert isinstance(caught, ValidationException), caught
        return caught.message

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

    def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        answer = self("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True})
        return answer.get("Item")


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


def put(item: dict[str, Any]) -> dict[str, Any]:
    return {"PutRequest": {"Item": item}}


def delete(key: dict[str, Any]) -> dict[str, Any]:
    return {"DeleteRequest": {"Key": key}}


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.create("hash", [("pk", "S", "HASH")])
    harness.create("range", [("pk", "S", "HASH"), ("sk", "N", "RANGE")])
    yield harness
    harness.loop.close()


# --- BatchWriteItem ---------------------------------------------------------------------------


def test_batch_write_puts_and_deletes_across_tables(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("old")}})
    answer = h(
        "BatchWriteItem",
        {
            "RequestItems": {
                "hash": [put({"pk": s("a"), "v": n("1")}), delete({"pk": s("old")})],
                "range": [put({"pk": s("a"), "sk": n("1")}), put({"pk": s("a"), "sk": n("2")})],
            }
        },
    )
    assert answer == {"UnprocessedItems": {}}
    assert h.get("hash", {"pk": s("a")}) == {"pk": s("a"), "v": n("1")}
    assert h.get("hash", {"pk": s("old")}) is None
    assert h.get("range", {"pk": s("a"), "sk": n("2")}) == {"pk": s("a"), "sk": n("2")}


def test_batch_write_reports_consumed_capacity_per_table(h: Harness) -> None:
    answer = h(
        "BatchWriteItem",
        {
            "RequestItems": {
                "hash": [put({"pk": s("a"), "big": s("x" * 1500)}), put({"pk": s("b")})],
                "range": [delete({"pk": s("a"), "sk": n("1")})],
            },
            "ReturnConsumedCapacity": "INDEXES",
        },
    )
    assert answer["ConsumedCapacity"] == [
        {"TableName": "hash", "CapacityUnits": 3.0, "Table": {"CapacityUnits": 3.0}},
        {"TableName": "range", "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}},
    ]


def test_batch_write_of_more_than_25_requests_in_total_is_refused(h: Harness) -> None:
    body = {
        "RequestItems": {
            "hash": [put({"pk": s(f"h{i}")}) for i in range(13)],
            "range": [put({"pk": s("r"), "sk": n(str(i))}) for i in range(13)],
        }
    }
    assert (
        h.message("BatchWriteItem", body) == "Too many items requested for the BatchWriteItem call"
    )


def test_batch_write_of_more_than_25_requests_for_one_table_is_a_constraint_violation(
    h: Harness,
) -> None:
    body = {"RequestItems": {"hash": [put({"pk": s(f"h{i}")}) for i in range(26)]}}
    text = h.message("BatchWriteItem", body)
    assert text.startswith("1 validation error detected: Value '{hash=[")
    assert text.endswith(
        "at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: "
        "[Member must have length less than or equal to 25, Member must have length greater "
        "than or equal to 1]"
    )


def test_batch_write_with_duplicate_keys_is_refused_and_writes_nothing(h: Harness) -> None:
    body = {"RequestItems": {"hash": [put({"pk": s("a")}), delete({"pk": s("a")})]}}
    assert h.message("BatchWriteItem", body) == "Provided list of item keys contains duplicates"


def test_a_bad_item_anywhere_in_the_batch_writes_nothing(h: Harness) -> None:
    body = {
        "RequestItems": {
            "hash": [put({"pk": s("fine")})],
            "range": [put({"pk": s("a"), "sk": s("not a number")})],
        }
    }
    assert h.message("BatchWriteItem", body) == "The provided key element does not match the schema"
    assert h.get("hash", {"pk": s("fine")}) is None


def test_a_put_missing_its_key_is_refused_as_a_schema_mismatch(h: Harness) -> None:
    body = {"RequestItems": {"hash": [put({"other": s("a")})]}}
    assert h.message("BatchWriteItem", body) == "The provided key element does not match the schema"


def test_a_delete_with_an_incomplete_key_is_refused(h: Harness) -> None:
    body = {"RequestItems": {"range": [delete({"pk": s("a")})]}}
    assert h.message("BatchWriteItem", body) == "The provided key element does not match the schema"


def test_an_item_over_400_kb_is_refused(h: Harness) -> None:
    body = {"RequestItems": {"hash": [put({"pk": s("a"), "x": s("y" * (400 * 1024))})]}}
    assert h.message("BatchWriteItem", body) == "Item size has exceeded the maximum allowed size"


def test_a_write_request_without_put_or_delete_is_refused(h: Harness) -> None:
    body = {"RequestItems": {"hash": [{}]}}
    assert h.message("BatchWriteItem", body) == (
        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of "
        "the supported datatypes"
    )


def test_a_batch_write_to_a_missing_table_is_resource_not_found(h: Harness) -> None:
    body = {"RequestItems": {"hash": [put({"pk": s("a")})], "nothere": [put({"pk": s("a")})]}}
    caught = h.error("BatchWriteItem", body)
    assert isinstance(caught, ResourceNotFoundException)
    assert h.get("hash", {"pk": s("a")}) is None


def test_an_empty_batch_write_is_a_constraint_violation(h: Harness) -> None:
    assert h.message("BatchWriteItem", {"RequestItems": {}}) == (
        "1 validation error detected: Value '{}' at 'requestItems' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )
    assert h.message("BatchWriteItem", {}) == (
        "1 validation error detected: Value null at 'requestItems' failed to satisfy "
        "constraint: Member must not be null"
    )


def test_a_bad_attribute_value_in_a_batch_write_is_refused(h: Harness) -> None:
    body = {"RequestItems": {"hash": [put({"pk": s("a"), "v": {"N": "x"}})]}}
    with pytest.raises(ValidationException):
        h("BatchWriteItem", body)
    assert h.get("hash", {"pk": s("a")}) is None


def test_a_batch_is_one_log_record_and_counts_every_item(h: Harness) -> None:
    lsn = h.log.committed_lsn()
    h("BatchWriteItem", {"RequestItems": {"hash": [put({"pk": s(f"k{i}")}) for i in range(5)]}})
    assert h.log.committed_lsn() == lsn + 1
    h(
        "BatchWriteItem",
        {
            "RequestItems": {
                "hash": [put({"pk": s("k0"), "v": s("new")})]
                + [{"DeleteRequest": {"Key": {"pk": s(f"k{i}")}}} for i in (1, 2)]
            }
        },
    )
    assert h.log.committed_lsn() == lsn + 2
    assert h.get("hash", {"pk": s("k0")}) == {"pk": s("k0"), "v": s("new")}
    assert h.get("hash", {"pk": s("k1")}) is None
    described = h("DescribeTable", {"TableName": "hash"})["Table"]
    assert described["ItemCount"] == 3
    assert described["TableSizeBytes"] == (2 + 2) * 2 + (2 + 2 + 1 + 3)


# --- BatchGetItem ---------------------------------------------------------------------------


@pytest.fixture
def filled(h: Harness) -> Harness:
    writes = [put({"pk": s(f"k{i}"), "v": n(str(i)), "w": s("w")}) for i in range(10)]
    h("BatchWriteItem", {"RequestItems": {"hash": writes}})
    h("PutItem", {"TableName": "range", "Item": {"pk": s("a"), "sk": n("1"), "x": s("y")}})
    return h


def test_batch_get_returns_found_items_keyed_by_table(filled: Harness) -> None:
    answer = filled(
        "BatchGetItem",
        {
            "RequestItems": {
                "hash": {"Keys": [{"pk": s("k1")}, {"pk": s("k2")}, {"pk": s("missing")}]},
                "range": {"Keys": [{"pk": s("a"), "sk": n("1")}]},
            }
        },
    )
    assert answer["UnprocessedKeys"] == {}
    assert sorted(item["pk"]["S"] for item in answer["Responses"]["hash"]) == ["k1", "k2"]
    assert answer["Responses"]["range"] == [{"pk": s("a"), "sk": n("1"), "x": s("y")}]


def test_batch_get_applies_each_tables_projection(filled: Harness) -> None:
    answer = filled(
        "BatchGetItem",
        {
            "RequestItems": {
                "hash": {
                    "Keys": [{"pk": s("k3")}],
                    "ProjectionExpression": "#v",
                    "ExpressionAttributeNames": {"#v": "v"},
                },
                "range": {"Keys": [{"pk": s("a"), "sk": n("1")}], "ProjectionExpression": "x"},
            }
        },
    )
    assert answer["Responses"] == {"hash": [{"v": n("3")}], "range": [{"x": s("y")}]}


def test_batch_get_reports_capacity_per_table_per_item(filled: Harness) -> None:
    answer = filled(
        "BatchGetItem",
        {
            "RequestItems": {
                "hash": {"Keys": [{"pk": s("k1")}, {"pk": s("k2")}], "ConsistentRead": True},
                "range": {"Keys": [{"pk": s("a"), "sk": n("1")}]},
            },
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer["ConsumedCapacity"] == [
        {"TableName": "hash", "CapacityUnits": 2.0},
        {"TableName": "range", "CapacityUnits": 0.5},
    ]


def test_batch_get_of_more_than_100_keys_is_refused(filled: Harness) -> None:
    body = {
        "RequestItems": {
            "hash": {"Keys": [{"pk": s(f"k{i}")} for i in range(60)]},
            "range": {"Keys": [{"pk": s("a"), "sk": n(str(i))} for i in range(41)]},
        }
    }
    assert (
        filled.message("BatchGetItem", body) == "Too many items requested for the BatchGetItem call"
    )


def test_batch_get_with_duplicate_keys_is_refused(filled: Harness) -> None:
    body = {"RequestItems": {"hash": {"Keys": [{"pk": s("k1")}, {"pk": s("k1")}]}}}
    assert filled.message("BatchGetItem", body) == "Provided list of item keys contains duplicates"


def test_batch_get_of_a_missing_table_is_resource_not_found(filled: Harness) -> None:
    body = {"RequestItems": {"nothere": {"Keys": [{"pk": s("k1")}]}}}
    assert isinstance(filled.error("BatchGetItem", body), ResourceNotFoundException)


def test_batch_get_with_a_key_not_matching_the_schema_is_refused(filled: Harness) -> None:
    body = {"RequestItems": {"range": {"Keys": [{"pk": s("a")}]}}}
    assert filled.message("BatchGetItem", body) == (
        "The provided key element does not match the schema"
    )


def test_batch_get_with_legacy_attributes_to_get_projects_them(filled: Harness) -> None:
    body = {"RequestItems": {"hash": {"Keys": [{"pk": s("k1")}], "AttributesToGet": ["v"]}}}
    assert filled("BatchGetItem", body)["Responses"] == {"hash": [{"v": n("1")}]}


def test_batch_get_with_no_keys_is_a_constraint_violation(filled: Harness) -> None:
    body = {"RequestItems": {"hash": {"Keys": []}}}
    assert filled.message("BatchGetItem", body) == (
        "1 validation error detected: Value '[]' at 'requestItems.hash.member.keys' failed to "
        "satisfy constraint: Member must have length greater than or equal to 1"
    )


def test_batch_get_past_16_mb_returns_the_rest_as_unprocessed_keys(h: Harness) -> None:
    blob = "b" * (390 * 1024)
    for start in range(0, 50, 25):
        writes = [put({"pk": s(f"big{i}"), "d": s(blob)}) for i in range(start, start + 25)]
        h("BatchWriteItem", {"RequestItems": {"hash": writes}})
    keys = [{"pk": s(f"big{i}")} for i in range(50)]
    answer = h("BatchGetItem", {"RequestItems": {"hash": {"Keys": keys, "ConsistentRead": True}}})
    returned = answer["Responses"]["hash"]
    unprocessed = answer["UnprocessedKeys"]["hash"]
    # 16 MB holds 42 items of 390 KB; the other keys come back to be asked again.
    assert len(returned) == 42
    assert unprocessed["ConsistentRead"] is True
    assert len(unprocessed["Keys"]) == 8
    got = {item["pk"]["S"] for item in returned} | {key["pk"]["S"] for key in unprocessed["Keys"]}
    assert got == {f"big{i}" for i in range(50)}
    again = h("BatchGetItem", {"RequestItems": answer["UnprocessedKeys"]})
    assert len(again["Responses"]["hash"]) == 8
    assert again["UnprocessedKeys"] == {}


def test_a_batch_may_name_its_tables_by_arn(filled: Harness) -> None:
    arn = "arn:aws:dynamodb:us-east-1:000000000000:table/hash"
    filled("BatchWriteItem", {"RequestItems": {arn: [put({"pk": s("by-arn")})]}})
    answer = filled("BatchGetItem", {"RequestItems": {arn: {"Keys": [{"pk": s("by-arn")}]}}})
    assert answer["Responses"] == {arn: [{"pk": s("by-arn")}]}


def test_a_batch_with_a_bad_table_name_is_a_constraint_violation(filled: Harness) -> None:
    text = filled.message("BatchGetItem", {"RequestItems": {"a!": {"Keys": [{"pk": s("k")}]}}})
    assert text.startswith("1 validation error detected: Value '{a!=")
    assert text.endswith(
        "at 'requestItems' failed to satisfy constraint: Map keys must satisfy constraint: "
        "[Member must have length less than or equal to 255, Member must have length greater "
        "than or equal to 3, Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+]"
    )
