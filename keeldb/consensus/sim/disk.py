"""A simulated disk for one node: records are volatile until fsync; a crash keeps what was
synced plus, possibly, a prefix of what was not (a torn tail).

It owns only the split between durable and volatile records. It never interprets records:
rebuilding a replica from them is `DurableState.replay`'s job. Randomness comes only from
the `random.Random` handed to `crash`.
"""

from __future__ import annotations

import random
from typing import Any


class Disk:
    def __init__(self) -> None:
        self.durable: list[Any] = []
        self.volatile: list[Any] = []
        self.writes = 0
        self.syncs = 0

    def write(self, records: list[Any]) -> None:
        self.volatile.extend(records)
        self.writes += 1

    def fsync(self) -> None:
        self.durable.extend(self.volatile)
        self.volatile.clear()
        self.syncs += 1

    def crash(self, rng: random.Random, torn_probability: float) -> int:
        """Lose what was not synced, except that with `torn_probability` a random prefix of
        it reached the platter before power went (the record after that prefix, torn, fails
        its checksum and is dropped, which is the same as not being there). Returns how
        many unsynced records survived."""
        kept = 0
        if self.volatile and rng.random() < torn_probability:
            kept = rng.randrange(len(self.volatile) + 1)
        self.durable.extend(self.volatile[:kept])
        self.volatile.clear()
        return kept
