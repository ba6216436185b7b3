"""Shard rollover on a real `keeldb serve` with a one-second shard lifetime: the stream grows
a chain of shards, each naming its parent, and reading them parent first gives every change
exactly once, in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
WRITE_SECONDS = 2.5


def clients(endpoint: str) -> tuple[Any, Any]:
    settings: dict[str, Any] = {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": "AKIDKEELDBTEST",
        "aws_secret_access_key": "keeldb-test-secret",
        "config": Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=10),
    }
    return boto3.client("dynamodb", **settings), boto3.client("dynamodbstreams", **settings)


def read_shard(streams: Any, arn: str, shard_id: str) -> tuple[list[Any], bool]:
    """Every record of a shard now, and whether the shard said it is finished."""
    position = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out: list[Any] = []
    while True:
        page = streams.get_records(ShardIterator=position)
        out.extend(page["Records"])
        if "NextShardIterator" not in page:
            return out, True
        if not page["Records"]:
            return out, False
        position = page["NextShardIterator"]


@pytest.mark.slow
def test_shards_roll_over_and_read_in_lineage_order(
    server_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEELDB_STREAM_SHARD_SECONDS", "1")
    server = server_factory("--in-memory")
    ddb, streams = clients(server.url)
    ddb.create_table(
        TableName="rolling",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    arn = ddb.describe_table(TableName="rolling")["Table"]["LatestStreamArn"]
    written = 0
    deadline = time.monotonic() + WRITE_SECONDS
    while time.monotonic() < deadline:
        ddb.put_item(TableName="rolling", Item={"pk": {"S": "k"}, "n": {"N": str(written)}})
        written += 1
        time.sleep(0.01)

    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    assert len(shards) >= 2
    by_id = {shard["ShardId"]: shard for shard in shards}
    (root,) = [s for s in shards if "ParentShardId" not in s]
    chain = [root]
    while True:
        children = [s for s in shards if s.get("ParentShardId") == chain[-1]["ShardId"]]
        if not children:
            break
        assert len(children) == 1
        chain.append(children[0])
    assert len(chain) == len(by_id)
    for shard in chain[:-1]:
        assert "EndingSequenceNumber" in shard["SequenceNumberRange"]
    assert "EndingSequenceNumber" not in chain[-1]["SequenceNumberRange"]

    values: list[int] = []
    for number, shard in enumerate(chain):
        records, finished = read_shard(streams, arn, shard["ShardId"])
        assert finished == (number < len(chain) - 1)
        values += [int(r["dynamodb"]["NewImage"]["n"]["N"]) for r in records]
    assert values == list(range(written))
