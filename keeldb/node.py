"""One KeelDB node: a store, a log, the database over them and the HTTP front end.

Owns: the order in which a node's parts are opened (store, database, log with recovery,
server) and closed (stop accepting, finish in-flight requests, close the log, close the
store). The CLI and the embedded mode both start nodes through `Node.start`.

It must never handle requests or records itself, and never installs signal handlers or event
loops: the caller (CLI or embedded mode) owns the process and the loop.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeldb import crypto
from keeldb.api.server import ApiServer
from keeldb.api.sigv4 import Credential, Verifier
from keeldb.engine import catalog, indexes
from keeldb.engine import database as database_module
from keeldb.engine.database import Database
from keeldb.engine.ttl import TTL_SWEEP_INTERVAL_SECONDS, TtlSweeper
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.storage.replog import LocalLog
from keeldb.workers.pool import WorkerPool

log = logging.getLogger("keeldb.node")

# The subsystems that attach to a started node, in start order (closed in reverse): each
# module has `async def attach(node: Node) -> Closer | None`, and may add operations, JSON
# services or REST mounts to the node's server and background tasks of its own.
NODE_SERVICES = (
    "keeldb.streams.service",
    "keeldb.functions.service",
    "keeldb.backup.service",
)
Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # None keeps everything in memory (lost at exit); otherwise the node's data directory.
    data_dir: Path | None = Path("keeldb-data")
    # None disables authentication: any well-formed request is accepted.
    credentials: Mapping[str, Credential] | None = None
    region: str = "us-east-1"
    # How often the Time to Live sweeper looks for expired items.
    ttl_interval_seconds: float = TTL_SWEEP_INTERVAL_SECONDS
    # How long stream records stay readable (DynamoDB keeps them for 24 hours).
    stream_retention_seconds: float = 24 * 60 * 60
    # Whether the function service (Lambda API, sandboxes, stream pollers) runs.
    functions: bool = True
    # The backup store: a directory (None: "backups" under the data directory), or an S3
    # URL ("s3://bucket/prefix") with the endpoint of an S3-compatible server.
    backup_dir: Path | None = None
    backup_s3: str | None = None
    backup_s3_endpoint: str | None = None
    # The file holding the master key that wraps the data keys (None: no encryption at rest).
    master_key_file: Path | None = None
    # Processes serving HTTP (1: this one alone; N > 1: with worker processes, keeldb.workers).
    workers: int = 1


class Node:
    """A running node; build it with `await Node.start(config)`."""

    def __init__(
        self, config: NodeConfig, store: Any, log_: Any, database: Database, server: ApiServer
    ) -> None:
        self.config = config
        self.store = store
        self.log = log_
        self.database = database
        self.server = server
        self.port = 0
        self._closed = False
        self.ttl_sweeper: TtlSweeper | None = None
        self._closers: list[Closer] = []
        self.workers: WorkerPool | None = None

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @classmethod
    async def start(cls, config: NodeConfig) -> Node:
        store, log_, database = await _open_storage(config)
        verifier = Verifier(config.credentials) if config.credentials is not None else None
        server = ApiServer(
            database.dispatch,
            database_module.OPERATIONS,
            verifier=verifier,
            region=config.region,
        )
        node = cls(config, store, log_, database, server)
        try:
            if config.workers > 1:
                node.workers = WorkerPool.bind(config)
                node.port = await node.workers.start_primary_server(server, config.host)
            else:
                node.port = await server.start(config.host, config.port)
        except BaseException:
            await log_.close()
            store.close()
            raise
        # DescribeEndpoints names this server, so that SDKs with endpoint discovery enabled
        # keep talking to it instead of being sent to a public endpoint.
        database.state[catalog.ENDPOINT_STATE_KEY] = node.url.removeprefix("http://")
        node.ttl_sweeper = TtlSweeper(database, config.ttl_interval_seconds)
        node.ttl_sweeper.start()
        indexes.ensure_background(database)  # index backfills a restart left unfinished
        try:
            for module_name in NODE_SERVICES:
                attach = importlib.import_module(module_name).attach
                closer = await attach(node)
                if closer is not None:
                    node._closers.append(closer)
            if node.workers is not None:
                await node.workers.start(node)  # last: they serve what the services added
        except BaseException:
            await node.close()
            raise
        return node

    async def close(self) -> None:
        """Stop accepting, finish in-flight requests, then close the log and the store."""
        if self._closed:
            return
        self._closed = True
        if self.workers is not None:
            await self.workers.close()  # first: their requests in flight still reach us
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.exception("a node service failed to close")
        if self.ttl_sweeper is not None:
            await self.ttl_sweeper.stop()
        await self.server.close()
        await self.log.close()
        self.store.close()

    def describe(self) -> str:
        """The startup line: where the node listens, where its data is, how it authenticates."""
        data = "in memory" if self.config.data_dir is None else str(self.config.data_dir)
        if self.config.credentials is None:
            auth = "authentication disabled"
        else:
            count = len(self.config.credentials)
            auth = f"authentication enabled, {count} access key{'s' if count != 1 else ''}"
        if self.workers is not None:
            auth += f"; {self.config.workers} processes"
        return f"KeelDB listening on {self.url} (data: {data}; {auth})"


async def _open_storage(config: NodeConfig) -> tuple[Any, Any, Database]:
    if config.data_dir is None:
        if config.master_key_file is not None:
            raise crypto.EncryptionStateError(
                "--master-key-file encrypts a data directory; an in-memory node has none"
            )
        memory_store = MemoryStore()
        database = Database(memory_store, region=config.region)
        memory_log = MemoryLog(database.apply, start_lsn=memory_store.applied_lsn())
        database.attach_log(memory_log)
        return memory_store, memory_log, database

    data_dir = Path(config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Encryption at rest is settled before the store or the log is opened: a wrong or missing
    # master key stops the start here, with nothing in the directory touched.
    keyring = crypto.open_for_data_dir(
        data_dir, config.master_key_file, backup_dir=config.backup_dir
    )
    try:
        store: Any = LmdbStore(data_dir / "store")
    except BaseException:
        if keyring is not None:
            keyring.close()
        raise
    if keyring is not None:
        store = crypto.EncryptingStore(store, keyring)  # closing it releases the keyring
    codec = None if keyring is None else keyring.record_codec
    try:
        database = Database(store, region=config.region, record_codec=codec)
        local_log = await LocalLog.open(data_dir / "wal", store, database.apply)
    except BaseException:
        store.close()
        raise
    database.attach_log(local_log)
    return store, local_log, database
