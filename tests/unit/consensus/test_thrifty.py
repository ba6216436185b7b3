"""Thrifty Accepts (`Options.thrifty_accepts`): a leader sends each Accept to a phase-2
quorum only, the other replicas catch up once per heartbeat, and a target that stops
answering is replaced without losing the write."""

from __future__ import annotations

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import Accept
from keeldb.consensus.replica import Options
from keeldb.consensus.types import Config, Member, NodeId

STANDARD = Config.standard([1, 2, 3])
AURORA = Config.aurora([1, 2, 3, 4, 5, 6])
THRIFTY = Options(thrifty_accepts=True)


def _accept_destinations(h: Harness) -> set[int]:
    return {m.dst for m in h.net if isinstance(m, Accept)}


def _settled_leader(config: Config, options: Options) -> Harness:
    h = Harness(config, options=options)
    h.elect(1)
    h.run(2 * options.heartbeat_ticks)  # every peer answers two heartbeats
    return h


def test_accepts_go_to_a_phase_2_quorum_only() -> None:
    h = _settled_leader(STANDARD, THRIFTY)
    h.propose(1, b"a")
    targets = _accept_destinations(h)
    assert len(targets) == 1 and targets <= {2, 3}  # Q2 = 2: the leader and one peer
    h.deliver_all()
    assert h.replica(1).commit_slot == 1
    h.propose(1, b"b")
    assert _accept_destinations(h) == targets  # the choice sticks while the peer answers

    h = _settled_leader(AURORA, THRIFTY)
    h.propose(1, b"a")
    targets = _accept_destinations(h)
    assert len(targets) == 3 and targets <= {2, 3, 4, 5, 6}  # Q2 = 4 of 6


def test_the_groups_of_one_leader_choose_the_same_targets_in_ring_order() -> None:
    # Whatever a group's seed, the groups one node leads send their Accepts to the same
    # peers (one frame per peer per drive pass); leaders on different nodes, to different
    # peers: the next node ids after their own first.
    for leader, expected in ((1, {2}), (2, {3}), (3, {1})):
        for seed in range(8):
            h = Harness(STANDARD, options=THRIFTY, seed=seed)
            h.elect(leader)
            h.run(2 * THRIFTY.heartbeat_ticks)
            h.propose(leader, b"a")
            assert _accept_destinations(h) == expected, (leader, seed)
    for seed in range(8):
        h = Harness(AURORA, options=THRIFTY, seed=seed)
        h.elect(5)
        h.run(2 * THRIFTY.heartbeat_ticks)
        h.propose(5, b"a")
        assert _accept_destinations(h) == {6, 1, 2}


def test_without_the_option_accepts_go_to_every_peer() -> None:
    h = _settled_leader(STANDARD, Options())
    h.propose(1, b"a")
    assert _accept_destinations(h) == {2, 3}


def test_a_replica_left_out_of_the_accepts_catches_up_at_the_next_heartbeats() -> None:
    h = _settled_leader(STANDARD, THRIFTY)
    for i in range(5):
        h.propose(1, f"w{i}".encode())
    (target,) = _accept_destinations(h)
    other = 5 - target
    h.deliver_all()
    commit = h.replica(1).commit_slot
    assert commit == 5
    assert h.replica(other).commit_slot < commit  # it got no Accept
    h.take_events()
    h.run(3 * THRIFTY.heartbeat_ticks)
    catch_ups = [e for e in h.take_events() if e.startswith(f"1->{other} CatchUp ")]
    assert catch_ups == [f"1->{other} CatchUp b=1.1 slots=1..5 commit=5"]  # one batch
    assert h.replica(other).commit_slot == commit
    assert h.nodes[other].state == h.nodes[1].state


def test_a_silent_target_is_replaced_and_the_write_still_chosen() -> None:
    h = _settled_leader(STANDARD, THRIFTY)
    h.propose(1, b"a")
    (target,) = _accept_destinations(h)
    other = 5 - target
    h.deliver_all()
    assert h.replica(1).commit_slot == 1
    h.crash(target)
    h.propose(1, b"a")
    assert _accept_destinations(h) == {target}
    h.deliver_all()
    assert h.replica(1).commit_slot == 1  # its only target is down
    # Unacknowledged for a heartbeat, the Accept goes to every peer.
    h.run(THRIFTY.heartbeat_ticks)
    assert h.replica(1).commit_slot == 2
    # Silent for two heartbeats, the peer is no longer a target.
    h.run(2 * THRIFTY.heartbeat_ticks)
    h.propose(1, b"b")
    assert _accept_destinations(h) == {other}
    h.deliver_all()
    assert h.replica(1).commit_slot == 3
    assert h.nodes[1].state == [b"a", b"a", b"b"]


def test_log_only_members_are_preferred_as_targets() -> None:
    members = tuple(
        Member(NodeId(n), zone, log_only=n in (4, 6))
        for n, zone in ((1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b"), (6, "c"))
    )
    for seed in range(8):
        h = Harness(Config(members, q1=3, q2=4), options=THRIFTY, seed=seed)
        h.elect(1)
        h.run(2 * THRIFTY.heartbeat_ticks)
        h.propose(1, b"a")
        targets = _accept_destinations(h)
        assert len(targets) == 3 and {4, 6} <= targets
        h.deliver_all()
        assert h.replica(1).commit_slot == 1
