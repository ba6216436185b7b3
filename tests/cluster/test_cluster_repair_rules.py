"""The membership document and the rules repair follows: where a replica moves, how the
document changes placement, and how metadata replicas apply it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.cluster import membership
from keeldb.cluster.cli import build_spec
from keeldb.cluster.placement import place
from keeldb.cluster.protocol import MODE_EVENTUAL, REDIRECT
from keeldb.cluster.ring import Ring
from keeldb.cluster.storage import Replica as StorageReplica
from keeldb.cluster.storage import StorageService
from keeldb.cluster.topology import ClusterSpec, NodeSpec, TopologyError
from keeldb.engine.database import Database
from keeldb.storage.memory import MemoryStore


def _spec(nodes: int, profile: str = "standard") -> ClusterSpec:
    return build_spec(nodes, 3, profile, 2, "127.0.0.1")


def _group_with(spec: ClusterSpec, node: int) -> str:
    return next(g for g, p in place(spec).items() if node in p.node_ids)


def test_a_replica_moves_to_a_live_node_of_the_same_zone_first() -> None:
    spec = _spec(6)  # zones a, b, c with two nodes each: 1,4 / 2,5 / 3,6
    doc = membership.empty()
    group = _group_with(spec, 1)
    members = membership.group_members(doc, place(spec), group)
    sibling = 4
    assert sibling not in [m[0] for m in members]
    live = {2, 3, 4, 5, 6}
    assert membership.choose_target(spec, doc, members, 1, live, {}) == sibling


def test_without_a_node_in_its_zone_a_replica_goes_to_a_zone_the_group_lacks() -> None:
    spec = _spec(4)  # zone-a: 1, 4; zone-b: 2; zone-c: 3
    doc = membership.empty()
    members = [[1, "zone-a", "full"], [2, "zone-b", "full"], [3, "zone-c", "full"]]
    # Node 2 (zone-b) is lost and zone-b has no other node: node 4 is in zone-a, which
    # already holds a replica of the group, so the zone rule leaves no target.
    assert membership.choose_target(spec, doc, members, 2, {1, 3, 4}, {}) is None
    # A replica whose zone-mate is down too: zone-a's replica of a group without zone-a.
    members = [[2, "zone-b", "full"], [3, "zone-c", "full"], [4, "zone-a", "full"]]
    assert membership.choose_target(spec, doc, members, 4, {1, 2, 3}, {}) == 1


def test_retired_dead_and_member_nodes_are_never_targets() -> None:
    spec = _spec(6)
    members = [[1, "zone-a", "full"], [2, "zone-b", "full"], [3, "zone-c", "full"]]
    doc = membership.empty()
    assert membership.choose_target(spec, doc, members, 1, {2, 3, 5, 6}, {}) is None
    doc["retired"] = [4]
    assert membership.choose_target(spec, doc, members, 1, {2, 3, 4, 5, 6}, {}) is None
    assert membership.choose_target(spec, membership.empty(), members, 1, {2, 3, 4}, {}) == 4


def test_the_least_loaded_candidate_wins_among_equals() -> None:
    spec = build_spec(9, 3, "standard", 2, "127.0.0.1")  # zone-a: 1, 4, 7
    members = [[1, "zone-a", "full"], [2, "zone-b", "full"], [3, "zone-c", "full"]]
    live = set(range(2, 10))
    assert membership.choose_target(spec, membership.empty(), members, 1, live, {4: 3}) == 7
    assert membership.choose_target(spec, membership.empty(), members, 1, live, {7: 3}) == 4


def test_the_document_overrides_a_groups_placement_with_log_replicas_log_only() -> None:
    spec = _spec(4)
    base = place(spec)
    group = _group_with(spec, 4)
    members = [m for m in membership.group_members(membership.empty(), base, group) if m[0] != 4]
    members.append([1, "zone-a", membership.LOG])
    q1, q2 = base[group].config.q1, base[group].config.q2
    doc = membership.with_group(membership.empty(), group, members, q1, q2)
    placed = membership.placements(spec, doc)
    config = placed[group].config
    assert 4 not in placed[group].node_ids
    assert config.member(1).log_only  # type: ignore[arg-type, union-attr]
    assert placed[group].preferred_leader != 1  # a log replica never leads
    assert not membership.settled(membership.group_members(doc, base, group))
    for other in base:
        if other != group:
            assert placed[other] == base[other]


def test_a_join_adds_a_node_once_and_refuses_a_taken_id_or_address() -> None:
    spec = _spec(3)
    new = NodeSpec(4, "zone-a", "127.0.0.1", 1001, 1002)
    doc = membership.add_node(membership.empty(), spec, new)
    assert doc is not None and doc["version"] == 1
    assert [n.node_id for n in membership.nodes(spec, doc)] == [1, 2, 3, 4]
    assert membership.add_node(doc, spec, new) is None  # the same node again: nothing to do
    with pytest.raises(TopologyError, match="node id 2 is taken"):
        membership.add_node(doc, spec, NodeSpec(2, "zone-a", "127.0.0.1", 3, 4))
    with pytest.raises(TopologyError, match="already listens"):
        membership.add_node(doc, spec, NodeSpec(5, "zone-a", "127.0.0.1", 7, 1002))
    doc["retired"] = [6]
    with pytest.raises(TopologyError, match="was retired"):
        membership.add_node(doc, spec, NodeSpec(6, "zone-a", "127.0.0.1", 8, 9))


def test_a_metadata_replica_applies_only_a_newer_document() -> None:
    db = Database(MemoryStore())
    newer = membership.next_version(membership.next_version(membership.empty()))
    newer["retired"] = [7]
    older = membership.next_version(membership.empty())
    membership.apply_membership(db, 1, membership.record(newer))
    membership.apply_membership(db, 2, membership.record(older))
    assert membership.load(db) == newer
    assert db.store.applied_lsn() == 2
    membership.apply_membership(db, 2, membership.record(membership.next_version(newer)))
    assert membership.load(db) == newer  # a replayed entry changes nothing


def test_aurora_moves_a_replica_within_its_zone_and_never_puts_three_in_one_zone() -> None:
    spec = build_spec(7, 3, "aurora", 2, "127.0.0.1")  # zone-a: 1, 4, 7
    members = [
        [1, "zone-a", "full"],
        [4, "zone-a", "full"],
        [2, "zone-b", "full"],
        [5, "zone-b", "full"],
        [3, "zone-c", "full"],
        [6, "zone-c", "full"],
    ]
    live = {2, 3, 4, 5, 6, 7}
    assert membership.choose_target(spec, membership.empty(), members, 1, live, {}) == 7
    # Node 5 (zone-b) lost, zone-b has no spare: zone-a's spare would be its third replica.
    assert membership.choose_target(spec, membership.empty(), members, 5, live | {1}, {}) is None


class _FollowerLog:
    """A caught-up follower's group log, as the storage service sees it."""

    def __init__(self, *, log_only: bool) -> None:
        self.is_leader = False
        self.leader_hint = "node2"
        self.replica = type("Core", (), {"log_only": log_only})()

    def lag(self) -> int:
        return 0

    def staleness_seconds(self) -> float:
        return 0.0  # heard from the leader just now


def _storage_with(log_only: bool) -> tuple[StorageService, dict[str, Any]]:
    spec = _spec(3)
    placements = place(spec)
    storage = StorageService(1, Ring.even(2), placements, None, _no_calls, ttl_interval_seconds=60)
    db = Database(MemoryStore())
    storage.replicas["p0"] = StorageReplica(
        "p0", placements["p0"], db.store, db, _FollowerLog(log_only=log_only), 0
    )
    payload = {
        "g": "p0",
        "op": "GetItem",
        "mode": MODE_EVENTUAL,
        "body": {"TableName": "nothing", "Key": {"pk": {"S": "a"}}},
        "check": False,
    }
    return storage, payload


async def _no_calls(node: int, channel: str, payload: Any, timeout: float) -> Any:
    raise AssertionError("no call expected")


def test_a_replica_the_leaders_document_does_not_name_full_serves_no_eventual_read() -> None:
    storage, payload = _storage_with(log_only=False)
    # Not confirmed by the metadata leader's document (a node back after being replaced).
    assert asyncio.run(storage.on_op("node9", payload)) == [REDIRECT, 2]
    storage.serving_groups = {"p0"}
    answer = asyncio.run(storage.on_op("node9", payload))
    assert answer[0] == "error"  # served here: the table does not exist in this replica
    assert "ResourceNotFoundException" in answer[1]["__type"]


def test_a_log_replica_serves_no_eventual_read() -> None:
    storage, payload = _storage_with(log_only=True)
    storage.serving_groups = {"p0"}
    assert asyncio.run(storage.on_op("node9", payload)) == [REDIRECT, 2]
