"""Stream records of real `keeldb serve` processes across kill -9 and restart (neither lost
nor duplicated), and retention trimming with a short --stream-retention."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

REGION = "us-east-1"
WRITERS = 4
KILL_AFTER_ACKS = 60  # acknowledged writes (all writers) before the kill
WRITE_SECONDS_MAX = 60.0
TRIM_WAIT_SECONDS_MAX = 30.0
RETENTION_SECONDS = 3


def clients(endpoint: str) -> tuple[Any, Any]:
    settings: dict[str, Any] = {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": "AKIDKEELDBTEST",
        "aws_secret_access_key": "keeldb-test-secret",
        "config": Config(
            retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=10
        ),
    }
    return boto3.client("dynamodb", **settings), boto3.client("dynamodbstreams", **settings)


def create_streamed_table(ddb: Any, name: str, view: str = "NEW_AND_OLD_IMAGES") -> str:
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    arn: str = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    return arn


def read_stream(streams: Any, arn: str, kind: str = "TRIM_HORIZON", **more: Any) -> list[Any]:
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    position = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType=kind, **more
    )["ShardIterator"]
    out: list[Any] = []
    while position is not None:
        page = streams.get_records(ShardIterator=position)
        out.extend(page["Records"])
        if not page["Records"]:
            break
        position = page.get("NextShardIterator")
    return out


def unread_or_trimming(streams: Any, arn: str) -> bool:
    """Whether the shard still holds records; an iterator whose records were trimmed between
    its issue and its use is answered TrimmedDataAccessException, as the service documents,
    which here means trimming is under way."""
    try:
        return bool(read_stream(streams, arn))
    except ClientError as error:
        if error.response["Error"]["Code"] != "TrimmedDataAccessException":
            raise
        return True


@pytest.mark.slow
def test_records_survive_kill_9_neither_lost_nor_duplicated(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir)
    ddb, _ = clients(server.url)
    arn = create_streamed_table(ddb, "crash")

    acked: dict[str, int] = {}  # key -> highest acknowledged value
    attempted: dict[str, int] = {}  # key -> highest value sent
    lock = threading.Lock()
    total = [0]
    stop = threading.Event()

    def writer(number: int) -> None:
        client, _ = clients(server.url)
        key = f"w{number}"
        deadline = time.monotonic() + WRITE_SECONDS_MAX
        value = 0
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                attempted[key] = value
            try:
                client.put_item(TableName="crash", Item={"pk": {"S": key}, "v": {"N": str(value)}})
            except (BotoCoreError, ClientError):
                return  # the server died under this request
            with lock:
                acked[key] = value
                total[0] += 1
            value += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WRITE_SECONDS_MAX
    while time.monotonic() < deadline:
        with lock:
            if total[0] >= KILL_AFTER_ACKS:
                break
        time.sleep(0.005)
    server.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(WRITE_SECONDS_MAX)
    assert acked, "no write was acknowledged before the kill"

    restarted = server_factory(data_dir=data_dir)
    ddb, streams = clients(restarted.url)
    records = read_stream(streams, arn)
    sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert sequence == sorted(sequence)
    assert len(set(sequence)) == len(sequence)
    assert len({r["eventID"] for r in records}) == len(records)

    per_key: dict[str, list[int]] = {}
    for record in records:
        key = record["dynamodb"]["Keys"]["pk"]["S"]
        per_key.setdefault(key, []).append(int(record["dynamodb"]["NewImage"]["v"]["N"]))
        old = record["dynamodb"].get("OldImage")
        if old is not None:
            # Each change starts from the image the previous record of that item left.
            assert int(old["v"]["N"]) == per_key[key][-2]
    for key, values in per_key.items():
        # Each writer's puts are sequential: its records are 0, 1, 2 ... with no gap or repeat.
        assert values == list(range(len(values))), key
        assert values[-1] >= acked.get(key, -1), key  # nothing acknowledged is lost
        assert values[-1] <= attempted[key], key  # nothing is made up
        item = ddb.get_item(TableName="crash", Key={"pk": {"S": key}})["Item"]
        assert int(item["v"]["N"]) == values[-1]  # the table and its stream agree
    assert set(acked) <= set(per_key)

    # Writes after the restart follow the recovered ones.
    ddb.put_item(TableName="crash", Item={"pk": {"S": "later"}, "v": {"N": "0"}})
    after = read_stream(streams, arn, "AFTER_SEQUENCE_NUMBER", SequenceNumber=str(sequence[-1]))
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in after] == ["later"]


@pytest.mark.slow
def test_records_past_retention_are_trimmed(server_factory: Callable[..., Any]) -> None:
    # Long enough that the records are read once before they go, on a loaded machine too.
    server = server_factory("--stream-retention", str(RETENTION_SECONDS), "--in-memory")
    ddb, streams = clients(server.url)
    arn = create_streamed_table(ddb, "short", "KEYS_ONLY")
    dropped = create_streamed_table(ddb, "dropped", "KEYS_ONLY")
    for key in ("a", "b"):
        ddb.put_item(TableName="short", Item={"pk": {"S": key}})
    ddb.put_item(TableName="dropped", Item={"pk": {"S": "x"}})
    ddb.delete_table(TableName="dropped")
    first = read_stream(streams, arn)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in first] == ["a", "b"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    stale = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]

    deadline = time.monotonic() + TRIM_WAIT_SECONDS_MAX
    while unread_or_trimming(streams, arn) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert read_stream(streams, arn) == []

    with pytest.raises(ClientError) as info:
        streams.get_records(ShardIterator=stale)
    assert info.value.response["Error"]["Code"] == "TrimmedDataAccessException"
    with pytest.raises(ClientError) as info:
        streams.get_shard_iterator(
            StreamArn=arn,
            ShardId=shard["ShardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=first[0]["dynamodb"]["SequenceNumber"],
        )
    assert info.value.response["Error"]["Code"] == "TrimmedDataAccessException"

    # The deleted table's disabled stream is forgotten once retention has passed.
    while time.monotonic() < deadline:
        listed = [s["StreamArn"] for s in streams.list_streams()["Streams"]]
        if dropped not in listed:
            break
        time.sleep(0.2)
    assert dropped not in [s["StreamArn"] for s in streams.list_streams()["Streams"]]

    # The live stream keeps working after trimming.
    ddb.put_item(TableName="short", Item={"pk": {"S": "c"}})
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in read_stream(streams, arn)] == ["c"]
