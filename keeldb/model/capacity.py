"""Capacity units: how many read and write units an operation on so many bytes consumes.

This module owns DynamoDB's capacity arithmetic and nothing else (no metering, no throttling;
those live with the partitions). The rules are from AWS's "DynamoDB item sizes and formats"
and "Read/write capacity mode" pages (Developer Guide, CapacityUnitCalculations.html and
read-write-operations.html):

- A strongly consistent read of up to 4 KB is 1 read capacity unit; an eventually consistent
  one is half of that; a transactional read is twice the strongly consistent units. Sizes are
  rounded up to the next 4 KB; a read that finds nothing still consumes one unit's worth.
  Query and Scan round up the summed size of all items read, not each item.
- A write of up to 1 KB is 1 write capacity unit, rounded up to the next 1 KB; a
  transactional write is twice that. A write of a missing item (a delete of nothing) still
  consumes 1 unit.
"""

from __future__ import annotations

from keeldb.model.limits import READ_UNIT_BYTES, WRITE_UNIT_BYTES


def _units(size_bytes: int, unit_bytes: int) -> int:
    assert size_bytes >= 0, size_bytes
    # At least one unit: DynamoDB charges a read or write that touches nothing as one unit.
    return max(1, -(-size_bytes // unit_bytes))


def read_units(size_bytes: int, *, consistent: bool, transactional: bool = False) -> float:
    """Read capacity units for reading `size_bytes` (the item, or a page's summed items)."""
    units = float(_units(size_bytes, READ_UNIT_BYTES))
    if transactional:
        return 2.0 * units
    if consistent:
        return units
    return units / 2.0


def write_units(size_bytes: int, *, transactional: bool = False) -> float:
    """Write capacity units for writing an item of `size_bytes` (the larger of the old and
    new images, as DynamoDB charges for updates and replacements)."""
    units = float(_units(size_bytes, WRITE_UNIT_BYTES))
    if transactional:
        return 2.0 * units
    return units
