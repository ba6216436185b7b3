"""PutItem, GetItem, UpdateItem and DeleteItem through boto3's low-level client against a
real server: the answers, and DynamoDB's exact error types and messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError


def error_of(call: Callable[..., Any], **request: Any) -> tuple[str, str, dict[str, Any]]:
    with pytest.raises(ClientError) as caught:
        call(**request)
    response = caught.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response


def test_put_get_update_delete_round_trip(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    assert "Attributes" not in ddb.put_item(
        TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1.50"}}
    )
    got = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"] == {"pk": {"S": "a"}, "n": {"N": "1.5"}}
    updated = ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET n = n + :d, l = :l",
        ExpressionAttributeValues={":d": {"N": "2"}, ":l": {"L": [{"S": "x"}]}},
        ReturnValues="ALL_NEW",
    )
    assert updated["Attributes"] == {"pk": {"S": "a"}, "n": {"N": "3.5"}, "l": {"L": [{"S": "x"}]}}
    deleted = ddb.delete_item(TableName=table, Key={"pk": {"S": "a"}}, ReturnValues="ALL_OLD")
    assert deleted["Attributes"] == updated["Attributes"]
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})


def test_binary_values_round_trip_as_bytes(ddb: Any, table_factory: Any) -> None:
    table = table_factory(hash_type="B")
    ddb.put_item(TableName=table, Item={"pk": {"B": b"\x00\x01"}, "v": {"BS": [b"a", b"b"]}})
    got = ddb.get_item(TableName=table, Key={"pk": {"B": b"\x00\x01"}})["Item"]
    assert got["pk"] == {"B": b"\x00\x01"}
    assert sorted(got["v"]["BS"]) == [b"a", b"b"]


def test_missing_table_is_resource_not_found(ddb: Any) -> None:
    code, message, response = error_of(
        ddb.get_item, TableName="no-such-table", Key={"pk": {"S": "a"}}
    )
    assert code == "ResourceNotFoundException"
    assert message == "Requested resource not found"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_key_schema_mismatch_is_a_validation_exception(ddb: Any, table_factory: Any) -> None:
    table = table_factory(range_key="sk")
    code, message, _ = error_of(ddb.get_item, TableName=table, Key={"pk": {"S": "a"}})
    assert (code, message) == (
        "ValidationException",
        "The provided key element does not match the schema",
    )
    code, message, _ = error_of(ddb.put_item, TableName=table, Item={"pk": {"S": "a"}})
    assert message == "One or more parameter values were invalid: Missing the key sk in the item"
    code, message, _ = error_of(
        ddb.put_item, TableName=table, Item={"pk": {"N": "1"}, "sk": {"S": "b"}}
    )
    assert (
        message
        == "One or more parameter values were invalid: Type mismatch for key pk expected: S actual: N"
    )


def test_empty_key_string_gets_dynamodb_message(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, message, _ = error_of(ddb.put_item, TableName=table, Item={"pk": {"S": ""}})
    assert code == "ValidationException"
    assert message == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute "
        "cannot contain an empty string value. Key: pk"
    )


def test_oversized_item_and_keys_are_refused(ddb: Any, table_factory: Any) -> None:
    table = table_factory(range_key="sk")
    code, message, _ = error_of(
        ddb.put_item,
        TableName=table,
        Item={"pk": {"S": "a"}, "sk": {"S": "b"}, "x": {"S": "y" * 409600}},
    )
    assert (code, message) == (
        "ValidationException",
        "Item size has exceeded the maximum allowed size",
    )
    _, message, _ = error_of(
        ddb.put_item, TableName=table, Item={"pk": {"S": "a" * 2049}, "sk": {"S": "b"}}
    )
    assert message == (
        "One or more parameter values were invalid: Size of hashkey has exceeded "
        "the maximum size limit of2048 bytes"
    )
    _, message, _ = error_of(
        ddb.put_item, TableName=table, Item={"pk": {"S": "a"}, "sk": {"S": "b" * 1025}}
    )
    assert message == (
        "One or more parameter values were invalid: Aggregated size of all range "
        "keys has exceeded the size limit of 1024 bytes"
    )


def test_put_return_values_other_than_all_old_are_refused(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, message, _ = error_of(
        ddb.put_item, TableName=table, Item={"pk": {"S": "a"}}, ReturnValues="ALL_NEW"
    )
    assert (code, message) == (
        "ValidationException",
        "1 validation error detected: ReturnValues can only be ALL_OLD or NONE",
    )


def test_conditional_check_failure_carries_the_old_item_when_asked(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    code, message, response = error_of(
        ddb.put_item,
        TableName=table,
        Item={"pk": {"S": "a"}},
        ConditionExpression="attribute_not_exists(pk)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    assert (code, message) == ("ConditionalCheckFailedException", "The conditional request failed")
    assert response["Item"] == {"pk": {"S": "a"}, "v": {"N": "1"}}
    got = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"]
    assert got == {"pk": {"S": "a"}, "v": {"N": "1"}}


def test_update_of_a_key_attribute_is_refused(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, message, _ = error_of(
        ddb.update_item,
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET pk = :v",
        ExpressionAttributeValues={":v": {"S": "b"}},
    )
    assert (code, message) == (
        "ValidationException",
        (
            "One or more parameter values were invalid: "
            "Cannot update attribute pk. This attribute is part of the key"
        ),
    )


def test_legacy_parameters_are_honoured_not_ignored(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, message, _ = error_of(
        ddb.put_item,
        TableName=table,
        Item={"pk": {"S": "a"}},
        Expected={"pk": {"Exists": False}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    assert message == (
        "1 validation error detected: "
        "Can not use both expression and non-expression parameters in the same "
        "request: Non-expression parameters: {Expected} Expression parameters: "
        "{ConditionExpression}"
    )
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}}, Expected={"pk": {"Exists": False}})
    code, message, _ = error_of(
        ddb.put_item, TableName=table, Item={"pk": {"S": "a"}}, Expected={"pk": {"Exists": False}}
    )
    assert (code, message) == ("ConditionalCheckFailedException", "The conditional request failed")


def test_consumed_capacity_follows_dynamodb_arithmetic(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    put = ddb.put_item(
        TableName=table,
        Item={"pk": {"S": "a"}, "b": {"S": "x" * 2000}},
        ReturnConsumedCapacity="INDEXES",
    )
    assert put["ConsumedCapacity"] == {
        "TableName": table,
        "CapacityUnits": 2.0,
        "Table": {"CapacityUnits": 2.0},
    }
    get = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}, ReturnConsumedCapacity="TOTAL")
    assert get["ConsumedCapacity"] == {"TableName": table, "CapacityUnits": 0.5}
    get = ddb.get_item(
        TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True, ReturnConsumedCapacity="TOTAL"
    )
    assert get["ConsumedCapacity"]["CapacityUnits"] == 1.0


def test_describe_table_counts_items_and_bytes(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"S": "12345"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}})
    described = ddb.describe_table(TableName=table)["Table"]
    assert (described["ItemCount"], described["TableSizeBytes"]) == (2, 12)


def test_unused_expression_values_get_dynamodb_message(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, message, _ = error_of(
        ddb.update_item,
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"S": "1"}, ":w": {"S": "2"}},
    )
    assert (code, message) == (
        "ValidationException",
        ("Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"),
    )
