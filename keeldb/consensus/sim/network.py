"""A simulated network: per-message delay, drop, duplication and reordering, and symmetric
or one-way partitions that heal.

It owns the decision of whether and when each message arrives. It never delivers anything
itself: it returns arrival times and the world schedules them. All randomness comes from
the `random.Random` it is given.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    """Probabilities and delays, in simulated microseconds."""

    delay_min_us: int = 100
    delay_max_us: int = 2_000
    # A few messages take far longer, which reorders them behind later ones.
    slow_probability: float = 0.0
    slow_delay_max_us: int = 50_000
    drop_probability: float = 0.0
    duplicate_probability: float = 0.0

    def __post_init__(self) -> None:
        assert 0 <= self.delay_min_us <= self.delay_max_us
        assert 0.0 <= self.drop_probability < 1.0
        assert 0.0 <= self.duplicate_probability < 1.0


CALM = NetworkFaults()
STORMY = NetworkFaults(
    delay_min_us=100,
    delay_max_us=3_000,
    slow_probability=0.03,
    slow_delay_max_us=60_000,
    drop_probability=0.05,
    duplicate_probability=0.03,
)


class Network:
    def __init__(self, rng: random.Random, faults: NetworkFaults) -> None:
        self.rng = rng
        self.faults = faults
        # Directed links that lose everything: (from, to).
        self.blocked: set[tuple[Hashable, Hashable]] = set()
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def _delay(self) -> int:
        f = self.faults
        if f.slow_probability and self.rng.random() < f.slow_probability:
            return self.rng.randint(f.delay_max_us, max(f.delay_max_us, f.slow_delay_max_us))
        return self.rng.randint(f.delay_min_us, f.delay_max_us)

    def send(self, now_us: int, src: Hashable, dst: Hashable) -> list[int]:
        """Arrival times for one message: none (lost), one, or two (duplicated)."""
        self.sent += 1
        if not self.connected(src, dst):
            self.dropped += 1
            return []
        if self.faults.drop_probability and self.rng.random() < self.faults.drop_probability:
            self.dropped += 1
            return []
        arrivals = [now_us + self._delay()]
        if (self.faults.duplicate_probability
                and self.rng.random() < self.faults.duplicate_probability):
            self.duplicated += 1
            arrivals.append(now_us + self._delay())
        return arrivals

    def connected(self, src: Hashable, dst: Hashable) -> bool:
        return (src, dst) not in self.blocked

    def partition(self, side_a: Sequence[Hashable], side_b: Sequence[Hashable],
                  one_way: bool) -> None:
        """Cut every link from side_a to side_b, and back too unless `one_way`."""
        for a in side_a:
            for b in side_b:
                if a == b:
                    continue
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()
