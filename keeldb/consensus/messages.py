"""The messages replicas exchange, and the records they persist.

Owns the wire vocabulary of the consensus core: every message is a frozen, slotted
dataclass of plain values (ints, bytes, tuples, other such dataclasses), so a driver can
pickle it or encode it with msgpack. Must never hold behaviour beyond describing itself:
what a replica does with a message lives in `replica.py`.

Names follow Paxos Made Simple (Lamport 2001): Prepare/Promise are phase 1 (1a/1b),
Accept/Accepted are phase 2 (2a/2b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from keeldb.consensus.types import (
    Ballot,
    Entry,
    LogEntry,
    NodeId,
    Slot,
    Snapshot,
    pickle_through_constructor,
)

# ---------------------------------------------------------------------------------------
# Election: the pre-check against gray failures.


@dataclass(frozen=True, slots=True)
class Probe:
    """ "Do you still hear the leader?": sent before campaigning, so that a replica that
    merely stopped receiving from the leader (one-way loss) does not depose it."""

    src: NodeId
    dst: NodeId
    ballot: Ballot  # the ballot the asker would start from (its promised ballot)


@dataclass(frozen=True, slots=True)
class ProbeReply:
    src: NodeId
    dst: NodeId
    ballot: Ballot  # the replier's promised ballot
    hears_leader: bool


# ---------------------------------------------------------------------------------------
# Phase 1: one Prepare covers every slot from `from_slot` on.


@dataclass(frozen=True, slots=True)
class Prepare:
    src: NodeId
    dst: NodeId
    ballot: Ballot
    from_slot: Slot


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b: the acceptor will accept nothing below `ballot`.

    `entries` are its votes for every slot from the Prepare's `from_slot` on; those at or
    below `commit_slot` are known chosen. `snapshot` is set when the acceptor has compacted
    slots the proposer asked for. `lease_remaining_ticks` is the lease-wait obligation: how
    long (on the acceptor's clock) the lease it last granted a previous leader may still run.
    """

    src: NodeId
    dst: NodeId
    ballot: Ballot
    entries: tuple[LogEntry, ...]
    commit_slot: Slot
    lease_remaining_ticks: int
    snapshot: Snapshot | None = None


# ---------------------------------------------------------------------------------------
# Phase 2: batched, pipelined.


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a for a batch of slots. `commit_slot` lets followers learn the commit point;
    `sent_tick` is echoed back so the leader can time its lease from the send."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    entries: tuple[tuple[Slot, Entry], ...]
    commit_slot: Slot
    sent_tick: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b: the acceptor has durably accepted `slots` at `ballot`."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    slots: tuple[Slot, ...]
    commit_slot: Slot  # the acceptor's own commit point, so the leader sees who lags
    sent_tick: int


@dataclass(frozen=True, slots=True)
class Nack:
    """The request at `ballot` was refused: the sender has promised `promised`."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    promised: Ballot


# ---------------------------------------------------------------------------------------
# Leadership, commit point and leases.


@dataclass(frozen=True, slots=True)
class Heartbeat:
    src: NodeId
    dst: NodeId
    ballot: Ballot
    commit_slot: Slot
    sent_tick: int


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Grants the leader a lease timed from `sent_tick` (the leader's clock)."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    commit_slot: Slot
    sent_tick: int


# ---------------------------------------------------------------------------------------
# Catch-up of lagging replicas.


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Chosen entries, contiguous from the follower's first missing slot."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    entries: tuple[tuple[Slot, Entry], ...]
    commit_slot: Slot


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Sent instead of CatchUp when the slots the follower needs were compacted away."""

    src: NodeId
    dst: NodeId
    ballot: Ballot
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class CatchUpAck:
    src: NodeId
    dst: NodeId
    ballot: Ballot
    commit_slot: Slot


Message: TypeAlias = (
    Probe
    | ProbeReply
    | Prepare
    | Promise
    | Accept
    | Accepted
    | Nack
    | Heartbeat
    | HeartbeatAck
    | CatchUp
    | InstallSnapshot
    | CatchUpAck
)

MESSAGE_TYPES: tuple[type, ...] = (
    Probe,
    ProbeReply,
    Prepare,
    Promise,
    Accept,
    Accepted,
    Nack,
    Heartbeat,
    HeartbeatAck,
    CatchUp,
    InstallSnapshot,
    CatchUpAck,
)


# ---------------------------------------------------------------------------------------
# Records: what a replica asks its driver to persist (append, then fsync) before sending
# `send_after_persist`. `DurableState.replay` rebuilds the replica's hard state from them,
# so a disk that loses an unsynced tail loses only a suffix of these records.


@dataclass(frozen=True, slots=True)
class PromiseRecord:
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    entry: LogEntry


@dataclass(frozen=True, slots=True)
class ChosenRecord:
    """A value learned as chosen from a peer (catch-up), with no vote of our own behind it."""

    slot: Slot
    entry: Entry


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """Every slot up to and including `slot` is chosen, with the values in this log."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The state up to `snapshot.slot`; log entries at or below it may be dropped."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class IncarnationRecord:
    """Counts restarts, so proposal ids never repeat across them."""

    incarnation: int


Record: TypeAlias = (
    PromiseRecord | AcceptRecord | ChosenRecord | CommitRecord | SnapshotRecord | IncarnationRecord
)

pickle_through_constructor(
    *MESSAGE_TYPES,
    PromiseRecord,
    AcceptRecord,
    ChosenRecord,
    CommitRecord,
    SnapshotRecord,
    IncarnationRecord,
)
