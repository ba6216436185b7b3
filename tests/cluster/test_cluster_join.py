"""Joining a running cluster: `keeldb cluster add-node` starts a node with `serve --join`;
the metadata group records it, `cluster status` lists it, and it takes over the replicas of
a node of its zone that stays down. (`keeldb cluster retire` is tested in
test_cluster_repair.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from keeldb.cluster import cli as cluster_cli
from keeldb.cluster.membership_service import JOIN_PATH, MembershipError, post_signed
from keeldb.cluster.placement import place

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(240)]

REPLACE_AFTER_SECONDS = 2.0
WAIT_SECONDS_MAX = 40.0
ITEMS = 10


def _keeldb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeldb", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **(env or {})),
    )


def _status(data_dir: Path) -> dict[str, Any]:
    done = _keeldb("cluster", "status", "--data-dir", str(data_dir), "--json")
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _replicas(status: dict[str, Any], group: str) -> dict[int, str]:
    entry = next(g for g in status["groups"] if g["group"] == group)
    return {r["node"]: r["state"] for r in entry["replicas"]}


def _http_replicas(endpoint: str, group: str) -> dict[int, str]:
    """A group's members and each one's own report of its state, as a node sees them."""
    with urllib.request.urlopen(endpoint + "/keeldb/cluster/status", timeout=5) as response:
        report = json.loads(response.read())
    out = {}
    for node in report["groups"][group]:
        view = report["views"].get(str(node), {})
        mine = view.get("groups", {}).get(group) if isinstance(view, dict) else None
        out[int(node)] = "down" if mine is None else mine["state"]
    return out


def _client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDJOINTEST",
        aws_secret_access_key="join-test-secret",
        config=Config(retries={"max_attempts": 1}, read_timeout=12),
    )


def _stop_recorded(data_dir: Path, node_id: int) -> None:
    cluster_cli.stop_node(data_dir, node_id)
    pid = cluster_cli._recorded_pids(data_dir).get(node_id)
    deadline = time.monotonic() + 15
    while pid is not None and cluster_cli._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid is not None and cluster_cli._alive(pid):
        cluster_cli.stop_node(data_dir, node_id, 9)


def _refused_joins(cluster: Any) -> None:
    """A join not signed with the cluster secret, or with a taken id, changes nothing."""
    node = {"id": 9, "zone": "zone-a", "host": "127.0.0.1", "api_port": 1, "peer_port": 2}
    with pytest.raises(MembershipError, match="not signed with the cluster secret"):
        post_signed(cluster.endpoint(1), JOIN_PATH, b"0" * 64, {"node": node})
    secret = (Path(cluster.data_dir) / "secret").read_text().strip().encode()
    with pytest.raises(MembershipError, match="node id 2 is taken"):
        post_signed(cluster.endpoint(1), JOIN_PATH, secret, {"node": dict(node, id=2)})
    assert [n["id"] for n in cluster.status(1)["nodes"]] == [1, 2, 3]


def test_an_added_node_joins_appears_in_status_and_takes_over_a_dead_nodes_replicas(
    cluster_factory: Any, chaos: Any
) -> None:
    env = {"KEELDB_REPLACE_AFTER_SECONDS": str(REPLACE_AFTER_SECONDS)}
    cluster = cluster_factory(nodes=3, profile="standard", partitions=1, env=env)
    data_dir = Path(cluster.data_dir)
    _refused_joins(cluster)
    client = cluster.client(1)
    chaos.create_table(client)
    for i in range(ITEMS):
        client.put_item(TableName=chaos.TABLE, Item={"pk": {"S": f"before-{i}"}})
    added = _keeldb("cluster", "add-node", "--data-dir", str(data_dir), env=env)
    try:
        assert added.returncode == 0, added.stderr
        assert "node 4 (zone-a) joined" in added.stdout
        status = _status(data_dir)
        nodes = {n["id"]: n for n in status["nodes"]}
        assert nodes[4]["up"] and nodes[4]["zone"] == "zone-a"
        assert all("state" in r for g in status["groups"] for r in g["replicas"])
        # A fresh node holds no replica until one is moved to it.
        assert all(4 not in _replicas(status, g["group"]) for g in status["groups"])
        # Its endpoint serves the whole API at once.
        item = cluster_cli._post(nodes[4]["endpoint"], "ListTables", {}, timeout=5.0)
        assert chaos.TABLE in item["TableNames"]

        # Node 1 (zone-a) stays down: its replicas move to the new zone-a node.
        moved = sorted(g for g, p in place(cluster.spec).items() if 1 in p.node_ids)
        cluster.kill(1)
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while True:
            states = {g: _http_replicas(cluster.endpoint(3), g) for g in moved}
            if all(s.get(4) == "full" and 1 not in s for s in states.values()):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.3)
        survivor = cluster.client(2)
        for i in range(ITEMS):
            item = survivor.get_item(
                TableName=chaos.TABLE, Key={"pk": {"S": f"before-{i}"}}, ConsistentRead=True
            ).get("Item")
            assert item is not None
        # Node 2 fails too: the groups node 1 was in keep a write quorum only because the
        # node that joined holds full replicas of them.
        cluster.kill(2)
        joined = _client(nodes[4]["endpoint"])
        # A write sent while the group elects a new leader (node 2 may have led it) can end
        # with an unknown outcome (InternalServerError); the put is idempotent, so it is
        # sent again until the new leader answers.
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while True:
            try:
                joined.put_item(TableName=chaos.TABLE, Item={"pk": {"S": "after"}})
                break
            except joined.exceptions.InternalServerError:
                assert time.monotonic() < deadline, "no leader took over after node 2 died"
                time.sleep(0.3)
        for key in ["after", *(f"before-{i}" for i in range(ITEMS))]:
            item = joined.get_item(
                TableName=chaos.TABLE, Key={"pk": {"S": key}}, ConsistentRead=True
            ).get("Item")
            assert item is not None, key
    finally:
        _stop_recorded(data_dir, 4)


def test_serve_join_needs_its_zone_listen_address_and_secret_and_a_node_to_join(
    tmp_path: Path,
) -> None:
    missing = _keeldb("serve", "--join", "127.0.0.1:9", "--node-id", "5")
    assert missing.returncode == 2
    assert "--zone Z, --listen HOST:PORT, --cluster-secret-file FILE" in missing.stderr
    secret = tmp_path / "secret"
    secret.write_text("ab" * 32 + "\n")
    port, api_port, peer_port = cluster_cli._free_ports("127.0.0.1", 3)
    nobody = _keeldb(
        "serve",
        "--join",
        f"127.0.0.1:{port}",
        "--node-id",
        "5",
        "--zone",
        "zone-a",
        "--listen",
        f"127.0.0.1:{peer_port}",
        "--port",
        str(api_port),
        "--cluster-secret-file",
        str(secret),
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert nobody.returncode == 1
    assert "cannot start" in nobody.stderr
