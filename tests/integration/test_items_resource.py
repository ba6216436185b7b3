"""Item operations through boto3's resource API (`Table.put_item` ...), whose type
serialiser turns Python values into DynamoDB values and back."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError


def test_resource_round_trips_python_values(ddb_resource: Any, table_factory: Any) -> None:
    table = ddb_resource.Table(table_factory(range_key="sk", range_type="N"))
    item = {
        "pk": "a",
        "sk": Decimal(1),
        "s": "text",
        "n": Decimal("-1.25"),
        "flag": True,
        "nothing": None,
        "l": ["x", Decimal(2)],
        "m": {"k": "v"},
        "ss": {"p", "q"},
        "b": b"\x00\xff",
        "empty": "",
    }
    table.put_item(Item=item)
    assert table.get_item(Key={"pk": "a", "sk": 1}, ConsistentRead=True)["Item"] == item


def test_resource_conditions_and_updates(ddb_resource: Any, table_factory: Any) -> None:
    table = ddb_resource.Table(table_factory())
    table.put_item(Item={"pk": "a", "count": 1}, ConditionExpression=Attr("pk").not_exists())
    with pytest.raises(ClientError) as caught:
        table.put_item(Item={"pk": "a"}, ConditionExpression=Attr("pk").not_exists())
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    answer = table.update_item(
        Key={"pk": "a"},
        UpdateExpression="ADD #c :one",
        ExpressionAttributeNames={"#c": "count"},
        ExpressionAttributeValues={":one": 1},
        ReturnValues="UPDATED_NEW",
    )
    assert answer["Attributes"] == {"count": Decimal(2)}
    table.delete_item(Key={"pk": "a"}, ConditionExpression=Attr("count").eq(2))
    assert "Item" not in table.get_item(Key={"pk": "a"})


def test_resource_update_creates_a_missing_item(ddb_resource: Any, table_factory: Any) -> None:
    table = ddb_resource.Table(table_factory())
    table.update_item(
        Key={"pk": "new"},
        UpdateExpression="SET v = if_not_exists(v, :zero)",
        ExpressionAttributeValues={":zero": 0},
    )
    assert table.get_item(Key={"pk": "new"})["Item"] == {"pk": "new", "v": Decimal(0)}
