"""Thrifty Accepts under every fault: the simulated replicas send Accepts to a phase-2 quorum
only, as the cluster's do, and every checker stays green; broken variants are still caught
with the option on."""

from __future__ import annotations

import pytest

from keeldb.consensus.replica import Mutation
from keeldb.consensus.sim.schedules import config_for
from keeldb.consensus.sim.world import run

SEEDS_PER_SCHEDULE = 40
SEEDS_MAX = 200


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
@pytest.mark.parametrize("schedule", ["all-faults", "pipelined"])
def test_thrifty_replicas_pass_every_checker(profile: str, schedule: str) -> None:
    failures = []
    ops = crashes = 0
    for seed in range(SEEDS_PER_SCHEDULE):
        result = run(config_for(seed, profile, schedule=schedule, thrifty_accepts=True))
        ops += result.ops_completed
        crashes += result.crashes
        if not result.ok:
            failures.append(f"{result.replay_command()}: "
                            + "; ".join(str(v)[:300] for v in result.verdicts.violations[:3]))
    assert failures == []
    assert ops > 100 * SEEDS_PER_SCHEDULE
    assert crashes > SEEDS_PER_SCHEDULE  # the faults really happened


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "mutation",
    [Mutation.QUORUM_INTERSECTION_BROKEN, Mutation.PIPELINED_VOTE_AT_ADVANCE],
    ids=lambda m: m.name.lower(),
)
def test_broken_variants_are_still_caught_when_thrifty(mutation: Mutation) -> None:
    for seed in range(SEEDS_MAX):
        result = run(config_for(seed, "standard", frozenset([mutation]), thrifty_accepts=True))
        if not result.ok:
            assert "--thrifty" in result.replay_command()
            return
    pytest.fail(f"{mutation.name} went unnoticed for {SEEDS_MAX} thrifty seeds")
