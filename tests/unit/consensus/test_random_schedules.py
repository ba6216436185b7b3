"""Random fault schedules on the scripted harness: values never disagree, acknowledged
proposals stay chosen, and the group recovers once the faults stop.

A small, fast cousin of the simulator in keeldb.consensus.sim: it drives the harness's
explicit operations (deliver, drop, duplicate, tick, crash with a held-back fsync, restart,
partition, forced campaigns as in a leadership transfer) from one seed.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.consensus.harness import Harness
from keeldb.consensus.replica import Options
from keeldb.consensus.types import Config, Member, NodeId

STEPS = 250  # fault steps per schedule
CALM_TICKS = 60  # ticks of a healed network the group gets to recover


def _schedule(config: Config, seed: int, spare: tuple[int, ...] = ()) -> Harness:
    rng = random.Random(seed)
    options = Options(pipeline_slots_max=16, reconfig_window_slots=16)
    h = Harness(config, options=options, seed=seed, extra_nodes=spare, record_events=False)
    ids = sorted(h.nodes)
    counter = 0
    for _ in range(STEPS):
        _check_leases(h)
        op = rng.random()
        if op < 0.25:
            for leader in h.leaders():
                counter += 1
                h.propose(leader, f"v{counter}".encode())
        elif op < 0.55:
            h.process_all()
            if h.net:
                keep = [m for m in h.net if rng.random() < 0.5]
                h.net = [m for m in h.net if m not in keep] + (keep if rng.random() < 0.3 else [])
                for msg in keep:
                    h.deliver_message(msg)
                h.process_all()
        elif op < 0.62:
            h.drop(src=rng.choice(ids))
        elif op < 0.8:
            h.tick()
        elif op < 0.85:
            node = rng.choice(ids)
            if h.nodes[node].replica is not None:
                if rng.random() < 0.5:
                    h.stall_disk(node)
                h.crash(node) if rng.random() < 0.5 else None
        elif op < 0.9:
            for node in ids:
                if h.nodes[node].replica is None:
                    h.restart(node)
                    break
        elif op < 0.92:
            node = rng.choice(ids)  # a leadership transfer: the driver asks it to campaign
            replica = h.nodes[node].replica
            if replica is not None and replica.campaign():  # False: it may not lead
                h.process_all()
        elif op < 0.93 and spare:
            for leader in h.leaders():  # replace a member, or grow the group
                members = rng.sample(ids, len(config.node_ids))
                new = Config(
                    tuple(Member(NodeId(n), "abc"[n % 3]) for n in members), config.q1, config.q2
                )
                h.replica(leader).propose_reconfig(new)
        elif op < 0.96:
            cut = rng.sample(ids, rng.randint(1, len(ids) - 1))
            h.partition(cut, [n for n in ids if n not in cut])
        else:
            h.heal()
            for node in ids:
                if h.nodes[node].disk_stalled and h.nodes[node].replica is not None:
                    h.unstall_disk(node)
    return h


def _check_leases(h: Harness) -> None:
    """Every clock here runs at the same rate (all replicas tick together), so at any moment
    at most one replica may hold a lease, and its state holds every acknowledged value."""
    holders = [
        n for n, node in h.nodes.items() if node.replica is not None and node.replica.read_lease()
    ]
    assert len(holders) <= 1, f"two lease holders at once: {holders}"
    if holders:
        state = set(h.nodes[holders[0]].state)
        missing = set(_acknowledged_values(h)) - state
        assert not missing, f"lease holder {holders[0]} misses acknowledged {sorted(missing)}"


def _acknowledged_values(h: Harness) -> dict[bytes, NodeId]:
    out = {}
    for node in h.nodes.values():
        for pid in node.acknowledged:
            label = h.labels.get((node.node_id, pid))  # reconfigurations have none
            if label is not None:
                out[label.encode()] = node.node_id
    return out


def _recover(h: Harness) -> None:
    h.heal()
    for node_id, node in h.nodes.items():
        if node.replica is None:
            h.restart(node_id)
        elif node.disk_stalled:
            h.unstall_disk(node_id)
    h.run(CALM_TICKS)


def _check(h: Harness) -> None:
    acked = _acknowledged_values(h)  # before the calm phase: survivors of the faults
    _recover(h)
    chosen = {e.command for e in h.chosen.values()}
    assert set(acked) <= chosen, "an acknowledged proposal was lost"
    leaders = h.leaders()
    assert len(leaders) == 1, f"no single leader after healing: {leaders}"
    leader = leaders[0]
    members = h.replica(leader).config.node_ids
    states = [h.nodes[n].state for n in members]
    assert all(s == states[0] for s in states), "members did not converge"
    h.propose(leader, b"after")
    h.run(5)
    assert h.nodes[leader].state[-1] == b"after"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**31))
def test_random_faults_on_three_replicas_never_break_agreement_or_lose_acks(seed: int) -> None:
    _check(_schedule(Config.standard([1, 2, 3]), seed))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**31))
def test_random_faults_on_six_replicas_never_break_agreement_or_lose_acks(seed: int) -> None:
    _check(_schedule(Config.aurora([1, 2, 3, 4, 5, 6]), seed))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**31))
def test_random_faults_during_reconfigurations_never_break_agreement(seed: int) -> None:
    _check(_schedule(Config.standard([1, 2, 3]), seed, spare=(4,)))
