"""Leader election: randomized timeouts, the "do you still hear the leader?" pre-check, and
stepping down."""

from __future__ import annotations

import random

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import Nack, Probe
from keeldb.consensus.replica import Options, Replica, Role
from keeldb.consensus.types import Ballot, Config, NodeId

STANDARD = Config.standard([1, 2, 3])


def _ticks_until_probing(seed: int, opts: Options) -> int:
    r = Replica(NodeId(1), STANDARD, random.Random(seed), opts)
    for tick in range(1, 1000):
        r.tick()
        if r.role is not Role.FOLLOWER:
            return tick
    raise AssertionError("never timed out")


def test_election_timeouts_are_random_within_their_bounds() -> None:
    opts = Options(election_ticks_min=10, election_ticks_max=20)
    seen = {_ticks_until_probing(seed, opts) for seed in range(40)}
    assert min(seen) >= 10
    assert max(seen) <= 20
    assert len(seen) > 3


def test_a_timed_out_follower_probes_before_it_campaigns() -> None:
    h = Harness(STANDARD)
    assert h.timeout(1)
    assert h.replica(1).role is Role.PROBING
    assert h.replica(1).ballot.round == 0  # no ballot spent yet
    probes = [m for m in h.net if isinstance(m, Probe)]
    assert sorted(m.dst for m in probes) == [2, 3]


def test_follower_campaigns_when_a_q1_quorum_does_not_hear_a_leader() -> None:
    h = Harness(STANDARD)
    h.timeout(1)
    h.deliver_all()
    assert h.replica(1).is_leader


def test_follower_does_not_campaign_while_its_peers_still_hear_the_leader() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    h.block(1, 3)  # one-way loss: 3 no longer hears 1
    h.run(60)
    assert h.leaders() == [NodeId(1)]
    assert h.replica(1).ballot == Ballot(1, NodeId(1))
    assert h.replica(3).ballot == Ballot(1, NodeId(1))


def test_a_new_leader_is_elected_after_the_leader_crashes() -> None:
    h = Harness(STANDARD, seed=5)
    h.elect(1)
    h.crash(1)
    h.run(40)
    leaders = h.leaders()
    assert len(leaders) == 1
    assert leaders[0] in (2, 3)


def test_leader_steps_down_when_nacked_with_a_higher_ballot() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    r = h.replica(1)
    r.step(Nack(NodeId(2), NodeId(1), r.ballot, Ballot(5, NodeId(2))))
    assert r.role is Role.FOLLOWER


def test_leader_ignores_a_nack_for_an_older_ballot() -> None:
    h = Harness(STANDARD)
    h.elect(1)
    r = h.replica(1)
    r.step(Nack(NodeId(2), NodeId(1), Ballot(0, NodeId(1)), Ballot(5, NodeId(2))))
    assert r.is_leader


def test_isolated_leader_steps_down_after_an_election_timeout_without_quorum() -> None:
    opts = Options(election_ticks_min=10, election_ticks_max=20)
    h = Harness(STANDARD, options=opts)
    h.elect(1)
    h.partition([1], [2, 3])
    for _ in range(30):
        h.tick([1])
        h.deliver_all()
    assert h.replica(1).role is not Role.LEADER


def test_the_next_ballot_exceeds_every_ballot_seen() -> None:
    h = Harness(STANDARD)
    h.elect(3)
    h.campaign(1)
    assert h.replica(1).ballot == Ballot(2, NodeId(1))


def test_same_seed_same_run() -> None:
    def trace(seed: int) -> list[str]:
        h = Harness(STANDARD, seed=seed)
        h.run(25)
        leader = h.leaders()[0]
        for i in range(5):
            h.propose(leader, f"v{i}".encode())
        h.crash(leader)
        h.run(40)
        return h.take_events()

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)
