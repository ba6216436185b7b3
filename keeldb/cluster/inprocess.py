"""A cluster of one node in one process, for tests of the router and the storage side.

Owns the wiring of a `Router` and a `StorageService` over a loopback "transport" (a call is
a direct call of the channel's handler) and groups of one member that always lead (an
in-memory log with the `GroupLog` surface the storage side uses). Partitions, placement,
catalog sync, transactions and streams run as on a real node, without sockets, consensus
or disks.

It must never be used by a serving node: nothing here is durable or replicated.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from keeldb.cluster import (
    catalog_sync,  # noqa: F401  (registers the catalog_sync redo kind)
    topology,
)
from keeldb.cluster.placement import place
from keeldb.cluster.ring import Ring
from keeldb.cluster.router import Router
from keeldb.cluster.storage import StorageService
from keeldb.storage.memory import MemoryLog

# A TTL sweep never runs within a test.
TTL_INTERVAL_SECONDS = 3600.0


class LeadingLog:
    """A group of one that always leads: an in-memory log with the GroupLog surface."""

    is_leader = True
    leader_hint = None

    def __init__(self, store: Any, apply: Callable[..., None]) -> None:
        self._log = MemoryLog(apply, start_lsn=store.applied_lsn())

    def read_lease(self) -> bool:
        return True

    def lag(self) -> int:
        return 0

    def staleness_seconds(self) -> float:
        return 0.0  # a group of one always knows its own progress

    async def append(self, record: bytes) -> int:
        return await self._log.append(record)

    def committed_lsn(self) -> int:
        return self._log.committed_lsn()

    async def close(self) -> None:
        await self._log.close()


class LoopbackTransport:
    """The handlers the storage side registers, by channel."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def register(self, channel: str, handler: Any) -> None:
        self.handlers[channel] = handler


@contextlib.asynccontextmanager
async def open_cluster(
    directory: Path, partitions: int
) -> AsyncIterator[tuple[Router, StorageService]]:
    """A router and the storage side of one node holding every group, stores under
    `directory`; the storage side is closed on leaving."""
    spec = topology.ClusterSpec(
        nodes=(topology.NodeSpec(1, "a", "127.0.0.1", 1, 2),), partitions=partitions
    )
    ring = Ring.even(partitions)
    placements = place(spec)
    transport = LoopbackTransport()

    async def call(node: int, channel: str, payload: Any, timeout: float) -> Any:
        return await transport.handlers[channel]("node1", payload)

    async def open_log(
        group_id: str, placement: Any, log_directory: Path, store: Any, apply: Any
    ) -> Any:
        return LeadingLog(store, apply)

    storage = StorageService(
        1, ring, placements, transport, call, ttl_interval_seconds=TTL_INTERVAL_SECONDS
    )
    await storage.open(directory, open_log)
    router = Router(
        1,
        ring,
        placements,
        call,
        is_connected=lambda n: True,
        region="us-east-1",
        endpoint_address="127.0.0.1:1",
    )
    try:
        yield router, storage
    finally:
        await storage.close()
