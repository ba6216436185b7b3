"""Aurora log replicas: placement names one log replica per zone, the membership document
and repair keep them log replicas, and no read or leadership is ever placed on one.

The process tests run a 6-node `aurora` cluster with `log_replicas` (nodes 4, 5 and 6 hold
only log replicas); a deliberately broken router and storage service that read from their
own log replica (`KEELDB_BUGGIFY_LOG_REPLICA_READS=1` on node 4) must fail the read check.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from keeldb.cluster import membership
from keeldb.cluster.cli import build_spec
from keeldb.cluster.placement import LOG_REPLICAS_KEY, GroupPlacement, place
from keeldb.cluster.protocol import MODE_EVENTUAL, MODE_STRONG
from keeldb.cluster.ring import Ring
from keeldb.cluster.router import Router
from keeldb.cluster.topology import ClusterSpec
from keeldb.consensus.types import NodeId

TABLE = "logreplicas"
ITEMS = 24
# Long enough for leadership to follow the traffic of one router (a 2 s window, at least
# 5 s between moves, docs/cluster.md "Leaders follow the traffic") if it could.
TRAFFIC_SECONDS = 9.0


def _spec(nodes: int, *, log_replicas: bool = True, profile: str = "aurora") -> ClusterSpec:
    spec = build_spec(nodes, 3, profile, 4, "127.0.0.1")
    extra = {**spec.extra, LOG_REPLICAS_KEY: True} if log_replicas else spec.extra
    return dataclasses.replace(spec, extra=extra)


def placement_violations(placements: dict[str, GroupPlacement]) -> list[str]:
    """What breaks the log replica rules: a zone without a full replica, a log replica that
    is preferred to lead, a configuration that a zone's loss would stop writing."""
    problems = []
    for group_id, placement in placements.items():
        config = placement.config
        config.validate()
        if not config.can_lead(NodeId(placement.preferred_leader)):
            problems.append(f"{group_id}: log replica {placement.preferred_leader} would lead")
        for zone in config.zones:
            if all(m.log_only for m in config.members if m.zone == zone):
                problems.append(f"{group_id}: no full replica in {zone}")
        if not config.survives_zone_loss():
            problems.append(f"{group_id}: the loss of a zone stops its writes")
    return problems


@pytest.mark.parametrize("nodes", [6, 7, 9])
def test_aurora_with_log_replicas_keeps_a_full_and_a_log_replica_in_every_zone(nodes: int) -> None:
    placed = place(_spec(nodes))
    assert placement_violations(placed) == []
    for placement in placed.values():
        by_zone = collections.defaultdict(list)
        for member in placement.config.members:
            by_zone[member.zone].append(member.log_only)
        assert sorted(sorted(zone) for zone in by_zone.values()) == [[False, True]] * 3
        assert (placement.config.q1, placement.config.q2) == (3, 4)


def test_the_placement_check_catches_a_log_replica_preferred_to_lead() -> None:
    placed = place(_spec(6))
    broken = {}
    for group_id, placement in placed.items():
        log_member = next(m for m in placement.config.members if m.log_only)
        broken[group_id] = GroupPlacement(group_id, placement.config, int(log_member.node_id))
    assert len(placement_violations(broken)) == len(placed)


def test_without_the_switch_or_on_standard_every_replica_is_full() -> None:
    for spec in (_spec(6, log_replicas=False), _spec(3, profile="standard")):
        for placement in place(spec).values():
            assert not any(m.log_only for m in placement.config.members)


def test_the_document_takes_placed_log_replicas_for_settled_log_only_members() -> None:
    spec = _spec(6)
    base = place(spec)
    members = membership.group_members(membership.empty(), base, "p0")
    assert sorted(int(n) for n, _z, s in members if s == membership.LOG_KEPT) == [4, 5, 6]
    assert membership.settled(members)
    config = membership.config_of(members, 3, 4)
    assert [int(m.node_id) for m in config.members if m.log_only] == [4, 5, 6]
    # A move in progress is not settled: a replica on its way to full is a plain `log`.
    moving = [[n, z, membership.LOG if n == 1 else s] for n, z, s in members]
    assert not membership.settled(moving)
    # The document's placements keep a full replica as the preferred leader.
    doc = membership.with_group(membership.empty(), "p0", moving, 3, 4)
    preferred = membership.placements(spec, doc)["p0"].preferred_leader
    assert preferred in (2, 3)


def test_a_replacement_stays_a_log_replica_only_where_its_zone_keeps_a_full_one() -> None:
    spec = _spec(9)  # zone-a: 1, 4, 7
    # Node 7 took the place of zone-a's log replica (4): zone-a still has full node 1.
    replaced_log = [
        [1, "zone-a", "full"],
        [7, "zone-a", "log"],
        [2, "zone-b", "full"],
        [5, "zone-b", "log-kept"],
        [3, "zone-c", "full"],
        [6, "zone-c", "log-kept"],
    ]
    assert membership.stays_log(spec, replaced_log, 7)
    # Node 7 took the place of zone-a's full replica (1): it must become full.
    replaced_full = [[7, "zone-a", "log"], [4, "zone-a", "log-kept"], *replaced_log[2:]]
    assert not membership.stays_log(spec, replaced_full, 7)
    # Without log replicas every replacement becomes full.
    assert not membership.stays_log(_spec(9, log_replicas=False), replaced_log, 7)


def _router(spec: ClusterSpec, node_id: int) -> Router:
    placements = place(spec)

    async def no_calls(node: int, channel: str, payload: Any, timeout: float) -> Any:
        raise AssertionError("no call expected")

    return Router(
        node_id,
        Ring.even(spec.partitions),
        placements,
        no_calls,
        is_connected=lambda n: True,
        region="us-east-1",
        endpoint_address="127.0.0.1:1",
    )


def test_a_router_never_reads_from_its_log_replica_and_asks_log_replicas_last() -> None:
    spec = _spec(6)
    on_log_node = _router(spec, 4)
    on_full_node = _router(spec, 1)
    for group_id in place(spec):
        for mode in (MODE_EVENTUAL, MODE_STRONG):
            candidates = on_log_node._candidates(group_id, mode)
            assert sorted(candidates) == [1, 2, 3, 4, 5, 6]
            assert set(candidates[:3]) == {1, 2, 3}, candidates
        assert on_full_node._candidates(group_id, MODE_EVENTUAL)[0] == 1


# --- on a running cluster ---------------------------------------------------------------


def _item(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}}


def _load(cluster: Any) -> None:
    client = cluster.client(1)
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(ITEMS):
        client.put_item(TableName=TABLE, Item=_item(i))


def eventual_read_problems(cluster: Any, node_id: int, items: int = ITEMS) -> list[str]:
    """The first `items` items read through `node_id` with ConsistentRead=false (after the
    writes were acknowledged and a moment passed): what was missing, wrong or refused."""
    client = cluster.client(node_id)
    problems = []
    for i in range(items):
        try:
            got = client.get_item(TableName=TABLE, Key={"pk": {"S": f"k{i}"}}).get("Item")
        except (ClientError, BotoCoreError) as error:
            problems.append(f"k{i} via node {node_id}: {error}")
            continue
        if got is None or {n: got.get(n) for n in ("pk", "v")} != _item(i):
            problems.append(f"k{i} via node {node_id}: {got}")
    return problems


def _views(cluster: Any) -> dict[str, Any]:
    report = cluster.status(1)
    return {n: v.get("groups", {}) for n, v in report["views"].items()}


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_aurora_cluster_reads_and_leads_only_from_full_replicas(cluster_factory: Any) -> None:
    cluster = cluster_factory(
        nodes=6, profile="aurora", partitions=2, extra={LOG_REPLICAS_KEY: True}
    )
    _load(cluster)
    time.sleep(0.5)  # eventual reads: a moment for the followers to apply
    for node_id in cluster.node_ids:
        assert eventual_read_problems(cluster, node_id) == []
    # Traffic through node 4 alone, which holds only log replicas: leadership follows a
    # router's traffic where it can, and must not follow it to a log replica.
    client = cluster.client(4)
    written: dict[int, int] = {}
    deadline = time.monotonic() + TRAFFIC_SECONDS
    i = 0
    while time.monotonic() < deadline:
        key = {"pk": {"S": f"k{i % ITEMS}"}}
        client.update_item(
            TableName=TABLE,
            Key=key,
            UpdateExpression="SET w = :w",
            ExpressionAttributeValues={":w": {"N": str(i)}},
        )
        written[i % ITEMS] = i
        client.get_item(TableName=TABLE, Key=key)
        i += 1
    views = _views(cluster)
    for group_id in ("meta", "p0", "p1"):
        leaders = [int(n) for n, groups in views.items() if groups[group_id]["is_leader"]]
        assert leaders and set(leaders) <= {1, 2, 3}, (group_id, leaders)
        for node_id in (4, 5, 6):
            mine = views[str(node_id)][group_id]
            assert mine["state"] == "log"
            assert any(m[0] == node_id and m[2] is True for m in mine["config"])
    # The status command knows them for log replicas placed as such: nothing is moving.
    from keeldb.cluster.cli import collect_status

    status = collect_status(cluster.data_dir)
    for group in status["groups"]:
        states = {r["node"]: (r["state"], r["intended"]) for r in group["replicas"]}
        assert states == {
            1: ("full", "full"),
            2: ("full", "full"),
            3: ("full", "full"),
            4: ("log", "log"),
            5: ("log", "log"),
            6: ("log", "log"),
        }
    # Two full replicas lost (zones a and b): node 3 and the three log replicas are a
    # write quorum, and node 3 learns from their logs whatever it lacks. Every
    # acknowledged write is there, and writes go on.
    cluster.kill(1)
    cluster.kill(2)
    client = cluster.client(3)
    deadline = time.monotonic() + 30.0
    while True:
        try:
            client.put_item(TableName=TABLE, Item=_item(ITEMS))
            break
        except (ClientError, BotoCoreError):
            assert time.monotonic() < deadline, "no write acknowledged after the loss"
            time.sleep(0.2)
    for k, w in written.items():
        found = client.get_item(TableName=TABLE, Key={"pk": {"S": f"k{k}"}}, ConsistentRead=True)
        assert found["Item"]["w"] == {"N": str(w)}
    assert eventual_read_problems(cluster, 3) == []
    assert eventual_read_problems(cluster, 5) == []
    # The broken variant: node 4 back with a router and storage service that read from
    # its own log replica; the same check fails for it. (A read it refuses takes the
    # router's whole reroute budget: one suffices.)
    cluster.kill(4)
    cluster.node_env[4] = {"KEELDB_BUGGIFY_LOG_REPLICA_READS": "1"}
    cluster.restart(4)
    cluster.wait_serving([4])
    assert eventual_read_problems(cluster, 3, items=1) == []
    assert len(eventual_read_problems(cluster, 4, items=1)) == 1
