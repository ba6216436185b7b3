"""The request passes that need no table (`keeldb.engine.item_requests`): member types,
member constraints and which parameters may be combined."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.engine.item_requests import check_expression_parameters, read_request
from keeldb.model.errors import SerializationException, ValidationException


def test_read_request_keeps_known_members_and_drops_unknown_and_null_ones() -> None:
    request = read_request(
        "GetItem",
        {
            "TableName": "abc",
            "Key": {"k": {"S": "v"}, "n": None},
            "Bogus": {"x": 1},
            "ProjectionExpression": None,
        },
    )
    assert request == {"TableName": "abc", "Key": {"k": {"S": "v"}}}


@pytest.mark.parametrize(
    "value,message",
    [
        ("true", "STRING_VALUE can not be converted to a Boolean"),
        (1, "NUMBER_VALUE can not be converted to a Boolean"),
        ({}, "Start of structure or map found where not expected."),
        ([True], "Start of list found where not expected"),
    ],
)
def test_bad_booleans_are_serialization_errors(value: Any, message: str) -> None:
    with pytest.raises(SerializationException) as caught:
        read_request("GetItem", {"TableName": "abc", "Key": {}, "ConsistentRead": value})
    assert caught.value.message == message


@pytest.mark.parametrize(
    "value,message",
    [
        (True, "TRUE_VALUE can not be converted to a String"),
        (False, "FALSE_VALUE can not be converted to a String"),
        (1.5, "NUMBER_VALUE can not be converted to a String"),
        (["a"], "Start of list found where not expected"),
        ({"a": 1}, "Start of structure or map found where not expected."),
    ],
)
def test_bad_strings_are_serialization_errors(value: Any, message: str) -> None:
    with pytest.raises(SerializationException) as caught:
        read_request("PutItem", {"TableName": "abc", "Item": {}, "ConditionExpression": value})
    assert caught.value.message == message


def test_bad_maps_are_serialization_errors() -> None:
    for value, message in [
        ("x", "Expected map or null"),
        ([1], "Start of list found where not expected"),
    ]:
        with pytest.raises(SerializationException) as caught:
            read_request("UpdateItem", {"TableName": "abc", "Key": value})
        assert caught.value.message == message


def test_a_body_that_is_not_an_object_is_a_serialization_error() -> None:
    with pytest.raises(SerializationException):
        read_request("PutItem", ["not", "an", "object"])


def test_update_item_lists_violations_in_its_own_order() -> None:
    with pytest.raises(ValidationException) as caught:
        read_request(
            "UpdateItem",
            {
                "TableName": "abc;",
                "ReturnConsumedCapacity": "hi",
                "ReturnItemCollectionMetrics": "hi",
                "ReturnValues": "hi",
            },
        )
    assert caught.value.message == (
        "5 validation errors detected: "
        "Value 'hi' at 'returnConsumedCapacity' failed to satisfy constraint: Member must satisfy "
        "enum value set: [INDEXES, TOTAL, NONE]; "
        "Value 'abc;' at 'tableName' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-zA-Z0-9_.-]+; "
        "Value 'hi' at 'returnItemCollectionMetrics' failed to satisfy constraint: Member must "
        "satisfy enum value set: [SIZE, NONE]; "
        "Value 'hi' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value "
        "set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]; "
        "Value null at 'key' failed to satisfy constraint: Member must not be null"
    )


def test_long_table_name_is_reported_once_with_its_limit() -> None:
    name = "a" * 256
    with pytest.raises(ValidationException) as caught:
        read_request("DeleteItem", {"TableName": name, "Key": {}})
    assert caught.value.message == (
        f"1 validation error detected: Value '{name}' at 'tableName' failed to satisfy "
        "constraint: Member must have length less than or equal to 255"
    )


def test_return_values_on_condition_check_failure_is_an_enum() -> None:
    with pytest.raises(ValidationException) as caught:
        read_request(
            "DeleteItem",
            {"TableName": "abc", "Key": {}, "ReturnValuesOnConditionCheckFailure": "ALL_NEW"},
        )
    assert caught.value.message == (
        "1 validation error detected: Value 'ALL_NEW' at 'returnValuesOnConditionCheckFailure' "
        "failed to satisfy constraint: Member must satisfy enum value set: [ALL_OLD, NONE]"
    )


def test_projection_expression_alone_allows_names() -> None:
    check_expression_parameters(
        {"ProjectionExpression": "a", "ExpressionAttributeNames": {"#a": "a"}},
        ("ProjectionExpression",),
    )


def test_expression_parameters_with_their_names_and_values_pass() -> None:
    check_expression_parameters(
        {"UpdateExpression": "SET a = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}},
        ("UpdateExpression", "ConditionExpression"),
    )


def test_values_without_an_expression_name_the_missing_expressions() -> None:
    with pytest.raises(ValidationException) as caught:
        check_expression_parameters(
            {"ExpressionAttributeValues": {":a": {"S": "x"}}},
            ("UpdateExpression", "ConditionExpression"),
        )
    assert caught.value.message == (
        "ExpressionAttributeValues can only be specified when using expressions: "
        "UpdateExpression and ConditionExpression are null"
    )
    with pytest.raises(ValidationException) as caught:
        check_expression_parameters(
            {"ExpressionAttributeValues": {":a": {"S": "x"}}},
            ("ConditionExpression",),
            name_null_expressions=False,
        )
    assert caught.value.message == (
        "ExpressionAttributeValues can only be specified when using expressions"
    )


def test_envelope_wraps_request_validation_messages_once() -> None:
    from keeldb.engine.item_requests import enveloped

    assert enveloped(ValidationException("ReturnValues can only be ALL_OLD or NONE")).message == (
        "1 validation error detected: ReturnValues can only be ALL_OLD or NONE"
    )
    counted = "2 validation errors detected: a; b"
    assert enveloped(ValidationException(counted)).message == counted


def test_envelope_leaves_empty_and_multi_typed_values_and_unused_names_bare() -> None:
    from keeldb.engine.item_requests import enveloped

    for message in (
        "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        (
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one "
            "of the supported datatypes"
        ),
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#a}",
    ):
        assert enveloped(ValidationException(message)).message == message
