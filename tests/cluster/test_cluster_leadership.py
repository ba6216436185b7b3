"""Leadership that follows the traffic, and eventually consistent reads from a replica's own
copy, on real clusters of processes.

- A partition's leadership moves to the node whose router sends its requests; moves under
  load, a kill -9 of the node that leads after them, and more moves lose no acknowledged
  write, and the strongly consistent history stays linearizable.
- A replica cut off from its group stops answering eventually consistent reads once it has
  not heard from its leader within the bound; a replica that ignores the bound (the broken
  variant, `KEELDB_BUGGIFY_LAGGING_READS`) answers with old data, and the check says so.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from keeldb.cluster.storage import BUGGIFY_LAGGING_READS_ENV, EVENTUAL_STALENESS_SECONDS_MAX

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(240)]

PHASE_SECONDS = 9.0  # a load window, a move (lease wait) and some writes after it
MOVE_SECONDS_MAX = 30.0  # a loaded machine: windows, rate limit and elections, generously
READ_TIMEOUT_SECONDS = 4.0


def _leaders(cluster: Any, groups: list[str]) -> dict[str, int | None]:
    """Each group's leader (with a lease) as the live nodes report it."""
    found: dict[str, int | None] = dict.fromkeys(groups)
    for node in cluster.live():
        try:
            view = cluster.status(node)["views"][str(node)]
        except (OSError, KeyError, ValueError):
            continue
        for group in groups:
            mine = view.get("groups", {}).get(group)
            if mine and mine.get("is_leader") and mine.get("lease"):
                found[group] = node
    return found


def _wait_for_leaders(cluster: Any, groups: list[str], node: int) -> None:
    deadline = time.monotonic() + MOVE_SECONDS_MAX
    while True:
        leaders = _leaders(cluster, groups)
        if all(leader == node for leader in leaders.values()):
            return
        assert time.monotonic() < deadline, f"leaders {leaders}, expected node {node}"
        time.sleep(0.2)


def test_leadership_follows_the_traffic_and_loses_no_write_across_moves_and_a_kill(
    cluster_factory: Any, chaos: Any
) -> None:
    cluster = cluster_factory(nodes=3, profile="standard", partitions=2)
    groups = ["p0", "p1"]
    first, second = 3, 1
    chaos.create_table(cluster.client(first))
    # Phase 1: every request through node 3's router: both partitions come to lead there.
    result = chaos.run_workload([cluster.endpoint(first)], PHASE_SECONDS)
    _wait_for_leaders(cluster, groups, first)
    # Phase 2: the traffic comes through node 1 instead, and node 3, leading both
    # partitions after the moves, is killed with SIGKILL on the way.
    killed: list[float] = []

    def fault() -> None:
        time.sleep(2.0)
        killed.append(time.monotonic())
        cluster.kill(first)

    result = chaos.run_workload(
        [cluster.endpoint(second)], PHASE_SECONDS, during=fault, after=result
    )
    gap = result.longest_gap(killed[0], killed[0] + PHASE_SECONDS - 2.0)
    print(f"kill -9 of the leader placed by load: longest time without a write {gap:.2f} s")
    assert gap < PHASE_SECONDS - 2.0, "no write acknowledged after the kill"
    _wait_for_leaders(cluster, groups, second)
    cluster.restart(first)
    cluster.wait_serving([first])
    chaos.final_check(cluster.endpoint(first), result)


def _put(client: Any, value: str) -> None:
    client.put_item(TableName="fresh", Item={"pk": {"S": "k"}, "v": {"S": value}})


def _eventual_value(client: Any) -> str | None:
    """The value an eventually consistent read returns; None if it gets no answer."""
    try:
        item = client.get_item(TableName="fresh", Key={"pk": {"S": "k"}}).get("Item")
    except (ClientError, BotoCoreError):
        return None
    return None if item is None else str(item["v"]["S"])


def _wait_for_value(client: Any, value: str) -> None:
    deadline = time.monotonic() + 20
    while _eventual_value(client) != value:
        assert time.monotonic() < deadline, f"the replica never showed {value}"
        time.sleep(0.1)


def _assert_not_stale(answer: str | None, stale: str) -> None:
    """An eventually consistent read from a replica cut off for longer than the bound: an
    error (nothing fresh enough could answer), never the value it held when cut off."""
    assert answer != stale, f"a replica cut off beyond the bound answered {answer!r}"


def _isolate(cluster: Any, node: int) -> None:
    others = [f"node{n}" for n in cluster.node_ids if n != node]
    cluster.fault(node, {"op": "partition", "groups": [[f"node{node}"], others]})


def test_a_replica_cut_off_beyond_the_bound_answers_no_eventual_read_and_the_check_catches_one_that_does(
    cluster_factory: Any,
) -> None:
    # Node 3 runs the broken variant: it serves eventually consistent reads whatever its lag.
    cluster = cluster_factory(
        nodes=3, profile="standard", partitions=1, node_env={3: {BUGGIFY_LAGGING_READS_ENV: "1"}}
    )
    writer = cluster.client(1)
    writer.create_table(
        TableName="fresh",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    readers = {n: cluster.client(n, read_timeout=READ_TIMEOUT_SECONDS) for n in (2, 3)}
    # Writes through node 1 bring the leadership there, so that nodes 2 and 3 follow.
    deadline = time.monotonic() + MOVE_SECONDS_MAX
    while _leaders(cluster, ["p0"])["p0"] != 1:
        assert time.monotonic() < deadline, "the leadership did not come to node 1"
        for _ in range(20):
            try:
                _put(writer, "v0")
            except ClientError:
                pass  # a write whose outcome is unknown while the leadership moves
    _put(writer, "v1")
    for reader in readers.values():
        _wait_for_value(reader, "v1")
    # Node 2 (the real rule) is cut off; the others go on writing.
    _isolate(cluster, 2)
    _put(writer, "v2")
    time.sleep(EVENTUAL_STALENESS_SECONDS_MAX + 1.0)
    _assert_not_stale(_eventual_value(readers[2]), stale="v1")
    cluster.fault(2, {"op": "heal"})
    _wait_for_value(readers[2], "v2")
    # Node 3 (the broken variant) is cut off the same way: it answers from its old copy.
    _isolate(cluster, 3)
    _put(writer, "v3")
    time.sleep(EVENTUAL_STALENESS_SECONDS_MAX + 1.0)
    with pytest.raises(AssertionError, match="cut off beyond the bound"):
        _assert_not_stale(_eventual_value(readers[3]), stale="v2")
    cluster.fault(3, {"op": "heal"})
