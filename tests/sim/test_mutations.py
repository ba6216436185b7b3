"""Proof that the checkers can fail: each deliberately broken variant of the replica is
caught by a checker within a bounded number of seeds, under the fault schedule that makes
its bug observable; and those schedules pass on the correct replica."""

from __future__ import annotations

import pytest

from keeldb.consensus.replica import Mutation
from keeldb.consensus.sim.checkers import AGREEMENT, DURABILITY, LINEARIZABILITY
from keeldb.consensus.sim.schedules import MUTATION_SCHEDULES, config_for
from keeldb.consensus.sim.world import RunResult, run

# Seeds tried before declaring a broken variant invisible.
SEEDS_MAX = 200
# The checkers expected to notice each bug (at least one of them must fire).
EXPECTED_CHECKERS = {
    Mutation.QUORUM_INTERSECTION_BROKEN: {AGREEMENT, DURABILITY, LINEARIZABILITY},
    Mutation.ACK_BEFORE_PERSIST: {AGREEMENT, DURABILITY, LINEARIZABILITY},
    # A new leader that ignores the old lease loses no write: only reads go stale.
    Mutation.LEASE_READ_WITHOUT_WAIT: {LINEARIZABILITY},
    Mutation.FORGET_PROMISE_ON_RESTART: {AGREEMENT, DURABILITY, LINEARIZABILITY},
    Mutation.RECOVERY_IGNORES_BALLOT: {AGREEMENT, DURABILITY, LINEARIZABILITY},
    # Caught the moment the leader's commit point passes a slot fewer than Q2 disks hold.
    Mutation.LEADER_VOTE_BEFORE_PERSIST: {DURABILITY},
    # The same bug in a pipelining driver: own votes counted when a Ready is advanced
    # rather than when its records are durable.
    Mutation.PIPELINED_VOTE_AT_ADVANCE: {DURABILITY},
}


def _first_failure(mutation: Mutation, profile: str) -> tuple[int, RunResult] | None:
    for seed in range(SEEDS_MAX):
        result = run(config_for(seed, profile, frozenset([mutation])))
        if not result.ok:
            return seed, result
    return None


def test_every_mutation_has_a_schedule_and_expected_checkers() -> None:
    assert set(MUTATION_SCHEDULES) == set(Mutation)
    assert set(EXPECTED_CHECKERS) == set(Mutation)


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
@pytest.mark.parametrize("mutation", list(Mutation), ids=lambda m: m.name.lower())
def test_broken_variant_is_caught_within_bounded_seeds(mutation: Mutation, profile: str) -> None:
    found = _first_failure(mutation, profile)
    assert found is not None, f"{mutation.name} went unnoticed for {SEEDS_MAX} seeds"
    seed, result = found
    failed = set(result.verdicts.checkers_failed())
    assert failed & EXPECTED_CHECKERS[mutation], (
        f"seed {seed} failed only {sorted(failed)}: {result.verdicts.violations[:2]}")
    # The failure names the command that replays it.
    assert f"--seed {seed} " in result.replay_command()
    assert f"--mutation {mutation.name}" in result.replay_command()


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
@pytest.mark.parametrize("schedule", sorted(set(MUTATION_SCHEDULES.values())))
def test_the_correct_replica_passes_the_schedules_that_expose_the_mutations(
        schedule: str, profile: str) -> None:
    failures = []
    for seed in range(40):
        result = run(config_for(seed, profile, schedule=schedule))
        if not result.ok:
            failures.append(f"{result.replay_command()}: {result.verdicts.violations[:1]}")
    assert failures == []


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_lease_reads_stay_linearizable_with_clocks_pinned_at_the_drift_bound(
        profile: str) -> None:
    failures = []
    for seed in range(40):
        result = run(config_for(seed, profile, schedule="clock-skew"))
        if not result.ok:
            failures.append(f"{result.replay_command()}: {result.verdicts.violations[:1]}")
    assert failures == []


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_clocks_drifting_beyond_the_assumed_bound_break_lease_reads(profile: str) -> None:
    # The core assumes rates within 5 percent; here they differ by up to 30 percent, and
    # the same schedule that passes above must now expose a stale read.
    for seed in range(SEEDS_MAX):
        result = run(config_for(seed, profile, schedule="clock-skew", clock_drift=0.3))
        if not result.ok:
            assert result.verdicts.checkers_failed() == [LINEARIZABILITY]
            return
    raise AssertionError(f"no stale read in {SEEDS_MAX} seeds with clocks beyond the bound")
