"""BatchGetItem and BatchWriteItem against the real server through boto3's client, the
resource's `batch_writer` and `batch_get_item`, and PynamoDB's `batch_write` / `batch_get`."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model


def error(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    answer = caught.value.response["Error"]
    return answer["Code"], answer["Message"]


def test_client_batch_write_then_batch_get(ddb: Any, table_factory: Callable[..., str]) -> None:
    first = table_factory()
    second = table_factory(range_key="sk", range_type="N")
    answer = ddb.batch_write_item(
        RequestItems={
            first: [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}}}} for i in range(10)],
            second: [{"PutRequest": {"Item": {"pk": {"S": "a"}, "sk": {"N": "1"}}}}],
        },
        ReturnConsumedCapacity="TOTAL",
    )
    assert answer["UnprocessedItems"] == {}
    assert {c["TableName"]: c["CapacityUnits"] for c in answer["ConsumedCapacity"]} == {
        first: 10.0,
        second: 1.0,
    }
    got = ddb.batch_get_item(
        RequestItems={
            first: {
                "Keys": [{"pk": {"S": "k1"}}, {"pk": {"S": "missing"}}],
                "ConsistentRead": True,
            },
            second: {"Keys": [{"pk": {"S": "a"}, "sk": {"N": "1"}}], "ProjectionExpression": "sk"},
        }
    )
    assert got["Responses"] == {first: [{"pk": {"S": "k1"}}], second: [{"sk": {"N": "1"}}]}
    assert got["UnprocessedKeys"] == {}


def test_batch_errors_reach_the_client_with_dynamodb_messages(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    name = table_factory()
    with pytest.raises(ClientError) as caught:
        ddb.batch_write_item(
            RequestItems={
                name: [
                    {"PutRequest": {"Item": {"pk": {"S": "a"}}}},
                    {"DeleteRequest": {"Key": {"pk": {"S": "a"}}}},
                ]
            }
        )
    assert error(caught) == (
        "ValidationException",
        "Provided list of item keys contains duplicates",
    )
    with pytest.raises(ClientError) as caught:
        ddb.batch_get_item(
            RequestItems={name: {"Keys": [{"pk": {"S": f"k{i}"}} for i in range(101)]}}
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as caught:
        ddb.batch_get_item(RequestItems={"no-such-table": {"Keys": [{"pk": {"S": "a"}}]}})
    assert error(caught) == ("ResourceNotFoundException", "Requested resource not found")
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": {"S": "a"}})


def test_resource_batch_writer_and_batch_get(ddb_resource: Any, table_factory: Any) -> None:
    name = table_factory(range_key="sk", range_type="N")
    table = ddb_resource.Table(name)
    with table.batch_writer() as writer:
        for i in range(60):
            writer.put_item(Item={"pk": "w", "sk": i, "half": Decimal(i) / 2})
        writer.delete_item(Key={"pk": "w", "sk": 0})
    count = table.query(
        KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": "w"}, Select="COUNT"
    )["Count"]
    assert count == 59
    got = ddb_resource.batch_get_item(
        RequestItems={name: {"Keys": [{"pk": "w", "sk": 1}, {"pk": "w", "sk": 2}]}}
    )
    assert sorted(item["half"] for item in got["Responses"][name]) == [Decimal("0.5"), Decimal(1)]


def test_pynamodb_batch_write_and_batch_get(endpoint: str, table_factory: Any) -> None:
    name = table_factory(range_key="sk", range_type="N")

    class Entry(Model):
        class Meta:
            table_name = name
            host = endpoint
            region = "us-east-1"
            aws_access_key_id = "AKIDKEELDBTEST"
            aws_secret_access_key = "keeldb-test-secret"
            max_retry_attempts = 0

        pk = UnicodeAttribute(hash_key=True)
        sk = NumberAttribute(range_key=True)
        text = UnicodeAttribute(null=True)

    with Entry.batch_write() as writer:
        for i in range(40):
            writer.save(Entry("e", i, text=f"t{i}"))
    got = list(Entry.batch_get([("e", i) for i in range(0, 40, 4)]))
    assert sorted(e.sk for e in got) == list(range(0, 40, 4))
    assert {e.text for e in got} == {f"t{i}" for i in range(0, 40, 4)}
