"""The storage service's rules for where a group is served: which replica may answer an
eventually consistent read (how fresh it must be), and where a group's leadership goes
(following the traffic, back to the preferred leader when traffic is even), with fake group
logs in place of real replica groups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.cluster import storage as storage_module
from keeldb.cluster.cli import build_spec
from keeldb.cluster.placement import META_GROUP, place
from keeldb.cluster.protocol import CHANNEL_LEAD, MODE_EVENTUAL, OK, REDIRECT
from keeldb.cluster.ring import Ring
from keeldb.cluster.storage import (
    EVENTUAL_LAG_ENTRIES_MAX,
    EVENTUAL_STALENESS_SECONDS_MAX,
    LEAD_LAG_ENTRIES_MAX,
    LOAD_REQUESTS_MIN,
    LOAD_SAMPLE_SECONDS_MAX,
    LOAD_WINDOW_SECONDS,
    MOVE_SECONDS_MIN,
    StorageService,
)
from keeldb.cluster.storage import Replica as StorageReplica
from keeldb.consensus.types import Config
from keeldb.engine.database import Database
from keeldb.storage.memory import MemoryStore


class _FakeLog:
    """A group log as the storage service sees it: role, leader, lag and freshness."""

    def __init__(
        self,
        *,
        leader: bool = False,
        me: int = 1,
        leader_hint: str | None = "node2",
        lag: int = 0,
        staleness: float | None = 0.05,
        log_only: bool = False,
    ) -> None:
        self.is_leader = leader
        self.leader_hint = f"node{me}" if leader else leader_hint
        self._lag = lag
        self._staleness = staleness
        self.replica = type("Core", (), {"log_only": log_only})()
        self.config = Config.standard([1, 2, 3])
        self.campaigns = 0

    def lag(self) -> int:
        return self._lag

    def staleness_seconds(self) -> float | None:
        return self._staleness

    def campaign(self) -> bool:
        self.campaigns += 1
        return True


class _Calls:
    """The node's calls to other storage services, recorded; every one answered "yes"."""

    def __init__(self) -> None:
        self.made: list[tuple[int, str, Any]] = []

    async def __call__(self, node: int, channel: str, payload: Any, timeout: float) -> Any:
        self.made.append((node, channel, payload))
        return [OK, True]


def _service(
    log: _FakeLog, group: str = "p0", calls: _Calls | None = None, me: int = 1
) -> StorageService:
    spec = build_spec(3, 3, "standard", 2, "127.0.0.1")
    placements = place(spec)
    service = StorageService(
        me, Ring.even(2), placements, None, calls or _Calls(), ttl_interval_seconds=60
    )
    db = Database(MemoryStore())
    partition = None if group == META_GROUP else int(group[1:])
    service.replicas[group] = StorageReplica(group, placements[group], db.store, db, log, partition)
    service.serving_groups = {group}
    return service


def _eventual_read(service: StorageService, seen: int = 0) -> list[Any]:
    payload = {
        "g": "p0",
        "op": "GetItem",
        "mode": MODE_EVENTUAL,
        "body": {"TableName": "nothing", "Key": {"pk": {"S": "a"}}},
        "check": False,
        "seen": seen,
    }
    return asyncio.run(service.on_op("node9", payload))


def _served(answer: list[Any]) -> bool:
    # Served here: the replica's own database answered (the table does not exist in it).
    return answer[0] == "error" and "ResourceNotFoundException" in answer[1]["__type"]


def _assert_refuses_stale_replicas() -> None:
    """The rule for eventually consistent reads: a fresh follower serves, a follower that
    lags or has not heard from its leader within the bound, or a leader that has not heard
    from a quorum, sends the router on."""
    assert _served(_eventual_read(_service(_FakeLog(lag=0, staleness=0.05))))
    lagging = _FakeLog(lag=EVENTUAL_LAG_ENTRIES_MAX + 1, staleness=0.05)
    assert _eventual_read(_service(lagging)) == [REDIRECT, 2]
    silent = _FakeLog(lag=0, staleness=EVENTUAL_STALENESS_SECONDS_MAX + 0.5)
    assert _eventual_read(_service(silent)) == [REDIRECT, 2]
    never = _FakeLog(lag=0, staleness=None)
    assert _eventual_read(_service(never)) == [REDIRECT, 2]
    cut_off_leader = _FakeLog(leader=True, staleness=EVENTUAL_STALENESS_SECONDS_MAX + 0.5)
    assert _eventual_read(_service(cut_off_leader)) == [REDIRECT, None]
    assert _served(_eventual_read(_service(_FakeLog(leader=True, staleness=0.0))))


def test_an_eventual_read_is_served_only_by_a_replica_fresh_enough() -> None:
    _assert_refuses_stale_replicas()


def test_the_freshness_check_catches_replicas_that_serve_however_far_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage_module, "BUGGIFY_LAGGING_READS", True)
    with pytest.raises(AssertionError):
        _assert_refuses_stale_replicas()


def test_a_replica_behind_what_the_router_has_seen_sends_the_read_to_the_leader() -> None:
    # The router's clients saw position 5 (their own write, say); this follower applied 0.
    follower = _service(_FakeLog(lag=0, staleness=0.05))
    assert follower.replicas["p0"].store.applied_lsn() < 5
    assert _eventual_read(follower, seen=5) == [REDIRECT, 2]
    assert _served(_eventual_read(follower, seen=0))
    # The leader has applied everything it answered: it serves.
    assert _served(_eventual_read(_service(_FakeLog(leader=True, staleness=0.0)), seen=5))


# --- where leadership goes -----------------------------------------------------------------


PLACEMENTS = place(build_spec(3, 3, "standard", 2, "127.0.0.1"))


def _leading(group: str = "p0", me: int | None = None) -> tuple[StorageService, _Calls]:
    """A storage service leading `group`, on another node than the preferred leader unless
    `me` says otherwise."""
    if me is None:
        me = next(n for n in (1, 2, 3) if n != PLACEMENTS[group].preferred_leader)
    calls = _Calls()
    return _service(_FakeLog(leader=True, me=me), group, calls, me), calls


def _window(service: StorageService, group: str, counts: dict[str, int], now: float) -> None:
    service._origins[group] = dict(counts)
    service._place_leaders(now)


# Late enough after a node starts leading that it may move the group and that even a sample
# of fewer than LOAD_REQUESTS_MIN requests is complete.
DECIDED_SECONDS = max(MOVE_SECONDS_MIN, LOAD_SAMPLE_SECONDS_MAX) + LOAD_WINDOW_SECONDS


def _moves(service: StorageService, calls: _Calls, group: str, counts: dict[str, int]) -> list:
    """The "take the leadership" requests one traffic sample leads to, once this node has
    led long enough to move the group."""

    async def run() -> None:
        service._place_leaders(0.0)  # the first window notes that this node leads
        _window(service, group, counts, DECIDED_SECONDS)
        await asyncio.gather(*service._moves)

    asyncio.run(run())
    return [
        (node, payload["g"]) for node, channel, payload in calls.made if channel == CHANNEL_LEAD
    ]


def test_a_group_whose_traffic_comes_through_one_router_moves_its_leadership_there() -> None:
    service, calls = _leading("p0", me=PLACEMENTS["p0"].preferred_leader)
    other = next(n for n in (1, 2, 3) if n != service.node_id)
    n = LOAD_REQUESTS_MIN
    counts = {f"node{other}": 3 * n, f"node{service.node_id}": n // 4}
    assert _moves(service, calls, "p0", counts) == [(other, "p0")]


def test_a_group_below_the_share_or_the_volume_stays_put() -> None:
    preferred = PLACEMENTS["p0"].preferred_leader
    others = [f"node{n}" for n in (1, 2, 3) if n != preferred]
    n = LOAD_REQUESTS_MIN
    # 60 % through one router: neither dominant nor even (hysteresis): no move.
    service, calls = _leading("p0", me=preferred)
    assert _moves(service, calls, "p0", {others[0]: 6 * n, others[1]: 4 * n}) == []
    # Dominant but too few requests to tell: an idle group, led by its preferred node.
    service, calls = _leading("p0", me=preferred)
    assert _moves(service, calls, "p0", {others[0]: n - 1}) == []


def test_even_traffic_gives_the_leadership_back_to_the_preferred_node() -> None:
    service, calls = _leading("p1")
    n = LOAD_REQUESTS_MIN
    counts = {"node1": n, "node2": n, "node3": n}
    assert _moves(service, calls, "p1", counts) == [(PLACEMENTS["p1"].preferred_leader, "p1")]


def test_a_leadership_placed_by_load_stays_while_idle_and_one_won_by_failover_goes_back() -> None:
    window = DECIDED_SECONDS
    # This node leads p1 because its traffic came from here: idle windows keep it here.
    service, calls = _leading("p1")
    mine = {f"node{service.node_id}": 2 * LOAD_REQUESTS_MIN}

    async def placed_then_idle() -> None:
        service._place_leaders(0.0)
        _window(service, "p1", mine, window)
        for step in range(2, 6):
            _window(service, "p1", {}, step * window)
        await asyncio.gather(*service._moves)

    asyncio.run(placed_then_idle())
    assert calls.made == []
    # The same node leading p1 after a failover, idle: back to the preferred node.
    service, calls = _leading("p1")
    assert _moves(service, calls, "p1", {}) == [(PLACEMENTS["p1"].preferred_leader, "p1")]


def _slow_stream(service: StorageService, calls: _Calls, group: str, origin: str) -> list[int]:
    """Windows of a steady stream too slow to fill one window's sample: each adds fewer
    than LOAD_REQUESTS_MIN requests from `origin` (a loaded machine's pace). The nodes
    asked to lead, in order."""
    per_window = LOAD_REQUESTS_MIN * 2 // 3

    async def run() -> None:
        service._place_leaders(0.0)  # won in a failover: leading since now
        now = 0.0
        while now < 2 * (MOVE_SECONDS_MIN + LOAD_SAMPLE_SECONDS_MAX) and not calls.made:
            now += LOAD_WINDOW_SECONDS
            counts = service._origins.setdefault(group, {})
            counts[origin] = counts.get(origin, 0) + per_window
            service._place_leaders(now)
            await asyncio.gather(*service._moves)

    asyncio.run(run())
    return [node for node, channel, _payload in calls.made if channel == CHANNEL_LEAD]


def test_a_slow_steady_stream_from_one_router_moves_the_leadership_there_not_back_home() -> None:
    # p1's leadership was won in a failover by a node that is not its preferred leader; all
    # of its traffic comes through a third node's router, slowly. Counted one window at a
    # time the group would look idle and go back to the preferred node.
    preferred = PLACEMENTS["p1"].preferred_leader
    me, router = (n for n in (1, 2, 3) if n != preferred)
    service, calls = _leading("p1", me=me)
    assert _slow_stream(service, calls, "p1", f"node{router}") == [router]
    # The same stream through this node's own router: the leadership stays here.
    service, calls = _leading("p1", me=me)
    assert _slow_stream(service, calls, "p1", f"node{me}") == []
    assert "p1" in service._load_placed


def test_the_metadata_group_does_not_follow_catalog_traffic() -> None:
    me = PLACEMENTS[META_GROUP].preferred_leader
    service, calls = _leading(META_GROUP, me=me)
    other = next(n for n in (1, 2, 3) if n != me)
    assert _moves(service, calls, META_GROUP, {f"node{other}": 10 * LOAD_REQUESTS_MIN}) == []


def test_a_group_moves_at_most_once_per_interval() -> None:
    service, calls = _leading()
    target = next(n for n in (1, 2, 3) if n != service.node_id)
    counts = {f"node{target}": 2 * LOAD_REQUESTS_MIN}

    async def run() -> None:
        service._place_leaders(0.0)
        now = MOVE_SECONDS_MIN + LOAD_WINDOW_SECONDS
        _window(service, "p0", counts, now)
        # Still leading (the move has not happened yet): no second request for a while.
        for step in range(1, 4):
            _window(service, "p0", counts, now + step * LOAD_WINDOW_SECONDS / 2)
        _window(service, "p0", counts, now + MOVE_SECONDS_MIN)
        await asyncio.gather(*service._moves)

    asyncio.run(run())
    assert [c[0] for c in calls.made] == [target, target]


def test_a_member_takes_the_leadership_only_when_caught_up_and_asked_by_its_leader() -> None:
    def ask(log: _FakeLog, sender: str = "node2") -> list[Any]:
        return asyncio.run(_service(log).on_lead(sender, {"g": "p0"}))

    for caught_up in (
        _FakeLog(leader_hint="node2"),
        _FakeLog(leader_hint="node2", lag=LEAD_LAG_ENTRIES_MAX),  # a few entries behind
    ):
        assert ask(caught_up) == [OK, True] and caught_up.campaigns == 1
    for refusing in (
        _FakeLog(leader_hint="node2", lag=LEAD_LAG_ENTRIES_MAX + 1),
        _FakeLog(leader_hint="node2", log_only=True),
    ):
        assert ask(refusing) == [OK, False] and refusing.campaigns == 0
    stranger = _FakeLog(leader_hint="node2")
    assert ask(stranger, sender="node3") == [OK, False] and stranger.campaigns == 0
