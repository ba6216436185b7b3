"""Exports and imports through boto3: a table exported by one server in DynamoDB's export
layout is imported by another server sharing the backup directory; and the whole backup path
against a real S3-compatible server (moto's server mode) started by the test."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

JOB_SECONDS_MAX = 60.0
S3_START_SECONDS_MAX = 30.0

KEYS = {
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
    ],
}


def wait_for(fetch: Callable[[], dict[str, Any]], member: str, busy: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_SECONDS_MAX
    while time.monotonic() < deadline:
        found = fetch()
        if found[member] != busy:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"still {busy} after {JOB_SECONDS_MAX} s")


def fill(client: Any, name: str, count: int) -> dict[tuple[str, int], dict[str, Any]]:
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **KEYS)
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.1})
    for number in range(count):
        client.put_item(
            TableName=name,
            Item={
                "pk": {"S": f"p{number % 9}"},
                "sk": {"N": str(number)},
                "bin": {"B": bytes([number % 256, 0])},
                "nested": {"M": {"l": {"L": [{"N": "1.5"}, {"NULL": True}]}}},
                "set": {"SS": ["a", f"s{number}"]},
            },
        )
    return scan(client, name)


def scan(client: Any, name: str) -> dict[tuple[str, int], dict[str, Any]]:
    found = {}
    for page in client.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
        for item in page["Items"]:
            found[(item["pk"]["S"], int(item["sk"]["N"]))] = item
    return found


def export_and_wait(client: Any, name: str, bucket: str, prefix: str) -> dict[str, Any]:
    client.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    time.sleep(1.1)  # the export time defaults to the latest restorable time
    arn = client.describe_table(TableName=name)["Table"]["TableArn"]
    started = client.export_table_to_point_in_time(TableArn=arn, S3Bucket=bucket, S3Prefix=prefix)
    export_arn = started["ExportDescription"]["ExportArn"]
    assert started["ExportDescription"]["ExportStatus"] == "IN_PROGRESS"
    assert export_arn.startswith(f"{arn}/export/")
    return wait_for(
        lambda: client.describe_export(ExportArn=export_arn)["ExportDescription"],
        "ExportStatus",
        "IN_PROGRESS",
    )


def import_and_wait(client: Any, name: str, bucket: str, prefix: str) -> dict[str, Any]:
    started = client.import_table(
        S3BucketSource={"S3Bucket": bucket, "S3KeyPrefix": prefix},
        InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP",
        TableCreationParameters={"TableName": name, "BillingMode": "PAY_PER_REQUEST", **KEYS},
    )["ImportTableDescription"]
    assert started["ImportStatus"] == "IN_PROGRESS"
    return wait_for(
        lambda: client.describe_import(ImportArn=started["ImportArn"])["ImportTableDescription"],
        "ImportStatus",
        "IN_PROGRESS",
    )


def test_a_table_exported_by_one_server_is_imported_by_another(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Path
) -> None:
    shared = tmp_path / "shared-backups"
    first = client_factory(server_factory("--backup-dir", str(shared)).url)
    second = client_factory(server_factory("--backup-dir", str(shared)).url)
    expected = fill(first, "exported", 150)
    export = export_and_wait(first, "exported", "transfer", "tables/v1")
    assert export["ExportStatus"] == "COMPLETED", export
    assert export["ItemCount"] == 150
    export_id = export["ExportArn"].rsplit("/", 1)[1]
    root = shared / "s3" / "transfer" / "tables" / "v1" / "AWSDynamoDB" / export_id
    assert export["ExportManifest"] == f"tables/v1/AWSDynamoDB/{export_id}/manifest-summary.json"
    summary = json.loads((root / "manifest-summary.json").read_text())
    assert summary["itemCount"] == 150
    assert summary["outputFormat"] == "DYNAMODB_JSON"
    files = [json.loads(line) for line in (root / "manifest-files.json").read_text().splitlines()]
    assert sum(f["itemCount"] for f in files) == 150
    lines = []
    for entry in files:
        data = (shared / "s3" / "transfer" / entry["dataFileS3Key"]).read_bytes()
        lines += [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    assert len(lines) == 150 and all(set(line) == {"Item"} for line in lines)
    assert [e["ExportArn"] for e in first.list_exports()["ExportSummaries"]] == [
        export["ExportArn"]
    ]

    done = import_and_wait(second, "imported", "transfer", f"tables/v1/AWSDynamoDB/{export_id}/")
    assert done["ImportStatus"] == "COMPLETED", done
    assert (done["ImportedItemCount"], done["ErrorCount"]) == (150, 0)
    assert second.describe_table(TableName="imported")["Table"]["TableStatus"] == "ACTIVE"
    assert scan(second, "imported") == expected
    listed = second.list_imports()["ImportSummaryList"]
    assert [i["ImportArn"] for i in listed] == [done["ImportArn"]]
    with pytest.raises(ClientError) as caught:
        import_and_wait(second, "imported", "transfer", "tables/")
    assert caught.value.response["Error"]["Code"] == "ResourceInUseException"
    # ClientToken: the same request again answers with the same job; another one conflicts.
    again = first.export_table_to_point_in_time(
        TableArn=export["TableArn"],
        S3Bucket="transfer",
        S3Prefix="tables/v1",
        ClientToken=export["ClientToken"],
    )["ExportDescription"]
    assert again["ExportArn"] == export["ExportArn"]
    with pytest.raises(ClientError) as caught:
        first.export_table_to_point_in_time(
            TableArn=export["TableArn"], S3Bucket="elsewhere", ClientToken=export["ClientToken"]
        )
    assert caught.value.response["Error"]["Code"] == "ExportConflictException"
    request = {
        "S3BucketSource": done["S3BucketSource"],
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "TableCreationParameters": done["TableCreationParameters"],
        "ClientToken": done["ClientToken"],
    }
    assert (
        second.import_table(**request)["ImportTableDescription"]["ImportArn"] == done["ImportArn"]
    )
    request["InputCompressionType"] = "NONE"
    with pytest.raises(ClientError) as caught:
        second.import_table(**request)
    assert caught.value.response["Error"]["Code"] == "ImportConflictException"
    with pytest.raises(ClientError) as caught:
        second.describe_export(ExportArn=export["ExportArn"] + "0")
    assert caught.value.response["Error"]["Code"] == "ExportNotFoundException"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, stopped by its PID after the test."""
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + S3_START_SECONDS_MAX
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def test_the_archive_backups_and_exports_live_in_an_s3_compatible_server(
    s3_endpoint: str,
    server_factory: Callable[..., Any],
    client_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="keeldb-archive")
    s3.create_bucket(Bucket="keeldb-exports")
    server = server_factory(
        "--backup-s3", "s3://keeldb-archive/prod", "--backup-s3-endpoint", s3_endpoint
    )
    client = client_factory(server.url)
    expected = fill(client, "on-s3", 80)
    export = export_and_wait(client, "on-s3", "keeldb-exports", "")
    assert export["ExportStatus"] == "COMPLETED", export
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="keeldb-exports")["Contents"]]
    export_id = export["ExportArn"].rsplit("/", 1)[1]
    assert f"AWSDynamoDB/{export_id}/manifest-summary.json" in keys
    assert any(k.startswith(f"AWSDynamoDB/{export_id}/data/") for k in keys)
    archived = [o["Key"] for o in s3.list_objects_v2(Bucket="keeldb-archive")["Contents"]]
    assert any(
        k.startswith("prod/nodes/") and k.endswith("/archive/manifest.json") for k in archived
    )
    assert any("/archive/wal/" in k for k in archived)
    assert any("/archive/snapshots/" in k for k in archived)

    client.restore_table_to_point_in_time(
        SourceTableName="on-s3", TargetTableName="on-s3-restored", UseLatestRestorableTime=True
    )
    details = client.create_backup(TableName="on-s3", BackupName="s3-backup")["BackupDetails"]
    wait_for(
        lambda: client.describe_table(TableName="on-s3-restored")["Table"],
        "TableStatus",
        "CREATING",
    )
    assert scan(client, "on-s3-restored") == expected
    wait_for(
        lambda: client.describe_backup(BackupArn=details["BackupArn"])["BackupDescription"][
            "BackupDetails"
        ],
        "BackupStatus",
        "CREATING",
    )
    client.restore_table_from_backup(TargetTableName="from-backup", BackupArn=details["BackupArn"])
    wait_for(
        lambda: client.describe_table(TableName="from-backup")["Table"], "TableStatus", "CREATING"
    )
    assert scan(client, "from-backup") == expected
    imported = import_and_wait(client, "re-imported", "keeldb-exports", f"AWSDynamoDB/{export_id}/")
    assert imported["ImportedItemCount"] == 80
    assert scan(client, "re-imported") == expected
    assert os.environ["AWS_ACCESS_KEY_ID"] == "moto"
