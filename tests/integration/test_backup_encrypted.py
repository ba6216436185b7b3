"""Backups compose with encryption at rest: point-in-time restore, backup / delete / restore
and `keeldb verify` work on an encrypted node, and no plaintext of an item's value reaches the
archive or a backup."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "plaintext-marker-5d1c8e0b"
ACTIVE_SECONDS_MAX = 60.0


def wait_active(ddb: Any, name: str) -> None:
    deadline = time.monotonic() + ACTIVE_SECONDS_MAX
    while ddb.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, f"{name} not ACTIVE"
        time.sleep(0.05)


def items(ddb: Any, name: str) -> dict[str, Any]:
    return {i["pk"]["S"]: i for i in ddb.scan(TableName=name, ConsistentRead=True)["Items"]}


def test_restores_backups_and_verify_work_encrypted_and_leak_no_plaintext(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Path
) -> None:
    key = tmp_path / "master.key"
    key.write_text("ab" * 32)
    data_dir = tmp_path / "data"
    server = server_factory("--master-key-file", str(key), data_dir=data_dir)
    ddb = client_factory(server.url)
    ddb.create_table(
        TableName="secret",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wait_active(ddb, "secret")
    ddb.update_continuous_backups(
        TableName="secret", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    for number in range(40):
        ddb.put_item(
            TableName="secret",
            Item={"pk": {"S": f"k{number}"}, "note": {"S": f"{MARKER} {number}"}},
        )
    expected = items(ddb, "secret")
    time.sleep(1.1)
    ddb.restore_table_to_point_in_time(
        SourceTableName="secret", TargetTableName="secret-pitr", UseLatestRestorableTime=True
    )
    wait_active(ddb, "secret-pitr")
    assert items(ddb, "secret-pitr") == expected
    arn = ddb.create_backup(TableName="secret", BackupName="enc")["BackupDetails"]["BackupArn"]
    deadline = time.monotonic() + ACTIVE_SECONDS_MAX
    while (
        ddb.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]["BackupStatus"]
        != "AVAILABLE"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ddb.delete_table(TableName="secret")
    ddb.get_waiter("table_not_exists").wait(TableName="secret", WaiterConfig={"Delay": 0.1})
    ddb.restore_table_from_backup(TargetTableName="secret", BackupArn=arn)
    wait_active(ddb, "secret")
    assert items(ddb, "secret") == expected
    server.stop()

    backups = data_dir / "backups"
    archived = [p for p in backups.rglob("*") if p.is_file()]
    assert any("/archive/wal/" in str(p) for p in archived)
    assert any("/backups/" in str(p.relative_to(backups)) for p in archived)
    for path in archived:
        assert MARKER.encode() not in path.read_bytes(), path

    verify = [sys.executable, "-m", "keeldb", "verify", "--data-dir", str(data_dir)]
    checked = subprocess.run(
        [*verify, "--master-key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "agree" in checked.stdout
    refused = subprocess.run(verify, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2
    assert "encrypted at rest" in refused.stderr

    # One flipped bit in an archived segment: refused, and named.
    segment = max(backups.rglob("archive/wal/*.wal"))
    damaged = bytearray(segment.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    segment.write_bytes(bytes(damaged))
    corrupt = subprocess.run(
        [*verify, "--master-key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert corrupt.returncode == 1, corrupt.stdout + corrupt.stderr
    assert "the archive is damaged" in corrupt.stderr
    assert f"{segment.name} is damaged" in corrupt.stderr
