"""Log-only members: acceptors that keep the log but no state, and never lead."""

from __future__ import annotations

from keeldb.consensus.harness import Harness
from keeldb.consensus.replica import Role
from keeldb.consensus.types import Config, Member, NodeId

CONFIG = Config(
    (Member(NodeId(1), "a"), Member(NodeId(2), "b"), Member(NodeId(3), "c", log_only=True)),
    q1=2,
    q2=2,
)


def test_log_only_member_never_campaigns() -> None:
    h = Harness(CONFIG)
    assert not h.timeout(3)
    assert not h.replica(3).campaign()
    assert h.replica(3).role is Role.FOLLOWER


def test_log_only_member_votes_in_phase_two_and_keeps_the_log_but_applies_nothing() -> None:
    h = Harness(CONFIG)
    h.elect(1)
    h.partition([1, 3], [2])
    h.propose(1, b"a")
    h.run(2)
    assert h.replica(1).commit_slot == 1  # chosen by 1 and the log-only 3
    assert h.replica(3).entry_at(1) is not None  # type: ignore[arg-type]
    assert h.nodes[NodeId(3)].state == []
    assert h.replica(3).applied_slot == 1


def test_log_only_member_lets_the_group_recover_chosen_values() -> None:
    h = Harness(CONFIG)
    h.elect(1)
    h.partition([1, 3], [2])
    h.propose(1, b"a")
    h.run(2)
    h.crash(1)
    h.heal()
    h.campaign(2)
    h.deliver_all()
    assert h.replica(2).is_leader
    assert h.nodes[NodeId(2)].state == [b"a"]


def test_log_only_member_is_never_asked_to_snapshot() -> None:
    h = Harness(CONFIG)
    h.elect(1)
    h.propose(1, b"a")
    h.run(2)
    r = h.replica(3)
    assert r.log_only
    assert not r.ready().snapshot_suggested
