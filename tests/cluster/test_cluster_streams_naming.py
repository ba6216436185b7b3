"""The cluster's names for shards, records and iterators, and the stream_close record, on
real databases over in-memory stores (a metadata database and a partition's, synced as a
cluster syncs them): no processes, no network."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from keeldb.cluster import catalog_sync, streams_route
from keeldb.engine import streams as records
from keeldb.engine.database import Database
from keeldb.model.errors import ValidationException
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.streams import api

SHARD_ID = re.compile(r"shardId-\d{20}-[0-9a-f]{8}\Z")


def open_database() -> Database:
    store = MemoryStore()
    db = Database(store)
    db.attach_log(MemoryLog(db.apply, start_lsn=store.applied_lsn()))
    return db


async def sync(meta: Database, partition: Database) -> None:
    """What the metadata leader proposes to a partition after a catalog change."""
    tables = catalog_sync.catalog_snapshot(meta)
    await partition.propose(catalog_sync.sync_record(meta.store.applied_lsn(), tables))


async def streamed_table(meta: Database, partition: Database) -> str:
    await meta.dispatch(
        "CreateTable",
        {
            "TableName": "events",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        },
    )
    await sync(meta, partition)
    described = await meta.dispatch("DescribeTable", {"TableName": "events"})
    arn: str = described["Table"]["LatestStreamArn"]
    return arn


def only_stream(db: Database) -> records.Stream:
    (stream,) = records.list_streams(db)
    return stream


def test_a_shard_has_a_different_id_in_each_partition_and_keeps_dynamodbs_shape() -> None:
    local = "shardId-00000001700000000000-1a2b3c4d"
    ids = [streams_route.cluster_shard_id(local, p) for p in range(8)]
    assert len(set(ids)) == 8
    for partition, shard_id in enumerate(ids):
        assert SHARD_ID.match(shard_id), shard_id
        assert 28 <= len(shard_id) <= 65
        assert streams_route.shard_partition(shard_id) == partition
    # The creation time stays in front, so ShardId order is still creation order.
    assert all(i.startswith("shardId-00000001700000000000-") for i in ids)


def test_a_name_that_ignores_the_partition_would_collide_across_partitions() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        meta = open_database()
        partitions = [open_database(), open_database()]
        await streamed_table(meta, partitions[0])
        await sync(meta, partitions[1])
        for partition in partitions:
            await partition.dispatch("PutItem", {"TableName": "events", "Item": {"pk": {"S": "a"}}})
        single = [api.wire_shard(only_stream(p), only_stream(p).shards[0]) for p in partitions]
        cluster = [
            api.wire_shard(
                only_stream(p), only_stream(p).shards[0], streams_route.PartitionNaming(i)
            )
            for i, p in enumerate(partitions)
        ]
        return [s["ShardId"] for s in single], [s["ShardId"] for s in cluster]

    single, cluster = asyncio.run(scenario())
    # Both partitions' first shard is "shard 0 of this stream": the single-node name (the
    # broken variant on a cluster) is the same for both, the cluster's is not.
    assert single[0] == single[1]
    assert cluster[0] != cluster[1]


def test_an_iterator_names_its_partition_and_is_refused_by_any_other() -> None:
    async def scenario() -> str:
        meta = open_database()
        partition = open_database()
        arn = await streamed_table(meta, partition)
        await partition.dispatch("PutItem", {"TableName": "events", "Item": {"pk": {"S": "a"}}})
        naming = streams_route.PartitionNaming(3)
        stream = only_stream(partition)
        shard_id = naming.shard_id(stream, stream.shards[0])
        answer = await api.get_shard_iterator(
            partition,
            {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"},
            naming,
        )
        text: str = answer["ShardIterator"]
        page = await api.get_records(partition, {"ShardIterator": text}, naming)
        assert [r["dynamodb"]["Keys"] for r in page["Records"]] == [{"pk": {"S": "a"}}]
        with pytest.raises(ValidationException):
            await api.get_records(
                partition, {"ShardIterator": text}, streams_route.PartitionNaming(2)
            )
        with pytest.raises(ValidationException):
            await api.get_records(partition, {"ShardIterator": text})  # single-node form
        return text

    text = asyncio.run(scenario())
    assert streams_route.iterator_partition(text) == 3
    damaged = text[:-6] + ("A" if text[-6] != "A" else "B") + text[-5:]
    with pytest.raises(ValidationException):
        streams_route.iterator_partition(damaged)


def test_stream_close_ends_a_stream_the_catalog_disabled_after_its_last_record() -> None:
    async def scenario() -> tuple[Any, Any, bool]:
        meta = open_database()
        partition = open_database()
        arn = await streamed_table(meta, partition)
        for key in ("a", "b"):
            await partition.dispatch("PutItem", {"TableName": "events", "Item": {"pk": {"S": key}}})
        await meta.dispatch(
            "UpdateTable", {"TableName": "events", "StreamSpecification": {"StreamEnabled": False}}
        )
        await sync(meta, partition)
        pending_before = streams_route.close_pending(partition)
        assert only_stream(partition).status == records.STATUS_ENABLED
        await partition.propose(streams_route.close_record(1_700_000_000_000))
        assert not streams_route.close_pending(partition)
        naming = streams_route.PartitionNaming(0)
        stream = only_stream(partition)
        shard = stream.shards[0]
        answer = await api.get_shard_iterator(
            partition,
            {
                "StreamArn": arn,
                "ShardId": naming.shard_id(stream, shard),
                "ShardIteratorType": "TRIM_HORIZON",
            },
            naming,
        )
        page = await api.get_records(partition, {"ShardIterator": answer["ShardIterator"]}, naming)
        return stream, page, pending_before

    stream, page, pending_before = asyncio.run(scenario())
    assert pending_before
    assert stream.status == records.STATUS_DISABLED
    assert stream.disabled_ms == 1_700_000_000_000
    (shard,) = stream.shards
    assert shard.closed is not None
    last = max(records.position_of(r["dynamodb"]["SequenceNumber"]) or 0 for r in page["Records"])
    assert shard.closed > last
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]] == ["a", "b"]
    assert "NextShardIterator" not in page  # the end of a closed shard


def test_stream_close_leaves_a_stream_the_catalog_still_streams_alone() -> None:
    async def scenario() -> records.Stream:
        meta = open_database()
        partition = open_database()
        await streamed_table(meta, partition)
        await partition.dispatch("PutItem", {"TableName": "events", "Item": {"pk": {"S": "a"}}})
        assert not streams_route.close_pending(partition)
        await partition.propose(streams_route.close_record(1))
        return only_stream(partition)

    stream = asyncio.run(scenario())
    assert stream.status == records.STATUS_ENABLED
    assert stream.shards[0].closed is None
