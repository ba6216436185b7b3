"""The benchmark's workloads: YCSB's key choice, the records and the request bodies."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from keeldb.bench import workloads
from keeldb.bench.workloads import Shape


def test_fnv_hash_matches_ycsb_for_known_values() -> None:
    # FNV-1a over the 8 low bytes of 0: every byte is zero, so the hash is the offset basis
    # multiplied by the prime eight times (mod 2^64), read as a signed long, made positive.
    expected = 0xCBF29CE484222325
    for _ in range(8):
        expected = (expected * 0x100000001B3) & ((1 << 64) - 1)
    if expected >= 1 << 63:
        expected -= 1 << 64
    assert workloads.fnv_hash_64(0) == abs(expected)
    assert workloads.fnv_hash_64(1) != workloads.fnv_hash_64(0)


def test_zipfian_draws_the_first_item_most_often() -> None:
    chooser = workloads.Zipfian(1000, random.Random(1))
    counts = Counter(chooser.next() for _ in range(20_000))
    assert counts.most_common(1)[0][0] == 0
    assert all(0 <= value < 1000 for value in counts)
    # theta 0.99 over 1000 items: item 0 is drawn about 1/zeta(1000) ~ 13 % of the time.
    assert 0.10 < counts[0] / 20_000 < 0.17


def test_scrambled_zipfian_scatters_hot_keys_over_the_key_space() -> None:
    chooser = workloads.ScrambledZipfian(10_000, random.Random(2))
    counts = Counter(chooser.next() for _ in range(20_000))
    hottest = [key for key, _ in counts.most_common(10)]
    assert all(0 <= key < 10_000 for key in counts)
    # Skewed: a few keys take a large share ...
    assert sum(counts[k] for k in hottest) > 0.08 * 20_000
    # ... and they are not the lowest key numbers, as with a plain zipfian.
    assert sorted(hottest) != list(range(10))


def test_same_seed_replays_the_same_requests() -> None:
    shape = Shape(records=100)
    first = workloads.Mix("a", shape, random.Random(7))
    second = workloads.Mix("a", shape, random.Random(7))
    assert [first.next() for _ in range(50)] == [second.next() for _ in range(50)]


@pytest.mark.parametrize(("phase", "share"), [("a", 0.5), ("b", 0.95), ("c", 1.0)])
def test_mix_sends_reads_in_the_workloads_share(phase: str, share: float) -> None:
    mix = workloads.Mix(phase, Shape(records=1000), random.Random(3))
    operations = Counter(mix.next()[0] for _ in range(10_000))
    reads = operations[workloads.GET] / 10_000
    assert abs(reads - share) < 0.02
    assert set(operations) <= {workloads.GET, workloads.UPDATE}


def test_bodies_are_dynamodb_json_with_records_of_the_shapes_size() -> None:
    shape = Shape(records=10, field_count=10, field_bytes=100)
    bodies = workloads.Bodies(shape, random.Random(4))
    put = json.loads(bodies.put(3))
    item = put["Item"]
    assert put["TableName"] == "usertable"
    assert item["key"] == {"S": "user3"}
    assert sorted(item) == sorted(["key"] + [f"field{i}" for i in range(10)])
    size = sum(len(name) + len(value["S"]) for name, value in item.items())
    assert size == shape.record_bytes("user3")
    update = json.loads(bodies.update(3))
    assert update["UpdateExpression"] == "SET #f = :v"
    assert update["ExpressionAttributeNames"]["#f"] in item
    query = json.loads(bodies.query(5))
    assert query["Limit"] == 10
    assert query["ExpressionAttributeValues"] == {":p": {"S": "part5"}}
    batch = json.loads(bodies.batch_put([(1, 2), (1, 3)]))
    requests = batch["RequestItems"]["querytable"]
    assert [r["PutRequest"]["Item"]["sk"] for r in requests] == [
        {"S": "item00002"},
        {"S": "item00003"},
    ]


def test_workers_share_the_load_without_overlap_or_gaps() -> None:
    shape = Shape(records=1001, partitions=7, items_per_partition=30)
    keys = [k for w in range(3) for k in workloads.load_keys(shape, w, 3, seed=9)]
    assert sorted(keys) == list(range(1001))
    pairs = [p for w in range(2) for batch in workloads.batch_pairs(shape, w, 2) for p in batch]
    assert sorted(pairs) == [(p, i) for p in range(7) for i in range(30)]
    assert all(
        len(batch) <= workloads.BATCH_ITEMS_MAX
        for w in range(2)
        for batch in workloads.batch_pairs(shape, w, 2)
    )


def test_qget_reads_single_items_of_the_batch_loaded_partitions() -> None:
    shape = Shape(partitions=50, items_per_partition=100)
    mix = workloads.Mix("qget", shape, random.Random(5))
    keys = set()
    for _ in range(500):
        operation, body, written = mix.next()
        assert operation == workloads.GET
        assert written == 0
        key = json.loads(body)["Key"]
        partition = int(key["pk"]["S"].removeprefix("part"))
        number = int(key["sk"]["S"].removeprefix("item"))
        assert 0 <= partition < 50
        assert 0 <= number < 100
        keys.add((partition, number))
    assert len(keys) > 100
