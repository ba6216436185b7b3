"""A catalog change answers once every partition has it, waiting (bounded) for a partition
that has no leader yet, on a storage service whose partitions are reached through a fake of
the node's calls (the metadata group is a real database over an in-memory log)."""

from __future__ import annotations

import asyncio
from typing import Any

from keeldb.cluster import catalog_sync  # noqa: F401  (registers the catalog_sync redo kind)
from keeldb.cluster.cli import build_spec
from keeldb.cluster.placement import META_GROUP, place
from keeldb.cluster.protocol import CHANNEL_SYNC, OK, REDIRECT
from keeldb.cluster.ring import Ring
from keeldb.cluster.storage import CATALOG_SYNC_SECONDS_MAX, StorageService
from keeldb.cluster.storage import Replica as StorageReplica
from keeldb.engine.database import Database
from keeldb.storage.memory import MemoryLog, MemoryStore

ELECTION_SECONDS = 1.0  # p0 has no leader for this long
PLACEMENTS = place(build_spec(3, 3, "standard", 2, "127.0.0.1"))
CREATE = {
    "TableName": "fresh",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


class _LeadingLog:
    """The metadata group's log as the storage service asks it: this node leads, leased."""

    is_leader = True
    leader_hint = "node1"

    def read_lease(self) -> bool:
        return True


class _Partitions:
    """Catalog syncs as the partitions' members answer them: p0's members know no leader
    until `leader_after` seconds (never, if None), p1 takes every sync at once."""

    def __init__(self, leader_after: float | None) -> None:
        self.leader_after = leader_after
        self.started: float | None = None

    async def __call__(self, node: int, channel: str, payload: Any, timeout: float) -> Any:
        assert channel == CHANNEL_SYNC
        now = asyncio.get_running_loop().time()
        if self.started is None:
            self.started = now
        if payload["g"] == "p0" and (
            self.leader_after is None or now - self.started < self.leader_after
        ):
            return [REDIRECT, None]
        return [OK, None]


def _metadata_leader(partitions: _Partitions) -> StorageService:
    service = StorageService(1, Ring.even(2), PLACEMENTS, None, partitions, ttl_interval_seconds=60)
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    log: Any = _LeadingLog()
    service.replicas[META_GROUP] = StorageReplica(
        META_GROUP, PLACEMENTS[META_GROUP], db.store, db, log, None
    )
    return service


async def _create(service: StorageService) -> tuple[list[Any], float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await service.on_catalog(
        "node1", {"op": "CreateTable", "body": CREATE, "changes": True}
    )
    return answer, loop.time() - started


def test_a_table_created_while_a_partition_elects_answers_once_that_partition_has_it() -> None:
    service = _metadata_leader(_Partitions(leader_after=ELECTION_SECONDS))
    answer, seconds = asyncio.run(_create(service))
    assert answer[0] == OK
    lsn = service.replicas[META_GROUP].store.applied_lsn()
    assert service._synced == {"p0": lsn, "p1": lsn}
    assert ELECTION_SECONDS <= seconds < CATALOG_SYNC_SECONDS_MAX


def test_a_partition_without_a_leader_delays_the_answer_at_most_the_bound() -> None:
    service = _metadata_leader(_Partitions(leader_after=None))
    answer, seconds = asyncio.run(_create(service))
    # The table was created: the client hears so (a CreateTable cannot be sent again), and
    # the maintenance loop syncs p0 once it has a leader.
    assert answer[0] == OK
    assert "p0" not in service._synced and "p1" in service._synced
    assert CATALOG_SYNC_SECONDS_MAX <= seconds < CATALOG_SYNC_SECONDS_MAX + 1.0
