"""The function service on a real 3-node cluster, through boto3 only: Lambda requests sent
to any router reach the functions home (the metadata leader), a mapping delivers every change
of a table whose stream has shards in several partitions, and a kill -9 of the home loses
nothing: the next metadata leader becomes the home with the replicated functions, mappings
and positions, and continues every mapping (every change processed at least once)."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(300)]

ROLE = "arn:aws:iam::123456789012:role/keeldb-test"
DELIVERY_SECONDS_MAX = 90.0  # cold starts and a failover on a loaded machine
COUNTING = """
import os
import boto3
ddb = boto3.client("dynamodb")
def handler(event, context):
    for record in event["Records"]:
        key = record["dynamodb"]["Keys"]["pk"]["S"]
        ddb.update_item(TableName=os.environ["SEEN"], Key={"pk": {"S": key}},
                        UpdateExpression="ADD n :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})
    return {"records": len(event["Records"])}
"""


def client(service: str, endpoint: str, attempts: int = 5) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDCLUSTERTEST",
        aws_secret_access_key="cluster-test-secret",
        config=Config(retries={"max_attempts": attempts, "mode": "standard"}, read_timeout=60),
    )


def zip_of(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", text)
    return buffer.getvalue()


def create_table(ddb: Any, name: str, **more: Any) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **more,
    )


def seen(ddb: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    pages = ddb.get_paginator("scan").paginate(TableName="seen", ConsistentRead=True)
    for page in pages:
        for item in page["Items"]:
            out[item["pk"]["S"]] = int(item["n"]["N"])
    return out


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DELIVERY_SECONDS_MAX
    while True:
        try:
            if check():
                return
        except ClientError:
            pass  # a router refusing during a failover: look again
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_functions_live_on_one_home_and_their_mappings_survive_its_kill(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(nodes=3, profile="standard", partitions=2)
    home = cluster.leader_of("meta")
    others = [n for n in (1, 2, 3) if n != home]
    ddb = client("dynamodb", cluster.endpoint(others[0]))
    lam = client("lambda", cluster.endpoint(others[0]))  # forwarded to the home
    create_table(
        ddb,
        "source",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    create_table(ddb, "seen")
    stream_arn = ddb.describe_table(TableName="source")["Table"]["LatestStreamArn"]
    lam.create_function(
        FunctionName="counter",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Timeout=30,
        Code={"ZipFile": zip_of(COUNTING)},
        Environment={"Variables": {"SEEN": "seen"}},
    )
    # Another router sees the same function, and its invocations run.
    other_lam = client("lambda", cluster.endpoint(others[1]))
    assert other_lam.get_function(FunctionName="counter")["Configuration"]["Handler"] == (
        "app.handler"
    )
    answer = other_lam.invoke(FunctionName="counter", Payload=json.dumps({"Records": []}))
    assert json.loads(answer["Payload"].read()) == {"records": 0}
    mapping = other_lam.create_event_source_mapping(
        FunctionName="counter",
        EventSourceArn=stream_arn,
        StartingPosition="TRIM_HORIZON",
        BatchSize=10,
    )

    keys = [f"k{i}" for i in range(20)]
    for key in keys:
        ddb.put_item(TableName="source", Item={"pk": {"S": key}})
    wait_for(lambda: set(keys) <= set(seen(ddb)), "the first changes to reach the function")

    # kill -9 of the home while changes keep coming (and batches are being delivered):
    # another node becomes the home.
    writer = client("dynamodb", cluster.endpoint(others[1]), attempts=8)
    during = [f"d{i}" for i in range(15)]

    failures: list[Exception] = []

    def write_during() -> None:
        try:
            for key in during:
                writer.put_item(TableName="source", Item={"pk": {"S": key}})
        except (ClientError, BotoCoreError) as error:  # reported by the test thread below
            failures.append(error)

    thread = threading.Thread(target=write_during)
    thread.start()
    time.sleep(0.3)
    cluster.kill(home)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert failures == []
    wait_for(lambda: set(during) <= set(seen(writer)), "the changes made while the home was dead")
    new_home = cluster.leader_of("meta")
    assert new_home != home
    survivor = client("lambda", cluster.endpoint(others[0]))
    names = [f["FunctionName"] for f in survivor.list_functions()["Functions"]]
    assert names == ["counter"]

    after = [f"a{i}" for i in range(10)]
    for key in after:
        writer.put_item(TableName="source", Item={"pk": {"S": key}})
    everything = set(keys) | set(during) | set(after)
    wait_for(
        lambda: everything <= set(seen(writer)), "every change to be processed by the new home"
    )
    counted = seen(writer)
    assert set(counted) == everything  # nothing the table never had
    assert all(n >= 1 for n in counted.values())  # at least once
    listed = client("lambda", cluster.endpoint(others[1])).list_event_source_mappings(
        FunctionName="counter"
    )["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [mapping["UUID"]]
    assert listed[0]["State"] == "Enabled"
