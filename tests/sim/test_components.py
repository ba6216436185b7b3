"""The simulator's fakes behave as documented: the disk loses only what was not synced, the
network drops, duplicates and partitions as told, clocks stay within the drift bound, the
key-value machine applies each request once, and trace text does not depend on hash seeds."""

from __future__ import annotations

import random
from fractions import Fraction

from keeldb.consensus.sim.clock import DriftingClock
from keeldb.consensus.sim.disk import Disk
from keeldb.consensus.sim.kv import Command, KvStore
from keeldb.consensus.sim.linearizability import OpKind
from keeldb.consensus.sim.network import Network, NetworkFaults
from keeldb.consensus.sim.trace import Trace, canonical


def test_disk_crash_keeps_synced_records_and_at_most_a_prefix_of_the_rest() -> None:
    rng = random.Random(5)
    kept_counts = set()
    for _ in range(200):
        disk = Disk()
        disk.write(["a", "b"])
        disk.fsync()
        disk.write(["c", "d", "e"])
        kept = disk.crash(rng, torn_probability=0.5)
        kept_counts.add(kept)
        assert disk.durable[:2] == ["a", "b"]
        assert disk.durable[2:] == ["c", "d", "e"][:kept]
        assert disk.volatile == []
    assert 0 in kept_counts
    assert len(kept_counts) > 2


def test_disk_crash_without_torn_writes_loses_every_unsynced_record() -> None:
    disk = Disk()
    disk.write([1])
    disk.fsync()
    disk.write([2, 3])
    assert disk.crash(random.Random(1), torn_probability=0.0) == 0
    assert disk.durable == [1]


def test_network_partition_blocks_one_direction_or_both() -> None:
    net = Network(random.Random(1), NetworkFaults())
    net.partition([1], [2, 3], one_way=True)
    assert net.send(0, 1, 2) == []
    assert len(net.send(0, 2, 1)) == 1
    net.heal()
    net.partition([1], [2], one_way=False)
    assert net.send(0, 1, 2) == []
    assert net.send(0, 2, 1) == []
    assert len(net.send(0, 1, 3)) == 1
    net.heal()
    assert len(net.send(0, 1, 2)) == 1


def test_network_drops_and_duplicates_at_about_the_configured_rates() -> None:
    faults = NetworkFaults(delay_min_us=10, delay_max_us=20, drop_probability=0.2,
                           duplicate_probability=0.1)
    net = Network(random.Random(3), faults)
    arrivals = [net.send(1000, 1, 2) for _ in range(10_000)]
    lost = sum(1 for a in arrivals if not a)
    doubled = sum(1 for a in arrivals if len(a) == 2)
    assert 1700 < lost < 2300
    assert 600 < doubled < 1000
    assert all(1010 <= t <= 1020 for a in arrivals for t in a)


def test_slow_messages_arrive_after_later_fast_ones() -> None:
    faults = NetworkFaults(delay_min_us=10, delay_max_us=20, slow_probability=0.5,
                           slow_delay_max_us=10_000)
    net = Network(random.Random(4), faults)
    first = [net.send(0, 1, 2)[0] for _ in range(50)]
    assert max(first) > 1000
    assert min(first) <= 20


def test_clock_tick_intervals_stay_within_the_drift_bound() -> None:
    drift = float(Fraction(1, 20))
    for seed in range(20):
        clock = DriftingClock(random.Random(seed), 10_000, drift)
        intervals = [clock.next_interval_us() for _ in range(500)]
        assert min(intervals) >= 10_000 / (1 + drift) - 1
        assert max(intervals) <= 10_000 / (1 - drift) + 1


def test_clocks_of_different_nodes_run_at_different_rates() -> None:
    totals = set()
    for seed in range(10):
        clock = DriftingClock(random.Random(seed), 10_000, 0.05)
        totals.add(sum(clock.next_interval_us() for _ in range(100)))
    assert max(totals) - min(totals) > 50_000


def test_kv_applies_a_retried_request_once_and_returns_its_first_result() -> None:
    kv = KvStore()
    put = Command(1, 1, OpKind.PUT, "k", b"a")
    cas = Command(2, 1, OpKind.CAS, "k", b"b", expected=b"a")
    assert kv.apply(put).duplicate is False
    assert kv.apply(cas).result is True
    assert kv.apply(Command(1, 2, OpKind.PUT, "k", b"c")).result is None
    again = kv.apply(cas)
    assert again.duplicate is True
    assert again.result is True
    assert kv.get("k") == b"c"


def test_kv_snapshot_round_trips_and_equal_states_give_equal_bytes() -> None:
    one, two = KvStore(), KvStore()
    commands = [Command(c, r, OpKind.PUT, f"k{r % 3}", bytes([c, r]))
                for r in range(1, 20) for c in (1, 2, 3)]
    for command in commands:
        one.apply(command)
        two.apply(command)
    assert one.snapshot() == two.snapshot()
    restored = KvStore.restore(one.snapshot())
    assert restored.snapshot() == one.snapshot()
    assert restored.has_applied(2, 7)
    assert not restored.has_applied(2, 70)


def test_command_encoding_round_trips_and_rejects_other_bytes() -> None:
    command = Command(3, 9, OpKind.CAS, "key", b"new", expected=None)
    assert Command.decode(command.encode()) == command
    assert Command.decode(b"") is None
    assert Command.decode(b"\xc1not msgpack") is None


def test_canonical_text_sorts_sets_and_dicts() -> None:
    assert canonical(frozenset({"b", "a", "c"})) == canonical(frozenset({"c", "a", "b"}))
    assert canonical({"z": 1, "a": 2}) == "{'a': 2, 'z': 1}"


def test_trace_hash_depends_on_every_event() -> None:
    one, two = Trace(keep_lines=False), Trace(keep_lines=True)
    for trace in (one, two):
        trace.record(1, "a")
        trace.record(2, "b")
    assert one.hexdigest() == two.hexdigest()
    two.record(3, "c")
    assert one.hexdigest() != two.hexdigest()
    assert len(two.lines) == 3
