"""The ring: a table's key space cut into hash-range partitions.

Every item key starts with an 8-byte partition hash of its partition key
(`keeldb.model.keys.partition_hash`), so a range of the ring is a contiguous range of store
keys and a Scan that walks partitions in ring order reads items in DynamoDB's hash order.
The ring is a list of boundaries (tokens) on [0, 2**64): partition i owns
[bounds[i], bounds[i + 1]). The initial ring cuts the space into equal ranges; a split adds a
boundary, so partitions keep their identity and only the split one changes.

It owns the arithmetic of ranges and nothing else: it never decides placement, and it never
does IO.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from keeldb.model.keys import HASH_SPACE, PARTITION_HASH_BYTES


@dataclass(frozen=True, slots=True)
class Ring:
    # Ascending lower bounds; bounds[0] is 0. Partition i owns [bounds[i], next bound).
    bounds: tuple[int, ...]

    def __post_init__(self) -> None:
        assert self.bounds, "a ring has at least one partition"
        assert self.bounds[0] == 0, self.bounds
        assert all(a < b for a, b in zip(self.bounds, self.bounds[1:], strict=False))
        assert self.bounds[-1] < HASH_SPACE

    @classmethod
    def even(cls, partitions: int) -> Ring:
        """`partitions` equal ranges of the ring."""
        assert partitions >= 1, partitions
        return cls(tuple(i * HASH_SPACE // partitions for i in range(partitions)))

    def __len__(self) -> int:
        return len(self.bounds)

    def range_of(self, partition: int) -> tuple[int, int]:
        """[low, high) of one partition; high may be HASH_SPACE (the end of the ring)."""
        low = self.bounds[partition]
        high = self.bounds[partition + 1] if partition + 1 < len(self.bounds) else HASH_SPACE
        return low, high

    def partition_of(self, hash_value: int) -> int:
        assert 0 <= hash_value < HASH_SPACE, hash_value
        return bisect.bisect_right(self.bounds, hash_value) - 1

    def partition_of_hash_bytes(self, digest: bytes) -> int:
        assert len(digest) == PARTITION_HASH_BYTES, digest
        return self.partition_of(int.from_bytes(digest, "big"))

    def split(self, partition: int, at: int | None = None) -> Ring:
        """The ring with `partition` cut in two at `at` (default: its middle)."""
        low, high = self.range_of(partition)
        at = (low + high) // 2 if at is None else at
        assert low < at < high, (low, at, high)
        return Ring(tuple(sorted((*self.bounds, at))))

    def overlapping(self, low: int, high: int) -> Sequence[int]:
        """The partitions that hold some hash in [low, high), in ring order."""
        if low >= high:
            return ()
        first = self.partition_of(low)
        last = self.partition_of(high - 1)
        return range(first, last + 1)
