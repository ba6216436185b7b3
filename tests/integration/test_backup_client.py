"""Continuous backups, point-in-time restore and on-demand backups through boto3 only, against
a real server: exactly the state of a chosen second, back up / delete / restore, DynamoDB's
errors, ListBackups' filters and paging."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

ACTIVE_SECONDS_MAX = 60.0  # a restore of a few hundred items takes well under a second


def wait_active(ddb: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + ACTIVE_SECONDS_MAX
    while time.monotonic() < deadline:
        table: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        time.sleep(0.05)
    raise TimeoutError(f"{name} not ACTIVE in {ACTIVE_SECONDS_MAX} s")


def wait_backup(ddb: Any, arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + ACTIVE_SECONDS_MAX
    while time.monotonic() < deadline:
        found: dict[str, Any] = ddb.describe_backup(BackupArn=arn)["BackupDescription"]
        if found["BackupDetails"]["BackupStatus"] == "AVAILABLE":
            return found
        time.sleep(0.05)
    raise TimeoutError(f"backup {arn} not AVAILABLE in {ACTIVE_SECONDS_MAX} s")


def all_items(ddb: Any, name: str) -> dict[str, dict[str, Any]]:
    items = {}
    for page in ddb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
        for item in page["Items"]:
            items[item["pk"]["S"]] = item
    return items


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.fixture
def restored(ddb: Any) -> Iterator[list[str]]:
    """Names of tables a test restores: deleted after it."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            wait_active(ddb, name)
            ddb.delete_table(TableName=name)
        except ClientError:
            pass


def sleep_until_next_second() -> int:
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.01)
    return int(time.time())


def test_a_table_restored_to_a_chosen_second_holds_exactly_that_seconds_state(
    ddb: Any, table_factory: Callable[..., str], restored: list[str]
) -> None:
    name = table_factory()
    answer = ddb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )["ContinuousBackupsDescription"]
    assert answer["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert answer["PointInTimeRecoveryDescription"]["RecoveryPeriodInDays"] == 35
    for number in range(60):
        ddb.put_item(
            TableName=name,
            Item={"pk": {"S": f"k{number}"}, "n": {"N": str(number)}, "b": {"B": b"\x00\xff"}},
        )
    chosen = sleep_until_next_second()  # every write above committed before this second
    expected = all_items(ddb, name)
    sleep_until_next_second()
    for number in range(0, 60, 3):
        ddb.delete_item(TableName=name, Key={"pk": {"S": f"k{number}"}})
    ddb.update_item(
        TableName=name,
        Key={"pk": {"S": "k1"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "-1"}},
    )
    ddb.put_item(TableName=name, Item={"pk": {"S": "late"}})
    target = f"{name}-at"
    restored.append(target)
    described = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    window = described["PointInTimeRecoveryDescription"]
    assert window["EarliestRestorableDateTime"].timestamp() <= chosen
    response = ddb.restore_table_to_point_in_time(
        SourceTableName=name, TargetTableName=target, RestoreDateTime=chosen
    )["TableDescription"]
    assert response["TableStatus"] == "CREATING"
    assert response["RestoreSummary"]["RestoreInProgress"] is True
    assert response["RestoreSummary"]["RestoreDateTime"].timestamp() == chosen
    table = wait_active(ddb, target)
    assert table["RestoreSummary"]["RestoreInProgress"] is False
    assert table["RestoreSummary"]["SourceTableArn"].endswith(f":table/{name}")
    assert table["ItemCount"] == len(expected) == 60
    assert all_items(ddb, target) == expected
    # The source went on: the restore did not touch it.
    assert "late" in all_items(ddb, name)


def test_the_latest_restorable_time_restores_every_acknowledged_write(
    ddb: Any, endpoint: str, table_factory: Callable[..., str], restored: list[str]
) -> None:
    name = table_factory(range_key="sk", range_type="N")
    ddb.update_continuous_backups(
        TableName=name,
        PointInTimeRecoverySpecification={
            "PointInTimeRecoveryEnabled": True,
            "RecoveryPeriodInDays": 7,
        },
    )
    for number in range(30):
        ddb.put_item(TableName=name, Item={"pk": {"S": f"k{number % 4}"}, "sk": {"N": str(number)}})
    time.sleep(1.1)  # the latest restorable time trails the present by a second
    target = f"{name}-latest"
    restored.append(target)
    ddb.restore_table_to_point_in_time(
        SourceTableArn=ddb.describe_table(TableName=name)["Table"]["TableArn"],
        TargetTableName=target,
        UseLatestRestorableTime=True,
        BillingModeOverride="PROVISIONED",
        ProvisionedThroughputOverride={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
    )
    watched = subprocess.run(
        [
            sys.executable,
            "-m",
            "keeldb",
            "backup",
            "watch",
            "--endpoint",
            endpoint,
            "--table",
            target,
            "--interval",
            "0.05",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert watched.stdout.strip() == f"{target}: ACTIVE, 30 items"
    table = wait_active(ddb, target)
    assert table["ItemCount"] == 30
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
    described = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert described["PointInTimeRecoveryDescription"]["RecoveryPeriodInDays"] == 7


def test_point_in_time_restore_errors_are_dynamodbs(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    name = table_factory()
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    assert error_of(lambda: ddb.describe_continuous_backups(TableName=missing)) == (
        "TableNotFoundException",
        f"Table not found: {missing}",
    )
    disabled = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert disabled == {
        "ContinuousBackupsStatus": "ENABLED",
        "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "DISABLED"},
    }
    assert error_of(
        lambda: ddb.restore_table_to_point_in_time(
            SourceTableName=name, TargetTableName=f"{name}-x", UseLatestRestorableTime=True
        )
    ) == (
        "PointInTimeRecoveryUnavailableException",
        f"Point in time recovery is not enabled for table '{name}'",
    )
    code, message = error_of(
        lambda: ddb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": True,
                "RecoveryPeriodInDays": 36,
            },
        )
    )
    assert code == "ValidationException"
    assert "Member must have value less than or equal to 35" in message
    ddb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    other = table_factory()
    assert error_of(
        lambda: ddb.restore_table_to_point_in_time(
            SourceTableName=name, TargetTableName=other, UseLatestRestorableTime=True
        )
    ) == ("TableAlreadyExistsException", f"Table already exists: {other}")
    code, _ = error_of(
        lambda: ddb.restore_table_to_point_in_time(
            SourceTableName=name, TargetTableName=f"{name}-x", RestoreDateTime=time.time() + 3600
        )
    )
    assert code == "InvalidRestoreTimeException"
    code, _ = error_of(
        lambda: ddb.restore_table_to_point_in_time(
            SourceTableName=name, TargetTableName=f"{name}-x", RestoreDateTime=1_000_000
        )
    )
    assert code == "InvalidRestoreTimeException"
    assert error_of(
        lambda: ddb.restore_table_to_point_in_time(
            SourceTableName=missing, TargetTableName=f"{name}-x", UseLatestRestorableTime=True
        )
    ) == ("TableNotFoundException", f"Table not found: {missing}")
    arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
    code, message = error_of(
        lambda: ddb.export_table_to_point_in_time(TableArn=arn, S3Bucket="../outside")
    )
    assert (code, "s3Bucket" in message) == ("ValidationException", True)
    code, _ = error_of(
        lambda: ddb.export_table_to_point_in_time(
            TableArn=arn, S3Bucket="bucket", S3Prefix="a/../../outside"
        )
    )
    assert code == "ValidationException"


def test_a_backed_up_table_deleted_and_restored_comes_back_whole(
    ddb: Any, table_factory: Callable[..., str], restored: list[str]
) -> None:
    name = table_factory(
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
    )
    for number in range(120):
        ddb.put_item(
            TableName=name,
            Item={"pk": {"S": f"k{number}"}, "g": {"S": f"g{number % 5}"}, "v": {"N": "1"}},
        )
    expected = all_items(ddb, name)
    details = ddb.create_backup(TableName=name, BackupName="before-delete")["BackupDetails"]
    assert details["BackupStatus"] in ("CREATING", "AVAILABLE")
    assert details["BackupType"] == "USER"
    assert details["BackupArn"].split("/backup/")[0].endswith(f":table/{name}")
    suffix = details["BackupArn"].split("/backup/")[1]
    assert len(suffix) == 23 and suffix[14] == "-"
    # Changes after the backup are not in it.
    ddb.put_item(TableName=name, Item={"pk": {"S": "after"}, "g": {"S": "g0"}})
    description = wait_backup(ddb, details["BackupArn"])
    assert description["SourceTableDetails"]["TableName"] == name
    assert description["SourceTableDetails"]["ItemCount"] == 120
    ddb.delete_table(TableName=name)
    ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 0.1})
    restored.append(name)
    answer = ddb.restore_table_from_backup(TargetTableName=name, BackupArn=details["BackupArn"])
    assert answer["TableDescription"]["RestoreSummary"]["SourceBackupArn"] == details["BackupArn"]
    table = wait_active(ddb, name)
    assert table["ItemCount"] == 120
    assert all_items(ddb, name) == expected
    index = ddb.query(
        TableName=name,
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "g3"}},
    )
    assert index["Count"] == 24
    assert error_of(
        lambda: ddb.restore_table_from_backup(TargetTableName=name, BackupArn=details["BackupArn"])
    ) == ("TableAlreadyExistsException", f"Table already exists: {name}")
    deleted = ddb.delete_backup(BackupArn=details["BackupArn"])["BackupDescription"]
    assert deleted["BackupDetails"]["BackupStatus"] == "DELETED"
    assert error_of(lambda: ddb.describe_backup(BackupArn=details["BackupArn"])) == (
        "BackupNotFoundException",
        f"Backup not found: {details['BackupArn']}",
    )


def test_list_backups_filters_by_table_and_time_and_pages(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    first = table_factory()
    second = table_factory()
    arns = []
    for table, backup_name in ((first, "one"), (first, "two"), (second, "three")):
        arns.append(ddb.create_backup(TableName=table, BackupName=backup_name)["BackupDetails"])
    for details in arns:
        wait_backup(ddb, details["BackupArn"])
    mine = ddb.list_backups(TableName=first)["BackupSummaries"]
    assert [b["BackupName"] for b in mine] == ["one", "two"]
    assert all(b["TableName"] == first and b["BackupStatus"] == "AVAILABLE" for b in mine)
    page = ddb.list_backups(TableName=first, Limit=1)
    assert [b["BackupName"] for b in page["BackupSummaries"]] == ["one"]
    rest = ddb.list_backups(
        TableName=first, Limit=1, ExclusiveStartBackupArn=page["LastEvaluatedBackupArn"]
    )
    assert [b["BackupName"] for b in rest["BackupSummaries"]] == ["two"]
    assert "LastEvaluatedBackupArn" not in rest
    created = arns[2]["BackupCreationDateTime"]
    later = ddb.list_backups(TableName=second, TimeRangeLowerBound=created.timestamp() + 1)
    assert later["BackupSummaries"] == []
    assert ddb.list_backups(TableName=second, BackupType="SYSTEM")["BackupSummaries"] == []
    for details in arns:
        ddb.delete_backup(BackupArn=details["BackupArn"])
    assert ddb.list_backups(TableName=first)["BackupSummaries"] == []
    code, message = error_of(lambda: ddb.create_backup(TableName=first, BackupName="a b"))
    assert code == "ValidationException"
    assert "backupName" in message
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    assert error_of(lambda: ddb.create_backup(TableName=missing, BackupName="x-y")) == (
        "TableNotFoundException",
        f"Table not found: {missing}",
    )


def test_a_server_without_a_backup_store_says_backups_are_unavailable(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any]
) -> None:
    client = client_factory(server_factory("--in-memory").url)
    client.create_table(
        TableName="kept-in-memory",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for call in (
        lambda: client.update_continuous_backups(
            TableName="kept-in-memory",
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        ),
        lambda: client.create_backup(TableName="kept-in-memory", BackupName="nope"),
        lambda: client.list_backups(),
    ):
        code, message = error_of(call)
        assert code == "ContinuousBackupsUnavailableException"
        assert "no backup store" in message
