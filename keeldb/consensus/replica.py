"""One replica of a Multi-Paxos group with flexible quorums, as a sans-IO state machine.

Owns the protocol: the acceptor's promise and votes, the proposer's phase 1 (one Prepare
for every open slot) and pipelined, batched phase 2, learning the commit point, catch-up and
snapshot install, election with the "do you still hear the leader?" pre-check, leader leases
with a lease-wait obligation carried by every Promise, and reconfiguration through
configuration entries in the log that take effect `reconfig_window_slots` slots later.

The driver loop (rawnode style, as in etcd-io/raft):

    replica.step(msg) / replica.tick() / replica.propose(cmd)   any number of times
    rd = replica.ready()
    persist rd.persist (append + fsync)            -- before anything in send_after_persist
    send rd.send_now (may go before the fsync), then rd.send_after_persist
    install rd.install_snapshot (if any), then apply rd.apply in order
    answer clients in rd.acknowledged (after applying), fail rd.dropped
    replica.advance(rd)

A strong read, and a retried request answered from the state machine's session (dedup)
table, is answered only while `read_lease()` is true: the session table is state too
(docs/consensus.md, "Interface").

Must never do IO, read a clock or use global randomness: time is `tick()`, randomness is the
`random.Random` it is given. Never lets the iteration order of a set decide anything.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil, floor
from typing import assert_never

from keeldb.consensus.messages import (
    Accept,
    Accepted,
    AcceptRecord,
    CatchUp,
    CatchUpAck,
    ChosenRecord,
    CommitRecord,
    Heartbeat,
    HeartbeatAck,
    IncarnationRecord,
    InstallSnapshot,
    Message,
    Nack,
    Prepare,
    Probe,
    ProbeReply,
    Promise,
    PromiseRecord,
    Record,
    SnapshotRecord,
)
from keeldb.consensus.types import (
    BALLOT_ZERO,
    NOOP,
    PROPOSAL_COUNTER_BITS,
    SLOT_NONE,
    Ballot,
    Config,
    ConfigError,
    Entry,
    EntryKind,
    LogEntry,
    NodeId,
    ProposalId,
    Slot,
    Snapshot,
)


class Mutation(enum.Enum):
    """Deliberately broken variants, OFF by default, so tests can prove the checkers bite."""

    QUORUM_INTERSECTION_BROKEN = "quorum_intersection_broken"  # phase-1 quorum N - Q2
    ACK_BEFORE_PERSIST = "ack_before_persist"  # Promise/Accepted sent before the fsync
    LEASE_READ_WITHOUT_WAIT = "lease_read_without_wait"  # new leader ignores old leases
    FORGET_PROMISE_ON_RESTART = "forget_promise_on_restart"  # promised ballot not restored
    RECOVERY_IGNORES_BALLOT = "recovery_ignores_ballot"  # recovery adopts the lowest ballot
    # The leader counts its own vote for a slot when it assigns it, before its record is on
    # disk (followers still vote only once durable). Accepts leave before the leader's fsync,
    # so this lets a slot be chosen on fewer than Q2 disks.
    LEADER_VOTE_BEFORE_PERSIST = "leader_vote_before_persist"
    # A pipelining driver advances a Ready before its records are durable
    # (`advance(rd, durable=False)`); this variant counts the Ready's own votes right then
    # instead of at `persisted(rd)`, so a slot can be chosen on fewer than Q2 disks.
    PIPELINED_VOTE_AT_ADVANCE = "pipelined_vote_at_advance"


@dataclass(frozen=True, slots=True)
class Options:
    """Timing in ticks, and every limit of the core, each with its reason."""

    # A leader sends heartbeats this often; followers learn the commit point from them.
    heartbeat_ticks: int = 2
    # A follower that hears no leader for a random number of ticks in [min, max] probes
    # its peers; randomness keeps candidates from colliding (Raft, section 5.2).
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    # How long a prober waits for "do you still hear the leader?" answers.
    probe_ticks: int = 4
    # A follower that acknowledges the leader grants it a lease this long on its own clock.
    lease_ticks: int = 8
    # Clocks run at a rate within [1 - d, 1 + d] of real time; leases are shortened and
    # lease waits lengthened by this bound (docs/consensus.md, "Leases").
    clock_drift_max: Fraction = Fraction(1, 20)
    # Slots the leader may have proposed beyond its commit point; bounds the memory of
    # the pipeline and must not exceed the reconfiguration window.
    pipeline_slots_max: int = 256
    # Entries per Accept or CatchUp message.
    batch_entries_max: int = 64
    # Slots between a configuration entry and the first slot it governs (Lamport's alpha).
    reconfig_window_slots: int = 256
    # Client proposals waiting for a slot (pipeline full, or the new leader still waiting
    # out an old lease); beyond this propose() refuses.
    proposal_queue_max: int = 4096
    # Chosen entries per catch-up message to a lagging replica.
    catchup_entries_max: int = 256
    # Ready.snapshot_suggested turns on when this many applied entries are not yet covered
    # by a snapshot.
    compaction_entries_min: int = 4096
    # Entries kept below a snapshot so slightly lagging replicas catch up from the log.
    log_entries_retained: int = 256
    # Send each Accept to only as many peers as a phase-2 quorum needs beside the leader,
    # chosen among those that answered the last two heartbeats (thrifty Paxos); the others
    # get the chosen entries in catch-ups paced by the heartbeats, a batch per round, and
    # every Accept that stays unacknowledged for a heartbeat goes to all peers. Safety does
    # not depend on it: a slot is chosen on Q2 votes either way.
    thrifty_accepts: bool = False
    mutations: frozenset[Mutation] = frozenset()

    def validate(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ConfigError("heartbeat_ticks must be at least 1")
        if not self.heartbeat_ticks < self.election_ticks_min <= self.election_ticks_max:
            raise ConfigError("need heartbeat_ticks < election_ticks_min <= election_ticks_max")
        if not 0 < self.lease_ticks < self.election_ticks_min:
            raise ConfigError("lease_ticks must be positive and below election_ticks_min")
        if not 0 <= self.clock_drift_max < 1:
            raise ConfigError("clock_drift_max must be within [0, 1)")
        if not 1 <= self.pipeline_slots_max <= self.reconfig_window_slots:
            raise ConfigError("need 1 <= pipeline_slots_max <= reconfig_window_slots")
        if self.batch_entries_max < 1 or self.catchup_entries_max < 1:
            raise ConfigError("batch sizes must be at least 1")
        if self.probe_ticks < 1 or self.proposal_queue_max < 1:
            raise ConfigError("probe_ticks and proposal_queue_max must be at least 1")
        if self.log_entries_retained < 0 or self.compaction_entries_min < 1:
            raise ConfigError("compaction thresholds out of range")

    @property
    def lease_valid_ticks(self) -> int:
        """How long after sending a heartbeat the leader may rely on the grants it gets."""
        d = self.clock_drift_max
        return floor(self.lease_ticks * (1 - d) / (1 + d))

    def lease_wait_ticks(self, remaining_ticks: int) -> int:
        """How long a new leader waits, on its clock, for a grant with `remaining_ticks`
        left on the granter's clock to have surely expired."""
        d = self.clock_drift_max
        return ceil(remaining_ticks * (1 + d) / (1 - d))


class Role(enum.Enum):
    FOLLOWER = "follower"
    PROBING = "probing"  # asking peers whether they still hear the leader
    CANDIDATE = "candidate"  # phase 1 in progress
    LEADER = "leader"


@dataclass(slots=True)
class Ready:
    """What the driver must do, in this order: persist (fsync), send, apply, advance."""

    persist: list[Record] = field(default_factory=list)
    send_now: list[Message] = field(default_factory=list)
    send_after_persist: list[Message] = field(default_factory=list)
    install_snapshot: Snapshot | None = None
    apply: list[tuple[Slot, Entry]] = field(default_factory=list)
    acknowledged: list[ProposalId] = field(default_factory=list)
    dropped: list[ProposalId] = field(default_factory=list)
    snapshot_suggested: bool = False
    # Our own votes, counted only once the driver confirms they are durable (advance()).
    self_promise: Promise | None = None
    self_accepted: list[tuple[Ballot, Slot]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.persist
            or self.send_now
            or self.send_after_persist
            or self.install_snapshot is not None
            or self.apply
            or self.acknowledged
            or self.dropped
            or self.self_promise is not None
            or self.self_accepted
        )


@dataclass(slots=True)
class DurableState:
    """The hard state rebuilt from persisted records: what survives a crash."""

    promised: Ballot = BALLOT_ZERO
    log: dict[Slot, LogEntry] = field(default_factory=dict)
    commit_slot: Slot = SLOT_NONE
    snapshot: Snapshot | None = None
    incarnation: int = 0

    @staticmethod
    def replay(records: Iterable[Record]) -> DurableState:
        """Rebuild the state from records in the order they were appended. A lost unsynced
        tail simply yields an older state."""
        state = DurableState()
        chosen: set[Slot] = set()
        for record in records:
            match record:
                case PromiseRecord(ballot):
                    state.promised = max(state.promised, ballot)
                case AcceptRecord(entry):
                    state.promised = max(state.promised, entry.ballot)
                    if entry.slot > state.commit_slot and entry.slot not in chosen:
                        state.log[entry.slot] = entry
                case ChosenRecord(slot, entry):
                    if slot > state.commit_slot:
                        state.log[slot] = LogEntry(slot, BALLOT_ZERO, entry)
                        chosen.add(slot)
                case CommitRecord(slot):
                    state.commit_slot = max(state.commit_slot, slot)
                case SnapshotRecord(snapshot):
                    if state.snapshot is None or snapshot.slot > state.snapshot.slot:
                        state.snapshot = snapshot
                        state.commit_slot = max(state.commit_slot, snapshot.slot)
                        for slot in [s for s in state.log if s <= snapshot.slot]:
                            del state.log[slot]
                case IncarnationRecord(incarnation):
                    state.incarnation = max(state.incarnation, incarnation)
                case _:
                    assert_never(record)
        # Chosen records are written as a contiguous run just above the commit point; a
        # torn tail keeps a prefix of that run, so extend the commit point through it.
        while Slot(state.commit_slot + 1) in chosen:
            state.commit_slot = Slot(state.commit_slot + 1)
        return state

    def records(self) -> list[Record]:
        """A compact record list that replays to this state (for rewriting a log)."""
        out: list[Record] = [IncarnationRecord(self.incarnation), PromiseRecord(self.promised)]
        if self.snapshot is not None:
            out.append(SnapshotRecord(self.snapshot))
        for slot in sorted(self.log):
            out.append(AcceptRecord(self.log[slot]))
        out.append(CommitRecord(self.commit_slot))
        return out


_TICK_NEVER = -(10**18)


# A leader's messages that may leave before earlier records are durable (pipelining).
_LEADER_MESSAGES: tuple[type, ...] = (Accept, CatchUp, InstallSnapshot)


def _with_epoch_of_slot(entry: Entry, slot: Slot) -> Entry:
    """A configuration entry as proposed in `slot`: its epoch is the slot number. A value
    is only ever chosen in the slot it was first proposed for (recovery re-proposes it in
    the same slot), so chosen configurations have distinct epochs, increasing in log order,
    whoever proposed them and whatever they knew (docs/consensus.md, "Reconfiguration")."""
    assert entry.config is not None
    return Entry(
        entry.kind, entry.command, entry.origin, entry.proposal_id, entry.config.with_epoch(slot)
    )


class Replica:
    """A member of one replica group. See the module docstring for the driver loop."""

    def __init__(
        self,
        node_id: NodeId,
        config: Config,
        rng: random.Random,
        options: Options | None = None,
        durable: DurableState | None = None,
    ) -> None:
        self._opts = options if options is not None else Options()
        # Read on every lease check: computed once (exact arithmetic on the drift bound).
        self._lease_valid_ticks = self._opts.lease_valid_ticks
        self._opts.validate()
        config.validate()
        self._id = node_id
        self._rng = rng
        self._mut = self._opts.mutations
        self._now = 0

        # Hard state (mirrored into records as it changes).
        self._promised = BALLOT_ZERO
        self._log: dict[Slot, LogEntry] = {}
        self._commit = SLOT_NONE
        self._snapshot: Snapshot | None = None
        self._incarnation = 0
        # (first slot governed, config), sorted by first slot.
        self._configs: list[tuple[Slot, Config]] = [(Slot(1), config)]
        # Member sets by configuration identity; each value keeps its configuration alive so
        # the id cannot be reused by another object.
        self._member_sets: dict[int, tuple[Config, frozenset[NodeId]]] = {}

        # What the next Ready carries.
        self._rd = Ready()
        self._rd_out: Ready | None = None
        # Readys advanced before their records were durable (a pipelining driver), oldest
        # first: their own votes are counted only at `persisted`.
        self._undurable: deque[Ready] = deque()
        self._applied = SLOT_NONE  # applied by the driver (advanced)
        self._handed = SLOT_NONE  # handed out for apply (maybe not yet advanced)

        # Leadership and election.
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._heard_leader_tick = _TICK_NEVER
        self._max_round_seen = 0
        self._election_deadline = 0
        self._lease_granted_until = 0  # on our clock: when the last grant we gave expires
        self._probe_replies: dict[NodeId, bool] = {}
        self._probe_deadline = 0

        # Proposer (candidate and leader) state for our current ballot.
        self._ballot = BALLOT_ZERO
        self._promises: dict[NodeId, Promise] = {}
        # Configurations (by identity, kept alive here) our promises cover for our ballot.
        self._covered_keys: dict[int, Config] = {}
        self._prepare_from = Slot(1)
        self._prepare_sent_tick: dict[NodeId, int] = {}
        self._next_slot = Slot(1)
        self._backlog: dict[Slot, Entry] = {}
        self._backlog_max = SLOT_NONE
        self._recovery_end = SLOT_NONE
        self._acks: dict[Slot, set[NodeId]] = {}
        self._sent_tick: dict[Slot, int] = {}
        self._unsent: list[Slot] = []
        self._queue: deque[Entry] = deque()
        self._pad_until = SLOT_NONE
        self._reconfig_slot: Slot | None = None
        self._lease_acks: dict[NodeId, int] = {}
        # The peers Accepts go to while thrifty (None: every peer).
        self._accept_targets: list[NodeId] | None = None
        self._writable_at = 0
        self._last_heartbeat_tick = _TICK_NEVER
        self._peer_commit: dict[NodeId, Slot] = {}
        # Per peer, the run of slots [first, last] it has acknowledged at our ballot with
        # no slot missing (`_note_accepted`): a peer holding every slot after its commit
        # point up to ours learns the commit point from the next Accept or heartbeat, and
        # needs no catch-up.
        self._peer_accepted: dict[NodeId, tuple[Slot, Slot]] = {}
        self._catchup_tick: dict[NodeId, int] = {}
        # Catch-ups sent to each peer and not yet acknowledged, as (last slot, tick sent);
        # kept with thrifty Accepts only.
        self._catchup_sent: dict[NodeId, list[tuple[Slot, int]]] = {}
        self._became_leader_tick = 0

        # Our own proposals: slot -> proposal id, once given a slot.
        self._proposal_counter = 0
        self._pending_by_slot: dict[Slot, ProposalId] = {}

        # Whether the driver's state machine holds no state (we hand out nothing to apply).
        # Turns on at the first slot governed by a configuration that makes us log-only, and
        # stays on, whatever later configurations say, until we install a snapshot as a
        # full member: applies never restart from the middle of the log.
        self._stateless = self._is_log_only_in(config)
        # The first slot governed by a configuration that makes us log-only, once known.
        self._log_only_from: Slot | None = Slot(1) if self._stateless else None

        if durable is not None:
            self._restore(durable)
        self._reset_election_deadline()

    # ---------------------------------------------------------------- restart

    def _restore(self, durable: DurableState) -> None:
        if Mutation.FORGET_PROMISE_ON_RESTART not in self._mut:
            self._promised = durable.promised
        self._max_round_seen = durable.promised.round
        self._log = dict(durable.log)
        self._commit = durable.commit_slot
        self._incarnation = durable.incarnation + 1
        self._rd.persist.append(IncarnationRecord(self._incarnation))
        if durable.snapshot is not None:
            snap = durable.snapshot
            self._snapshot = snap
            self._configs = list(snap.configs)
            self._handed = snap.slot
            self._applied = snap.slot
            self._rd.install_snapshot = snap
            self._note_snapshot_membership(snap)
        start = self._handed
        for slot in range(start + 1, self._commit + 1):
            entry = self._log[Slot(slot)].entry
            self._note_config(Slot(slot), entry)
        self._hand_out_applies()
        # We may have granted a lease just before the crash and forgotten it: act as if we
        # had granted a full one at restart. Only another replica that may lead could hold
        # one: a group of one (the embedded deployment) restarts without waiting.
        others = any(c.can_lead(n) for _, c in self._configs for n in c.node_ids if n != self._id)
        if others:
            self._lease_granted_until = self._opts.lease_ticks

    # ---------------------------------------------------------------- properties

    @property
    def node_id(self) -> NodeId:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def is_leader(self) -> bool:
        return self._role is Role.LEADER

    @property
    def leader_hint(self) -> NodeId | None:
        """The replica we believe leads (ourselves included), or None."""
        return self._leader

    @property
    def ballot(self) -> Ballot:
        """The highest ballot this replica has promised."""
        return self._promised

    @property
    def commit_slot(self) -> Slot:
        """Every slot up to this one is known chosen here."""
        return self._commit

    @property
    def applied_slot(self) -> Slot:
        return self._applied

    @property
    def config(self) -> Config:
        """The configuration governing the next slot to be chosen."""
        return self._config_at(Slot(self._commit + 1))

    @property
    def latest_config(self) -> Config:
        """The newest configuration chosen so far (it may take effect later)."""
        return self._configs[-1][1]

    @property
    def configs(self) -> tuple[tuple[Slot, Config], ...]:
        return tuple(self._configs)

    @property
    def now(self) -> int:
        return self._now

    @property
    def log_only(self) -> bool:
        """True while this replica applies nothing (its state machine holds no state): from
        the first slot governed by a configuration that makes it log-only, until it installs
        a snapshot as a full member. A log-only member that is removed, or made a full
        member, stays log-only until then; it never starts applying mid-log."""
        return self._stateless

    def _is_log_only_in(self, config: Config) -> bool:
        member = config.member(self._id)
        return member is not None and member.log_only

    def _may_lead(self) -> bool:
        """Leading needs the state (conditions, lease reads) and membership of the
        configuration governing the next slot and of the latest one."""
        return (
            not self._stateless
            and self.latest_config.can_lead(self._id)
            and self.config.can_lead(self._id)
        )

    def entry_at(self, slot: Slot) -> LogEntry | None:
        return self._log.get(slot)

    def durable_state(self) -> DurableState:
        """The hard state as this replica sees it (persisted or about to be)."""
        return DurableState(
            self._promised, dict(self._log), self._commit, self._snapshot, self._incarnation
        )

    # ---------------------------------------------------------------- config helpers

    def _config_at(self, slot: Slot) -> Config:
        if len(self._configs) == 1:
            return self._configs[0][1]
        chosen = self._configs[0][1]
        for first, config in self._configs:
            if first <= slot:
                chosen = config
            else:
                break
        return chosen

    def _members(self, config: Config) -> frozenset[NodeId]:
        cached = self._member_sets.get(id(config))
        if cached is None:
            cached = (config, frozenset(config.node_ids))
            self._member_sets[id(config)] = cached
        return cached[1]

    def _q1(self, config: Config) -> int:
        if Mutation.QUORUM_INTERSECTION_BROKEN in self._mut:
            return max(1, config.n - config.q2)
        return config.q1

    def _live_configs(self) -> list[Config]:
        """Configurations governing some slot above the commit point."""
        low = Slot(self._commit + 1)
        out: list[Config] = []
        for i, (first, config) in enumerate(self._configs):
            last_governed = self._configs[i + 1][0] - 1 if i + 1 < len(self._configs) else None
            if last_governed is not None and last_governed < low:
                continue
            out.append(config)
        return out

    def _peers(self) -> list[NodeId]:
        ids: set[NodeId] = set()
        for config in self._live_configs():
            ids.update(config.node_ids)
        ids.discard(self._id)
        return sorted(ids)

    def _note_config(self, slot: Slot, entry: Entry) -> None:
        """A configuration entry chosen at `slot` governs slots from slot + alpha on."""
        if entry.kind is not EntryKind.CONFIG:
            return
        assert entry.config is not None
        assert entry.config.epoch == slot, f"config entry at slot {slot}: {entry.config}"
        first = Slot(slot + self._opts.reconfig_window_slots)
        if self._configs and self._configs[-1][0] >= first:
            return  # already known (e.g. restored from a snapshot)
        self._configs.append((first, entry.config))
        if self._log_only_from is None and self._is_log_only_in(entry.config):
            self._log_only_from = first
        # Forget configurations no open slot can be governed by any more.
        while len(self._configs) > 1 and self._configs[1][0] <= self._commit + 1:
            self._configs.pop(0)

    def _prune_configs(self) -> None:
        while len(self._configs) > 1 and self._configs[1][0] <= self._commit + 1:
            self._configs.pop(0)

    # ---------------------------------------------------------------- driver API

    def tick(self) -> None:
        self._now += 1
        match self._role:
            case Role.LEADER:
                self._tick_leader()
            case Role.FOLLOWER:
                if self._now >= self._election_deadline:
                    self._start_probe()
            case Role.PROBING:
                if self._now >= self._probe_deadline:
                    self._become_follower(self._leader)
            case Role.CANDIDATE:
                if self._now >= self._election_deadline:
                    self._start_probe()
                else:
                    self._resend_prepares()
            case _:
                assert_never(self._role)

    def step(self, msg: Message) -> None:
        if msg.dst != self._id:
            return
        match msg:
            case Probe():
                self._on_probe(msg)
            case ProbeReply():
                self._on_probe_reply(msg)
            case Prepare():
                self._on_prepare(msg)
            case Promise():
                self._on_promise(msg)
            case Accept():
                self._on_accept(msg)
            case Accepted():
                self._on_accepted(msg)
            case Nack():
                self._on_nack(msg)
            case Heartbeat():
                self._on_heartbeat(msg)
            case HeartbeatAck():
                self._on_heartbeat_ack(msg)
            case CatchUp():
                self._on_catch_up(msg)
            case InstallSnapshot():
                self._on_install_snapshot(msg)
            case CatchUpAck():
                self._on_catch_up_ack(msg)
            case _:
                assert_never(msg)

    def propose(self, command: bytes) -> ProposalId | None:
        """Queue a client command. None when this replica is not the leader (see
        `leader_hint`) or its proposal queue is full."""
        if self._role is not Role.LEADER:
            return None
        if len(self._queue) >= self._opts.proposal_queue_max:
            return None
        pid = self._new_proposal_id()
        # Slots are assigned when the driver next asks for a Ready, so that every command
        # proposed in between travels in the same Accept batches.
        self._queue.append(Entry(EntryKind.COMMAND, command, self._id, pid))
        return pid

    def propose_reconfig(self, new_config: Config) -> ProposalId | None:
        """Propose a new configuration; it governs slots from `reconfig_window_slots` after
        the slot it is chosen in. Raises ConfigError for an unsafe configuration; None when
        not leader or another reconfiguration has not yet taken effect."""
        new_config.validate()
        if self._role is not Role.LEADER:
            return None
        if self._reconfig_in_progress():
            return None
        if len(self._queue) >= self._opts.proposal_queue_max:
            return None
        pid = self._new_proposal_id()
        # The epoch is fixed when the entry gets its slot (_fill_pipeline).
        entry = Entry(EntryKind.CONFIG, b"", self._id, pid, new_config)
        self._queue.append(entry)
        self._reconfig_slot = Slot(-1)  # queued; set to the slot once assigned
        self._fill_pipeline()
        return pid

    def campaign(self) -> bool:
        """Start phase 1 now, skipping the pre-check: for leadership transfer (the driver
        asks the chosen successor to campaign) and for tests. False when this replica may
        not lead (log-only, or not a member)."""
        if not self._may_lead():
            return False
        if self._role is Role.LEADER:
            return True
        if self._role is Role.CANDIDATE:
            self._clear_proposer()
        self._campaign()
        return True

    def _reconfig_in_progress(self) -> bool:
        if self._reconfig_slot is not None:
            return True
        return self._configs[-1][0] > self._commit + 1

    def read_lease(self) -> bool:
        """True iff a strongly consistent read may be answered from this replica's applied
        state now: it leads, any previous leader's lease has surely expired, its own lease
        is valid, everything chosen before its ballot is chosen again and applied here."""
        if self._role is not Role.LEADER or self._stateless:
            return False
        if self._now < self._writable_at and Mutation.LEASE_READ_WITHOUT_WAIT not in self._mut:
            return False
        if self._commit < self._recovery_end or self._backlog:
            return False
        if self._applied < self._commit:
            return False
        return self._lease_valid()

    def take_snapshot(self, slot: Slot, state: bytes) -> None:
        """Record the state machine's state after applying `slot`, and compact the log."""
        assert slot <= self._applied
        if self._snapshot is not None and slot <= self._snapshot.slot:
            return
        configs: list[tuple[Slot, Config]] = [(Slot(slot + 1), self._config_at(Slot(slot + 1)))]
        configs.extend((first, c) for first, c in self._configs if first > slot + 1)
        snap = Snapshot(slot, tuple(configs), state)
        self._snapshot = snap
        self._rd.persist.append(SnapshotRecord(snap))
        keep_from = slot - self._opts.log_entries_retained
        for s in [s for s in self._log if s <= keep_from]:
            del self._log[s]

    def restore_state(self, slot: Slot, state: bytes) -> bool:
        """The driver has loaded into its state machine, from another member, the state
        after the chosen slot `slot` (`state` stands for it in a snapshot). A replica that
        applies nothing only because it was a log-only member, and that the configuration
        governing `slot + 1` makes a full member, becomes a full replica from there: the
        state is recorded as its snapshot and every chosen entry after `slot` is handed out
        to apply. This is how a promoted log replica gets its state while it is caught up
        (a leader sends snapshots only to replicas behind its compacted log).

        False, changing nothing, when this replica already holds state, when `slot` is not
        yet known chosen here or is not after its own snapshot, when its log lacks a chosen
        entry after `slot`, or when that configuration does not make it a full member: the
        driver tries again later (with a newer state, or once the promotion governs).
        """
        if not self._stateless or slot > self._commit:
            return False
        if self._snapshot is not None and slot <= self._snapshot.slot:
            return False
        if any(Slot(s) not in self._log for s in range(slot + 1, self._commit + 1)):
            return False
        first_config = self._config_at(Slot(slot + 1))
        if not first_config.can_lead(self._id):
            return False
        configs: list[tuple[Slot, Config]] = [(Slot(slot + 1), first_config)]
        configs.extend((first, c) for first, c in self._configs if first > slot + 1)
        snap = Snapshot(slot, tuple(configs), state)
        self._snapshot = snap
        self._rd.persist.append(SnapshotRecord(snap))
        for s in [s for s in self._log if s <= slot]:
            del self._log[s]
        self._note_snapshot_membership(snap)
        assert not self._stateless
        self._rd.install_snapshot = snap
        self._rd.apply = []
        self._handed = slot
        self._applied = slot
        self._hand_out_applies()
        return True

    def has_ready(self) -> bool:
        self._fill_pipeline()
        self._flush_accepts()
        return not self._rd.is_empty()

    def ready(self) -> Ready:
        assert self._rd_out is None, "advance() the previous Ready first"
        self._fill_pipeline()
        self._flush_accepts()
        rd = self._rd
        if self._snapshot is None:
            covered = SLOT_NONE
        else:
            covered = self._snapshot.slot
        rd.snapshot_suggested = (
            not self.log_only and self._handed - covered >= self._opts.compaction_entries_min
        )
        if self._undurable and rd.send_now:
            self._hold_until_durable(rd)
        self._rd = Ready()
        self._rd_out = rd
        return rd

    def _hold_until_durable(self, rd: Ready) -> None:
        """An earlier Ready's records are not durable yet (a pipelining driver): what this
        Ready says was decided on state that may not survive a crash (a promise, a vote, a
        commit point learned from one), so it leaves only with `send_after_persist`, after
        the records of every Ready up to this one are durable. The leader's own phase-2
        messages are the exception: Accepts and catch-ups carry no promise or vote of the
        leader's (see `_send_accepts`), so they still leave at once, which is the point of
        pipelining. (Heartbeats always wait for the persist: `_broadcast_heartbeat`.)"""
        early: tuple[type, ...] = _LEADER_MESSAGES
        if Mutation.ACK_BEFORE_PERSIST in self._mut:
            early = (*early, Accepted, Promise)  # the broken variant's votes never wait
        keep = [m for m in rd.send_now if type(m) in early]
        if len(keep) < len(rd.send_now):
            held = [m for m in rd.send_now if type(m) not in early]
            rd.send_after_persist[:0] = held
            rd.send_now = keep

    def advance(self, rd: Ready, *, durable: bool = True) -> None:
        """The driver has done `rd` (applied it, sent `send_now`). With `durable` (the
        default) its records are on disk and its `send_after_persist` may leave now; a
        pipelining driver passes durable=False to take the next Ready while the disk syncs,
        and calls `persisted(rd)` once they are on disk, holding `send_after_persist` until
        then. Readys become durable in the order they were handed out."""
        assert rd is self._rd_out
        self._rd_out = None
        if rd.apply:
            self._applied = max(self._applied, rd.apply[-1][0])
        if rd.install_snapshot is not None:
            self._applied = max(self._applied, rd.install_snapshot.slot)
        if self.log_only:
            self._applied = max(self._applied, self._handed)
        if not durable:
            self._undurable.append(rd)
            if self._mut and Mutation.PIPELINED_VOTE_AT_ADVANCE in self._mut:
                self._count_own_votes(rd)
            return
        assert not self._undurable, "persisted() the earlier Readys first"
        self._count_own_votes(rd)

    def persisted(self, rd: Ready) -> None:
        """The records of `rd` (advanced with durable=False), and so of every Ready before
        it, are on disk: its own votes count now."""
        assert self._undurable, "no Ready awaits its persist"
        assert self._undurable[0] is rd, "Readys become durable in the order handed out"
        self._undurable.popleft()
        if not self._mut or Mutation.PIPELINED_VOTE_AT_ADVANCE not in self._mut:
            self._count_own_votes(rd)

    @property
    def undurable_count(self) -> int:
        """Readys advanced whose records the driver has not yet reported durable."""
        return len(self._undurable)

    def _count_own_votes(self, rd: Ready) -> None:
        if rd.self_promise is not None:
            self._on_promise(rd.self_promise)
        if rd.self_accepted:
            by_ballot: dict[Ballot, list[Slot]] = {}
            for ballot, slot in rd.self_accepted:
                by_ballot.setdefault(ballot, []).append(slot)
            for ballot in sorted(by_ballot):
                self._count_accepted(self._id, ballot, by_ballot[ballot], self._now)

    # ---------------------------------------------------------------- outbox helpers

    def _send(self, msg: Message, *, after_persist: bool) -> None:
        if after_persist:
            self._rd.send_after_persist.append(msg)
        else:
            self._rd.send_now.append(msg)

    def _send_vote(self, msg: Message) -> None:
        """Promise/Accepted: only once the vote is durable (unless deliberately broken)."""
        # (`self._mut and` first: an enum's hash is a Python call, and this is per vote.)
        early = self._mut and Mutation.ACK_BEFORE_PERSIST in self._mut
        self._send(msg, after_persist=not early)

    def _new_proposal_id(self) -> ProposalId:
        self._proposal_counter += 1
        assert self._proposal_counter < (1 << PROPOSAL_COUNTER_BITS)
        return ProposalId((self._incarnation << PROPOSAL_COUNTER_BITS) | self._proposal_counter)

    def _set_promised(self, ballot: Ballot) -> None:
        assert ballot > self._promised
        self._promised = ballot
        self._max_round_seen = max(self._max_round_seen, ballot.round)
        self._rd.persist.append(PromiseRecord(ballot))

    def _reset_election_deadline(self) -> None:
        self._election_deadline = self._now + self._rng.randint(
            self._opts.election_ticks_min, self._opts.election_ticks_max
        )

    def _hear_leader(self, leader: NodeId) -> None:
        self._leader = leader
        self._heard_leader_tick = self._now
        self._lease_granted_until = max(
            self._lease_granted_until, self._now + self._opts.lease_ticks
        )
        self._reset_election_deadline()

    def _hears_leader(self) -> bool:
        if self._role is Role.LEADER:
            return self._lease_valid()
        return (
            self._leader is not None
            and self._now - self._heard_leader_tick < self._opts.election_ticks_min
        )

    # ---------------------------------------------------------------- role changes

    def _become_follower(self, leader: NodeId | None) -> None:
        was_leader = self._role is Role.LEADER
        self._role = Role.FOLLOWER
        self._leader = leader
        self._probe_replies = {}
        if was_leader or self._ballot != BALLOT_ZERO:
            self._clear_proposer()
        self._reset_election_deadline()

    def _clear_proposer(self) -> None:
        # Queued commands never got a slot: they can never be chosen.
        for entry in self._queue:
            if entry.origin == self._id and entry.proposal_id:
                self._rd.dropped.append(entry.proposal_id)
        self._queue.clear()
        self._ballot = BALLOT_ZERO
        self._promises = {}
        self._covered_keys = {}
        self._prepare_sent_tick = {}
        self._backlog = {}
        self._backlog_max = SLOT_NONE
        self._acks = {}
        self._sent_tick = {}
        self._unsent = []
        self._lease_acks = {}
        self._accept_targets = None
        self._peer_commit = {}
        self._peer_accepted = {}
        self._catchup_tick = {}
        self._catchup_sent = {}
        self._pad_until = SLOT_NONE
        if self._reconfig_slot is not None and self._reconfig_slot < 0:
            self._reconfig_slot = None
        if self._reconfig_slot is not None and self._reconfig_slot > self._commit:
            self._reconfig_slot = None

    def _start_probe(self) -> None:
        if not self._may_lead():
            # Log-only members and non-members never lead (docs/consensus.md).
            self._become_follower(None)
            return
        if self._role is Role.CANDIDATE or self._role is Role.LEADER:
            self._clear_proposer()
        self._role = Role.PROBING
        self._probe_replies = {self._id: self._hears_leader_excluding_self()}
        self._probe_deadline = self._now + self._opts.probe_ticks
        self._reset_election_deadline()
        for peer in self._peers():
            self._send(Probe(self._id, peer, self._promised), after_persist=False)
        self._check_probe()

    def _hears_leader_excluding_self(self) -> bool:
        return (
            self._leader is not None
            and self._leader != self._id
            and self._now - self._heard_leader_tick < self._opts.election_ticks_min
        )

    def _check_probe(self) -> None:
        config = self.config
        members = self._members(config)
        silent = sum(1 for n, hears in self._probe_replies.items() if n in members and not hears)
        if silent >= self._q1(config):
            self._campaign()

    def _campaign(self) -> None:
        round_ = max(self._max_round_seen, self._promised.round) + 1
        ballot = Ballot(round_, self._id)
        self._set_promised(ballot)
        self._role = Role.CANDIDATE
        self._leader = None
        self._ballot = ballot
        self._promises = {}
        self._covered_keys = {}
        self._prepare_sent_tick = {}
        self._prepare_from = Slot(self._commit + 1)
        self._writable_at = self._now
        self._recovery_end = SLOT_NONE
        self._backlog_max = SLOT_NONE
        self._reset_election_deadline()
        for peer in self._peers():
            self._send_prepare(peer)
        own = self._make_promise(self._id, ballot, self._prepare_from)
        if Mutation.ACK_BEFORE_PERSIST in self._mut:
            self._on_promise(own)
        else:
            self._rd.self_promise = own

    def _send_prepare(self, peer: NodeId) -> None:
        self._prepare_sent_tick[peer] = self._now
        self._send(Prepare(self._id, peer, self._ballot, self._prepare_from), after_persist=True)

    def _resend_prepares(self) -> None:
        for peer in sorted(self._prepare_sent_tick):
            if peer in self._promises:
                continue
            if self._now - self._prepare_sent_tick[peer] >= self._opts.heartbeat_ticks * 2:
                self._send_prepare(peer)

    # ---------------------------------------------------------------- election messages

    def _on_probe(self, m: Probe) -> None:
        self._max_round_seen = max(self._max_round_seen, m.ballot.round)
        self._send(
            ProbeReply(self._id, m.src, self._promised, self._hears_leader()), after_persist=False
        )

    def _on_probe_reply(self, m: ProbeReply) -> None:
        self._max_round_seen = max(self._max_round_seen, m.ballot.round)
        if self._role is not Role.PROBING:
            return
        self._probe_replies[m.src] = m.hears_leader
        self._check_probe()

    # ---------------------------------------------------------------- phase 1

    def _make_promise(self, dst: NodeId, ballot: Ballot, from_slot: Slot) -> Promise:
        entries = tuple(self._log[s] for s in sorted(self._log) if s >= from_slot)
        snapshot = None
        if self._snapshot is not None and self._snapshot.slot >= from_slot:
            snapshot = self._snapshot
        remaining = max(0, self._lease_granted_until - self._now)
        return Promise(self._id, dst, ballot, entries, self._commit, remaining, snapshot)

    def _on_prepare(self, m: Prepare) -> None:
        if not any(c.can_lead(m.src) for _, c in self._configs):
            # A replica removed by a reconfiguration it missed (or a log-only member) may not
            # lead; refusing to promise is always safe and keeps it from deposing the leader.
            return
        if m.ballot < self._promised:
            self._send(Nack(self._id, m.src, m.ballot, self._promised), after_persist=False)
            return
        if m.ballot > self._promised:
            self._set_promised(m.ballot)
            if self._role is not Role.FOLLOWER:
                self._become_follower(None)
            else:
                self._leader = None
                self._reset_election_deadline()
        self._send_vote(self._make_promise(m.src, m.ballot, m.from_slot))

    def _on_promise(self, m: Promise) -> None:
        self._max_round_seen = max(self._max_round_seen, m.ballot.round)
        if m.ballot != self._ballot or self._role not in (Role.CANDIDATE, Role.LEADER):
            return
        if m.src in self._promises:
            return
        self._promises[m.src] = m
        if m.snapshot is not None and m.snapshot.slot > self._commit:
            self._install_snapshot(m.snapshot)
        if self._role is Role.CANDIDATE:
            wait = self._opts.lease_wait_ticks(m.lease_remaining_ticks)
            self._writable_at = max(self._writable_at, self._now + wait)
            if self._phase1_complete():
                self._become_leader()
        else:
            # A late promise, or one from a member of a newly chosen configuration. Only the
            # latter can carry a lease we have not already waited out: our first phase-1
            # quorum met the old leader's lease quorum in every configuration then covered.
            covered_before = set(self._covered_keys)
            for config in self._live_configs():
                if id(config) in covered_before or not self._covered(config):
                    continue
                members = self._members(config)
                owed = max(
                    p.lease_remaining_ticks for n, p in self._promises.items() if n in members
                )
                wait = self._opts.lease_wait_ticks(owed)
                self._writable_at = max(self._writable_at, self._now + wait)
            # Recover anything it voted for in slots we have not proposed yet.
            self._recompute_backlog()
            self._fill_pipeline()

    def _recover(self, from_slot: Slot) -> tuple[dict[Slot, Entry], Slot]:
        """Per slot >= from_slot: a value some promiser knows chosen, else the value of the
        highest ballot among the promises (Paxos Made Simple, section 2.2), else nothing."""
        best: dict[Slot, tuple[bool, Ballot, Entry]] = {}
        top = SLOT_NONE
        ignore_ballot = Mutation.RECOVERY_IGNORES_BALLOT in self._mut
        for src in sorted(self._promises):
            p = self._promises[src]
            for le in p.entries:
                if le.slot < from_slot:
                    continue
                top = max(top, le.slot)
                chosen = le.slot <= p.commit_slot and not ignore_ballot
                cur = best.get(le.slot)
                if cur is None:
                    best[le.slot] = (chosen, le.ballot, le.entry)
                elif cur[0]:
                    continue
                elif chosen:
                    best[le.slot] = (True, le.ballot, le.entry)
                elif ignore_ballot:
                    if le.ballot < cur[1]:
                        best[le.slot] = (False, le.ballot, le.entry)
                elif le.ballot > cur[1]:
                    best[le.slot] = (False, le.ballot, le.entry)
        return {s: v[2] for s, v in best.items()}, top

    def _needed_configs(self, recovered: dict[Slot, Entry]) -> list[Config]:
        """Configurations whose phase-1 quorum we need before leading: the one governing the
        next slot, every later one already chosen, and every one a recovered configuration
        entry would introduce (such a slot may have been chosen without our knowing)."""
        needed = list(self._live_configs())
        for slot in sorted(recovered):
            entry = recovered[slot]
            if slot > self._commit and entry.kind is EntryKind.CONFIG:
                assert entry.config is not None
                needed.append(entry.config)
        return needed

    def _covered(self, config: Config) -> bool:
        key = id(config)
        if key in self._covered_keys:
            return True  # promises for our ballot only ever accumulate
        members = self._members(config)
        count = sum(1 for n in self._promises if n in members)
        if count >= self._q1(config):
            self._covered_keys[key] = config
            return True
        return False

    def _phase1_complete(self) -> bool:
        recovered, _ = self._recover(Slot(self._commit + 1))
        complete = True
        for config in self._needed_configs(recovered):
            if not self._covered(config):
                complete = False
                for peer in config.node_ids:
                    if peer != self._id and peer not in self._prepare_sent_tick:
                        self._send_prepare(peer)
        return complete

    def _become_leader(self) -> None:
        assert self._role is Role.CANDIDATE
        self._role = Role.LEADER
        self._leader = self._id
        self._became_leader_tick = self._now
        self._next_slot = Slot(self._commit + 1)
        self._acks = {}
        self._sent_tick = {}
        self._lease_acks = {}
        self._accept_targets = None
        self._peer_commit = {}
        self._peer_accepted = {}
        self._catchup_tick = {}
        self._catchup_sent = {}
        # Proposals of an earlier leadership whose slots are not yet chosen have an unknown
        # outcome: forget them (their clients time out and retry), so that everything this
        # leadership acknowledges comes after the slots it recovered.
        self._pending_by_slot = {}
        if Mutation.LEASE_READ_WITHOUT_WAIT in self._mut:
            self._writable_at = self._now
        self._recompute_backlog()
        self._recovery_end = self._backlog_max
        if self._configs[-1][0] > self._commit + 1:
            self._pad_until = Slot(self._configs[-1][0] - 1)
        self._last_heartbeat_tick = _TICK_NEVER
        self._fill_pipeline()
        self._broadcast_heartbeat()

    def _recompute_backlog(self) -> None:
        recovered, top = self._recover(self._next_slot)
        self._backlog = recovered
        self._backlog_max = max(self._backlog_max, top)
        self._recovery_end = max(self._recovery_end, self._backlog_max)

    # ---------------------------------------------------------------- phase 2: leader

    def _fill_pipeline(self) -> None:
        if self._role is not Role.LEADER:
            return
        writable = self._now >= self._writable_at
        limit = self._commit + self._opts.pipeline_slots_max
        log_only_from = self._log_only_from
        while self._next_slot <= limit:
            slot = self._next_slot
            if log_only_from is not None and slot >= log_only_from:
                return  # we would not apply it; we step down once that slot is next
            config = self._config_at(slot)
            if not self._covered(config):
                for peer in config.node_ids:
                    if peer != self._id and peer not in self._prepare_sent_tick:
                        self._prepare_from = slot
                        self._send_prepare(peer)
                return
            if slot <= self._backlog_max:
                entry = self._backlog.pop(slot, NOOP)
            elif self._queue and writable:
                entry = self._queue.popleft()
                self._pending_by_slot[slot] = entry.proposal_id
                if entry.kind is EntryKind.CONFIG:
                    entry = _with_epoch_of_slot(entry, slot)
                    self._reconfig_slot = slot
            elif slot <= self._pad_until:
                entry = NOOP
            else:
                return
            self._assign(slot, entry)

    def _assign(self, slot: Slot, entry: Entry) -> None:
        le = LogEntry(slot, self._ballot, entry)
        self._log[slot] = le
        self._rd.persist.append(AcceptRecord(le))
        self._acks[slot] = set()
        self._unsent.append(slot)
        if self._mut and (
            Mutation.ACK_BEFORE_PERSIST in self._mut
            or Mutation.LEADER_VOTE_BEFORE_PERSIST in self._mut
        ):
            self._acks[slot].add(self._id)
        else:
            self._rd.self_accepted.append((self._ballot, slot))
        self._next_slot = Slot(slot + 1)

    def _flush_accepts(self) -> None:
        if not self._unsent:
            return
        slots = self._unsent
        self._unsent = []
        if self._role is not Role.LEADER:
            return
        for slot in slots:
            self._sent_tick[slot] = self._now
        targets = self._accept_targets
        self._send_accepts(slots, self._peers() if targets is None else targets)

    def _send_accepts(self, slots: list[Slot], peers: list[NodeId]) -> None:
        batch = self._opts.batch_entries_max
        log = self._log
        for i in range(0, len(slots), batch):
            entries = tuple((s, log[s].entry) for s in slots[i : i + batch] if s in log)
            # Accepts leave before the leader's own record is durable (send_now): the
            # followers' fsyncs then run in parallel with the leader's. This is safe because
            # the leader's vote counts toward Q2 only in advance(), once its record is on
            # disk (self_accepted), and a proposer's message carries no promise of its own:
            # a leader that crashes before its fsync restarts at a higher ballot (its
            # promise was persisted before phase 1 completed), so (ballot, slot) never gets
            # a second value.
            for peer in peers:
                self._send(
                    Accept(self._id, peer, self._ballot, entries, self._commit, self._now),
                    after_persist=False,
                )

    def _on_accepted(self, m: Accepted) -> None:
        if self._role is not Role.LEADER or m.ballot != self._ballot:
            return
        self._note_peer(m.src, m.commit_slot, m.sent_tick)
        self._note_accepted(m.src, m.slots)
        self._count_accepted(m.src, m.ballot, list(m.slots), m.sent_tick)

    def _note_accepted(self, src: NodeId, slots: Sequence[Slot]) -> None:
        """Extend the peer's run of slots acknowledged at our ballot; a slot outside it
        (a gap, a retransmission of an earlier one) starts a new run."""
        run = self._peer_accepted.get(src)
        for slot in slots:
            if run is None:
                run = (slot, slot)
            elif slot == run[1] + 1:
                run = (run[0], slot)
            elif not run[0] <= slot <= run[1]:
                run = (slot, slot)
        if run is not None:
            self._peer_accepted[src] = run

    def _count_accepted(self, src: NodeId, ballot: Ballot, slots: list[Slot], tick: int) -> None:
        if self._role is not Role.LEADER or ballot != self._ballot:
            return
        acks = self._acks
        for slot in slots:
            voters = acks.get(slot)
            if voters is not None:
                voters.add(src)
        self._advance_leader_commit()

    def _advance_leader_commit(self) -> None:
        new_commit = self._commit
        acks = self._acks
        while True:
            slot = Slot(new_commit + 1)
            voters = acks.get(slot)
            if voters is None:
                break
            config = self._config_at(slot)
            members = self._members(config)
            if len(voters) < config.q2 or len(members.intersection(voters)) < config.q2:
                break
            new_commit = slot
            del acks[slot]
            self._sent_tick.pop(slot, None)
            # Configurations take effect in slot order: note each as we pass it.
            entry = self._log[slot].entry
            if entry.kind is EntryKind.CONFIG:
                self._note_config(slot, entry)
        if new_commit > self._commit:
            self._set_commit(new_commit, notes_done=True)
            self._fill_pipeline()

    def _set_commit(self, new_commit: Slot, *, notes_done: bool = False) -> None:
        """Every slot up to new_commit is chosen with the value in our log."""
        old = self._commit
        assert new_commit > old
        log = self._log
        pending = self._pending_by_slot
        config_kind = EntryKind.CONFIG
        for slot in range(old + 1, new_commit + 1):
            entry = log[Slot(slot)].entry
            if pending:
                pid = pending.pop(Slot(slot), None)
                if pid is not None:
                    if entry.origin == self._id and entry.proposal_id == pid:
                        self._rd.acknowledged.append(pid)
                    else:
                        self._rd.dropped.append(pid)
            if entry.kind is config_kind:
                if not notes_done:
                    self._note_config(Slot(slot), entry)
                # Pad the window with no-ops so the new configuration takes effect even
                # without client traffic.
                self._pad_until = Slot(slot + self._opts.reconfig_window_slots - 1)
            elif self._reconfig_slot == slot:
                self._reconfig_slot = None  # our configuration lost its slot
        self._commit = new_commit
        self._rd.persist.append(CommitRecord(new_commit))
        self._prune_configs()
        if (
            self._reconfig_slot is not None
            and 0 < self._reconfig_slot <= self._commit
            and self._configs[-1][0] <= self._commit + 1
        ):
            self._reconfig_slot = None  # our configuration governs: the next may start
        self._hand_out_applies()
        if self._role is Role.LEADER:
            self._check_still_member()

    def _hand_out_applies(self) -> None:
        if self._handed >= self._commit:
            return
        was_stateless = self._stateless
        end = self._commit
        log_only_from = self._log_only_from
        if log_only_from is not None and log_only_from <= end:
            # We keep state up to the slot before the first one governed by a configuration
            # that makes us log-only, and apply nothing from there on.
            end = Slot(log_only_from - 1)
            self._stateless = True
        if not was_stateless:
            log = self._log
            apply = self._rd.apply
            for slot in range(self._handed + 1, end + 1):
                apply.append((Slot(slot), log[Slot(slot)].entry))
        self._handed = self._commit

    def _check_still_member(self) -> None:
        """A leader removed by a reconfiguration steps down once the new configuration
        governs the next slot; the remaining members elect a new leader."""
        if not self.config.can_lead(self._id):
            self._become_follower(None)

    def _tick_leader(self) -> None:
        if self._now - self._last_heartbeat_tick >= self._opts.heartbeat_ticks:
            self._broadcast_heartbeat()
            self._resend_unacked()
            self._resend_prepares()
        # Check quorum: a leader that has not renewed its lease for a whole election
        # timeout steps down, so clients find the real leader.
        start = self._lease_start()
        since = self._became_leader_tick if start is None else max(start, self._became_leader_tick)
        if self._now - since > self._opts.election_ticks_max:
            self._become_follower(None)
            return
        self._fill_pipeline()

    def _broadcast_heartbeat(self) -> None:
        self._last_heartbeat_tick = self._now
        for peer in self._peers():
            self._send(
                Heartbeat(self._id, peer, self._ballot, self._commit, self._now),
                after_persist=True,
            )
        if self._opts.thrifty_accepts:
            self._choose_accept_targets()

    def _choose_accept_targets(self) -> None:
        """Pick the peers the next Accepts go to: Q2 minus the leader's own vote, among the
        peers that acknowledged one of the last two heartbeats, keeping the previous choice
        where it still qualifies. Every peer while the configuration is changing, or when
        too few peers answer."""
        previous = self._accept_targets or []
        self._accept_targets = None
        live = self._live_configs()
        if len(live) != 1 or self._reconfig_in_progress():
            return
        config = live[0]
        need = config.q2 - (1 if self._id in self._members(config) else 0)
        peers = self._peers()
        if need >= len(peers):
            return
        fresh_from = self._now - 2 * self._opts.heartbeat_ticks
        lease_acks = self._lease_acks
        fresh = [p for p in peers if lease_acks.get(p, _TICK_NEVER) >= fresh_from]
        if len(fresh) < need:
            return
        # In ring order from this node (the next node ids first, then from the lowest): the
        # groups one node leads choose the same peers, so that their Accepts of a drive pass
        # leave in one frame per peer and wake as few peers as possible, while leaders on
        # different nodes choose different peers. Log-only members first: they keep the log
        # but apply nothing, so a vote costs them the least (Aurora's write quorum leans on
        # its log-only copies). A previous choice that still qualifies stays.
        me = self._id
        log_only = {m.node_id for m in config.members if m.log_only}
        fresh.sort(key=lambda p: (p not in previous, p not in log_only, p < me, p))
        self._accept_targets = fresh[:need]

    def _resend_unacked(self) -> None:
        if not self._acks:
            return
        old = self._now - self._opts.heartbeat_ticks
        for peer in self._peers():
            slots = [
                s
                for s in sorted(self._acks)
                if peer not in self._acks[s] and self._sent_tick.get(s, self._now) <= old
            ]
            if slots:
                self._send_accepts(slots, [peer])

    def _note_peer(self, src: NodeId, commit_slot: Slot, sent_tick: int) -> None:
        if sent_tick > self._lease_acks.get(src, _TICK_NEVER):
            self._lease_acks[src] = sent_tick
        if commit_slot > self._peer_commit.get(src, SLOT_NONE):
            self._peer_commit[src] = commit_slot

    def _lease_start(self) -> int | None:
        """The send tick of the newest heartbeat a phase-2 quorum of every live
        configuration has acknowledged at our ballot (we count as acknowledging now)."""
        start: int | None = None
        for config in self._live_configs():
            ticks = sorted(
                (self._now if n == self._id else self._lease_acks.get(n, _TICK_NEVER))
                for n in self._members(config)
            )
            ticks.reverse()
            tick = ticks[config.q2 - 1]
            if tick == _TICK_NEVER:
                return None
            start = tick if start is None else min(start, tick)
        return start

    def _lease_valid(self) -> bool:
        start = self._lease_start()
        if start is None or start < self._became_leader_tick:
            return False
        return self._now < start + self._lease_valid_ticks

    def _on_heartbeat_ack(self, m: HeartbeatAck) -> None:
        if self._role is not Role.LEADER or m.ballot != self._ballot:
            return
        self._note_peer(m.src, m.commit_slot, m.sent_tick)
        self._maybe_catch_up(m.src, force=False)

    def _maybe_catch_up(self, peer: NodeId, *, force: bool) -> None:
        peer_commit = self._peer_commit.get(peer, SLOT_NONE)
        if peer_commit >= self._commit:
            return
        run = self._peer_accepted.get(peer)
        if run is not None and run[0] <= peer_commit + 1 and run[1] >= self._commit:
            # The peer holds every slot it has not seen chosen, at our ballot: it only
            # lags in the commit point, which every Accept and heartbeat carries.
            return
        last = self._catchup_tick.get(peer, _TICK_NEVER)
        if not force and self._now - last < self._opts.heartbeat_ticks:
            return
        self._catchup_tick[peer] = self._now
        start = Slot(peer_commit + 1)
        if self._opts.thrifty_accepts:
            # A peer kept current by catch-ups gets each entry once: the next batch starts
            # after the last one sent (the link delivers in order) unless that one has had
            # a few heartbeats to be acknowledged and was not.
            sent = self._catchup_sent.setdefault(peer, [])
            while sent and sent[0][0] < start:
                del sent[0]  # acknowledged
            if sent and self._now - sent[0][1] >= 4 * self._opts.heartbeat_ticks:
                sent.clear()  # lost, or not applied: start again from the peer's commit
            if sent:
                start = Slot(sent[-1][0] + 1)
                if start > self._commit:
                    return
        if start not in self._log:
            if self._snapshot is not None and self._snapshot.slot >= start:
                self._send(
                    InstallSnapshot(self._id, peer, self._ballot, self._snapshot),
                    after_persist=False,
                )
            return
        end = min(self._commit, start + self._opts.catchup_entries_max - 1)
        entries = tuple((Slot(s), self._log[Slot(s)].entry) for s in range(start, end + 1))
        if self._opts.thrifty_accepts:
            self._catchup_sent[peer].append((Slot(end), self._now))
        self._send(
            CatchUp(self._id, peer, self._ballot, entries, self._commit), after_persist=False
        )

    def _on_catch_up_ack(self, m: CatchUpAck) -> None:
        if self._role is not Role.LEADER or m.ballot != self._ballot:
            return
        if m.commit_slot > self._peer_commit.get(m.src, SLOT_NONE):
            self._peer_commit[m.src] = m.commit_slot
        if (
            self._opts.thrifty_accepts
            and self._commit - m.commit_slot < self._opts.catchup_entries_max
        ):
            # A peer that Accepts skip is always a little behind while writes flow: catch
            # it up once per heartbeat, in one batch, unless it lags by a full batch.
            return
        self._maybe_catch_up(m.src, force=True)

    def _on_nack(self, m: Nack) -> None:
        self._max_round_seen = max(self._max_round_seen, m.promised.round)
        if (
            self._role in (Role.CANDIDATE, Role.LEADER)
            and m.ballot == self._ballot
            and m.promised > self._ballot
        ):
            self._become_follower(None)

    # ---------------------------------------------------------------- phase 2: acceptor

    def _accept_leader(self, src: NodeId, ballot: Ballot) -> bool:
        """Common checks for messages from a leader. False (and a Nack) when stale."""
        promised = self._promised
        if ballot is not promised:  # (the same object as a rule: one decoded per leadership)
            if ballot < promised:
                self._send(Nack(self._id, src, ballot, promised), after_persist=False)
                return False
            if ballot > promised:
                self._set_promised(ballot)
        if self._role is not Role.FOLLOWER and src != self._id:
            self._become_follower(src)
        self._hear_leader(src)
        return True

    def _on_accept(self, m: Accept) -> None:
        if not self._accept_leader(m.src, m.ballot):
            return
        log = self._log
        commit = self._commit
        ballot = m.ballot
        persist = self._rd.persist
        slots: list[Slot] = []
        for slot, entry in m.entries:
            slots.append(slot)
            if slot <= commit:
                continue  # already chosen here; the value cannot differ
            existing = log.get(slot)
            if existing is not None and existing.ballot == ballot:
                continue  # a retransmission
            le = LogEntry(slot, ballot, entry)
            log[slot] = le
            persist.append(AcceptRecord(le))
        self._learn_commit(m.commit_slot, ballot)
        self._send_vote(Accepted(self._id, m.src, ballot, tuple(slots), self._commit, m.sent_tick))

    def _learn_commit(self, leader_commit: Slot, ballot: Ballot) -> None:
        """Slots up to the leader's commit point are chosen; ours hold the chosen value
        where we voted for it at the leader's own ballot (one value per slot per ballot)."""
        if leader_commit <= self._commit:
            return
        slot = self._commit + 1
        log = self._log
        while slot <= leader_commit:
            le = log.get(Slot(slot))
            if le is None or (le.ballot is not ballot and le.ballot != ballot):
                break
            slot += 1
        if slot - 1 > self._commit:
            self._set_commit(Slot(slot - 1))

    def _on_heartbeat(self, m: Heartbeat) -> None:
        persisted_before = len(self._rd.persist)
        if not self._accept_leader(m.src, m.ballot):
            return
        self._learn_commit(m.commit_slot, m.ballot)
        promised_now = len(self._rd.persist) > persisted_before
        self._send(
            HeartbeatAck(self._id, m.src, m.ballot, self._commit, m.sent_tick),
            after_persist=promised_now,
        )

    def _on_catch_up(self, m: CatchUp) -> None:
        if not self._accept_leader(m.src, m.ballot):
            return
        slot = self._commit + 1
        new_commit = self._commit
        for s, entry in m.entries:
            if s != slot:
                continue
            self._log[s] = LogEntry(s, m.ballot, entry)
            self._rd.persist.append(ChosenRecord(s, entry))
            new_commit = s
            slot += 1
        if new_commit > self._commit:
            self._set_commit(new_commit)
        self._learn_commit(m.commit_slot, m.ballot)
        self._send(CatchUpAck(self._id, m.src, m.ballot, self._commit), after_persist=True)

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if not self._accept_leader(m.src, m.ballot):
            return
        if m.snapshot.slot > self._commit:
            self._install_snapshot(m.snapshot)
        self._send(CatchUpAck(self._id, m.src, m.ballot, self._commit), after_persist=True)

    def _note_snapshot_membership(self, snap: Snapshot) -> None:
        """A snapshot is state as of its slot: we hold state from there on unless the
        configuration in force after it makes us log-only, and stop again at the first slot
        a later configuration in it makes us log-only."""
        self._log_only_from = None
        for first, config in snap.configs:
            if self._is_log_only_in(config):
                self._log_only_from = first
                break
        self._stateless = self._log_only_from is not None and self._log_only_from <= snap.slot + 1

    def _install_snapshot(self, snap: Snapshot) -> None:
        assert snap.slot > self._commit
        self._snapshot = snap
        self._rd.persist.append(SnapshotRecord(snap))
        for slot in [s for s in self._log if s <= snap.slot]:
            del self._log[slot]
        for slot in [s for s in self._pending_by_slot if s <= snap.slot]:
            del self._pending_by_slot[slot]  # outcome unknown here; the client times out
        self._commit = snap.slot
        self._configs = list(snap.configs)
        self._handed = snap.slot
        self._note_snapshot_membership(snap)
        # Entries handed out but not applied yet are superseded by the snapshot.
        self._rd.apply = [(s, e) for s, e in self._rd.apply if s > snap.slot]
        self._rd.install_snapshot = snap
        if self._next_slot <= snap.slot:
            self._next_slot = Slot(snap.slot + 1)
        for slot in [s for s in self._acks if s <= snap.slot]:
            del self._acks[slot]
