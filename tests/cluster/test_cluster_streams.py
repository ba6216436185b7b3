"""DynamoDB Streams on a real 3-node cluster with 4 partitions, through boto3 only: an open
shard per partition listed by any router as soon as the stream is enabled (CreateTable or
UpdateTable), the same shards after a partition leader's death, iterators issued by one
router read through another, every change exactly once and in order per item, iterators
that outlive a partition leader's death, and disabling that closes every partition's
shard."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import boto3
import pytest
from botocore.config import Config

from keeldb.cluster import streams_route

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 4
KEYS = 24


def streams_client(endpoint: str, service: str = "dynamodbstreams") -> Any:
    """A client that retries what a failover refuses (InternalServerError) a few times."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDCLUSTERTEST",
        aws_secret_access_key="cluster-test-secret",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, read_timeout=30),
    )


def all_shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    """DescribeStream paged one shard at a time."""
    shards: list[dict[str, Any]] = []
    start: str | None = None
    while True:
        args: dict[str, Any] = {"StreamArn": arn, "Limit": 1}
        if start is not None:
            args["ExclusiveStartShardId"] = start
        description = streams.describe_stream(**args)["StreamDescription"]
        shards.extend(description["Shards"])
        start = description.get("LastEvaluatedShardId")
        if start is None:
            return shards


def check_open_shard_per_partition(shards: list[dict[str, Any]]) -> None:
    """A stream just enabled, before any write: one open shard per partition, each with the
    sequence number it starts at, in ShardId order."""
    ids = [s["ShardId"] for s in shards]
    assert ids == sorted(ids)
    assert [streams_route.shard_partition(i) for i in ids] == list(range(PARTITIONS))
    for shard in shards:
        assert "ParentShardId" not in shard
        assert "EndingSequenceNumber" not in shard["SequenceNumberRange"]
        assert len(shard["SequenceNumberRange"]["StartingSequenceNumber"]) >= 21


def drain(streams: Any, iterator: str | None) -> tuple[list[Any], str | None]:
    """Every record from `iterator` on; the next iterator (None at the end of a closed shard)."""
    out: list[Any] = []
    while iterator is not None:
        page = streams.get_records(ShardIterator=iterator, Limit=7)
        out.extend(page["Records"])
        following = page.get("NextShardIterator")
        if not page["Records"]:
            return out, following
        iterator = following
    return out, None


def test_a_clusters_stream_has_a_shard_per_partition_read_through_any_router(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(nodes=3, profile="standard", partitions=PARTITIONS)
    ddb = [streams_client(cluster.endpoint(n), "dynamodb") for n in (1, 2, 3)]
    streams = [streams_client(cluster.endpoint(n)) for n in (1, 2, 3)]
    ddb[0].create_table(
        TableName="events",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    arn = ddb[1].describe_table(TableName="events")["Table"]["LatestStreamArn"]
    # The label is decided once, by the metadata group: every router reports the same ARN.
    assert {c.describe_table(TableName="events")["Table"]["LatestStreamArn"] for c in ddb} == {arn}
    # Every partition lists its open shard before anything is written, through any router.
    at_enable = all_shards(streams[0], arn)
    check_open_shard_per_partition(at_enable)
    assert all_shards(streams[1], arn) == all_shards(streams[2], arn) == at_enable
    # So does a stream that UpdateTable enables on an existing table.
    ddb[2].create_table(
        TableName="quiet",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb[0].update_table(
        TableName="quiet",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    quiet_arn = ddb[1].describe_table(TableName="quiet")["Table"]["LatestStreamArn"]
    quiet = all_shards(streams[1], quiet_arn)
    check_open_shard_per_partition(quiet)
    for i in range(KEYS):
        client = ddb[i % 3]
        client.put_item(TableName="events", Item={"pk": {"S": f"k{i}"}, "n": {"N": "1"}})
        client.update_item(
            TableName="events",
            Key={"pk": {"S": f"k{i}"}},
            UpdateExpression="SET n = n + :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    shards = all_shards(streams[2], arn)
    ids = [s["ShardId"] for s in shards]
    assert len(ids) == len(set(ids))
    assert ids == [s["ShardId"] for s in at_enable]  # the writes went to the shards opened
    assert {streams_route.shard_partition(i) for i in ids} <= set(range(PARTITIONS))
    assert ids == sorted(ids)
    assert all("EndingSequenceNumber" not in s["SequenceNumberRange"] for s in shards)
    assert all_shards(streams[0], arn) == shards  # any router lists the same shards

    # Iterators issued by one router, read through another.
    by_key: dict[str, list[Any]] = defaultdict(list)
    positions: dict[str, str | None] = {}
    event_ids: set[str] = set()
    for number, shard in enumerate(shards):
        iterator = streams[number % 3].get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        found, positions[shard["ShardId"]] = drain(streams[(number + 1) % 3], iterator)
        for record in found:
            by_key[record["dynamodb"]["Keys"]["pk"]["S"]].append(record)
            event_ids.add(record["eventID"])
    assert sorted(by_key) == sorted(f"k{i}" for i in range(KEYS))
    for key, changes in by_key.items():
        assert [r["eventName"] for r in changes] == ["INSERT", "MODIFY"], key
        assert changes[1]["dynamodb"]["OldImage"]["n"] == {"N": "1"}
        assert changes[1]["dynamodb"]["NewImage"]["n"] == {"N": "2"}
        sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in changes]
        assert sequence == sorted(sequence)
    assert len(event_ids) == 2 * KEYS

    # The leader of a partition holding records dies: the saved iterators still read on,
    # through a surviving router, everything written after, and nothing twice.
    victim_partition = streams_route.shard_partition(ids[0])
    leader = cluster.leader_of(f"p{victim_partition}")
    cluster.kill(leader)
    alive = [n for n in (1, 2, 3) if n != leader]
    # The shards are replicated state: the new leaders list the same ones, from the same
    # starting sequence numbers, and the stream that nothing was written to keeps its own.
    survivor = streams_client(cluster.endpoint(alive[1]))
    assert all_shards(survivor, arn) == shards
    assert all_shards(survivor, quiet_arn) == quiet
    client = streams_client(cluster.endpoint(alive[0]), "dynamodb")
    for i in range(KEYS):
        client.delete_item(TableName="events", Key={"pk": {"S": f"k{i}"}})
    reader = streams_client(cluster.endpoint(alive[1]))
    removed: list[str] = []
    for shard_id, iterator in positions.items():
        assert iterator is not None
        found, positions[shard_id] = drain(reader, iterator)
        assert {r["eventName"] for r in found} <= {"REMOVE"}
        removed.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in found)
    assert sorted(removed) == sorted(f"k{i}" for i in range(KEYS))

    # Disabling the stream closes every partition's shard; the last page has no iterator.
    client.update_table(TableName="events", StreamSpecification={"StreamEnabled": False})
    description = reader.describe_stream(StreamArn=arn)["StreamDescription"]
    assert description["StreamStatus"] == "DISABLED"
    assert {s["ShardId"] for s in description["Shards"]} == set(ids)
    for shard in description["Shards"]:
        assert "EndingSequenceNumber" in shard["SequenceNumberRange"], shard
    for shard_id, iterator in positions.items():
        found, following = drain(reader, iterator)
        assert found == [] and following is None, shard_id
