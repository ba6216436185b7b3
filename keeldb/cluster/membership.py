"""Cluster membership: the nodes that joined, the nodes retired, and each replica group's
members, kept as one replicated record in the metadata group.

The cluster file names the nodes a cluster started with, and `placement.place` derives the
first members of every group from it. Everything that changes later is in the membership
document, which the metadata leader changes by proposing a whole new document (a
`cluster_membership` redo record with the next version) through the metadata group's log:
so a change is chosen, durable on a quorum and seen in the same order by every metadata
replica, never a file edit. A metadata replica applies only a document newer than the one
it holds, so a proposal may repeat.

The document (msgpack-able plain data):

    {"version": int,
     "nodes": {"<id>": {"id", "zone", "host", "api_port", "peer_port", "role"}},  # joined
     "retired": [node ids],            # retiring or retired: never chosen as a target
     "groups": {"<group>": {"members": [[node id, zone, state], ...], "q1": int, "q2": int}}}

A member's state is `full`, `log` (a log replica on its way to full: it votes and keeps
the log, holds no state, never leads), `rebuilding` (the configuration makes it a full
member and it is loading a full member's state; until then it still applies nothing) or
`log-kept` (a log replica by design, as `aurora` with `log_replicas` places one per zone:
a log replica that stays one, so repair leaves it be). A group absent from `groups` has the
members placement gives it (`full`, or `log-kept` for placement's log replicas).

It owns the document's shape and the rules that read it; it never proposes anything and
never does IO beyond its store write (the metadata leader's repair loop proposes).
"""

from __future__ import annotations

import copy
from typing import Any

import msgpack

from keeldb.cluster.placement import GroupPlacement, log_replicas, place
from keeldb.cluster.topology import ClusterSpec, NodeSpec, TopologyError
from keeldb.consensus.types import Config, Member, NodeId
from keeldb.engine.database import Database, redo_kind

KIND = "cluster_membership"
STATE_KEY = b"k/cluster_membership"

FULL = "full"
LOG = "log"
REBUILDING = "rebuilding"
LOG_KEPT = "log-kept"
STATES = (FULL, LOG, REBUILDING, LOG_KEPT)
# The states in which a member is a log-only member of its group's configuration.
LOG_STATES = (LOG, LOG_KEPT)
# The states in which a member needs no more repair steps.
SETTLED_STATES = (FULL, LOG_KEPT)

# Transport channels of membership and repair (answers as in `keeldb.cluster.protocol`).
CHANNEL_MEMBERS = "kv.members"  # the metadata leader's document
CHANNEL_JOIN = "kv.join"  # add a node to the document (metadata leader)
CHANNEL_RECONFIG = "kv.reconfig"  # change one group's configuration (its leader)
CHANNEL_PING = "kv.ping"  # is the node alive (failure detection)
CHANNEL_RETIRE = "kv.retire"  # mark a node retiring (metadata leader)


def empty() -> dict[str, Any]:
    return {"version": 0, "nodes": {}, "retired": [], "groups": {}}


def record(doc: dict[str, Any]) -> dict[str, Any]:
    return {"kind": KIND, "doc": doc}


def load(db: Database) -> dict[str, Any]:
    """The document a metadata replica holds (the empty one before any change)."""
    raw = db.store.get(STATE_KEY)
    if raw is None:
        return empty()
    doc: dict[str, Any] = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    return doc


@redo_kind(KIND)
def apply_membership(db: Database, lsn: int, redo: dict[str, Any]) -> None:
    if lsn <= db.store.applied_lsn():
        return
    doc: dict[str, Any] = redo["doc"]
    if int(doc["version"]) <= int(load(db)["version"]):
        db.store.write([], [], lsn)  # an older or repeated document: nothing to change
        return
    db.store.write([(STATE_KEY, msgpack.packb(doc, use_bin_type=True))], [], lsn)


def next_version(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["version"] = int(doc["version"]) + 1
    return out


# --- nodes ------------------------------------------------------------------------------


def node_from_json(data: dict[str, Any]) -> NodeSpec:
    try:
        return NodeSpec(
            node_id=int(data["id"]),
            zone=str(data["zone"]),
            host=str(data.get("host", "127.0.0.1")),
            api_port=int(data["api_port"]),
            peer_port=int(data["peer_port"]),
            role=str(data.get("role", "both")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TopologyError(f"bad node entry: {error!r}") from None


def nodes(spec: ClusterSpec, doc: dict[str, Any]) -> tuple[NodeSpec, ...]:
    """Every node of the cluster: the cluster file's, then those that joined, by id."""
    known = {n.node_id: n for n in spec.nodes}
    for data in doc.get("nodes", {}).values():
        node = node_from_json(data)
        known.setdefault(node.node_id, node)
    return tuple(known[i] for i in sorted(known))


def retired(doc: dict[str, Any]) -> frozenset[int]:
    return frozenset(int(n) for n in doc.get("retired", []))


def add_node(doc: dict[str, Any], spec: ClusterSpec, node: NodeSpec) -> dict[str, Any] | None:
    """The document with `node` joined; None when it is already a member with the same
    addresses. TopologyError when its id is taken by another node or it is retired."""
    for other in nodes(spec, doc):
        if other.node_id == node.node_id:
            if other == node:
                return None
            raise TopologyError(
                f"node id {node.node_id} is taken by a node at {other.host}:{other.peer_port} "
                f"in {other.zone}"
            )
        if (other.host, other.peer_port) == (node.host, node.peer_port):
            raise TopologyError(
                f"node {other.node_id} already listens on {node.host}:{node.peer_port}"
            )
    if node.node_id in retired(doc):
        raise TopologyError(f"node {node.node_id} was retired; join with a new id")
    if len(nodes(spec, doc)) >= 64:
        raise TopologyError("the cluster has its maximum number of nodes")
    out = next_version(doc)
    out["nodes"][str(node.node_id)] = node.to_json()
    return out


# --- groups -----------------------------------------------------------------------------


def group_members(
    doc: dict[str, Any], base: dict[str, GroupPlacement], group_id: str
) -> list[list[Any]]:
    """[[node id, zone, state], ...] of a group, by node id."""
    entry = doc.get("groups", {}).get(group_id)
    if entry is not None:
        return sorted(
            ([int(m[0]), str(m[1]), str(m[2])] for m in entry["members"]), key=lambda m: m[0]
        )
    return [
        [int(m.node_id), m.zone, LOG_KEPT if m.log_only else FULL]
        for m in sorted(base[group_id].config.members, key=lambda m: m.node_id)
    ]


def config_of(members: list[list[Any]], q1: int, q2: int) -> Config:
    """The consensus configuration of a member list (log replicas log-only, whether kept or
    on their way to full; a rebuilding member is a full member of the configuration)."""
    return Config(
        tuple(Member(NodeId(int(n)), str(z), log_only=(s in LOG_STATES)) for n, z, s in members),
        q1=q1,
        q2=q2,
    )


def placements(spec: ClusterSpec, doc: dict[str, Any]) -> dict[str, GroupPlacement]:
    """Every group's placement as the document changed it (placement's where it did not)."""
    base = place(spec)
    out: dict[str, GroupPlacement] = {}
    for group_id, placement in base.items():
        entry = doc.get("groups", {}).get(group_id)
        if entry is None:
            out[group_id] = placement
            continue
        members = group_members(doc, base, group_id)
        config = config_of(members, int(entry["q1"]), int(entry["q2"]))
        full = [int(n) for n, _z, s in members if s == FULL]
        preferred = placement.preferred_leader if placement.preferred_leader in full else None
        if preferred is None:
            preferred = full[0] if full else int(members[0][0])
        out[group_id] = GroupPlacement(group_id, config, preferred)
    return out


def with_group(
    doc: dict[str, Any], group_id: str, members: list[list[Any]], q1: int, q2: int
) -> dict[str, Any]:
    out = next_version(doc)
    rows: list[list[Any]] = [[int(n), str(z), str(s)] for n, z, s in members]
    out["groups"][group_id] = {
        "members": sorted(rows, key=lambda m: int(m[0])),
        "q1": q1,
        "q2": q2,
    }
    return out


def settled(members: list[list[Any]]) -> bool:
    """Every member of the group is in the state it is meant to stay in: a full replica, or
    a log replica placed as one (no move in progress)."""
    return all(s in SETTLED_STATES for _n, _z, s in members)


def stays_log(spec: ClusterSpec, members: list[list[Any]], node_id: int) -> bool:
    """Whether a new log replica `node_id` of a group (one that took a leaving member's
    place) stays a log replica rather than becoming full: only in a cluster placed with log
    replicas, and only while another member of its zone is (or is becoming) a full replica,
    so that every zone keeps a full replica to read from and lead. A replica that replaced
    a zone's full one therefore becomes full, one that replaced its log replica stays log."""
    if not log_replicas(spec):
        return False
    zone = next((str(z) for n, z, _s in members if int(n) == node_id), None)
    return any(
        int(n) != node_id and str(z) == zone and s in (FULL, REBUILDING) for n, z, s in members
    )


def choose_target(
    spec: ClusterSpec,
    doc: dict[str, Any],
    group_members_now: list[list[Any]],
    leaving: int,
    live: set[int],
    load_by_node: dict[int, int],
) -> int | None:
    """The node to take over `leaving`'s replica of a group: a live storage node that holds
    no replica of the group and is not retired; preferably in the leaving member's zone,
    else in a zone the group has no replica in (the profile spreads replicas over zones).
    None when every candidate would put a second replica in a zone that already has one
    (for `standard`) or a third (for `aurora`): the zone rule is kept, and the group runs
    without the replica until a suitable node joins or the old one returns."""
    zone_of = {n.node_id: n.zone for n in nodes(spec, doc)}
    leaving_zone = zone_of.get(leaving)
    members = {int(n) for n, _z, _s in group_members_now}
    per_zone: dict[str, int] = {}
    for n, z, _s in group_members_now:
        if int(n) != leaving:
            per_zone[str(z)] = per_zone.get(str(z), 0) + 1
    share = 1 if spec.profile == "standard" else 2
    gone = retired(doc)
    best: tuple[int, int, int] | None = None
    for node in nodes(spec, doc):
        n = node.node_id
        if not node.stores or n in members or n in gone or n not in live:
            continue
        if node.zone == leaving_zone:
            rank = 0
        elif per_zone.get(node.zone, 0) < share:
            rank = 1
        else:
            continue
        key = (rank, load_by_node.get(n, 0), n)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]
