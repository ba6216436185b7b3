"""A worker process: `python -m keeldb.workers.worker --listen-fd L --channel-fd C`.

Owns: the life of one worker. It inherits from the primary a listening socket (one of the
SO_REUSEPORT group of the node's port) and one end of a Unix socket pair (the channel), waits
for the primary's HELLO (what to serve, the credentials, the data directory), opens the store
read-only, serves HTTP with the same front end as the primary (`ApiServer`), answers the
local reads itself and forwards every other request to the primary.

It stops on SIGTERM (finishing its requests in flight) and at once when the
primary goes away (the channel closes; Linux's parent-death signal is a second line), so
that a primary killed with -9 never leaves workers serving reads of a node nobody writes.
It never writes to the store, never opens the log and never prints to stdout (the primary's
startup line is the only one scripts wait for).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from keeldb.api.server import TARGET_PREFIX, ApiServer
from keeldb.api.sigv4 import Credential, Verifier
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.model.errors import InternalServerError
from keeldb.workers.channel import PrimaryFailedError, PrimaryGoneError, WorkerChannel
from keeldb.workers.readonly import CatalogView, ReadOnlyLmdbStore, table_names

log = logging.getLogger("keeldb.workers")

# The DynamoDB operations a worker answers from its read-only view of the store. They read
# committed state only (never the primary's pending overlay, which no read sees either) and
# change nothing but per-process read metering. Everything else goes to the primary,
# including TransactGetItems (it must see the primary's holds of prepared transactions) and
# the streams, backups and PartiQL operations.
LOCAL_OPERATIONS = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "DescribeTable",
        "ListTables",
        "DescribeTimeToLive",
        "ListTagsOfResource",
        "DescribeEndpoints",
        "DescribeLimits",
    }
)
HELLO_SECONDS_MAX = 60.0  # the primary sends HELLO at once; a silent one is broken
INTERNAL_ERROR_MESSAGE = "Internal server error"
_PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>


def _die_with_parent() -> None:
    """Have Linux send SIGTERM when the primary dies, even before the channel says so."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Worker:
    """One worker's front end over the channel and, with local reads, the store."""

    def __init__(self, channel: WorkerChannel, settings: dict[str, Any]) -> None:
        self.channel = channel
        self.settings = settings
        self.store: ReadOnlyLmdbStore | None = None
        self.database: Database | None = None
        self.catalog: CatalogView | None = None
        self.local_operations: frozenset[str] = frozenset()
        if settings["local_reads"]:
            self.store = ReadOnlyLmdbStore(Path(settings["data_dir"]) / "store")
            self.database = Database(self.store, region=settings["region"])
            self.database.state[catalog.ENDPOINT_STATE_KEY] = settings["endpoint"]
            self.catalog = CatalogView(self.database, self.store)
            self.local_operations = LOCAL_OPERATIONS
        credentials = settings["credentials"]
        verifier = None
        if credentials is not None:
            verifier = Verifier(
                {key: Credential(key, secret, token) for key, secret, token in credentials}
            )
        self.server = ApiServer(
            self.dispatch,
            frozenset(settings["operations"]),
            verifier=verifier,
            region=settings["region"],
        )
        for prefix, operations in settings["json_services"]:
            self.server.add_json_service(prefix, self._forwarding(prefix), frozenset(operations))
        for prefix in settings["mounts"]:
            self.server.mount(prefix, channel.call_rest)

    async def dispatch(self, operation: str, body: dict[str, Any]) -> Any:
        if operation in self.local_operations:
            assert self.catalog is not None and self.database is not None
            self.catalog.refresh(table_names(operation, body))
            return await self.database.dispatch(operation, body)
        try:
            return await self.channel.call_json(TARGET_PREFIX, operation, body)
        except (PrimaryGoneError, PrimaryFailedError):
            # The outcome is unknown (the primary may have applied the write): a 500, which
            # SDKs retry, as DynamoDB's own InternalServerError.
            raise InternalServerError(INTERNAL_ERROR_MESSAGE) from None

    def _forwarding(self, service: str) -> Any:
        async def dispatch(operation: str, body: dict[str, Any]) -> Any:
            try:
                return await self.channel.call_json(service, operation, body)
            except (PrimaryGoneError, PrimaryFailedError):
                raise InternalServerError(INTERNAL_ERROR_MESSAGE) from None

        return dispatch

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


async def run(listen_fd: int, channel_fd: int) -> int:
    loop = asyncio.get_running_loop()
    channel_socket = socket.socket(fileno=channel_fd)
    _, channel = await loop.create_unix_connection(WorkerChannel, sock=channel_socket)
    try:
        settings = await asyncio.wait_for(channel.hello, HELLO_SECONDS_MAX)
    except (TimeoutError, PrimaryGoneError):
        return 1
    logging.getLogger().setLevel(settings["log_level"].upper())
    worker = Worker(channel, settings)
    listen_socket = socket.socket(fileno=listen_fd)
    await worker.server.start("", 0, sock=listen_socket)
    channel.send_ready(os.getpid())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    closed: asyncio.Future[Any] = channel.closed
    done, _ = await asyncio.wait({stopped, closed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if closed in done:
        log.warning("worker %d: the primary is gone, stopping", os.getpid())
    # With the primary alive, requests in flight finish (their forwarded calls are answered);
    # without it they fail at once, so this returns quickly either way.
    await worker.server.close()
    channel.close()
    worker.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keeldb-worker")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    logging.basicConfig(
        level="WARNING",
        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
        stream=sys.stderr,
    )
    # The terminal's ^C reaches the whole process group: the primary decides when a worker
    # stops (it sends SIGTERM once its own requests are answered), so a worker ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return uvloop.run(run(args.listen_fd, args.channel_fd))


if __name__ == "__main__":
    sys.exit(main())
