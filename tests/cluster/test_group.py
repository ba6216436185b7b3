"""Replica groups of real `GroupLog`s over real loopback transports, in one process: election,
replication, failover, leases under partition, restarts, snapshots, configuration changes,
the aurora profile, and a recorded history checked for linearizability."""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from keeldb.cluster import group as group_module
from keeldb.cluster.group import (
    AppendTimeout,
    GroupLog,
    GroupOptions,
    NotLeader,
    is_store_token,
    member_name,
    member_node_id,
)
from keeldb.cluster.group_codec import packed_messages
from keeldb.cluster.group_harness import History, final_reads, kv_workload
from keeldb.cluster.group_kv import KEY_PREFIX, KvMachine, KvService, encode_put
from keeldb.consensus.messages import Accepted, Heartbeat
from keeldb.consensus.replica import Mutation, Options
from keeldb.consensus.sim.linearizability import OpKind, Verdict
from keeldb.consensus.types import Config, Member, NodeId
from keeldb.net.transport import Transport
from keeldb.storage.lmdb_store import LmdbStore

SECRET = b"group-test-secret-0123456789abcdef"
TEST_SECONDS_MAX = 60.0
# Twice the default tick: all members share this process's event loop, so a stall of the
# loaded machine delays every member's clock at once, and a longer election timeout keeps
# such stalls from deposing a healthy leader.
TICK_SECONDS = 0.05
PUT_SECONDS_MAX = 15.0
LEASE_SECONDS = Options().lease_ticks * TICK_SECONDS


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TEST_SECONDS_MAX)

    asyncio.run(bounded())


@dataclass
class Node:
    name: str
    port: int = 0
    transport: Transport | None = None
    group: GroupLog | None = None
    store: LmdbStore | None = None
    machine: KvMachine | None = None
    service: KvService | None = None


class Cluster:
    """Members of the group "g" on this event loop, each with its own transport and store."""

    def __init__(
        self,
        base: Path,
        config: Config,
        *,
        replica: Options | None = None,
        service: type[KvService] = KvService,
        append_timeout_seconds: float = 5.0,
    ) -> None:
        self.base = base
        self.config = config
        # A member's fatal error is recorded (and fails the test at stop_all) instead of
        # ending the test process.
        self.fatal: list[BaseException] = []
        self.options = GroupOptions(
            tick_seconds=TICK_SECONDS,
            replica=replica or Options(),
            append_timeout_seconds=append_timeout_seconds,
            on_fatal=self.fatal.append,
        )
        self.service_type = service
        self.nodes: dict[str, Node] = {
            member_name(n): Node(member_name(n)) for n in config.node_ids
        }

    async def start(self, name: str, config: Config | None = None) -> Node:
        node = self.nodes.setdefault(name, Node(name))
        await self._listen(node)
        self._meet(node)
        await self._open_group(node, config)
        return node

    async def start_all(self) -> None:
        """Every stopped member: all transports listen first (fresh ports the first time),
        so that each knows every peer before its group starts."""
        stopped = [node for node in self.nodes.values() if node.group is None]
        for node in stopped:
            await self._listen(node)
        for node in stopped:
            self._meet(node)
        for node in stopped:
            await self._open_group(node, None)

    async def _listen(self, node: Node) -> None:
        assert node.group is None and node.transport is None
        node.transport = Transport(node.name, "127.0.0.1", node.port, SECRET)
        node.port = await node.transport.start()

    def _meet(self, node: Node) -> None:
        assert node.transport is not None
        for other in self.nodes.values():
            if other.name != node.name and other.port:
                node.transport.add_peer(other.name, "127.0.0.1", other.port)
                if other.transport is not None:
                    other.transport.add_peer(node.name, "127.0.0.1", node.port)

    async def _open_group(self, node: Node, config: Config | None) -> None:
        assert node.transport is not None
        node.store = LmdbStore(self.base / node.name / "store")
        node.machine = KvMachine(node.store)
        node.group = GroupLog(
            "g",
            node.name,
            config or self.config,
            node.transport,
            self.base / node.name / "group",
            node.store,
            node.machine.apply,
            options=self.options,
        )
        node.service = self.service_type(node.group, node.machine)
        await node.group.start()

    async def stop(self, name: str) -> None:
        """Gone at once, as far as its peers can tell: its transport closes first."""
        node = self.nodes[name]
        assert node.transport is not None and node.group is not None and node.store is not None
        await node.transport.close()
        await node.group.close()
        node.store.close()
        node.transport = node.group = node.store = node.machine = node.service = None

    async def stop_all(self) -> None:
        for name, node in self.nodes.items():
            if node.group is not None:
                await self.stop(name)
        assert self.fatal == []

    def group(self, name: str) -> GroupLog:
        group = self.nodes[name].group
        assert group is not None
        return group

    def running(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.group is not None]

    async def leader(self, timeout_seconds: float = 10.0, among: list[str] | None = None) -> str:
        """The member that leads with a read lease."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for name in among or self.running():
                group = self.nodes[name].group
                if group is not None and group.read_lease():
                    return name
            await asyncio.sleep(0.01)
        raise AssertionError(f"no leader with a lease within {timeout_seconds} s")

    async def call(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        service = self.nodes[name].service
        if service is None:
            return {"ok": False, "error": "Unavailable"}
        return await service.handle("client", request)

    def values(self, name: str) -> dict[bytes, bytes]:
        store = self.nodes[name].store
        assert store is not None
        return dict(store.scan(KEY_PREFIX, KEY_PREFIX + b"\xff"))

    async def converged(self, names: list[str], timeout_seconds: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while True:
            snapshots = [self.values(n) for n in names]
            if all(s == snapshots[0] for s in snapshots):
                return
            assert time.monotonic() < deadline, f"members {names} did not converge"
            await asyncio.sleep(0.02)


async def put(cluster: Cluster, name: str, key: str, value: bytes) -> int:
    """A write through `name`, following leader hints if leadership moved (a loaded machine
    may stall the shared event loop long enough for an election)."""
    deadline = time.monotonic() + PUT_SECONDS_MAX
    while True:
        reply = await cluster.call(name, {"op": "put", "key": key, "value": value})
        if reply["ok"]:
            return int(reply["lsn"])
        # A put of the same value may be repeated, so an unknown outcome is retried too.
        assert reply["error"] in ("NotLeader", "Timeout"), reply
        assert time.monotonic() < deadline, reply
        hint = reply.get("leader")
        name = hint if hint in cluster.nodes and hint != name else await cluster.leader()


def test_three_members_elect_one_leader_and_apply_the_same_commands_in_order(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]))
        await cluster.start_all()
        leader = await cluster.leader()
        lsns = [await put(cluster, leader, f"k{i % 7}", b"v%d" % i) for i in range(60)]
        assert lsns == sorted(lsns) and len(set(lsns)) == 60
        await cluster.converged(list(cluster.nodes))
        assert cluster.values(leader)[KEY_PREFIX + b"k3"] == b"v59"
        follower = next(n for n in cluster.nodes if n != leader)
        with pytest.raises(NotLeader) as refused:
            await cluster.group(follower).append(b"x")
        assert refused.value.leader_hint == leader
        assert await cluster.group(follower).wait_for_leader(5) == leader
        assert [cluster.group(n).read_lease() for n in cluster.nodes].count(True) == 1
        # Leadership transfer: another member campaigns and takes over with the same state.
        assert cluster.group(follower).campaign()
        assert await cluster.leader(among=[follower]) == follower
        assert not cluster.group(leader).read_lease()
        leader = follower
        lsns.append(await put(cluster, leader, "k3", b"moved"))
        await cluster.converged(list(cluster.nodes))
        assert cluster.values(leader)[KEY_PREFIX + b"k3"] == b"moved"
        # The store is written before the Ready's fsync, the replica's applied slot after.
        deadline = time.monotonic() + 5
        while {cluster.group(n).status()["applied"] for n in cluster.nodes} != {lsns[-1]}:
            assert time.monotonic() < deadline, "members did not all apply the last write"
            await asyncio.sleep(0.02)
        assert all(cluster.group(n).lag() == 0 for n in cluster.nodes)
        await cluster.stop_all()

    run(body)


def test_a_dead_leader_is_replaced_within_a_couple_of_lease_periods(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]))
        await cluster.start_all()
        leader = await cluster.leader()
        await put(cluster, leader, "a", b"1")
        await cluster.stop(leader)
        stopped = time.monotonic()
        others = cluster.running()
        new_leader = await cluster.leader(among=others)
        await put(cluster, new_leader, "a", b"2")
        gap = time.monotonic() - stopped
        print(f"failover gap {gap:.2f} s ({gap / LEASE_SECONDS:.1f} lease periods)")
        # Election timeout (0.5 to 1 s) + probe + phase 1 + the write; generous for a
        # loaded machine, while "never" would fail.
        assert gap < 10 * LEASE_SECONDS + 5
        await cluster.stop_all()

    run(body)


def test_no_acknowledged_write_is_lost_when_every_member_restarts_and_replay_is_idempotent(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]))
        await cluster.start_all()
        leader = await cluster.leader()
        acknowledged = {}
        for i in range(40):
            await put(cluster, leader, f"k{i}", b"v%d" % i)
            acknowledged[KEY_PREFIX + b"k%d" % i] = b"v%d" % i
        await cluster.converged(list(cluster.nodes))
        await cluster.stop_all()
        # One member loses its store entirely: it is rebuilt from its own log.
        shutil.rmtree(tmp_path / "node3" / "store")
        await cluster.start_all()
        leader = await cluster.leader()
        await cluster.converged(list(cluster.nodes))
        for name in cluster.nodes:
            assert cluster.values(name) == acknowledged
        # Stores that had applied everything got nothing applied twice.
        assert cluster.group("node1").applied_count == 0
        assert cluster.group("node2").applied_count == 0
        assert cluster.group("node3").applied_count == 40
        reply = await cluster.call(leader, {"op": "get", "key": "k39"})
        assert reply == {"ok": True, "value": b"v39"}
        await cluster.stop_all()

    run(body)


def test_an_isolated_leader_loses_its_lease_before_any_other_member_gains_one(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), append_timeout_seconds=2.0)
        await cluster.start_all()
        old = await cluster.leader()
        await put(cluster, old, "k", b"before")
        others = [n for n in cluster.nodes if n != old]
        transport = cluster.nodes[old].transport
        assert transport is not None
        await transport.apply_fault_command({"op": "partition", "groups": [[old], others]})
        cut = time.monotonic()
        both = 0
        old_last_lease = 0.0  # seconds after the cut when the old leader last held a lease
        new_leader = None
        while new_leader is None and time.monotonic() - cut < 15:
            leases = {n: cluster.group(n).read_lease() for n in cluster.nodes}
            both += sum(leases.values()) > 1
            if leases[old]:
                old_last_lease = time.monotonic() - cut
            new_leader = next((n for n in others if leases[n]), None)
            await asyncio.sleep(0.005)
        assert new_leader is not None, "the majority side elected nobody"
        assert both == 0
        assert old_last_lease <= LEASE_SECONDS + 0.5
        print(
            f"old leader last held its lease {old_last_lease:.2f} s after the cut, new leader "
            f"after "
            f"{time.monotonic() - cut:.2f} s"
        )
        await put(cluster, new_leader, "k", b"after")
        refused = await cluster.call(old, {"op": "get", "key": "k"})
        assert refused["ok"] is False and refused["error"] == "NotLeader"
        stale_write = await cluster.call(old, {"op": "put", "key": "k", "value": b"stale"})
        assert not stale_write["ok"]
        await transport.apply_fault_command({"op": "heal"})
        await cluster.converged(list(cluster.nodes))
        assert cluster.values(old)[KEY_PREFIX + b"k"] == b"after"
        assert await cluster.group(old).wait_for_leader(5) == new_leader
        await cluster.stop_all()

    run(body)


def test_a_member_behind_the_compacted_log_is_rebuilt_from_a_snapshot_and_restarts_after_a_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_module, "REWRITE_RECORDS_MIN", 200)
    replica = Options(compaction_entries_min=50, log_entries_retained=10)

    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), replica=replica)
        await cluster.start_all()
        leader = await cluster.leader()
        lagging = next(n for n in cluster.nodes if n != leader)
        transport = cluster.nodes[lagging].transport
        assert transport is not None
        others = [n for n in cluster.nodes if n != lagging]
        await transport.apply_fault_command({"op": "partition", "groups": [[lagging], others]})
        for i in range(300):
            await put(cluster, leader, f"k{i % 37}", b"v%d" % i)
        assert cluster.group(leader).snapshots_taken >= 1
        await transport.apply_fault_command({"op": "heal"})
        await cluster.converged(list(cluster.nodes))
        assert cluster.group(lagging).snapshots_installed >= 1
        assert cluster.group(leader).rewrites >= 1
        # Snapshots name the store rather than copy it; the lagging member pulled the state.
        snapshot = cluster.group(leader).replica.durable_state().snapshot
        assert snapshot is not None and is_store_token(snapshot.state)
        expected = cluster.values(leader)
        await cluster.stop_all()
        # A member whose store is lost restarts from a log that begins at a snapshot: it
        # pulls the state from another member.
        shutil.rmtree(tmp_path / lagging / "store")
        await cluster.start_all()
        leader = await cluster.leader()
        deadline = time.monotonic() + 10
        while cluster.group(lagging).snapshots_installed == 0:
            assert time.monotonic() < deadline, "the member without a store never pulled one"
            await asyncio.sleep(0.02)
        await put(cluster, leader, "k0", b"again")
        expected[KEY_PREFIX + b"k0"] = b"again"
        await cluster.converged(list(cluster.nodes))
        for name in cluster.nodes:
            assert cluster.values(name) == expected
        await cluster.stop_all()

    run(body)


def test_a_configuration_change_replaces_a_member_which_then_catches_up(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]))
        await cluster.start_all()
        leader = await cluster.leader()
        for i in range(20):
            await put(cluster, leader, f"k{i}", b"v%d" % i)
        leaving = next(n for n in cluster.nodes if n != leader)
        staying = [n for n in cluster.nodes if n != leaving]
        kept = [m for m in cluster.config.members if member_name(m.node_id) != leaving]
        new_config = Config((*kept, Member(NodeId(4), "c")), q1=2, q2=2)
        await cluster.start("node4", new_config)
        leader = await cluster.leader()  # (again: it may have moved meanwhile)
        chosen = await cluster.group(leader).change_config(new_config)
        assert chosen.epoch > 0
        assert sorted(chosen.node_ids) == sorted([*[m.node_id for m in kept], NodeId(4)])
        await cluster.stop(leaving)
        for i in range(20, 30):
            await put(cluster, staying[0], f"k{i}", b"v%d" % i)
        await cluster.converged([*staying, "node4"])
        assert len(cluster.values("node4")) == 30
        assert cluster.group("node4").config.epoch == chosen.epoch
        await cluster.stop_all()

    run(body)


def test_aurora_group_with_log_replicas_keeps_writing_through_the_loss_of_a_zone(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        members = (
            Member(NodeId(1), "a"),
            Member(NodeId(2), "a"),
            Member(NodeId(3), "b"),
            Member(NodeId(4), "b", log_only=True),
            Member(NodeId(5), "c"),
            Member(NodeId(6), "c", log_only=True),
        )
        cluster = Cluster(tmp_path, Config(members, q1=3, q2=4))
        await cluster.start_all()
        leader = await cluster.leader()
        for i in range(20):
            await put(cluster, leader, f"k{i}", b"v%d" % i)
        zone = "a" if leader in ("node1", "node2") else ("b" if leader == "node3" else "c")
        lost = [member_name(m.node_id) for m in members if m.zone == zone]
        for name in lost:
            await cluster.stop(name)
        stopped = time.monotonic()
        survivors = cluster.running()
        leader = await cluster.leader(among=survivors)
        for i in range(20, 40):
            await put(cluster, leader, f"k{i}", b"v%d" % i)
        print(f"zone {zone} lost; writes resumed after {time.monotonic() - stopped:.2f} s")
        full = [n for n in survivors if n not in ("node4", "node6")]
        await cluster.converged(full)
        assert len(cluster.values(full[0])) == 40
        deadline = time.monotonic() + 5
        for log_replica in ("node4", "node6"):
            if log_replica in survivors:
                assert cluster.values(log_replica) == {}  # they keep the log, not the state
                # They learn the commit point from the leader's next message.
                while cluster.group(log_replica).committed_lsn() < 40:
                    assert time.monotonic() < deadline, f"{log_replica} never learned the commit"
                    await asyncio.sleep(0.02)
        await cluster.stop_all()

    run(body)


def test_a_recorded_history_across_a_leader_partition_is_linearizable(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), append_timeout_seconds=2.0)
        await cluster.start_all()
        leader = await cluster.leader()
        nodes = list(cluster.nodes)
        keys = ["x", "y", "z"]
        history = History()

        async def faults() -> None:
            await asyncio.sleep(1.0)
            transport = cluster.nodes[leader].transport
            assert transport is not None
            others = [n for n in nodes if n != leader]
            await transport.apply_fault_command({"op": "partition", "groups": [[leader], others]})
            await asyncio.sleep(1.5)
            await transport.apply_fault_command({"op": "heal"})

        stats, _ = await asyncio.gather(
            kv_workload(cluster.call, nodes, history, clients=4, keys=keys, duration_seconds=3.5),
            faults(),
        )
        await final_reads(cluster.call, nodes, history, keys, 10)
        result = history.check()
        assert result.ok, result.describe()
        assert stats.writes_ok > 5 and stats.reads_ok > 5
        print(
            f"{len(history.operations)} operations, {stats.unknown} unknown outcomes, "
            f"longest write gap {stats.longest_gap_seconds():.2f} s"
        )
        await cluster.stop_all()

    run(body)


class LeaselessKvService(KvService):
    """A deliberately broken driver: answers reads from any member, without a lease."""

    async def handle(self, sender: str, request: Any) -> dict[str, Any]:
        if isinstance(request, dict) and request.get("op") == "get":
            return {"ok": True, "value": self.machine.get(request["key"])}
        return await super().handle(sender, request)


@pytest.mark.parametrize(("service", "caught"), [(KvService, False), (LeaselessKvService, True)])
def test_the_checker_catches_stale_reads_when_the_driver_skips_the_lease(
    tmp_path: Path, service: type[KvService], caught: bool
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), service=service)
        await cluster.start_all()
        leader = await cluster.leader()
        history = History()
        op = history.begin(1, OpKind.PUT, "k", b"old")
        await put(cluster, leader, "k", b"old")
        history.end(op, None)
        await cluster.converged(list(cluster.nodes))
        cut_off = next(n for n in cluster.nodes if n != leader)
        transport = cluster.nodes[cut_off].transport
        assert transport is not None
        others = [n for n in cluster.nodes if n != cut_off]
        await transport.apply_fault_command({"op": "partition", "groups": [[cut_off], others]})
        op = history.begin(1, OpKind.PUT, "k", b"new")
        await put(cluster, leader, "k", b"new")
        history.end(op, None)
        op = history.begin(2, OpKind.GET, "k")
        reply = await cluster.call(cut_off, {"op": "get", "key": "k"})
        if reply["ok"]:
            history.end(op, reply["value"])
        else:
            history.discard(op)
        result = history.check()
        assert (result.verdict is Verdict.NOT_LINEARIZABLE) is caught, result.describe()
        await transport.apply_fault_command({"op": "heal"})
        await cluster.stop_all()

    run(body)


def test_a_leader_that_removes_itself_steps_down_and_the_rest_elect_a_new_one(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]))
        await cluster.start_all()
        leader = await cluster.leader()
        await put(cluster, leader, "k", b"1")
        kept = tuple(m for m in cluster.config.members if member_name(m.node_id) != leader)
        # Two members, both needed for either quorum; one of them keeps only the log.
        new_config = Config((kept[0], Member(kept[1].node_id, kept[1].zone, log_only=True)), 2, 2)
        chosen = await cluster.group(leader).change_config(new_config)
        assert not cluster.group(leader).is_leader
        full, log_only = (member_name(m.node_id) for m in chosen.members)
        assert await cluster.leader(among=[full]) == full
        await put(cluster, full, "k", b"2")
        assert cluster.values(full)[KEY_PREFIX + b"k"] == b"2"
        deadline = time.monotonic() + 5
        while not cluster.group(log_only).replica.log_only:
            assert time.monotonic() < deadline, "the log replica never learned its role"
            await asyncio.sleep(0.02)
        assert cluster.values(log_only)[KEY_PREFIX + b"k"] == b"1"  # state stops at the change
        with pytest.raises(NotLeader):
            await cluster.group(leader).append(b"removed")
        await cluster.stop_all()

    run(body)


def test_every_member_restarts_from_snapshots_taken_after_the_last_command_without_a_pull(
    tmp_path: Path,
) -> None:
    replica = Options(compaction_entries_min=50, log_entries_retained=10)

    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), replica=replica)
        await cluster.start_all()
        leader = await cluster.leader()
        for i in range(60):
            await put(cluster, leader, f"k{i}", b"v%d" % i)
        # A configuration change pads its window with no-ops: the snapshots that follow sit
        # hundreds of slots after the last command the stores applied.
        changed = Config(cluster.config.members, q1=3, q2=1)
        await cluster.group(leader).change_config(changed)
        await cluster.converged(list(cluster.nodes))
        deadline = time.monotonic() + 10
        for name in cluster.nodes:
            while (snap := cluster.group(name).replica.durable_state().snapshot) is None or (
                snap.slot <= 60
            ):
                assert time.monotonic() < deadline, f"{name} took no snapshot past the commands"
                await asyncio.sleep(0.02)
        expected = cluster.values(leader)
        await cluster.stop_all()
        await cluster.start_all()
        leader = await cluster.leader()
        for name in cluster.nodes:
            assert cluster.group(name).snapshots_installed == 0  # their stores hold the state
            assert cluster.values(name) == expected
        await put(cluster, leader, "k0", b"after")
        await cluster.stop_all()

    run(body)


def test_a_proposal_in_flight_when_its_leader_was_cut_off_fails_at_once_when_it_leads_again(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), append_timeout_seconds=60.0)
        await cluster.start_all()
        old = await cluster.leader()
        others = [n for n in cluster.nodes if n != old]
        transport = cluster.nodes[old].transport
        assert transport is not None
        await transport.apply_fault_command({"op": "partition", "groups": [[old], others]})
        in_flight = asyncio.ensure_future(cluster.group(old).append(encode_put("k", b"cut off")))
        new = await cluster.leader(among=others)
        await put(cluster, new, "k", b"majority")  # the cut-off slot gets another value
        survivor = next(n for n in others if n != new)
        await cluster.stop(new)
        await transport.apply_fault_command({"op": "heal"})
        while cluster.group(old).is_leader:  # it steps down once its lease cannot renew
            await asyncio.sleep(0.02)
        assert not in_flight.done()
        assert cluster.group(old).campaign()
        await cluster.leader(among=[old])
        # Leading again at a new ballot, the core forgets the earlier proposal: the driver
        # reports its outcome unknown now rather than after the 60 s timeout.
        with pytest.raises(AppendTimeout, match="leadership changed"):
            await asyncio.wait_for(in_flight, 5)
        assert cluster.values(old)[KEY_PREFIX + b"k"] == b"majority"
        assert cluster.values(survivor)[KEY_PREFIX + b"k"] == b"majority"
        await cluster.stop_all()

    run(body)


class HeldDisk(group_module._MemberDisk):
    """A member's disk whose fsyncs complete only when the test releases them (a slow disk
    under the test's control): records submitted while held wait, in order, and are handed
    to the real log on release."""

    def __init__(self, inner: group_module._MemberDisk) -> None:
        self.inner = inner
        self.held = True
        self.waiting: list[tuple[Any, asyncio.Future[None], Callable[[], None] | None]] = []

    def submit(
        self, records: Any, on_durable: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        if not self.held and not self.waiting:
            return self.inner.submit(records, on_durable)
        outer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((records, outer, on_durable))
        return outer

    def release(self) -> None:
        self.held = False
        waiting, self.waiting = self.waiting, []
        for records, outer, on_durable in waiting:
            inner = self.inner.submit(records)
            inner.add_done_callback(functools.partial(self._settle, outer, on_durable))

    @staticmethod
    def _settle(
        outer: asyncio.Future[None],
        on_durable: Callable[[], None] | None,
        inner: asyncio.Future[None],
    ) -> None:
        error = inner.exception()
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(None)
        if on_durable is not None:
            on_durable()

    def records_since_rewrite(self) -> int:
        return self.inner.records_since_rewrite()

    async def rewrite(self, compact: Any) -> int:
        return await self.inner.rewrite(compact)

    async def close(self) -> None:
        self.release()
        await self.inner.close()


def hold_disk(cluster: Cluster, name: str) -> HeldDisk:
    group = cluster.group(name)
    inner = group._disk_log
    assert inner is not None
    held = HeldDisk(inner)
    group._disk_log = held
    return held


EARLY_COMMIT_SECONDS = 2.0  # how long a put that should wait is given to commit anyway
# A leader whose disk is held sends no heartbeats (they wait for its persist): elections
# slower than the hold keep it leading.
SLOW_ELECTIONS = Options(election_ticks_min=100, election_ticks_max=120)


async def pending_put(cluster: Cluster, leader: str, key: str) -> asyncio.Task[dict[str, Any]]:
    """A put on the leader, left running: returned once it is done, or after
    EARLY_COMMIT_SECONDS (time enough on a loaded machine to cross the network and every
    disk that is not held)."""
    task = asyncio.create_task(cluster.call(leader, {"op": "put", "key": key, "value": b"v"}))
    await asyncio.wait((task,), timeout=EARLY_COMMIT_SECONDS)
    return task


async def _followers_vote_only_once_durable(tmp_path: Path, replica: Options) -> bool:
    """Whether a put committed while both followers' disks were held (it must not)."""
    cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), replica=replica)
    await cluster.start_all()
    cluster.group(member_name(1)).campaign()  # elections are slow here: do not wait
    leader = await cluster.leader()
    await put(cluster, leader, "warm", b"up")
    followers = [n for n in cluster.running() if n != leader]
    held = [hold_disk(cluster, n) for n in followers]
    task = await pending_put(cluster, leader, "k")
    committed_early = task.done()
    for disk in held:
        disk.release()
    reply = await asyncio.wait_for(task, PUT_SECONDS_MAX)
    assert reply["ok"], reply
    await cluster.stop_all()
    return committed_early


def test_a_write_waits_for_a_follower_fsync_and_the_broken_variant_does_not(
    tmp_path: Path,
) -> None:
    """The leader's own vote is one of the two of Q2: with both followers' disks stalled,
    the write waits; followers that acknowledge before their fsync let it through."""

    async def body() -> None:
        sound = SLOW_ELECTIONS
        assert not await _followers_vote_only_once_durable(tmp_path / "sound", sound)
        broken = replace(sound, mutations=frozenset([Mutation.ACK_BEFORE_PERSIST]))
        assert await _followers_vote_only_once_durable(tmp_path / "broken", broken)

    run(body)


async def _leader_counts_itself_only_once_durable(tmp_path: Path, replica: Options) -> bool:
    """Whether a put committed while the leader's disk and one follower's were held: only
    one durable vote exists (the other follower's), so it must not."""
    cluster = Cluster(tmp_path, Config.standard([1, 2, 3]), replica=replica)
    await cluster.start_all()
    cluster.group(member_name(1)).campaign()  # elections are slow here: do not wait
    leader = await cluster.leader()
    await put(cluster, leader, "warm", b"up")
    follower = next(n for n in cluster.running() if n != leader)
    held = [hold_disk(cluster, leader), hold_disk(cluster, follower)]
    task = await pending_put(cluster, leader, "k")
    committed_early = task.done()
    # Its Accepts left before its own fsync (pipelining): the free follower holds the
    # value on disk already.
    for disk in held:
        disk.release()
    reply = await asyncio.wait_for(task, PUT_SECONDS_MAX)
    assert reply["ok"], reply
    await cluster.stop_all()
    return committed_early


def test_a_pipelined_leader_counts_its_own_vote_only_once_its_fsync_is_done(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        sound = SLOW_ELECTIONS
        assert not await _leader_counts_itself_only_once_durable(tmp_path / "sound", sound)
        broken = replace(sound, mutations=frozenset([Mutation.PIPELINED_VOTE_AT_ADVANCE]))
        assert await _leader_counts_itself_only_once_durable(tmp_path / "broken", broken)

    run(body)


def test_an_append_without_an_outcome_times_out_after_its_timeout_and_not_long_before(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        timeout = 0.5
        cluster = Cluster(
            tmp_path,
            Config.standard([1, 2, 3]),
            replica=SLOW_ELECTIONS,
            append_timeout_seconds=timeout,
        )
        await cluster.start_all()
        leader = await cluster.leader()
        held = hold_disk(cluster, leader)
        for name in cluster.nodes:  # no quorum: the followers' votes are all lost
            if name != leader:
                transport = cluster.nodes[name].transport
                assert transport is not None
                await transport.apply_fault_command({"op": "drop", "probability": 1.0})
        started = time.monotonic()
        with pytest.raises(AppendTimeout, match="no outcome within"):
            await asyncio.wait_for(cluster.group(leader).append(encode_put("k", b"v")), 10)
        waited = time.monotonic() - started
        assert timeout <= waited < timeout + 5.0
        assert not cluster.group(leader)._deadlines  # the expired append is forgotten
        held.release()
        for name in cluster.nodes:
            transport = cluster.nodes[name].transport
            assert transport is not None
            await transport.apply_fault_command({"op": "heal"})
        await cluster.stop_all()

    run(body)


@pytest.mark.interpreted  # stops the drivers' ticks by replacing a method
def test_a_message_that_gives_the_core_nothing_to_do_wakes_no_driver(tmp_path: Path) -> None:
    async def body() -> None:
        cluster = Cluster(tmp_path, Config.standard([1, 2, 3]))
        await cluster.start_all()
        leader_name = await cluster.leader()
        await put(cluster, leader_name, "k", b"v")
        await cluster.converged(list(cluster.nodes))
        leader = cluster.group(leader_name)
        follower_name = next(n for n in cluster.nodes if n != leader_name)
        follower = cluster.group(follower_name)
        replica = leader.replica
        await asyncio.sleep(TICK_SECONDS * 2)  # whatever the put left to do is done
        # No ticks delivered meanwhile: a tick may give the core work of its own.
        for group in (leader, follower):
            group._deliver_ticks = lambda now=None: None  # type: ignore[method-assign]
        try:
            assert not leader._drive_scheduled and not follower._drive_scheduled
            # A vote for a slot already chosen, again: nothing for the leader's driver.
            stale = Accepted(
                NodeId(member_node_id(follower_name)),
                NodeId(member_node_id(leader_name)),
                replica.ballot,
                (replica.commit_slot,),
                replica.commit_slot,
                replica.now,
            )
            leader._on_message(follower_name, msgpack.unpackb(packed_messages([stale])[0]))
            assert not leader._drive_scheduled and not leader._work.is_set()
            # A heartbeat is answered: the follower's driver runs at the end of the turn.
            beat = Heartbeat(
                NodeId(member_node_id(leader_name)),
                NodeId(member_node_id(follower_name)),
                replica.ballot,
                replica.commit_slot,
                replica.now,
            )
            follower._on_message(leader_name, msgpack.unpackb(packed_messages([beat])[0]))
            assert follower._drive_scheduled or follower._work.is_set()
        finally:
            for group in (leader, follower):
                del group._deliver_ticks
        await put(cluster, leader_name, "k", b"w")
        await cluster.converged(list(cluster.nodes))
        await cluster.stop_all()

    run(body)
