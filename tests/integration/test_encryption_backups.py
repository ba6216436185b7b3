"""Backups of an encrypted node through boto3: on-demand backup and restore, point-in-time
restore, and no plaintext of a marker value in the data directory or the backup store."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "MARKER-b4c6-0ff5-ite-encrypted-backups"
ITEMS = 25
WAIT_SECONDS_MAX = 60.0  # backups and restores of a few items finish in a second or two
FAST_ARCHIVE = {
    "KEELDB_ARCHIVE_INTERVAL_SECONDS": "0.3",
    "KEELDB_SNAPSHOT_INTERVAL_SECONDS": "1",
}


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS_MAX
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done in {WAIT_SECONDS_MAX} s")
        time.sleep(0.2)


def files_with(marker: bytes, *roots: Path) -> list[str]:
    return [
        str(p)
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and marker in p.read_bytes()
    ]


def table_items(ddb: Any, name: str) -> list[tuple[str, str]]:
    items = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
    return sorted((item["pk"]["S"], item["s"]["S"]) for item in items)


def test_backups_and_restores_of_an_encrypted_node_hold_no_plaintext(
    tmp_path: Path,
    server_factory: Callable[..., Any],
    client_factory: Callable[..., Any],
    monkeypatch: Any,
) -> None:
    for name, value in FAST_ARCHIVE.items():
        monkeypatch.setenv(name, value)
    key = tmp_path / "keys" / "master.key"
    key.parent.mkdir()
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    data, backups = tmp_path / "data", tmp_path / "backups"
    server = server_factory(
        "--master-key-file", str(key), "--backup-dir", str(backups), data_dir=data
    )
    ddb = client_factory(server.url)
    ddb.create_table(
        TableName="vault",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_continuous_backups(
        TableName="vault",
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    for n in range(ITEMS):
        ddb.put_item(TableName="vault", Item={"pk": {"S": f"k{n:02d}"}, "s": {"S": MARKER}})
    expected = table_items(ddb, "vault")
    assert len(expected) == ITEMS

    arn = ddb.create_backup(TableName="vault", BackupName="vault-backup")["BackupDetails"][
        "BackupArn"
    ]

    def backup_available() -> bool:
        description = ddb.describe_backup(BackupArn=arn)["BackupDescription"]
        return bool(description["BackupDetails"]["BackupStatus"] == "AVAILABLE")

    wait_for("the backup", backup_available)

    def restored(name: str) -> Callable[[], bool]:
        return lambda: ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"

    ddb.restore_table_from_backup(TargetTableName="from-backup", BackupArn=arn)
    wait_for("the restore from the backup", restored("from-backup"))
    assert table_items(ddb, "from-backup") == expected

    time.sleep(1.5)  # the archive catches up with the last write
    ddb.restore_table_to_point_in_time(
        SourceTableName="vault", TargetTableName="at-latest", UseLatestRestorableTime=True
    )
    wait_for("the point-in-time restore", restored("at-latest"))
    assert table_items(ddb, "at-latest") == expected

    assert server.stop() == 0
    assert list(backups.rglob("*")), "the backup store is empty"
    assert files_with(MARKER.encode(), data, backups) == []
    # The keyring travels with the archive: without it, the archive could not be read.
    keyring = (data / "keyring" / "keyring.json").read_bytes()
    assert any(p.read_bytes() == keyring for p in backups.rglob("*") if p.is_file())
