"""Reconfiguration through configuration entries in the log, effective a window later."""

from __future__ import annotations

import pytest

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import Prepare
from keeldb.consensus.replica import Options, Role
from keeldb.consensus.types import Config, ConfigError, Member, NodeId, Slot

OPTS = Options(pipeline_slots_max=4, reconfig_window_slots=4)
STANDARD = Config.standard([1, 2, 3])


def _group(extra: tuple[int, ...] = (4,)) -> Harness:
    h = Harness(STANDARD, options=OPTS, extra_nodes=extra)
    h.elect(1)
    return h


def test_a_configuration_governs_slots_from_a_window_after_its_own() -> None:
    h = _group()
    h.propose(1, b"a")
    h.deliver_all()
    assert h.replica(1).propose_reconfig(Config.standard([1, 2, 4])) is not None
    h.deliver_all()
    first, config = h.replica(1).configs[-1]
    assert first == 2 + OPTS.reconfig_window_slots
    assert config.node_ids == (1, 2, 4)
    assert config.epoch == 2  # the slot of its configuration entry


def test_the_leader_pads_the_window_so_the_change_takes_effect_without_traffic() -> None:
    h = _group()
    h.replica(1).propose_reconfig(Config.standard([1, 2, 4]))
    h.run(3)
    assert h.replica(1).config.node_ids == (1, 2, 4)
    assert h.replica(1).commit_slot >= OPTS.reconfig_window_slots


def test_writes_continue_during_and_after_replacing_a_member() -> None:
    h = _group()
    h.replica(1).propose_reconfig(Config.standard([1, 2, 4]))
    for i in range(10):
        h.propose(1, f"v{i}".encode())
        h.deliver_all()
    h.run(3)
    h.crash(3)
    for i in range(10, 15):
        h.propose(1, f"v{i}".encode())
    h.run(3)
    expected = [f"v{i}".encode() for i in range(15)]
    for n in (1, 2, 4):
        assert h.nodes[NodeId(n)].state == expected


def test_only_one_reconfiguration_is_in_flight_at_a_time() -> None:
    h = _group((4, 5))
    assert h.replica(1).propose_reconfig(Config.standard([1, 2, 4])) is not None
    assert h.replica(1).propose_reconfig(Config.standard([1, 2, 5])) is None
    h.run(3)
    assert h.replica(1).propose_reconfig(Config.standard([1, 2, 5])) is not None


def test_an_unsafe_configuration_is_refused_before_it_reaches_the_log() -> None:
    h = _group()
    members = tuple(Member(NodeId(i), "a") for i in (1, 2, 3, 4))
    with pytest.raises(ConfigError):
        h.replica(1).propose_reconfig(Config(members, q1=2, q2=2))


def test_a_removed_leader_steps_down_once_the_new_configuration_governs() -> None:
    h = _group()
    h.replica(1).propose_reconfig(Config.standard([2, 3, 4]))
    h.run(3)
    assert h.replica(1).role is not Role.LEADER
    h.run(40)
    leaders = h.leaders()
    assert len(leaders) == 1 and leaders[0] in (2, 3, 4)


def test_a_new_leader_runs_phase_one_in_every_configuration_it_may_use() -> None:
    h = _group((4, 5, 6))
    h.replica(1).propose_reconfig(Config.aurora([1, 2, 3, 4, 5, 6]))
    h.run(3)
    h.crash(1)
    h.campaign(2)
    prepared = {m.dst for m in h.net if isinstance(m, Prepare)}
    assert prepared == {1, 3, 4, 5, 6}
    h.deliver_all()
    assert h.replica(2).is_leader


def test_a_snapshot_carries_the_configuration_so_restarts_agree_on_membership() -> None:
    opts = Options(pipeline_slots_max=4, reconfig_window_slots=4, log_entries_retained=0)
    h = Harness(STANDARD, options=opts, extra_nodes=(4,))
    h.elect(1)
    h.replica(1).propose_reconfig(Config.standard([1, 2, 4]))
    h.run(3)
    h.snapshot(2)
    h.crash(2)
    h.restart(2)
    assert h.replica(2).entry_at(Slot(1)) is None  # the configuration entry is compacted
    assert h.replica(2).config.node_ids == (1, 2, 4)


def test_a_removed_member_that_missed_its_removal_cannot_depose_the_leader() -> None:
    h = _group()
    h.partition([3], [1, 2, 4])
    h.replica(1).propose_reconfig(Config.standard([1, 2, 4]))
    h.run(3)
    assert h.replica(1).config.node_ids == (1, 2, 4)
    h.heal()
    h.campaign(3)  # 3 still believes in the old configuration
    h.deliver_all()
    assert h.leaders() == [NodeId(1)]
    assert h.replica(1).ballot.round == 1


def _chosen_epochs(h: Harness, node: int) -> list[tuple[Slot, int]]:
    """(slot, epoch) of every configuration entry chosen in `node`'s log."""
    r = h.replica(node)
    out = []
    for slot in range(1, r.commit_slot + 1):
        le = r.entry_at(Slot(slot))
        if le is not None and le.entry.config is not None:
            out.append((Slot(slot), le.entry.config.epoch))
    return out


def test_back_to_back_reconfigurations_get_distinct_increasing_epochs() -> None:
    h = _group((4, 5))
    h.replica(1).propose_reconfig(Config.standard([1, 2, 4]))
    h.run(3)
    h.replica(1).propose_reconfig(Config.standard([1, 2, 5]))
    h.run(3)
    epochs = [epoch for _, epoch in _chosen_epochs(h, 1)]
    assert len(epochs) == 2
    assert 0 < epochs[0] < epochs[1]
    assert [c.epoch for _, c in h.replica(1).configs] == [epochs[1]]


def test_reconfigurations_of_two_leaders_get_distinct_epochs_though_both_knew_the_same() -> None:
    # Leader 1 proposes a configuration that only it votes for; leader 2 recovers it from
    # 1's promise and, before it is chosen again, proposes one of its own. Both are chosen,
    # and when each was proposed its proposer knew only the first configuration (epoch 0).
    h = _group((4, 5))
    assert h.replica(1).propose_reconfig(Config.standard([1, 2, 4])) is not None
    h.drop(src=1, kinds=("Accept",))
    h.campaign(2)
    h.deliver(kinds=("Prepare",))
    h.deliver(kinds=("Promise",))
    assert h.replica(2).is_leader
    assert h.replica(2).propose_reconfig(Config.standard([1, 2, 5])) is not None
    h.run(20)
    chosen = _chosen_epochs(h, 2)
    assert [h.replica(2).entry_at(s).entry.config.node_ids for s, _ in chosen] == [  # type: ignore[union-attr]
        (1, 2, 4),
        (1, 2, 5),
    ]
    assert [epoch for _, epoch in chosen] == [slot for slot, _ in chosen]
    assert chosen[0][1] < chosen[1][1]
    for n in (1, 2, 5):
        assert h.replica(n).config.node_ids == (1, 2, 5)
        assert h.replica(n).config.epoch == chosen[1][1]
