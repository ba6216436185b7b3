"""The DynamoDB Streams API (`DynamoDBStreams_20120810.*`) over the stream records the engine
keeps (`keeldb.engine.streams`): ListStreams, DescribeStream, GetShardIterator, GetRecords.

This module owns the wire form of streams, shards, iterators and records, and the checks and
messages of the four operations. Shard iterators are opaque to clients: the stream ARN, "|1|"
and a base64 blob holding the shard, the position after which the next read starts, the time
the iterator was issued and a checksum, so that a damaged or made-up iterator is refused
rather than misread. An iterator expires `ITERATOR_AGE_SECONDS_MAX` after it was issued.

It only reads: every stream record is written by the appliers, and trimming is a redo record
proposed by `keeldb.streams.trim`. It never opens files or sockets.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from keeldb.engine import catalog
from keeldb.engine import streams as records
from keeldb.engine.database import Database
from keeldb.engine.streams import Shard, Stream, StreamRecord
from keeldb.model.errors import (
    ExpiredIteratorException,
    ResourceNotFoundException,
    SerializationException,
    TrimmedDataAccessException,
    UnknownOperationException,
    ValidationException,
)
from keeldb.model.request_shapes import Violations, check_types

TARGET_PREFIX = "DynamoDBStreams_20120810"

# --- Limits (DynamoDB Streams API reference; units last) ------------------------------------

LIST_STREAMS_LIMIT_MAX = 100  # ListStreams Limit: "The upper limit is 100."
DESCRIBE_STREAM_LIMIT_MAX = 100  # DescribeStream Limit: "The upper limit is 100."
GET_RECORDS_LIMIT_MAX = 1000  # GetRecords Limit: "The upper limit is 1000."
GET_RECORDS_BYTES_MAX = 1024 * 1024  # "GetRecords can retrieve a maximum of 1 MB of data"
ITERATOR_AGE_SECONDS_MAX = 15 * 60  # "A shard iterator expires 15 minutes after it is returned"
STREAM_ARN_LENGTH_MIN = 37  # the API model's StreamArn: length 37..1024
STREAM_ARN_LENGTH_MAX = 1024
SHARD_ID_LENGTH_MIN = 28  # ShardId: length 28..65
SHARD_ID_LENGTH_MAX = 65
SEQUENCE_NUMBER_LENGTH_MIN = 21  # SequenceNumber: length 21..40
SEQUENCE_NUMBER_LENGTH_MAX = 40
SHARD_ITERATOR_LENGTH_MIN = 1  # ShardIterator: length 1..2048
SHARD_ITERATOR_LENGTH_MAX = 2048
TABLE_NAME_LENGTH_MIN = 3
TABLE_NAME_LENGTH_MAX = 255
TABLE_NAME_PATTERN = "[a-zA-Z0-9_.-]+"
_TABLE_NAME_RE = re.compile(r"[a-zA-Z0-9_.\-]+\Z")

ITERATOR_TYPES = ("TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
SHARD_FILTER_TYPES = ("CHILD_SHARDS",)
EVENT_VERSION = "1.1"
EVENT_SOURCE = "aws:dynamodb"
ITERATOR_SEPARATOR = "|1|"

LIST_STREAMS_SHAPE = {"TableName": "S", "Limit": "L", "ExclusiveStartStreamArn": "S"}
DESCRIBE_STREAM_SHAPE = {
    "StreamArn": "S",
    "Limit": "L",
    "ExclusiveStartShardId": "S",
    "ShardFilter": {"Type": "S", "ShardId": "S"},
}
GET_SHARD_ITERATOR_SHAPE = {
    "StreamArn": "S",
    "ShardId": "S",
    "ShardIteratorType": "S",
    "SequenceNumber": "S",
}
GET_RECORDS_SHAPE = {"ShardIterator": "S", "Limit": "L"}

Body = dict[str, Any]


class Naming:
    """How the wire names a stream's shards, records and iterators. On a single node a shard
    is named by its stream and number alone; a cluster, whose partitions each keep shards of
    the same stream, names them by partition too (`keeldb.cluster.streams_route`)."""

    def shard_id(self, stream: Stream, shard: Shard) -> str:
        return stream.shard_id(shard)

    def parent_id(self, stream: Stream, shard: Shard) -> str | None:
        return shard.parent_id

    def event_id(self, stream: Stream, shard: Shard, position: int) -> str:
        return records.event_id(stream, shard, position)

    def encode_iterator(self, stream: Stream, shard: Shard, after: int, issued_ms: int) -> str:
        return encode_iterator(stream, shard, after, issued_ms)

    def decode_iterator(self, text: str) -> tuple[str, int, int, int]:
        return decode_iterator(text)


SINGLE_NODE = Naming()


def _stream_not_found(arn: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Requested resource not found: Stream: {arn} not found")


def _now_ms(db: Database) -> int:
    return int(catalog.current_time(db) * 1000)


def find_stream_by_arn(db: Database, arn: str) -> Stream | None:
    """The stream (live or disabled, of a live or deleted table) whose ARN is `arn`."""
    table_arn, marker, label = arn.rpartition("/stream/")
    if not marker:
        return None
    for stream in records.list_streams(db):
        if stream.label == label and stream.table_arn == table_arn:
            return stream
    return None


def _existing_stream(db: Database, arn: str) -> Stream:
    stream = find_stream_by_arn(db, arn)
    if stream is None:
        raise _stream_not_found(arn)
    return stream


def _shard_range(stream: Stream, shard: Shard) -> Body:
    out = {"StartingSequenceNumber": records.sequence_number(shard.opened)}
    if shard.closed is not None:
        out["EndingSequenceNumber"] = records.sequence_number(shard.closed)
    return out


def wire_shard(stream: Stream, shard: Shard, naming: Naming = SINGLE_NODE) -> Body:
    """A shard as DescribeStream lists it."""
    out: Body = {
        "ShardId": naming.shard_id(stream, shard),
        "SequenceNumberRange": _shard_range(stream, shard),
    }
    parent = naming.parent_id(stream, shard)
    if parent is not None:
        out["ParentShardId"] = parent
    return out


# --- ListStreams ----------------------------------------------------------------------------


def _list_position(arn: str) -> tuple[str, str] | None:
    """(table name, label) of a stream ARN, the order ListStreams lists in; None if `arn` is
    not a stream ARN."""
    table_arn, marker, label = arn.rpartition("/stream/")
    _, table_marker, name = table_arn.rpartition(":table/")
    if not marker or not table_marker or not name or not label:
        return None
    return name, label


async def list_streams(db: Database, body: Body) -> Body:
    body = check_types(body, LIST_STREAMS_SHAPE)
    v = Violations()
    name = body.get("TableName")
    if name is not None:
        v.length(name, "tableName", TABLE_NAME_LENGTH_MIN, TABLE_NAME_LENGTH_MAX)
        if not _TABLE_NAME_RE.match(name):
            v.add(
                name,
                "tableName",
                f"Member must satisfy regular expression pattern: {TABLE_NAME_PATTERN}",
            )
    limit = body.get("Limit")
    v.at_least(limit, "limit", 1)
    v.at_most(limit, "limit", LIST_STREAMS_LIMIT_MAX)
    start = body.get("ExclusiveStartStreamArn")
    v.length(start, "exclusiveStartStreamArn", STREAM_ARN_LENGTH_MIN, STREAM_ARN_LENGTH_MAX)
    v.raise_if_any()
    found = records.list_streams(db)
    if name is not None:
        found = [s for s in found if s.table_name == name]
        if not found and catalog.find_table(db, name) is None:
            raise ResourceNotFoundException(
                f"Requested resource not found: Table: {name} not found"
            )
    found.sort(key=lambda s: (s.table_name, s.label))
    if start is not None:
        # Pages continue after the named stream even if it has been forgotten meanwhile
        # (retention passed), so a listing in progress never fails for that.
        mark = _list_position(start)
        if mark is None:
            raise _stream_not_found(start)
        found = [s for s in found if (s.table_name, s.label) > mark]
    page_max = LIST_STREAMS_LIMIT_MAX if limit is None else limit
    page = found[:page_max]
    out: Body = {
        "Streams": [
            {"StreamArn": s.arn, "TableName": s.table_name, "StreamLabel": s.label} for s in page
        ]
    }
    if len(found) > page_max:
        out["LastEvaluatedStreamArn"] = page[-1].arn
    return out


# --- DescribeStream -------------------------------------------------------------------------


async def describe_stream(db: Database, body: Body) -> Body:
    body = check_types(body, DESCRIBE_STREAM_SHAPE)
    v = Violations()
    arn = body.get("StreamArn")
    if v.not_null(arn, "streamArn"):
        v.length(arn, "streamArn", STREAM_ARN_LENGTH_MIN, STREAM_ARN_LENGTH_MAX)
    limit = body.get("Limit")
    v.at_least(limit, "limit", 1)
    v.at_most(limit, "limit", DESCRIBE_STREAM_LIMIT_MAX)
    start = body.get("ExclusiveStartShardId")
    v.length(start, "exclusiveStartShardId", SHARD_ID_LENGTH_MIN, SHARD_ID_LENGTH_MAX)
    shard_filter = body.get("ShardFilter")
    if shard_filter is not None:
        v.enum(shard_filter.get("Type"), "shardFilter.type", SHARD_FILTER_TYPES)
        v.length(
            shard_filter.get("ShardId"),
            "shardFilter.shardId",
            SHARD_ID_LENGTH_MIN,
            SHARD_ID_LENGTH_MAX,
        )
    v.raise_if_any()
    assert arn is not None
    stream = _existing_stream(db, arn)
    # Shards are listed in ShardId order, which is creation order (the ids start with the
    # creation time, zero-padded), so a page can continue after any id, even one forgotten.
    shards = sorted(stream.shards, key=stream.shard_id)
    if shard_filter is not None and shard_filter.get("ShardId") is not None:
        shards = [s for s in shards if s.parent_id == shard_filter["ShardId"]]
    if start is not None:
        shards = [s for s in shards if stream.shard_id(s) > start]
    page_max = DESCRIBE_STREAM_LIMIT_MAX if limit is None else limit
    page = shards[:page_max]
    description: Body = {
        "StreamArn": stream.arn,
        "StreamLabel": stream.label,
        "StreamStatus": stream.status,
        "StreamViewType": stream.view_type,
        "CreationRequestDateTime": stream.created_ms / 1000,
        "TableName": stream.table_name,
        "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in stream.key_schema],
        "Shards": [wire_shard(stream, s) for s in page],
    }
    if len(shards) > page_max:
        description["LastEvaluatedShardId"] = stream.shard_id(page[-1])
    return {"StreamDescription": description}


# --- Shard iterators ------------------------------------------------------------------------


def encode_iterator(stream: Stream, shard: Shard, after: int, issued_ms: int) -> str:
    payload = msgpack.packb([shard.number, after, issued_ms])
    checksum = zlib.crc32(stream.arn.encode("utf-8") + payload).to_bytes(4, "big")
    blob = base64.b64encode(payload + checksum).decode("ascii")
    return f"{stream.arn}{ITERATOR_SEPARATOR}{blob}"


def decode_iterator(text: str) -> tuple[str, int, int, int]:
    """(stream ARN, shard number, position after which to read, issued at in ms)."""
    arn, separator, blob = text.rpartition(ITERATOR_SEPARATOR)
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
        shard_number, after, issued_ms = msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise invalid from None
    if not all(isinstance(x, int) for x in (shard_number, after, issued_ms)):
        raise invalid
    return arn, shard_number, after, issued_ms


def check_get_shard_iterator(body: Body) -> Body:
    """GetShardIterator's request checked (types, lengths, the iterator type)."""
    body = check_types(body, GET_SHARD_ITERATOR_SHAPE)
    v = Violations()
    arn = body.get("StreamArn")
    if v.not_null(arn, "streamArn"):
        v.length(arn, "streamArn", STREAM_ARN_LENGTH_MIN, STREAM_ARN_LENGTH_MAX)
    shard_id = body.get("ShardId")
    if v.not_null(shard_id, "shardId"):
        v.length(shard_id, "shardId", SHARD_ID_LENGTH_MIN, SHARD_ID_LENGTH_MAX)
    kind = body.get("ShardIteratorType")
    if v.not_null(kind, "shardIteratorType"):
        v.enum(kind, "shardIteratorType", ITERATOR_TYPES)
    sequence = body.get("SequenceNumber")
    v.length(sequence, "sequenceNumber", SEQUENCE_NUMBER_LENGTH_MIN, SEQUENCE_NUMBER_LENGTH_MAX)
    v.raise_if_any()
    return body


async def get_shard_iterator(db: Database, body: Body, naming: Naming = SINGLE_NODE) -> Body:
    body = check_get_shard_iterator(body)
    arn = body["StreamArn"]
    shard_id = body["ShardId"]
    kind = body["ShardIteratorType"]
    sequence = body.get("SequenceNumber")
    stream = _existing_stream(db, arn)
    shard = next((s for s in stream.shards if naming.shard_id(stream, s) == shard_id), None)
    if shard is None:
        raise ResourceNotFoundException(
            f"Requested resource not found: Shard: {shard_id} in Stream: {arn} not found"
        )
    if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        if sequence is None:
            raise ValidationException(
                f"Sequence number must be specified for iterator type: {kind}"
            )
        position = records.position_of(sequence)
        if position is None:
            raise ValidationException(f"Invalid SequenceNumber: {sequence}")
        after = position - 1 if kind == "AT_SEQUENCE_NUMBER" else position
        if after < shard.trimmed:
            raise TrimmedDataAccessException("The data you are trying to access has been trimmed.")
        if after < shard.opened - 1 or (shard.closed is not None and after > shard.closed):
            raise ValidationException(
                f"Invalid SequenceNumber: {sequence} is not in the range of shard {shard_id}"
            )
    elif kind == "TRIM_HORIZON":
        after = shard.trimmed
    else:
        after = shard.closed if shard.closed is not None else records.applied_position(db)
    return {"ShardIterator": naming.encode_iterator(stream, shard, after, _now_ms(db))}


# --- GetRecords -----------------------------------------------------------------------------


def _wire_record(
    db: Database, stream: Stream, shard: Shard, record: StreamRecord, naming: Naming
) -> Body:
    change: Body = {
        # "rounded down to the closest second" (API reference, StreamRecord).
        "ApproximateCreationDateTime": record.created_ms // 1000,
        "Keys": record.keys,
    }
    if record.new_image is not None:
        change["NewImage"] = record.new_image
    if record.old_image is not None:
        change["OldImage"] = record.old_image
    change["SequenceNumber"] = records.sequence_number(record.position)
    change["SizeBytes"] = record.size_bytes
    change["StreamViewType"] = stream.view_type
    out: Body = {
        "eventID": naming.event_id(stream, shard, record.position),
        "eventName": record.event_name,
        "eventVersion": EVENT_VERSION,
        "eventSource": EVENT_SOURCE,
        "awsRegion": db.region,
        "dynamodb": change,
    }
    if record.user_identity is not None:
        out["userIdentity"] = record.user_identity
    return out


def check_get_records(body: Body) -> Body:
    """GetRecords' request checked (types, lengths, Limit)."""
    body = check_types(body, GET_RECORDS_SHAPE)
    v = Violations()
    text = body.get("ShardIterator")
    if v.not_null(text, "shardIterator"):
        v.length(text, "shardIterator", SHARD_ITERATOR_LENGTH_MIN, SHARD_ITERATOR_LENGTH_MAX)
    limit = body.get("Limit")
    v.at_least(limit, "limit", 1)
    v.at_most(limit, "limit", GET_RECORDS_LIMIT_MAX)
    v.raise_if_any()
    return body


async def get_records(db: Database, body: Body, naming: Naming = SINGLE_NODE) -> Body:
    body = check_get_records(body)
    limit = body.get("Limit")
    arn, shard_number, after, issued_ms = naming.decode_iterator(body["ShardIterator"])
    now_ms = _now_ms(db)
    if now_ms - issued_ms > ITERATOR_AGE_SECONDS_MAX * 1000:
        raise ExpiredIteratorException("The provided iterator exceeds the maximum age allowed.")
    stream = _existing_stream(db, arn)
    shard = stream.shard(shard_number)
    if shard is None:
        # The shard was forgotten once all its records were trimmed.
        raise TrimmedDataAccessException("The data you are trying to access has been trimmed.")
    if after < shard.trimmed:
        raise TrimmedDataAccessException("The data you are trying to access has been trimmed.")
    records_max = GET_RECORDS_LIMIT_MAX if limit is None else limit
    found = records.read_records(db, stream, shard, after, records_max)
    page: list[Body] = []
    page_bytes = 0
    for record in found:
        if page and page_bytes + record.size_bytes > GET_RECORDS_BYTES_MAX:
            break
        page.append(_wire_record(db, stream, shard, record, naming))
        page_bytes += record.size_bytes
        after = record.position
    out: Body = {"Records": page}
    exhausted = len(page) == len(found) and len(found) < records_max
    if shard.closed is not None and exhausted:
        return out  # The end of a closed shard: no next iterator, as DynamoDB's.
    out["NextShardIterator"] = naming.encode_iterator(stream, shard, after, now_ms)
    return out


# --- Dispatch -------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[Database, Body], Awaitable[Body]]] = {
    "ListStreams": list_streams,
    "DescribeStream": describe_stream,
    "GetShardIterator": get_shard_iterator,
    "GetRecords": get_records,
}


def dispatcher(db: Database) -> Callable[[str, Body], Awaitable[Body]]:
    """The dispatch function `ApiServer.add_json_service` takes, bound to one database."""

    async def dispatch(operation: str, body: Body) -> Body:
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise UnknownOperationException("")
        if not isinstance(body, dict):
            raise SerializationException("")
        return await handler(db, body)

    return dispatch
