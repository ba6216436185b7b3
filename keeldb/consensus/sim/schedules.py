"""Named fault schedules: which faults a run injects, and how hard.

It owns the mapping from a schedule name to the `RunConfig` fields it sets. `all-faults` is
what CI and `--seeds` run by default. The others focus on the shape of failure each
deliberately broken variant needs before a checker can see it (a broken lease is only
visible when two leaders overlap; a forgotten promise only when a voter reboots between
two competing ballots), so the mutation tests stay within a bounded number of seeds. It
never runs anything itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from keeldb.consensus.replica import Mutation
from keeldb.consensus.sim.network import CALM
from keeldb.consensus.sim.world import RunConfig

DEFAULT_SCHEDULE = "all-faults"

_QUIET_NEMESIS: dict[str, Any] = {
    "crash_weight": 0,
    "partition_weight": 0,
    "cut_leader_weight": 0,
    "isolate_leader_weight": 0,
    "lease_attack_weight": 0,
    "promise_attack_weight": 0,
    "reconfig_weight": 0,
    "restart_all_weight": 0,
    "crash_after_send_probability": 0.0,
    "crash_before_fsync_probability": 0.0,
    "crash_after_ack_probability": 0.0,
    "crash_after_promise_probability": 0.0,
}

# Two fault mixes run both as they are and with a pipelining driver (see SCHEDULES).
_COMPETING_BALLOTS: dict[str, Any] = {
    "nemesis_interval_us": 50_000,
    "crash_after_send_probability": 0.1,
    "crash_after_ack_probability": 0.02,
    "crash_after_promise_probability": 0.2,
    "isolate_leader_weight": 4,
    "fsync_max_us": 10_000,
    "clients": 8,
    "keys": 2,
}
_UNSYNCED_LEADER: dict[str, Any] = {
    **_QUIET_NEMESIS,
    "crash_weight": 4,
    "crash_after_send_probability": 0.3,
    "crash_before_fsync_probability": 0.3,
    "fsync_max_us": 20_000,
    "clients": 8,
    "keys": 2,
}

SCHEDULES: dict[str, dict[str, Any]] = {
    DEFAULT_SCHEDULE: {},
    "calm": {"nemesis": False, "network": CALM},
    # Two leaders at once: the old one keeps a lease through members the new one never
    # asked, while one voter reboots and forgets whom it heard. Long leases (28 ticks)
    # widen the overlap a broken lease wait would allow.
    "lease-overlap": {
        **_QUIET_NEMESIS,
        "lease_attack_weight": 10,
        "lease_ticks": 28,
        "election_ticks_min": 30,
        "election_ticks_max": 40,
        "client_misroute_probability": 0.5,
        "clients": 8,
        "keys": 2,
    },
    # A successor elected while the old leader is cut off, every voter rebooting right
    # after its promise, the network healing as they return (except between the leaders),
    # and a long check-quorum timeout so the old leader is still leading then.
    "forgotten-promise": {
        **_QUIET_NEMESIS,
        "promise_attack_weight": 10,
        "election_ticks_max": 60,
        "clients": 8,
        "keys": 2,
    },
    # The lease overlap with clocks at the edges of the drift bound the core assumes;
    # with `clock_drift` set beyond that bound, it shows the bound is what keeps reads
    # linearizable.
    "clock-skew": {
        **_QUIET_NEMESIS,
        "lease_attack_weight": 10,
        "clock_attack": True,
        "lease_ticks": 28,
        "election_ticks_min": 30,
        "election_ticks_max": 40,
        "client_misroute_probability": 0.5,
        "clients": 8,
        "keys": 2,
    },
    # Membership changing all the time (replace, add, remove, new quorums) while every
    # other fault goes on.
    "reconfig-storm": {"reconfig_weight": 10},
    # Competing ballots and votes in flight when machines lose power: leader isolation
    # healed mid-election, reboots right after promises and right after acknowledgements,
    # slow disks so that much is unsynced when the power goes.
    "competing-ballots": _COMPETING_BALLOTS,
    # A leader whose Accepts have left while its own disk is slow, losing power before its
    # fsync: a value then lives only on the followers that voted, and a successor elected
    # without them must not find it chosen anywhere. Exposes a leader that counts its own
    # vote before its record is durable.
    "unsynced-leader": _UNSYNCED_LEADER,
    # The same faults with every replica driven as a cluster node drives it: the next
    # Ready taken while the previous one's fsync runs (RunConfig.pipeline).
    "pipelined": {"pipeline": True},
    "pipelined-competing-ballots": {**_COMPETING_BALLOTS, "pipeline": True},
    # A pipelining leader losing power with several Readys written but not synced.
    "pipelined-unsynced-leader": {**_UNSYNCED_LEADER, "pipeline": True},
}

# The schedule each broken variant is run under by default.
MUTATION_SCHEDULES: dict[Mutation, str] = {
    Mutation.QUORUM_INTERSECTION_BROKEN: "lease-overlap",
    Mutation.ACK_BEFORE_PERSIST: "forgotten-promise",
    Mutation.LEASE_READ_WITHOUT_WAIT: "lease-overlap",
    Mutation.FORGET_PROMISE_ON_RESTART: "forgotten-promise",
    Mutation.RECOVERY_IGNORES_BALLOT: "forgotten-promise",
    Mutation.LEADER_VOTE_BEFORE_PERSIST: "unsynced-leader",
    Mutation.PIPELINED_VOTE_AT_ADVANCE: "pipelined-unsynced-leader",
}


def schedule_for(mutations: frozenset[Mutation]) -> str:
    """The default schedule for a set of mutations (the first one's, by name)."""
    for mutation in sorted(mutations, key=lambda m: m.name):
        return MUTATION_SCHEDULES[mutation]
    return DEFAULT_SCHEDULE


def config_for(seed: int, profile: str, mutations: frozenset[Mutation] = frozenset(),
               schedule: str | None = None, **overrides: Any) -> RunConfig:
    """The RunConfig of one seed under a named schedule (by default the mutations')."""
    name = schedule if schedule is not None else schedule_for(mutations)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    config = RunConfig(seed=seed, profile=profile, mutations=mutations, schedule=name)
    return replace(config, **{**SCHEDULES[name], **overrides})
