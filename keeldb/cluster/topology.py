"""The cluster file: which nodes make up a cluster, where they listen, and in which zone.

Owns the one description every process of a static cluster reads at start: the nodes (id,
zone, role, client address, peer address), the replication profile and the initial number
of partitions, and where the cluster secret is. `keeldb cluster up` writes it; `keeldb serve
--cluster-config FILE --node-id N` reads it. Everything else a node needs (the ring, the
placement of replica groups) is derived from it deterministically, so that every node
computes the same map without talking to the others.

It must never open sockets or start processes: it is data and its JSON form.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("standard", "aurora")
ROLES = ("storage", "router", "both")
# Partitions per table when the cluster file does not say: enough to spread leaders over a
# few nodes, few enough that a small machine runs a replica of each.
PARTITIONS_DEFAULT = 4
PARTITIONS_MAX = 64  # each partition is a replica group with its own log and store per node
NODES_MAX = 64
CLUSTER_FILE_NAME = "cluster.json"
SECRET_BYTES = 32  # HMAC-SHA256 key length


class TopologyError(ValueError):
    """A cluster file that cannot describe a working cluster; the message says why."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: int
    zone: str
    host: str
    api_port: int  # where clients reach the node's DynamoDB endpoint (routers)
    peer_port: int  # where other nodes reach it (transport)
    role: str = "both"

    @property
    def name(self) -> str:
        return f"n{self.node_id}"

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.api_port}"

    @property
    def stores(self) -> bool:
        return self.role in ("storage", "both")

    @property
    def routes(self) -> bool:
        return self.role in ("router", "both")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "zone": self.zone,
            "host": self.host,
            "api_port": self.api_port,
            "peer_port": self.peer_port,
            "role": self.role,
        }


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: tuple[NodeSpec, ...]
    profile: str = "standard"
    partitions: int = PARTITIONS_DEFAULT
    # The file holding the cluster secret (relative paths are relative to the cluster file).
    secret_file: str = "secret"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.profile not in PROFILES:
            raise TopologyError(f"profile must be one of {', '.join(PROFILES)}: {self.profile!r}")
        if not 1 <= self.partitions <= PARTITIONS_MAX:
            raise TopologyError(f"partitions must be within 1..{PARTITIONS_MAX}")
        if not 1 <= len(self.nodes) <= NODES_MAX:
            raise TopologyError(f"a cluster has 1..{NODES_MAX} nodes")
        ids = [n.node_id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise TopologyError(f"node ids repeat: {sorted(ids)}")
        for node in self.nodes:
            if node.node_id <= 0:
                raise TopologyError(f"node ids are positive integers: {node.node_id}")
            if node.role not in ROLES:
                raise TopologyError(f"node {node.node_id}: role must be one of {ROLES}")
            if not node.zone:
                raise TopologyError(f"node {node.node_id} has no zone")
        storage = self.storage_nodes
        if not storage:
            raise TopologyError("a cluster needs at least one storage node")
        zones = {n.zone for n in storage}
        wanted = 3 if self.profile == "standard" else 6
        if len(storage) < wanted and len(storage) != 1:
            raise TopologyError(
                f"the {self.profile} profile places {wanted} replicas: it needs {wanted} "
                f"storage nodes (or exactly 1 for a test cluster), got {len(storage)}"
            )
        if len(storage) > 1 and len(zones) < 3:
            raise TopologyError(f"replicas are spread over 3 zones; storage nodes use {len(zones)}")

    @property
    def storage_nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.stores)

    def node(self, node_id: int) -> NodeSpec:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise TopologyError(f"node {node_id} is not in the cluster file")

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "partitions": self.partitions,
            "secret_file": self.secret_file,
            "nodes": [n.to_json() for n in self.nodes],
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Any) -> ClusterSpec:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise TopologyError("a cluster file is a JSON object with a 'nodes' list")
        try:
            nodes = tuple(
                NodeSpec(
                    node_id=int(n["id"]),
                    zone=str(n["zone"]),
                    host=str(n.get("host", "127.0.0.1")),
                    api_port=int(n["api_port"]),
                    peer_port=int(n["peer_port"]),
                    role=str(n.get("role", "both")),
                )
                for n in data["nodes"]
            )
        except (KeyError, TypeError, ValueError) as error:
            raise TopologyError(f"bad node entry in the cluster file: {error!r}") from None
        known = {"profile", "partitions", "secret_file", "nodes"}
        spec = cls(
            nodes=nodes,
            profile=str(data.get("profile", "standard")),
            partitions=int(data.get("partitions", PARTITIONS_DEFAULT)),
            secret_file=str(data.get("secret_file", "secret")),
            extra={k: v for k, v in data.items() if k not in known},
        )
        spec.validate()
        return spec


def load(path: Path) -> ClusterSpec:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise TopologyError(f"cannot read the cluster file {path}: {error}") from None
    return ClusterSpec.from_json(data)


def save(spec: ClusterSpec, path: Path) -> None:
    spec.validate()
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    tmp.replace(path)


def secret_path(spec: ClusterSpec, cluster_file: Path) -> Path:
    path = Path(spec.secret_file)
    return path if path.is_absolute() else Path(cluster_file).parent / path


def read_secret(path: Path) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except OSError as error:
        raise TopologyError(f"cannot read the cluster secret {path}: {error}") from None
    if len(text) < 32:
        raise TopologyError(f"the cluster secret in {path} is too short (32 hex digits at least)")
    return text.encode("ascii")


def write_secret(path: Path) -> None:
    path = Path(path)
    path.write_text(secrets.token_hex(SECRET_BYTES) + "\n")
    path.chmod(0o600)
