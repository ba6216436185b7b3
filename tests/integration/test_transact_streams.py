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


# A stream has one shard on a single node and one per partition on a cluster: every shard
# is read, parents before their children, and order is checked per item (SequenceNumber
# order), and across the table only where there is exactly one shard (a single node).
CLUSTER = bool(os.environ.get("KEELDB_TEST_ENDPOINT"))
PAGES_MAX = 100


def all_shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    args: dict[str, Any] = {"StreamArn": arn}
    for _ in range(PAGES_MAX):
        description = streams.describe_stream(**args)["StreamDescription"]
        shards.extend(description["Shards"])
        if "LastEvaluatedShardId" not in description:
            break
        args["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]
    if not CLUSTER:
        assert len(shards) == 1
    listed = {s["ShardId"] for s in shards}
    # Parents first: a shard whose parent is still listed comes after it.
    roots = [s for s in shards if s.get("ParentShardId") not in listed]
    ordered: list[dict[str, Any]] = []
    while roots:
        shard = roots.pop(0)
        ordered.append(shard)
        roots.extend(s for s in shards if s.get("ParentShardId") == shard["ShardId"])
    assert len(ordered) == len(shards)
    return ordered


def read_all(ddb: Any, streams: Any, table: str) -> list[Any]:
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records: list[Any] = []
    for shard in all_shards(streams, arn):
        position = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(PAGES_MAX):
            if position is None:
                break
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
    by_key: dict[str, list[Any]] = {}
    for record in records:
        by_key.setdefault(record["dynamodb"]["Keys"]["pk"]["S"], []).append(record)
    assert {key: [r["eventName"] for r in found] for key, found in by_key.items()} == {
        "old": ["INSERT", "MODIFY"],
        "new": ["INSERT"],
    }
    modify = by_key["old"][1]["dynamodb"]
    assert modify["OldImage"]["n"] == {"N": "1"}
    assert modify["NewImage"]["n"] == {"N": "2"}
    for found in by_key.values():
        sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in found]
        assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    if not CLUSTER:
        # One shard: the table's order, the transaction's actions in their order.
        assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
            ("INSERT", "old"),
            ("INSERT", "new"),
            ("MODIFY", "old"),
        ]
        sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
        assert sequence == sorted(sequence)
