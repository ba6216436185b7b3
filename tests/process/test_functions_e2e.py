"""End to end, with boto3 only: a table with a stream, a function deployed as a zip that
writes aggregates into a second table, a mapping from the stream to the function, writes,
and a kill -9 of the server in the middle of the stream. After the restart every acknowledged
change has been processed at least once and none is lost.

The handler records each change it sees as an item `change#<key>#<version>` (idempotent, so
redeliveries collapse) and adds to a `deliveries` counter and a `sum` aggregate (not
idempotent, so redeliveries show as counts above the number of changes). The handler takes
a little while after its writes, so that the kill is likely to land between an invocation's
writes and its checkpoint: that batch is delivered again after the restart.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

pytestmark = [pytest.mark.process, pytest.mark.slow]

START_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 15.0
DELIVERY_SECONDS_MAX = 120.0  # every change processed after the restart, on a loaded host
KEYS = 20
CHANGES_BEFORE_KILL = 150
CHANGES_AFTER_RESTART = 60
_LISTENING = re.compile(r"KeelDB listening on (http://\S+)")

HANDLER = """
import time
import boto3
ddb = boto3.client("dynamodb")
def handler(event, context):
    total = 0
    for record in event["Records"]:
        change = record["dynamodb"]
        key = change["Keys"]["pk"]["S"]
        version = change["NewImage"]["v"]["N"]
        ddb.put_item(TableName="aggregates",
                     Item={"pk": {"S": f"change#{key}#{version}"},
                           "event": {"S": record["eventName"]}})
        total += int(version)
    ddb.update_item(TableName="aggregates", Key={"pk": {"S": "totals"}},
                    UpdateExpression="ADD deliveries :n, #s :total",
                    ExpressionAttributeNames={"#s": "sum"},
                    ExpressionAttributeValues={":n": {"N": str(len(event["Records"]))},
                                               ":total": {"N": str(total)}})
    time.sleep(0.05)  # the kill is likely to land here: after the writes, before the checkpoint
    return {}
"""


class Server:
    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keeldb",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS_MAX
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode(errors="replace")
            lines.append(line)
            match = _LISTENING.search(line)
            if match:
                threading.Thread(target=self._drain, daemon=True).start()
                return match.group(1)
            if not line and self.process.poll() is not None:
                break
        self.kill()
        raise RuntimeError("server did not start:\n" + "".join(lines) + self.log_path.read_text())

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.write(line)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_SECONDS_MAX)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def clients(url: str) -> tuple[Any, Any]:
    settings = {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "any",
        "aws_secret_access_key": "any",
        "config": Config(retries={"max_attempts": 1}, read_timeout=60, connect_timeout=5),
    }
    return boto3.client("dynamodb", **settings), boto3.client("lambda", **settings)


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def lost_changes(acknowledged: set[tuple[str, int]], processed: set[tuple[str, int]]) -> set:
    """The at-least-once check: acknowledged changes the function never processed."""
    return acknowledged - processed


def processed_changes(ddb: Any) -> tuple[set[tuple[str, int]], int]:
    seen: set[tuple[str, int]] = set()
    deliveries = 0
    args: dict[str, Any] = {"TableName": "aggregates", "ConsistentRead": True}
    while True:
        page = ddb.scan(**args)
        for item in page["Items"]:
            pk = item["pk"]["S"]
            if pk.startswith("change#"):
                _, key, version = pk.split("#")
                seen.add((key, int(version)))
            elif pk == "totals":
                deliveries = int(item["deliveries"]["N"])
        if "LastEvaluatedKey" not in page:
            return seen, deliveries
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def write_changes(
    ddb: Any,
    versions: dict[str, int],
    count: int,
    start: int,
    acknowledged: set[tuple[str, int]],
    stop: threading.Event,
) -> None:
    for i in range(start, start + count):
        if stop.is_set():
            return
        key = f"k{i % KEYS}"
        version = versions.get(key, 0) + 1
        try:
            ddb.put_item(TableName="source", Item={"pk": {"S": key}, "v": {"N": str(version)}})
        except Exception:  # noqa: BLE001 - the server was killed: this write is unacknowledged
            return
        versions[key] = version
        acknowledged.add((key, version))


def test_every_acknowledged_change_is_processed_at_least_once_across_a_kill_9(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir, tmp_path / "server1.log")
    try:
        ddb, lam = clients(server.url)
        ddb.create_table(
            TableName="source",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        ddb.create_table(
            TableName="aggregates",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        stream_arn = ddb.describe_table(TableName="source")["Table"]["LatestStreamArn"]
        lam.create_function(
            FunctionName="aggregate",
            Runtime="python3.12",
            Role="arn:aws:iam::123456789012:role/aggregate",
            Handler="app.handler",
            Timeout=30,
            Code={"ZipFile": zip_of({"app.py": HANDLER})},
        )
        lam.create_event_source_mapping(
            EventSourceArn=stream_arn,
            FunctionName="aggregate",
            StartingPosition="TRIM_HORIZON",
            BatchSize=10,
        )
        acknowledged: set[tuple[str, int]] = set()
        versions: dict[str, int] = {}
        stop = threading.Event()
        writer = threading.Thread(
            target=write_changes,
            args=(ddb, versions, CHANGES_BEFORE_KILL, 0, acknowledged, stop),
        )
        writer.start()
        # Kill once the function has processed some changes and writes are still going on.
        deadline = time.monotonic() + DELIVERY_SECONDS_MAX
        while processed_changes(ddb)[1] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.is_alive() or len(acknowledged) == CHANGES_BEFORE_KILL
        server.kill()
        stop.set()
        writer.join(STOP_SECONDS_MAX)
        before_kill = len(acknowledged)
    finally:
        server.kill()
        server.log.close()

    server = Server(data_dir, tmp_path / "server2.log")
    try:
        ddb, lam = clients(server.url)
        (mapping,) = lam.list_event_source_mappings(FunctionName="aggregate")["EventSourceMappings"]
        assert mapping["State"] == "Enabled"
        write_changes(
            ddb,
            versions,
            CHANGES_AFTER_RESTART,
            CHANGES_BEFORE_KILL,
            acknowledged,
            threading.Event(),
        )
        assert len(acknowledged) == before_kill + CHANGES_AFTER_RESTART
        deadline = time.monotonic() + DELIVERY_SECONDS_MAX
        while True:
            processed, deliveries = processed_changes(ddb)
            if not lost_changes(acknowledged, processed) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert lost_changes(acknowledged, processed) == set()
        # At least once: every processed change was delivered, some perhaps twice.
        assert deliveries >= len(processed)
        totals = ddb.get_item(
            TableName="aggregates", Key={"pk": {"S": "totals"}}, ConsistentRead=True
        )["Item"]
        assert int(totals["sum"]["N"]) >= sum(version for _, version in processed)
    finally:
        server.stop()


def test_the_at_least_once_check_catches_a_lost_change() -> None:
    acknowledged = {("k1", 1), ("k1", 2), ("k2", 1)}
    assert lost_changes(acknowledged, {("k1", 1), ("k1", 2), ("k2", 1), ("k3", 1)}) == set()
    assert lost_changes(acknowledged, {("k1", 1), ("k2", 1)}) == {("k1", 2)}
