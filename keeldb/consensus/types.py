"""Identifiers, ballots, log entries and replica-group configurations.

Owns the plain data every other consensus module speaks in: node ids, slots, ballots, the
entries a slot can hold, snapshots, and the configuration of a replica group (its members,
their zones, and the two flexible quorums Q1 and Q2). Must never hold protocol state or do
IO: these are values, frozen and picklable, so a driver can encode them as it likes.
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NewType, assert_never

NodeId = NewType("NodeId", int)
Slot = NewType("Slot", int)
# A proposal id is unique per replica across restarts: the replica's incarnation in the high
# bits and a counter in the low bits (see Replica.propose).
ProposalId = NewType("ProposalId", int)

PROPOSAL_COUNTER_BITS = 32  # proposals per incarnation before the counter would wrap

# Slot 0 is never used for a command: the first entry of a group lives at slot 1, so
# "commit_slot == 0" reads as "nothing chosen yet".
SLOT_NONE = Slot(0)


@dataclass(frozen=True, slots=True, order=True)
class Ballot:
    """A ballot number: ordered by round, ties broken by the proposer's node id."""

    round: int
    node_id: NodeId

    def next_for(self, node_id: NodeId) -> Ballot:
        """The smallest ballot owned by `node_id` that is greater than this one."""
        return Ballot(self.round + 1, node_id)

    def __str__(self) -> str:
        return f"{self.round}.{self.node_id}"


BALLOT_ZERO = Ballot(0, NodeId(0))


class ConfigError(ValueError):
    """A configuration that could not keep the protocol safe or live."""


@dataclass(frozen=True, slots=True)
class Member:
    """One acceptor of a replica group; `log_only` members keep the log but no state."""

    node_id: NodeId
    zone: str
    log_only: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """The members of a replica group and its flexible quorums.

    Flexible Paxos (Howard, Malkhi, Spiegelman 2016, section 3) needs only that every
    phase-1 quorum intersects every phase-2 quorum; with quorums counted by size that is
    Q1 + Q2 > N. `epoch` names one configuration: the group's first has epoch 0, and one
    chosen by a configuration entry has the slot number of that entry (set by the leader
    when it gives the entry its slot), so epochs are unique and increase in log order.
    """

    members: tuple[Member, ...]
    q1: int
    q2: int
    epoch: int = 0

    def validate(self) -> None:
        """Raise ConfigError unless the configuration is safe and can elect a leader."""
        n = len(self.members)
        if n == 0:
            raise ConfigError("a configuration needs at least one member")
        ids = [m.node_id for m in self.members]
        if len(set(ids)) != n:
            raise ConfigError(f"member node ids repeat: {sorted(ids)}")
        if any(node_id <= 0 for node_id in ids):
            raise ConfigError("node ids must be positive (0 is reserved for 'no node')")
        if not all(m.zone for m in self.members):
            raise ConfigError("every member needs a zone")
        if not 1 <= self.q1 <= n:
            raise ConfigError(f"Q1 must be within 1..{n}, got {self.q1}")
        if not 1 <= self.q2 <= n:
            raise ConfigError(f"Q2 must be within 1..{n}, got {self.q2}")
        if self.q1 + self.q2 <= n:
            raise ConfigError(
                f"Q1 + Q2 must exceed N so every phase-1 quorum meets every phase-2 quorum: "
                f"{self.q1} + {self.q2} <= {n}"
            )
        if all(m.log_only for m in self.members):
            raise ConfigError(
                "at least one member must keep the state (log-only members never lead)"
            )
        if self.epoch < 0:
            raise ConfigError("epoch must not be negative")

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        """Member ids in ascending order (never depend on set order)."""
        return tuple(sorted(m.node_id for m in self.members))

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted({m.zone for m in self.members}))

    def member(self, node_id: NodeId) -> Member | None:
        for m in self.members:
            if m.node_id == node_id:
                return m
        return None

    def is_member(self, node_id: NodeId) -> bool:
        return self.member(node_id) is not None

    def can_lead(self, node_id: NodeId) -> bool:
        m = self.member(node_id)
        return m is not None and not m.log_only

    def count(self, voters: Iterable[NodeId]) -> int:
        """How many distinct members of this configuration are among `voters`."""
        mine = set(self.node_ids)
        return len(mine.intersection(voters))

    def survives_zone_loss(self) -> bool:
        """True iff losing any one whole zone still leaves a phase-2 quorum (writes go on)."""
        for zone in self.zones:
            left = sum(1 for m in self.members if m.zone != zone)
            if left < self.q2 or left < self.q1:
                return False
        return True

    def with_epoch(self, epoch: int) -> Config:
        return Config(self.members, self.q1, self.q2, epoch)

    def __str__(self) -> str:
        names = ",".join(
            f"{m.node_id}{'L' if m.log_only else ''}@{m.zone}"
            for m in sorted(self.members, key=lambda m: m.node_id)
        )
        return f"epoch {self.epoch} [{names}] q1={self.q1} q2={self.q2}"

    @staticmethod
    def standard(node_ids: Sequence[int], zones: Sequence[str] = ("a", "b", "c")) -> Config:
        """N 3 over 3 zones, Q1 2, Q2 2: the classic majority group."""
        if len(node_ids) != 3:
            raise ConfigError(f"the standard profile has 3 members, got {len(node_ids)}")
        members = tuple(Member(NodeId(n), zones[i % len(zones)]) for i, n in enumerate(node_ids))
        config = Config(members, q1=2, q2=2)
        config.validate()
        return config

    @staticmethod
    def aurora(node_ids: Sequence[int], zones: Sequence[str] = ("a", "b", "c")) -> Config:
        """N 6 over 3 zones (2 per zone), Q1 3, Q2 4, as Aurora (SIGMOD 2017, section 2.1):
        writes survive the loss of a whole zone; no acknowledged write is lost when a zone
        and one more node are down."""
        if len(node_ids) != 6:
            raise ConfigError(f"the aurora profile has 6 members, got {len(node_ids)}")
        members = tuple(
            Member(NodeId(n), zones[(i // 2) % len(zones)]) for i, n in enumerate(node_ids)
        )
        config = Config(members, q1=3, q2=4)
        config.validate()
        return config

    @staticmethod
    def single(node_id: int, zone: str = "a") -> Config:
        """A group of one: the embedded, single-node deployment."""
        config = Config((Member(NodeId(node_id), zone),), q1=1, q2=1)
        config.validate()
        return config


class EntryKind(enum.Enum):
    COMMAND = "command"  # a client's command bytes, handed to the state machine
    NOOP = "noop"  # fills a gap found during recovery, or pads a reconfiguration window
    CONFIG = "config"  # a new configuration, effective `reconfig_window_slots` slots later


@dataclass(frozen=True, slots=True)
class Entry:
    """The value of one slot."""

    kind: EntryKind
    command: bytes = b""
    origin: NodeId = NodeId(0)  # the replica that proposed it (0 for no-ops)
    proposal_id: ProposalId = ProposalId(0)  # 0 when not a client proposal
    config: Config | None = None

    def __str__(self) -> str:
        match self.kind:
            case EntryKind.COMMAND:
                return f"cmd({self.command.decode('utf-8', 'replace')})"
            case EntryKind.NOOP:
                return "noop"
            case EntryKind.CONFIG:
                return f"config({self.config})"
            case _:
                assert_never(self.kind)


NOOP = Entry(EntryKind.NOOP)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """An acceptor's vote: `entry` accepted in `slot` at `ballot`."""

    slot: Slot
    ballot: Ballot
    entry: Entry


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine's state after applying every slot up to and including `slot`.

    `configs` lists (first slot governed, config) for the configuration in force after
    `slot` and any already chosen to take effect later, so a replica restored from a
    snapshot agrees with its peers on membership (the log entries that introduced those
    configurations may have been compacted away).
    """

    slot: Slot
    configs: tuple[tuple[Slot, Config], ...]
    state: bytes = b""


def pickle_through_constructor(*classes: type) -> None:
    """Make pickle and `copy` rebuild instances of these frozen dataclasses by calling the
    class with their fields. Compiled (keeldb/native.py), a dataclass is otherwise
    unpickled by setting its fields one by one, which a frozen one's `__setattr__` refuses."""
    for cls in classes:
        copyreg.pickle(cls, _constructor_call)


def _constructor_call(value: Any) -> tuple[type, tuple[Any, ...]]:
    return type(value), tuple(getattr(value, field.name) for field in dataclasses.fields(value))


pickle_through_constructor(Ballot, Member, Config, Entry, LogEntry, Snapshot)
