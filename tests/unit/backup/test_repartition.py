"""Re-partitioning a restore's items by the target cluster's ring (`route_items`): each item
goes to the partition that owns its partition key's hash, whatever the hash ranges of the
part it came in, and a plan that loads parts as they are is caught by the same check."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.cluster.backup_route import route_items
from keeldb.cluster.ring import Ring
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.schema import Table
from keeldb.model.keys import HASH_SPACE, partition_hash
from keeldb.storage.memory import MemoryLog, MemoryStore

ITEMS = 400


def _table() -> Table:
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    request = {
        "TableName": "things",
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    asyncio.run(catalog.create_table(db, request))
    table = catalog.find_table(db, "things")
    assert table is not None
    return table


def _items() -> list[tuple[dict[str, Any], int]]:
    return [({"pk": {"S": f"user{n % 97}"}, "sk": {"N": str(n)}}, 30 + n) for n in range(ITEMS)]


def _hash(item: dict[str, Any]) -> int:
    return int.from_bytes(partition_hash(item["pk"]), "big")


def _parts(items: list[Any], partitions: int) -> list[list[Any]]:
    """The items cut into the parts of a source with `partitions` even hash ranges."""
    ring = Ring.even(partitions)
    parts: list[list[Any]] = [[] for _ in range(partitions)]
    for item, size in items:
        parts[ring.partition_of(_hash(item))].append((item, size))
    return parts


def misplaced(ring: Ring, placed: dict[int, list[Any]]) -> list[Any]:
    """Items placed in a partition of `ring` that does not own their hash."""
    wrong = []
    for partition, items in placed.items():
        low, high = ring.range_of(partition)
        wrong += [item for item, _ in items if not low <= _hash(item) < high]
    return wrong


def _restored(plan: Any, source_partitions: int, target: Ring) -> dict[int, list[Any]]:
    placed: dict[int, list[Any]] = {}
    for number, part in enumerate(_parts(_items(), source_partitions)):
        for partition, share in plan(number, part, target).items():
            placed.setdefault(partition, []).extend(share)
    return placed


def _routed(number: int, part: list[Any], target: Ring) -> dict[int, list[Any]]:
    del number
    return route_items(target, _table(), part)


def _as_is(number: int, part: list[Any], target: Ring) -> dict[int, list[Any]]:
    return {number % len(target): part}  # the broken variant: no re-partitioning


@pytest.mark.parametrize(("source", "target"), [(1, 4), (3, 4), (4, 2), (2, 3), (4, 4)])
def test_every_item_lands_once_in_the_partition_that_owns_it(source: int, target: int) -> None:
    ring = Ring.even(target)
    placed = _restored(_routed, source, ring)
    assert misplaced(ring, placed) == []
    keys = sorted(item["sk"]["N"] for items in placed.values() for item, _ in items)
    assert keys == sorted(str(n) for n in range(ITEMS))


@pytest.mark.parametrize(("source", "target"), [(3, 4), (4, 2), (2, 3)])
def test_loading_parts_as_they_are_is_caught(source: int, target: int) -> None:
    ring = Ring.even(target)
    assert misplaced(ring, _restored(_as_is, source, ring)) != []


def test_items_keep_their_order_and_sizes_within_a_partition() -> None:
    ring = Ring(tuple(sorted({0, HASH_SPACE // 3, HASH_SPACE // 2})))
    items = _items()
    routed = route_items(ring, _table(), items)
    for share in routed.values():
        numbers = [int(item["sk"]["N"]) for item, _ in share]
        assert numbers == sorted(numbers)
        assert all(size == 30 + int(item["sk"]["N"]) for item, size in share)


def test_an_item_without_its_partition_key_fails_the_restore() -> None:
    with pytest.raises(RuntimeError, match="no valid partition key 'pk'"):
        route_items(Ring.even(2), _table(), [({"sk": {"N": "1"}}, 10)])
