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


# On a cluster a stream has one shard per partition that holds its records (docs/streams.md):
# tests that need a single shard skip when the stream has another number of them there.
CLUSTER = bool(os.environ.get("KEELDB_TEST_ENDPOINT"))
ONE_SHARD_ONLY = "a cluster's stream has one shard per partition holding its records"


def only_shard(streams: Any, arn: str) -> dict[str, Any]:
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    if CLUSTER and len(shards) != 1:
        pytest.skip(ONE_SHARD_ONLY)
    assert len(shards) == 1
    shard: dict[str, Any] = shards[0]
    return shard


def iterator(streams: Any, arn: str, kind: str = "TRIM_HORIZON", **more: Any) -> str:
    shard = only_shard(streams, arn)
    answer = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType=kind, **more
    )
    text: str = answer["ShardIterator"]
    return text


def read_all(streams: Any, arn: str, kind: str = "TRIM_HORIZON", **more: Any) -> list[Any]:
    """Every record from the iterator to the end of what is there now."""
    position: str | None = iterator(streams, arn, kind, **more)
    out: list[Any] = []
    while position is not None:
        page = streams.get_records(ShardIterator=position)
        out.extend(page["Records"])
        if not page["Records"]:
            break
        position = page.get("NextShardIterator")
    return out


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


def test_describe_stream_reports_an_enabled_stream_with_one_open_shard(
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
    if CLUSTER and len(description["Shards"]) != 1:
        pytest.skip(ONE_SHARD_ONLY)
    (shard,) = description["Shards"]
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


def test_latest_at_and_after_sequence_number_start_where_they_say(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    for key in ("a", "b"):
        ddb.put_item(TableName=table, Item={"pk": {"S": key}})
    latest = iterator(streams, arn, "LATEST")
    ddb.put_item(TableName=table, Item={"pk": {"S": "c"}})
    page = streams.get_records(ShardIterator=latest)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]] == ["c"]
    first, second, third = read_all(streams, arn)
    sequence = second["dynamodb"]["SequenceNumber"]
    at = read_all(streams, arn, "AT_SEQUENCE_NUMBER", SequenceNumber=sequence)
    after = read_all(streams, arn, "AFTER_SEQUENCE_NUMBER", SequenceNumber=sequence)
    assert [r["eventID"] for r in at] == [second["eventID"], third["eventID"]]
    assert [r["eventID"] for r in after] == [third["eventID"]]
    assert first["eventID"] not in {r["eventID"] for r in at}


def test_get_records_limit_pages_through_the_shard(
    ddb: Any, streams: Any, table_factory: Any
) -> None:
    table = table_factory(**with_stream("KEYS_ONLY"))
    arn = stream_arn(ddb, table)
    for i in range(7):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"p{i}"}})
    position = iterator(streams, arn)
    keys: list[str] = []
    for _ in range(10):
        page = streams.get_records(ShardIterator=position, Limit=3)
        assert len(page["Records"]) <= 3
        keys.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"])
        position = page["NextShardIterator"]  # an open shard always gives one
        if not page["Records"]:
            break
    assert keys == [f"p{i}" for i in range(7)]


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
    assert "EndingSequenceNumber" in old["Shards"][0]["SequenceNumberRange"]
    new = streams.describe_stream(StreamArn=second_arn)["StreamDescription"]
    assert new["StreamStatus"] == "ENABLED"
    assert new["StreamViewType"] == "NEW_IMAGE"
    listed = {s["StreamArn"] for s in streams.list_streams(TableName=table)["Streams"]}
    assert listed == {first_arn, second_arn}

    # The closed shard still reads, and its last page has no next iterator.
    page = streams.get_records(ShardIterator=iterator(streams, first_arn))
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]] == ["before"]
    assert "NextShardIterator" not in page
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in read_all(streams, second_arn)] == ["after"]


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
    page = streams.get_records(ShardIterator=iterator(streams, arn))
    assert [r["eventName"] for r in page["Records"]] == ["INSERT"]
    assert "NextShardIterator" not in page


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
    shard = only_shard(streams, arn)
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
