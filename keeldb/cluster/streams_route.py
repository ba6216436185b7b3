"""DynamoDB Streams on a cluster: each partition keeps its own shards, routers merge them.

Every partition replica's `Database` writes the stream records of its own items
(`keeldb.engine.streams.item_written`), so a table's stream has one shard lineage per
partition, as DynamoDB's shards follow its partitions. A partition's lineage starts when the
catalog sync that tells it of the stream is applied (`keeldb.engine.streams.partition_synced`,
called by `keeldb.cluster.catalog_sync`), so every partition lists an open shard from the
moment the stream is enabled. This module owns:

- the names that make shards, records and iterators unique across partitions
  (`PartitionNaming`): a ShardId is the partition's own shard id with its last eight hex
  digits replaced by the partition number (two hex digits) and a digest of the partition and
  the partition's id; an iterator carries its partition, so that any router sends it where
  its shard lives; an eventID digests the partition too;
- the "stream_close" redo record: a partition learns that a stream was disabled (or its
  table deleted) through a catalog sync, which writes no stream descriptor; a partition
  leader that finds an ENABLED descriptor whose table no longer streams under that label
  proposes "stream_close", whose applier closes its open shard at that entry's position and
  marks it DISABLED. Nothing is written to a shard after the catalog sync that ended its
  stream, so the close never cuts off a record;
- the storage side of the "streams.op" channel: on the metadata leader, ListStreams and the
  stream part of DescribeStream (the metadata group runs the catalog's appliers, so it holds
  every stream's descriptor, with its ARN and label decided once there, and the LSN that
  enabled it); on a partition leader, its shard list (waiting, bounded, for the catalog
  sync that opens its shard when the partition has not applied it yet),
  GetShardIterator and GetRecords. Everything is served by leaders
  with a lease, so a reader never sees a shard move backwards;
- `ClusterStreams`, the router side: the four operations for any router's HTTP front end;
- the background task of a node: on every group it leads, the retention trimmer and the
  shard rollover of `keeldb.streams.trim`, and the closing of disabled streams.

It never touches another partition's store and never parses HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import zlib
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb.cluster import catalog_sync
from keeldb.cluster.placement import META_GROUP, partition_group
from keeldb.cluster.protocol import OK, REDIRECT, UNAVAILABLE, error_answer
from keeldb.engine import catalog
from keeldb.engine import streams as records
from keeldb.engine.database import Database, redo_kind
from keeldb.engine.streams import Shard, Stream
from keeldb.model.errors import (
    ClientError,
    ResourceNotFoundException,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)
from keeldb.streams import api
from keeldb.streams.trim import StreamTrimmer, shard_seconds_from_environment

if TYPE_CHECKING:
    from keeldb.cluster.node import ClusterNode

log = logging.getLogger("keeldb.cluster.streams")

CHANNEL_STREAMS = "streams.op"
CLOSE_KIND = "stream_close"
# Partition numbers are two hex digits of a ShardId.
PARTITIONS_MAX = 256
SHARD_DIGEST_HEX_DIGITS = 6
# How often a node looks for groups it leads whose streams need closing, trimming or rolling.
TICK_SECONDS = 0.5
LEASE_WAIT_SECONDS_MAX = 3.0
LEASE_POLL_SECONDS = 0.005
RETENTION_SECONDS_DEFAULT = 24 * 60 * 60.0
# A partition asked for the shards of a stream that its catalog has not reached yet (the
# metadata leader answered the enabling request before that partition applied the sync, as
# it does when the partition had no leader then) waits this long for the sync, which the
# metadata leader sends again every 0.5 s; then it answers what it has. With the lease wait
# before it, this stays within one router call (5 s), and a call that runs out is sent again
# within the request's budget.
SYNC_WAIT_SECONDS_MAX = 2.0
SYNC_POLL_SECONDS = 0.02

Body = dict[str, Any]


# --- Names ----------------------------------------------------------------------------------


def cluster_shard_id(partition_shard_id: str, partition: int) -> str:
    """The cluster-wide ShardId of a partition's shard: "shardId-<20 digits>-<8 hex>", the
    hex digits being the partition and a digest, so every router and replica names it alike
    and shards of different partitions never share an id."""
    assert 0 <= partition < PARTITIONS_MAX, partition
    head, _, tail = partition_shard_id.rpartition("-")
    digest = hashlib.blake2b(
        partition.to_bytes(2, "big") + tail.encode("ascii"),
        digest_size=SHARD_DIGEST_HEX_DIGITS // 2,
    ).hexdigest()
    return f"{head}-{partition:02x}{digest}"


def shard_partition(shard_id: str) -> int | None:
    """The partition a cluster ShardId names, or None if it is not one of ours."""
    head, dash, tail = shard_id.rpartition("-")
    if not dash or not head.startswith("shardId-") or len(tail) != 8:
        return None
    try:
        return int(tail[:2], 16)
    except ValueError:
        return None


def iterator_partition(text: str) -> int:
    """The partition a cluster shard iterator names; ValidationException if it is damaged."""
    _arn, partition, _number, _after, _issued = _decode(text)
    return partition


def _decode(text: str) -> tuple[str, int, int, int, int]:
    arn, separator, blob = text.rpartition(api.ITERATOR_SEPARATOR)
    invalid = ValidationException("Invalid ShardIterator")
    if not separator or not arn:
        raise invalid
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        raise invalid from None
    if len(raw) < 5:
        raise invalid
    payload, checksum = raw[:-4], raw[-4:]
    if zlib.crc32(arn.encode("utf-8") + payload).to_bytes(4, "big") != checksum:
        raise invalid
    try:
        partition, number, after, issued_ms = msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise invalid from None
    if not all(isinstance(x, int) for x in (partition, number, after, issued_ms)):
        raise invalid
    return arn, partition, number, after, issued_ms


class PartitionNaming(api.Naming):
    """Shards, records and iterators of one partition, named uniquely in the cluster."""

    def __init__(self, partition: int) -> None:
        assert 0 <= partition < PARTITIONS_MAX, partition
        self.partition = partition

    def shard_id(self, stream: Stream, shard: Shard) -> str:
        return cluster_shard_id(stream.shard_id(shard), self.partition)

    def parent_id(self, stream: Stream, shard: Shard) -> str | None:
        if shard.parent_id is None:
            return None
        return cluster_shard_id(shard.parent_id, self.partition)

    def event_id(self, stream: Stream, shard: Shard, position: int) -> str:
        return hashlib.blake2b(
            stream.key
            + self.partition.to_bytes(2, "big")
            + shard.number.to_bytes(records.SHARD_NUMBER_BYTES, "big")
            + position.to_bytes(8, "big"),
            digest_size=records.EVENT_ID_HEX_DIGITS // 2,
        ).hexdigest()

    def encode_iterator(self, stream: Stream, shard: Shard, after: int, issued_ms: int) -> str:
        payload = msgpack.packb([self.partition, shard.number, after, issued_ms])
        checksum = zlib.crc32(stream.arn.encode("utf-8") + payload).to_bytes(4, "big")
        blob = base64.b64encode(payload + checksum).decode("ascii")
        return f"{stream.arn}{api.ITERATOR_SEPARATOR}{blob}"

    def decode_iterator(self, text: str) -> tuple[str, int, int, int]:
        arn, partition, number, after, issued_ms = _decode(text)
        if partition != self.partition:
            raise ValidationException("Invalid ShardIterator")
        return arn, number, after, issued_ms


# --- Closing the streams a catalog sync ended ------------------------------------------------


def _live(db: Database, stream: Stream) -> bool:
    """Whether the partition's catalog still streams this table under this label."""
    table = catalog.get_table_by_id(db, stream.table_id)
    return table is not None and table.stream_enabled and table.stream_label == stream.label


def close_pending(db: Database) -> bool:
    """True if some ENABLED stream descriptor belongs to a stream the catalog ended."""
    return any(
        s.status == records.STATUS_ENABLED and not _live(db, s) for s in records.list_streams(db)
    )


def close_record(now_ms: int) -> Body:
    """The redo record that closes every ended stream (the proposer's time, so replicas
    record the same closing time)."""
    return {"kind": CLOSE_KIND, "now_ms": now_ms}


@redo_kind(CLOSE_KIND)
def apply_stream_close(db: Database, lsn: int, record: Body) -> None:
    """Mark every ENABLED stream whose table no longer streams under its label DISABLED and
    close its open shard at this entry's position; decided from the replicated state only."""
    if lsn <= db.store.applied_lsn():
        return  # Replayed at recovery, and already in the store.
    puts: list[tuple[bytes, bytes]] = []
    state = records.streams_state(db)
    for stream in records.list_streams(db):
        if stream.status != records.STATUS_ENABLED or _live(db, stream):
            continue
        stream.status = records.STATUS_DISABLED
        stream.disabled_ms = record["now_ms"]
        for shard in stream.shards:
            if shard.closed is None:
                shard.closed = records.entry_position(lsn)
                shard.closed_ms = record["now_ms"]
        puts.append(
            (
                records.descriptor_key(stream.key),
                msgpack.packb(stream.to_record(), use_bin_type=True),
            )
        )
        state.open_shards.pop(stream.key, None)
    db.store.write(puts, [], applied_lsn=lsn)


# --- Storage side ---------------------------------------------------------------------------


class StreamsStorage:
    """The "streams.op" channel of a storage node."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._closing: dict[str, asyncio.Lock] = {}

    async def _leased(self, replica: Any) -> list[Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEASE_WAIT_SECONDS_MAX
        while True:
            if not replica.log.is_leader:
                return [REDIRECT, replica.leader()]
            if replica.log.read_lease():
                return None
            if loop.time() >= deadline:
                return [UNAVAILABLE, "the leader has no lease yet"]
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def settle(self, replica: Any) -> None:
        """Close the streams this partition's catalog ended, before anyone reads them."""
        db = replica.database
        if not close_pending(db):
            return
        lock = self._closing.setdefault(replica.group_id, asyncio.Lock())
        async with lock:
            if close_pending(db):
                await db.propose(close_record(int(catalog.current_time(db) * 1000)))

    async def on_streams(self, sender: str, payload: Any) -> list[Any]:
        del sender
        from keeldb.cluster.group import AppendTimeout, GroupBusy, GroupClosed, NotLeader

        replica = self.storage.replicas.get(payload["g"])
        if replica is None:
            return [REDIRECT, None]
        refused = await self._leased(replica)
        if refused is not None:
            return refused
        try:
            return [OK, await self._serve(replica, payload["do"], payload.get("body") or {})]
        except ClientError as error:
            return error_answer(error)
        except NotLeader as error:
            from keeldb.cluster.storage import node_number

            return [REDIRECT, node_number(getattr(error, "leader_hint", None))]
        except GroupBusy:
            return [UNAVAILABLE, "the leader's proposal queue is full"]
        except (AppendTimeout, GroupClosed):
            # A close that may or may not have been chosen: the reader may simply ask again.
            return [UNAVAILABLE, "the stream close is still in flight"]

    async def _serve(self, replica: Any, step: str, body: Body) -> Any:
        db = replica.database
        if step == "list":
            return await api.list_streams(db, body)
        if step == "describe":
            description = (await api.describe_stream(db, body))["StreamDescription"]
            stream = api.find_stream_by_arn(db, body["StreamArn"])
            assert stream is not None  # describe_stream raised otherwise
            return {
                "d": description,
                "table_id": stream.table_id,
                "label": stream.label,
                "meta_lsn": enabled_meta_lsn(stream),
            }
        if step == "exists":
            return api.find_stream_by_arn(db, body["StreamArn"]) is not None
        assert replica.partition is not None, step
        naming = PartitionNaming(replica.partition)
        await self.settle(replica)
        if step == "shards":
            stream = records.find_stream(db, body["table_id"], body["label"])
            if stream is None and await _synced_by(db, body.get("meta_lsn", 0)):
                stream = records.find_stream(db, body["table_id"], body["label"])
            if stream is None:
                return []
            return [api.wire_shard(stream, s, naming) for s in stream.shards]
        if step == "iterator":
            if api.find_stream_by_arn(db, body["StreamArn"]) is None:
                return {"missing": True}
            return await api.get_shard_iterator(db, body, naming)
        if step == "records":
            return await api.get_records(db, body, naming)
        raise AssertionError(f"unknown streams step {step!r}")


def enabled_meta_lsn(stream: Stream) -> int:
    """The metadata group's LSN that enabled an ENABLED stream, read from the metadata
    group's own descriptor (its first shard opened at that entry); 0 for a disabled stream,
    which no partition needs to wait for."""
    if stream.status != records.STATUS_ENABLED or not stream.shards:
        return 0
    return min(s.opened for s in stream.shards) // records.RECORDS_PER_ENTRY_MAX


async def _synced_by(db: Database, meta_lsn: int) -> bool:
    """Wait, bounded, until this partition has applied a catalog sync at or after `meta_lsn`
    (one that tells it of the stream, so that its shard is open); False if it already had,
    or the wait ran out."""
    if catalog_sync.applied_meta_lsn(db) >= meta_lsn:
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SYNC_WAIT_SECONDS_MAX
    while loop.time() < deadline:
        await asyncio.sleep(SYNC_POLL_SECONDS)
        if catalog_sync.applied_meta_lsn(db) >= meta_lsn:
            return True
    return False


# --- Router side ----------------------------------------------------------------------------


class ClusterStreams:
    """The DynamoDB Streams API of a cluster router."""

    def __init__(self, router: Any) -> None:
        self.router = router

    async def _call(self, group: str, step: str, body: Body, deadline: float) -> Any:
        from keeldb.cluster.protocol import MODE_STRONG

        return await self.router._group_call(
            group, CHANNEL_STREAMS, {"g": group, "do": step, "body": body}, MODE_STRONG, deadline
        )

    def _deadline(self) -> float:
        from keeldb.cluster.router import REQUEST_SECONDS_MAX

        return asyncio.get_running_loop().time() + REQUEST_SECONDS_MAX

    @property
    def partitions(self) -> int:
        return len(self.router.ring)

    async def dispatch(self, operation: str, body: Body) -> Body:
        handler = _OPERATIONS.get(operation)
        if handler is None:
            raise UnknownOperationException("")
        if not isinstance(body, dict):
            raise SerializationException("")
        result: Body = await handler(self, body)
        return result

    async def list_streams(self, body: Body) -> Body:
        result: Body = await self._call(META_GROUP, "list", body, self._deadline())
        return result

    async def describe_stream(self, body: Body) -> Body:
        deadline = self._deadline()
        # The metadata group checks the request and describes the stream; shards come from
        # the partitions, each answering for its own lineage.
        found = await self._call(META_GROUP, "describe", body, deadline)
        description: Body = found["d"]
        key = {
            "table_id": found["table_id"],
            "label": found["label"],
            "meta_lsn": found.get("meta_lsn", 0),
        }
        lists = await asyncio.gather(
            *(
                self._call(partition_group(p), "shards", key, deadline)
                for p in range(self.partitions)
            )
        )
        shards = sorted((s for shard_list in lists for s in shard_list), key=lambda s: s["ShardId"])
        shard_filter = body.get("ShardFilter")
        if shard_filter is not None and shard_filter.get("ShardId") is not None:
            shards = [s for s in shards if s.get("ParentShardId") == shard_filter["ShardId"]]
        start = body.get("ExclusiveStartShardId")
        if start is not None:
            shards = [s for s in shards if s["ShardId"] > start]
        limit = body.get("Limit")
        page_max = api.DESCRIBE_STREAM_LIMIT_MAX if limit is None else limit
        page = shards[:page_max]
        description["Shards"] = page
        description.pop("LastEvaluatedShardId", None)
        if len(shards) > page_max:
            description["LastEvaluatedShardId"] = page[-1]["ShardId"]
        return {"StreamDescription": description}

    async def _missing(self, arn: str, shard_id: str, deadline: float) -> ClientError:
        exists = await self._call(META_GROUP, "exists", {"StreamArn": arn}, deadline)
        if not exists:
            return ResourceNotFoundException(
                f"Requested resource not found: Stream: {arn} not found"
            )
        return ResourceNotFoundException(
            f"Requested resource not found: Shard: {shard_id} in Stream: {arn} not found"
        )

    async def get_shard_iterator(self, body: Body) -> Body:
        body = api.check_get_shard_iterator(body)
        deadline = self._deadline()
        arn, shard_id = body["StreamArn"], body["ShardId"]
        partition = shard_partition(shard_id)
        if partition is None or partition >= self.partitions:
            raise await self._missing(arn, shard_id, deadline)
        answer: Body = await self._call(partition_group(partition), "iterator", body, deadline)
        if answer.get("missing"):
            raise await self._missing(arn, shard_id, deadline)
        return answer

    async def get_records(self, body: Body) -> Body:
        body = api.check_get_records(body)
        partition = iterator_partition(body["ShardIterator"])
        if partition >= self.partitions:
            raise ValidationException("Invalid ShardIterator")
        result: Body = await self._call(
            partition_group(partition), "records", body, self._deadline()
        )
        return result


_OPERATIONS = {
    "ListStreams": ClusterStreams.list_streams,
    "DescribeStream": ClusterStreams.describe_stream,
    "GetShardIterator": ClusterStreams.get_shard_iterator,
    "GetRecords": ClusterStreams.get_records,
}


# --- The node's part -------------------------------------------------------------------------


class _Keeper:
    """On every group this node leads: trimming and rollover (one `StreamTrimmer` per
    leadership, as the TTL sweeper) and, on partitions, the closing of ended streams."""

    def __init__(self, storage: Any, streams: StreamsStorage, retention_seconds: float) -> None:
        self.storage = storage
        self.streams = streams
        self.retention_seconds = retention_seconds
        self.shard_seconds = shard_seconds_from_environment()
        self.trimmers: dict[str, StreamTrimmer] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="keeldb-streams")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for trimmer in self.trimmers.values():
            await trimmer.stop()
        self.trimmers.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stream upkeep failed; retrying")

    async def tick(self) -> None:
        for group_id, replica in self.storage.replicas.items():
            leading = replica.log.is_leader and replica.log.read_lease()
            trimmer = self.trimmers.get(group_id)
            if leading and trimmer is None:
                trimmer = StreamTrimmer(
                    replica.database, self.retention_seconds, self.shard_seconds
                )
                trimmer.start()
                self.trimmers[group_id] = trimmer
            elif not leading and trimmer is not None:
                del self.trimmers[group_id]
                await trimmer.stop()
            if leading and replica.partition is not None:
                from keeldb.cluster.group import AppendTimeout, GroupBusy, GroupClosed, NotLeader

                try:
                    await self.streams.settle(replica)
                except (NotLeader, GroupBusy, AppendTimeout, GroupClosed) as error:
                    # Leadership moved or the group is busy: the next tick (or leader) closes.
                    log.debug("closing ended streams of %s: %r", group_id, error)


async def attach(node: ClusterNode) -> Any:
    """Serve DynamoDB Streams on a cluster node: the storage channel on a node with replicas,
    the API on its router, and the upkeep of the streams of the groups it leads."""
    assert len(node.ring) <= PARTITIONS_MAX, len(node.ring)
    keeper: _Keeper | None = None
    if node.storage is not None:
        storage_side = StreamsStorage(node.storage)
        node.storage.handlers[CHANNEL_STREAMS] = storage_side.on_streams
        node.transport.register(CHANNEL_STREAMS, storage_side.on_streams)
        retention = float(
            getattr(node.config, "stream_retention_seconds", None) or RETENTION_SECONDS_DEFAULT
        )
        keeper = _Keeper(node.storage, storage_side, retention)
        keeper.start()
    assert node.server is not None and node.router is not None
    node.streams = ClusterStreams(node.router)
    node.server.add_json_service(api.TARGET_PREFIX, node.streams.dispatch, api.OPERATIONS)

    async def close() -> None:
        if keeper is not None:
            await keeper.stop()

    return close
