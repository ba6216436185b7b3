"""The benchmark workload commits what it proposes, with batching doing its job."""

from __future__ import annotations

import pytest

from keeldb.consensus.bench import run_workload


@pytest.mark.parametrize(("profile", "replicas"), [("standard", 3), ("aurora", 6)])
def test_workload_commits_every_entry_with_few_messages_per_entry(
    profile: str, replicas: int
) -> None:
    result = run_workload(profile, 64 * 20)
    assert result.entries_committed == 64 * 20
    # Per batch of 64: an Accept and an Accepted per follower, plus the election.
    assert result.messages_delivered < 20 * 2 * (replicas - 1) + 6 * replicas
    assert result.records_persisted >= replicas * 64 * 20
