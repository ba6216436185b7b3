"""The router waits through an election and a late catalog sync instead of giving up.

In-process, with a fake of the calls a router makes to storage nodes: the groups answer as a
cluster does while a partition elects a leader (no node knows one, or a follower still
names the leader that died) or while a partition's catalog sync waits for its new leader
(it does not know the table yet). Each test also runs the router with the bounds it used to
have (a dozen calls, 50 ms apart; three reroutes), which must fail the same scenario.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.cluster import catalog_sync
from keeldb.cluster import router as router_module
from keeldb.cluster.cli import build_spec
from keeldb.cluster.placement import place
from keeldb.cluster.protocol import (
    CHANNEL_OP,
    CHANNEL_TABLES,
    MODE_STRONG,
    MODE_WRITE,
    OK,
    REDIRECT,
    STALE_CATALOG,
)
from keeldb.cluster.ring import Ring
from keeldb.cluster.router import Router
from keeldb.engine.database import Database
from keeldb.model.errors import InternalServerError
from keeldb.net.transport import CallTimeout, PeerUnavailable
from keeldb.storage.memory import MemoryLog, MemoryStore

ELECTION_SECONDS = 1.5  # a failover on a loaded machine: well past the old bounds
PLACEMENTS = place(build_spec(3, 3, "standard", 2, "127.0.0.1"))


def _old_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router as it was: 12 calls per group 50 ms apart, 3 reroutes."""
    monkeypatch.setattr(router_module, "ATTEMPTS_MAX", 12)
    monkeypatch.setattr(router_module, "RETRY_PAUSE_SECONDS_MAX", router_module.RETRY_PAUSE_SECONDS)
    monkeypatch.setattr(router_module, "REROUTES_MAX", 3)


class _Cluster:
    """Storage nodes as a router reaches them: `answer(node, channel, payload, elapsed)`
    decides each answer (or raises the transport's error); every call is recorded."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[int, str]] = []
        self.started: float | None = None

    async def __call__(self, node: int, channel: str, payload: Any, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        if self.started is None:
            self.started = loop.time()
        self.calls.append((node, channel))
        return self.answer(node, channel, payload, loop.time() - self.started)


def _router(cluster: _Cluster, dead: frozenset[int] = frozenset()) -> Router:
    return Router(
        1,
        Ring.even(2),
        PLACEMENTS,
        cluster,
        is_connected=lambda node: node not in dead,
        region="us-east-1",
        endpoint_address="127.0.0.1:1",
    )


async def _strong_call(router: Router, group: str, mode: str = MODE_STRONG) -> Any:
    deadline = asyncio.get_running_loop().time() + router_module.REQUEST_SECONDS_MAX
    payload = {"g": group, "op": "GetItem", "body": {}, "mode": mode}
    return await router._group_call(group, CHANNEL_OP, payload, mode, deadline)


def _no_leader_then(leader: int) -> _Cluster:
    """No node knows a leader of the group until ELECTION_SECONDS, then `leader` leads."""

    def answer(node: int, channel: str, payload: Any, elapsed: float) -> Any:
        if elapsed < ELECTION_SECONDS:
            return [REDIRECT, None]
        return [OK, {"served by": node}, 7] if node == leader else [REDIRECT, leader]

    return _Cluster(answer)


def test_a_request_waits_through_an_election_with_growing_pauses() -> None:
    cluster = _no_leader_then(3)
    answer = asyncio.run(_strong_call(_router(cluster), "p0"))
    assert answer == {"served by": 3}
    # Growing pauses: far fewer calls than 50 ms apart would have made in that time.
    assert len(cluster.calls) < ELECTION_SECONDS / router_module.RETRY_PAUSE_SECONDS / 2


def test_the_old_bounds_give_up_during_an_election(monkeypatch: pytest.MonkeyPatch) -> None:
    _old_bounds(monkeypatch)
    with pytest.raises(InternalServerError):
        asyncio.run(_strong_call(_router(_no_leader_then(3)), "p0"))


def _dead_leader_named_by_a_follower() -> _Cluster:
    """Node 1 (the leader the router knows) died; node 2 still names it until node 3 is
    elected at ELECTION_SECONDS."""

    def answer(node: int, channel: str, payload: Any, elapsed: float) -> Any:
        if node == 1:
            raise PeerUnavailable("node1 is down")
        if elapsed < ELECTION_SECONDS:
            return [REDIRECT, 1]
        return [OK, {"served by": node}, 9] if node == 3 else [REDIRECT, 3]

    return _Cluster(answer)


def test_a_follower_naming_a_dead_leader_is_not_followed_back_to_it() -> None:
    cluster = _dead_leader_named_by_a_follower()
    router = _router(cluster, dead=frozenset({1}))
    router.leaders["p0"] = 1
    assert asyncio.run(_strong_call(router, "p0")) == {"served by": 3}
    assert router.leaders["p0"] == 3
    # Once unreachable, node 1 is tried again only in its turn among the candidates, not
    # after every answer that names it.
    to_dead = sum(1 for node, _channel in cluster.calls if node == 1)
    to_others = len(cluster.calls) - to_dead
    assert to_dead <= to_others // 2 + 1, cluster.calls


def _catalog_tables() -> dict[str, Any]:
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    asyncio.run(
        db.dispatch(
            "CreateTable",
            {
                "TableName": "fresh",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
    )
    return catalog_sync.catalog_snapshot(db)


def _partition_without_the_table() -> _Cluster:
    """The metadata group has the table; the partitions learn it only at ELECTION_SECONDS
    (their catalog sync waited for a new leader) and until then refuse it as unknown."""
    tables = _catalog_tables()

    def answer(node: int, channel: str, payload: Any, elapsed: float) -> Any:
        if channel == CHANNEL_TABLES:
            assert payload == {}
            return [OK, {"lsn": 3, "tables": tables}]
        assert channel == CHANNEL_OP
        if elapsed < ELECTION_SECONDS:
            return [STALE_CATALOG]
        return [OK, {}, 4]

    return _Cluster(answer)


def _put(router: Router) -> Any:
    return asyncio.run(
        router.dispatch("PutItem", {"TableName": "fresh", "Item": {"pk": {"S": "a"}}})
    )


def test_an_item_request_waits_for_a_partitions_late_catalog_sync() -> None:
    cluster = _partition_without_the_table()
    assert _put(_router(cluster)) == {}
    refreshes = sum(1 for _node, channel in cluster.calls if channel == CHANNEL_TABLES)
    assert 2 <= refreshes <= router_module.REROUTES_MAX + 1


def test_the_old_bounds_give_up_before_the_catalog_sync_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _old_bounds(monkeypatch)
    with pytest.raises(InternalServerError):
        _put(_router(_partition_without_the_table()))


def test_a_write_that_timed_out_on_the_leader_sends_the_next_write_to_another_member() -> None:
    """Node 2, the leader this router knows, was cut off (its calls time out) and node 3
    leads now. The write sent to node 2 has an unknown outcome (InternalServerError, never
    retried); the next write must not wait out another timeout there."""

    def answer(node: int, channel: str, payload: Any, elapsed: float) -> Any:
        if node == 2:
            raise CallTimeout("node2 did not answer")
        return [OK, {}, 5] if node == 3 else [REDIRECT, 3]

    cluster = _Cluster(answer)
    router = _router(cluster)
    router.leaders["p0"] = 2

    async def two_writes() -> Any:
        with pytest.raises(InternalServerError):
            await _strong_call(router, "p0", MODE_WRITE)
        return await _strong_call(router, "p0", MODE_WRITE)

    assert asyncio.run(two_writes()) == {}
    assert [node for node, _channel in cluster.calls].count(2) == 1, cluster.calls
    assert router.leaders["p0"] == 3
