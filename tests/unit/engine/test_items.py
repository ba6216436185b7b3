"""PutItem, GetItem, UpdateItem and DeleteItem driven through `Database.dispatch` over an
in-memory store and log: DynamoDB's answers, error types and messages, and what is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine.database import Database
from keeldb.engine.item_store import items_state, table_stats
from keeldb.model.errors import (
    ClientError,
    ConditionalCheckFailedException,
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
        """The client error a request gets; the store must be unchanged by it."""
        before = list(self.store.scan(b"", None))
        lsn = self.log.committed_lsn()
        with pytest.raises(ClientError) as caught:
            self(operation, body)
        assert list(self.store.scan(b"", None)) == before
        if not isinstance(caught.value, ConditionalCheckFailedException):
            assert self.log.committed_lsn() == lsn
        return caught.value

    def create(
        self,
        name: str,
        hash_key: str = "pk",
        range_key: str | None = None,
        hash_type: str = "S",
        range_type: str = "S",
        **extra: Any,
    ) -> None:
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        definitions = [{"AttributeName": hash_key, "AttributeType": hash_type}]
        if range_key is not None:
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
            definitions.append({"AttributeName": range_key, "AttributeType": range_type})
        definitions.extend(extra.pop("more_definitions", []))
        body = {
            "TableName": name,
            "KeySchema": schema,
            "AttributeDefinitions": definitions,
            "BillingMode": "PAY_PER_REQUEST",
            **extra,
        }
        self("CreateTable", body)

    def table(self, name: str) -> Any:
        from keeldb.engine.items import find_table

        return find_table(self.db, name)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.create("hash")
    harness.create("range", range_key="sk")
    harness.create("num", hash_type="N")
    harness.create("bin", hash_type="B", range_key="sk", range_type="B")
    yield harness
    harness.close()


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


def get(h: Harness, table: str, key: dict[str, Any], **more: Any) -> dict[str, Any] | None:
    answer = h("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True, **more})
    return answer.get("Item")


# --- PutItem and GetItem ------------------------------------------------------------------------


def test_put_then_get_returns_the_item_with_numbers_normalised(h: Harness) -> None:
    answer = h(
        "PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "x": n("1.50"), "y": n("-0")}}
    )
    assert answer == {}
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a"), "x": n("1.5"), "y": n("0")}


def test_get_of_a_missing_item_has_no_item_member(h: Harness) -> None:
    assert h("GetItem", {"TableName": "hash", "Key": {"pk": s("nope")}}) == {}


def test_put_replaces_the_whole_item(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "x": n("1"), "y": s("old")}})
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "z": s("new")}})
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a"), "z": s("new")}


def test_range_table_keeps_items_with_one_partition_key_apart(h: Harness) -> None:
    h("PutItem", {"TableName": "range", "Item": {"pk": s("a"), "sk": s("1"), "v": s("one")}})
    h("PutItem", {"TableName": "range", "Item": {"pk": s("a"), "sk": s("2"), "v": s("two")}})
    assert get(h, "range", {"pk": s("a"), "sk": s("1")})["v"] == s("one")  # type: ignore[index]
    assert get(h, "range", {"pk": s("a"), "sk": s("2")})["v"] == s("two")  # type: ignore[index]


def test_number_keys_equal_in_value_address_the_same_item(h: Harness) -> None:
    h("PutItem", {"TableName": "num", "Item": {"pk": n("1.0"), "v": s("x")}})
    assert get(h, "num", {"pk": n("1")}) == {"pk": n("1"), "v": s("x")}


def test_empty_strings_and_binaries_are_allowed_outside_keys(h: Harness) -> None:
    item = {"pk": s("a"), "e": s(""), "b": {"B": ""}, "m": {"M": {"x": s("")}}}
    h("PutItem", {"TableName": "hash", "Item": item})
    assert get(h, "hash", {"pk": s("a")}) == item


def test_put_return_values_all_old_returns_the_replaced_item(h: Harness) -> None:
    first = {"pk": s("a"), "x": n("1")}
    assert h("PutItem", {"TableName": "hash", "Item": first, "ReturnValues": "ALL_OLD"}) == {}
    answer = h("PutItem", {"TableName": "hash", "Item": {"pk": s("a")}, "ReturnValues": "ALL_OLD"})
    assert answer == {"Attributes": first}


def test_get_with_projection_returns_only_the_named_paths(h: Harness) -> None:
    item = {
        "pk": s("a"),
        "x": n("1"),
        "m": {"M": {"a": s("1"), "b": s("2")}},
        "l": {"L": [s("p"), s("q")]},
    }
    h("PutItem", {"TableName": "hash", "Item": item})
    got = get(
        h,
        "hash",
        {"pk": s("a")},
        ProjectionExpression="x, m.b, #l[1]",
        ExpressionAttributeNames={"#l": "l"},
    )
    assert got == {"x": n("1"), "m": {"M": {"b": s("2")}}, "l": {"L": [s("q")]}}


def test_binary_keys_round_trip(h: Harness) -> None:
    item = {"pk": {"B": "AAE="}, "sk": {"B": "/w=="}, "v": {"BS": ["AQ==", "Ag=="]}}
    h("PutItem", {"TableName": "bin", "Item": item})
    assert get(h, "bin", {"pk": {"B": "AAE="}, "sk": {"B": "/w=="}}) == item


# --- Table and key errors -----------------------------------------------------------------------


def test_missing_table_is_resource_not_found(h: Harness) -> None:
    for op, body in [
        ("PutItem", {"TableName": "nope", "Item": {"pk": s("a")}}),
        ("GetItem", {"TableName": "nope", "Key": {"pk": s("a")}}),
        ("UpdateItem", {"TableName": "nope", "Key": {"pk": s("a")}}),
        ("DeleteItem", {"TableName": "nope", "Key": {"pk": s("a")}}),
    ]:
        err = h.error(op, body)
        assert isinstance(err, ResourceNotFoundException)
        assert err.message == "Requested resource not found"


def test_missing_table_is_reported_before_key_errors(h: Harness) -> None:
    err = h.error("PutItem", {"TableName": "nope", "Item": {}})
    assert isinstance(err, ResourceNotFoundException)


@pytest.mark.parametrize(
    "key",
    [
        {},
        {"other": s("a")},
        {"pk": n("1")},
        {"pk": {"BOOL": True}},
        {"pk": s("a"), "x": s("b")},
    ],
)
def test_key_not_matching_the_schema_is_refused(h: Harness, key: dict[str, Any]) -> None:
    for op in ("GetItem", "UpdateItem", "DeleteItem"):
        err = h.error(op, {"TableName": "hash", "Key": key})
        assert isinstance(err, ValidationException)
        assert err.message == "The provided key element does not match the schema"


def test_key_without_its_sort_key_is_refused(h: Harness) -> None:
    err = h.error("GetItem", {"TableName": "range", "Key": {"pk": s("a")}})
    assert err.message == "The provided key element does not match the schema"


def test_put_without_a_key_attribute_names_the_missing_key(h: Harness) -> None:
    err = h.error("PutItem", {"TableName": "range", "Item": {"pk": s("a"), "x": s("b")}})
    assert isinstance(err, ValidationException)
    assert (
        err.message == "One or more parameter values were invalid: Missing the key sk in the item"
    )


@pytest.mark.parametrize(
    "value,actual",
    [(n("1"), "N"), ({"SS": ["a"]}, "SS"), ({"M": {}}, "M"), ({"NULL": True}, "NULL")],
)
def test_put_with_a_wrongly_typed_key_names_both_types(h: Harness, value: Any, actual: str) -> None:
    err = h.error("PutItem", {"TableName": "hash", "Item": {"pk": value}})
    assert err.message == (
        f"One or more parameter values were invalid: Type mismatch for key pk expected: S actual: {actual}"
    )


def test_empty_string_key_is_refused_with_the_key_name(h: Harness) -> None:
    expected = (
        "One or more parameter values are not valid. The AttributeValue for a key "
        "attribute cannot contain an empty string value. Key: pk"
    )
    assert h.error("PutItem", {"TableName": "hash", "Item": {"pk": s("")}}).message == expected
    assert h.error("GetItem", {"TableName": "hash", "Key": {"pk": s("")}}).message == expected
    assert h.error("DeleteItem", {"TableName": "hash", "Key": {"pk": s("")}}).message == expected
    err = h.error("UpdateItem", {"TableName": "range", "Key": {"pk": s("a"), "sk": s("")}})
    assert err.message == expected.replace("Key: pk", "Key: sk")


def test_empty_binary_key_is_refused_with_the_key_name(h: Harness) -> None:
    err = h.error("PutItem", {"TableName": "bin", "Item": {"pk": {"B": "AQ=="}, "sk": {"B": ""}}})
    assert err.message == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute "
        "cannot contain an empty binary value. Key: sk"
    )


def test_partition_key_over_2048_bytes_is_refused(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("é" * 1024)}})  # exactly 2048 bytes
    err = h.error("PutItem", {"TableName": "hash", "Item": {"pk": s("a" * 2049)}})
    assert err.message == (
        "One or more parameter values were invalid: Size of hashkey has exceeded the maximum "
        "size limit of2048 bytes"
    )
    err = h.error("GetItem", {"TableName": "hash", "Key": {"pk": s("a" * 2049)}})
    assert "Size of hashkey has exceeded" in err.message


def test_sort_key_over_1024_bytes_is_refused(h: Harness) -> None:
    h("PutItem", {"TableName": "range", "Item": {"pk": s("a"), "sk": s("b" * 1024)}})
    err = h.error("PutItem", {"TableName": "range", "Item": {"pk": s("a"), "sk": s("b" * 1025)}})
    assert err.message == (
        "One or more parameter values were invalid: Aggregated size of all range keys has "
        "exceeded the size limit of 1024 bytes"
    )


def test_number_keys_have_no_size_limit(h: Harness) -> None:
    h("PutItem", {"TableName": "num", "Item": {"pk": n("9" * 38 + "E+87")}})
    assert get(h, "num", {"pk": n("9" * 38 + "E+87")}) is not None


# --- Item size ----------------------------------------------------------------------------------


def test_item_of_exactly_400_kb_is_stored_and_one_byte_more_is_refused(h: Harness) -> None:
    # Size = name bytes + value bytes: "pk"(2) + "a"(1) + "b"(1) + payload.
    payload = 400 * 1024 - 4
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "b": s("x" * payload)}})
    err = h.error(
        "PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "b": s("x" * (payload + 1))}}
    )
    assert isinstance(err, ValidationException)
    assert err.message == "Item size has exceeded the maximum allowed size"


def test_item_size_is_checked_before_the_table_is_looked_up(h: Harness) -> None:
    err = h.error("PutItem", {"TableName": "nope", "Item": {"pk": s("a"), "b": s("x" * 409600)}})
    assert err.message == "Item size has exceeded the maximum allowed size"


def test_update_that_grows_an_item_past_400_kb_is_refused(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "b": s("x" * 300000)}})
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET c = :c",
            "ExpressionAttributeValues": {":c": s("y" * 200000)},
        },
    )
    assert err.message == "Item size to update has exceeded the maximum allowed size"


# --- Request checks -----------------------------------------------------------------------------


def test_missing_table_name_and_item_are_both_reported(h: Harness) -> None:
    err = h.error("PutItem", {})
    assert isinstance(err, ValidationException)
    assert err.message == (
        "2 validation errors detected: "
        "Value null at 'tableName' failed to satisfy constraint: Member must not be null; "
        "Value null at 'item' failed to satisfy constraint: Member must not be null"
    )


def test_bad_enums_and_table_name_are_listed_in_dynamodb_order(h: Harness) -> None:
    err = h.error(
        "PutItem",
        {
            "TableName": "abc;",
            "ReturnConsumedCapacity": "hi",
            "ReturnItemCollectionMetrics": "hi",
            "ReturnValues": "hi",
        },
    )
    assert err.message == (
        "5 validation errors detected: "
        "Value 'hi' at 'returnConsumedCapacity' failed to satisfy constraint: Member must "
        "satisfy enum value set: [INDEXES, TOTAL, NONE]; "
        "Value 'abc;' at 'tableName' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-zA-Z0-9_.-]+; "
        "Value null at 'item' failed to satisfy constraint: Member must not be null; "
        "Value 'hi' at 'returnValues' failed to satisfy constraint: Member must satisfy enum "
        "value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]; "
        "Value 'hi' at 'returnItemCollectionMetrics' failed to satisfy constraint: Member must "
        "satisfy enum value set: [SIZE, NONE]"
    )


def test_short_table_name_fails_pattern_and_length(h: Harness) -> None:
    err = h.error("GetItem", {"TableName": "a;", "Key": {"pk": s("a")}})
    assert err.message == (
        "2 validation errors detected: "
        "Value 'a;' at 'tableName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; "
        "Value 'a;' at 'tableName' failed to satisfy constraint: Member must have length greater than or equal to 3"
    )


def test_put_and_delete_accept_only_all_old_or_none_return_values(h: Harness) -> None:
    for mode in ("UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"):
        err = h.error(
            "PutItem", {"TableName": "hash", "Item": {"pk": s("a")}, "ReturnValues": mode}
        )
        assert (
            err.message == "1 validation error detected: ReturnValues can only be ALL_OLD or NONE"
        )
        err = h.error(
            "DeleteItem", {"TableName": "hash", "Key": {"pk": s("a")}, "ReturnValues": mode}
        )
        assert (
            err.message == "1 validation error detected: ReturnValues can only be ALL_OLD or NONE"
        )


def test_wrong_json_type_is_a_serialization_exception(h: Harness) -> None:
    err = h.error("PutItem", {"TableName": 5, "Item": {"pk": s("a")}})
    assert isinstance(err, SerializationException)
    assert err.message == ("NUMBER_VALUE can not be converted to a String")
    err = h.error("PutItem", {"TableName": "hash", "Item": "x"})
    assert isinstance(err, SerializationException)
    assert err.message == "Expected map or null"
    err = h.error("GetItem", {"TableName": "hash", "Key": {"pk": s("a")}, "ConsistentRead": []})
    assert isinstance(err, SerializationException)
    assert err.message == "Start of list found where not expected"
    err = h.error("PutItem", {"TableName": "hash", "Item": {"pk": {"S": 1}}})
    assert isinstance(err, SerializationException)


def test_unknown_members_are_ignored_and_null_members_are_absent(h: Harness) -> None:
    h(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a"), "gone": None},
            "Bogus": 1,
            "ReturnValues": None,
        },
    )
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a")}


def test_invalid_attribute_values_get_dynamodb_messages(h: Harness) -> None:
    envelope = "1 validation error detected: "
    cases = [
        (
            {},
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        ),
        (
            {"SS": []},
            envelope + "One or more parameter values were invalid: An string set  may not be empty",
        ),
        (
            {"SS": ["a", "a"]},
            envelope
            + "One or more parameter values were invalid: Input collection [a, a] contains duplicates.",
        ),
        (
            {"NULL": False},
            envelope
            + "One or more parameter values were invalid: Null attribute value types must have the value of true",
        ),
        ({"N": "x"}, envelope + "The parameter cannot be converted to a numeric value: x"),
        (
            {"N": "1e126"},
            envelope
            + "Number overflow. Attempting to store a number with magnitude larger than supported range",
        ),
        (
            {"S": "a", "N": "1"},
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
        ),
    ]
    for value, message in cases:
        err = h.error("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": value}})
        assert isinstance(err, ValidationException)
        assert err.message == message


def test_get_item_reports_key_value_errors_without_the_envelope(h: Harness) -> None:
    err = h.error("GetItem", {"TableName": "hash", "Key": {"pk": {"NULL": False}}})
    assert err.message == (
        "One or more parameter values were invalid: Null attribute value types must have the "
        "value of true"
    )


def test_null_false_in_expression_values_is_reported_with_its_own_message(h: Harness) -> None:
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET f = :n",
            "ExpressionAttributeValues": {":n": {"NULL": False}},
        },
    )
    assert err.message == (
        "1 validation error detected: One or more parameter values were invalid: Null "
        "attribute value types must have the value of true"
    )
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET t = :t",
            "ExpressionAttributeValues": {":t": {"SS": ["a", "b", "a"]}},
        },
    )
    assert err.message == (
        "1 validation error detected: ExpressionAttributeValues contains invalid value: One or "
        "more parameter values were invalid: Input collection [a, b, a] contains duplicates. "
        "for key :t"
    )


def test_expression_errors_of_writes_are_enveloped(h: Harness) -> None:
    err = h.error(
        "DeleteItem", {"TableName": "hash", "Key": {"pk": s("a")}, "ConditionExpression": ""}
    )
    assert err.message == (
        "1 validation error detected: Invalid ConditionExpression: The expression can not be empty;"
    )
    err = h.error(
        "UpdateItem", {"TableName": "hash", "Key": {"pk": s("a")}, "UpdateExpression": "a" * 4200}
    )
    assert err.message == (
        "1 validation error detected: Invalid UpdateExpression: Expression size has exceeded "
        "the maximum allowed size; expression size: 4200"
    )
    err = h.error(
        "DeleteItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "ConditionExpression": "attribute_exists(a)",
            "ExpressionAttributeNames": {},
        },
    )
    assert err.message == "1 validation error detected: ExpressionAttributeNames must not be empty"


def test_data_plane_errors_of_writes_are_not_enveloped(h: Harness) -> None:
    err = h.error(
        "UpdateItem",
        {"TableName": "hash", "Key": {"pk": s("a")}, "UpdateExpression": "SET a = nosuch"},
    )
    assert (
        err.message
        == "The provided expression refers to an attribute that does not exist in the item"
    )
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "m": {"M": {"a": s("v")}}}})
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET m.a.b.c = :v",
            "ExpressionAttributeValues": {":v": s("v")},
        },
    )
    assert (
        err.message == "The document path provided in the update expression is invalid for update"
    )


def test_legacy_parameters_are_honoured_by_every_item_operation(h: Harness) -> None:
    put = {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}}
    h("PutItem", {**put, "Expected": {"pk": {"Exists": False}}})
    err = h.error("PutItem", {**put, "Expected": {"pk": {"Exists": False}}})
    assert isinstance(err, ConditionalCheckFailedException)
    answer = h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "AttributeUpdates": {"v": {"Action": "ADD", "Value": n("2")}, "w": {"Value": s("x")}},
            "Expected": {"v": {"Value": n("1")}},
            "ReturnValues": "UPDATED_NEW",
        },
    )
    assert answer["Attributes"] == {"v": n("3"), "w": s("x")}
    got = h("GetItem", {"TableName": "hash", "Key": {"pk": s("a")}, "AttributesToGet": ["w"]})
    assert got["Item"] == {"w": s("x")}
    delete = {"TableName": "hash", "Key": {"pk": s("a")}, "ReturnValues": "ALL_OLD"}
    expected = {"v": {"ComparisonOperator": "LT", "AttributeValueList": [n("3")]}}
    err = h.error("DeleteItem", {**delete, "Expected": expected})
    assert isinstance(err, ConditionalCheckFailedException)
    expected["w"] = {"ComparisonOperator": "NOT_NULL"}
    answer = h("DeleteItem", {**delete, "Expected": expected, "ConditionalOperator": "OR"})
    assert answer["Attributes"] == {"pk": s("a"), "v": n("3"), "w": s("x")}
    assert "Item" not in h("GetItem", {"TableName": "hash", "Key": {"pk": s("a")}})


def test_legacy_request_errors_of_writes_are_enveloped_and_of_get_item_bare(h: Harness) -> None:
    err = h.error(
        "DeleteItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "ConditionalOperator": "AND",
        },
    )
    assert isinstance(err, ValidationException)
    assert err.message == (
        "1 validation error detected: ConditionalOperator cannot be used without Filter or Expected"
    )
    err = h.error(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a")},
            "Expected": {"x": {"Exists": False}},
            "ExpressionAttributeNames": {"#x": "x"},
        },
    )
    assert err.message == (
        "1 validation error detected: "
        "ExpressionAttributeNames can only be specified when using expressions"
    )
    err = h.error(
        "GetItem", {"TableName": "hash", "Key": {"pk": s("a")}, "AttributesToGet": ["x", "x"]}
    )
    assert isinstance(err, ValidationException)
    assert err.message == (
        "One or more parameter values were invalid: Duplicate value in attribute name: x"
    )


def test_a_legacy_update_type_fault_is_a_type_mismatch_and_an_expression_one_is_not(
    h: Harness,
) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": s("text")}})
    key = {"TableName": "hash", "Key": {"pk": s("a")}}
    err = h.error(
        "UpdateItem", {**key, "AttributeUpdates": {"v": {"Action": "ADD", "Value": n("1")}}}
    )
    assert isinstance(err, ValidationException)
    assert err.message == "Type mismatch for attribute to update"
    err = h.error(
        "UpdateItem",
        {**key, "UpdateExpression": "ADD v :one", "ExpressionAttributeValues": {":one": n("1")}},
    )
    assert isinstance(err, ValidationException)
    assert err.message == "An operand in the update expression has an incorrect data type"


def test_mixing_legacy_and_expression_parameters_gets_dynamodb_message(h: Harness) -> None:
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "Expected": {"x": {"Exists": False}},
            "AttributeUpdates": {},
            "UpdateExpression": "SET x = :x",
            "ConditionExpression": "attribute_exists(x)",
            "ExpressionAttributeValues": {":x": s("1")},
        },
    )
    assert err.message == (
        "1 validation error detected: "
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {AttributeUpdates, Expected} "
        "Expression parameters: {UpdateExpression, ConditionExpression}"
    )


def test_expression_attribute_maps_without_expressions_are_refused(h: Harness) -> None:
    envelope = "1 validation error detected: "
    err = h.error(
        "PutItem",
        {"TableName": "hash", "Item": {"pk": s("a")}, "ExpressionAttributeNames": {"#a": "a"}},
    )
    assert (
        err.message
        == envelope + "ExpressionAttributeNames can only be specified when using expressions"
    )
    err = h.error(
        "UpdateItem",
        {"TableName": "hash", "Key": {"pk": s("a")}, "ExpressionAttributeValues": {":a": s("a")}},
    )
    assert err.message == envelope + (
        "ExpressionAttributeValues can only be specified when using expressions: "
        "UpdateExpression and ConditionExpression are null"
    )
    err = h.error(
        "PutItem",
        {"TableName": "hash", "Item": {"pk": s("a")}, "ExpressionAttributeValues": {":a": s("a")}},
    )
    assert err.message == envelope + (
        "ExpressionAttributeValues can only be specified when using expressions: "
        "ConditionExpression is null"
    )
    err = h.error(
        "DeleteItem",
        {"TableName": "hash", "Key": {"pk": s("a")}, "ExpressionAttributeValues": {":a": s("a")}},
    )
    assert err.message == envelope + (
        "ExpressionAttributeValues can only be specified when using expressions"
    )


def test_unused_expression_attribute_values_are_refused(h: Harness) -> None:
    err = h.error(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a")},
            "ConditionExpression": "attribute_not_exists(pk)",
            "ExpressionAttributeValues": {":unused": s("a")},
        },
    )
    assert err.message == (
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:unused}"
    )


# --- Conditions ---------------------------------------------------------------------------------


def test_condition_false_fails_and_changes_nothing(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}})
    err = h.error(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a"), "v": n("2")},
            "ConditionExpression": "attribute_not_exists(pk)",
        },
    )
    assert isinstance(err, ConditionalCheckFailedException)
    assert err.message == "The conditional request failed"
    assert err.item is None
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a"), "v": n("1")}


def test_condition_true_lets_the_write_through(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}})
    h(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a"), "v": n("2")},
            "ConditionExpression": "v = :one",
            "ExpressionAttributeValues": {":one": n("1.0")},
        },
    )
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a"), "v": n("2")}


def test_condition_on_a_missing_item_sees_no_attributes(h: Harness) -> None:
    h(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a")},
            "ConditionExpression": "attribute_not_exists(pk)",
        },
    )
    err = h.error(
        "DeleteItem",
        {"TableName": "hash", "Key": {"pk": s("b")}, "ConditionExpression": "attribute_exists(pk)"},
    )
    assert isinstance(err, ConditionalCheckFailedException)


def test_failed_condition_returns_the_old_item_when_asked(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}})
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET v = :v",
            "ConditionExpression": "v = :v",
            "ExpressionAttributeValues": {":v": n("5")},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    )
    assert isinstance(err, ConditionalCheckFailedException)
    assert err.item == {"pk": s("a"), "v": n("1")}
    assert err.body()["Item"] == {"pk": s("a"), "v": n("1")}


def test_failed_condition_on_a_missing_item_returns_no_item_even_when_asked(h: Harness) -> None:
    err = h.error(
        "DeleteItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "ConditionExpression": "attribute_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    )
    assert isinstance(err, ConditionalCheckFailedException)
    assert "Item" not in err.body()


def test_failed_conditional_write_still_consumes_write_capacity(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "big": s("x" * 3000)}})
    before = items_state(h.db).write_units["hash"]
    h.error(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a")},
            "ConditionExpression": "attribute_not_exists(pk)",
        },
    )
    assert items_state(h.db).write_units["hash"] == before + 3.0


# --- UpdateItem ---------------------------------------------------------------------------------


def test_update_of_a_missing_item_creates_it(h: Harness) -> None:
    h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET v = :v",
            "ExpressionAttributeValues": {":v": n("1")},
        },
    )
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a"), "v": n("1")}


def test_update_without_an_expression_creates_the_key_only_item(h: Harness) -> None:
    assert h("UpdateItem", {"TableName": "range", "Key": {"pk": s("a"), "sk": s("b")}}) == {}
    assert get(h, "range", {"pk": s("a"), "sk": s("b")}) == {"pk": s("a"), "sk": s("b")}


def test_update_forbidden_by_its_condition_does_not_create_the_item(h: Harness) -> None:
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET v = :v",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {":v": n("1")},
        },
    )
    assert isinstance(err, ConditionalCheckFailedException)
    assert get(h, "hash", {"pk": s("a")}) is None


def test_update_of_a_key_attribute_is_refused(h: Harness) -> None:
    for expression in ("SET pk = :v", "REMOVE pk", "SET x = :v, sk = :v"):
        err = h.error(
            "UpdateItem",
            {
                "TableName": "range",
                "Key": {"pk": s("a"), "sk": s("b")},
                "UpdateExpression": expression,
                **({"ExpressionAttributeValues": {":v": s("z")}} if ":v" in expression else {}),
            },
        )
        name = "sk" if "sk" in expression else "pk"
        assert err.message == (
            f"One or more parameter values were invalid: Cannot update attribute {name}. "
            "This attribute is part of the key"
        )


def test_update_return_values_modes(h: Harness) -> None:
    key = {"pk": s("a")}
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "x": n("1"), "y": s("keep")}})
    base = {
        "TableName": "hash",
        "Key": key,
        "UpdateExpression": "SET x = x + :one, z = :one",
        "ExpressionAttributeValues": {":one": n("1")},
    }
    assert h("UpdateItem", {**base, "ReturnValues": "ALL_OLD"}) == {
        "Attributes": {"pk": s("a"), "x": n("1"), "y": s("keep")}
    }
    assert h("UpdateItem", {**base, "ReturnValues": "ALL_NEW"}) == {
        "Attributes": {"pk": s("a"), "x": n("3"), "y": s("keep"), "z": n("1")}
    }
    assert h("UpdateItem", {**base, "ReturnValues": "UPDATED_OLD"}) == {
        "Attributes": {"x": n("3"), "z": n("1")}
    }
    assert h("UpdateItem", {**base, "ReturnValues": "UPDATED_NEW"}) == {
        "Attributes": {"x": n("5"), "z": n("1")}
    }
    assert h("UpdateItem", {**base, "ReturnValues": "NONE"}) == {}


def test_updated_old_of_a_new_item_returns_no_attributes(h: Harness) -> None:
    answer = h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET v = :v",
            "ExpressionAttributeValues": {":v": n("1")},
            "ReturnValues": "UPDATED_OLD",
        },
    )
    assert answer == {}


def test_update_errors_from_the_expression_leave_the_item_alone(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "t": s("text")}})
    err = h.error(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET t = t + :one",
            "ExpressionAttributeValues": {":one": n("1")},
        },
    )
    assert isinstance(err, ValidationException)
    assert err.message == "An operand in the update expression has an incorrect data type"


# --- DeleteItem ---------------------------------------------------------------------------------


def test_delete_removes_the_item_and_returns_it_when_asked(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": n("1")}})
    answer = h(
        "DeleteItem", {"TableName": "hash", "Key": {"pk": s("a")}, "ReturnValues": "ALL_OLD"}
    )
    assert answer == {"Attributes": {"pk": s("a"), "v": n("1")}}
    assert get(h, "hash", {"pk": s("a")}) is None


def test_delete_of_a_missing_item_is_still_a_logged_write(h: Harness) -> None:
    lsn = h.log.committed_lsn()
    answer = h(
        "DeleteItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "ReturnValues": "ALL_OLD",
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer == {"ConsumedCapacity": {"TableName": "hash", "CapacityUnits": 1.0}}
    assert h.log.committed_lsn() == lsn + 1


def test_put_of_an_identical_item_is_still_a_logged_write(h: Harness) -> None:
    item = {"pk": s("a"), "v": n("1")}
    h("PutItem", {"TableName": "hash", "Item": item})
    lsn = h.log.committed_lsn()
    h("PutItem", {"TableName": "hash", "Item": item})
    assert h.log.committed_lsn() == lsn + 1


# --- Consumed capacity --------------------------------------------------------------------------


def test_write_capacity_is_the_larger_of_old_and_new_rounded_up_to_1_kb(h: Harness) -> None:
    big = {"pk": s("a"), "b": s("x" * 1500)}  # 2 + 1 + 1 + 1500 bytes: 2 units
    answer = h("PutItem", {"TableName": "hash", "Item": big, "ReturnConsumedCapacity": "TOTAL"})
    assert answer["ConsumedCapacity"] == {"TableName": "hash", "CapacityUnits": 2.0}
    answer = h(
        "PutItem",
        {"TableName": "hash", "Item": {"pk": s("a")}, "ReturnConsumedCapacity": "INDEXES"},
    )
    assert answer["ConsumedCapacity"] == {
        "TableName": "hash",
        "CapacityUnits": 2.0,
        "Table": {"CapacityUnits": 2.0},
    }
    answer = h(
        "PutItem", {"TableName": "hash", "Item": {"pk": s("a")}, "ReturnConsumedCapacity": "TOTAL"}
    )
    assert answer["ConsumedCapacity"]["CapacityUnits"] == 1.0


def test_read_capacity_is_4_kb_units_halved_for_eventual_reads(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "b": s("x" * 5000)}})
    key = {"pk": s("a")}
    strong = h(
        "GetItem",
        {
            "TableName": "hash",
            "Key": key,
            "ConsistentRead": True,
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    eventual = h("GetItem", {"TableName": "hash", "Key": key, "ReturnConsumedCapacity": "TOTAL"})
    missing = h(
        "GetItem", {"TableName": "hash", "Key": {"pk": s("zz")}, "ReturnConsumedCapacity": "TOTAL"}
    )
    assert strong["ConsumedCapacity"]["CapacityUnits"] == 2.0
    assert eventual["ConsumedCapacity"]["CapacityUnits"] == 1.0
    assert missing == {"ConsumedCapacity": {"TableName": "hash", "CapacityUnits": 0.5}}


def test_read_capacity_counts_the_whole_item_not_the_projection(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "b": s("x" * 5000)}})
    answer = h(
        "GetItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "ConsistentRead": True,
            "ProjectionExpression": "pk",
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer == {
        "Item": {"pk": s("a")},
        "ConsumedCapacity": {"TableName": "hash", "CapacityUnits": 2.0},
    }


def test_item_collection_metrics_are_omitted_without_local_indexes(h: Harness) -> None:
    answer = h(
        "PutItem",
        {"TableName": "hash", "Item": {"pk": s("a")}, "ReturnItemCollectionMetrics": "SIZE"},
    )
    assert answer == {}


# --- Statistics ---------------------------------------------------------------------------------


def test_table_stats_count_items_and_bytes(h: Harness) -> None:
    table = h.table("hash")
    assert table_stats(h.db, table) == (0, 0)
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "v": s("12345")}})  # 2+1+1+5
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("b")}})  # 3
    assert table_stats(h.db, table) == (2, 12)
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a")}})  # 9 -> 3
    assert table_stats(h.db, table) == (2, 6)
    h("DeleteItem", {"TableName": "hash", "Key": {"pk": s("a")}})
    h("DeleteItem", {"TableName": "hash", "Key": {"pk": s("a")}})
    assert table_stats(h.db, table) == (1, 3)


def test_failed_writes_do_not_move_the_statistics(h: Harness) -> None:
    table = h.table("hash")
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a")}})
    h.error(
        "PutItem",
        {
            "TableName": "hash",
            "Item": {"pk": s("a"), "x": s("y")},
            "ConditionExpression": "attribute_not_exists(pk)",
        },
    )
    assert table_stats(h.db, table) == (1, 3)


# --- Pending overlay ----------------------------------------------------------------------------


class HeldLog:
    """A log that commits only when told to: appends wait, in order, until `release()`."""

    def __init__(self, apply: Any) -> None:
        self._apply = apply
        self._lsn = 0
        self._held: list[tuple[int, bytes, asyncio.Future[int]]] = []
        self.fail_next = False

    async def append(self, record: bytes) -> int:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk gone")
        self._lsn += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._held.append((self._lsn, record, future))
        return await future

    def release(self) -> None:
        held, self._held = self._held, []
        for lsn, record, future in held:
            self._apply([(lsn, record)])
            future.set_result(lsn)

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


def test_concurrent_writes_to_one_item_evaluate_in_log_order() -> None:
    harness = Harness()
    harness.create("hash")
    # Swap in a log that holds appends, so writes overlap.
    held = HeldLog(harness.db.apply)
    harness.db._log = held
    db = harness.db

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(
            db.dispatch(
                "PutItem",
                {
                    "TableName": "hash",
                    "Item": {"pk": s("a"), "v": n("1")},
                    "ConditionExpression": "attribute_not_exists(pk)",
                },
            )
        )
        await asyncio.sleep(0)
        second = asyncio.ensure_future(
            db.dispatch(
                "PutItem",
                {
                    "TableName": "hash",
                    "Item": {"pk": s("a"), "v": n("2")},
                    "ConditionExpression": "attribute_not_exists(pk)",
                },
            )
        )
        third = asyncio.ensure_future(
            db.dispatch(
                "UpdateItem",
                {
                    "TableName": "hash",
                    "Key": {"pk": s("a")},
                    "UpdateExpression": "SET v = v + :one",
                    "ExpressionAttributeValues": {":one": n("10")},
                    "ReturnValues": "UPDATED_NEW",
                },
            )
        )
        await asyncio.sleep(0)
        # Reads see committed state only, while the writes are in flight.
        read = await db.dispatch("GetItem", {"TableName": "hash", "Key": {"pk": s("a")}})
        assert read == {}
        held.release()
        return [read, *(await asyncio.gather(first, second, third, return_exceptions=True))]

    _, first, second, third = harness.loop.run_until_complete(scenario())
    assert first == {}
    assert isinstance(second, ConditionalCheckFailedException)
    assert third == {"Attributes": {"v": n("11")}}
    assert items_state(db).pending == {}
    assert harness("GetItem", {"TableName": "hash", "Key": {"pk": s("a")}}) == {
        "Item": {"pk": s("a"), "v": n("11")}
    }
    harness.close()


def test_a_failed_proposal_leaves_no_pending_image() -> None:
    harness = Harness()
    harness.create("hash")
    held = HeldLog(harness.db.apply)
    harness.db._log = held
    held.fail_next = True
    with pytest.raises(OSError):
        harness("PutItem", {"TableName": "hash", "Item": {"pk": s("a")}})
    assert items_state(harness.db).pending == {}
    harness.close()


# --- Secondary index keys and item collections --------------------------------------------------


@pytest.fixture
def indexed(h: Harness) -> Harness:
    h.create(
        "indexed",
        range_key="sk",
        more_definitions=[
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "l", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by-l",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "l", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    return h


def test_index_key_of_the_wrong_type_is_refused(indexed: Harness) -> None:
    err = indexed.error(
        "PutItem", {"TableName": "indexed", "Item": {"pk": s("a"), "sk": s("b"), "g": n("1")}}
    )
    assert err.message == (
        "One or more parameter values were invalid: Type mismatch for Index "
        "Key g Expected: S Actual: N IndexName: by-g"
    )
    err = indexed.error(
        "PutItem", {"TableName": "indexed", "Item": {"pk": s("a"), "sk": s("b"), "l": s("x")}}
    )
    assert err.message == (
        "One or more parameter values were invalid: Type mismatch for Index "
        "Key l Expected: N Actual: S IndexName: by-l"
    )


def test_empty_index_key_is_refused_but_a_missing_one_is_fine(indexed: Harness) -> None:
    err = indexed.error(
        "PutItem", {"TableName": "indexed", "Item": {"pk": s("a"), "sk": s("b"), "g": s("")}}
    )
    assert err.message == (
        "One or more parameter values are not valid. A value specified for a secondary index "
        "key is not supported. The AttributeValue for a key attribute cannot contain an empty "
        "string value. IndexName: by-g, IndexKey: g"
    )
    indexed("PutItem", {"TableName": "indexed", "Item": {"pk": s("a"), "sk": s("b")}})


def test_update_of_an_index_key_to_the_wrong_type_is_refused(indexed: Harness) -> None:
    err = indexed.error(
        "UpdateItem",
        {
            "TableName": "indexed",
            "Key": {"pk": s("a"), "sk": s("b")},
            "UpdateExpression": "SET g = :v",
            "ExpressionAttributeValues": {":v": n("1")},
        },
    )
    assert err.message == (
        "One or more parameter values were invalid: Type mismatch for Index "
        "Key g Expected: S Actual: N IndexName: by-g"
    )


def test_item_collection_metrics_are_reported_for_tables_with_local_indexes(
    indexed: Harness,
) -> None:
    answer = indexed(
        "PutItem",
        {
            "TableName": "indexed",
            "Item": {"pk": s("a"), "sk": s("b")},
            "ReturnItemCollectionMetrics": "SIZE",
        },
    )
    assert answer == {
        "ItemCollectionMetrics": {
            "ItemCollectionKey": {"pk": s("a")},
            "SizeEstimateRangeGB": [0.0, 1.0],
        }
    }
    answer = indexed(
        "DeleteItem",
        {
            "TableName": "indexed",
            "Key": {"pk": s("a"), "sk": s("b")},
            "ReturnItemCollectionMetrics": "NONE",
        },
    )
    assert answer == {}


# --- Deleted tables -----------------------------------------------------------------------------


def test_a_write_applied_after_its_table_was_deleted_leaves_nothing_behind(h: Harness) -> None:
    from keeldb.engine.database import encode_record
    from keeldb.engine.item_store import storage_key

    table = h.table("hash")
    record = {
        "kind": "put",
        "table": table.table_id,
        "name": "hash",
        "item": {"pk": s("a")},
        "size": 3,
        "key": storage_key(table, {"pk": s("a")}),
    }
    h("DeleteTable", {"TableName": "hash"})
    lsn = h.store.applied_lsn() + 1
    h.db.apply([(lsn, encode_record(record))])
    assert h.store.applied_lsn() == lsn
    assert list(h.store.scan(*_table_range(table.table_id))) == []


def test_a_replayed_record_is_not_applied_twice(h: Harness) -> None:
    from keeldb.engine.database import encode_record
    from keeldb.engine.item_store import storage_key

    table = h.table("hash")
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a")}})
    record = {
        "kind": "put",
        "table": table.table_id,
        "name": "hash",
        "item": {"pk": s("b")},
        "size": 3,
        "key": storage_key(table, {"pk": s("b")}),
    }
    h.db.apply([(h.store.applied_lsn(), encode_record(record))])
    assert get(h, "hash", {"pk": s("b")}) is None
    assert table_stats(h.db, table) == (1, 3)


def _table_range(table_id: str) -> tuple[bytes, bytes]:
    from keeldb.model.keys import table_bounds

    return table_bounds(table_id)


def test_a_write_for_a_deleted_table_does_not_land_in_its_namesake(h: Harness) -> None:
    from keeldb.engine.database import encode_record
    from keeldb.engine.item_store import storage_key

    old = h.table("hash")
    record = {
        "kind": "put",
        "table": old.table_id,
        "name": "hash",
        "item": {"pk": s("a")},
        "size": 3,
        "key": storage_key(old, {"pk": s("a")}),
    }
    h("DeleteTable", {"TableName": "hash"})
    h.create("hash")
    new = h.table("hash")
    assert new.table_id != old.table_id
    h.db.apply([(h.store.applied_lsn() + 1, encode_record(record))])
    assert get(h, "hash", {"pk": s("a")}) is None
    assert table_stats(h.db, new) == (0, 0)
    assert list(h.store.scan(*_table_range(old.table_id))) == []


def test_document_paths_into_key_attributes_are_refused(indexed: Harness) -> None:
    key = {"pk": s("a"), "sk": s("b")}
    err = indexed.error(
        "UpdateItem",
        {
            "TableName": "indexed",
            "Key": key,
            "UpdateExpression": "SET g.x = :v",
            "ExpressionAttributeValues": {":v": s("1")},
        },
    )
    assert err.message == (
        "Key attributes must be scalars; list random access '[]' and map "
        "lookup '.' are not allowed: IndexKey: g"
    )
    err = indexed.error(
        "GetItem", {"TableName": "indexed", "Key": key, "ProjectionExpression": "pk.x"}
    )
    assert err.message == (
        "Key attributes must be scalars; list random access '[]' and map "
        "lookup '.' are not allowed: Key: pk"
    )
    err = indexed.error(
        "UpdateItem",
        {
            "TableName": "indexed",
            "Key": key,
            "UpdateExpression": "SET pk.x = :v",
            "ExpressionAttributeValues": {":v": s("1")},
        },
    )
    assert "Cannot update attribute pk. This attribute is part of the key" in err.message


def test_a_table_arn_addresses_the_table(h: Harness) -> None:
    arn = h.table("hash").arn
    answer = h(
        "PutItem",
        {"TableName": arn, "Item": {"pk": s("a")}, "ReturnConsumedCapacity": "TOTAL"},
    )
    assert answer == {"ConsumedCapacity": {"TableName": arn, "CapacityUnits": 1.0}}
    assert get(h, arn, {"pk": s("a")}) == {"pk": s("a")}
    assert get(h, "hash", {"pk": s("a")}) == {"pk": s("a")}
    other = arn.replace(":table/hash", ":table/nope")
    err = h.error("GetItem", {"TableName": other, "Key": {"pk": s("a")}})
    assert isinstance(err, ResourceNotFoundException)


def test_projection_matching_nothing_returns_an_empty_item(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "x": n("1")}})
    answer = h(
        "GetItem", {"TableName": "hash", "Key": {"pk": s("a")}, "ProjectionExpression": "absent"}
    )
    assert answer == {"Item": {}}
    missing = h(
        "GetItem", {"TableName": "hash", "Key": {"pk": s("b")}, "ProjectionExpression": "absent"}
    )
    assert missing == {}


def test_a_strongly_consistent_read_of_nothing_costs_one_unit(h: Harness) -> None:
    answer = h(
        "GetItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("none")},
            "ConsistentRead": True,
            "ReturnConsumedCapacity": "INDEXES",
        },
    )
    assert answer == {
        "ConsumedCapacity": {
            "TableName": "hash",
            "CapacityUnits": 1.0,
            "Table": {"CapacityUnits": 1.0},
        }
    }


def test_update_capacity_counts_the_larger_of_old_and_new(h: Harness) -> None:
    h("PutItem", {"TableName": "hash", "Item": {"pk": s("a"), "big": s("x" * 2500)}})
    answer = h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "REMOVE big",
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer["ConsumedCapacity"]["CapacityUnits"] == 3.0
    answer = h(
        "UpdateItem",
        {
            "TableName": "hash",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET big = :b",
            "ExpressionAttributeValues": {":b": s("y" * 1100)},
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer["ConsumedCapacity"]["CapacityUnits"] == 2.0
