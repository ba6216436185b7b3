"""A run is a pure function of its seed: the same seed gives the same trace hash (in this
process and in fresh processes with different string hash seeds), different seeds differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keeldb.consensus.sim.world import RunConfig, run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_same_seed_gives_the_same_trace_hash_twice(profile: str) -> None:
    first = run(RunConfig(seed=42, profile=profile))
    second = run(RunConfig(seed=42, profile=profile))
    assert first.events > 1000
    assert first.trace_hash == second.trace_hash
    assert first.ops_completed == second.ops_completed


@pytest.mark.parametrize("profile", ["standard", "aurora"])
def test_different_seeds_give_different_trace_hashes(profile: str) -> None:
    hashes = {run(RunConfig(seed=seed, profile=profile)).trace_hash for seed in range(5)}
    assert len(hashes) == 5


def test_keeping_the_readable_trace_does_not_change_the_run() -> None:
    quiet = run(RunConfig(seed=3))
    traced = run(RunConfig(seed=3, keep_trace=True))
    assert quiet.trace_hash == traced.trace_hash
    assert len(traced.trace_lines) == traced.trace_lines.__len__() > 100


def _hash_in_subprocess(hash_seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run(
        [sys.executable, "-m", "keeldb.consensus.sim", "--seed", "9", "--profile", "aurora",
         "--hash"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("aurora seed 9 "))
    return line.split()[-1]


def test_trace_hash_does_not_depend_on_the_string_hash_seed() -> None:
    in_process = run(RunConfig(seed=9, profile="aurora")).trace_hash
    assert _hash_in_subprocess("1") == in_process
    assert _hash_in_subprocess("2") == in_process
