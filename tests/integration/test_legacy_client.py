"""The legacy parameters through boto3 against a real server: the answers, and DynamoDB's exact
error types and messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError


def error_of(method: Callable[..., Any], **params: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        method(**params)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


def test_conditional_put_and_update_with_expected_and_attribute_updates(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    ddb.put_item(
        TableName=table,
        Item={"pk": s("a"), "n": n("1")},
        Expected={"pk": {"Exists": False}},
    )
    code, message = error_of(
        ddb.put_item,
        TableName=table,
        Item={"pk": s("a")},
        Expected={"pk": {"Exists": False}},
    )
    assert (code, message) == ("ConditionalCheckFailedException", "The conditional request failed")
    answer = ddb.update_item(
        TableName=table,
        Key={"pk": s("a")},
        AttributeUpdates={
            "n": {"Action": "ADD", "Value": n("2")},
            "tags": {"Action": "ADD", "Value": {"SS": ["x"]}},
        },
        Expected={"n": {"ComparisonOperator": "LT", "AttributeValueList": [n("5")]}},
        ReturnValues="ALL_NEW",
    )
    assert answer["Attributes"] == {"pk": s("a"), "n": n("3"), "tags": {"SS": ["x"]}}
    got = ddb.get_item(TableName=table, Key={"pk": s("a")}, AttributesToGet=["n"])
    assert got["Item"] == {"n": n("3")}


def test_delete_item_with_expected_values_joined_by_or(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": s("a"), "x": s("1"), "y": s("2")})
    code, _ = error_of(
        ddb.delete_item,
        TableName=table,
        Key={"pk": s("a")},
        Expected={"x": {"Value": s("no")}, "y": {"Value": s("no")}},
        ConditionalOperator="OR",
    )
    assert code == "ConditionalCheckFailedException"
    ddb.delete_item(
        TableName=table,
        Key={"pk": s("a")},
        Expected={"x": {"Value": s("no")}, "y": {"Value": s("2")}},
        ConditionalOperator="OR",
    )
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": s("a")})


def test_legacy_validation_messages_reach_the_client(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, message = error_of(
        ddb.update_item,
        TableName=table,
        Key={"pk": s("a")},
        AttributeUpdates={"n": {"Action": "DELETE", "Value": n("1")}},
    )
    assert code == "ValidationException"
    assert message.endswith(
        "One or more parameter values were invalid: DELETE action with value is not "
        "supported for the type N"
    )


def test_query_and_scan_with_key_conditions_and_filters(ddb: Any, table_factory: Any) -> None:
    table = table_factory(range_key="sk", range_type="N")
    for sk in range(1, 6):
        item = {"pk": s("p"), "sk": n(str(sk)), "odd": {"BOOL": sk % 2 == 1}}
        ddb.put_item(TableName=table, Item=item)
    answer = ddb.query(
        TableName=table,
        KeyConditions={
            "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("p")]},
            "sk": {"ComparisonOperator": "GE", "AttributeValueList": [n("2")]},
        },
        QueryFilter={"odd": {"ComparisonOperator": "EQ", "AttributeValueList": [{"BOOL": True}]}},
        AttributesToGet=["sk"],
    )
    assert answer["Items"] == [{"sk": n("3")}, {"sk": n("5")}]
    scanned = ddb.scan(
        TableName=table,
        ScanFilter={
            "sk": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [n("2"), n("3")]},
            "odd": {"ComparisonOperator": "EQ", "AttributeValueList": [{"BOOL": True}]},
        },
        ConditionalOperator="AND",
    )
    assert [item["sk"] for item in scanned["Items"]] == [n("3")]


def test_query_filter_on_a_key_attribute_names_query_filter(ddb: Any, table_factory: Any) -> None:
    table = table_factory(range_key="sk", range_type="N")
    code, message = error_of(
        ddb.query,
        TableName=table,
        KeyConditions={"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("p")]}},
        QueryFilter={"sk": {"ComparisonOperator": "GT", "AttributeValueList": [n("1")]}},
    )
    assert (code, message) == (
        "ValidationException",
        "QueryFilter can only contain non-primary key attributes: Primary key attribute: sk",
    )


def test_resource_query_with_key_conditions(ddb_resource: Any, table_factory: Any) -> None:
    table = ddb_resource.Table(table_factory(range_key="sk", range_type="N"))
    table.put_item(Item={"pk": "p", "sk": 1, "v": "one"})
    table.put_item(Item={"pk": "p", "sk": 2, "v": "two"})
    answer = table.query(
        KeyConditions={
            "pk": {"ComparisonOperator": "EQ", "AttributeValueList": ["p"]},
            "sk": {"ComparisonOperator": "LT", "AttributeValueList": [2]},
        }
    )
    assert [item["v"] for item in answer["Items"]] == ["one"]


def test_resource_writes_and_reads_with_legacy_parameters(
    ddb_resource: Any, table_factory: Any
) -> None:
    table = ddb_resource.Table(table_factory())
    table.put_item(Item={"pk": "a", "n": 1}, Expected={"pk": {"Exists": False}})
    answer = table.update_item(
        Key={"pk": "a"},
        AttributeUpdates={
            "n": {"Action": "ADD", "Value": 4},
            "names": {"Action": "PUT", "Value": {"x", "y"}},
        },
        Expected={"n": {"Value": 1}},
        ReturnValues="UPDATED_NEW",
    )
    assert answer["Attributes"] == {"n": 5, "names": {"x", "y"}}
    assert table.get_item(Key={"pk": "a"}, AttributesToGet=["names"])["Item"] == {
        "names": {"x", "y"}
    }
    with pytest.raises(ClientError) as caught:
        table.delete_item(Key={"pk": "a"}, Expected={"n": {"Value": 1}})
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    table.delete_item(Key={"pk": "a"}, Expected={"n": {"Value": 5}})
    assert "Item" not in table.get_item(Key={"pk": "a"})


def test_a_legacy_update_of_the_wrong_type_and_a_mixed_request_are_refused(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": s("a"), "v": s("text")})
    code, message = error_of(
        ddb.update_item,
        TableName=table,
        Key={"pk": s("a")},
        AttributeUpdates={"v": {"Action": "ADD", "Value": n("1")}},
    )
    assert (code, message) == ("ValidationException", "Type mismatch for attribute to update")
    code, message = error_of(
        ddb.update_item,
        TableName=table,
        Key={"pk": s("a")},
        AttributeUpdates={"v": {"Value": n("1")}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": n("1")},
    )
    assert code == "ValidationException"
    assert message.endswith(
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {AttributeUpdates} Expression parameters: "
        "{UpdateExpression}"
    )
    code, message = error_of(
        ddb.get_item,
        TableName=table,
        Key={"pk": s("a")},
        AttributesToGet=["v"],
        ProjectionExpression="v",
    )
    assert code == "ValidationException"
    assert message == (
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {AttributesToGet} Expression parameters: "
        "{ProjectionExpression}"
    )
    got = ddb.get_item(TableName=table, Key={"pk": s("a")}, ConsistentRead=True)
    assert got["Item"] == {"pk": s("a"), "v": s("text")}
