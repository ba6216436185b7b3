"""DynamoDB Streams through boto3's `dynamodb` and `dynamodbstreams` clients against a real
`keeldb serve`: every operation of the Streams API, the records of each view type, stream
lifecycle (disable, re-enable, table deletion) and the errors with their types and messages."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
ACCESS_KEY_ID = "AKIDKEELDBTEST"
SECRET_ACCESS_KEY = "keeldb-test-secret"


def streams_client(endpoint: str, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET_ACCESS_KEY,
        "config": Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=30),
    }
    settings.update(overrides)
    return boto3.client("dynamodbstreams", **settings)


@pytest.fixture(scope="module")
def streams(endpoint: str) -> Any:
    return streams_client(endpoint)


def with_stream(view_type: str = "NEW_AND_OLD_IMAGES") -> dict[str, Any]:
    return {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": view_type}}


def stream_arn(ddb: Any, table: str) -> str:
    arn: str = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    return arn


# A stream has one shard per partition (docs/streams.md): a single node's has exactly one, a
# cluster's one per partition. The tests read every shard, parents before their children,
# as a DynamoDB Streams consumer must, and check order per item (SequenceNumber order within
# the item's shard lineage), never across items; on a single node they also check that there
# is exactly one shard and the order across the table.
CLUSTER = bool(os.environ.get("KEELDB_TEST_ENDPOINT"))
# Bounds on the reading loops, so that a server that never ends a shard fails the test.
DESCRIBE_PAGES_MAX = 100
RECORD_PAGES_MAX = 100


def all_shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    """Every shard of a stream, DescribeStream paged by ExclusiveStartShardId, parents
    before their children; exactly one on a single node."""
    shards: list[dict[str, Any]] = []
    args: dict[str, Any] = {"StreamArn": arn}
    for _ in range(DESCRIBE_PAGES_MAX):
        description = streams.describe_stream(**args)["StreamDescription"]
        shards.extend(description["Shards"])
        if "LastEvaluatedShardId" not in description:
            break
        args["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]
    else:
        raise AssertionError("DescribeStream never ended its pages")
    ids = [s["ShardId"] for s in shards]
    assert len(ids) == len(set(ids))
    if not CLUSTER:
        assert len(shards) == 1
    return lineage_order(shards)


def lineage_order(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shards with every parent (when still listed) before its children."""
    listed = {s["ShardId"]: s for s in shards}
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()

    def place(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in placed:
            return
        parent = listed.get(shard.get("ParentShardId", ""))
        if parent is not None:
            place(parent)
        placed.add(shard["ShardId"])
        ordered.append(shard)

    for shard in shards:
        place(shard)
    return ordered


def first_shard(streams: Any, arn: str) -> dict[str, Any]:
    """A shard of the stream (its only one on a single node)."""
    shards = all_shards(streams, arn)
    assert shards
    return shards[0]


def iterator(streams: Any, arn: str, kind: str = "TRIM_HORIZON", **more: Any) -> str:
    """An iterator into the stream's first shard (its only one on a single node)."""
    return shard_iterator(streams, arn, first_shard(streams, arn)["ShardId"], kind, **more)


def shard_iterator(streams: Any, arn: str, shard_id: str, kind: str, **more: Any) -> str:
    answer = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard_id, ShardIteratorType=kind, **more
    )
    text: str = answer["ShardIterator"]
    return text


def read_shard(streams: Any, position: str | None) -> list[Any]:
    """Every record from the iterator to the end of what the shard holds now."""
    out: list[Any] = []
    for _ in range(RECORD_PAGES_MAX):
        if position is None:
            return out
        page = streams.get_records(ShardIterator=position)
        out.extend(page["Records"])
        if not page["Records"]:
            return out
        position = page.get("NextShardIterator")
    raise AssertionError("GetRecords never reached the end of the shard")


def read_by_shard(streams: Any, arn: str, kind: str = "TRIM_HORIZON") -> dict[str, list[Any]]:
    """Every record of every shard, by ShardId, parents before their children."""
    return {
        shard["ShardId"]: read_shard(streams, shard_iterator(streams, arn, shard["ShardId"], kind))
        for shard in all_shards(streams, arn)
    }


def read_all(streams: Any, arn: str) -> list[Any]:
    """Every record of the stream: shard after shard, parents before their children, so
    each item's records come in its order (a single node's one shard: the table's order)."""
    return [r for found in read_by_shard(streams, arn).values() for r in found]


def key_of(record: Any) -> str:
    key: str = record["dynamodb"]["Keys"]["pk"]["S"]
    return key


def check_order_per_item(records: list[Any]) -> None:
    """Each item's records arrive in increasing SequenceNumber order, each number once."""
    by_key: dict[str, list[int]] = {}
    for record in records:
        by_key.setdefault(key_of(record), []).append(int(record["dynamodb"]["SequenceNumber"]))
    for key, sequence in by_key.items():
        assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence), key


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


# --- Tables and stream descriptions ---------------------------------------------------------


def test_describe_table_reports_the_stream_arn_label_and_specification(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("NEW_IMAGE"))
    described = ddb.describe_table(TableName=table)["Table"]
    label = described["LatestStreamLabel"]
    assert described["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_IMAGE",
    }
    assert described["LatestStreamArn"] == (
        f"arn:aws:dynamodb:{REGION}:000000000000:table/{table}/stream/{label}"
    )
    # ISO 8601 with milliseconds, as DynamoDB's labels.
    assert len(label) == 23 and label[10] == "T" and label[19] == "."


def test_list_streams_filters_by_table_and_pages_with_limit(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    first = table_factory(**with_stream())
    second = table_factory(**with_stream())
    table_factory()  # no stream: never listed
    listed = streams.list_streams(TableName=first)["Streams"]
    assert listed == [
        {
            "StreamArn": stream_arn(ddb, first),
            "TableName": first,
            "StreamLabel": ddb.describe_table(TableName=first)["Table"]["LatestStreamLabel"],
        }
    ]
    seen: list[str] = []
    answer = streams.list_streams(Limit=1)
    while True:
        assert len(answer["Streams"]) <= 1
        seen.extend(s["StreamArn"] for s in answer["Streams"])
        if "LastEvaluatedStreamArn" not in answer:
            break
        answer = streams.list_streams(
            Limit=1, ExclusiveStartStreamArn=answer["LastEvaluatedStreamArn"]
        )
    assert stream_arn(ddb, first) in seen and stream_arn(ddb, second) in seen
    assert len(seen) == len(set(seen))


def test_describe_stream_reports_an_enabled_stream_with_its_open_shards(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(range_key="sk", **with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    description = streams.describe_stream(StreamArn=arn)["StreamDescription"]
    assert description["StreamArn"] == arn
    assert description["StreamStatus"] == "ENABLED"
    assert description["StreamViewType"] == "KEYS_ONLY"
    assert description["TableName"] == table
    assert description["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert description["CreationRequestDateTime"].year >= 2024
    # Listed before anything is written, as DynamoDB lists a new stream's shards: one open
    # shard on a single node, one per partition on a cluster.
    shards = description["Shards"]
    assert shards == all_shards(streams, arn)
    assert len(shards) >= 1
    for shard in shards:
        assert shard["ShardId"].startswith("shardId-")
        assert 28 <= len(shard["ShardId"]) <= 65
        assert "ParentShardId" not in shard
        assert "EndingSequenceNumber" not in shard["SequenceNumberRange"]
        assert len(shard["SequenceNumberRange"]["StartingSequenceNumber"]) >= 21


# --- Records --------------------------------------------------------------------------------


def test_insert_modify_remove_arrive_in_order_with_both_images(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("NEW_AND_OLD_IMAGES"))
    arn = stream_arn(ddb, table)
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "a"}},
        UpdateExpression="SET n = n + :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    ddb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
    records = read_all(streams, arn)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    insert, modify, remove = (r["dynamodb"] for r in records)
    assert insert["Keys"] == {"pk": {"S": "a"}}
    assert insert["NewImage"] == {"pk": {"S": "a"}, "n": {"N": "1"}}
    assert "OldImage" not in insert
    assert modify["OldImage"] == {"pk": {"S": "a"}, "n": {"N": "1"}}
    assert modify["NewImage"] == {"pk": {"S": "a"}, "n": {"N": "2"}}
    assert remove["OldImage"] == {"pk": {"S": "a"}, "n": {"N": "2"}}
    assert "NewImage" not in remove
    sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence == sorted(sequence) and len(set(sequence)) == 3
    for record in records:
        assert record["eventVersion"] == "1.1"
        assert record["eventSource"] == "aws:dynamodb"
        assert record["awsRegion"] == REGION
        assert len(record["eventID"]) == 32
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert record["dynamodb"]["SizeBytes"] > 0
        assert len(record["dynamodb"]["SequenceNumber"]) >= 21
        assert record["dynamodb"]["ApproximateCreationDateTime"].year >= 2024
        assert "userIdentity" not in record


@pytest.mark.parametrize(
    ("view_type", "new", "old"),
    [
        ("KEYS_ONLY", False, False),
        ("NEW_IMAGE", True, False),
        ("OLD_IMAGE", False, True),
        ("NEW_AND_OLD_IMAGES", True, True),
    ],
)
def test_each_view_type_carries_the_images_it_names(
    ddb: Any, streams: Any, table_factory: Any, view_type: str, new: bool, old: bool
) -> None:
    table = table_factory(**with_stream(view_type))
    ddb.put_item(TableName=table, Item={"pk": {"S": "k"}, "v": {"S": "one"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "k"}, "v": {"S": "two"}})
    (_, modify) = read_all(streams, stream_arn(ddb, table))
    change = modify["dynamodb"]
    assert change["Keys"] == {"pk": {"S": "k"}}
    assert change["StreamViewType"] == view_type
    assert ("NewImage" in change) is new
    assert ("OldImage" in change) is old
    if new:
        assert change["NewImage"]["v"] == {"S": "two"}
    if old:
        assert change["OldImage"]["v"] == {"S": "one"}


def test_writes_that_change_nothing_emit_no_record(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream())
    item = {"pk": {"S": "same"}, "n": {"N": "1.0"}, "s": {"SS": ["x", "y"]}}
    ddb.put_item(TableName=table, Item=item)
    ddb.put_item(
        TableName=table, Item={"pk": {"S": "same"}, "n": {"N": "1"}, "s": {"SS": ["y", "x"]}}
    )
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "same"}},
        UpdateExpression="SET n = :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    ddb.delete_item(TableName=table, Key={"pk": {"S": "missing"}})
    records = read_all(streams, stream_arn(ddb, table))
    assert [r["eventName"] for r in records] == ["INSERT"]


def test_batch_writes_emit_one_record_per_item(ddb: Any, streams: Any, table_factory: Any) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    ddb.batch_write_item(
        RequestItems={table: [{"PutRequest": {"Item": {"pk": {"S": f"b{i}"}}}} for i in range(10)]}
    )
    records = read_all(streams, stream_arn(ddb, table))
    assert sorted(r["dynamodb"]["Keys"]["pk"]["S"] for r in records) == sorted(
        f"b{i}" for i in range(10)
    )
    assert {r["eventName"] for r in records} == {"INSERT"}
    check_order_per_item(records)


def test_latest_at_and_after_sequence_number_start_where_they_say(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    for key in ("a", "b"):
        ddb.put_item(TableName=table, Item={"pk": {"S": key}})
    latest = [
        shard_iterator(streams, arn, s["ShardId"], "LATEST") for s in all_shards(streams, arn)
    ]
    ddb.put_item(TableName=table, Item={"pk": {"S": "c"}})
    # "c" is in exactly one shard: every LATEST iterator together finds it and nothing else.
    found = [r for it in latest for r in streams.get_records(ShardIterator=it)["Records"]]
    assert [key_of(r) for r in found] == ["c"]
    by_shard = read_by_shard(streams, arn)
    shard_of = {key_of(r): shard for shard, rs in by_shard.items() for r in rs}
    first, second, third = (
        next(r for rs in by_shard.values() for r in rs if key_of(r) == key) for key in "abc"
    )
    if not CLUSTER:
        assert [key_of(r) for r in read_all(streams, arn)] == ["a", "b", "c"]
    sequence = second["dynamodb"]["SequenceNumber"]
    shard = shard_of["b"]
    at = read_shard(
        streams, shard_iterator(streams, arn, shard, "AT_SEQUENCE_NUMBER", SequenceNumber=sequence)
    )
    after = read_shard(
        streams,
        shard_iterator(streams, arn, shard, "AFTER_SEQUENCE_NUMBER", SequenceNumber=sequence),
    )
    # What follows "b" in its shard: "c" when it landed there too (always on a single node).
    following = [
        r["eventID"]
        for r in by_shard[shard]
        if int(r["dynamodb"]["SequenceNumber"]) > int(sequence)
    ]
    assert following == ([third["eventID"]] if shard_of["c"] == shard else [])
    if not CLUSTER:
        assert following == [third["eventID"]]
    assert [r["eventID"] for r in at] == [second["eventID"], *following]
    assert [r["eventID"] for r in after] == following
    assert first["eventID"] not in {r["eventID"] for r in at}


def test_get_records_limit_pages_through_the_shard(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    for i in range(7):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"p{i}"}})
    every: list[str] = []
    for shard in all_shards(streams, arn):
        position = shard_iterator(streams, arn, shard["ShardId"], "TRIM_HORIZON")
        keys: list[str] = []
        for _ in range(10):
            page = streams.get_records(ShardIterator=position, Limit=3)
            assert len(page["Records"]) <= 3
            keys.extend(key_of(r) for r in page["Records"])
            position = page["NextShardIterator"]  # an open shard always gives one
            if not page["Records"]:
                break
        # A shard holds its items' records in the order they were written.
        assert keys == sorted(keys, key=lambda k: int(k[1:]))
        every.extend(keys)
    assert sorted(every) == [f"p{i}" for i in range(7)]
    if not CLUSTER:
        assert every == [f"p{i}" for i in range(7)]


# --- Lifecycle ------------------------------------------------------------------------------


def test_disabling_closes_the_shard_and_re_enabling_makes_a_new_stream(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    first_arn = stream_arn(ddb, table)
    ddb.put_item(TableName=table, Item={"pk": {"S": "before"}})
    ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    ddb.put_item(TableName=table, Item={"pk": {"S": "while-off"}})
    ddb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "after"}})
    second_arn = stream_arn(ddb, table)
    assert second_arn != first_arn

    old = streams.describe_stream(StreamArn=first_arn)["StreamDescription"]
    assert old["StreamStatus"] == "DISABLED"
    assert old["Shards"] == all_shards(streams, first_arn)
    for shard in old["Shards"]:
        assert "EndingSequenceNumber" in shard["SequenceNumberRange"]
    new = streams.describe_stream(StreamArn=second_arn)["StreamDescription"]
    assert new["StreamStatus"] == "ENABLED"
    assert new["StreamViewType"] == "NEW_IMAGE"
    listed = {s["StreamArn"] for s in streams.list_streams(TableName=table)["Streams"]}
    assert listed == {first_arn, second_arn}

    # The closed shards still read, and the last page of each has no next iterator.
    assert [key_of(r) for r in last_pages(streams, first_arn)] == ["before"]
    assert [key_of(r) for r in read_all(streams, second_arn)] == ["after"]


def last_pages(streams: Any, arn: str) -> list[Any]:
    """The records of a disabled stream's closed shards, each read in one page that is its
    last (no NextShardIterator)."""
    out: list[Any] = []
    for shard in all_shards(streams, arn):
        page = streams.get_records(
            ShardIterator=shard_iterator(streams, arn, shard["ShardId"], "TRIM_HORIZON")
        )
        assert "NextShardIterator" not in page, shard["ShardId"]
        out.extend(page["Records"])
    return out


def test_a_deleted_tables_stream_stays_listed_disabled_and_readable(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    ddb.put_item(TableName=table, Item={"pk": {"S": "x"}})
    ddb.delete_table(TableName=table)
    listed = streams.list_streams(TableName=table)["Streams"]
    assert [s["StreamArn"] for s in listed] == [arn]
    assert streams.describe_stream(StreamArn=arn)["StreamDescription"]["StreamStatus"] == "DISABLED"
    assert [r["eventName"] for r in last_pages(streams, arn)] == ["INSERT"]


# --- Errors ---------------------------------------------------------------------------------


def test_unknown_stream_is_resource_not_found_with_dynamodbs_message(streams: Any) -> None:
    arn = f"arn:aws:dynamodb:{REGION}:000000000000:table/nothing/stream/2020-01-01T00:00:00.000"
    code, message = error_of(lambda: streams.describe_stream(StreamArn=arn))
    assert code == "ResourceNotFoundException"
    assert message == f"Requested resource not found: Stream: {arn} not found"
    code, _ = error_of(
        lambda: streams.get_shard_iterator(
            StreamArn=arn,
            ShardId="shardId-00000000000000000000-00000000",
            ShardIteratorType="LATEST",
        )
    )
    assert code == "ResourceNotFoundException"


def test_unknown_table_in_list_streams_is_resource_not_found(streams: Any) -> None:
    code, message = error_of(lambda: streams.list_streams(TableName="no-such-table"))
    assert code == "ResourceNotFoundException"
    assert message == "Requested resource not found: Table: no-such-table not found"


def test_unknown_shard_is_resource_not_found(ddb: Any, streams: Any, table_factory: Any) -> None:
    arn = stream_arn(ddb, table_factory(**with_stream()))
    code, _ = error_of(
        lambda: streams.get_shard_iterator(
            StreamArn=arn,
            ShardId="shardId-00000000000000000000-00000000",
            ShardIteratorType="TRIM_HORIZON",
        )
    )
    assert code == "ResourceNotFoundException"


def test_limits_above_the_maximum_are_validation_errors(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    arn = stream_arn(ddb, table_factory(**with_stream()))
    code, message = error_of(
        lambda: streams.get_records(ShardIterator=iterator(streams, arn), Limit=1001)
    )
    assert code == "ValidationException"
    assert message == (
        "1 validation error detected: Value '1001' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 1000"
    )
    code, message = error_of(lambda: streams.list_streams(Limit=101))
    assert code == "ValidationException"
    assert "less than or equal to 100" in message
    code, _ = error_of(lambda: streams.describe_stream(StreamArn=arn, Limit=101))
    assert code == "ValidationException"


def test_a_damaged_iterator_is_a_validation_error(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    arn = stream_arn(ddb, table_factory(**with_stream()))
    good = iterator(streams, arn)
    damaged = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
    code, message = error_of(lambda: streams.get_records(ShardIterator=damaged))
    assert (code, message) == ("ValidationException", "Invalid ShardIterator")
    code, _ = error_of(lambda: streams.get_records(ShardIterator="not-an-iterator"))
    assert code == "ValidationException"


def test_sequence_number_iterators_need_a_sequence_number(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    arn = stream_arn(ddb, table_factory(**with_stream()))
    shard = first_shard(streams, arn)
    code, _ = error_of(
        lambda: streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="AT_SEQUENCE_NUMBER"
        )
    )
    assert code == "ValidationException"


def test_errors_carry_the_dynamodb_namespace_on_the_wire(endpoint: str) -> None:
    arn = f"arn:aws:dynamodb:{REGION}:000000000000:table/nothing/stream/2020-01-01T00:00:00.000"
    request = urllib.request.Request(
        endpoint,
        data=json.dumps({"StreamArn": arn}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDBStreams_20120810.DescribeStream",
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    body = json.loads(info.value.read())
    assert body["__type"] == "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"


def test_signed_requests_are_verified_for_streams_too(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{ACCESS_KEY_ID} {SECRET_ACCESS_KEY}\n")
    server = server_factory("--credentials", str(keys), "--in-memory")
    good = streams_client(server.url)
    assert good.list_streams()["Streams"] == []
    bad = streams_client(server.url, aws_secret_access_key="wrong-secret")
    code, _ = error_of(lambda: bad.list_streams())
    assert code == "InvalidSignatureException"


CLI_SECONDS_MAX = 60


def test_the_aws_cli_lists_and_describes_streams(
    ddb: Any, endpoint: str, table_factory: Any, tmp_path: Path
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
        AWS_MAX_ATTEMPTS="1",
        AWS_PAGER="",
    )

    def cli(*args: str) -> Any:
        done = subprocess.run(
            ["aws", "dynamodbstreams", *args, "--endpoint-url", endpoint, "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=CLI_SECONDS_MAX,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    listed = cli("list-streams", "--table-name", table)
    assert [s["StreamArn"] for s in listed["Streams"]] == [arn]
    described = cli("describe-stream", "--stream-arn", arn)["StreamDescription"]
    assert described["StreamStatus"] == "ENABLED"
    assert described["TableName"] == table
