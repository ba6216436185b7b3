"""The fault matrix of the aurora profile (N 6 over 3 zones, Q1 3, Q2 4): for every set of
failed nodes, writes go on iff the survivors can form a phase-2 quorum, no acknowledged
write is ever lost, and the group recovers once the nodes return."""

from __future__ import annotations

import itertools

import pytest

from keeldb.consensus.sim.network import CALM
from keeldb.consensus.sim.world import RunConfig, RunResult, initial_config, run

FAIL_AT_US = 300_000
RETURN_AT_US = 1_300_000
# Writes counted only after the survivors had time to elect a leader and wait out leases.
AVAILABLE_FROM_US = 700_000

CONFIG = initial_config("aurora", log_replicas=True)
NODES = CONFIG.node_ids
SUBSETS = [s for k in range(len(NODES) + 1) for s in itertools.combinations(NODES, k)]


def _run(failed: tuple[int, ...], seed: int = 1, log_replicas: bool = True) -> RunResult:
    return run(RunConfig(seed=seed, profile="aurora", nemesis=False, network=CALM,
                         log_replicas=log_replicas,
                         failed_nodes=failed, fail_at_us=FAIL_AT_US, fault_us=RETURN_AT_US,
                         liveness_bound_us=2_500_000, quiesce_us=1_000_000))


def _writes_while_failed(result: RunResult) -> int:
    return sum(1 for at in result.acknowledged_at_us if AVAILABLE_FROM_US <= at < RETURN_AT_US)


def _zone(zone: str) -> tuple[int, ...]:
    return tuple(m.node_id for m in CONFIG.members if m.zone == zone)


def test_matrix_covers_every_subset_of_the_six_nodes() -> None:
    assert len(SUBSETS) == 2 ** 6
    assert len(set(SUBSETS)) == 2 ** 6


@pytest.mark.sim
@pytest.mark.parametrize("failed", SUBSETS, ids=lambda s: "failed-" + ("-".join(map(str, s)) or "none"))
def test_writes_available_iff_survivors_form_a_write_quorum(failed: tuple[int, ...]) -> None:
    result = _run(failed)
    survivors = len(NODES) - len(failed)
    writes = _writes_while_failed(result)
    if survivors >= CONFIG.q2:
        assert writes > 0, f"no write completed with {survivors} survivors"
    else:
        assert writes == 0, f"{writes} writes completed with only {survivors} survivors"
    # Whatever failed: nothing acknowledged is lost, the history is linearizable, and once
    # the nodes return every request completes.
    assert result.verdicts.violations == []


@pytest.mark.sim
@pytest.mark.parametrize("log_replicas", [True, False], ids=["log-replicas", "full-replicas"])
@pytest.mark.parametrize("zone", ["a", "b", "c"])
def test_losing_a_whole_zone_keeps_writes_available(zone: str, log_replicas: bool) -> None:
    failed = _zone(zone)
    assert len(failed) == 2
    result = _run(failed, seed=7, log_replicas=log_replicas)
    assert _writes_while_failed(result) > 0
    assert result.ok


@pytest.mark.sim
@pytest.mark.parametrize("log_replicas", [True, False], ids=["log-replicas", "full-replicas"])
@pytest.mark.parametrize("zone", ["a", "b", "c"])
def test_losing_a_zone_and_one_more_node_loses_no_acknowledged_write_and_recovers(
        zone: str, log_replicas: bool) -> None:
    for extra in (n for n in NODES if n not in _zone(zone)):
        failed = tuple(sorted((*_zone(zone), extra)))
        result = _run(failed, seed=11, log_replicas=log_replicas)
        assert _writes_while_failed(result) == 0
        # Durability: every write acknowledged before the failure is still there at the
        # end; liveness: after the nodes return, writes complete again.
        assert result.verdicts.violations == []
        assert sum(1 for at in result.acknowledged_at_us if at < FAIL_AT_US) > 0
        assert sum(1 for at in result.acknowledged_at_us if at >= RETURN_AT_US) > 0
