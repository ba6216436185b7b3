"""Catalog changes while a partition has no leader, on a real cluster of processes.

A partition whose leader was just killed has no leader for an election's time (longer on a
loaded machine). A CreateTable sent then must still succeed, and the new table be served
through every router as soon as CreateTable answers, as DynamoDB serves a table it has
created: the catalog change waits (bounded) until every partition knows the table, and a
request that reaches a partition that does not know it yet waits for the catalog sync
rather than failing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(180)]

KEYS = 16  # enough keys that both partitions hold some
LEADERS_APART_SECONDS_MAX = 60.0  # placement gives idle groups back to their preferred nodes


def _create(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _leaders_apart(cluster: Any) -> tuple[int, int]:
    """The metadata group's leader and the leader of a partition on another node (leaders
    spread over the nodes shortly after start, if the first elections did not)."""
    deadline = time.monotonic() + LEADERS_APART_SECONDS_MAX
    while True:
        meta = cluster.leader_of("meta")
        apart = [n for n in (cluster.leader_of(g) for g in ("p0", "p1")) if n != meta]
        if apart:
            return meta, apart[0]
        assert time.monotonic() < deadline, "every group still leads on one node"
        time.sleep(0.5)


def _use(client: Any, name: str, tag: str) -> None:
    """Write and strongly read keys of every partition; any error fails the test."""
    for number in range(KEYS):
        key = {"pk": {"S": f"{tag}-{number}"}}
        client.put_item(TableName=name, Item={**key, "v": {"S": tag}})
        item = client.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"]
        assert item["v"]["S"] == tag


def test_tables_created_as_a_partition_leader_dies_are_created_and_served_at_once(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(nodes=3, partitions=2)
    meta, victim = _leaders_apart(cluster)
    other = next(n for n in cluster.node_ids if n not in (meta, victim))
    clients = {n: cluster.client(n) for n in (meta, other)}
    cluster.kill(victim)
    killed = time.monotonic()
    # Through the metadata leader's own router, at once, and through another router.
    _create(clients[meta], "first")
    print(f"CreateTable answered {time.monotonic() - killed:.2f} s after the kill")
    _create(clients[other], "second")
    for node, client in clients.items():
        for name in ("first", "second"):
            _use(client, name, f"n{node}")
            assert client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"
    # The node comes back and catches up: it serves both tables too.
    cluster.restart(victim)
    cluster.wait_serving([victim])
    for name in ("first", "second"):
        _use(cluster.client(victim), name, f"n{victim}")
