"""Replica groups of real `group_node` processes on loopback: kill -9 of the leader, a restart
of every member, an isolated leader, a paused leader, and the loss of a zone in the aurora
profile; each recorded history is checked for linearizability, which includes that no
acknowledged write is missing from the final reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster.group_harness import (
    History,
    LocalGroup,
    WorkloadStats,
    final_reads,
    find_leader,
    kv_call,
    kv_workload,
)
from keeldb.consensus.sim.linearizability import OpKind
from keeldb.net.transport import Transport

pytestmark = pytest.mark.process
TEST_SECONDS_MAX = 90.0
KEYS = ["x", "y", "z", "u", "v", "w"]


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TEST_SECONDS_MAX)

    asyncio.run(bounded())


def caller(client: Transport) -> Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def call(node: str, request: dict[str, Any]) -> dict[str, Any]:
        return await kv_call(client, node, request)

    return call


def test_kill_9_of_the_leader_during_writes_then_of_every_member_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    group = LocalGroup(tmp_path, "standard")

    async def body() -> None:
        client = await group.client()
        call = caller(client)
        leader = await find_leader(client, group.nodes, 20)
        history = History()
        killed_at: list[float] = []

        stats = WorkloadStats()
        stop = asyncio.Event()

        async def kill_leader() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(1.0)
            group.kill(leader)
            killed_at.append(loop.time())
            deadline = loop.time() + 20  # a loaded machine elects slowly; bounded anyway
            while stats.resumed_after(killed_at[0]) is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            stop.set()

        await asyncio.gather(
            kv_workload(
                call,
                group.nodes,
                history,
                clients=3,
                keys=KEYS,
                duration_seconds=40,
                stats=stats,
                stop=stop,
            ),
            kill_leader(),
        )
        resumed = stats.resumed_after(killed_at[0])
        assert resumed is not None, "no write succeeded after the leader was killed"
        print(
            f"leader {leader} killed: writes resumed after {resumed:.2f} s (longest gap "
            f"between acknowledged writes {stats.longest_gap_seconds():.2f} s)"
        )
        assert resumed < 10.0
        # Every member dies at once and comes back: acknowledged writes are all there.
        group.start(leader)
        group.kill_all()
        group.start_all()
        await find_leader(client, group.nodes, 20)
        await final_reads(call, group.nodes, history, KEYS, 20)
        result = history.check()
        assert result.ok, result.describe()
        assert stats.writes_ok > 10
        print(f"{len(history.operations)} operations, {history.unknown} of unknown outcome")
        await client.close()

    with group.running():
        run(body)


def test_an_isolated_leader_process_refuses_lease_reads_and_another_takes_over(
    tmp_path: Path,
) -> None:
    group = LocalGroup(tmp_path, "standard")

    async def body() -> None:
        client = await group.client()
        old = await find_leader(client, group.nodes, 20)
        assert (await kv_call(client, old, {"op": "put", "key": "k", "value": b"1"}))["ok"]
        others = [n for n in group.nodes if n != old]
        status = await client.call(old, "_fault", {"op": "partition", "groups": [[old], others]}, 5)
        assert status["blocked"]
        cut = time.monotonic()
        refused_after = None
        while refused_after is None and time.monotonic() - cut < 10:
            reply = await kv_call(client, old, {"op": "get", "key": "k"})
            if reply.get("error") == "NotLeader":
                refused_after = time.monotonic() - cut
            await asyncio.sleep(0.01)
        assert refused_after is not None
        new = await find_leader(client, others, 20)
        print(
            f"isolated leader refused reads after {refused_after:.2f} s; {new} leads after "
            f"{time.monotonic() - cut:.2f} s"
        )
        assert (await kv_call(client, new, {"op": "put", "key": "k", "value": b"2"}))["ok"]
        assert (await kv_call(client, old, {"op": "get", "key": "k"}))["ok"] is False
        await client.call(old, "_fault", {"op": "heal"}, 5)
        await asyncio.sleep(1.0)
        assert await find_leader(client, group.nodes, 20) == new
        reply = await kv_call(client, new, {"op": "get", "key": "k"})
        assert reply == {"ok": True, "value": b"2"}
        await client.close()

    with group.running():
        run(body)


def test_a_leader_paused_past_its_lease_serves_no_stale_read_when_it_resumes(
    tmp_path: Path,
) -> None:
    group = LocalGroup(tmp_path, "standard")

    async def body() -> None:
        client = await group.client()
        call = caller(client)
        history = History()
        old = await find_leader(client, group.nodes, 20)
        op = history.begin(1, OpKind.PUT, "k", b"old")
        assert (await call(old, {"op": "put", "key": "k", "value": b"old"}))["ok"]
        history.end(op, None)
        group.pause(old)
        others = [n for n in group.nodes if n != old]
        new = await find_leader(client, others, 20)
        op = history.begin(1, OpKind.PUT, "k", b"new")
        assert (await call(new, {"op": "put", "key": "k", "value": b"new"}))["ok"]
        history.end(op, None)
        group.resume(old)
        # Read from the resumed old leader at once and for a while: never the old value.
        answered = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            op = history.begin(2, OpKind.GET, "k")
            reply = await call(old, {"op": "get", "key": "k"})
            if reply.get("ok"):
                history.end(op, reply["value"])
                answered += 1
            else:
                history.discard(op)
            await asyncio.sleep(0.01)
        result = history.check()
        assert result.ok, result.describe()
        print(f"resumed old leader answered {answered} reads, refused {history.discarded}")
        await client.close()

    with group.running():
        run(body)


@pytest.mark.slow
def test_aurora_processes_write_through_a_zone_loss_and_lose_nothing_with_one_more_down(
    tmp_path: Path,
) -> None:
    group = LocalGroup(tmp_path, "aurora")
    zones = {"a": ["node1", "node2"], "b": ["node3", "node4"], "c": ["node5", "node6"]}

    async def body() -> None:
        client = await group.client()
        call = caller(client)
        leader = await find_leader(client, group.nodes, 30)
        zone = next(z for z, members in zones.items() if leader in members)
        extra = next(n for z, members in zones.items() if z != zone for n in members)
        history = History()
        marks: dict[str, float] = {}
        stats = WorkloadStats()
        stop = asyncio.Event()

        async def faults() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(1.0)
            for node in zones[zone]:
                group.kill(node)
            marks["zone"] = loop.time()
            # Wait (boundedly: a loaded machine elects slowly) for writes with the zone down.
            deadline = loop.time() + 20
            while stats.resumed_after(marks["zone"]) is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.7)
            group.kill(extra)
            marks["extra"] = loop.time()
            await asyncio.sleep(0.5)
            stop.set()

        await asyncio.gather(
            kv_workload(
                call,
                group.nodes,
                history,
                clients=3,
                keys=KEYS,
                duration_seconds=40,
                stats=stats,
                stop=stop,
            ),
            faults(),
        )
        resumed = stats.resumed_after(marks["zone"])
        between = [e for s, e in stats.write_spans if marks["zone"] < s and e < marks["extra"]]
        assert resumed is not None and between, "no write succeeded while one zone was down"
        print(
            f"zone {zone} (with the leader) killed: writes resumed after {resumed:.2f} s; "
            f"{len(between)} writes with the zone down"
        )
        group.start_all()
        await find_leader(client, group.nodes, 30)
        await final_reads(call, group.nodes, history, KEYS, 30)
        result = history.check()
        assert result.ok, result.describe()
        await client.close()

    with group.running():
        run(body)
