"""The backup operations' request handling over an in-memory database and a fake backup
service: overrides, validation, ListBackups paging, and the appliers of loading tables."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from keeldb.engine import backups as ops
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.schema import Table
from keeldb.model.errors import (
    BackupNotFoundException,
    ContinuousBackupsUnavailableException,
    ValidationException,
)
from keeldb.storage.memory import MemoryLog, MemoryStore


class FakeService:
    """Keeps backups in a dict; loads nothing by itself (tests drive the records)."""

    def __init__(self) -> None:
        self.backups: dict[str, dict[str, Any]] = {}
        self.loads: list[Table] = []

    def restorable_window(self) -> tuple[float, float] | None:
        return (0.0, 1e12)

    def start_load(self, table: Table) -> None:
        self.loads.append(table)

    async def create_backup(self, table: Table, name: str, arn: str, now: float) -> Any:
        self.backups[arn] = {
            "BackupArn": arn,
            "BackupName": name,
            "BackupStatus": "AVAILABLE",
            "BackupType": "USER",
            "BackupCreationDateTime": now,
            "BackupSizeBytes": 0,
            "table": table.to_record(),
        }
        return ops.backup_details(self.backups[arn])

    async def backup(self, arn: str) -> dict[str, Any] | None:
        return self.backups.get(arn)

    async def list_backups(self) -> list[dict[str, Any]]:
        return list(self.backups.values())


def database(service: FakeService | None) -> Database:
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    if service is not None:
        db.state[ops.HOOKS_KEY] = service
    return db


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


TABLE = {
    "TableName": "source",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "g", "AttributeType": "S"},
    ],
    "BillingMode": "PROVISIONED",
    "ProvisionedThroughput": {"ReadCapacityUnits": 3, "WriteCapacityUnits": 4},
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by-g",
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        }
    ],
}


def test_a_restore_request_is_the_source_schema_with_the_overrides_applied() -> None:
    db = database(FakeService())
    run(db.dispatch("CreateTable", TABLE))
    source = catalog.get_table(db, "source")
    same = ops.create_body(source, "copy")
    assert same["BillingMode"] == "PROVISIONED"
    assert same["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]["ReadCapacityUnits"] == 1
    changed = ops.apply_overrides(
        same, {"BillingModeOverride": "PAY_PER_REQUEST", "GlobalSecondaryIndexOverride": []}
    )
    assert changed["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in changed
    assert "GlobalSecondaryIndexes" not in changed
    # The index's attribute is no longer used by any key: CreateTable would refuse it.
    assert changed["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]


def test_a_loading_table_is_creating_until_its_last_record_and_then_holds_its_items() -> None:
    service = FakeService()
    db = database(service)
    run(db.dispatch("CreateTable", TABLE))
    answer = run(
        db.dispatch(
            "UpdateContinuousBackups",
            {
                "TableName": "source",
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        )
    )
    assert (
        answer["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
            "PointInTimeRecoveryStatus"
        ]
        == "ENABLED"
    )
    answer = run(
        db.dispatch(
            "RestoreTableToPointInTime",
            {
                "SourceTableName": "source",
                "TargetTableName": "target",
                "UseLatestRestorableTime": True,
                "BillingModeOverride": "PAY_PER_REQUEST",
            },
        )
    )
    assert answer["TableDescription"]["TableStatus"] == "CREATING"
    assert [t.name for t in service.loads] == ["target"]
    target = service.loads[0]
    items = [({"pk": {"S": f"k{n}"}, "g": {"S": "x"}}, 10) for n in range(7)]
    for batch in ops.load_batches(items, 3):
        run(ops.load_items(db, target, batch))
    assert catalog.get_table(db, "target").status == "CREATING"
    run(ops.finish_load(db, target))
    described = run(db.dispatch("DescribeTable", {"TableName": "target"}))["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert described["ItemCount"] == 7
    assert described["RestoreSummary"]["RestoreInProgress"] is False
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    index = described["GlobalSecondaryIndexes"][0]
    assert (index["IndexName"], index["ItemCount"]) == ("by-g", 7)
    # Loading the same items again (a restore resumed after a crash) changes nothing.
    run(ops.load_items(db, catalog.get_table(db, "target"), [(items[0][0], 10)]))
    again = run(db.dispatch("DescribeTable", {"TableName": "target"}))["Table"]
    assert again["ItemCount"] == 7


def test_backup_arns_and_list_paging_follow_dynamodb() -> None:
    service = FakeService()
    db = database(service)
    run(db.dispatch("CreateTable", TABLE))
    arns = []
    for name in ("one", "two", "three"):
        details = run(db.dispatch("CreateBackup", {"TableName": "source", "BackupName": name}))
        arns.append(details["BackupDetails"]["BackupArn"])
    assert all(
        re.fullmatch(
            r"arn:aws:dynamodb:us-east-1:000000000000:table/source/backup/\d{14}-[0-9a-f]{8}", a
        )
        for a in arns
    )
    first = run(db.dispatch("ListBackups", {"Limit": 2}))
    assert len(first["BackupSummaries"]) == 2
    rest = run(
        db.dispatch(
            "ListBackups", {"Limit": 2, "ExclusiveStartBackupArn": first["LastEvaluatedBackupArn"]}
        )
    )
    assert len(rest["BackupSummaries"]) == 1
    assert "LastEvaluatedBackupArn" not in rest
    listed = [b["BackupArn"] for b in first["BackupSummaries"] + rest["BackupSummaries"]]
    assert sorted(listed) == sorted(arns)
    with pytest.raises(
        ValidationException, match="Member must have value less than or equal to 100"
    ):
        run(db.dispatch("ListBackups", {"Limit": 101}))
    missing = arns[0][:-1] + ("0" if arns[0][-1] != "0" else "1")
    with pytest.raises(BackupNotFoundException, match=re.escape(f"Backup not found: {missing}")):
        run(db.dispatch("DescribeBackup", {"BackupArn": missing}))


def test_recovery_periods_outside_1_to_35_days_are_refused_with_every_violation() -> None:
    db = database(FakeService())
    run(db.dispatch("CreateTable", TABLE))
    for days, bound in ((0, "greater than or equal to 1"), (36, "less than or equal to 35")):
        with pytest.raises(ValidationException, match=bound):
            run(
                db.dispatch(
                    "UpdateContinuousBackups",
                    {
                        "TableName": "source",
                        "PointInTimeRecoverySpecification": {
                            "PointInTimeRecoveryEnabled": True,
                            "RecoveryPeriodInDays": days,
                        },
                    },
                )
            )
    with pytest.raises(ValidationException, match="2 validation errors detected"):
        run(db.dispatch("UpdateContinuousBackups", {}))


def test_without_a_backup_service_every_operation_says_backups_are_unavailable() -> None:
    db = database(None)
    run(db.dispatch("CreateTable", TABLE))
    with pytest.raises(ContinuousBackupsUnavailableException):
        run(db.dispatch("CreateBackup", {"TableName": "source", "BackupName": "nope"}))
