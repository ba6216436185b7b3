"""One node of a cluster: its transport, its replicas (storage role) and its router.

Owns the order in which a cluster node starts (read the cluster file and secret, compute the
ring and the placement, start the transport, open a replica of every group this node is a
member of, start the HTTP front end with the router) and stops (front end, replicas,
transport). The CLI starts it through `ClusterNode.start`, as it starts a single `Node`.

It must never handle requests itself (the router and the storage service do), and never
installs signal handlers: the caller owns the process and the loop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeldb.api.server import ApiServer, RestResponse
from keeldb.api.sigv4 import Credential, Verifier
from keeldb.cluster import (
    backup_route,
    catalog_sync,  # noqa: F401  (registers the catalog_sync redo kind)
    topology,
)
from keeldb.cluster.membership import empty as empty_membership
from keeldb.cluster.membership import nodes as member_nodes
from keeldb.cluster.membership import placements as member_placements
from keeldb.cluster.membership_service import (
    MembershipError,
    MembershipService,
    join_cluster,
    load_doc,
    save_doc,
)
from keeldb.cluster.placement import GroupPlacement
from keeldb.cluster.protocol import CHANNEL_STATUS, OK
from keeldb.cluster.ring import Ring
from keeldb.cluster.router import Router
from keeldb.cluster.storage import StorageService, campaign
from keeldb.engine import database as database_module
from keeldb.engine.ttl import TTL_SWEEP_INTERVAL_SECONDS
from keeldb.net.transport import TransportError

log = logging.getLogger("keeldb.cluster.node")

# The services a cluster node attaches once it serves, in order (`async def attach(node)
# -> Closer | None` each; closed in reverse before the front end stops). They are imported
# with this module, so that the redo kinds they register exist before any replica replays.
CLUSTER_SERVICES = ("keeldb.cluster.streams_route", "keeldb.cluster.functions_route")
for _service in CLUSTER_SERVICES:
    importlib.import_module(_service)

STATUS_PATH = "/keeldb/cluster/status"
FAULT_PATH = "/keeldb/cluster/fault"
STATUS_CALL_SECONDS = 1.0
# After start, a node that is the preferred leader of a group and finds it leaderless asks
# for leadership, so that leaders spread over nodes as placement intends.
PREFERRED_LEADER_DELAY_SECONDS = 0.3


def transport_name(node_id: int) -> str:
    """A node's name on the transport, as the group driver expects ("node<n>")."""
    from keeldb.cluster.group import member_name

    return member_name(node_id)


@dataclass(frozen=True, slots=True)
class ClusterNodeConfig:
    cluster_file: Path
    node_id: int
    data_dir: Path
    credentials: Mapping[str, Credential] | None = None
    region: str = "us-east-1"
    ttl_interval_seconds: float = TTL_SWEEP_INTERVAL_SECONDS
    # Test hook: allow the fault switch to be driven over HTTP (loopback test clusters).
    fault_endpoint: bool = False
    # The cluster secret (None: the file the cluster file names).
    secret_file: Path | None = None
    # Joining a running cluster: a node's HTTP address ("host:port") and this node itself
    # (then `cluster_file` is not read: the cluster's description comes from that node).
    join: str | None = None
    join_node: topology.NodeSpec | None = None
    # `keeldb serve --stream-retention` / `--no-functions` (None: the streams default).
    stream_retention_seconds: float | None = None
    functions: bool = True


class ClusterNode:
    def __init__(
        self,
        config: ClusterNodeConfig,
        spec: topology.ClusterSpec,
        doc: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        doc = doc if doc is not None else empty_membership()
        mine = [n for n in member_nodes(spec, doc) if n.node_id == config.node_id]
        if not mine:
            raise topology.TopologyError(f"node {config.node_id} is not in the cluster")
        self.me = mine[0]
        self.ring = Ring.even(spec.partitions)
        # The live placement (the membership document's changes applied); the router and
        # the storage service share this dict, which the membership service updates in place.
        self.placements: dict[str, GroupPlacement] = member_placements(spec, doc)
        self.members: MembershipService | None = None
        self.transport: Any = None
        self.storage: StorageService | None = None
        self.router: Router | None = None
        self.server: ApiServer | None = None
        self.port = 0
        self._closed = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._closers: list[Any] = []
        self._backup_closer: Any = None

    @property
    def url(self) -> str:
        host = self.me.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @classmethod
    async def start(cls, config: ClusterNodeConfig) -> ClusterNode:
        from keeldb.net.transport import Transport

        if config.join is not None:
            assert config.join_node is not None and config.secret_file is not None
            secret = topology.read_secret(config.secret_file)
            endpoint = "http://" + config.join
            saved = config.data_dir / topology.CLUSTER_FILE_NAME
            try:
                spec, doc = await asyncio.get_running_loop().run_in_executor(
                    None, join_cluster, endpoint, secret, config.join_node
                )
            except (OSError, MembershipError) as error:
                if not saved.exists():
                    raise
                # A node that joined before restarts from what it learned then.
                log.warning("cannot reach %s (%s); starting from %s", endpoint, error, saved)
                spec, doc = topology.load(saved), load_doc(config.data_dir)
            else:
                config.data_dir.mkdir(parents=True, exist_ok=True)
                topology.save(spec, saved)
                save_doc(config.data_dir, doc)
        else:
            spec = topology.load(config.cluster_file)
            secret_file = config.secret_file or topology.secret_path(spec, config.cluster_file)
            secret = topology.read_secret(secret_file)
            doc = load_doc(config.data_dir)
        node = cls(config, spec, doc)
        node.members = MembershipService(node, secret, doc)
        me = node.me
        node.transport = Transport(transport_name(me.node_id), me.host, me.peer_port, secret)
        try:
            await node.transport.start()
            for other in member_nodes(spec, doc):
                if other.node_id != me.node_id:
                    node.transport.add_peer(
                        transport_name(other.node_id), other.host, other.peer_port
                    )
            if me.stores:
                node.storage = StorageService(
                    me.node_id,
                    node.ring,
                    node.placements,
                    node.transport,
                    node.call,
                    ttl_interval_seconds=config.ttl_interval_seconds,
                )
                node.storage.handlers.update(node.members.handlers())
                config.data_dir.mkdir(parents=True, exist_ok=True)
                await node.storage.open(config.data_dir, node._open_log)
                node._tasks.append(asyncio.create_task(node._claim_preferred()))
            node.server = node._build_server()
            # Backups, point-in-time restore, exports and imports (docs/backup.md).
            node._backup_closer = await backup_route.attach(node)
            node.port = await node.server.start(me.host, me.api_port)
            if node.storage is None:
                for channel, handler in node.members.handlers().items():
                    node.transport.register(channel, handler)
            node.members.start()
            for module_name in CLUSTER_SERVICES:
                closer = await importlib.import_module(module_name).attach(node)
                if closer is not None:
                    node._closers.append(closer)
        except BaseException:
            await node.close()
            raise
        return node

    async def _open_log(
        self, group_id: str, placement: GroupPlacement, group_dir: Path, store: Any, apply: Any
    ) -> Any:
        from keeldb.cluster.group import GroupLog

        # A partition's records carry commit times and are archived for point-in-time restore.
        archive = backup_route.open_archive(self, group_id, group_dir, store, apply)
        group_log = GroupLog(
            group_id,
            transport_name(self.me.node_id),
            placement.config,
            self.transport,
            group_dir / "log",
            store,
            apply,
        )
        if archive is not None:
            archive.group_log = group_log
        await group_log.start()
        return group_log

    async def _claim_preferred(self) -> None:
        """Campaign once for each group this node should lead if it has no leader yet."""
        await asyncio.sleep(PREFERRED_LEADER_DELAY_SECONDS)
        assert self.storage is not None
        for replica in self.storage.replicas.values():
            if replica.placement.preferred_leader != self.me.node_id:
                continue
            group_log = replica.log
            if group_log.is_leader or group_log.leader_hint is not None:
                continue
            campaign(group_log)

    def _build_server(self) -> ApiServer:
        verifier = (
            Verifier(self.config.credentials) if self.config.credentials is not None else None
        )
        address = self.url.removeprefix("http://").rsplit(":", 1)[0]
        self.router = Router(
            self.me.node_id,
            self.ring,
            self.placements,
            self.call,
            is_connected=lambda n: self.transport.is_connected(transport_name(n)),
            region=self.config.region,
            endpoint_address=f"{address}:{self.me.api_port}",
            follower_reads=bool(self.spec.extra.get("follower_reads", True)),
        )
        server = ApiServer(
            self.router.dispatch,
            database_module.OPERATIONS,
            verifier=verifier,
            region=self.config.region,
        )
        if self.storage is not None:
            # The metadata leader finishes transactions whose coordinator went silent.
            self.storage.partitions_view = self.router.partitions_view()
            # Requests for this node's own replicas skip the transport; the router routes
            # keys with the storage service's own ring, so they are not checked again.
            assert self.storage.ring is self.router.ring
            self.router.attach_local(self.storage)
        server.mount(STATUS_PATH, self._on_status_request)
        assert self.members is not None
        self.members.mount(server)
        if self.config.fault_endpoint:
            server.mount(FAULT_PATH, self._on_fault_request)
        return server

    async def call(self, node_id: int, channel: str, payload: Any, timeout: float) -> Any:
        """A call to a node's storage service; to this node's own without the network."""
        if node_id == self.me.node_id:
            if self.storage is None:
                from keeldb.net.transport import PeerUnavailable

                raise PeerUnavailable("this node holds no replicas")
            return await self.storage.handlers[channel](transport_name(node_id), payload)
        return await self.transport.call(transport_name(node_id), channel, payload, timeout)

    # --- status --------------------------------------------------------------------------

    async def cluster_status(self) -> dict[str, Any]:
        """Every node's view of its groups, as far as they answer within a second."""
        import orjson  # noqa: F401

        async def one(node_id: int) -> tuple[int, Any]:
            try:
                answer = await self.call(node_id, CHANNEL_STATUS, {}, STATUS_CALL_SECONDS)
            except TransportError as error:
                return node_id, {"error": repr(error)}
            return node_id, answer[1] if answer[0] == OK else {"error": answer}

        doc = self.members.doc if self.members is not None else empty_membership()
        storage_nodes = [n for n in member_nodes(self.spec, doc) if n.stores]
        results = await asyncio.gather(*(one(n.node_id) for n in storage_nodes))
        return {
            "reporter": self.me.node_id,
            "partitions": self.spec.partitions,
            "groups": {g: list(p.node_ids) for g, p in self.placements.items()},
            "views": {str(n): view for n, view in results},
            "router": None if self.router is None else dict(self.router.stats),
            **({} if self.members is None else self.members.status()),
        }

    async def _on_status_request(self, request: Any) -> RestResponse:
        import orjson

        if request.url.endswith(b"?local"):
            # This node's own view only: no calls to other nodes (cheap to poll).
            own = {} if self.storage is None else self.storage.status()
            return RestResponse(200, orjson.dumps({"reporter": self.me.node_id, "view": own}))
        return RestResponse(200, orjson.dumps(await self.cluster_status()))

    async def _on_fault_request(self, request: Any) -> RestResponse:
        import orjson

        from keeldb.net.faults import FaultCommandError

        try:
            command = orjson.loads(request.body)
            result = await self.transport.apply_fault_command(command)
        except (ValueError, FaultCommandError) as error:
            return RestResponse(400, orjson.dumps({"error": str(error)}))
        return RestResponse(200, orjson.dumps(result))

    # --- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self.members is not None:
            await self.members.close()
        if self._backup_closer is not None:
            await self._backup_closer()
        if self.server is not None:
            await self.server.close()
        if self.storage is not None:
            await self.storage.close()
        if self.transport is not None:
            await self.transport.close()

    def describe(self) -> str:
        auth = (
            "authentication disabled"
            if self.config.credentials is None
            else f"authentication enabled, {len(self.config.credentials)} access keys"
        )
        role = self.me.role
        return (
            f"KeelDB listening on {self.url} (data: {self.config.data_dir}; {auth}; "
            f"cluster node {self.me.node_id}, zone {self.me.zone}, role {role}, "
            f"peers on {self.me.host}:{self.me.peer_port})"
        )
