"""A log replica made a full member gets its state from another member while caught up
(`Replica.restore_state`), for every profile."""

from __future__ import annotations

import random

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
    # Writes go on while the state travels: the rebuilt member applies them from its log.
    for i in range(2):
        h.propose(leader, f"during{i}".encode())
        h.run(2)
    assert r.commit_slot > slot
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


def _settle(h: Harness, leader: int, config: Config) -> None:
    """Run until every live member of `config` has it governing its next slot."""
    for _ in range(40):
        live = [
            n for n, node in h.nodes.items() if node.replica is not None and config.is_member(n)
        ]
        if all(h.replica(n).config.node_ids == config.node_ids for n in live):
            return
        h.propose(leader, b"pad")
        h.run(2)
    raise AssertionError(f"{config} never took effect")


@pytest.mark.parametrize("profile", ["standard", "aurora"])
@pytest.mark.parametrize("seed", range(8))
def test_a_promoted_log_replica_rebuilt_under_message_loss_agrees_with_the_group(
    profile: str, seed: int
) -> None:
    """Random losses while a member is replaced by a log replica, promoted and rebuilt from
    a donor's state; the harness fails any two replicas applying different values in a
    slot, and in the end the rebuilt member holds exactly the leader's state."""
    rng = random.Random(seed)
    config, new = _profile(profile)
    h = Harness(config, options=WINDOW, seed=seed, extra_nodes=(new,))
    h.elect(1)

    def traffic(count: int) -> None:
        for i in range(count):
            h.propose(1, f"v{seed}-{rng.random():.6f}-{i}".encode())
            if rng.random() < 0.3:
                h.drop(kinds=(rng.choice(["Accept", "Accepted", "Heartbeat", "CatchUp"]),))
            h.run(1)

    traffic(6)
    h.crash(3)
    as_log = _replaced(config, 3, new, log_only=True)
    assert h.replica(1).propose_reconfig(as_log) is not None
    traffic(6)
    _settle(h, 1, as_log)
    if rng.random() < 0.5:
        h.snapshot(1)
    traffic(4)
    promoted = _replaced(config, 3, new, log_only=False)
    assert h.replica(1).propose_reconfig(promoted) is not None
    traffic(4)
    _settle(h, 1, promoted)
    donor = rng.choice([n for n in promoted.node_ids if n not in (1, new)])
    for _ in range(20):
        slot, state = _donor_state(h, donor)
        traffic(2)  # the state is older than what the group chose meanwhile
        if h.replica(new).restore_state(slot, state):
            break
    else:
        raise AssertionError("the promoted member never accepted a donor's state")
    traffic(4)
    if rng.random() < 0.5:
        h.crash(new)
        h.restart(new)
    h.heal()
    h.propose(1, b"last")
    h.run(20)
    assert not h.replica(new).log_only
    assert h.nodes[NodeId(new)].state == h.nodes[NodeId(1)].state
    assert h.nodes[NodeId(1)].state[-1] == b"last"
