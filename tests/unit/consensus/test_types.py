"""Configurations, profiles, ballots, and the plain-data promise of messages and records."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from keeldb.consensus import messages as m
from keeldb.consensus.types import (
    NOOP,
    Ballot,
    Config,
    ConfigError,
    Entry,
    EntryKind,
    LogEntry,
    Member,
    NodeId,
    ProposalId,
    Slot,
    Snapshot,
)


def _members(*ids: int) -> tuple[Member, ...]:
    return tuple(Member(NodeId(i), "abc"[i % 3]) for i in ids)


def test_config_rejects_quorums_that_do_not_intersect() -> None:
    with pytest.raises(ConfigError, match="Q1 \\+ Q2 must exceed N"):
        Config(_members(1, 2, 3, 4), q1=2, q2=2).validate()


def test_config_accepts_the_smallest_intersecting_quorums() -> None:
    Config(_members(1, 2, 3, 4), q1=2, q2=3).validate()


@pytest.mark.parametrize(("q1", "q2"), [(0, 3), (4, 3), (3, 0), (3, 4)])
def test_config_rejects_quorums_outside_one_to_n(q1: int, q2: int) -> None:
    with pytest.raises(ConfigError):
        Config(_members(1, 2, 3), q1=q1, q2=q2).validate()


def test_config_rejects_repeated_node_ids() -> None:
    with pytest.raises(ConfigError, match="repeat"):
        Config(_members(1, 1, 2), q1=2, q2=2).validate()


def test_config_rejects_a_member_without_zone() -> None:
    members = (Member(NodeId(1), "a"), Member(NodeId(2), ""), Member(NodeId(3), "c"))
    with pytest.raises(ConfigError, match="zone"):
        Config(members, q1=2, q2=2).validate()


def test_config_rejects_a_group_of_only_log_only_members() -> None:
    members = tuple(Member(NodeId(i), "a", log_only=True) for i in (1, 2, 3))
    with pytest.raises(ConfigError, match="log-only"):
        Config(members, q1=2, q2=2).validate()


def test_standard_profile_is_three_nodes_over_three_zones_with_quorums_of_two() -> None:
    config = Config.standard([1, 2, 3])
    assert (config.n, config.q1, config.q2) == (3, 2, 2)
    assert config.zones == ("a", "b", "c")


def test_aurora_profile_is_six_nodes_two_per_zone_with_q1_three_and_q2_four() -> None:
    config = Config.aurora([1, 2, 3, 4, 5, 6])
    assert (config.n, config.q1, config.q2) == (6, 3, 4)
    per_zone = {z: sum(1 for x in config.members if x.zone == z) for z in config.zones}
    assert per_zone == {"a": 2, "b": 2, "c": 2}


def test_both_profiles_keep_writing_after_losing_any_zone() -> None:
    assert Config.standard([1, 2, 3]).survives_zone_loss()
    assert Config.aurora([1, 2, 3, 4, 5, 6]).survives_zone_loss()


def test_a_three_node_group_in_one_zone_does_not_survive_losing_it() -> None:
    members = tuple(Member(NodeId(i), "a") for i in (1, 2, 3))
    assert not Config(members, q1=2, q2=2).survives_zone_loss()


def test_profiles_refuse_the_wrong_number_of_nodes() -> None:
    with pytest.raises(ConfigError):
        Config.standard([1, 2])
    with pytest.raises(ConfigError):
        Config.aurora([1, 2, 3])


def test_count_ignores_non_members_and_duplicates() -> None:
    config = Config.standard([1, 2, 3])
    assert config.count([NodeId(1), NodeId(1), NodeId(9)]) == 1


def test_ballots_order_by_round_then_node() -> None:
    assert Ballot(1, NodeId(3)) < Ballot(2, NodeId(1))
    assert Ballot(2, NodeId(1)) < Ballot(2, NodeId(2))
    assert Ballot(2, NodeId(5)).next_for(NodeId(1)) == Ballot(3, NodeId(1))


def _samples() -> list[object]:
    config = Config.standard([1, 2, 3])
    b = Ballot(2, NodeId(1))
    entry = Entry(EntryKind.COMMAND, b"put", NodeId(1), ProposalId(7))
    le = LogEntry(Slot(3), b, entry)
    snap = Snapshot(Slot(2), ((Slot(3), config),), b"state")
    src, dst = NodeId(1), NodeId(2)
    return [
        m.Probe(src, dst, b),
        m.ProbeReply(src, dst, b, True),
        m.Prepare(src, dst, b, Slot(1)),
        m.Promise(src, dst, b, (le,), Slot(2), 5, snap),
        m.Accept(src, dst, b, ((Slot(3), entry), (Slot(4), NOOP)), Slot(2), 9),
        m.Accepted(src, dst, b, (Slot(3), Slot(4)), Slot(2), 9),
        m.Nack(src, dst, b, Ballot(3, NodeId(2))),
        m.Heartbeat(src, dst, b, Slot(2), 9),
        m.HeartbeatAck(src, dst, b, Slot(2), 9),
        m.CatchUp(src, dst, b, ((Slot(3), entry),), Slot(3)),
        m.InstallSnapshot(src, dst, b, snap),
        m.CatchUpAck(src, dst, b, Slot(3)),
        m.PromiseRecord(b),
        m.AcceptRecord(le),
        m.ChosenRecord(Slot(3), Entry(EntryKind.CONFIG, config=config)),
        m.CommitRecord(Slot(3)),
        m.SnapshotRecord(snap),
        m.IncarnationRecord(2),
    ]


def test_every_message_type_has_a_sample() -> None:
    sampled = {type(x) for x in _samples()}
    assert set(m.MESSAGE_TYPES) <= sampled


@pytest.mark.parametrize("value", _samples(), ids=lambda v: type(v).__name__)
def test_messages_and_records_are_frozen_slotted_and_picklable(value: object) -> None:
    assert dataclasses.is_dataclass(value)
    assert not hasattr(value, "__dict__")
    assert pickle.loads(pickle.dumps(value)) == value
    field = dataclasses.fields(value)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)
