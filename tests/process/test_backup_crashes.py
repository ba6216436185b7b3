"""kill -9 during archiving and during a restore, on real `keeldb serve` processes.

Archiving: writers run while the archiver seals, uploads and snapshots every few tens of
milliseconds, and the server is SIGKILLed at random moments, several times. After each kill
the archive's manifest names only whole objects whose SHA-256 matches; at the end a restore
to the latest time holds every acknowledged write, and `keeldb verify` finds the archive, the
log and the store in agreement.

Restore: a restore is SIGKILLed half-way (its table CREATING, part of the items in); after the
restart the restore resumes by itself and the table becomes ACTIVE with exactly the source's
items, no more and no fewer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

pytestmark = pytest.mark.process

START_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 15.0
JOB_SECONDS_MAX = 90.0
LISTENING = re.compile(r"KeelDB listening on (http://\S+)")


class Server:
    """One `keeldb serve` process on a data directory that outlives it."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Any:
        log = self.log_path.open("ab")
        out = self.log_path.with_suffix(".out")
        out.write_text("")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keeldb",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=out.open("wb"),
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            match = LISTENING.search(out.read_text())
            if match:
                self.url = match.group(1)
                return client(self.url)
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_SECONDS_MAX)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_SECONDS_MAX)


def client(url: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30),
    )


def wait_active(ddb: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_SECONDS_MAX
    while time.monotonic() < deadline:
        table: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        time.sleep(0.05)
    raise TimeoutError(f"{name} not ACTIVE")


def wait_backup(ddb: Any, arn: str) -> None:
    deadline = time.monotonic() + JOB_SECONDS_MAX
    while True:
        details = ddb.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]
        if details["BackupStatus"] == "AVAILABLE":
            return
        assert time.monotonic() < deadline, details
        time.sleep(0.05)


def create_table(ddb: Any, name: str) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wait_active(ddb, name)
    ddb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )


def scan(ddb: Any, name: str) -> dict[str, int]:
    found = {}
    for page in ddb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
        for item in page["Items"]:
            found[item["pk"]["S"]] = int(item["v"]["N"])
    return found


def check_manifest(backups: Path) -> int:
    """Every object the archive's manifest names is whole; returns how many it names."""
    manifests = list(backups.rglob("archive/manifest.json"))
    assert len(manifests) == 1
    root = manifests[0].parent.parent
    manifest = json.loads(manifests[0].read_text())
    named = manifest["segments"] + manifest["snapshots"]
    for entry in named:
        data = (root / entry["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["key"]
        assert len(data) == entry["bytes"]
    lsns = [(s["first_lsn"], s["last_lsn"]) for s in manifest["segments"]]
    assert lsns == sorted(lsns)
    return len(named)


def writer(
    ddb: Any, prefix: str, acknowledged: dict[str, int], stop: threading.Event, start: int
) -> None:
    """Put numbers from `start` up until stopped; `acknowledged` keeps each key's last
    acknowledged number. Each cycle starts above every earlier one, so a put still in flight
    at a kill (applied, never acknowledged) never holds a smaller number than an acknowledged
    put of an earlier cycle."""
    number = start
    while not stop.is_set():
        key = f"{prefix}-{number % 40}"
        try:
            ddb.put_item(TableName="arch", Item={"pk": {"S": key}, "v": {"N": str(number)}})
        except Exception:  # noqa: BLE001 - the server was killed mid-request
            return
        acknowledged[key] = number
        number += 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_during_archiving_loses_nothing_and_leaves_nothing_half_visible(
    tmp_path: Path,
) -> None:
    rng = random.Random(int(os.environ.get("KEELDB_CRASH_SEED", "8")))
    env = {
        "KEELDB_ARCHIVE_INTERVAL_SECONDS": "0.05",
        "KEELDB_SNAPSHOT_INTERVAL_SECONDS": "0.3",
        "KEELDB_WAL_SEGMENT_BYTES": "8192",
        "KEELDB_CHECKPOINT_INTERVAL_SECONDS": "0.2",
    }
    server = Server(tmp_path / "data", tmp_path / "server.log", env)
    acknowledged: dict[str, int] = {}
    try:
        ddb = server.start()
        create_table(ddb, "arch")
        for cycle in range(3):
            if cycle:
                ddb = server.start()
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=writer,
                    args=(client(server.url), f"w{n}", acknowledged, stop, cycle * 1_000_000),
                )
                for n in range(3)
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.3, 0.8))
            server.kill()
            stop.set()
            for thread in threads:
                thread.join(STOP_SECONDS_MAX)
            assert check_manifest(tmp_path / "data" / "backups") >= 1
        ddb = server.start()
        time.sleep(1.1)  # past the latest restorable time's lag
        ddb.restore_table_to_point_in_time(
            SourceTableName="arch", TargetTableName="arch-restored", UseLatestRestorableTime=True
        )
        wait_active(ddb, "arch-restored")
        restored = scan(ddb, "arch-restored")
        live = scan(ddb, "arch")
        assert restored == live
        for key, number in acknowledged.items():
            # An acknowledged put is there, or a later put of the same key in flight at a kill.
            assert restored[key] >= number, key
        assert len(acknowledged) > 40
        server.stop()
        assert check_manifest(tmp_path / "data" / "backups") >= 2
        verify = subprocess.run(
            [sys.executable, "-m", "keeldb", "verify", "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "agree" in verify.stdout
    except BaseException:
        print(server.log_path.read_text()[-5000:])
        raise
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_restore_killed_half_way_resumes_after_restart_and_completes_exactly(
    tmp_path: Path,
) -> None:
    env = {"KEELDB_RESTORE_WORKERS": "1", "KEELDB_RESTORE_BATCH_ITEMS": "1"}
    server = Server(tmp_path / "data", tmp_path / "server.log", env)
    try:
        ddb = server.start()
        create_table(ddb, "arch")
        for start in range(0, 600, 25):
            ddb.batch_write_item(
                RequestItems={
                    "arch": [
                        {"PutRequest": {"Item": {"pk": {"S": f"k{n}"}, "v": {"N": str(n)}}}}
                        for n in range(start, start + 25)
                    ]
                }
            )
        expected = scan(ddb, "arch")
        time.sleep(1.1)
        ddb.restore_table_to_point_in_time(
            SourceTableName="arch", TargetTableName="half", UseLatestRestorableTime=True
        )
        deadline = time.monotonic() + JOB_SECONDS_MAX
        while True:
            table = ddb.describe_table(TableName="half")["Table"]
            assert table["TableStatus"] == "CREATING", "the restore ended before the kill"
            if table["ItemCount"] > 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.kill()
        ddb = server.start()
        table = ddb.describe_table(TableName="half")["Table"]
        assert table["TableStatus"] in ("CREATING", "ACTIVE")
        table = wait_active(ddb, "half")
        assert table["ItemCount"] == 600
        assert table["RestoreSummary"]["RestoreInProgress"] is False
        assert scan(ddb, "half") == expected

        # A backup whose parts a stop prevented is completed at the next start, as of its
        # creation time (rebuilt from the archive), not from the table as it is by then.
        arn = ddb.create_backup(TableName="arch", BackupName="interrupted")["BackupDetails"][
            "BackupArn"
        ]
        wait_backup(ddb, arn)
        ddb.put_item(TableName="arch", Item={"pk": {"S": "after-the-backup"}, "v": {"N": "0"}})
        server.stop()
        descriptor = next((tmp_path / "data" / "backups").rglob("backup.json"))
        interrupted = json.loads(descriptor.read_text())
        for part in interrupted["parts"]:
            (descriptor.parent / Path(part["key"]).name).unlink()
        interrupted.update(BackupStatus="CREATING", parts=[])
        descriptor.write_text(json.dumps(interrupted))
        ddb = server.start()
        wait_backup(ddb, arn)
        ddb.restore_table_from_backup(TargetTableName="from-interrupted", BackupArn=arn)
        wait_active(ddb, "from-interrupted")
        assert scan(ddb, "from-interrupted") == expected
    except BaseException:
        print(server.log_path.read_text()[-5000:])
        raise
    finally:
        server.stop()
