"""A Query or Scan of a global index the router knows to be readable is not answered "The
table does not have the specified index" by a replica whose copy of the catalog lags: a
follower sends it to its leader, a leader has the router read the catalog again. The
partition is a real database synced from a real metadata database (in memory); its group's
log is a stand-in that says who leads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster import catalog_sync, inprocess
from keeldb.cluster.cli import build_spec
from keeldb.cluster.placement import place
from keeldb.cluster.protocol import CHANNEL_OP, MODE_EVENTUAL, MODE_STRONG, REDIRECT, STALE_CATALOG
from keeldb.cluster.ring import Ring
from keeldb.cluster.storage import Replica, StorageService
from keeldb.engine import indexes
from keeldb.engine.database import Database
from keeldb.model.errors import ValidationException

PLACEMENTS = place(build_spec(3, 3, "standard", 2, "127.0.0.1"))
GROUP = "p0"
TABLE = {
    "TableName": "things",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}
ADD_INDEX = {
    "TableName": "things",
    "AttributeDefinitions": [{"AttributeName": "g", "AttributeType": "S"}],
    "GlobalSecondaryIndexUpdates": [
        {
            "Create": {
                "IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        }
    ],
}
QUERY = {
    "TableName": "things",
    "IndexName": "by_g",
    "KeyConditionExpression": "g = :g",
    "ExpressionAttributeValues": {":g": {"S": "x"}},
}


class _Log:
    """The partition group's log as the storage service asks it."""

    def __init__(self, leader: bool) -> None:
        self.is_leader = leader
        self.leader_hint = "node2"
        self.replica = type("Member", (), {"log_only": False})()

    def read_lease(self) -> bool:
        return True

    def lag(self) -> int:
        return 0

    def staleness_seconds(self) -> float:
        return 0.0


def _sync(partition: Database, meta: Database) -> None:
    record = catalog_sync.sync_record(meta.store.applied_lsn(), catalog_sync.catalog_snapshot(meta))
    asyncio.run(partition.propose(record))


def _built_index_on(meta: Database) -> None:
    asyncio.run(meta.dispatch("UpdateTable", ADD_INDEX))
    asyncio.run(indexes.run_backfills(meta))
    described = asyncio.run(meta.dispatch("DescribeTable", {"TableName": "things"}))
    assert described["Table"]["GlobalSecondaryIndexes"][0]["IndexStatus"] == "ACTIVE"


def _service(partition: Database, leader: bool) -> StorageService:
    service = StorageService(1, Ring.even(2), PLACEMENTS, None, None, ttl_interval_seconds=60)
    service.replicas[GROUP] = Replica(
        GROUP, PLACEMENTS[GROUP], partition.store, partition, _Log(leader), 0
    )
    service.serving_groups.add(GROUP)
    return service


def _lagging_partition() -> tuple[Database, Database]:
    """The metadata group with the index built, and a partition synced before it was added."""
    meta, partition = Database.in_memory(), Database.in_memory()
    asyncio.run(meta.dispatch("CreateTable", TABLE))
    _sync(partition, meta)
    _built_index_on(meta)
    return meta, partition


def _admitted(service: StorageService, partition: Database, mode: str, index: Any) -> Any:
    """What `admit` makes of a Query of the index, as a router that knows the table sends it."""
    payload: dict[str, Any] = {"g": GROUP, "op": "Query", "body": QUERY, "mode": mode}
    payload["tables"] = {"things": asyncio.run(_table_id(partition))}
    if index is not None:
        payload["index"] = index
    return service.admit("node1", payload, False)


async def _table_id(db: Database) -> str:
    described = await db.dispatch("DescribeTable", {"TableName": "things"})
    return str(described["Table"]["TableId"])


def test_a_follower_without_the_built_index_sends_the_read_to_its_leader() -> None:
    meta, partition = _lagging_partition()
    service = _service(partition, leader=False)
    assert _admitted(service, partition, MODE_EVENTUAL, ["things", "by_g"]) == [REDIRECT, 2]
    # Told nothing about the index (the router does not know it), the replica's database
    # answers as a single node does.
    admitted = _admitted(service, partition, MODE_EVENTUAL, None)
    assert isinstance(admitted, Replica)
    with pytest.raises(ValidationException, match="does not have the specified index: by_g"):
        asyncio.run(admitted.database.dispatch("Query", QUERY))
    # Synced, the partition builds its own entries of the index: a follower still sends
    # the read on until it has applied the whole build.
    _sync(partition, meta)
    assert _admitted(service, partition, MODE_EVENTUAL, ["things", "by_g"]) == [REDIRECT, 2]
    asyncio.run(indexes.run_backfills(partition))
    admitted = _admitted(service, partition, MODE_EVENTUAL, ["things", "by_g"])
    assert isinstance(admitted, Replica)
    assert asyncio.run(admitted.database.dispatch("Query", QUERY))["Count"] == 0


@pytest.mark.parametrize("mode", [MODE_EVENTUAL, MODE_STRONG])
def test_a_leader_without_the_index_has_the_router_read_the_catalog_again(mode: str) -> None:
    meta, partition = _lagging_partition()
    service = _service(partition, leader=True)
    assert _admitted(service, partition, mode, ["things", "by_g"]) == [STALE_CATALOG]
    # With the index, still building: the leader's database answers (as a single node does).
    _sync(partition, meta)
    admitted = _admitted(service, partition, mode, ["things", "by_g"])
    assert isinstance(admitted, Replica)
    with pytest.raises(ValidationException, match="Cannot read from backfilling"):
        asyncio.run(admitted.database.dispatch("Query", QUERY))
    asyncio.run(indexes.run_backfills(partition))
    assert asyncio.run(admitted.database.dispatch("Query", QUERY))["Count"] == 0


async def _recorded(router: Any, sent: list[Any]) -> None:
    """Record the op and the "index" of every partition operation the router sends."""
    group_call = router._group_call

    async def recording(group_id: str, channel: str, payload: Any, *args: Any) -> Any:
        if channel == CHANNEL_OP:
            sent.append((payload.get("op"), payload.get("index")))
        return await group_call(group_id, channel, payload, *args)

    router._group_call = recording


@pytest.mark.interpreted  # records the router's calls by replacing its method
def test_the_router_names_the_index_its_catalog_has(tmp_path: Path) -> None:
    async def main() -> tuple[list[Any], Any]:
        sent: list[Any] = []
        async with inprocess.open_cluster(tmp_path, 2) as (router, _storage):
            await router.dispatch("CreateTable", TABLE)
            await router.dispatch(
                "PutItem", {"TableName": "things", "Item": {"pk": {"S": "a"}, "g": {"S": "x"}}}
            )
            await router.dispatch("UpdateTable", ADD_INDEX)
            for _ in range(400):
                described = await router.dispatch("DescribeTable", {"TableName": "things"})
                if described["Table"]["GlobalSecondaryIndexes"][0]["IndexStatus"] == "ACTIVE":
                    break
                await asyncio.sleep(0.025)
            await _recorded(router, sent)
            answer = await router.dispatch("Query", QUERY)
            await router.dispatch("Scan", {"TableName": "things"})
            try:
                await router.dispatch("Query", dict(QUERY, IndexName="nope"))
            except ValidationException as error:
                unknown: Any = error
            else:
                unknown = None
        return sent, (answer["Count"], unknown)

    sent, (count, unknown) = asyncio.run(main())
    assert count == 1
    assert "does not have the specified index: nope" in str(unknown)
    # The Query of by_g asked both partitions (a global index is read from all) naming the
    # index; the Scan and the Query of an index nobody has named none.
    assert sent == [
        ("Query", ["things", "by_g"]),
        ("Query", ["things", "by_g"]),
        ("Scan", None),
        ("Scan", None),
        ("Query", None),
    ], sent
