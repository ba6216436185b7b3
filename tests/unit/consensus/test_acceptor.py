"""The acceptor's rules (Paxos Made Simple, P1a and phase 2b) and what it persists first."""

from __future__ import annotations

import random

from keeldb.consensus.messages import (
    Accept,
    Accepted,
    AcceptRecord,
    Heartbeat,
    HeartbeatAck,
    Nack,
    Prepare,
    Promise,
    PromiseRecord,
)
from keeldb.consensus.replica import DurableState, Options, Replica
from keeldb.consensus.types import (
    Ballot,
    Config,
    Entry,
    EntryKind,
    LogEntry,
    NodeId,
    Slot,
)

CONFIG = Config.standard([1, 2, 3])
B1 = Ballot(1, NodeId(1))
B2 = Ballot(2, NodeId(3))
ME = NodeId(2)


def _cmd(text: str) -> Entry:
    return Entry(EntryKind.COMMAND, text.encode())


def _acceptor(durable: DurableState | None = None, options: Options | None = None) -> Replica:
    return Replica(ME, CONFIG, random.Random(0), options, durable)


def test_acceptor_promises_a_higher_ballot_and_persists_it_before_replying() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(1), ME, B1, Slot(1)))
    rd = r.ready()
    assert PromiseRecord(B1) in rd.persist
    assert [type(x) for x in rd.send_after_persist] == [Promise]
    assert rd.send_now == []
    assert r.ballot == B1


def test_acceptor_rejects_prepare_with_stale_ballot() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(3), ME, B2, Slot(1)))
    r.advance(r.ready())
    r.step(Prepare(NodeId(1), ME, B1, Slot(1)))
    rd = r.ready()
    assert rd.send_now == [Nack(ME, NodeId(1), B1, B2)]
    assert rd.persist == []
    assert r.ballot == B2


def test_acceptor_rejects_accept_with_stale_ballot() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(3), ME, B2, Slot(1)))
    r.advance(r.ready())
    r.step(Accept(NodeId(1), ME, B1, ((Slot(1), _cmd("x")),), Slot(0), 0))
    rd = r.ready()
    assert rd.send_now == [Nack(ME, NodeId(1), B1, B2)]
    assert r.entry_at(Slot(1)) is None


def test_acceptor_persists_its_vote_before_acknowledging_it() -> None:
    r = _acceptor()
    r.step(Accept(NodeId(1), ME, B1, ((Slot(1), _cmd("x")),), Slot(0), 4))
    rd = r.ready()
    assert AcceptRecord(LogEntry(Slot(1), B1, _cmd("x"))) in rd.persist
    assert rd.send_after_persist == [Accepted(ME, NodeId(1), B1, (Slot(1),), Slot(0), 4)]
    assert not any(isinstance(x, Accepted) for x in rd.send_now)


def test_accept_at_a_higher_ballot_raises_the_promise_durably() -> None:
    r = _acceptor()
    r.step(Accept(NodeId(3), ME, B2, ((Slot(1), _cmd("x")),), Slot(0), 0))
    rd = r.ready()
    assert r.ballot == B2
    assert DurableState.replay(rd.persist).promised == B2


def test_a_higher_ballot_vote_replaces_a_lower_one_in_the_same_slot() -> None:
    r = _acceptor()
    r.step(Accept(NodeId(1), ME, B1, ((Slot(1), _cmd("x")),), Slot(0), 0))
    r.step(Accept(NodeId(3), ME, B2, ((Slot(1), _cmd("y")),), Slot(0), 0))
    le = r.entry_at(Slot(1))
    assert le == LogEntry(Slot(1), B2, _cmd("y"))


def test_promise_reports_votes_from_the_requested_slot_on() -> None:
    r = _acceptor()
    entries = tuple((Slot(s), _cmd(f"v{s}")) for s in (1, 2, 3))
    r.step(Accept(NodeId(1), ME, B1, entries, Slot(0), 0))
    r.advance(r.ready())
    r.step(Prepare(NodeId(3), ME, B2, Slot(2)))
    promise = r.ready().send_after_persist[0]
    assert isinstance(promise, Promise)
    assert [e.slot for e in promise.entries] == [2, 3]
    assert all(e.ballot == B1 for e in promise.entries)


def test_promise_carries_the_remaining_lease_granted_to_the_old_leader() -> None:
    opts = Options(lease_ticks=8)
    r = _acceptor(options=opts)
    r.step(Heartbeat(NodeId(1), ME, B1, Slot(0), 0))
    r.advance(r.ready())
    r.tick()
    r.tick()
    r.tick()
    r.step(Prepare(NodeId(3), ME, B2, Slot(1)))
    promise = r.ready().send_after_persist[0]
    assert isinstance(promise, Promise)
    assert promise.lease_remaining_ticks == 5


def test_fresh_acceptor_owes_no_lease_wait() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(3), ME, B2, Slot(1)))
    promise = r.ready().send_after_persist[0]
    assert isinstance(promise, Promise)
    assert promise.lease_remaining_ticks == 0


def test_restarted_acceptor_remembers_its_promise() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(3), ME, B2, Slot(1)))
    disk = list(r.ready().persist)
    again = _acceptor(DurableState.replay(disk))
    again.step(Accept(NodeId(1), ME, B1, ((Slot(1), _cmd("x")),), Slot(0), 0))
    assert again.ready().send_now == [Nack(ME, NodeId(1), B1, B2)]


def test_restarted_acceptor_assumes_it_granted_a_full_lease_it_cannot_remember() -> None:
    opts = Options(lease_ticks=8)
    again = _acceptor(DurableState.replay([]), options=opts)
    again.tick()
    again.step(Prepare(NodeId(3), ME, B2, Slot(1)))
    promise = next(x for x in again.ready().send_after_persist if isinstance(x, Promise))
    assert promise.lease_remaining_ticks == 7


def test_heartbeat_of_the_promised_ballot_is_acknowledged_at_once() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(1), ME, B1, Slot(1)))
    r.advance(r.ready())
    r.step(Heartbeat(NodeId(1), ME, B1, Slot(0), 6))
    rd = r.ready()
    assert rd.send_now == [HeartbeatAck(ME, NodeId(1), B1, Slot(0), 6)]


def test_acceptor_ignores_messages_for_another_node() -> None:
    r = _acceptor()
    r.step(Prepare(NodeId(1), NodeId(3), B1, Slot(1)))
    assert r.ready().is_empty()
