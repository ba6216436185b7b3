"""`keeldb cluster up / status / down` as a newcomer runs them, on real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

COMMAND_SECONDS_MAX = 90


def keeldb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeldb", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS_MAX,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "cluster"
    try:
        yield directory
    finally:
        keeldb("cluster", "down", "--data-dir", str(directory))


def test_up_status_and_down_run_a_local_cluster(data_dir: Path) -> None:
    up = keeldb("cluster", "up", "--nodes", "3", "--partitions", "2", "--data-dir", str(data_dir))
    assert up.returncode == 0, up.stderr
    assert "endpoints: http://127.0.0.1:" in up.stdout
    endpoints = up.stdout.split("endpoints: ", 1)[1].split()
    assert len(endpoints) == 3
    assert (data_dir / "cluster.json").is_file()
    assert oct((data_dir / "secret").stat().st_mode & 0o777) == "0o600"

    client: Any = boto3.client(
        "dynamodb",
        endpoint_url=endpoints[0],
        region_name="us-east-1",
        aws_access_key_id="AKIDCLI",
        aws_secret_access_key="cli-secret",
    )
    client.create_table(
        TableName="visits",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    again = keeldb("cluster", "up", "--nodes", "3", "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "already running" in again.stderr

    status = keeldb("cluster", "status", "--data-dir", str(data_dir), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    nodes = report["nodes"]
    assert [n["id"] for n in nodes] == [1, 2, 3]
    assert {n["zone"] for n in nodes} == {"zone-a", "zone-b", "zone-c"}
    assert all(n["up"] for n in nodes)
    assert [n["endpoint"] for n in nodes] == endpoints
    pids = [n["pid"] for n in nodes]
    assert all(_alive(pid) for pid in pids)
    partitions = report["partitions"]
    assert [p["table"] for p in partitions] == ["visits", "visits"]
    for partition in partitions:
        assert partition["leader"] in (1, 2, 3)
        assert sorted(partition["replicas"]) == [1, 2, 3]

    table = keeldb("cluster", "status", "--data-dir", str(data_dir))
    assert table.returncode == 0, table.stderr
    assert "zone-a" in table.stdout
    assert "p1" in table.stdout

    down = keeldb("cluster", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped 3 nodes" in down.stdout
    assert not any(_alive(pid) for pid in pids)
    after = json.loads(keeldb("cluster", "status", "--data-dir", str(data_dir), "--json").stdout)
    assert not any(n["up"] for n in after["nodes"])


def test_a_node_with_a_node_id_outside_the_cluster_file_refuses_to_start(tmp_path: Path) -> None:
    spec = {
        "profile": "standard",
        "partitions": 1,
        "nodes": [{"id": 1, "zone": "a", "api_port": 1, "peer_port": 2}],
    }
    (tmp_path / "cluster.json").write_text(json.dumps(spec))
    serve = keeldb(
        "serve",
        "--cluster-config",
        str(tmp_path / "cluster.json"),
        "--node-id",
        "7",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert serve.returncode == 2
    assert "node 7 is not in the cluster file" in serve.stderr


def test_down_without_a_cluster_says_so(tmp_path: Path) -> None:
    down = keeldb("cluster", "down", "--data-dir", str(tmp_path / "none"))
    assert down.returncode == 0
    assert "no cluster nodes running" in down.stdout


def test_a_router_node_holds_no_replica_and_serves_the_whole_api(cluster_factory: Any) -> None:
    cluster = cluster_factory(nodes=4, partitions=2, roles={4: "router"})
    router = cluster.client(4)
    router.create_table(
        TableName="routed",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(20):
        router.put_item(TableName="routed", Item={"pk": {"S": f"k{i}"}})
    scanned = router.scan(TableName="routed", ConsistentRead=True)
    assert scanned["Count"] == 20
    report = cluster.status(4)
    assert report["groups"]["p0"] == [1, 2, 3]
    assert not (cluster.data_dir / "nodes" / "n4" / "data" / "groups").exists()
