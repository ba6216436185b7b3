"""The catalog survives a server restart: tables, their settings and tags come back exactly as
they were, deleted tables stay deleted, and their items are usable at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError


def describe_all(ddb: Any) -> dict[str, Any]:
    out = {}
    for name in ddb.list_tables()["TableNames"]:
        table = ddb.describe_table(TableName=name)["Table"]
        tags = ddb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
        out[name] = (table, tags)
    return out


def test_catalog_survives_a_restart(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Any
) -> None:
    data = tmp_path / "data"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    ddb.create_table(
        TableName="plain",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": "team", "Value": "storage"}],
    )
    ddb.create_table(
        TableName="provisioned",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        ProvisionedThroughput={"ReadCapacityUnits": 2, "WriteCapacityUnits": 2},
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    ddb.update_table(
        TableName="provisioned",
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 2},
    )
    ddb.update_table(TableName="plain", DeletionProtectionEnabled=True)
    ddb.create_table(
        TableName="doomed",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="doomed", Item={"pk": {"S": "x"}})
    ddb.delete_table(TableName="doomed")
    ddb.put_item(TableName="plain", Item={"pk": {"S": "kept"}})
    before = describe_all(ddb)
    first.stop()

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    after = describe_all(ddb)
    assert after == before
    assert sorted(after) == ["plain", "provisioned"]
    assert after["provisioned"][0]["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert after["plain"][0]["DeletionProtectionEnabled"] is True
    got = ddb.get_item(TableName="plain", Key={"pk": {"S": "kept"}}, ConsistentRead=True)
    assert got["Item"] == {"pk": {"S": "kept"}}
    try:
        ddb.describe_table(TableName="doomed")
        raise AssertionError("a deleted table came back after a restart")
    except ClientError as error:
        assert error.response["Error"]["Code"] == "ResourceNotFoundException"
    # The restarted catalog accepts changes as before.
    ddb.update_table(TableName="plain", DeletionProtectionEnabled=False)
    ddb.delete_table(TableName="plain")
    assert ddb.list_tables()["TableNames"] == ["provisioned"]


def test_acknowledged_catalog_changes_survive_kill_9(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Any
) -> None:
    import signal
    import threading

    data = tmp_path / "data"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    acknowledged: dict[str, str] = {}  # table name -> TableId
    tagged: set[str] = set()
    stop = threading.Event()

    def churn() -> None:
        for i in range(200):
            if stop.is_set():
                return
            name = f"k9-{i:03d}"
            try:
                created = ddb.create_table(
                    TableName=name,
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
                acknowledged[name] = created["TableDescription"]["TableId"]
                ddb.tag_resource(
                    ResourceArn=created["TableDescription"]["TableArn"],
                    Tags=[{"Key": "n", "Value": str(i)}],
                )
                tagged.add(name)
            except (ClientError, BotoCoreError):  # the server died under the request
                return

    worker = threading.Thread(target=churn)
    worker.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 10 and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.01)
    first.stop(signal.SIGKILL)
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    assert len(acknowledged) >= 10

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    for name, table_id in acknowledged.items():
        table = ddb.describe_table(TableName=name)["Table"]
        assert table["TableId"] == table_id
        assert table["TableStatus"] == "ACTIVE"
    for name in tagged:
        arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
        assert ddb.list_tags_of_resource(ResourceArn=arn)["Tags"] == [
            {"Key": "n", "Value": str(int(name[3:]))}
        ]
