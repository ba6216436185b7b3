"""The simulated world: replicas, their disks and clocks, a network, clients and a nemesis,
driven by one discrete-event scheduler in one thread from one seed.

It owns the driver loop around each `Replica` (the same contract a real node's loop keeps:
send `send_now`, persist then fsync `persist`, only then send `send_after_persist`, apply
`apply` in slot order, then `advance`), the client protocol (requests with unique ids,
bounded retries, a key-value state machine that applies each request once), the fault
schedule, and feeding the checkers. A run is a pure function of its `RunConfig`: every
random choice comes from `random.Random` instances derived from the seed, events are
ordered by (time, sequence number), and nothing depends on set order.

It must never read a real clock, touch a socket or a file, or call random's global
functions: the whole package is imported by tests that compare trace hashes across
processes.
"""

from __future__ import annotations

import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keeldb.consensus.messages import AcceptRecord, ChosenRecord, Promise, SnapshotRecord
from keeldb.consensus.replica import DurableState, Mutation, Options, Ready, Replica, Role
from keeldb.consensus.sim.checkers import (
    AGREEMENT,
    DURABILITY,
    EXCEPTION,
    AgreementChecker,
    DurabilityChecker,
    HistoryRecorder,
    LivenessChecker,
    Verdicts,
    Violation,
    check_linearizability,
)
from keeldb.consensus.sim.clock import DriftingClock
from keeldb.consensus.sim.disk import Disk
from keeldb.consensus.sim.kv import Command, KvStore
from keeldb.consensus.sim.linearizability import OpKind
from keeldb.consensus.sim.network import CALM, STORMY, Network, NetworkFaults
from keeldb.consensus.sim.trace import Trace, short
from keeldb.consensus.types import (
    Config,
    ConfigError,
    Entry,
    EntryKind,
    Member,
    NodeId,
    ProposalId,
    Slot,
    Snapshot,
)

PROFILES = ("standard", "aurora")

# Client-side limits.
CLIENT_ATTEMPTS_MAX = 100  # tries per request before the client gives up (outcome unknown)
CLIENT_DEADLINE_US = 1_500_000  # and it gives up once the request is this old
CLIENT_TIMEOUT_US = 60_000  # wait for a reply before retrying elsewhere
CLIENT_BACKOFF_US = 20_000  # pause after a "not leader" reply (an election takes longer)
CLIENT_THINK_MAX_US = 8_000  # pause between one request's end and the next's start

# Driver limits.
EVENTS_MAX = 5_000_000  # a run that needs more is a bug in the world or the core
DEFERRED_INPUTS_MAX = 100_000  # inputs queued while a node waits for its fsync


def initial_config(profile: str, log_replicas: bool) -> Config:
    """The starting configuration of a profile; with `log_replicas`, the aurora profile
    makes one member per zone a log-only acceptor (it votes but keeps no state)."""
    if profile == "standard":
        return Config.standard([1, 2, 3])
    if profile == "aurora":
        config = Config.aurora([1, 2, 3, 4, 5, 6])
        if log_replicas:
            members = tuple(
                Member(m.node_id, m.zone, log_only=(m.node_id % 2 == 0)) for m in config.members
            )
            config = Config(members, config.q1, config.q2, config.epoch)
            config.validate()
        return config
    raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run depends on. Times are simulated microseconds."""

    seed: int = 0
    profile: str = "standard"
    mutations: frozenset[Mutation] = frozenset()
    clients: int = 4
    keys: int = 3
    fault_us: int = 1_500_000  # the faulty phase; then everything heals
    liveness_bound_us: int = 3_000_000  # after the heal, every request finishes within this
    quiesce_us: int = 1_000_000  # clients issue new requests until heal + quiesce
    tick_us: int = 10_000
    network: NetworkFaults = STORMY
    nemesis: bool = True
    nemesis_interval_us: int = 120_000  # mean time between fault actions
    crash_weight: int = 4
    partition_weight: int = 3
    cut_leader_weight: int = 2
    isolate_leader_weight: int = 2
    lease_attack_weight: int = 1
    promise_attack_weight: int = 1
    reconfig_weight: int = 1
    resize_reconfigs: bool = True  # reconfigurations may also add or remove a member
    restart_all_weight: int = 1
    # Faults that let an unsynced tail be acknowledged matter only if a crash finds it.
    crash_before_fsync_probability: float = 0.01
    crash_after_send_probability: float = 0.02
    quick_restart_probability: float = 0.3
    crash_after_ack_probability: float = 0.002
    crash_after_ack_all_fraction: float = 0.5
    # A voter that reboots right after promising: what it forgot (if anything) decides
    # whether an older leader can still get its vote.
    crash_after_promise_probability: float = 0.01
    reboot_min_us: int = 200
    reboot_max_us: int = 2_000
    heal_on_reboot: bool = False
    torn_probability: float = 0.5
    fsync_min_us: int = 200
    fsync_max_us: int = 3_000
    # Drive each replica as a pipelining node does (`keeldb.cluster.group`): take the next
    # Ready while the previous one's fsync runs (`advance(rd, durable=False)`, then
    # `persisted(rd)` in order), apply chosen entries at once, and hold every
    # `send_after_persist` until the fsync covering its Ready completes.
    pipeline: bool = False
    pipeline_readys_max: int = 8  # Readys advanced but not yet durable, at most
    lease_reads: bool = True
    # Clock rates vary within this relative bound; None means the bound the core assumes
    # (Options.clock_drift_max). Larger values break the lease argument on purpose.
    clock_drift: float | None = None
    # The lease attack also pins the old leader's clock slow and every other clock fast.
    clock_attack: bool = True
    # Replica timing in ticks; None keeps the core's defaults.
    lease_ticks: int | None = None
    election_ticks_min: int | None = None
    election_ticks_max: int | None = None
    client_misroute_probability: float = 0.1
    log_replicas: bool = True
    snapshot_every_slots: int = 40
    # Small windows and logs, so short runs cross reconfiguration windows, compaction and
    # snapshot installs many times.
    window_slots: int = 32
    batch_entries_max: int = 16
    log_entries_retained: int = 8
    # The fault matrix: these nodes crash at `fail_at_us` and stay down until the heal
    # (`fault_us`), when every node restarts.
    failed_nodes: tuple[int, ...] = ()
    fail_at_us: int = 300_000
    keep_trace: bool = False
    # Replicas send Accepts to a phase-2 quorum only (`Options.thrifty_accepts`).
    thrifty_accepts: bool = False
    schedule: str = "all-faults"  # the name of the schedule these settings came from


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    trace_hash: str
    verdicts: Verdicts
    ops_invoked: int = 0
    ops_completed: int = 0
    ops_abandoned: int = 0
    writes_acknowledged: int = 0
    elections: int = 0
    leaders_elected: int = 0
    reconfigs_proposed: int = 0
    reconfigs_applied: int = 0
    crashes: int = 0
    partitions: int = 0
    snapshots_installed: int = 0
    end_us: int = 0
    events: int = 0
    trace_lines: list[str] = field(default_factory=list)
    completed_after_heal: int = 0
    first_completion_after_heal_us: int | None = None  # how long the group took to serve
    acknowledged_at_us: list[int] = field(default_factory=list)
    unsynced_readys_max: int = 0  # pipelined: the most Readys advanced before their fsync

    @property
    def ok(self) -> bool:
        return self.verdicts.ok

    def replay_command(self) -> str:
        parts = [f"python -m keeldb.consensus.sim --seed {self.config.seed}",
                 f"--profile {self.config.profile}"]
        for mutation in sorted(m.name for m in self.config.mutations):
            parts.append(f"--mutation {mutation}")
        parts.append(f"--schedule {self.config.schedule}")
        if self.config.clock_drift is not None:
            parts.append(f"--clock-drift {self.config.clock_drift}")
        if self.config.thrifty_accepts:
            parts.append("--thrifty")
        parts.append("--trace")
        return " ".join(parts)


@dataclass(slots=True)
class ClientState:
    client_id: int
    rng: random.Random
    guess: NodeId
    request: int = 0
    command: Command | None = None
    attempt: int = 0
    done: bool = True


@dataclass(slots=True)
class SimNode:
    node_id: NodeId
    first_config: Config  # the configuration the replica was created with
    disk: Disk
    clock: DriftingClock
    rng: random.Random
    up: bool = False
    incarnation: int = 0
    replica: Replica | None = None
    kv: KvStore | None = None
    applied_slot: int = 0
    snapshot_slot: int = 0
    persisting: Ready | None = None  # the Ready whose persist is in flight to the disk
    # Pipelined: Readys advanced whose records no fsync has covered yet, and those that
    # the fsync in flight covers (oldest first).
    unsynced: list[Ready] = field(default_factory=list)
    syncing: list[Ready] | None = None
    # Client requests this node proposed, by proposal id: answered when acknowledged.
    waiting: dict[ProposalId, tuple[int, Command]] = field(default_factory=dict)
    permanently_failed: bool = False
    leading: bool = False
    leader_since_us: int = 0
    leader_checked: bool = True
    # What the disk holds durably, indexed for the chosen-on-disk check: the values voted
    # or known chosen per slot, the highest snapshot slot, how many durable records are
    # indexed so far; and the commit point already checked on this incarnation.
    durable_values: dict[int, list[Any]] = field(default_factory=dict)
    durable_snapshot_slot: int = 0
    durable_indexed: int = 0
    checked_commit: int = 0


@dataclass(frozen=True, slots=True)
class ClientReply:
    client: int
    request: int
    result: Any
    not_leader: bool = False
    hint: NodeId | None = None


class World:
    def __init__(self, config: RunConfig) -> None:
        self.cfg = config
        master = random.Random(config.seed)
        # One Random per component, derived in a fixed order, so adding draws to one
        # component does not shift another's.
        self.net_rng = random.Random(master.getrandbits(64))
        self.nemesis_rng = random.Random(master.getrandbits(64))
        self.client_seed = master.getrandbits(64)
        self.disk_rng = random.Random(master.getrandbits(64))
        self.node_seed = master.getrandbits(64)
        self.network = Network(self.net_rng, config.network)
        self.trace = Trace(config.keep_trace)
        self.now = 0
        self.seq = 0
        self.queue: list[tuple[int, int, str, Any]] = []
        self.group_config = initial_config(config.profile, config.log_replicas)
        self.group_config_initial_n = self.group_config.n
        self.group_config_first_slot = 1
        # Configurations chosen so far, each with the first slot it governs.
        self.configs_learned: dict[Config, int] = {self.group_config: 1}
        timing = {name: getattr(config, name) for name in
                  ("lease_ticks", "election_ticks_min", "election_ticks_max")
                  if getattr(config, name) is not None}
        self.options = Options(
            **timing,
            mutations=frozenset(config.mutations),
            pipeline_slots_max=config.window_slots,
            reconfig_window_slots=config.window_slots,
            batch_entries_max=config.batch_entries_max,
            catchup_entries_max=config.batch_entries_max,
            log_entries_retained=config.log_entries_retained,
            compaction_entries_min=config.snapshot_every_slots * 2,
            thrifty_accepts=config.thrifty_accepts,
        )
        self.nodes: dict[NodeId, SimNode] = {}
        self.next_node_id = 1 + max(self.group_config.node_ids)
        self.agreement = AgreementChecker()
        self.durability = DurabilityChecker()
        self.history = HistoryRecorder()
        self.liveness = LivenessChecker(config.liveness_bound_us)
        self.result = RunResult(config, "", Verdicts())
        self.heal_us = config.fault_us
        self.end_us = config.fault_us + config.liveness_bound_us
        self.stop_issuing_us = config.fault_us + config.quiesce_us
        self.prepare_ballots: set[tuple[int, int]] = set()
        self.clients: list[ClientState] = []
        self.crashed: Violation | None = None
        # An armed lease attack: (leader, member to reboot, members cut from the leader).
        self.attack: tuple[NodeId, NodeId, tuple[NodeId, ...]] | None = None
        # An armed promise attack: leader, the successor's ballot and when voters return.
        self.promise_attack: dict[str, Any] | None = None
        for node_id in self.group_config.node_ids:
            self._add_node(node_id, self.group_config)
        rng = random.Random(self.client_seed)
        for c in range(config.clients):
            crng = random.Random(rng.getrandbits(64))
            guess = crng.choice(self.group_config.node_ids)
            self.clients.append(ClientState(c + 1, crng, guess))

    # ------------------------------------------------------------------ scheduling

    def schedule(self, at_us: int, kind: str, payload: Any) -> None:
        assert at_us >= self.now
        self.seq += 1
        heapq.heappush(self.queue, (at_us, self.seq, kind, payload))

    def log(self, text: str) -> None:
        self.trace.record(self.now, text)

    def run(self) -> RunResult:
        for node in self._nodes_sorted():
            if not node.permanently_failed:
                self._start(node, fresh=True)
        for client in self.clients:
            self.schedule(client.rng.randrange(CLIENT_THINK_MAX_US), "client_next", client)
        if self.cfg.nemesis:
            self.schedule(self._nemesis_gap(), "nemesis", None)
        if self.cfg.failed_nodes:
            self.schedule(self.cfg.fail_at_us, "fail_nodes", None)
        self.schedule(self.heal_us, "heal", None)
        self.schedule(self.end_us, "end", None)
        handlers: dict[str, Callable[[Any], None]] = {
            "tick": self._on_tick,
            "deliver": self._on_deliver,
            "fsync": self._on_fsync,
            "client_next": self._on_client_next,
            "client_request": self._on_client_request,
            "client_reply": self._on_client_reply,
            "client_timeout": self._on_client_timeout,
            "client_resend": self._on_client_resend,
            "nemesis": self._on_nemesis,
            "restart": self._on_restart,
            "heal_partition": self._on_heal_partition,
            "heal": self._on_heal,
            "fail_nodes": self._on_fail_nodes,
            "promise_attack_heal": self._on_promise_attack_heal,
        }
        events = 0
        try:
            while self.queue:
                at, _, kind, payload = heapq.heappop(self.queue)
                self.now = at
                if kind == "end":
                    break
                events += 1
                assert events < EVENTS_MAX
                handlers[kind](payload)
        except Exception as error:  # noqa: BLE001 - any exception here is a finding
            # An assertion in the core or the world stopped the run: report it as a
            # failure of this seed (with where it fired) instead of ending all seeds.
            self.crashed = Violation(EXCEPTION, self.now, _describe_exception(error))
            self.log(f"stopped by {self.crashed.message}")
        return self._finish(events)

    # ------------------------------------------------------------------ nodes

    def _nodes_sorted(self) -> list[SimNode]:
        return [self.nodes[n] for n in sorted(self.nodes)]

    def _add_node(self, node_id: NodeId, config: Config) -> SimNode:
        rng = random.Random(self.node_seed ^ (node_id * 0x9E3779B97F4A7C15))
        drift = (float(self.options.clock_drift_max) if self.cfg.clock_drift is None
                 else self.cfg.clock_drift)
        clock = DriftingClock(random.Random(rng.getrandbits(64)), self.cfg.tick_us, drift)
        node = SimNode(node_id, config, Disk(), clock, rng)
        self.nodes[node_id] = node
        return node

    def _start(self, node: SimNode, fresh: bool) -> None:
        node.incarnation += 1
        node.up = True
        node.persisting = None
        node.unsynced = []
        node.syncing = None
        node.waiting.clear()
        node.leading = False
        node.applied_slot = 0
        node.snapshot_slot = 0
        replica_rng = random.Random(node.rng.getrandbits(64))
        durable = None if fresh else DurableState.replay(list(node.disk.durable))
        node.replica = Replica(node.node_id, node.first_config, replica_rng, self.options,
                               durable=durable)
        node.kv = None if node.replica.log_only else KvStore()
        node.checked_commit = int(node.replica.commit_slot)
        self.log(f"start n{node.node_id} incarnation {node.incarnation}"
                 f"{' (recovered from disk)' if not fresh else ''}")
        self.schedule(self.now + node.clock.next_interval_us(), "tick",
                      (node.node_id, node.incarnation))
        self._pump(node)

    def _crash(self, node: SimNode) -> None:
        assert node.up
        kept = node.disk.crash(self.disk_rng, self.cfg.torn_probability)
        node.up = False
        node.replica = None
        node.kv = None
        node.persisting = None
        node.unsynced = []
        node.syncing = None
        node.waiting.clear()
        node.leading = False
        self.result.crashes += 1
        self.log(f"crash n{node.node_id} (kept {kept} unsynced records)")

    def _on_tick(self, payload: tuple[NodeId, int]) -> None:
        node_id, incarnation = payload
        node = self.nodes[node_id]
        if not node.up or node.incarnation != incarnation:
            return
        self.schedule(self.now + node.clock.next_interval_us(), "tick", payload)
        self._input(node, "tick", None)

    def _on_deliver(self, payload: tuple[NodeId, Any]) -> None:
        dst, msg = payload
        node = self.nodes.get(dst)
        if node is None or not node.up or not self.network.connected(msg.src, dst):
            return
        readable = f"deliver {short(msg)}" if self.trace.keep_lines else None
        self.trace.record(self.now, "deliver", repr(msg), readable)
        self._input(node, "step", msg)

    def _input(self, node: SimNode, kind: str, arg: Any) -> None:
        """Feed one input to a replica. Inputs keep flowing while a Ready waits for its
        fsync (a real node's timer and network do not stop for the disk): the core
        collects their outputs into the next Ready."""
        replica = node.replica
        assert replica is not None
        # The configurations governing the slots above the commit point now: the core
        # forgets those it no longer needs once its commit point passes them.
        configs_before = replica.configs
        if kind == "tick":
            replica.tick()
        elif kind == "step":
            replica.step(arg)
        elif kind == "client":
            self._serve_client(node, arg)
        else:
            raise AssertionError(f"unknown input {kind}")
        self._check_chosen_on_disk(node, configs_before)
        self._pump(node)

    def _index_durable(self, node: SimNode) -> None:
        records = node.disk.durable
        for record in records[node.durable_indexed:]:
            match record:
                case AcceptRecord(entry):
                    node.durable_values.setdefault(int(entry.slot), []).append(entry.entry)
                case ChosenRecord(slot, entry):
                    node.durable_values.setdefault(int(slot), []).append(entry)
                case SnapshotRecord(snapshot):
                    node.durable_snapshot_slot = max(node.durable_snapshot_slot,
                                                     int(snapshot.slot))
                case _:
                    pass
        node.durable_indexed = len(records)

    def _holds_durably(self, node_id: NodeId, slot: int, value: Any) -> bool:
        node = self.nodes.get(node_id)
        if node is None:
            return False
        self._index_durable(node)
        if node.durable_snapshot_slot >= slot:
            return True
        return value in node.durable_values.get(slot, ())

    def _check_chosen_on_disk(self, node: SimNode,
                              configs_before: tuple[tuple[Slot, Config], ...]) -> None:
        """A leader takes a slot as chosen only when Q2 members of the configuration that
        governs it hold its value on disk (fsynced): otherwise a crash of the others could
        lose a chosen value. Checked the moment the leader's commit point moves, so a
        leader that counts its own vote before its record is durable is caught even when
        no crash follows."""
        replica = node.replica
        if replica is None:
            return
        commit = int(replica.commit_slot)
        if commit <= node.checked_commit:
            return
        first = node.checked_commit + 1
        node.checked_commit = commit
        if not replica.is_leader:
            return
        # The configuration governing each slot: from every configuration the world saw
        # chosen and those the leader knows (a restarted replica keeps only the ones
        # governing slots above its snapshot).
        merged = {first: config for config, first in self.configs_learned.items()}
        merged.update(configs_before)
        merged.update(replica.configs)
        configs = sorted(merged.items())
        for slot in range(first, commit + 1):
            log_entry = replica.entry_at(Slot(slot))
            if log_entry is None:
                continue  # compacted into a snapshot already
            config = configs[0][1]
            for start, candidate in configs:
                if start <= slot:
                    config = candidate
            holders = [n for n in config.node_ids
                       if self._holds_durably(n, slot, log_entry.entry)]
            if len(holders) < config.q2 and len(self.durability.violations) < 10:
                self.durability.violations.append(Violation(
                    DURABILITY, self.now,
                    f"n{node.node_id} took slot {slot} as chosen while only "
                    f"{len(holders)} member(s) {holders} of Q2 {config.q2} held it on disk",
                ))

    def _pump(self, node: SimNode) -> None:
        """Drain the replica's Ready values, keeping the persist-before-send order."""
        if self.cfg.pipeline:
            self._pump_pipelined(node)
            return
        while node.up and node.persisting is None:
            replica = node.replica
            assert replica is not None
            if not replica.has_ready():
                self._note_role(node)
                return
            ready = replica.ready()
            self._send(node, ready.send_now)
            if ready.persist:
                node.disk.write(list(ready.persist))
                node.persisting = ready
                latency = node.rng.randint(self.cfg.fsync_min_us, self.cfg.fsync_max_us)
                self.schedule(self.now + latency, "fsync", (node.node_id, node.incarnation))
                # Sent messages already left: the most dangerous moment for a crash is
                # now, before the fsync, when peers may act on what was sent.
                window = (self.cfg.crash_after_send_probability if ready.send_now
                          else self.cfg.crash_before_fsync_probability)
                if (self.cfg.nemesis and self.now < self.heal_us
                        and self.nemesis_rng.random() < window):
                    # A crash that finds records written but not yet synced.
                    at = self.now + self.nemesis_rng.randint(0, latency)
                    self.schedule(at, "nemesis", ("crash", node.node_id, node.incarnation))
                return
            self._after_persist(node, ready)

    def _pump_pipelined(self, node: SimNode) -> None:
        """The pipelining driver: each Ready's Accepts leave and its chosen entries are
        applied at once, its records are written, and it is advanced before they are
        durable; one fsync at a time covers every Ready written before it started, and only
        then do their `send_after_persist` messages leave and their own votes count."""
        while node.up and len(node.unsynced) < self.cfg.pipeline_readys_max:
            replica = node.replica
            assert replica is not None
            if not replica.has_ready():
                self._note_role(node)
                break
            ready = replica.ready()
            self._send(node, ready.send_now)
            if ready.persist:
                node.disk.write(list(ready.persist))
            self._apply_ready(node, ready)
            if ready.persist or node.unsynced or node.syncing is not None:
                replica.advance(ready, durable=False)
                node.unsynced.append(ready)
            else:
                self._send(node, ready.send_after_persist)
                replica.advance(ready)
            self._maybe_snapshot(node, ready.snapshot_suggested)
        depth = len(node.unsynced) + len(node.syncing or ())
        self.result.unsynced_readys_max = max(self.result.unsynced_readys_max, depth)
        if node.up and node.syncing is None and node.unsynced:
            node.syncing, node.unsynced = node.unsynced, []
            latency = node.rng.randint(self.cfg.fsync_min_us, self.cfg.fsync_max_us)
            self.schedule(self.now + latency, "fsync", (node.node_id, node.incarnation))
            if (self.cfg.nemesis and self.now < self.heal_us
                    and self.nemesis_rng.random() < self.cfg.crash_after_send_probability):
                at = self.now + self.nemesis_rng.randint(0, latency)
                self.schedule(at, "nemesis", ("crash", node.node_id, node.incarnation))

    def _on_fsync_pipelined(self, node: SimNode) -> None:
        node.disk.fsync()
        covered, node.syncing = node.syncing, None
        assert covered is not None
        replica = node.replica
        assert replica is not None
        configs_before = replica.configs
        for ready in covered:
            self._send(node, ready.send_after_persist)
            replica.persisted(ready)
        # The leader's own votes count here: its commit point may move.
        self._check_chosen_on_disk(node, configs_before)
        self._pump(node)

    def _note_role(self, node: SimNode) -> None:
        replica = node.replica
        assert replica is not None
        leading = replica.is_leader
        if leading and not node.leading:
            self.result.leaders_elected += 1
            node.leader_since_us = self.now
            node.leader_checked = False
            self.log(f"n{node.node_id} leads at ballot {replica.ballot}")
        node.leading = leading
        if self.attack is not None:
            self._lease_attack_trigger(node)

    def _on_fsync(self, payload: tuple[NodeId, int]) -> None:
        node_id, incarnation = payload
        node = self.nodes[node_id]
        if not node.up or node.incarnation != incarnation:
            return
        if self.cfg.pipeline:
            if node.syncing is not None:
                self._on_fsync_pipelined(node)
            return
        if node.persisting is None:
            return
        node.disk.fsync()
        ready = node.persisting
        node.persisting = None
        self._after_persist(node, ready)
        self._pump(node)

    def _after_persist(self, node: SimNode, ready: Ready) -> None:
        self._send(node, ready.send_after_persist)
        self._apply_ready(node, ready)
        replica = node.replica
        assert replica is not None
        replica.advance(ready)
        self._maybe_snapshot(node, ready.snapshot_suggested)

    def _apply_ready(self, node: SimNode, ready: Ready) -> None:
        if ready.install_snapshot is not None:
            self._install(node, ready.install_snapshot)
        for slot, entry in ready.apply:
            self._apply(node, slot, entry)
        for pid in ready.acknowledged:
            self._acknowledged(node, pid)
        for pid in ready.dropped:
            waiting = node.waiting.pop(pid, None)
            if waiting is not None:
                client_id, command = waiting
                self._reply(node, client_id, command.request, None, not_leader=True)

    def _send(self, node: SimNode, messages: Any) -> None:
        for msg in messages:
            if self.promise_attack is not None and type(msg) is Promise:
                self._promise_attack_trigger(node, msg)
            if (type(msg) is Promise and self.cfg.nemesis and self.now < self.heal_us
                    and self.nemesis_rng.random() < self.cfg.crash_after_promise_probability):
                self.schedule(self.now, "nemesis", ("reboot", node.node_id, node.incarnation))
            if type(msg).__name__ == "Prepare":
                ballot = (msg.ballot.round, msg.ballot.node_id)
                if ballot not in self.prepare_ballots:
                    self.prepare_ballots.add(ballot)
                    self.result.elections += 1
            for at in self.network.send(self.now, msg.src, msg.dst):
                self.schedule(at, "deliver", (msg.dst, msg))

    def _install(self, node: SimNode, snapshot: Snapshot) -> None:
        self.result.snapshots_installed += 1
        self.log(f"n{node.node_id} installs snapshot at slot {snapshot.slot}")
        if node.kv is not None:
            node.kv = KvStore.restore(snapshot.state) if snapshot.state else KvStore()
        node.applied_slot = snapshot.slot
        node.snapshot_slot = snapshot.slot
        for first_slot, config in snapshot.configs:
            if first_slot > 1:
                self._learn_config(first_slot, config)

    def _apply(self, node: SimNode, slot: int, entry: Entry) -> None:
        if node.kv is not None:
            # A state-keeping replica applies every slot once, in order (a log-only one
            # hands out nothing while it is log-only, so it may start anywhere).
            assert slot == node.applied_slot + 1, (node.node_id, slot, node.applied_slot)
        node.applied_slot = slot
        self.agreement.observe(self.now, slot, entry, f"n{node.node_id}")
        if entry.kind is EntryKind.CONFIG:
            assert entry.config is not None
            self._learn_config(slot + self.options.reconfig_window_slots, entry.config)
            return
        if entry.kind is not EntryKind.COMMAND or node.kv is None:
            return
        command = Command.decode(entry.command)
        assert command is not None
        node.kv.apply(command)

    def _acknowledged(self, node: SimNode, pid: ProposalId) -> None:
        waiting = node.waiting.pop(pid, None)
        if waiting is None:
            return  # a reconfiguration, or a command proposed before a restart
        client_id, command = waiting
        kv = node.kv
        assert kv is not None
        if not kv.has_applied(command.client, command.request):
            self.durability.violations.append(Violation(
                DURABILITY, self.now,
                f"n{node.node_id} acknowledged client {command.client} request "
                f"{command.request} before applying it"))
            return
        self._reply(node, client_id, command.request,
                    kv.results[command.client][command.request])

    def _maybe_snapshot(self, node: SimNode, suggested: bool) -> None:
        if node.kv is None or node.replica is None:
            return
        due = node.applied_slot - node.snapshot_slot >= self.cfg.snapshot_every_slots
        if (due or suggested) and node.applied_slot > node.snapshot_slot:
            node.snapshot_slot = node.applied_slot
            node.replica.take_snapshot(Slot(node.applied_slot), node.kv.snapshot())
            self._pump(node)

    # ------------------------------------------------------------------ configuration

    def _learn_config(self, first_slot: int, config: Config) -> None:
        """A configuration governing slots from `first_slot` on was chosen (or restored
        from a snapshot): start its new members, empty, so they catch up from their peers,
        and track the one governing the highest slot. Configurations are told apart by the
        slot they start at (the core makes that slot the epoch, so the two agree). (A
        snapshot restates the configuration in force as starting after its own slot; the
        first sighting of each configuration is the one that counts.)"""
        if config in self.configs_learned:
            return
        self.configs_learned[config] = first_slot
        self.result.reconfigs_applied += 1
        self.log(f"config chosen, from slot {first_slot}: {config}")
        if first_slot > self.group_config_first_slot:
            self.group_config = config
            self.group_config_first_slot = first_slot
        for node_id in config.node_ids:
            if node_id not in self.nodes:
                new = self._add_node(node_id, config)
                self._start(new, fresh=True)

    def _propose_reconfig(self) -> None:
        """Ask the leader to replace one member with a fresh node in the same zone, to add
        or remove a member (N within the profile's bounds), or to move Q1/Q2 to another
        valid pair (Q1 + Q2 = N + 1)."""
        leader = self._leader()
        if leader is None:
            return
        replica = leader.replica
        assert replica is not None
        old = replica.latest_config
        rng = self.nemesis_rng
        members = sorted(old.members, key=lambda m: m.node_id)
        q1, q2 = old.q1, old.q2
        new_id = NodeId(self.next_node_id)
        roll = rng.random()
        n_min, n_max = self._members_bounds()
        if roll < 0.4:
            out = rng.choice(members)
            if out.node_id == leader.node_id:
                return
            members = [m for m in members if m.node_id != out.node_id]
            members.append(Member(new_id, out.zone, out.log_only))
            what = f"replace n{out.node_id} by n{new_id}"
        elif roll < 0.7 and self.cfg.resize_reconfigs:
            if rng.random() < 0.5 and len(members) < n_max:
                zones = sorted({m.zone for m in members},
                               key=lambda z: (sum(m.zone == z for m in members), z))
                members.append(Member(new_id, zones[0]))
                what = f"add n{new_id}"
            elif len(members) > n_min:
                out = rng.choice(members)
                if out.node_id == leader.node_id:
                    return
                members = [m for m in members if m.node_id != out.node_id]
                what = f"remove n{out.node_id}"
            else:
                return
            n = len(members)
            q2 = n // 2 + 1
            q1 = n + 1 - q2
        else:
            n = len(members)
            q2 = rng.randint(max(2, (n + 1) // 2), n)
            q1 = n + 1 - q2
            what = f"quorums Q1 {q1} Q2 {q2}"
        # The core gives a configuration its epoch when it assigns the entry a slot.
        new = Config(tuple(members), q1, q2, old.epoch + 1)
        try:
            new.validate()
        except ConfigError:
            return
        if replica.propose_reconfig(new) is None:
            return
        if any(m.node_id == new_id for m in members):
            self.next_node_id += 1
        self.result.reconfigs_proposed += 1
        self.log(f"n{leader.node_id} proposes reconfiguration: {what}")
        self._pump(leader)

    def _members_bounds(self) -> tuple[int, int]:
        """How small and large a group the resizing reconfigurations may make."""
        start = self.group_config_initial_n
        return max(3, start - 1), start + 2

    def _leader(self) -> SimNode | None:
        for node in self._nodes_sorted():
            if node.up and node.replica is not None and node.replica.is_leader:
                return node
        return None

    # ------------------------------------------------------------------ clients

    def _on_client_next(self, client: ClientState) -> None:
        if self.now >= self.stop_issuing_us:
            return
        rng = client.rng
        client.request += 1
        key = f"k{rng.randrange(self.cfg.keys)}"
        roll = rng.random()
        value = f"c{client.client_id}r{client.request}".encode()
        if roll < 0.45:
            command = Command(client.client_id, client.request, OpKind.GET, key)
        elif roll < 0.85:
            command = Command(client.client_id, client.request, OpKind.PUT, key, value)
        else:
            expected = rng.choice([None, *[f"c{c.client_id}r{rng.randint(1, max(1, c.request))}"
                                           .encode() for c in self.clients[:2]]])
            command = Command(client.client_id, client.request, OpKind.CAS, key, value, expected)
        client.command = command
        client.attempt = 0
        client.done = False
        self.history.invoke(self.now, client.client_id, client.request, command.kind,
                            command.key, command.value, command.expected)
        self.result.ops_invoked += 1
        self.log(f"client {client.client_id} invokes {command}")
        self._client_send(client)

    def _client_send(self, client: ClientState) -> None:
        client.attempt += 1
        assert client.command is not None
        if client.rng.random() < self.cfg.client_misroute_probability:
            # A client with a stale routing table: it asks some other node first.
            client.guess = client.rng.choice(self.group_config.node_ids)
        self.log(f"client {client.client_id} sends request {client.request} to n{client.guess} "
                 f"(attempt {client.attempt})")
        for at in self.network.send(self.now, ("client", client.client_id), client.guess):
            self.schedule(at, "client_request", (client.guess, client.client_id, client.command))
        self.schedule(self.now + CLIENT_TIMEOUT_US, "client_timeout",
                      (client, client.request, client.attempt))

    def _on_client_request(self, payload: tuple[NodeId, int, Command]) -> None:
        node_id, client_id, command = payload
        node = self.nodes.get(node_id)
        if node is None or not node.up:
            return
        self._input(node, "client", (client_id, command))

    def _serve_client(self, node: SimNode, arg: tuple[int, Command]) -> None:
        client_id, command = arg
        replica = node.replica
        assert replica is not None
        kv = node.kv
        if kv is None:
            self._reply(node, client_id, command.request, None, not_leader=True)
            return
        if node.leading and not node.leader_checked and replica.read_lease():
            # A leader that may serve reads has recovered and applied everything chosen
            # before its ballot: whatever anyone acknowledged before it was elected must
            # be in its state (durability, checked at every change of leader).
            node.leader_checked = True
            self.durability.check_replica(self.now, f"n{node.node_id} (new leader)",
                                          kv.has_applied, node.leader_since_us)
        if kv.has_applied(command.client, command.request) and replica.read_lease():
            # A retry of a request already applied here: answer from the session table.
            # That answer is a read of the state machine, so it needs the lease like any
            # read: a new leader may have applied entries it recovered while the old
            # leader's lease still lets that one serve reads without them.
            self._reply(node, client_id, command.request,
                        kv.results[command.client][command.request])
            return
        if command.kind is OpKind.GET and self.cfg.lease_reads and replica.read_lease():
            self.log(f"n{node.node_id} lease read {command.key} for client {client_id}")
            self._reply(node, client_id, command.request, kv.get(command.key), logged=False)
            return
        proposal = replica.propose(command.encode())
        if proposal is None:
            self._reply(node, client_id, command.request, None, not_leader=True,
                        hint=replica.leader_hint)
            return
        node.waiting[proposal] = (client_id, command)

    def _reply(self, node: SimNode, client_id: int, request: int, result: Any,
               not_leader: bool = False, hint: NodeId | None = None,
               logged: bool = True) -> None:
        """Answer a client. `logged` replies are for commands that went through the log:
        the durability checker holds every later replica to them."""
        reply = ClientReply(client_id, request, result, not_leader, hint)
        if not_leader:
            self.log(f"n{node.node_id} tells client {client_id} it does not lead (hint {hint})")
        if logged and not not_leader:
            self.durability.acknowledge(self.now, client_id, request)
            if (self.cfg.nemesis and self.now < self.heal_us
                    and self.nemesis_rng.random() < self.cfg.crash_after_ack_probability):
                # Right after an acknowledgement is the moment a vote that was sent but
                # not yet synced would be lost: crash everyone, or just the leader.
                if self.nemesis_rng.random() < self.cfg.crash_after_ack_all_fraction:
                    self.schedule(self.now, "nemesis", ("crash_all",))
                else:
                    self.schedule(self.now, "nemesis", ("crash", node.node_id, node.incarnation))
        for at in self.network.send(self.now, node.node_id, ("client", client_id)):
            self.schedule(at, "client_reply", (node.node_id, reply))

    def _on_client_reply(self, payload: tuple[NodeId, ClientReply]) -> None:
        node_id, reply = payload
        client = self.clients[reply.client - 1]
        if client.done or reply.request != client.request:
            return
        if reply.not_leader:
            # Try the hinted leader (or another node) a little later; the timeout that is
            # already scheduled still bounds this attempt.
            if reply.hint is not None and reply.hint != node_id:
                client.guess = reply.hint
            else:
                client.guess = self._other_node(client, node_id)
            self.schedule(self.now + CLIENT_BACKOFF_US, "client_resend",
                          (client, client.request, client.attempt))
            return
        client.done = True
        self.history.respond(client.client_id, client.request, reply.result)
        self.result.ops_completed += 1
        if self.now >= self.heal_us:
            if self.result.completed_after_heal == 0:
                self.result.first_completion_after_heal_us = self.now - self.heal_us
            self.result.completed_after_heal += 1
        self.log(f"client {client.client_id} request {reply.request} -> {reply.result!r} "
                 f"from n{node_id}")
        client.guess = NodeId(node_id)
        self.schedule(self.now + client.rng.randrange(CLIENT_THINK_MAX_US), "client_next",
                      client)

    def _other_node(self, client: ClientState, not_this: NodeId) -> NodeId:
        choices = [n for n in self.group_config.node_ids if n != not_this]
        return client.rng.choice(choices) if choices else not_this

    def _on_client_resend(self, payload: tuple[ClientState, int, int]) -> None:
        """After a "not leader" reply: try the node the reply pointed to."""
        self._retry(payload, switch_node=False)

    def _on_client_timeout(self, payload: tuple[ClientState, int, int]) -> None:
        """No reply in time: try another node."""
        self._retry(payload, switch_node=True)

    def _retry(self, payload: tuple[ClientState, int, int], switch_node: bool) -> None:
        client, request, attempt = payload
        if client.done or request != client.request or attempt != client.attempt:
            return
        invoked_us = self.history.invoked_at_us[(client.client_id, request)]
        if (client.attempt >= CLIENT_ATTEMPTS_MAX
                or self.now - invoked_us >= CLIENT_DEADLINE_US):
            client.done = True
            self.history.abandon(client.client_id, request)
            self.result.ops_abandoned += 1
            self.liveness.abandoned(self.now, client.client_id, request, invoked_us)
            self.log(f"client {client.client_id} abandons request {request}")
            self.schedule(self.now + client.rng.randrange(CLIENT_THINK_MAX_US), "client_next",
                          client)
            return
        if switch_node:
            client.guess = self._other_node(client, client.guess)
        self._client_send(client)

    # ------------------------------------------------------------------ faults

    def _nemesis_gap(self) -> int:
        return 1 + int(self.nemesis_rng.expovariate(1.0 / self.cfg.nemesis_interval_us))

    def _down_max(self) -> int:
        """How many members may be down at once: what the quorums tolerate, sometimes
        one more (then only liveness suffers, never safety)."""
        config = self.group_config
        tolerated = config.n - max(config.q1, config.q2)
        return tolerated + (1 if self.nemesis_rng.random() < 0.2 else 0)

    def _on_nemesis(self, payload: Any) -> None:
        if self.now >= self.heal_us:
            return
        rng = self.nemesis_rng
        if payload is not None and payload[0] == "crash_all":
            self._crash_all()
            return
        if payload is not None and payload[0] == "reboot_until":
            _, node_id, incarnation, back_us = payload
            node = self.nodes[node_id]
            if node.up and node.incarnation == incarnation:
                self._crash(node)
                self.schedule(max(back_us, self.now + 1), "restart", node_id)
            return
        if payload is not None and payload[0] == "reboot":
            _, node_id, incarnation = payload
            node = self.nodes[node_id]
            if node.up and node.incarnation == incarnation:
                self._crash(node)
                back = self.now + rng.randint(self.cfg.reboot_min_us, self.cfg.reboot_max_us)
                self.schedule(back, "restart", node_id)
                if self.cfg.heal_on_reboot:
                    # The network comes back with the machine: the rebooted voter now
                    # hears every leader that still thinks it leads.
                    self.schedule(back, "heal_partition", None)
            return
        if payload is not None:
            _, node_id, incarnation = payload
            node = self.nodes[node_id]
            if node.up and node.incarnation == incarnation and self._down_count() < self._down_max():
                self._crash(node)
                self.schedule(self.now + self._downtime_us(), "restart", node_id)
            return
        self.schedule(self.now + self._nemesis_gap(), "nemesis", None)
        weights = [self.cfg.crash_weight, self.cfg.partition_weight, self.cfg.cut_leader_weight,
                   self.cfg.isolate_leader_weight, self.cfg.lease_attack_weight,
                   self.cfg.promise_attack_weight, self.cfg.reconfig_weight,
                   self.cfg.restart_all_weight]
        actions = ["crash", "partition", "cut_leader", "isolate_leader", "lease_attack",
                   "promise_attack", "reconfig", "restart_all"]
        action = rng.choices(actions, weights)[0]
        if action == "crash":
            up = [n for n in self._nodes_sorted() if n.up]
            if up and self._down_count() < self._down_max():
                node = rng.choice(up)
                self._crash(node)
                self.schedule(self.now + self._downtime_us(), "restart", node.node_id)
        elif action == "partition":
            ids = sorted(self.nodes)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            one_way = rng.random() < 0.4
            self.network.partition(ids[:cut], ids[cut:], one_way)
            self.result.partitions += 1
            self.log(f"partition {sorted(ids[:cut])} {'->' if one_way else '<->'} "
                     f"{sorted(ids[cut:])}")
            self.schedule(self.now + rng.randint(50_000, 500_000), "heal_partition", None)
        elif action == "cut_leader":
            # A partial partition: the leader loses its links to some followers while
            # they still hear each other (and clients still reach everyone), the shape
            # in which an old leader's lease and a new leader's reign can overlap.
            leader = self._leader()
            if leader is not None:
                others = [n for n in sorted(self.nodes) if n != leader.node_id]
                cut_off = sorted(rng.sample(others, rng.randint(1, max(1, len(others) // 2))))
                one_way = rng.random() < 0.3
                self.network.partition([leader.node_id], cut_off, one_way)
                self.result.partitions += 1
                self.log(f"cut leader n{leader.node_id} {'->' if one_way else '<->'} "
                         f"{cut_off}")
                self.schedule(self.now + rng.randint(50_000, 400_000), "heal_partition", None)
        elif action == "isolate_leader":
            # Cut the leader off for about one election timeout, then heal: the healing
            # often lands while a successor campaigns, so two leaders briefly coexist.
            leader = self._leader()
            if leader is not None:
                others = [n for n in sorted(self.nodes) if n != leader.node_id]
                self.network.partition([leader.node_id], others, one_way=False)
                self.result.partitions += 1
                self.log(f"isolate leader n{leader.node_id}")
                ticks = rng.randint(self.options.election_ticks_min,
                                    self.options.election_ticks_max + self.options.probe_ticks)
                self.schedule(self.now + ticks * self.cfg.tick_us, "heal_partition", None)
        elif action == "lease_attack":
            self._start_lease_attack()
        elif action == "promise_attack":
            self._start_promise_attack()
        elif action == "reconfig":
            self._propose_reconfig()
        elif action == "restart_all":
            self._crash_all()

    def _start_lease_attack(self) -> None:
        """Set up the one shape in which an old leader's lease and a successor can overlap
        despite the pre-check: cut the leader from N - Q2 members (so they fall silent, yet
        the leader keeps a lease through the others), and arm a trigger that reboots one
        of the others the moment a cut-off member starts probing, so that member too
        answers "silent" (it forgot the leader) while its last lease grant still runs."""
        leader = self._leader()
        if leader is None or self.attack is not None:
            return
        replica = leader.replica
        assert replica is not None
        config = replica.config
        others = [n for n in config.node_ids if n != leader.node_id]
        cut_count = config.n - config.q2
        if cut_count < 1 or len(others) <= cut_count:
            return
        rng = self.nemesis_rng
        # At least one cut member must be able to campaign (log-only members never do).
        campaigners = [n for n in others if config.can_lead(n)]
        if not campaigners:
            return
        first = rng.choice(campaigners)
        rest = [n for n in others if n != first]
        cut = sorted([first, *rng.sample(rest, cut_count - 1)])
        rebooted = rng.choice([n for n in others if n not in cut])
        self.network.partition([leader.node_id], cut, one_way=False)
        self.result.partitions += 1
        self.attack = (leader.node_id, rebooted, tuple(cut))
        if self.cfg.clock_attack:
            for node in self._nodes_sorted():
                node.clock.pin(fast=node.node_id != leader.node_id)
        self.log(f"lease attack: cut leader n{leader.node_id} <-> {cut}, will reboot "
                 f"n{rebooted}")
        ticks = self.options.election_ticks_max * 3
        self.schedule(self.now + ticks * self.cfg.tick_us, "heal_partition", None)

    def _lease_attack_trigger(self, node: SimNode) -> None:
        assert self.attack is not None
        leader_id, rebooted_id, cut = self.attack
        replica = node.replica
        if node.node_id not in cut or replica is None or replica.role is not Role.PROBING:
            return
        self.attack = None
        rebooted = self.nodes[rebooted_id]
        self.log(f"lease attack: n{node.node_id} probes; reboot n{rebooted_id}, "
                 f"cut everyone -> n{leader_id}")
        # The old leader hears nobody from now on (no acknowledgements, no refusals), so
        # it keeps serving reads exactly as long as its lease says it may.
        for other in sorted(self.nodes):
            if other != leader_id:
                self.network.blocked.add((other, leader_id))
        if rebooted.up:
            self._crash(rebooted)
            self.schedule(self.now + 300, "restart", rebooted_id)

    def _start_promise_attack(self) -> None:
        """Set up two live ballots and forgetful voters: isolate the leader so the others
        elect a successor, and arm a trigger that reboots every voter right after it
        promises the successor's ballot. When they come back the network heals, except
        between the two leaders, so each voter hears both: a voter that kept its promise
        refuses the old ballot; one that forgot it accepts both."""
        leader = self._leader()
        if leader is None or self.promise_attack is not None:
            return
        others = [n for n in sorted(self.nodes) if n != leader.node_id]
        self.network.partition([leader.node_id], others, one_way=False)
        self.result.partitions += 1
        self.promise_attack = {"leader": leader.node_id, "ballot": None, "candidate": None,
                               "back_us": None}
        self.log(f"promise attack: isolate leader n{leader.node_id}")

    def _promise_attack_trigger(self, node: SimNode, promise: Promise) -> None:
        attack = self.promise_attack
        assert attack is not None
        if promise.src == attack["leader"] or promise.src == promise.dst:
            return
        if attack["ballot"] is None:
            attack["ballot"] = promise.ballot
            attack["candidate"] = promise.dst
            attack["back_us"] = self.now + 3 * self.options.heartbeat_ticks * self.cfg.tick_us
            self.schedule(attack["back_us"], "promise_attack_heal", None)
        if promise.ballot != attack["ballot"]:
            return
        self.log(f"promise attack: n{node.node_id} promised {promise.ballot}; reboot it")
        self.schedule(self.now, "nemesis", ("reboot_until", node.node_id, node.incarnation,
                                            attack["back_us"]))

    def _on_promise_attack_heal(self, _: Any) -> None:
        attack = self.promise_attack
        if attack is None or self.now >= self.heal_us:
            return
        self.promise_attack = None
        self.network.heal()
        self.network.partition([attack["leader"]], [attack["candidate"]], one_way=False)
        self.log(f"promise attack: heal all but n{attack['leader']} <-> n{attack['candidate']}")
        self.schedule(self.now + 40 * self.cfg.tick_us, "heal_partition", None)

    def _crash_all(self) -> None:
        """Every node loses power at once (what it had not synced is gone)."""
        self.log("crash every node")
        for node in self._nodes_sorted():
            if node.up:
                self._crash(node)
                self.schedule(self.now + self.nemesis_rng.randint(1_000, 100_000), "restart",
                              node.node_id)

    def _downtime_us(self) -> int:
        """How long a crashed node stays down: often a quick reboot (shorter than a lease
        or an election), sometimes long enough for the group to move on without it."""
        if self.nemesis_rng.random() < self.cfg.quick_restart_probability:
            return self.nemesis_rng.randint(1_000, 5 * self.cfg.tick_us)
        return self.nemesis_rng.randint(20_000, 400_000)

    def _down_count(self) -> int:
        members = self.group_config.node_ids
        return sum(1 for n in members if n in self.nodes and not self.nodes[n].up)

    def _on_restart(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        if node.up or node.permanently_failed:
            return
        self._start(node, fresh=False)

    def _on_fail_nodes(self, _: Any) -> None:
        failed = sorted(NodeId(n) for n in self.cfg.failed_nodes)
        self.log(f"fail {failed} until the heal")
        for node_id in failed:
            node = self.nodes[node_id]
            node.permanently_failed = True
            if node.up:
                self._crash(node)

    def _on_heal_partition(self, _: Any) -> None:
        if self.now >= self.heal_us:
            return
        self.attack = None
        self.network.heal()
        self.log("heal partitions")

    def _on_heal(self, _: Any) -> None:
        # Disarm every attack: after the heal the network stays whole.
        self.attack = None
        self.promise_attack = None
        for node in self._nodes_sorted():
            node.clock.unpin()
        self.network.heal()
        self.network.faults = CALM
        self.log("heal: network calm, every node restarts")
        self.liveness.healed(self.now)
        for node in self._nodes_sorted():
            node.permanently_failed = False
            if not node.up:
                self._start(node, fresh=False)

    # ------------------------------------------------------------------ end of run

    def _finish(self, events: int) -> RunResult:
        result = self.result
        result.end_us = self.now
        result.events = events
        verdicts = result.verdicts
        if self.crashed is not None:
            verdicts.violations.append(self.crashed)
        verdicts.violations.extend(self.agreement.violations)
        # Durability: every caught-up replica holding state has every acknowledged command.
        up = [n for n in self._nodes_sorted() if n.up and n.kv is not None
              and n.node_id in self.group_config.node_ids]
        if up:
            top = max(n.applied_slot for n in up)
            for node in up:
                if node.applied_slot == top:
                    kv = node.kv
                    assert kv is not None
                    self.durability.check_replica(self.now, f"n{node.node_id}", kv.has_applied,
                                                  self.now + 1)
        verdicts.violations.extend(self.durability.violations)
        # Replicas that applied the same slots hold byte-identical state (apply is
        # deterministic and every replica applies the same entries in the same order).
        by_slot: dict[int, list[SimNode]] = {}
        for node in up:
            by_slot.setdefault(node.applied_slot, []).append(node)
        for slot in sorted(by_slot):
            states = {n.node_id: n.kv.snapshot() for n in by_slot[slot] if n.kv is not None}
            if len(set(states.values())) > 1:
                verdicts.violations.append(Violation(
                    AGREEMENT, self.now,
                    f"replicas {sorted(states)} applied up to slot {slot} but hold different "
                    f"states"))
        lin, violations = check_linearizability(self.now, self.history)
        verdicts.linearizability = lin
        verdicts.violations.extend(violations)
        self.liveness.check_end(self.now, self.history)
        verdicts.violations.extend(self.liveness.violations)
        result.writes_acknowledged = len(self.durability.acknowledged)
        result.acknowledged_at_us = sorted(self.durability.acknowledged.values())
        result.trace_hash = self.trace.hexdigest()
        if self.cfg.keep_trace:
            result.trace_lines = self.trace.lines
        return result


def _describe_exception(error: Exception) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = ", ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames[-3:])
    return f"{type(error).__name__}: {error} (at {where})"


def run(config: RunConfig) -> RunResult:
    return World(config).run()

