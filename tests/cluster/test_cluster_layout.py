"""The ring, the placement of replica groups and the cluster file: pure functions of the
cluster's description, identical on every node."""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path

import pytest

from keeldb.cluster import topology
from keeldb.cluster.placement import META_GROUP, place
from keeldb.cluster.ring import Ring
from keeldb.model.keys import HASH_SPACE, partition_hash


def _spec(nodes: int, profile: str, partitions: int = 4, zones: int = 3) -> topology.ClusterSpec:
    return topology.ClusterSpec(
        nodes=tuple(
            topology.NodeSpec(i + 1, f"z{i % zones}", "127.0.0.1", 9000 + i, 9100 + i)
            for i in range(nodes)
        ),
        profile=profile,
        partitions=partitions,
    )


def test_an_even_ring_covers_the_hash_space_without_gaps_or_overlaps() -> None:
    ring = Ring.even(5)
    ranges = [ring.range_of(i) for i in range(len(ring))]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == HASH_SPACE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for i, (low, high) in enumerate(ranges):
        assert ring.partition_of(low) == i
        assert ring.partition_of(high - 1) == i


def test_partition_keys_spread_over_every_partition() -> None:
    ring = Ring.even(4)
    counts = collections.Counter(
        ring.partition_of_hash_bytes(partition_hash({"S": f"key-{i}"})) for i in range(4000)
    )
    assert sorted(counts) == [0, 1, 2, 3]
    assert min(counts.values()) > 800  # 1000 each on average


def test_a_split_keeps_the_other_partitions_ranges() -> None:
    ring = Ring.even(3)
    split = ring.split(1)
    assert len(split) == 4
    assert split.range_of(0) == ring.range_of(0)
    assert split.range_of(3) == ring.range_of(2)
    low, high = ring.range_of(1)
    assert split.range_of(1)[0] == low
    assert split.range_of(2)[1] == high


def test_overlapping_names_the_partitions_of_a_scan_segment_in_ring_order() -> None:
    ring = Ring.even(4)
    assert list(ring.overlapping(0, HASH_SPACE)) == [0, 1, 2, 3]
    assert list(ring.overlapping(HASH_SPACE // 4, HASH_SPACE // 2)) == [1]
    assert list(ring.overlapping(HASH_SPACE // 4 - 1, HASH_SPACE // 4 + 1)) == [0, 1]
    assert list(ring.overlapping(5, 5)) == []


def test_standard_placement_puts_three_replicas_in_three_zones_and_spreads_leaders() -> None:
    spec = _spec(6, "standard", partitions=11)
    placed = place(spec)
    assert set(placed) == {META_GROUP, *(f"p{i}" for i in range(11))}
    for group in placed.values():
        config = group.config
        assert config.n == 3
        assert len(config.zones) == 3
        assert (config.q1, config.q2) == (2, 2)
        assert group.preferred_leader in group.node_ids
    leads = collections.Counter(g.preferred_leader for g in placed.values())
    assert max(leads.values()) - min(leads.values()) <= 1
    assert len(leads) == 6


def test_aurora_placement_puts_two_replicas_in_each_of_three_zones() -> None:
    placed = place(_spec(6, "aurora"))
    for group in placed.values():
        config = group.config
        assert config.n == 6
        assert (config.q1, config.q2) == (3, 4)
        assert collections.Counter(m.zone for m in config.members) == {"z0": 2, "z1": 2, "z2": 2}
        assert config.survives_zone_loss()


def test_placement_is_the_same_wherever_it_is_computed() -> None:
    first = place(_spec(9, "standard", partitions=7))
    second = place(_spec(9, "standard", partitions=7))
    assert first == second


def test_a_single_node_cluster_has_groups_of_one() -> None:
    placed = place(_spec(1, "standard"))
    assert all(g.node_ids == (1,) for g in placed.values())


@pytest.mark.parametrize(
    ("nodes", "profile", "zones", "message"),
    [
        (2, "standard", 3, "needs 3 storage nodes"),
        (5, "aurora", 3, "needs 6 storage nodes"),
        (3, "standard", 2, "spread over 3 zones"),
    ],
)
def test_a_cluster_that_cannot_place_its_replicas_is_refused(
    nodes: int, profile: str, zones: int, message: str
) -> None:
    with pytest.raises(topology.TopologyError, match=message):
        _spec(nodes, profile, zones=zones).validate()


def test_the_cluster_file_round_trips(tmp_path: Path) -> None:
    spec = _spec(3, "standard", partitions=6)
    path = tmp_path / "cluster.json"
    topology.save(spec, path)
    assert topology.load(path) == spec
    data = json.loads(path.read_text())
    assert [n["id"] for n in data["nodes"]] == [1, 2, 3]


def test_a_cluster_file_with_repeated_node_ids_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    data = _spec(3, "standard").to_json()
    data["nodes"][2]["id"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(topology.TopologyError, match="node ids repeat"):
        topology.load(path)


def test_a_short_cluster_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("short\n")
    with pytest.raises(topology.TopologyError, match="too short"):
        topology.read_secret(path)
    topology.write_secret(path)
    assert len(topology.read_secret(path)) == 2 * topology.SECRET_BYTES
