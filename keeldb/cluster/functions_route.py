"""The function service on a cluster: the metadata leader runs it, its state is replicated
by the metadata group, every other node forwards Lambda requests to it.

A function's code, configuration, event source mappings, their shard positions and the
queued Event invocations are what `keeldb.functions.store` keeps under a data directory. On
a cluster that directory is a working copy: every write of it is first proposed to the
metadata group as a "functions_state" redo record (keys under `STATE_PREFIX` in the
metadata store), and only then made on the local disk. The node whose metadata replica
leads with a lease is the **functions home**: it copies the replicated state into its
directory and runs the `FunctionService` (sandboxes, invoker, stream pollers) over it; a node
that stops leading stops its service. Only the leader's own node may write the state (its
write goes to its own replica, which refuses once it does not lead), so a deposed home can
never overwrite what its successor wrote.

Every other node hands each Lambda REST request, unchanged (headers, so SigV4 signatures
still verify, and body), to the metadata leader's HTTP endpoint and relays its answer; a
node asked that is not (or no longer) the home says so, and the sender tries the other
members of the metadata group, within a bounded wait.

On the home, the service talks to the cluster through this node's router: DynamoDB requests
(an on-failure table) are routed like a client's, stream pollers read every partition's
shards through `keeldb.cluster.streams_route`, and handlers reach the database at the
home's endpoint. Delivery stays at least once and in order per shard across a change of
home: a shard's position is replicated only after its batch was processed, and ShardIds
and sequence numbers are the same whichever replica leads, so a new home continues each
mapping from the last replicated position (a batch in flight at the change may run twice).

It never runs user code itself and never touches a partition's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from keeldb.api.server import Request, RestResponse
from keeldb.cluster.placement import META_GROUP
from keeldb.engine.database import Database, redo_kind
from keeldb.functions.store import CATALOG_FILE, FunctionStore, write_atomically
from keeldb.model.keys import prefix_end

if TYPE_CHECKING:
    from keeldb.cluster.node import ClusterNode

log = logging.getLogger("keeldb.cluster.functions")

STATE_KIND = "functions_state"
# The metadata store's keys of the function state: "catalog", "positions/<mapping uuid>",
# "events/<event id>", "zips/<sha256>" after this prefix (no other store key starts so).
STATE_PREFIX = b"fn/"
# How often a node checks whether it became, or stopped being, the functions home.
HOME_TICK_SECONDS = 0.5
# A replicated write of the state: one proposal to the metadata group.
MIRROR_SECONDS_MAX = 15.0
# A request waits this long for some node to be the home (an election, a start).
HOME_WAIT_SECONDS_MAX = 10.0
HOME_RETRY_PAUSE_SECONDS = 0.1
# An Invoke may run for the longest function timeout Lambda allows (900 s), plus its start.
FORWARD_SECONDS_MAX = 900.0 + 60.0
CONNECT_SECONDS_MAX = 5.0
RESPONSE_HEAD_BYTES_MAX = 64 * 1024
# The home's answer to a forwarded request is at most Lambda's 6 MB payload in a JSON
# document, or a zip from a code link.
RESPONSE_BYTES_MAX = 64 * 1024 * 1024
# How long an idle poller waits for a record applied on this node before it looks again.
WAIT_SECONDS_MAX = 0.5
# Marks a request one node forwarded to another (it is never forwarded again), and the
# answer of a node that is not the home.
FORWARDED_HEADER = "x-keeldb-forwarded"
NOT_HOME_HEADER = "x-keeldb-not-home"
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
        FORWARDED_HEADER,
        NOT_HOME_HEADER,
    )
)


# --- The replicated state ---------------------------------------------------------------------


@redo_kind(STATE_KIND)
def apply_functions_state(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Write the state keys the home changed, in one store write."""
    if lsn <= db.store.applied_lsn():
        return  # Replayed at recovery, and already in the store.
    puts = [(STATE_PREFIX + key.encode("utf-8"), bytes(value)) for key, value in record["puts"]]
    deletes = [STATE_PREFIX + key.encode("utf-8") for key in record["deletes"]]
    db.store.write(puts, deletes, applied_lsn=lsn)


def has_state(db: Database) -> bool:
    """Whether any function state was ever replicated (a cluster that never used functions
    starts no sandboxes)."""
    for _ in db.store.scan(STATE_PREFIX, prefix_end(STATE_PREFIX)):
        return True
    return False


def state_entries(db: Database) -> list[tuple[str, bytes]]:
    """Every key of the replicated function state and its value."""
    return [
        (key[len(STATE_PREFIX) :].decode("utf-8"), bytes(value))
        for key, value in db.store.scan(STATE_PREFIX, prefix_end(STATE_PREFIX))
    ]


_STATE_PATHS = {"catalog": CATALOG_FILE}
_STATE_FOLDERS = {"positions": ".json", "events": ".event", "zips": ".zip"}


def _state_path(root: Path, key: str) -> Path | None:
    if key in _STATE_PATHS:
        return root / _STATE_PATHS[key]
    folder, _, name = key.partition("/")
    suffix = _STATE_FOLDERS.get(folder)
    if suffix is None or not name or "/" in name or name.startswith("."):
        return None
    return root / folder / f"{name}{suffix}"


def materialize(root: Path, entries: list[tuple[str, bytes]]) -> None:
    """Make `root` hold exactly the replicated state (unzipped code is made again from the
    zips when needed; sandbox working directories are left alone)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / CATALOG_FILE).unlink(missing_ok=True)
    for folder in _STATE_FOLDERS:
        shutil.rmtree(root / folder, ignore_errors=True)
    for key, value in entries:
        path = _state_path(root, key)
        if path is None:
            log.warning("unknown function state key %r left out", key)
            continue
        write_atomically(path, value)


class MirroredStore(FunctionStore):
    """A `FunctionStore` whose every durable write is first replicated by the metadata group
    (`mirror(puts, deletes)`, blocking, from the worker threads the service writes in)."""

    def __init__(self, root: Path, mirror: Any, mirror_later: Any) -> None:
        super().__init__(root)
        self._mirror = mirror
        self._mirror_later = mirror_later

    def write_catalog(self, generation: int, data: bytes) -> None:
        with self._catalog_lock:
            if generation <= self._written_generation:
                return  # a newer snapshot is already written
            self._mirror([("catalog", data)], [])
            write_atomically(self.root / CATALOG_FILE, data)
            self._written_generation = generation

    def write_positions(self, uuid: str, positions: dict[str, Any]) -> None:
        data = orjson.dumps(positions)
        self._mirror([(f"positions/{uuid}", data)], [])
        write_atomically(self.root / "positions" / f"{uuid}.json", data)

    def forget_positions(self, uuid: str) -> None:
        self._mirror([], [f"positions/{uuid}"])
        super().forget_positions(uuid)

    def save_event(self, event_id: str, name: str, received: float, payload: bytes) -> None:
        head = orjson.dumps({"name": name, "received": received})
        self._mirror([(f"events/{event_id}", head + b"\n" + payload)], [])
        super().save_event(event_id, name, received, payload)

    def drop_event(self, event_id: str) -> None:
        # Called on the event loop when an event ran: not waited for. Should the home change
        # before it is replicated, the event runs again (at least once, as Lambda's queue).
        self._mirror_later([], [f"events/{event_id}"])
        super().drop_event(event_id)

    def save_code(self, name: str, data: bytes) -> str:
        sha = super().save_code(name, data)
        self._mirror([(f"zips/{sha}", data)], [])
        return sha

    def drop_code(self, name: str, keep_sha256_hex: str | None = None) -> None:
        zips = self.root / "zips"
        before = {p.stem for p in zips.glob("*.zip")} if zips.exists() else set()
        super().drop_code(name, keep_sha256_hex)
        after = {p.stem for p in zips.glob("*.zip")} if zips.exists() else set()
        if before - after:
            self._mirror([], [f"zips/{sha}" for sha in sorted(before - after)])


# --- The function service's view of the cluster ---------------------------------------------


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


class StateUnavailable(Exception):
    """This node's metadata replica does not lead: it may not write the function state."""


# --- The home ---------------------------------------------------------------------------------


class Home:
    """Runs the function service while this node's metadata replica leads with a lease: from
    the first Lambda request on, or at once where function state was replicated before."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.api: Any = None
        self.service: Any = None
        # Set while the service starts and runs: its writes of the state are allowed then.
        self.serving = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def meta(self) -> Any:
        storage = self.node.storage
        return None if storage is None else storage.replicas.get(META_GROUP)

    def leading(self) -> bool:
        meta = self.meta
        return meta is not None and bool(meta.log.is_leader) and bool(meta.log.read_lease())

    def leader_hint(self) -> int | None:
        """The node this one believes leads the metadata group."""
        meta = self.meta
        if meta is not None:
            if meta.log.is_leader:
                return int(self.node.me.node_id)
            leader = meta.leader()
            if leader is not None:
                return int(leader)
        router = self.node.router
        return None if router is None else router.leaders.get(META_GROUP)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="keeldb-fn-home")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            await self._stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HOME_TICK_SECONDS)
            try:
                if self.leading() and self.api is None and has_state(self.meta.database):
                    await self.started()
                elif self.service is not None and not self.meta.log.is_leader:
                    # Stopped when the leadership is lost, not when a lease renewal is late:
                    # a leader's writes are fenced by consensus anyway.
                    async with self._lock:
                        if not self.meta.log.is_leader:
                            log.info("no longer the functions home: stopping the service")
                            await self._stop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the functions home failed to start or stop; retrying")

    async def started(self) -> Any:
        """The Lambda API of this node's service, started if needed; None if not the home."""
        if self.api is not None:
            return self.api
        async with self._lock:
            if self.api is None and self.leading() and not self._closing:
                await self._start()
        return self.api

    async def _start(self) -> None:
        from keeldb.functions import service as functions_service
        from keeldb.functions.rest import LambdaApi
        from keeldb.streams import api as streams_api

        node = self.node
        assert node.server is not None and node.router is not None
        meta = self.meta
        assert meta is not None
        root = Path(node.config.data_dir) / "functions"
        # The lease means this replica has applied everything chosen before it: its copy of
        # the state is the newest.
        await asyncio.to_thread(materialize, root, state_entries(meta.database))
        streams_dispatch = node.server.json_services[streams_api.TARGET_PREFIX][0]
        loop = asyncio.get_running_loop()

        def mirror(puts: list[tuple[str, bytes]], deletes: list[str]) -> None:
            future = asyncio.run_coroutine_threadsafe(self.write_state(puts, deletes), loop)
            future.result(MIRROR_SECONDS_MAX)

        def mirror_later(puts: list[tuple[str, bytes]], deletes: list[str]) -> None:
            task = loop.create_task(self.write_state(puts, deletes))
            task.add_done_callback(_log_failure)

        service = functions_service.FunctionService(
            wait_for_records=_records_waiter(node),
            root=root,
            region=node.config.region,
            account=node.router.cache.account_id,
            endpoint_url=node.url,
            endpoint_port=node.port,
            credentials=functions_service.first_credential(node.config.credentials),
            database=_RoutedDatabase(node),
            streams=lambda: streams_dispatch,
            store=MirroredStore(root, mirror, mirror_later),
        )
        self.serving = True
        try:
            await service.start()
        except BaseException:
            self.serving = False
            with contextlib.suppress(Exception):
                await service.close()  # whatever part of it started
            raise
        self.service = service
        self.api = LambdaApi(service, credentials=node.config.credentials)
        log.info("this node is the functions home")

    async def _stop(self) -> None:
        service, self.service, self.api = self.service, None, None
        self.serving = False
        if service is not None:
            await service.close()

    async def write_state(self, puts: list[tuple[str, bytes]], deletes: list[str]) -> None:
        """Replicate a change of the function state through this node's own metadata replica,
        which must lead: a node that is not the home can never write it."""
        from keeldb.cluster.group import NotLeader

        meta = self.meta
        # Consensus fences a deposed home: its proposal cannot be chosen under an old ballot.
        if meta is None or not meta.log.is_leader or not self.serving:
            raise StateUnavailable("this node is not the functions home")
        record = {"kind": STATE_KIND, "puts": [[k, v] for k, v in puts], "deletes": deletes}
        try:
            await meta.database.propose(record)
        except NotLeader as error:
            raise StateUnavailable("this node is no longer the functions home") from error


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a function state change was not replicated: %r", task.exception())


# --- Requests ---------------------------------------------------------------------------------


class FunctionsFront:
    """The Lambda API of every node: served by the home, forwarded to it by the others."""

    def __init__(self, node: ClusterNode, home: Home) -> None:
        self.node = node
        self.home = home

    async def handle(self, request: Request) -> RestResponse:
        from keeldb.functions.errors import ServiceException

        forwarded = FORWARDED_HEADER in request.headers
        api = await self.home.started()
        if api is not None:
            response: RestResponse = await api.handle(request)
            return response
        if forwarded:
            # The sender thought this node was the home: let it look elsewhere.
            refused = ServiceException("This node is not the functions home.")
            return RestResponse(
                503, refused.payload(), headers=[*refused.headers(), (NOT_HOME_HEADER, "1")]
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOME_WAIT_SECONDS_MAX
        members = list(self.node.placements[META_GROUP].node_ids)
        tried = 0
        while loop.time() < deadline:
            target = self.home.leader_hint()
            if target is None or target == self.node.me.node_id:
                target = members[tried % len(members)]
            tried += 1
            if target == self.node.me.node_id:
                api = await self.home.started()
                if api is not None:
                    response = await api.handle(request)
                    return response
                await asyncio.sleep(HOME_RETRY_PAUSE_SECONDS)
                continue
            spec = self.node.spec.node(target)
            try:
                answer = await asyncio.wait_for(
                    _exchange(spec.host, spec.api_port, request), FORWARD_SECONDS_MAX
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                log.debug("functions home candidate %s did not answer: %r", target, error)
                self._forget(target)
                await asyncio.sleep(HOME_RETRY_PAUSE_SECONDS)
                continue
            if any(name.lower() == NOT_HOME_HEADER for name, _ in answer.headers):
                self._forget(target)
                await asyncio.sleep(HOME_RETRY_PAUSE_SECONDS)
                continue
            return answer
        refused = ServiceException("The function service is unavailable; try again later.")
        return RestResponse(refused.status, refused.payload(), headers=refused.headers())

    def _forget(self, node_id: int) -> None:
        router = self.node.router
        if router is not None and router.leaders.get(META_GROUP) == node_id:
            members = [n for n in self.node.placements[META_GROUP].node_ids if n != node_id]
            if members:
                router.leaders[META_GROUP] = members[0]


async def _exchange(host: str, port: int, request: Request) -> RestResponse:
    """One HTTP/1.1 request to another node's front end, and its answer."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port), CONNECT_SECONDS_MAX
    )
    try:
        head = [f"{request.method} {request.url.decode('latin-1')} HTTP/1.1"]
        for name, value in request.headers.items():
            if name not in _NOT_FORWARDED:
                head.append(f"{name}: {value}")
        if "content-type" in request.headers:
            head.append(f"content-type: {request.headers['content-type']}")
        head.append(f"content-length: {len(request.body)}")
        head.append(f"{FORWARDED_HEADER}: 1")
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
            elif lower == NOT_HOME_HEADER or lower not in _NOT_FORWARDED:
                headers.append((name, value))
        if request.method == "HEAD":
            body = b""
        elif length is None:
            body = await reader.read(RESPONSE_BYTES_MAX)
        elif length > RESPONSE_BYTES_MAX:
            raise ValueError("response too large")
        else:
            body = await reader.readexactly(length)
        return RestResponse(status, body, content_type, headers)
    finally:
        writer.close()


# --- Attaching --------------------------------------------------------------------------------


async def attach(node: ClusterNode) -> Any:
    """Serve the Lambda API on a cluster node; run the function service while this node's
    metadata replica leads."""
    if node.server is None or not getattr(node.config, "functions", True):
        return None
    home = Home(node)
    front = FunctionsFront(node, home)
    from keeldb.functions.service import LAMBDA_PATH_PREFIXES

    for prefix in LAMBDA_PATH_PREFIXES:
        node.server.mount(prefix, front.handle)
    if home.meta is not None:
        if home.leading() and has_state(home.meta.database):
            await home.started()  # functions and mappings on record run again from the start
        home.start()
    return home.close
