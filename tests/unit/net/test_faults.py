"""The fault switch: off by default, partitions both ways, commands as plain dicts."""

from __future__ import annotations

import random

import pytest

from keeldb.net.faults import FaultCommandError, FaultSwitch


def test_a_new_switch_drops_nothing() -> None:
    switch = FaultSwitch()
    assert not switch.active
    assert not any(switch.drops("a", "b") for _ in range(1000))


def test_partition_blocks_every_link_between_groups_both_ways_and_none_within() -> None:
    switch = FaultSwitch()
    switch.partition([["n1"], ["n2", "n3"]])
    assert switch.drops("n1", "n2") and switch.drops("n2", "n1")
    assert switch.drops("n1", "n3") and switch.drops("n3", "n1")
    assert not switch.drops("n2", "n3")
    assert switch.dropped_count == 4


def test_block_is_one_way() -> None:
    switch = FaultSwitch()
    switch.block("a", "b")
    assert switch.drops("a", "b")
    assert not switch.drops("b", "a")


def test_drop_probability_loses_about_that_share() -> None:
    switch = FaultSwitch(rng=random.Random(7))
    switch.set_drop(0.3)
    lost = sum(switch.drops("a", "b") for _ in range(10_000))
    assert 2_500 < lost < 3_500


def test_heal_turns_every_fault_off() -> None:
    switch = FaultSwitch()
    switch.apply_command({"op": "partition", "groups": [["a"], ["b"]]})
    switch.apply_command({"op": "drop", "probability": 1.0})
    switch.apply_command({"op": "delay", "seconds": 0.5})
    assert switch.active
    status = switch.apply_command({"op": "heal"})
    assert not switch.active
    assert status["blocked"] == [] and status["drop"] == 0.0 and status["delay"] == 0.0


def test_commands_report_the_switch_status() -> None:
    switch = FaultSwitch()
    status = switch.apply_command({"op": "block", "src": "a", "dst": "b"})
    assert status["blocked"] == [["a", "b"]]


@pytest.mark.parametrize(
    "command",
    [
        {"op": "explode"},
        {"op": "drop"},
        {"op": "drop", "probability": 2},
        {"op": "delay", "seconds": -1},
        {"op": "partition", "groups": "a,b"},
        "heal",
    ],
)
def test_bad_commands_are_refused_with_a_fault_command_error(command: object) -> None:
    with pytest.raises(FaultCommandError):
        FaultSwitch().apply_command(command)  # type: ignore[arg-type]
