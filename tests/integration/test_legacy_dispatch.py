"""Legacy-parameter requests through `Database.dispatch`, over an in-memory store and log.

Each scenario runs twice: once with the request translated by `legacy.translate` before it is
dispatched (which shows the translation and the engine agree on every operation), and once
sent as the client wrote it, for the operation to translate itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

# Importing the read operations registers them (Database itself imports only the item ones).
import keeldb.engine.batch
import keeldb.engine.query
import keeldb.engine.scan  # noqa: F401
from keeldb.engine.database import Database
from keeldb.expressions import legacy
from keeldb.model.errors import (
    ClientError,
    ConditionalCheckFailedException,
    ValidationException,
)
from keeldb.storage.memory import MemoryLog, MemoryStore

Body = dict[str, Any]


class Harness:
    """A database over a MemoryStore and MemoryLog, with a private event loop; `translate`
    says whether requests are translated here before they are dispatched."""

    def __init__(self, translate: bool) -> None:
        self.translate = translate
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.log = MemoryLog(self.db.apply)
        self.db.attach_log(self.log)
        self.loop = asyncio.new_event_loop()

    def __call__(self, operation: str, body: Body) -> Body:
        if not self.translate:
            return self.loop.run_until_complete(self.db.dispatch(operation, body))
        translated = self._translated(operation, body)
        try:
            return self.loop.run_until_complete(self.db.dispatch(operation, translated))
        except ValidationException as error:
            if operation != "UpdateItem":
                raise
            raise legacy.update_error(body, error) from None

    def _translated(self, operation: str, body: Body) -> Body:
        if operation == "BatchGetItem":
            items = {
                name: legacy.translate("GetItem", spec)
                for name, spec in body["RequestItems"].items()
            }
            return {**body, "RequestItems": items}
        if operation in legacy.LEGACY_PARAMETERS:
            return legacy.translate(operation, body)
        return body

    def error(self, operation: str, body: Body) -> ClientError:
        with pytest.raises(ClientError) as caught:
            self(operation, body)
        return caught.value

    def create(self, name: str, range_key: str | None = None) -> None:
        schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
        definitions = [{"AttributeName": "pk", "AttributeType": "S"}]
        if range_key is not None:
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
            definitions.append({"AttributeName": range_key, "AttributeType": "N"})
        self(
            "CreateTable",
            {
                "TableName": name,
                "KeySchema": schema,
                "AttributeDefinitions": definitions,
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

    def get(self, table: str, key: Body) -> Body | None:
        answer = self("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True})
        item: Body | None = answer.get("Item")
        return item


@pytest.fixture(params=["translated", "as_sent"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(translate=request.param == "translated")
    harness.create("hash")
    harness.create("range", range_key="sk")
    yield harness
    harness.loop.close()


def s(text: str) -> Body:
    return {"S": text}


def n(text: str) -> Body:
    return {"N": text}


# --- PutItem and DeleteItem with Expected ------------------------------------------------------


def test_put_item_with_exists_false_creates_only_once(h: Harness) -> None:
    body = {
        "TableName": "hash",
        "Item": {"pk": s("a"), "v": n("1")},
        "Expected": {"pk": {"Exists": False}},
    }
    h("PutItem", body)
    error = h.error("PutItem", {**body, "Item": {"pk": s("a"), "v": n("2")}})
    assert isinstance(error, ConditionalCheckFailedException)
    assert h.get("hash", {"pk": s("a")}) == {"pk": s("a"), "v": n("1")}


def test_put_item_with_comparison_operators_joined_by_or(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("5"), "tag": s("blue")}})
    expected = {
        "v": {"ComparisonOperator": "GT", "AttributeValueList": [n("10")]},
        "tag": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [s("bl")]},
    }
    body = {
        "TableName": "hash",
        "Item": {"pk": s("a"), "v": n("6")},
        "Expected": expected,
        "ConditionalOperator": "OR",
        "ReturnValues": "ALL_OLD",
    }
    answer = h("PutItem", body)
    assert answer["Attributes"] == {"pk": s("a"), "v": n("5"), "tag": s("blue")}
    error = h.error("PutItem", {**body, "ConditionalOperator": "AND"})
    assert isinstance(error, ConditionalCheckFailedException)


def test_delete_item_with_a_failing_expected_value_keeps_the_item(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}})
    body = {"TableName": "hash", "Key": {"pk": s("a")}, "Expected": {"v": {"Value": n("2")}}}
    assert isinstance(h.error("DeleteItem", body), ConditionalCheckFailedException)
    assert h.get("hash", {"pk": s("a")}) is not None
    h("DeleteItem", {**body, "Expected": {"v": {"Value": n("1")}}})
    assert h.get("hash", {"pk": s("a")}) is None


def test_a_malformed_expected_entry_is_refused_with_dynamodbs_message(h: Harness) -> None:
    if h.translate:
        pytest.skip("the translation itself raises; covered by the unit tests")
    body = {
        "TableName": "hash",
        "Item": {"pk": s("a")},
        "Expected": {"v": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [n("1")]}},
    }
    error = h.error("PutItem", body)
    assert isinstance(error, ValidationException)
    # The write operations put request-validation errors in DynamoDB's "1 validation error
    # detected: " envelope; the message inside is the legacy one.
    assert error.message.removeprefix("1 validation error detected: ") == (
        "One or more parameter values were invalid: Invalid number of argument(s) for the "
        "BETWEEN ComparisonOperator"
    )


# --- UpdateItem with AttributeUpdates ----------------------------------------------------------


def test_update_item_applies_every_legacy_action(h: Harness) -> None:
    h(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {
                "pk": s("a"),
                "count": n("1"),
                "tags": {"SS": ["x", "y"]},
                "gone": s("bye"),
                "log": {"L": [s("first")]},
            },
        },
    )
    answer = h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "AttributeUpdates": {
                "count": {"Action": "ADD", "Value": n("2")},
                "fresh": {"Action": "ADD", "Value": n("7")},
                "tags": {"Action": "DELETE", "Value": {"SS": ["x"]}},
                "gone": {"Action": "DELETE"},
                "log": {"Action": "ADD", "Value": {"L": [s("second")]}},
                "name": {"Value": s("put")},
            },
            "Expected": {"count": {"ComparisonOperator": "EQ", "Value": n("1")}},
            "ReturnValues": "ALL_NEW",
        },
    )
    assert answer["Attributes"] == {
        "pk": s("a"),
        "count": n("3"),
        "fresh": n("7"),
        "tags": {"SS": ["y"]},
        "log": {"L": [s("first"), s("second")]},
        "name": s("put"),
    }


def test_update_item_creates_a_missing_item_and_reports_updated_new(h: Harness) -> None:
    answer = h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("new")},
            "AttributeUpdates": {"visits": {"Action": "ADD", "Value": n("1")}},
            "ReturnValues": "UPDATED_NEW",
        },
    )
    assert answer["Attributes"] == {"visits": n("1")}
    assert h.get("hash", {"pk": s("new")}) == {"pk": s("new"), "visits": n("1")}


def test_update_item_cannot_update_a_key_attribute(h: Harness) -> None:
    body = {
        "TableName": "hash",
        "Key": {"pk": s("a")},
        "AttributeUpdates": {"pk": {"Value": s("b")}},
    }
    error = h.error("UpdateItem", body)
    assert isinstance(error, ValidationException)
    assert error.message == (
        "One or more parameter values were invalid: Cannot update attribute pk. "
        "This attribute is part of the key"
    )


@pytest.mark.parametrize(
    ("existing", "update"),
    [
        (s("text"), {"Action": "ADD", "Value": n("1")}),
        ({"SS": ["1"]}, {"Action": "ADD", "Value": {"NS": ["1"]}}),
        ({"SS": ["1"]}, {"Action": "DELETE", "Value": {"NS": ["1"]}}),
        (n("1"), {"Action": "DELETE", "Value": {"NS": ["1"]}}),
        (n("1"), {"Action": "ADD", "Value": {"L": [s("x")]}}),
    ],
)
def test_a_legacy_update_of_the_wrong_type_is_a_type_mismatch(
    h: Harness, existing: Body, update: Body
) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": existing}})
    body = {"TableName": "hash", "Key": {"pk": s("a")}, "AttributeUpdates": {"v": update}}
    error = h.error("UpdateItem", body)
    assert isinstance(error, ValidationException)
    assert error.message == "Type mismatch for attribute to update"
    assert h.get("hash", {"pk": s("a")}) == {"pk": s("a"), "v": existing}


def test_update_item_with_a_failing_expected_changes_nothing(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}})
    body = {
        "TableName": "hash",
        "Key": {"pk": s("a")},
        "AttributeUpdates": {"v": {"Value": n("9")}},
        "Expected": {"v": {"ComparisonOperator": "NULL"}},
    }
    assert isinstance(h.error("UpdateItem", body), ConditionalCheckFailedException)
    assert h.get("hash", {"pk": s("a")}) == {"pk": s("a"), "v": n("1")}


# --- Reads: AttributesToGet, KeyConditions, QueryFilter, ScanFilter ---------------------------


def test_get_item_returns_only_the_attributes_to_get(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "x": n("1"), "y": n("2")}})
    answer = h(
        "GetItem",
        {"TableName": "hash", "Key": {"pk": s("a")}, "AttributesToGet": ["x", "missing"]},
    )
    assert answer["Item"] == {"x": n("1")}


def fill_range_table(h: Harness) -> None:
    for sk in range(1, 6):
        item = {"pk": s("p"), "sk": n(str(sk)), "colour": s("red" if sk % 2 else "blue")}
        h("PutItem", {"TableName": "range", "Item": item})
    h("PutItem", {"TableName": "range", "Item": {"pk": s("q"), "sk": n("1")}})


def test_query_with_key_conditions_query_filter_and_attributes_to_get(h: Harness) -> None:
    fill_range_table(h)
    answer = h(
        "Query",
        {
            "TableName": "range",
            "KeyConditions": {
                "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("p")]},
                "sk": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [n("2"), n("5")]},
            },
            "QueryFilter": {
                "colour": {"ComparisonOperator": "EQ", "AttributeValueList": [s("red")]}
            },
            "AttributesToGet": ["sk"],
            "ScanIndexForward": False,
        },
    )
    assert answer["Items"] == [{"sk": n("5")}, {"sk": n("3")}]
    assert answer["Count"] == 2
    assert answer["ScannedCount"] == 4


def test_query_with_key_conditions_and_a_filter_expression(h: Harness) -> None:
    fill_range_table(h)
    answer = h(
        "Query",
        {
            "TableName": "range",
            "KeyConditions": {
                "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("p")]},
                "sk": {"ComparisonOperator": "LE", "AttributeValueList": [n("3")]},
            },
            "FilterExpression": "colour = :c",
            "ExpressionAttributeValues": {":c": s("blue")},
        },
    )
    assert [item["sk"] for item in answer["Items"]] == [n("2")]


def test_scan_with_a_scan_filter_joined_by_or(h: Harness) -> None:
    fill_range_table(h)
    answer = h(
        "Scan",
        {
            "TableName": "range",
            "ScanFilter": {
                "colour": {"ComparisonOperator": "NULL"},
                "sk": {"ComparisonOperator": "IN", "AttributeValueList": [n("4"), n("5")]},
            },
            "ConditionalOperator": "OR",
        },
    )
    found = sorted((item["pk"]["S"], item["sk"]["N"]) for item in answer["Items"])
    assert found == [("p", "4"), ("p", "5"), ("q", "1")]


def test_batch_get_item_with_attributes_to_get(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "x": n("1"), "y": n("2")}})
    answer = h(
        "BatchGetItem",
        {"RequestItems": {"hash": {"Keys": [{"pk": s("a")}], "AttributesToGet": ["y"]}}},
    )
    assert answer["Responses"]["hash"] == [{"y": n("2")}]


@pytest.mark.parametrize(
    ("operation", "extra", "select", "described"),
    [
        ("Scan", {}, "ALL_ATTRIBUTES", "ALL_ATTRIBUTES"),
        ("Scan", {}, "COUNT", "only the Count"),
        (
            "Query",
            {"KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("a")]}}},
            "COUNT",
            "only the Count",
        ),
    ],
)
def test_select_with_attributes_to_get_names_attributes_to_get(
    operation: str, extra: Body, select: str, described: str
) -> None:
    h = Harness(translate=False)
    try:
        h.create("hash")
        body = {"TableName": "hash", "AttributesToGet": ["x"], "Select": select, **extra}
        error = h.error(operation, body)
    finally:
        h.loop.close()
    assert isinstance(error, ValidationException)
    # DynamoDB envelopes Query's message ("1 validation error detected: ...") but not Scan's.
    assert error.message.endswith(
        f"Cannot specify the AttributesToGet when choosing to get {described}"
    )
