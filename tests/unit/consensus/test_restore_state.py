"""A log replica made a full member gets its state from another member while caught up
(`Replica.restore_state`), for every profile."""

from __future__ import annotations

import pytest

from keeldb.consensus.harness import Harness
from keeldb.consensus.replica import Options
from keeldb.consensus.types import Config, Member, NodeId, Slot

WINDOW = Options(pipeline_slots_max=4, reconfig_window_slots=4, log_entries_retained=0)


def _profile(name: str) -> tuple[Config, int]:
    """The profile's group with one more node (the last) joining later."""
    if name == "standard":
        return Config.standard([1, 2, 3]), 4
    return Config.aurora([1, 2, 3, 4, 5, 6]), 7


def _replaced(config: Config, old: int, new: int, *, log_only: bool) -> Config:
    gone = config.member(NodeId(old))
    assert gone is not None
    members = [m for m in config.members if m.node_id != old]
    members.append(Member(NodeId(new), gone.zone, log_only=log_only))
    return Config(tuple(members), config.q1, config.q2)


def _reconfigure(h: Harness, leader: int, config: Config) -> None:
    assert h.replica(leader).propose_reconfig(config) is not None
    for i in range(6):
        h.propose(leader, f"pad-{config.epoch}-{i}".encode())
        h.run(2)
    h.run(4)
    for node_id, node in h.nodes.items():
        if node.replica is not None and config.is_member(node_id):
            assert node.replica.config.node_ids == config.node_ids


def _donor_state(h: Harness, node: int) -> tuple[Slot, bytes]:
    state = h.nodes[NodeId(node)]
    return Slot(state.state_slot), b"\n".join(state.state)


def _promote(profile: str) -> tuple[Harness, int, int]:
    """Replace member 3 (down) by a new node, first log-only, then full."""
    config, new = _profile(profile)
    h = Harness(config, options=WINDOW, extra_nodes=(new,))
    h.elect(1)
    for i in range(5):
        h.propose(1, f"a{i}".encode())
        h.run(2)
    h.crash(3)
    as_log = _replaced(config, 3, new, log_only=True)
    _reconfigure(h, 1, as_log)
    assert h.replica(new).log_only
    h.snapshot(1)  # a log replica joining late catches up from the leader's snapshot
    for i in range(3):
        h.propose(1, f"b{i}".encode())
        h.run(2)
    _reconfigure(h, 1, _replaced(config, 3, new, log_only=False))
    return h, new, 1


@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_a_promoted_log_replica_given_a_members_state_applies_the_rest_and_may_lead(
    profile: str,
) -> None:
    h, new, leader = _promote(profile)
    r = h.replica(new)
    assert r.log_only  # promoted, but without state it still applies nothing
    assert not r.campaign()
    slot, state = _donor_state(h, 2)
    assert r.restore_state(slot, state)
    h.process_all()
    assert not h.replica(new).log_only
    for i in range(3):
        h.propose(leader, f"c{i}".encode())
        h.run(2)
    h.run(4)
    assert h.nodes[NodeId(new)].state == h.nodes[NodeId(leader)].state
    h.crash(leader)
    h.campaign(new)
    h.deliver_all()
    h.run(20)
    assert h.replica(new).is_leader
    h.propose(new, b"after")
    h.run(4)
    assert h.nodes[NodeId(new)].state[-1] == b"after"
    assert h.nodes[NodeId(2)].state == h.nodes[NodeId(new)].state


@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_a_restored_log_replica_keeps_its_state_across_a_restart(profile: str) -> None:
    h, new, leader = _promote(profile)
    slot, state = _donor_state(h, 2)
    assert h.replica(new).restore_state(slot, state)
    h.process_all()
    h.crash(new)
    h.restart(new)
    h.process_all()
    assert not h.replica(new).log_only
    h.propose(leader, b"later")
    h.run(6)
    assert h.nodes[NodeId(new)].state == h.nodes[NodeId(leader)].state


def test_restore_state_is_refused_before_the_promotion_governs() -> None:
    config, new = _profile("standard")
    h = Harness(config, options=WINDOW, extra_nodes=(new,))
    h.elect(1)
    h.propose(1, b"a")
    h.run(2)
    h.crash(3)
    _reconfigure(h, 1, _replaced(config, 3, new, log_only=True))
    slot, state = _donor_state(h, 2)
    r = h.replica(new)
    assert not r.restore_state(slot, state)  # still a log-only member
    assert r.log_only
    assert not r.restore_state(Slot(r.commit_slot + 5), state)  # not known chosen here


def test_restore_state_is_refused_by_a_replica_that_holds_state() -> None:
    h = Harness(Config.standard([1, 2, 3]), options=WINDOW)
    h.elect(1)
    h.propose(1, b"a")
    h.run(2)
    slot, state = _donor_state(h, 1)
    assert not h.replica(2).restore_state(slot, state)


def test_restore_state_is_refused_when_the_log_lacks_entries_after_the_state() -> None:
    config, new = _profile("standard")
    h = Harness(config, options=WINDOW, extra_nodes=(new,))
    h.elect(1)
    for i in range(5):
        h.propose(1, f"a{i}".encode())
        h.run(2)
    h.crash(3)
    h.snapshot(1)  # compacted before the join: the log replica starts from a snapshot
    _reconfigure(h, 1, _replaced(config, 3, new, log_only=True))
    _reconfigure(h, 1, _replaced(config, 3, new, log_only=False))
    r = h.replica(new)
    first_kept = min(r.durable_state().log)
    assert first_kept > 3
    # A state older than the start of the log replica's log leaves a gap.
    assert not r.restore_state(Slot(first_kept - 2), b"a0\na1")
    assert r.log_only
    slot, state = _donor_state(h, 2)
    assert r.restore_state(slot, state)
