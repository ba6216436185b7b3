"""Backups restored onto a cluster of another shape, through boto3 against real processes: a
single node's backup (three hash-range parts) onto a 3-node cluster of four partitions, and
that cluster's backup (four parts) onto a cluster of two. Every item must be there once, found
by GetItem, by a Query of its partition key and by a Query of the global index; a restore that
loads each source part as it is, through one partition (the deliberately broken variant, on
tables named "broken-..."), is caught by the same check.

The single node, both clusters and the restores share one backup store (`--backup-dir`), so
each finds the other's backup by its ARN.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from keeldb.cluster import topology
from keeldb.cluster.backup_route import RESTORE_AS_IS_FAULT_ENV

pytestmark = [pytest.mark.process, pytest.mark.slow]

JOB_SECONDS_MAX = 120.0  # a restore of a hundred items takes seconds, even on a loaded host
START_SECONDS_MAX = 90.0
BROKEN = "broken-"  # target tables loaded by the broken variant
ITEMS = 96
USERS = 12  # partition key values: 8 items each, spread over every hash range
GROUPS = 4  # values of the global index's partition key
RETRIED = (
    "InternalServerError",
    "ContinuousBackupsUnavailableException",
    "ResourceNotFoundException",
)


def _client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDREPARTITION",
        aws_secret_access_key="repartition-secret",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30),
    )


def _wait(check: Callable[[], Any], what: str, seconds: float = JOB_SECONDS_MAX) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ClientError as error:
            last = error.response["Error"]
            if last["Code"] not in RETRIED:
                raise
        except BotoCoreError as error:  # still starting: connection refused
            last = repr(error)
        else:
            if last:
                return last
        time.sleep(0.1)
    raise TimeoutError(f"{what} not done in {seconds} s (last: {last})")


def _active(client: Any, name: str) -> None:
    def check() -> bool:
        return bool(client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE")

    _wait(check, f"table {name}")
    # A router of a cluster that has just started may not know the new table for a moment
    # after its metadata group made it ACTIVE (ResourceNotFoundException, retried by _wait).
    _wait(lambda: "Items" in client.scan(TableName=name, Limit=1), f"a scan of {name}")


def _expected() -> dict[tuple[str, str], dict[str, Any]]:
    items = {}
    for number in range(ITEMS):
        item = {
            "pk": {"S": f"user{number % USERS}"},
            "sk": {"N": str(number)},
            "g": {"S": f"group{number % GROUPS}"},
            "body": {"S": f"item {number}"},
        }
        items[(item["pk"]["S"], item["sk"]["N"])] = item
    return items


def _create_and_fill(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-group",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    _active(client, name)
    for item in _expected().values():
        client.put_item(TableName=name, Item=item)


def _backup(client: Any, table: str) -> str:
    arn: str = client.create_backup(TableName=table, BackupName=f"{table}-copy")["BackupDetails"][
        "BackupArn"
    ]

    def available() -> bool:
        details = client.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]
        return bool(details["BackupStatus"] == "AVAILABLE")

    _wait(available, f"backup {arn}")
    return arn


def _restore(client: Any, arn: str, target: str) -> None:
    _wait(
        lambda: client.restore_table_from_backup(TargetTableName=target, BackupArn=arn),
        f"the restore into {target} to start",
    )
    _active(client, target)


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["N"]


def _pages(client: Any, operation: str, **request: Any) -> list[dict[str, Any]]:
    items = []
    for page in client.get_paginator(operation).paginate(**request):
        items.extend(page["Items"])
    return items


def problems(client: Any, table: str) -> list[str]:
    """What a restored table gets wrong: every item must be found once by a Scan, by GetItem,
    by a Query of its partition key and by a Query of the global index."""
    expected = _expected()
    found: list[str] = []
    scanned = _pages(client, "scan", TableName=table, ConsistentRead=True)
    keys = [_key(item) for item in scanned]
    if sorted(keys) != sorted(expected):
        missing = len(set(expected) - set(keys))
        found.append(
            f"scan: {len(keys)} items, {missing} missing, {len(keys) - len(set(keys))} twice"
        )
    for key, item in expected.items():
        got = client.get_item(
            TableName=table,
            Key={"pk": item["pk"], "sk": item["sk"]},
            ConsistentRead=True,
        ).get("Item")
        if got != item:
            found.append(f"get {key}: {got}")
    for user in range(USERS):
        value = f"user{user}"
        got_keys = sorted(
            _key(i)
            for i in _pages(
                client,
                "query",
                TableName=table,
                KeyConditionExpression="pk = :v",
                ExpressionAttributeValues={":v": {"S": value}},
                ConsistentRead=True,
            )
        )
        if got_keys != sorted(k for k in expected if k[0] == value):
            found.append(f"query {value}: {len(got_keys)} items")
    for group in range(GROUPS):
        value = f"group{group}"
        got_keys = sorted(
            _key(i)
            for i in _pages(
                client,
                "query",
                TableName=table,
                IndexName="by-group",
                KeyConditionExpression="g = :v",
                ExpressionAttributeValues={":v": {"S": value}},
            )
        )
        if got_keys != sorted(k for k, i in expected.items() if i["g"]["S"] == value):
            found.append(f"index query {value}: {len(got_keys)} items")
    return found


# --- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


class ClusterUp:
    """`keeldb cluster up` / `down` on a data directory."""

    def __init__(self, data_dir: Path, partitions: int, backup_dir: Path) -> None:
        self.data_dir = data_dir
        up = subprocess.run(
            [sys.executable, "-m", "keeldb", "cluster", "up", "--nodes", "3"]
            + ["--partitions", str(partitions), "--data-dir", str(data_dir)]
            + ["--backup-dir", str(backup_dir)],
            env=_environment(**{RESTORE_AS_IS_FAULT_ENV: BROKEN}),
            capture_output=True,
            text=True,
            timeout=START_SECONDS_MAX,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        spec = topology.load(data_dir / topology.CLUSTER_FILE_NAME)
        assert spec.partitions == partitions
        self.client = _client(spec.nodes[0].endpoint)

    def down(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "keeldb", "cluster", "down", "--data-dir", str(self.data_dir)],
            capture_output=True,
            timeout=START_SECONDS_MAX,
            check=False,
        )


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Callable[[int, Path], ClusterUp]]:
    started: list[ClusterUp] = []

    def up(partitions: int, backup_dir: Path) -> ClusterUp:
        cluster = ClusterUp(tmp_path / f"cluster{len(started)}", partitions, backup_dir)
        started.append(cluster)
        return cluster

    try:
        yield up
    finally:
        for cluster in started:
            cluster.down()


def _single_node_backup(
    tmp_path: Path, backup_dir: Path, name: str = "single", options: tuple[str, ...] = ()
) -> str:
    """A single node's backup of the table "source", in three hash-range parts."""
    port = _free_port()
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "keeldb", "serve", "--host", "127.0.0.1", "--port", str(port)]
        + ["--data-dir", str(tmp_path / name), "--backup-dir", str(backup_dir), *options],
        env=_environment(KEELDB_RESTORE_WORKERS="3"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        client = _client(f"http://127.0.0.1:{port}")
        _wait(lambda: client.list_tables() is not None, "the single node", START_SECONDS_MAX)
        _create_and_fill(client, "source")
        arn = _backup(client, "source")
        parts = json.loads(next(backup_dir.glob("nodes/*/backups/*/backup.json")).read_text())
        assert len(parts["parts"]) == 3  # not the four ranges of the cluster below
        return arn
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_backups_restore_onto_clusters_of_other_partition_counts(
    tmp_path: Path, clusters: Callable[[int, Path], ClusterUp]
) -> None:
    backup_dir = tmp_path / "backups"
    single_arn = _single_node_backup(tmp_path, backup_dir)

    four = clusters(4, backup_dir)
    _restore(four.client, single_arn, "restored")
    assert problems(four.client, "restored") == []
    _restore(four.client, single_arn, BROKEN + "restored")
    assert problems(four.client, BROKEN + "restored") != []  # the check catches it

    # An encrypted node's parts are sealed with keys a cluster does not hold: the restore
    # fails and its table is removed, never left with part of its items.
    key = tmp_path / "master.key"
    key.write_text("ab" * 32)
    sealed_arn = _single_node_backup(
        tmp_path, backup_dir, "encrypted", ("--master-key-file", str(key))
    )
    four.client.restore_table_from_backup(TargetTableName="sealed", BackupArn=sealed_arn)

    def removed() -> bool:
        try:
            four.client.describe_table(TableName="sealed")
        except ClientError as error:
            return bool(error.response["Error"]["Code"] == "ResourceNotFoundException")
        return False

    _wait(removed, "the removal of the table whose restore failed")

    # The cluster's own backup has one part per partition: four, restored onto two.
    four_arn = _backup(four.client, "restored")
    two = clusters(2, backup_dir)
    _restore(two.client, four_arn, "again")
    assert problems(two.client, "again") == []
    _restore(two.client, four_arn, BROKEN + "again")
    assert problems(two.client, BROKEN + "again") != []
    # The restored table takes writes and reads like any other.
    two.client.put_item(TableName="again", Item={"pk": {"S": "new"}, "sk": {"N": "1"}})
    assert two.client.get_item(
        TableName="again", Key={"pk": {"S": "new"}, "sk": {"N": "1"}}, ConsistentRead=True
    )["Item"]["pk"] == {"S": "new"}


def test_a_repartitioning_restore_whose_metadata_leader_is_killed_ends_whole_or_not_at_all(
    tmp_path: Path, cluster_factory: Callable[..., Any]
) -> None:
    cluster = cluster_factory(nodes=3, partitions=4)
    arn = _single_node_backup(tmp_path, cluster.data_dir / "backups")
    leader = cluster.leader_of("meta")
    survivor = _client(cluster.endpoint(next(n for n in cluster.node_ids if n != leader)))
    _client(cluster.endpoint(leader)).restore_table_from_backup(
        TargetTableName="restored", BackupArn=arn
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

    deadline = time.monotonic() + JOB_SECONDS_MAX
    outcome = None
    while outcome is None and time.monotonic() < deadline:
        try:
            outcome = settled()
        except (ClientError, BotoCoreError):  # InternalServerError while leaders change
            outcome = None
        time.sleep(0.2)
    assert outcome in ("active", "removed"), outcome
    if outcome == "active":
        _active(survivor, "restored")
        assert problems(survivor, "restored") == []
