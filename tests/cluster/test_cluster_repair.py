"""Replica repair on real processes: a node that stays down has its replicas replaced on
another node of its zone (first a log replica, then a full one), the replacement keeps a
write quorum when a second original member fails, the node, back, retires its replica, and
`keeldb cluster retire` moves a live node's replicas away and stops it.

Four nodes in three zones (zone-a holds nodes 1 and 4), `standard` profile, replacement
after 2 s (`KEELDB_REPLACE_AFTER_SECONDS`). Client threads write, compare-and-set and
strongly read during the faults; every acknowledged write must be present at the end and
the strong history linearizable (`keeldb.consensus.sim.linearizability`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster.placement import place

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(240)]

REPLACE_AFTER_SECONDS = 2.0
MOVE_SECONDS_MAX = 40.0  # a loaded machine: generous
STATE_POLL_SECONDS = 0.05


def _states(cluster: Any, group: str) -> dict[int, str]:
    """Each live member's own report of its replica of `group` (state by node)."""
    out: dict[int, str] = {}
    for node in cluster.live():
        try:
            view = cluster.status(node)["views"][str(node)]
        except (OSError, KeyError, ValueError):
            continue
        mine = view.get("groups", {}).get(group) if isinstance(view, dict) else None
        if mine is not None and mine.get("state") != "removed":
            out[node] = mine["state"]
    return out


class StateWatcher:
    """Records every state a node's replica of a group reports, until stopped."""

    def __init__(self, cluster: Any, group: str, node: int) -> None:
        self.cluster, self.group, self.node = cluster, group, node
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(STATE_POLL_SECONDS)

    def _sample(self) -> None:
        url = self.cluster.endpoint(self.node) + "/keeldb/cluster/status?local"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                view = json.loads(response.read())["view"]
            state = view["groups"].get(self.group, {}).get("state")
        except (OSError, KeyError, ValueError, TypeError):
            state = None
        if state is not None and (not self.seen or self.seen[-1] != state):
            self.seen.append(state)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()  # the state now, after whatever the caller waited for
        return self.seen


def _wait_members(cluster: Any, group: str, wanted: set[int], via: int) -> dict[int, str]:
    deadline = time.monotonic() + MOVE_SECONDS_MAX
    while True:
        try:
            report = cluster.status(via)
            members = set(report["groups"][group])
        except (OSError, KeyError, ValueError):
            members = set()
        states = _states(cluster, group)
        reachable = wanted - {n for n in wanted if n not in cluster.live()}
        settled = set(states) >= reachable and all(states[n] == "full" for n in reachable)
        if members == wanted and settled:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"{group}: members {members}, states {states}, want {wanted}")
        time.sleep(0.2)


def test_a_node_down_past_the_timeout_is_replaced_in_its_zone_and_retired_when_back(
    cluster_factory: Any, chaos: Any
) -> None:
    env = {"KEELDB_REPLACE_AFTER_SECONDS": str(REPLACE_AFTER_SECONDS)}
    cluster = cluster_factory(nodes=4, profile="standard", partitions=2, env=env)
    placements = place(cluster.spec)
    # The zone-a node holding a partition replica, and its zone-a sibling that does not.
    victim = next(
        n
        for n in cluster.node_ids
        if cluster.zone(n) == "zone-a"
        and any(n in p.node_ids for p in placements.values())
        and any(n not in p.node_ids for p in placements.values())
    )
    sibling = next(n for n in cluster.node_ids if cluster.zone(n) == "zone-a" and n != victim)
    moved = sorted(g for g, p in placements.items() if victim in p.node_ids)
    group = next(g for g in moved if g != "meta")
    assert sibling not in placements[group].node_ids
    survivors = [n for n in cluster.node_ids if n != victim]
    chaos.create_table(cluster.client(survivors[0]))
    watcher = StateWatcher(cluster, group, sibling)
    killed_at: list[float] = []

    def fault() -> None:
        time.sleep(1.5)
        killed_at.append(time.monotonic())
        cluster.kill(victim)

    result = chaos.run_workload([cluster.endpoint(n) for n in survivors], 7.0, during=fault)
    for other in moved:
        wanted = (set(placements[other].node_ids) - {victim}) | {sibling}
        states = _wait_members(cluster, other, wanted, survivors[0])
    seen = watcher.stop()
    # The states the replica reported as sampled (a short phase may fall between samples).
    print(f"{group}: replica on node {sibling} went through {seen}; members now {states}")
    assert seen[-1] == "full", seen
    # It joined the group as a log replica: the configuration its replica was created with
    # (recorded at creation) makes it log-only. Caught up, it could become full only by
    # loading a full member's state (a log replica never applies).
    first = json.loads((_group_dir(cluster, sibling, group) / "first_config.json").read_text())
    assert [sibling, cluster.zone(sibling), True] in first["members"], first
    after = [t for t in result.write_times if t > killed_at[0] + REPLACE_AFTER_SECONDS]
    assert after, "no write was acknowledged after the node was lost"

    # A second original member of the group fails: without the replacement the group
    # would have one replica of three; with it, it keeps a write quorum.
    second = next(n for n in sorted(placements[group].node_ids) if n != victim)
    cluster.kill(second)
    live = [n for n in cluster.node_ids if n not in (victim, second)]
    client = cluster.client(live[0])
    for i in range(20):
        client.put_item(TableName=chaos.TABLE, Item={"pk": {"S": f"after-second-{i}"}})
        result.attempted.add(f"after-second-{i}")
        result.acknowledged.add(f"after-second-{i}")

    # The first node comes back: it is retired from the group and drops its data; its
    # endpoint serves the current items, never its stale replica.
    data = _group_dir(cluster, victim, group)
    assert data.exists()
    cluster.restart(victim)
    cluster.wait_serving([victim])
    deadline = time.monotonic() + MOVE_SECONDS_MAX
    while data.exists() or set(moved) & _own_groups(cluster, victim):
        assert time.monotonic() < deadline, f"node {victim} still holds {group}"
        time.sleep(0.2)
    returned = cluster.client(victim)
    for i in range(20):
        item = returned.get_item(
            TableName=chaos.TABLE, Key={"pk": {"S": f"after-second-{i}"}}, ConsistentRead=False
        ).get("Item")
        assert item is not None, f"after-second-{i} not served by node {victim}"

    # Retiring the node that took the replicas moves every replica it holds to the returned
    # node (the other zone-a node), the same two steps, and stops it.
    retired = subprocess.run(
        [sys.executable, "-m", "keeldb", "cluster", "retire", "--node", str(sibling)]
        + ["--data-dir", str(cluster.data_dir), "--timeout", str(MOVE_SECONDS_MAX)],
        check=False,
        capture_output=True,
        text=True,
        timeout=MOVE_SECONDS_MAX + 60,
    )
    assert retired.returncode == 0, retired.stderr + retired.stdout
    assert cluster.processes[sibling].wait(timeout=30) is not None
    for other, placement in placements.items():
        wanted = set(placement.node_ids)
        if sibling in wanted:
            wanted = (wanted - {sibling}) | {victim}
        _wait_members(cluster, other, wanted, victim)
    chaos.final_check(cluster.endpoint(victim), result)


def _group_dir(cluster: Any, node: int, group: str) -> Path:
    return Path(cluster.data_dir) / "nodes" / f"n{node}" / "data" / "groups" / group


def _own_groups(cluster: Any, node: int) -> set[str]:
    try:
        view = cluster.status(node)["views"][str(node)]
    except (OSError, KeyError, ValueError):
        return set()
    return set(view.get("groups", {})) if isinstance(view, dict) else set()
