"""Log-only members: acceptors that keep the log but no state, and never lead."""

from __future__ import annotations

from keeldb.consensus.harness import Harness
from keeldb.consensus.replica import Options, Role
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


WINDOW = Options(pipeline_slots_max=4, reconfig_window_slots=4, log_entries_retained=0)
FULL_3 = Config((Member(NodeId(1), "a"), Member(NodeId(2), "b"), Member(NodeId(3), "c")), 2, 2)


def _applied_by(h: Harness, node: int) -> list[str]:
    return [e for e in h.events if e.startswith(f"{node}: apply")]


def test_a_removed_log_only_member_keeps_applying_nothing() -> None:
    # The harness fails any apply that does not follow the previous one.
    h = Harness(CONFIG, options=WINDOW, extra_nodes=(4,))
    h.elect(1)
    h.propose(1, b"a")
    h.run(2)
    assert h.replica(1).propose_reconfig(Config.standard([1, 2, 4])) is not None
    for i in range(6):
        h.propose(1, f"v{i}".encode())
        h.run(1)
    h.run(6)
    r = h.replica(3)
    assert not r.latest_config.is_member(NodeId(3))
    removed_at = r.configs[-1][0] - WINDOW.reconfig_window_slots
    assert r.commit_slot > removed_at  # it learned slots chosen after its removal
    assert r.log_only
    assert _applied_by(h, 3) == []
    assert h.nodes[NodeId(3)].state == []
    assert not r.campaign()
    h.crash(3)
    h.restart(3)
    assert h.replica(3).log_only
    assert h.nodes[NodeId(3)].state == []


def test_a_log_only_member_made_full_applies_only_after_installing_a_snapshot() -> None:
    h = Harness(CONFIG, options=WINDOW)
    h.elect(1)
    h.propose(1, b"a")
    h.run(2)
    assert h.replica(1).propose_reconfig(FULL_3) is not None
    h.run(6)
    r3 = h.replica(3)
    assert r3.config == r3.latest_config and not r3.config.member(NodeId(3)).log_only  # type: ignore[union-attr]
    assert r3.log_only  # no state yet: it applies nothing and may not lead
    assert not r3.campaign()
    assert _applied_by(h, 3) == []
    h.partition([3], [1, 2])
    h.propose(1, b"b")
    h.run(2)
    h.snapshot(1)  # compacts the log: 3 can only catch up from the snapshot
    h.heal()
    h.propose(1, b"c")
    h.run(6)
    r3 = h.replica(3)
    assert not r3.log_only
    assert h.nodes[NodeId(3)].state == [b"a", b"b", b"c"]
    assert r3.applied_slot == h.replica(1).applied_slot


def test_a_member_made_log_only_applies_up_to_the_slot_its_new_configuration_governs() -> None:
    h = Harness(FULL_3, options=WINDOW)
    h.elect(1)
    h.propose(1, b"a")
    h.run(2)
    demoted = Config(
        (Member(NodeId(1), "a"), Member(NodeId(2), "b"), Member(NodeId(3), "c", log_only=True)),
        2,
        2,
    )
    assert h.replica(1).propose_reconfig(demoted) is not None
    h.run(2)
    first = h.replica(3).configs[-1][0]
    assert not h.replica(3).log_only  # until the new configuration governs
    for i in range(4):
        h.propose(1, f"v{i}".encode())
        h.run(2)
    h.run(4)
    r3 = h.replica(3)
    assert r3.commit_slot >= first
    assert r3.log_only
    assert h.nodes[NodeId(3)].state_slot == first - 1
