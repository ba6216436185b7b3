"""A pipelining driver advances a Ready before its records are durable
(`advance(rd, durable=False)`) and reports them durable later (`persisted(rd)`): the
replica's own votes count only then, Readys become durable in order, and what an unsynced
Ready's state decided waits for the disk while the leader's Accepts still leave at once."""

from __future__ import annotations

import random

import pytest

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import Accept, Accepted, Heartbeat, HeartbeatAck
from keeldb.consensus.replica import Mutation, Options, Replica
from keeldb.consensus.types import Ballot, Config, Entry, EntryKind, NodeId, Slot

SOLO = Config.single(1)
STANDARD = Config.standard([1, 2, 3])


def _leader_of_one(*mutations: Mutation) -> Replica:
    r = Replica(NodeId(1), SOLO, random.Random(0), Options(mutations=frozenset(mutations)))
    r.campaign()
    while r.has_ready():
        r.advance(r.ready())
    assert r.is_leader
    return r


def _accept(slot: int, commit: int = 0) -> Accept:
    return Accept(
        NodeId(1),
        NodeId(2),
        Ballot(1, NodeId(1)),
        ((Slot(slot), Entry(EntryKind.NOOP)),),
        Slot(commit),
        0,
    )


def test_a_leader_counts_its_own_vote_only_when_the_ready_is_persisted() -> None:
    r = _leader_of_one()
    start = r.commit_slot
    r.propose(b"x")
    rd = r.ready()
    assert rd.persist and rd.self_accepted
    r.advance(rd, durable=False)
    assert r.commit_slot == start  # its record is not on disk: not chosen
    assert r.undurable_count == 1
    r.persisted(rd)
    assert r.commit_slot == start + 1
    assert r.undurable_count == 0


def test_the_broken_variant_counts_the_vote_at_advance() -> None:
    r = _leader_of_one(Mutation.PIPELINED_VOTE_AT_ADVANCE)
    start = r.commit_slot
    r.propose(b"x")
    r.advance(r.ready(), durable=False)
    assert r.commit_slot == start + 1  # chosen on no disk at all


def test_readys_become_durable_in_the_order_handed_out() -> None:
    r = _leader_of_one()
    r.propose(b"a")
    first = r.ready()
    r.advance(first, durable=False)
    r.propose(b"b")
    second = r.ready()
    r.advance(second, durable=False)
    with pytest.raises(AssertionError):
        r.persisted(second)
    r.persisted(first)
    r.persisted(second)
    assert r.undurable_count == 0


def test_a_durable_advance_waits_for_the_earlier_undurable_readys() -> None:
    r = _leader_of_one()
    r.propose(b"a")
    r.advance(r.ready(), durable=False)
    r.propose(b"b")
    with pytest.raises(AssertionError):
        r.advance(r.ready())


def test_a_follower_holds_its_acknowledgements_while_an_earlier_ready_is_unsynced() -> None:
    r = Replica(NodeId(2), STANDARD, random.Random(0), Options())
    r.step(_accept(1))
    first = r.ready()
    assert any(isinstance(m, Accepted) for m in first.send_after_persist)
    r.advance(first, durable=False)
    # A heartbeat at the same ballot would be acknowledged at once were every earlier
    # record durable; the promise it rests on is still on its way to disk.
    r.step(Heartbeat(NodeId(1), NodeId(2), Ballot(1, NodeId(1)), Slot(0), 1))
    second = r.ready()
    assert not any(isinstance(m, HeartbeatAck) for m in second.send_now)
    assert any(isinstance(m, HeartbeatAck) for m in second.send_after_persist)


def test_a_pipelined_leader_still_sends_its_accepts_at_once() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    leader = h.replica(1)
    leader.propose(b"a")
    first = leader.ready()
    leader.advance(first, durable=False)
    leader.propose(b"b")
    leader.tick()
    leader.tick()  # a heartbeat is due too
    second = leader.ready()
    accepts = [m for m in second.send_now if isinstance(m, Accept)]
    assert {m.dst for m in accepts} == {2, 3}
    assert any(entry.command == b"b" for m in accepts for _, entry in m.entries)
    assert all(isinstance(m, Accept) for m in second.send_now)
