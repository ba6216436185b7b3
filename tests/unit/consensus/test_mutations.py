"""Each deliberately broken variant is off by default and, when on, really breaks the rule
it names (the simulator's tests check that its checkers catch them)."""

from __future__ import annotations

import random

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import Accept, Accepted, Promise
from keeldb.consensus.replica import DurableState, Mutation, Options, Replica
from keeldb.consensus.types import (
    Ballot,
    Config,
    Entry,
    EntryKind,
    LogEntry,
    Member,
    NodeId,
    Slot,
)

STANDARD = Config.standard([1, 2, 3])


def _opts(*mutations: Mutation) -> Options:
    return Options(mutations=frozenset(mutations))


def test_mutations_are_off_by_default() -> None:
    assert Options().mutations == frozenset()


def test_ack_before_persist_sends_votes_before_the_fsync() -> None:
    r = Replica(NodeId(2), STANDARD, random.Random(0), _opts(Mutation.ACK_BEFORE_PERSIST))
    r.step(
        Accept(
            NodeId(1),
            NodeId(2),
            Ballot(1, NodeId(1)),
            ((Slot(1), Entry(EntryKind.NOOP)),),
            Slot(0),
            0,
        )
    )
    rd = r.ready()
    assert any(isinstance(m, Accepted) for m in rd.send_now)


def test_forget_promise_on_restart_drops_the_promised_ballot() -> None:
    durable = DurableState(promised=Ballot(4, NodeId(3)))
    broken = Replica(
        NodeId(2), STANDARD, random.Random(0), _opts(Mutation.FORGET_PROMISE_ON_RESTART), durable
    )
    sound = Replica(NodeId(2), STANDARD, random.Random(0), Options(), durable)
    assert broken.ballot.round == 0
    assert sound.ballot == Ballot(4, NodeId(3))


def test_quorum_intersection_broken_lets_a_lone_replica_lead_a_group_of_three() -> None:
    h = Harness(STANDARD, options=_opts(Mutation.QUORUM_INTERSECTION_BROKEN))
    h.partition([1], [2, 3])
    h.campaign(1)
    h.deliver_all()
    assert h.replica(1).is_leader


def test_lease_read_without_wait_serves_reads_during_the_old_lease() -> None:
    h = Harness(STANDARD, options=_opts(Mutation.LEASE_READ_WITHOUT_WAIT))
    h.elect(1)
    h.partition([1], [2, 3])
    h.campaign(2)
    h.deliver_all()
    assert h.replica(1).read_lease()
    assert h.replica(2).read_lease()


def test_recovery_ignores_ballot_adopts_a_lower_ballot_value() -> None:
    cmd_low = Entry(EntryKind.COMMAND, b"low")
    cmd_high = Entry(EntryKind.COMMAND, b"high")
    five = Config(tuple(Member(NodeId(i), "abc"[i % 3]) for i in range(1, 6)), q1=3, q2=3)
    for mutations, expected in (((), cmd_high), ((Mutation.RECOVERY_IGNORES_BALLOT,), cmd_low)):
        r = Replica(NodeId(1), five, random.Random(0), _opts(*mutations))
        r.campaign()
        r.advance(r.ready())
        b = r.ballot
        r.step(
            Promise(
                NodeId(2),
                NodeId(1),
                b,
                (LogEntry(Slot(1), Ballot(0, NodeId(2)), cmd_low),),
                Slot(0),
                0,
            )
        )
        r.step(
            Promise(
                NodeId(3),
                NodeId(1),
                b,
                (LogEntry(Slot(1), Ballot(0, NodeId(3)), cmd_high),),
                Slot(0),
                0,
            )
        )
        sent = [m for m in r.ready().send_now if isinstance(m, Accept)]
        assert sent[0].entries == ((Slot(1), expected),)
