"""Backups, point-in-time restore, exports and imports on a real 3-node cluster, through boto3:
jobs and archives outlive a restart of every node and the loss of the metadata leader, and a
table exported through the router imports back whole.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

pytestmark = [pytest.mark.process, pytest.mark.slow]

JOB_SECONDS_MAX = 90.0  # a job over a few dozen items takes a second or two, even loaded
TABLE = "things"
# Answers of a cluster whose leaders are still being elected after a restart: asked again.
RETRIED = ("InternalServerError", "ContinuousBackupsUnavailableException")


def _wait(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + JOB_SECONDS_MAX
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ClientError as error:
            last = error.response["Error"]
            if last["Code"] not in RETRIED:
                raise
        except BotoCoreError as error:  # a node still starting: connection refused
            last = repr(error)
        else:
            if last:
                return last
        time.sleep(0.1)
    raise TimeoutError(f"{what} not done in {JOB_SECONDS_MAX} s (last: {last})")


def _active(client: Any, name: str) -> dict[str, Any]:
    def check() -> Any:
        table = client.describe_table(TableName=name)["Table"]
        return table if table["TableStatus"] == "ACTIVE" else None

    found: dict[str, Any] = _wait(check, f"table {name}")
    return found


def _items(client: Any, name: str) -> dict[str, Any]:
    """Every item of a table (a scan is read again while a router answers 500 between two
    leaders, as after a restart)."""

    def scan() -> dict[str, Any]:
        found = {}
        for page in client.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            for item in page["Items"]:
                found[item["pk"]["S"]] = item
        return found

    items: dict[str, Any] = _wait(lambda: (scan(),), f"a scan of {name}")[0]
    return items


def _next_second() -> int:
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.01)
    return int(time.time())


def _create(client: Any, count: int) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    _active(client, TABLE)
    client.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    for number in range(count):
        client.put_item(TableName=TABLE, Item={"pk": {"S": f"k{number}"}, "n": {"N": str(number)}})


def _export_and_import_back(cluster: Any, client: Any, expected: dict[str, Any]) -> None:
    """Export the table through the router and import the export as a new table."""
    arn = client.describe_table(TableName=TABLE)["Table"]["TableArn"]
    export = client.export_table_to_point_in_time(
        TableArn=arn, S3Bucket="exports", S3Prefix="daily"
    )["ExportDescription"]
    done = _wait(
        lambda: (
            d
            if (d := client.describe_export(ExportArn=export["ExportArn"])["ExportDescription"])[
                "ExportStatus"
            ]
            != "IN_PROGRESS"
            else None
        ),
        "export",
    )
    assert done["ExportStatus"] == "COMPLETED", done
    assert done["ItemCount"] == len(expected)
    client.put_item(TableName=TABLE, Item={"pk": {"S": "not-exported"}})
    imported = client.import_table(
        S3BucketSource={"S3Bucket": "exports", "S3KeyPrefix": "daily"},
        InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP",
        TableCreationParameters={
            "TableName": "imported",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )["ImportTableDescription"]
    finished = _wait(
        lambda: (
            d
            if (
                d := client.describe_import(ImportArn=imported["ImportArn"])[
                    "ImportTableDescription"
                ]
            )["ImportStatus"]
            != "IN_PROGRESS"
            else None
        ),
        "import",
    )
    assert finished["ImportStatus"] == "COMPLETED", finished
    assert finished["ImportedItemCount"] == len(expected)
    assert finished["ErrorCount"] == 0
    assert _items(cluster.client(cluster.node_ids[2]), "imported") == expected


def test_backups_exports_and_the_archive_outlive_a_restart_of_every_node(
    cluster_factory: Callable[..., Any],
) -> None:
    cluster = cluster_factory(nodes=3, partitions=2)
    first, second, third = (cluster.client(n) for n in cluster.node_ids)
    _create(first, 40)
    chosen = _next_second()
    expected = _items(first, TABLE)
    _next_second()
    for number in range(0, 40, 4):
        first.delete_item(TableName=TABLE, Key={"pk": {"S": f"k{number}"}})
    arn = first.create_backup(TableName=TABLE, BackupName="before-restart")["BackupDetails"][
        "BackupArn"
    ]
    first.put_item(TableName=TABLE, Item={"pk": {"S": "after-backup"}})
    backed_up = {k: v for k, v in expected.items() if int(k[1:]) % 4 != 0}
    described = _wait(
        lambda: (
            d
            if (d := second.describe_backup(BackupArn=arn)["BackupDescription"])["BackupDetails"][
                "BackupStatus"
            ]
            == "AVAILABLE"
            else None
        ),
        "backup",
    )
    assert described["SourceTableDetails"]["ItemCount"] == 30
    # Every node stops and starts again: the archive goes on where it was.
    cluster.close()
    for node in cluster.node_ids:
        cluster.start(node)
    cluster.wait_serving()
    cluster.leader_of("meta")
    listed = _wait(lambda: third.list_backups(TableName=TABLE)["BackupSummaries"], "a listing")
    assert [b["BackupArn"] for b in listed] == [arn]
    _wait(
        lambda: third.restore_table_to_point_in_time(
            SourceTableName=TABLE, TargetTableName="at-chosen", RestoreDateTime=chosen
        ),
        "the restore request",
    )
    assert _active(third, "at-chosen")["ItemCount"] == 40
    assert _items(third, "at-chosen") == expected
    second.restore_table_from_backup(TargetTableName="from-backup", BackupArn=arn)
    _active(second, "from-backup")
    assert _items(second, "from-backup") == backed_up
    time.sleep(1.1)  # the latest restorable time trails the present by a second
    _export_and_import_back(cluster, second, _items(second, TABLE))


def test_a_restore_whose_metadata_leader_is_killed_ends_whole_or_not_at_all(
    cluster_factory: Callable[..., Any],
) -> None:
    cluster = cluster_factory(nodes=3, partitions=2)
    client = cluster.client(cluster.node_ids[0])
    _create(client, 60)
    time.sleep(1.1)  # the latest restorable time trails the present by a second
    expected = _items(client, TABLE)
    leader = cluster.leader_of("meta")
    survivor = cluster.client(next(n for n in cluster.node_ids if n != leader))
    client = cluster.client(leader)
    client.restore_table_to_point_in_time(
        SourceTableName=TABLE, TargetTableName="restored", UseLatestRestorableTime=True
    )
    cluster.signal(leader, signal.SIGKILL)
    cluster.processes[leader].wait(timeout=10)
    cluster.restart(leader)
    cluster.wait_serving()

    def settled() -> Any:
        try:
            table = survivor.describe_table(TableName="restored")["Table"]
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return "removed"
            raise
        return "active" if table["TableStatus"] == "ACTIVE" else None

    outcome = _wait(settled, "the interrupted restore")
    if outcome == "active":
        assert _items(survivor, "restored") == expected
