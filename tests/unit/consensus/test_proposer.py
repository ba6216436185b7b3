"""The proposer: phase 1 over a Q1 quorum, recovery, pipelined and batched phase 2, learning
the commit point, acknowledgements and catch-up."""

from __future__ import annotations

import random

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import (
    Accept,
    Accepted,
    AcceptRecord,
    InstallSnapshot,
    Nack,
    Promise,
)
from keeldb.consensus.replica import Options, Replica, Role
from keeldb.consensus.types import (
    NOOP,
    Ballot,
    Config,
    Entry,
    EntryKind,
    LogEntry,
    NodeId,
    Slot,
)

STANDARD = Config.standard([1, 2, 3])
AURORA = Config.aurora([1, 2, 3, 4, 5, 6])


def _cmd(text: str) -> Entry:
    return Entry(EntryKind.COMMAND, text.encode())


def test_candidate_needs_q1_promises_to_lead() -> None:
    h = Harness(AURORA)
    h.campaign(1)
    h.deliver(1, 2, ("Prepare",))
    h.deliver(2, 1)
    assert h.replica(1).role is Role.CANDIDATE  # itself and 2: two of Q1 = 3
    h.deliver(1, 3, ("Prepare",))
    h.deliver(3, 1)
    assert h.replica(1).is_leader


def test_leader_chooses_a_value_only_with_q2_accepts() -> None:
    h = Harness(AURORA)
    h.elect(1)
    h.propose(1, b"a")
    for peer in (2, 3):
        h.deliver(1, peer, ("Accept",))
        h.deliver(peer, 1, ("Accepted",))
    assert h.replica(1).commit_slot == 0  # three votes of Q2 = 4
    h.deliver(1, 4, ("Accept",))
    h.deliver(4, 1, ("Accepted",))
    assert h.replica(1).commit_slot == 1


def test_leader_counts_its_own_vote_only_after_it_is_durable() -> None:
    r = Replica(NodeId(1), Config.single(1), random.Random(1))
    assert r.campaign()
    r.advance(r.ready())  # the promise is durable: leader
    assert r.is_leader
    pid = r.propose(b"a")
    assert pid is not None
    rd = r.ready()
    assert (
        AcceptRecord(LogEntry(Slot(1), r.ballot, Entry(EntryKind.COMMAND, b"a", NodeId(1), pid)))
        in rd.persist
    )
    assert r.commit_slot == 0  # not before advance()
    r.advance(rd)
    assert r.commit_slot == 1
    assert r.ready().acknowledged == [pid]


def test_one_prepare_round_serves_every_later_slot() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.take_events()
    for i in range(20):
        h.propose(1, f"v{i}".encode())
    h.deliver_all()
    assert not any("Prepare" in e for e in h.take_events())
    assert h.replica(1).commit_slot == 20


def _leader_with_promises(promises: list[Promise]) -> Replica:
    r = Replica(NodeId(1), Config(AURORA.members, q1=3, q2=4), random.Random(1))
    r.campaign()
    r.advance(r.ready())
    for p in promises:
        r.step(p)
    return r


def _proposed(r: Replica) -> dict[int, Entry]:
    rd = r.ready()
    out: dict[int, Entry] = {}
    for msg in rd.send_now:
        if isinstance(msg, Accept) and msg.dst == 2:
            out.update({s: e for s, e in msg.entries})
    return out


def test_recovery_adopts_the_highest_ballot_value_of_each_slot() -> None:
    b = Ballot(1, NodeId(1))
    low, high = Ballot(0, NodeId(5)), Ballot(0, NodeId(6))
    r = _leader_with_promises(
        [
            Promise(NodeId(2), NodeId(1), b, (LogEntry(Slot(1), low, _cmd("x")),), Slot(0), 0),
            Promise(NodeId(3), NodeId(1), b, (LogEntry(Slot(1), high, _cmd("y")),), Slot(0), 0),
        ]
    )
    assert r.is_leader
    assert _proposed(r) == {1: _cmd("y")}


def test_recovery_prefers_a_value_known_chosen() -> None:
    b = Ballot(1, NodeId(1))
    r = _leader_with_promises(
        [
            # 2 learned slot 1 chosen ("x"), its vote stamped with an old ballot.
            Promise(
                NodeId(2),
                NodeId(1),
                b,
                (LogEntry(Slot(1), Ballot(0, NodeId(2)), _cmd("x")),),
                Slot(1),
                0,
            ),
            Promise(
                NodeId(3),
                NodeId(1),
                b,
                (LogEntry(Slot(1), Ballot(0, NodeId(6)), _cmd("y")),),
                Slot(0),
                0,
            ),
        ]
    )
    assert _proposed(r) == {1: _cmd("x")}


def test_recovery_fills_gaps_with_noops() -> None:
    b = Ballot(1, NodeId(1))
    old = Ballot(0, NodeId(5))
    r = _leader_with_promises(
        [
            Promise(NodeId(2), NodeId(1), b, (LogEntry(Slot(3), old, _cmd("c")),), Slot(0), 0),
            Promise(NodeId(3), NodeId(1), b, (), Slot(0), 0),
        ]
    )
    assert _proposed(r) == {1: NOOP, 2: NOOP, 3: _cmd("c")}


def test_pipeline_never_exceeds_its_maximum() -> None:
    opts = Options(pipeline_slots_max=8, reconfig_window_slots=8, batch_entries_max=4)
    h = Harness(STANDARD, options=opts)
    h.elect(1)
    for i in range(30):
        h.propose(1, f"v{i}".encode())
    accepts = [m for m in h.net if isinstance(m, Accept) and m.dst == 2]
    slots = [s for m in accepts for s, _ in m.entries]
    assert slots == list(range(1, 9))
    assert all(len(m.entries) <= 4 for m in accepts)
    h.deliver_all()
    h.run(2)
    assert h.replica(1).commit_slot == 30


def test_commands_proposed_together_travel_in_one_accept_batch() -> None:
    h = Harness(STANDARD, options=Options(batch_entries_max=64))
    h.elect(1)
    for i in range(64):
        h.propose(1, f"v{i}".encode(), process=False)
    h.process_all()
    accepts = [m for m in h.net if isinstance(m, Accept) and m.dst == 2]
    assert len(accepts) == 1
    assert len(accepts[0].entries) == 64


def test_propose_on_a_follower_returns_none_with_a_leader_hint() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    assert h.replica(2).propose(b"x") is None
    assert h.replica(2).leader_hint == 1


def test_follower_learns_the_commit_point_from_accept_and_heartbeat() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.propose(1, b"a")
    h.deliver_all()
    assert h.replica(2).commit_slot == 0
    h.propose(1, b"b")
    h.deliver(1, 2, ("Accept",))
    assert h.replica(2).commit_slot == 1  # from the next Accept
    h.deliver_all()
    h.tick([1], 2)
    h.deliver_all()
    assert h.replica(2).commit_slot == 2  # from the heartbeat


def test_follower_does_not_take_an_older_ballots_vote_as_chosen() -> None:
    r = Replica(NodeId(2), STANDARD, random.Random(1))
    old, new = Ballot(1, NodeId(1)), Ballot(2, NodeId(3))
    r.step(Accept(NodeId(1), NodeId(2), old, ((Slot(1), _cmd("x")),), Slot(0), 0))
    r.advance(r.ready())
    from keeldb.consensus.messages import Heartbeat

    r.step(Heartbeat(NodeId(3), NodeId(2), new, Slot(1), 0))
    assert r.commit_slot == 0  # slot 1 may hold another value at ballot 2.3


def test_apply_hands_out_every_slot_once_in_order() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    for i in range(10):
        h.propose(1, f"v{i}".encode())
        if i % 3 == 0:
            h.deliver_all()
    h.deliver_all()
    h.run(2)
    for node in h.nodes.values():
        assert node.state == [f"v{i}".encode() for i in range(10)]


def test_lagging_follower_catches_up_from_the_log() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.partition([1, 2], [3])
    for i in range(5):
        h.propose(1, f"v{i}".encode())
    h.run(2)
    h.heal()
    h.run(4)
    assert h.nodes[NodeId(3)].state == [f"v{i}".encode() for i in range(5)]


def test_compacted_log_falls_back_to_snapshot_install_which_truncates_the_log() -> None:
    h = Harness(STANDARD, options=Options(log_entries_retained=0))
    h.elect(1)
    h.partition([1, 2], [3])
    for i in range(5):
        h.propose(1, f"v{i}".encode())
    h.run(2)
    assert h.snapshot(1) == 5
    h.heal()
    h.take_events()
    h.run(4)
    assert any("InstallSnapshot" in e for e in h.take_events())
    assert h.nodes[NodeId(3)].state == [f"v{i}".encode() for i in range(5)]
    assert h.replica(3).entry_at(Slot(1)) is None


def test_catch_up_needs_no_snapshot_when_the_log_still_has_the_slots() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.partition([1, 2], [3])
    h.propose(1, b"a")
    h.run(2)
    h.heal()
    h.take_events()
    h.run(3)
    events = h.take_events()
    assert not any(isinstance(m, InstallSnapshot) for m in h.net)
    assert any("CatchUp " in e for e in events)


def test_proposals_queued_on_a_leader_that_steps_down_are_reported_dropped() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.partition([1], [2, 3])
    h.campaign(2)
    h.deliver_all()
    assert h.replica(2).is_leader
    pid = h.propose(2, b"queued")  # 2 still waits out 1's lease: no slot yet
    assert pid is not None
    h.heal()
    h.campaign(3)
    h.deliver_all()
    assert not h.replica(2).is_leader
    assert h.nodes[NodeId(2)].dropped == [pid]


def test_a_proposal_whose_slot_went_to_another_value_is_reported_dropped() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    pid = h.propose(1, b"lost")
    assert pid is not None
    h.drop()  # nobody else hears of it
    h.partition([1], [2, 3])
    h.campaign(2)
    h.deliver_all()
    h.tick([2], 12)
    h.propose(2, b"winner")
    h.run(3)
    h.heal()
    h.run(4)
    assert h.chosen[Slot(1)].command == b"winner"
    assert pid in h.nodes[NodeId(1)].dropped
    assert pid not in h.nodes[NodeId(1)].acknowledged


def test_a_group_of_one_elects_itself_and_commits_alone() -> None:
    h = Harness(Config.single(1))
    assert h.timeout(1)
    h.deliver_all()
    assert h.replica(1).is_leader
    h.propose(1, b"a")
    h.process_all()
    assert h.nodes[NodeId(1)].state == [b"a"]
    assert h.replica(1).read_lease()


def test_a_late_promise_does_not_suspend_a_serving_leader() -> None:
    five = Config(AURORA.members[:5], q1=3, q2=3)
    h = Harness(five)
    h.campaign(1)
    h.drop(1, 5)
    h.deliver_all()
    assert h.replica(1).read_lease()
    h.take_events()
    for _ in range(4):  # the Prepare to 5 is sent again; its Promise owes a lease
        h.tick()
        h.deliver_all()
        assert h.replica(1).read_lease()
    assert any(e.startswith("5->1 Promise") and "lease_left=0" not in e for e in h.take_events())


def test_a_lagging_candidate_installs_the_snapshot_a_promise_carries() -> None:
    h = Harness(STANDARD, options=Options(log_entries_retained=0))
    h.elect(1)
    h.partition([1, 2], [3])
    for i in range(5):
        h.propose(1, f"v{i}".encode())
    h.run(2)
    h.snapshot(2)
    h.crash(1)
    h.heal()
    h.take_events()
    h.campaign(3)
    h.deliver_all()
    assert "3: install snapshot 5" in h.take_events()
    assert h.replica(3).is_leader
    assert h.nodes[NodeId(3)].state == [f"v{i}".encode() for i in range(5)]


def test_a_prepare_leaves_only_after_the_candidates_promise_is_durable() -> None:
    r = Replica(NodeId(1), STANDARD, random.Random(1))
    r.campaign()
    rd = r.ready()
    assert {type(m).__name__ for m in rd.send_after_persist} == {"Prepare"}
    assert rd.send_now == []


def _standard_leader() -> Replica:
    r = Replica(NodeId(1), STANDARD, random.Random(1))
    r.campaign()
    r.advance(r.ready())
    for peer in (2, 3):
        r.step(Promise(NodeId(peer), NodeId(1), r.ballot, (), Slot(0), 0))
    assert r.is_leader
    r.advance(r.ready())  # the no-op filling the recovered range, if any
    return r


def test_accepts_leave_before_the_leaders_own_record_is_durable() -> None:
    r = _standard_leader()
    r.propose(b"a")
    rd = r.ready()
    accepts = [m for m in rd.send_now if isinstance(m, Accept)]
    assert {m.dst for m in accepts} == {2, 3}
    assert [type(x).__name__ for x in rd.persist] == ["AcceptRecord"]
    assert not any(isinstance(m, Accept) for m in rd.send_after_persist)


def test_the_leader_counts_its_own_vote_only_once_its_record_is_durable() -> None:
    r = _standard_leader()
    r.propose(b"a")
    rd = r.ready()
    slot = rd.persist[0].entry.slot
    commit_before = r.commit_slot
    # A follower's vote arrives while the leader's own fsync is still running: with Q2 2,
    # one durable vote is not enough, so nothing is chosen yet.
    r.step(Accepted(NodeId(2), NodeId(1), r.ballot, (slot,), commit_before, r.now))
    assert r.commit_slot == commit_before
    r.advance(rd)  # the leader's record is on disk now: its vote counts
    assert r.commit_slot == slot


def test_a_reelected_leader_acknowledges_only_proposals_of_its_new_leadership() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    old = h.propose(1, b"old")
    assert old is not None
    h.drop()  # its slot is proposed but nobody votes for it yet
    r = h.replica(1)
    r.step(Nack(NodeId(2), NodeId(1), r.ballot, Ballot(r.ballot.round + 1, NodeId(2))))
    assert not r.is_leader
    h.campaign(1)  # a new leadership of the same replica recovers the slot ...
    h.deliver_all()
    assert r.is_leader
    new = h.propose(1, b"new")
    h.run(12)  # the new leadership first waits out the leases granted to the old one
    assert h.chosen[Slot(1)].command == b"old"  # ... and chooses it again,
    node = h.nodes[NodeId(1)]
    assert node.acknowledged == [new]  # but its outcome was unknown: the client retries
    assert old not in node.dropped


def _catch_ups(h: Harness) -> list[str]:
    return [e for e in h.take_events() if " CatchUp " in e]


def test_a_follower_holding_every_slot_lags_only_in_the_commit_point_and_gets_no_catch_up() -> (
    None
):
    h = Harness(STANDARD)
    h.elect(1)
    h.propose(1, b"a")
    h.deliver_all()
    h.tick(n=h.replica(1)._opts.heartbeat_ticks)
    h.deliver(kinds=("Heartbeat",))  # the acks carry the commit point as of now...
    h.propose(1, b"b")  # ...and a write is chosen before they arrive
    h.deliver(kinds=("Accept",))
    h.deliver(kinds=("Accepted",))
    assert h.replica(1).commit_slot > h.replica(2).commit_slot
    h.take_events()
    h.deliver(kinds=("HeartbeatAck",))
    h.deliver_all()
    assert not _catch_ups(h)
    h.run(h.replica(1)._opts.heartbeat_ticks)  # the next heartbeat carries the commit point
    for node in (2, 3):
        assert h.replica(node).commit_slot == h.replica(1).commit_slot
        assert h.nodes[NodeId(node)].state == [b"a", b"b"]


def test_a_follower_that_missed_a_chosen_slot_is_caught_up() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.propose(1, b"a")
    h.deliver_all()
    h.propose(1, b"b")
    h.drop(1, 3, ("Accept",))  # 3 never sees "b"; 1 and 2 choose it
    h.deliver_all()
    h.take_events()
    h.propose(1, b"c")
    h.deliver(kinds=("Accept",))  # 3 acknowledges "c" but cannot learn the commit point
    assert h.replica(3).commit_slot < h.replica(2).commit_slot  # past the gap
    h.run(h.replica(1)._opts.heartbeat_ticks)
    assert _catch_ups(h)
    assert h.nodes[NodeId(3)].state == [b"a", b"b", b"c"]

