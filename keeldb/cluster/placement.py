"""Placement: which storage nodes hold the replicas of each replica group, and which of them
should lead it.

Owns the rule that spreads replicas over zones (`standard`: 3 replicas, one in each of 3
zones; `aurora`: 6 replicas, two in each of 3 zones, as Aurora, SIGMOD 2017, section 2.1),
which of them are log replicas (with the cluster file's `log_replicas`, `aurora` makes the
second replica of each zone one: it votes and keeps the log but applies nothing, so every
zone still holds a full replica to read from and lead) and leaders over nodes (each node
prefers to lead about as many groups as any other; only full replicas lead). The rule is a
pure function of the cluster file, so every node computes the same placement.

It never talks to nodes and never changes a running group: reconfiguration is the group
driver's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from keeldb.cluster.topology import ClusterSpec, NodeSpec
from keeldb.consensus.types import Config, Member, NodeId

META_GROUP = "meta"  # the metadata group: the catalog of tables and indexes
REPLICAS = {"standard": 3, "aurora": 6}
QUORUMS = {"standard": (2, 2), "aurora": (3, 4)}  # (Q1, Q2), docs/consensus.md
ZONES_PER_GROUP = 3
# The cluster file's switch for aurora log replicas (off unless it says true).
LOG_REPLICAS_KEY = "log_replicas"


def partition_group(partition: int) -> str:
    return f"p{partition}"


@dataclass(frozen=True, slots=True)
class GroupPlacement:
    group_id: str
    config: Config
    preferred_leader: int  # a node id

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.config.node_ids)


def _zones(nodes: Sequence[NodeSpec]) -> dict[str, list[NodeSpec]]:
    by_zone: dict[str, list[NodeSpec]] = defaultdict(list)
    for node in sorted(nodes, key=lambda n: n.node_id):
        by_zone[node.zone].append(node)
    return dict(sorted(by_zone.items()))


def log_replicas(spec: ClusterSpec) -> bool:
    """Whether the cluster's groups start with log replicas (aurora with `log_replicas`)."""
    return spec.profile == "aurora" and spec.extra.get(LOG_REPLICAS_KEY) is True


def _members(spec: ClusterSpec, index: int) -> tuple[Member, ...]:
    storage = spec.storage_nodes
    if len(storage) == 1:
        return (Member(NodeId(storage[0].node_id), storage[0].zone),)
    by_zone = _zones(storage)
    zone_names = list(by_zone)
    per_zone = REPLICAS[spec.profile] // ZONES_PER_GROUP
    with_log = log_replicas(spec)
    chosen: list[Member] = []
    for k in range(ZONES_PER_GROUP):
        zone = zone_names[(index + k) % len(zone_names)]
        nodes = by_zone[zone]
        for j in range(min(per_zone, len(nodes))):
            node = nodes[(index * per_zone + j) % len(nodes)]
            # A zone's first replica is full, its second a log replica: Q2 (4 of 6) is
            # met by log replicas as by full ones, and a zone lost leaves two full ones.
            chosen.append(Member(NodeId(node.node_id), zone, log_only=with_log and j > 0))
    return tuple(sorted(chosen, key=lambda m: m.node_id))


def _config(spec: ClusterSpec, members: tuple[Member, ...]) -> Config:
    if len(members) == 1:
        config = Config(members, q1=1, q2=1)
    else:
        q1, q2 = QUORUMS[spec.profile]
        # A zone with fewer nodes than its share leaves a smaller group; keep Q1 + Q2 > N.
        n = len(members)
        q2 = min(q2, n)
        q1 = max(min(q1, n), n - q2 + 1)
        config = Config(members, q1=q1, q2=q2)
    config.validate()
    return config


def place(spec: ClusterSpec) -> dict[str, GroupPlacement]:
    """Every group of the cluster: the metadata group, then one group per partition."""
    groups = [META_GROUP] + [partition_group(i) for i in range(spec.partitions)]
    leads: dict[int, int] = defaultdict(int)
    placed: dict[str, GroupPlacement] = {}
    for index, group_id in enumerate(groups):
        members = _members(spec, index)
        config = _config(spec, members)
        # The full member that leads fewest groups so far; ties go round-robin by group
        # index. A log replica never leads (it holds no state to serve from).
        order = [members[(index + k) % len(members)] for k in range(len(members))]
        leader = min((m for m in order if not m.log_only), key=lambda m: leads[int(m.node_id)])
        leads[int(leader.node_id)] += 1
        placed[group_id] = GroupPlacement(group_id, config, int(leader.node_id))
    return placed


def groups_of(placements: dict[str, GroupPlacement], node_id: int) -> list[str]:
    """The groups a node holds a replica of, metadata first."""
    return [g for g, p in placements.items() if node_id in p.node_ids]
