"""Leader leases: local strong reads, and the lease-wait obligation a new leader inherits."""

from __future__ import annotations

from fractions import Fraction

from keeldb.consensus.harness import Harness
from keeldb.consensus.replica import Options
from keeldb.consensus.types import Config

STANDARD = Config.standard([1, 2, 3])
OPTS = Options(lease_ticks=8, clock_drift_max=Fraction(1, 20))


def test_lease_arithmetic_shortens_the_leaders_view_and_stretches_the_wait() -> None:
    # The leader trusts 8 * 19/21 = 7.2 -> 7 ticks; a successor waits 8 * 21/19 = 8.8 -> 9.
    assert OPTS.lease_valid_ticks == 7
    assert OPTS.lease_wait_ticks(8) == 9
    assert OPTS.lease_wait_ticks(0) == 0
    exact = Options(lease_ticks=8, clock_drift_max=Fraction(0))
    assert (exact.lease_valid_ticks, exact.lease_wait_ticks(8)) == (8, 8)


def test_leader_serves_lease_reads_once_a_q2_quorum_acknowledged_it() -> None:
    h = Harness(STANDARD, options=OPTS)
    h.campaign(1)
    h.deliver(1, 2)
    h.deliver(2, 1)  # leader, but no heartbeat acknowledged yet
    assert h.replica(1).is_leader
    assert not h.replica(1).read_lease()
    h.deliver_all()
    assert h.replica(1).read_lease()


def test_lease_expires_without_fresh_acknowledgements() -> None:
    h = Harness(STANDARD, options=OPTS)
    h.elect(1)
    h.partition([1], [2, 3])
    valid = []
    for _ in range(10):
        h.tick([1])
        h.deliver_all()
        valid.append(h.replica(1).read_lease())
    assert valid[:6] == [True] * 6
    assert valid[6:] == [False] * 4


def test_new_leader_serves_no_lease_reads_or_writes_until_the_old_lease_expired() -> None:
    h = Harness(STANDARD, options=OPTS)
    h.elect(1)
    h.partition([1], [2, 3])
    h.campaign(2)
    h.deliver_all()
    assert h.replica(2).is_leader
    assert h.propose(2, b"w") is not None
    both = []
    for _ in range(14):
        h.tick()
        h.deliver_all()
        reads = (h.replica(1).read_lease(), h.replica(2).read_lease())
        assert reads != (True, True)
        both.append(reads)
        if not reads[1]:
            assert h.replica(2).commit_slot <= 1  # only the recovered slot, not "w"
    assert both[-1] == (False, True)
    assert h.nodes[2].state[-1:] == [b"w"]  # type: ignore[index]


def test_lease_read_requires_the_applied_state_to_reach_the_commit_point() -> None:
    h = Harness(STANDARD, options=OPTS)
    h.elect(1)
    r = h.replica(1)
    r.propose(b"a")
    h.process_all()
    for msg in [m for m in h.net if m.dst == 2]:
        h.net.remove(msg)
        h.replica(2).step(msg)
    rd2 = h.replica(2).ready()
    h.replica(2).advance(rd2)
    for msg in rd2.send_after_persist:
        r.step(msg)
    assert r.commit_slot == 1
    assert not r.read_lease()  # chosen, but the Ready that applies it is not advanced
    h.process_all()
    assert r.read_lease()
