"""Simulated clocks: each node ticks at its own rate, drifting within a stated bound.

It owns when each node's next tick falls in simulated time. A node's tick interval is the
nominal interval scaled by a rate in [1 - drift, 1 + drift] that wanders (a bounded random
walk), so two nodes' notions of elapsed time differ by up to the bound the lease argument
assumes, and no more. All randomness comes from the `random.Random` it is given.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from math import ceil, floor


@dataclass(slots=True)
class DriftingClock:
    rng: random.Random
    tick_us: int
    drift_max: float  # relative, e.g. 0.05: the clock runs at 95..105 percent of real time
    rate: float = 1.0  # ticks per nominal tick period
    pinned: bool = False  # held at its rate (an adversary chose it) instead of wandering

    def __post_init__(self) -> None:
        assert self.tick_us > 0
        assert 0.0 <= self.drift_max < 0.5
        # Start at an extreme half the time: the worst case for leases is two clocks at
        # opposite ends of the bound.
        if self.rng.random() < 0.5:
            self.rate = self.rng.choice([1.0 - self.drift_max, 1.0 + self.drift_max])
        else:
            self.rate = self.rng.uniform(1.0 - self.drift_max, 1.0 + self.drift_max)

    def next_interval_us(self) -> int:
        """Simulated microseconds until this node's next tick: the nominal interval divided
        by the clock's rate, kept inside the bound after rounding to whole microseconds."""
        step = self.drift_max / 10
        if not self.pinned:
            self.rate += self.rng.uniform(-step, step)
        self.rate = min(1.0 + self.drift_max, max(1.0 - self.drift_max, self.rate))
        shortest = ceil(self.tick_us / (1.0 + self.drift_max))
        longest = floor(self.tick_us / (1.0 - self.drift_max))
        return min(longest, max(shortest, round(self.tick_us / self.rate)))

    def pin(self, fast: bool) -> None:
        """Hold the clock at one end of the bound: the worst case for leases is the old
        leader's clock at the slow end and everyone else's at the fast end."""
        self.rate = 1.0 + self.drift_max if fast else 1.0 - self.drift_max
        self.pinned = True

    def unpin(self) -> None:
        self.pinned = False
