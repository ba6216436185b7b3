"""A replica group in memory, driven one explicit step at a time.

Owns a minimal driver for tests, scenario scripts and the benchmark: a FIFO network whose
messages are delivered, dropped or blocked only when told, a disk per replica whose fsync can
be held back (so a crash loses the unsynced tail and the messages waiting for it), and a
trivial state machine (the list of applied commands). It records what happened as readable
event lines.

Must never decide anything on its own: no randomness beyond the seeded `random.Random`
handed to each replica, no clocks, no IO. The randomized fault simulator lives in
`keeldb.consensus.sim`; this harness is for scripted, exact runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from keeldb.consensus.messages import (
    Accept,
    Accepted,
    CatchUp,
    CatchUpAck,
    Heartbeat,
    HeartbeatAck,
    InstallSnapshot,
    Message,
    Nack,
    Prepare,
    Probe,
    ProbeReply,
    Promise,
    Record,
)
from keeldb.consensus.replica import DurableState, Options, Ready, Replica, Role
from keeldb.consensus.types import Config, Entry, EntryKind, NodeId, ProposalId, Slot

QUIESCE_ROUNDS_MAX = 10_000  # delivery rounds before a run is declared livelocked


def _slots(entries: Iterable[tuple[Slot, Entry]] | Iterable[Slot]) -> str:
    slots = [e[0] if isinstance(e, tuple) else e for e in entries]
    if not slots:
        return "-"
    if len(slots) > 1 and slots == list(range(slots[0], slots[0] + len(slots))):
        return f"{slots[0]}..{slots[-1]}"
    return ",".join(str(s) for s in slots)


def describe(msg: Message) -> str:
    """One readable line per message, stable across runs."""
    head = f"{msg.src}->{msg.dst} {type(msg).__name__}"
    match msg:
        case Probe():
            return f"{head} b={msg.ballot}"
        case ProbeReply():
            return f"{head} b={msg.ballot} hears_leader={msg.hears_leader}"
        case Prepare():
            return f"{head} b={msg.ballot} from={msg.from_slot}"
        case Promise():
            votes = " ".join(f"{e.slot}:{e.entry}@{e.ballot}" for e in msg.entries)
            snap = f" snapshot={msg.snapshot.slot}" if msg.snapshot is not None else ""
            return (
                f"{head} b={msg.ballot} commit={msg.commit_slot} "
                f"lease_left={msg.lease_remaining_ticks} votes=[{votes}]{snap}"
            )
        case Accept():
            values = " ".join(f"{s}:{e}" for s, e in msg.entries)
            return f"{head} b={msg.ballot} [{values}] commit={msg.commit_slot}"
        case Accepted():
            return f"{head} b={msg.ballot} slots={_slots(msg.slots)} commit={msg.commit_slot}"
        case Nack():
            return f"{head} b={msg.ballot} promised={msg.promised}"
        case Heartbeat():
            return f"{head} b={msg.ballot} commit={msg.commit_slot}"
        case HeartbeatAck():
            return f"{head} b={msg.ballot} commit={msg.commit_slot}"
        case CatchUp():
            return f"{head} b={msg.ballot} slots={_slots(msg.entries)} commit={msg.commit_slot}"
        case InstallSnapshot():
            return f"{head} b={msg.ballot} snapshot={msg.snapshot.slot}"
        case CatchUpAck():
            return f"{head} b={msg.ballot} commit={msg.commit_slot}"
    raise AssertionError(f"unknown message {msg!r}")


@dataclass
class NodeState:
    """What the harness keeps for one replica: its disk survives crashes, the rest not."""

    node_id: NodeId
    replica: Replica | None
    synced: list[Record] = field(default_factory=list)
    unsynced: list[Record] = field(default_factory=list)
    held: list[Message] = field(default_factory=list)  # waiting for the fsync
    pending: Ready | None = None  # a Ready whose fsync is held back
    disk_stalled: bool = False
    state: list[bytes] = field(default_factory=list)  # the state machine: applied commands
    state_slot: int = 0  # the last slot applied to `state`
    acknowledged: list[ProposalId] = field(default_factory=list)
    dropped: list[ProposalId] = field(default_factory=list)
    restarts: int = 0


class AgreementError(AssertionError):
    """Two replicas applied different values in one slot."""


class Harness:
    def __init__(
        self,
        config: Config,
        *,
        options: Options | None = None,
        seed: int = 0,
        extra_nodes: Iterable[int] = (),
        record_events: bool = True,
    ) -> None:
        self.initial_config = config
        self.options = options if options is not None else Options()
        self.seed = seed
        self.nodes: dict[NodeId, NodeState] = {}
        self.net: list[Message] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.events: list[str] = []
        self.record_events = record_events
        self.chosen: dict[Slot, Entry] = {}
        self.labels: dict[tuple[NodeId, ProposalId], str] = {}
        for node_id in sorted({*config.node_ids, *(NodeId(n) for n in extra_nodes)}):
            self.nodes[node_id] = NodeState(node_id, self._new_replica(node_id, None))
        self._roles = {n: self._role_of(n) for n in self.nodes}

    # ------------------------------------------------------------------ building blocks

    def _new_replica(self, node_id: NodeId, durable: DurableState | None) -> Replica:
        restarts = self.nodes[node_id].restarts if node_id in self.nodes else 0
        rng = random.Random(self.seed * 1_000_003 + node_id * 101 + restarts)
        return Replica(node_id, self.initial_config, rng, self.options, durable)

    def replica(self, node_id: int) -> Replica:
        replica = self.nodes[NodeId(node_id)].replica
        assert replica is not None, f"node {node_id} is down"
        return replica

    def _role_of(self, node_id: NodeId) -> str:
        replica = self.nodes[node_id].replica
        if replica is None:
            return "down"
        return replica.role.value

    def _event(self, line: str) -> None:
        if self.record_events:
            self.events.append(line)

    def take_events(self) -> list[str]:
        out, self.events = self.events, []
        return out

    def _label(self, node: NodeState, pid: ProposalId) -> str:
        return self.labels.get((node.node_id, pid), f"p{pid}")

    # ------------------------------------------------------------------ processing

    def process(self, node_id: NodeId) -> None:
        """Run ready/persist/send/apply/advance cycles for one replica until it has nothing
        more to do (advancing may itself produce work: a leader of a group of one learns its
        own vote only in advance())."""
        for _ in range(QUIESCE_ROUNDS_MAX):
            if not self._process_once(node_id):
                return
        raise AssertionError(f"node {node_id} never stops producing Readies")

    def _process_once(self, node_id: NodeId) -> bool:
        node = self.nodes[node_id]
        replica = node.replica
        if replica is None or node.pending is not None:
            return False
        if not replica.has_ready():
            return False
        rd = replica.ready()
        self.net.extend(rd.send_now)
        if node.disk_stalled:
            node.unsynced.extend(rd.persist)
            node.held.extend(rd.send_after_persist)
            node.pending = rd
            return False
        node.synced.extend(rd.persist)
        self.net.extend(rd.send_after_persist)
        self._finish(node, rd)
        return True

    def _finish(self, node: NodeState, rd: Ready) -> None:
        replica = node.replica
        assert replica is not None
        if rd.install_snapshot is not None:
            snap = rd.install_snapshot
            node.state = [c for c in snap.state.split(b"\n") if c] if snap.state else []
            node.state_slot = snap.slot
            self._event(f"{node.node_id}: install snapshot {snap.slot}")
        for slot, entry in rd.apply:
            self._check_agreement(node.node_id, slot, entry)
            assert slot == node.state_slot + 1, (
                f"{node.node_id} applies {slot} after {node.state_slot}"
            )
            node.state_slot = slot
            if entry.kind is EntryKind.COMMAND:
                node.state.append(entry.command)
            self._event(f"{node.node_id}: apply {slot} {entry}")
        for pid in rd.acknowledged:
            node.acknowledged.append(pid)
            self._event(f"{node.node_id}: ack {self._label(node, pid)}")
        for pid in rd.dropped:
            node.dropped.append(pid)
            self._event(f"{node.node_id}: dropped {self._label(node, pid)}")
        replica.advance(rd)

    def _check_agreement(self, node_id: NodeId, slot: Slot, entry: Entry) -> None:
        seen = self.chosen.get(slot)
        if seen is None:
            self.chosen[slot] = entry
        elif seen != entry:
            raise AgreementError(f"slot {slot}: node {node_id} applies {entry}, another {seen}")

    def process_all(self) -> None:
        for node_id in self.nodes:
            self.process(node_id)
        self._note_roles()

    def _note_roles(self) -> None:
        for node_id in self.nodes:
            role = self._role_of(node_id)
            if role != self._roles[node_id]:
                replica = self.nodes[node_id].replica
                ballot = f" {replica.ballot}" if replica is not None else ""
                self._event(f"{node_id}: {self._roles[node_id]} -> {role}{ballot}")
                self._roles[node_id] = role

    def sync(self, node_id: int) -> None:
        """The held-back fsync completes: the tail is durable, held messages go out."""
        node = self.nodes[NodeId(node_id)]
        node.synced.extend(node.unsynced)
        node.unsynced = []
        self.net.extend(node.held)
        node.held = []
        rd, node.pending = node.pending, None
        if rd is not None:
            self._finish(node, rd)
        self.process_all()

    # ------------------------------------------------------------------ network

    def _match(
        self, msg: Message, src: int | None, dst: int | None, kinds: tuple[str, ...]
    ) -> bool:
        if src is not None and msg.src != src:
            return False
        if dst is not None and msg.dst != dst:
            return False
        return not kinds or type(msg).__name__ in kinds

    def deliver(
        self, src: int | None = None, dst: int | None = None, kinds: tuple[str, ...] = ()
    ) -> int:
        """Deliver, in order, every in-flight message that matches (one pass: replies they
        cause stay in flight). Returns how many were delivered."""
        self.process_all()
        take = [m for m in self.net if self._match(m, src, dst, kinds)]
        self.net = [m for m in self.net if not self._match(m, src, dst, kinds)]
        for msg in take:
            self.deliver_message(msg)
        self.process_all()
        return len(take)

    def deliver_message(self, msg: Message) -> None:
        """Deliver one message already taken out of `net` (fault injectors pick them)."""
        target = self.nodes.get(msg.dst)
        if (msg.src, msg.dst) in self.blocked:
            self._event(f"{describe(msg)} (lost: partition)")
            return
        if target is None or target.replica is None:
            self._event(f"{describe(msg)} (lost: {msg.dst} down)")
            return
        self._event(describe(msg))
        target.replica.step(msg)
        self.process(msg.dst)

    def deliver_all(self) -> int:
        """Deliver until the network is empty."""
        total = 0
        for _ in range(QUIESCE_ROUNDS_MAX):
            self.process_all()
            if not self.net:
                return total
            total += self.deliver()
        raise AssertionError("the network did not quiesce")

    def drop(
        self, src: int | None = None, dst: int | None = None, kinds: tuple[str, ...] = ()
    ) -> int:
        self.process_all()
        lost = [m for m in self.net if self._match(m, src, dst, kinds)]
        self.net = [m for m in self.net if not self._match(m, src, dst, kinds)]
        for msg in lost:
            self._event(f"{describe(msg)} (dropped)")
        return len(lost)

    def duplicate(
        self, src: int | None = None, dst: int | None = None, kinds: tuple[str, ...] = ()
    ) -> int:
        """Put a second copy of every matching in-flight message at the end of the queue."""
        self.process_all()
        copies = [m for m in self.net if self._match(m, src, dst, kinds)]
        self.net.extend(copies)
        return len(copies)

    def reverse(self) -> None:
        """Reorder the network: in-flight messages will arrive in the opposite order."""
        self.process_all()
        self.net.reverse()

    def partition(self, *groups: Iterable[int]) -> None:
        """Block every message between different groups (both directions)."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.blocked.add((NodeId(x), NodeId(y)))
                        self.blocked.add((NodeId(y), NodeId(x)))

    def block(self, src: int, dst: int) -> None:
        """One-way loss: messages from src to dst are lost."""
        self.blocked.add((NodeId(src), NodeId(dst)))

    def heal(self) -> None:
        self.blocked.clear()

    # ------------------------------------------------------------------ time and faults

    def tick(self, nodes: Iterable[int] | None = None, n: int = 1) -> None:
        targets = sorted(self.nodes) if nodes is None else [NodeId(x) for x in nodes]
        for _ in range(n):
            for node_id in targets:
                replica = self.nodes[node_id].replica
                if replica is not None:
                    replica.tick()
            self.process_all()

    def run(self, ticks: int) -> None:
        """Tick every replica and deliver everything, `ticks` times."""
        for _ in range(ticks):
            self.tick()
            self.deliver_all()

    def crash(self, node_id: int) -> None:
        """Lose everything not fsynced, and the messages that waited for that fsync."""
        node = self.nodes[NodeId(node_id)]
        node.replica = None
        node.unsynced = []
        node.held = []
        node.pending = None
        node.state = []
        node.state_slot = 0
        self._note_roles()

    def restart(self, node_id: int) -> None:
        node = self.nodes[NodeId(node_id)]
        assert node.replica is None, f"node {node_id} is up"
        node.restarts += 1
        node.disk_stalled = False
        node.replica = self._new_replica(node.node_id, DurableState.replay(node.synced))
        self.process_all()

    def stall_disk(self, node_id: int) -> None:
        self.nodes[NodeId(node_id)].disk_stalled = True

    def unstall_disk(self, node_id: int) -> None:
        self.nodes[NodeId(node_id)].disk_stalled = False
        self.sync(node_id)

    # ------------------------------------------------------------------ clients

    def propose(self, node_id: int, command: bytes, *, process: bool = True) -> ProposalId | None:
        replica = self.replica(node_id)
        pid = replica.propose(command)
        if pid is not None:
            self.labels[(NodeId(node_id), pid)] = command.decode("utf-8", "replace")
        if process:
            self.process_all()
        return pid

    def campaign(self, node_id: int) -> None:
        """Make `node_id` start phase 1 now (skipping the pre-check)."""
        assert self.replica(node_id).campaign(), f"node {node_id} may not lead"
        self.process_all()

    def timeout(self, node_id: int, ticks_max: int = 100) -> bool:
        """Tick only `node_id` until its election timer fires and it leaves the follower
        role; False if it never does within `ticks_max` ticks."""
        replica = self.replica(node_id)
        for _ in range(ticks_max):
            if replica.role is not Role.FOLLOWER:
                return True
            replica.tick()
            self.process_all()
        return replica.role is not Role.FOLLOWER

    def elect(self, node_id: int) -> None:
        """Make `node_id` leader with every message delivered."""
        self.campaign(node_id)
        self.deliver_all()
        assert self.replica(node_id).is_leader, f"node {node_id} did not become leader"

    def snapshot(self, node_id: int) -> Slot:
        node = self.nodes[NodeId(node_id)]
        replica = self.replica(node_id)
        slot = replica.applied_slot
        replica.take_snapshot(slot, b"\n".join(node.state))
        self.process_all()
        return slot

    def leaders(self) -> list[NodeId]:
        return [n for n, s in self.nodes.items() if s.replica is not None and s.replica.is_leader]

    def status(self) -> list[str]:
        lines = []
        for node_id, node in self.nodes.items():
            r = node.replica
            if r is None:
                lines.append(f"{node_id}: down")
                continue
            lines.append(
                f"{node_id}: {r.role.value} promised={r.ballot} commit={r.commit_slot} "
                f"applied={r.applied_slot} lease={r.read_lease()} "
                f"state=[{' '.join(c.decode('utf-8', 'replace') for c in node.state)}]"
            )
        return lines

    def with_options(self, **changes: object) -> Options:
        return replace(self.options, **changes)  # type: ignore[arg-type]


def all_messages(harness: Harness, predicate: Callable[[Message], bool]) -> list[Message]:
    return [m for m in harness.net if predicate(m)]
