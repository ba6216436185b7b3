"""The function service on a cluster: one home node runs it, every other router forwards.

A function's code, configuration, event source mappings, their shard positions and the
queued Event invocations are the state `keeldb.functions.store` keeps on one node's disk.
On a cluster they live on the functions home: the first node of the cluster file that
routes (role "both" or "router"), the same on every node because the cluster file is. The
home runs the `FunctionService` (sandboxes, invoker, stream pollers) over its own data
directory; every other router hands each Lambda REST request, unchanged (headers, so SigV4
signatures still verify, and body), to the home's HTTP endpoint and relays its answer.

On the home, the service talks to the cluster through this node's router: DynamoDB
requests (an on-failure table, DescribeTable) are routed like a client's, stream pollers
read every partition's shards through `keeldb.cluster.streams_route`, and handlers reach the
database at this node's endpoint. Pollers are woken by records applied in any partition
replica this node holds, and otherwise look again after a short wait.

Delivery stays at least once and in order per shard across restarts of the home: a shard's
position is written to the home's disk only after its batch was processed (as on a single
node), and ShardIds, sequence numbers and iterators are the same whichever replica leads.
The trade-off: while the home is down, the Lambda API answers ServiceException and mappings
pause (nothing is lost: they continue from their saved positions when it returns); see
docs/cluster.md.

It never runs user code itself and never touches a replica's store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keeldb.api.server import Request, RestResponse
from keeldb.cluster import topology

if TYPE_CHECKING:
    from keeldb.cluster.node import ClusterNode

log = logging.getLogger("keeldb.cluster.functions")

# An Invoke may run for the longest function timeout Lambda allows (900 s), plus its start.
FORWARD_SECONDS_MAX = 900.0 + 60.0
CONNECT_SECONDS_MAX = 5.0
RESPONSE_HEAD_BYTES_MAX = 64 * 1024
# The home's answer to a forwarded request is at most Lambda's 6 MB payload in a JSON
# document, or a 50 MB zip from a code link.
RESPONSE_BYTES_MAX = 64 * 1024 * 1024
# How long an idle poller waits for a record applied on this node before it looks again.
WAIT_SECONDS_MAX = 0.5
# Headers the HTTP front end writes itself, or that belong to one connection.
_NOT_FORWARDED = frozenset(
    (
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-type",
        "date",
        "server",
        "x-amzn-requestid",
        "x-amz-crc32",
        "proxy-connection",
        "upgrade",
        "te",
        "expect",
    )
)


def functions_home(spec: topology.ClusterSpec) -> int:
    """The node that runs the function service: the first routing node of the cluster file."""
    routing = sorted(n.node_id for n in spec.nodes if n.routes)
    if not routing:
        raise topology.TopologyError("a cluster needs a routing node to serve functions")
    return routing[0]


class _RoutedDatabase:
    """What the function service asks of "its database", answered through the router."""

    def __init__(self, node: ClusterNode) -> None:
        assert node.router is not None
        self._router = node.router
        self.region = node.config.region
        self.account_id = node.router.cache.account_id
        self.store = _AppliedPositions(node)

    async def dispatch(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._router.dispatch(operation, body)
        return result


class _AppliedPositions:
    """`applied_lsn()` over this node's partition replicas: it moves whenever one of them
    applies anything, which is all a poller asks of it."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    def applied_lsn(self) -> int:
        storage = self._node.storage
        if storage is None:
            return 0
        return sum(
            int(r.store.applied_lsn()) for r in storage.replicas.values() if r.partition is not None
        )


def _records_waiter(node: ClusterNode) -> Any:
    from keeldb.engine.streams import wait_for_records

    async def wait(timeout_seconds: float) -> bool:
        timeout = min(timeout_seconds, WAIT_SECONDS_MAX)
        storage = node.storage
        databases = (
            []
            if storage is None
            else [r.database for r in storage.replicas.values() if r.partition is not None]
        )
        if not databases:
            await asyncio.sleep(timeout)
            return False
        waits = [asyncio.ensure_future(wait_for_records(db, timeout)) for db in databases]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return any(w.result() for w in done if not w.cancelled())
        finally:
            for w in waits:
                w.cancel()

    return wait


async def _start_home(node: ClusterNode) -> Any:
    from keeldb.functions import service as functions_service
    from keeldb.streams import api as streams_api

    assert node.server is not None
    root = Path(node.config.data_dir) / "functions"
    streams_dispatch = node.server.json_services[streams_api.TARGET_PREFIX][0]
    credentials = node.config.credentials

    def build() -> Any:
        return functions_service.FunctionService(
            wait_for_records=_records_waiter(node),
            root=root,
            region=node.config.region,
            account=node.router.cache.account_id if node.router is not None else "",
            endpoint_url=node.url,
            endpoint_port=node.port,
            credentials=functions_service.first_credential(credentials),
            database=_RoutedDatabase(node),
            streams=lambda: streams_dispatch,
        )

    lazy = functions_service._StartedOnDemand(build, credentials)
    # Functions, mappings and queued events on disk run again from the start.
    await lazy.started()
    for prefix in functions_service.LAMBDA_PATH_PREFIXES:
        node.server.mount(prefix, lazy.handle)
    return lazy.close


class Forwarder:
    """Hands Lambda REST requests to the functions home and relays its answers."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def handle(self, request: Request) -> RestResponse:
        from keeldb.functions.errors import ServiceException

        try:
            return await asyncio.wait_for(self._exchange(request), FORWARD_SECONDS_MAX)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            log.warning("the functions home %s:%s did not answer: %r", self.host, self.port, error)
            refused = ServiceException("The function service is unavailable; try again later.")
            return RestResponse(refused.status, refused.payload(), headers=refused.headers())

    async def _exchange(self, request: Request) -> RestResponse:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_SECONDS_MAX
        )
        try:
            head = [f"{request.method} {request.url.decode('latin-1')} HTTP/1.1"]
            for name, value in request.headers.items():
                if name not in _NOT_FORWARDED:
                    head.append(f"{name}: {value}")
            if "content-type" in request.headers:
                head.append(f"content-type: {request.headers['content-type']}")
            head.append(f"content-length: {len(request.body)}")
            head.append("connection: close")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.body)
            await writer.drain()
            raw_head = await reader.readuntil(b"\r\n\r\n")
            if len(raw_head) > RESPONSE_HEAD_BYTES_MAX:
                raise ValueError("response head too large")
            lines = raw_head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers: list[tuple[str, str]] = []
            length: int | None = None
            content_type = ""
            for line in lines[1:]:
                if not line:
                    continue
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                lower = name.lower()
                if lower == "content-length":
                    length = int(value)
                elif lower == "content-type":
                    content_type = value
                elif lower == "transfer-encoding":
                    raise ValueError("chunked answers are not relayed")
                elif lower not in _NOT_FORWARDED:
                    headers.append((name, value))
            if length is None:
                body = await reader.read(RESPONSE_BYTES_MAX)
            else:
                if length > RESPONSE_BYTES_MAX:
                    raise ValueError("response too large")
                body = await reader.readexactly(length) if request.method != "HEAD" else b""
            return RestResponse(status, body, content_type, headers)
        finally:
            writer.close()


async def attach(node: ClusterNode) -> Any:
    """Serve the Lambda API on a cluster node: run the function service on the home, forward
    to it from every other node (a storage-only node's HTTP port routes what it is sent)."""
    if node.server is None:
        return None
    if not getattr(node.config, "functions", True):
        return None
    home = functions_home(node.spec)
    if node.me.node_id == home:
        return await _start_home(node)
    from keeldb.functions.service import LAMBDA_PATH_PREFIXES

    target = node.spec.node(home)
    forwarder = Forwarder(target.host, target.api_port)
    for prefix in LAMBDA_PATH_PREFIXES:
        node.server.mount(prefix, forwarder.handle)
    return None
