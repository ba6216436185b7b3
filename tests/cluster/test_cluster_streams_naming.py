"""The cluster's names for shards, records and iterators, and the stream_close record, on
real databases over in-memory stores (a metadata database and a partition's, synced as a
cluster syncs them): no processes, no network."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgpack
import pytest

from keeldb.cluster import catalog_sync, streams_route
from keeldb.engine import streams as records
from keeldb.engine.database import Database
from keeldb.model.errors import ResourceNotFoundException, ValidationException
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


# --- The router and storage sides together, over in-memory databases -----------------------


class FakeLog:
    """A group log that always leads with a lease (the storage side asks nothing else)."""

    is_leader = True

    def read_lease(self) -> bool:
        return True


class FakeReplica:
    def __init__(self, group_id: str, database: Database, partition: int | None) -> None:
        self.group_id = group_id
        self.database = database
        self.partition = partition
        self.log = FakeLog()

    def leader(self) -> None:
        return None


class FakeStorage:
    def __init__(self, replicas: dict[str, FakeReplica]) -> None:
        self.replicas = replicas


class FakeRouter:
    """Calls a group's storage side directly, as a router's call to its leader would."""

    def __init__(self, storage: streams_route.StreamsStorage, partitions: int) -> None:
        self.storage = storage
        self.ring = range(partitions)

    async def _group_call(
        self, group: str, channel: str, payload: Any, mode: str, deadline: float
    ) -> Any:
        from keeldb.cluster.protocol import OK, raise_error

        assert channel == streams_route.CHANNEL_STREAMS
        answer = await self.storage.on_streams("router", payload)
        if answer[0] != OK:
            raise_error(answer)
        return answer[1]


def two_partitions() -> tuple[Database, list[Database], streams_route.ClusterStreams]:
    meta = open_database()
    partitions = [open_database(), open_database()]
    replicas = {"meta": FakeReplica("meta", meta, None)}
    for number, db in enumerate(partitions):
        replicas[f"p{number}"] = FakeReplica(f"p{number}", db, number)
    storage = streams_route.StreamsStorage(FakeStorage(replicas))
    return meta, partitions, streams_route.ClusterStreams(FakeRouter(storage, len(partitions)))


def test_the_router_merges_partitions_shards_pages_them_and_follows_their_lineage() -> None:
    async def scenario() -> None:
        meta, partitions, router = two_partitions()
        arn = await streamed_table(meta, partitions[0])
        await sync(meta, partitions[1])
        # Each partition opened its shard when the sync told it of the stream.
        before_writes = (await router.dispatch("DescribeStream", {"StreamArn": arn}))[
            "StreamDescription"
        ]["Shards"]
        assert [streams_route.shard_partition(s["ShardId"]) for s in before_writes] == [0, 1]
        for number, db in enumerate(partitions):
            key = {"pk": {"S": f"in-{number}"}}
            await db.dispatch("PutItem", {"TableName": "events", "Item": key})
        # Partition 1's shard rolls over: a child whose parent is its first shard.
        stream = only_stream(partitions[1])
        await partitions[1].propose(
            records.roll_record(stream.table_id, stream.label, stream.shards[0].created_ms + 1)
        )
        await partitions[1].dispatch(
            "PutItem", {"TableName": "events", "Item": {"pk": {"S": "later"}}}
        )
        whole = (await router.dispatch("DescribeStream", {"StreamArn": arn}))["StreamDescription"]
        shards = whole["Shards"]
        assert [streams_route.shard_partition(s["ShardId"]) for s in shards] == [0, 1, 1]
        # The shards opened at the sync are the ones the writes went to (partition 1's now
        # closed by its rollover).
        assert shards[0] == before_writes[0]
        assert shards[1]["ShardId"] == before_writes[1]["ShardId"]
        parent, child = shards[1], shards[2]
        assert child["ParentShardId"] == parent["ShardId"]
        assert "EndingSequenceNumber" in parent["SequenceNumberRange"]
        children = await router.dispatch(
            "DescribeStream",
            {
                "StreamArn": arn,
                "ShardFilter": {"Type": "CHILD_SHARDS", "ShardId": parent["ShardId"]},
            },
        )
        assert children["StreamDescription"]["Shards"] == [child]
        paged: list[Any] = []
        start: str | None = None
        while True:
            body: dict[str, Any] = {"StreamArn": arn, "Limit": 2}
            if start is not None:
                body["ExclusiveStartShardId"] = start
            page = (await router.dispatch("DescribeStream", body))["StreamDescription"]
            paged.extend(page["Shards"])
            start = page.get("LastEvaluatedShardId")
            if start is None:
                break
        assert paged == shards
        keys = []
        for shard in shards:
            answer = await router.dispatch(
                "GetShardIterator",
                {
                    "StreamArn": arn,
                    "ShardId": shard["ShardId"],
                    "ShardIteratorType": "TRIM_HORIZON",
                },
            )
            page = await router.dispatch("GetRecords", {"ShardIterator": answer["ShardIterator"]})
            keys.append([r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]])
            assert ("NextShardIterator" in page) is (shard is not parent)
        assert keys == [["in-0"], ["in-1"], ["later"]]

    asyncio.run(scenario())


def test_the_router_tells_an_unknown_stream_from_an_unknown_shard() -> None:
    async def scenario() -> list[str]:
        meta, partitions, router = two_partitions()
        arn = await streamed_table(meta, partitions[0])
        await sync(meta, partitions[1])
        messages = []
        for stream_arn, shard_id in (
            (arn, "shardId-00000000000000000000-00000000"),
            (arn, "shardId-00000000000000000000-7f000000"),  # a partition the ring lacks
            (arn.replace("events", "nothing"), "shardId-00000000000000000000-00000000"),
        ):
            with pytest.raises(ResourceNotFoundException) as caught:
                await router.dispatch(
                    "GetShardIterator",
                    {"StreamArn": stream_arn, "ShardId": shard_id, "ShardIteratorType": "LATEST"},
                )
            messages.append(str(caught.value))
        with pytest.raises(ValidationException):
            await router.dispatch("GetRecords", {"ShardIterator": f"{arn}|1|AAAA"})
        return messages

    shard_missing, far_partition, stream_missing = asyncio.run(scenario())
    assert "Shard: shardId-00000000000000000000-00000000 in Stream" in shard_missing
    assert "Shard: shardId-00000000000000000000-7f000000 in Stream" in far_partition
    assert stream_missing.startswith("Requested resource not found: Stream: arn:aws:dynamodb:")
    assert ":table/nothing/stream/" in stream_missing and stream_missing.endswith(" not found")


# --- Shards open when a partition learns of the stream ----------------------------------------


async def described_shards(router: streams_route.ClusterStreams, arn: str) -> list[Any]:
    answer = await router.dispatch("DescribeStream", {"StreamArn": arn})
    shards: list[Any] = answer["StreamDescription"]["Shards"]
    return shards


def check_an_open_shard_per_partition(shards: list[Any], partitions: int) -> None:
    """What DynamoDB shows of a stream just enabled: its open shards, each with a start."""
    assert [streams_route.shard_partition(s["ShardId"]) for s in shards] == list(range(partitions))
    for shard in shards:
        assert "ParentShardId" not in shard
        assert "EndingSequenceNumber" not in shard["SequenceNumberRange"]
        assert records.position_of(shard["SequenceNumberRange"]["StartingSequenceNumber"])


async def enabled_before_any_write() -> tuple[list[Any], list[Any], list[Any]]:
    """Shards listed after CreateTable with a stream, after UpdateTable enabling one, and
    after the same catalog synced again, with no item written anywhere."""
    meta, partitions, router = two_partitions()
    created_arn = await streamed_table(meta, partitions[0])
    await sync(meta, partitions[1])
    created = await described_shards(router, created_arn)
    await meta.dispatch(
        "CreateTable",
        {
            "TableName": "later",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    for partition in partitions:
        await sync(meta, partition)
    await meta.dispatch(
        "UpdateTable",
        {
            "TableName": "later",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        },
    )
    for partition in partitions:
        await sync(meta, partition)
    described = await meta.dispatch("DescribeTable", {"TableName": "later"})
    enabled_arn = described["Table"]["LatestStreamArn"]
    enabled = await described_shards(router, enabled_arn)
    # The same catalog again (a sync sent twice, or by a new metadata leader): nothing moves.
    for partition in partitions:
        tables = catalog_sync.catalog_snapshot(meta)
        await partition.propose(catalog_sync.sync_record(meta.store.applied_lsn() + 1, tables))
    again = await described_shards(router, enabled_arn)
    return created, enabled, again


def test_every_partition_lists_an_open_shard_as_soon_as_the_stream_is_enabled() -> None:
    created, enabled, again = asyncio.run(enabled_before_any_write())
    check_an_open_shard_per_partition(created, 2)
    check_an_open_shard_per_partition(enabled, 2)
    assert again == enabled


def test_the_check_catches_partitions_that_open_no_shard_at_enable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The broken variant: a partition's shard opens only with its first record.
    monkeypatch.setattr(records, "partition_synced", lambda db, lsn, table: [])
    created, enabled, _ = asyncio.run(enabled_before_any_write())
    assert created == [] and enabled == []
    with pytest.raises(AssertionError):
        check_an_open_shard_per_partition(created, 2)


def test_records_follow_the_shard_opened_at_the_sync_and_a_replayed_sync_keeps_them() -> None:
    async def scenario() -> tuple[records.Stream, list[Any], records.Stream]:
        meta = open_database()
        partition = open_database()
        await streamed_table(meta, partition)
        opened = only_stream(partition)
        for key in ("a", "b"):
            await partition.dispatch("PutItem", {"TableName": "events", "Item": {"pk": {"S": key}}})
        stream = only_stream(partition)
        found = records.read_records(partition, stream, stream.shards[0], -1, 10)
        # A sync applied again (a replay, or a resend) writes no second descriptor.
        await sync(meta, partition)
        return opened, found, only_stream(partition)

    opened, found, after = asyncio.run(scenario())
    (shard,) = opened.shards
    assert shard.closed is None
    assert [r.position for r in found] == sorted(r.position for r in found)
    assert all(r.position > shard.opened for r in found)
    assert len(found) == 2
    assert after.shards == opened.shards


def test_a_sync_replayed_after_a_crash_between_its_writes_opens_the_shard_once() -> None:
    async def streamed_catalog() -> dict[str, Any]:
        meta = open_database()
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
        return catalog_sync.sync_record(
            meta.store.applied_lsn(), catalog_sync.catalog_snapshot(meta)
        )

    record = asyncio.run(streamed_catalog())
    partition = Database(MemoryStore())
    lsn = 7
    # The applier's first store write (its progress, at lsn - 1) was made, then the crash.
    partition.store.write(
        [(catalog_sync.SYNC_STATE_KEY, msgpack.packb([record["meta_lsn"], lsn]))], [], lsn - 1
    )
    catalog_sync.apply_catalog_sync(partition, lsn, record)  # the replay finishes it
    opened = records.list_streams(partition)
    (stream,) = opened
    (shard,) = stream.shards
    assert shard.opened == records.entry_position(lsn)
    assert shard.closed is None
    catalog_sync.apply_catalog_sync(partition, lsn, record)  # replayed again
    catalog_sync.apply_catalog_sync(partition, lsn + 3, record)  # the same sync sent again
    assert records.list_streams(partition) == opened


async def described_while_one_partition_lags() -> list[Any]:
    """DescribeStream of a stream just enabled while partition 1 has not applied the sync
    yet; the sync arrives 0.2 s later (as the metadata leader sends it again)."""
    meta, partitions, router = two_partitions()
    arn = await streamed_table(meta, partitions[0])

    async def late_sync() -> None:
        await asyncio.sleep(0.2)
        await sync(meta, partitions[1])

    late = asyncio.get_running_loop().create_task(late_sync())
    shards = await described_shards(router, arn)
    await late
    return shards


def test_a_partition_behind_the_catalog_waits_for_the_sync_that_opens_its_shard() -> None:
    shards = asyncio.run(described_while_one_partition_lags())
    check_an_open_shard_per_partition(shards, 2)


def test_without_the_wait_a_lagging_partition_would_list_no_shard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The broken variant: the router does not tell partitions when the stream was enabled.
    monkeypatch.setattr(streams_route, "enabled_meta_lsn", lambda stream: 0)
    shards = asyncio.run(described_while_one_partition_lags())
    assert [streams_route.shard_partition(s["ShardId"]) for s in shards] == [0]
    with pytest.raises(AssertionError):
        check_an_open_shard_per_partition(shards, 2)
