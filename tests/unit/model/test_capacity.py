"""Capacity units as DynamoDB computes them ("DynamoDB item sizes and formats")."""

from __future__ import annotations

import pytest

from keeldb.model.capacity import read_units, write_units


@pytest.mark.parametrize(
    ("size", "strong", "eventual"),
    [
        (0, 1.0, 0.5),  # a read that finds nothing still costs one unit's worth
        (1, 1.0, 0.5),
        (4096, 1.0, 0.5),
        (4097, 2.0, 1.0),
        (8192, 2.0, 1.0),
        (400 * 1024, 100.0, 50.0),
        (1024 * 1024, 256.0, 128.0),
    ],
)
def test_reads_cost_one_unit_per_4_kb_rounded_up_and_half_when_eventually_consistent(
    size: int, strong: float, eventual: float
) -> None:
    assert read_units(size, consistent=True) == strong
    assert read_units(size, consistent=False) == eventual


@pytest.mark.parametrize(
    ("size", "units"), [(0, 1.0), (1, 1.0), (1024, 1.0), (1025, 2.0), (400 * 1024, 400.0)]
)
def test_writes_cost_one_unit_per_1_kb_rounded_up(size: int, units: float) -> None:
    assert write_units(size) == units


def test_transactional_reads_and_writes_cost_twice_as_much() -> None:
    assert read_units(4097, consistent=True, transactional=True) == 4.0
    assert read_units(10, consistent=False, transactional=True) == 2.0
    assert write_units(1025, transactional=True) == 4.0
