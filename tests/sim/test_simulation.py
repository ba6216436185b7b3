"""Many seeds of each profile with every fault on (crashes with torn writes, quick reboots,
partitions symmetric, one-way and partial, leader isolation, lease attacks, reconfigurations,
every node restarting at once, clock drift), all four checkers green."""

from __future__ import annotations

import pytest

from keeldb.consensus.sim.__main__ import main
from keeldb.consensus.sim.world import RunConfig, run

SEEDS_PER_PROFILE = 200


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_many_seeds_with_all_faults_pass_every_checker(profile: str) -> None:
    failures = []
    totals = {"ops": 0, "crashes": 0, "partitions": 0, "reconfigs": 0, "leaders": 0,
              "snapshots": 0}
    for seed in range(SEEDS_PER_PROFILE):
        result = run(RunConfig(seed=seed, profile=profile))
        totals["ops"] += result.ops_completed
        totals["crashes"] += result.crashes
        totals["partitions"] += result.partitions
        totals["reconfigs"] += result.reconfigs_applied
        totals["leaders"] += result.leaders_elected
        totals["snapshots"] += result.snapshots_installed
        if not result.ok:
            failures.append(f"{result.replay_command()}: "
                            + "; ".join(str(v)[:300] for v in result.verdicts.violations[:3]))
    assert failures == []
    # The faults really happened (a run that injects nothing proves nothing).
    assert totals["ops"] > 100 * SEEDS_PER_PROFILE
    assert totals["crashes"] > SEEDS_PER_PROFILE
    assert totals["partitions"] > SEEDS_PER_PROFILE
    assert totals["reconfigs"] > SEEDS_PER_PROFILE // 10
    assert totals["leaders"] > SEEDS_PER_PROFILE
    assert totals["snapshots"] > SEEDS_PER_PROFILE // 10


def test_a_run_without_faults_completes_every_request() -> None:
    from keeldb.consensus.sim.network import CALM

    result = run(RunConfig(seed=1, profile="aurora", nemesis=False, network=CALM))
    assert result.ok
    assert result.ops_abandoned == 0
    assert result.ops_completed == result.ops_invoked
    assert result.crashes == 0


def test_command_line_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--profile", "aurora"]) == 0
    out = capsys.readouterr().out
    assert "profile aurora, mutations none, schedule all-faults: 3 seeds, 0 failed" in out
    assert "checkers: agreement ok, durability ok, linearizability ok, liveness ok" in out
    assert "elections" in out
    assert "cpu time" in out


def test_command_line_replays_one_seed_with_a_readable_trace(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "4", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "start n1 incarnation 1" in out
    assert "leads at ballot" in out
    assert "deliver" in out


def test_command_line_prints_the_replay_command_of_a_failing_seed(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--seeds", "5", "--mutation", "QUORUM_INTERSECTION_BROKEN",
                 "--stop-on-failure"])
    out = capsys.readouterr().out
    assert code == 1
    assert "replay: python -m keeldb.consensus.sim --seed " in out
    assert "--mutation QUORUM_INTERSECTION_BROKEN --schedule lease-overlap --trace" in out


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_membership_changing_all_the_time_keeps_every_checker_green(profile: str) -> None:
    from keeldb.consensus.sim.schedules import config_for

    failures, applied = [], 0
    for seed in range(40):
        result = run(config_for(seed, profile, schedule="reconfig-storm"))
        applied += result.reconfigs_applied
        if not result.ok:
            failures.append(f"{result.replay_command()}: {result.verdicts.violations[:1]}")
    assert failures == []
    assert applied > 40


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
@pytest.mark.parametrize("schedule", ["calm", "competing-ballots"])
def test_other_schedules_keep_every_checker_green(schedule: str, profile: str) -> None:
    from keeldb.consensus.sim.schedules import config_for

    failures = []
    for seed in range(30):
        result = run(config_for(seed, profile, schedule=schedule))
        if not result.ok:
            failures.append(f"{result.replay_command()}: {result.verdicts.violations[:1]}")
    assert failures == []


@pytest.mark.sim
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile", ["standard", "aurora"])
@pytest.mark.parametrize("schedule", ["pipelined", "pipelined-competing-ballots"])
def test_a_pipelining_driver_keeps_every_checker_green(schedule: str, profile: str) -> None:
    """Readys taken while the previous fsync runs (as a cluster node's driver does), under
    every fault: the checkers stay green and the pipeline really ran ahead of the disk."""
    from keeldb.consensus.sim.schedules import config_for

    failures = []
    ahead = 0
    for seed in range(40):
        result = run(config_for(seed, profile, schedule=schedule))
        ahead += result.unsynced_readys_max > 1
        if not result.ok:
            failures.append(f"{result.replay_command()}: {result.verdicts.violations[:1]}")
    assert failures == []
    assert ahead >= 30  # in most runs, more than one Ready was unsynced at once
