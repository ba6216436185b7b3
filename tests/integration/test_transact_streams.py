"""A transaction's writes reach the table's stream: one record per changed item, in the
order of the transaction's actions, with their images; a condition check writes nothing."""

from __future__ import annotations

import os
from typing import Any

import boto3
import pytest
from botocore.config import Config


@pytest.fixture(scope="module")
def streams(endpoint: str) -> Any:
    return boto3.client(
        "dynamodbstreams",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="AKIDKEELDBTEST",
        aws_secret_access_key="keeldb-test-secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=30),
    )


def read_all(ddb: Any, streams: Any, table: str) -> list[Any]:
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    if os.environ.get("KEELDB_TEST_ENDPOINT") and len(shards) != 1:
        pytest.skip("a cluster's stream has one shard per partition holding its records")
    (shard,) = shards
    position = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[Any] = []
    while position is not None:
        page = streams.get_records(ShardIterator=position)
        if not page["Records"]:
            break
        records.extend(page["Records"])
        position = page.get("NextShardIterator")
    return records


def test_a_transaction_emits_one_record_per_changed_item(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "old"}, "n": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "new"}}}},
            {
                "Update": {
                    "TableName": table,
                    "Key": {"pk": {"S": "old"}},
                    "UpdateExpression": "SET n = :two",
                    "ExpressionAttributeValues": {":two": {"N": "2"}},
                }
            },
            {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": {"pk": {"S": "other"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Delete": {"TableName": table, "Key": {"pk": {"S": "missing"}}}},
        ]
    )
    records = read_all(ddb, streams, table)
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
        ("INSERT", "old"),
        ("INSERT", "new"),
        ("MODIFY", "old"),
    ]
    modify = records[2]["dynamodb"]
    assert modify["OldImage"]["n"] == {"N": "1"}
    assert modify["NewImage"]["n"] == {"N": "2"}
    sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence == sorted(sequence)
