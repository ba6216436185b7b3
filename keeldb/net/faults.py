"""The transport's fault-injection switch: drop, delay and partition messages between nodes.

Owns the fault settings of one node's transport and the decision, per message, whether it is
lost or held back; and the plain-dict command form in which a test (or an operator, through
whatever admin endpoint exposes it) changes them at run time. Everything is off unless
someone turns it on. It never touches sockets or clocks: the transport asks it and acts.

Faults act on the node's own traffic in both directions: a message is dropped when it goes
out over a blocked link or comes in over one. So isolating a node needs only that node's
switch (or only its peers'): `partition([["node1"], ["node2", "node3"]])` applied in node1's
process alone cuts node1 off from both others, both ways.

Channels whose names start with "_" belong to the transport itself (fault control, ping)
and are never faulted: a partitioned node can still be healed from outside.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DELAY_SECONDS_MAX = 60.0  # a longer delay is a mistake in the test, not a network


class FaultCommandError(ValueError):
    """A fault command that is not understood."""


@dataclass(slots=True)
class FaultSwitch:
    """What the network does to this node's messages. All off by default."""

    drop_probability: float = 0.0
    delay_seconds: float = 0.0
    # Directed links (source node, destination node) whose messages are lost.
    blocked: set[tuple[str, str]] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)
    dropped_count: int = 0  # messages lost to a fault so far

    @property
    def active(self) -> bool:
        return bool(self.drop_probability or self.delay_seconds or self.blocked)

    def drops(self, source: str, destination: str) -> bool:
        """Whether one message from `source` to `destination` is lost (counts it if so)."""
        lost = (source, destination) in self.blocked or (
            self.drop_probability > 0 and self.rng.random() < self.drop_probability
        )
        if lost:
            self.dropped_count += 1
        return lost

    def is_blocked(self, source: str, destination: str) -> bool:
        return (source, destination) in self.blocked

    def set_drop(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise FaultCommandError(f"drop probability must be within [0, 1], got {probability}")
        self.drop_probability = float(probability)

    def set_delay(self, seconds: float) -> None:
        if not 0.0 <= seconds <= DELAY_SECONDS_MAX:
            raise FaultCommandError(f"delay must be within [0, {DELAY_SECONDS_MAX}] seconds")
        self.delay_seconds = float(seconds)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Block every link between nodes of different groups, both ways."""
        sets = [sorted(set(group)) for group in groups]
        for i, first in enumerate(sets):
            for second in sets[i + 1 :]:
                for a in first:
                    for b in second:
                        self.blocked.add((a, b))
                        self.blocked.add((b, a))

    def block(self, source: str, destination: str) -> None:
        """One-way loss: messages from `source` to `destination` are lost."""
        self.blocked.add((source, destination))

    def heal(self) -> None:
        """Turn every fault off."""
        self.blocked.clear()
        self.drop_probability = 0.0
        self.delay_seconds = 0.0

    def status(self) -> dict[str, Any]:
        return {
            "drop": self.drop_probability,
            "delay": self.delay_seconds,
            "blocked": [list(link) for link in sorted(self.blocked)],
            "dropped": self.dropped_count,
        }

    def apply_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """Change the settings from a plain dict; returns the status after it.

        Commands: {"op": "drop", "probability": p}, {"op": "delay", "seconds": s},
        {"op": "partition", "groups": [[ids...], [ids...]]}, {"op": "block", "src": a,
        "dst": b}, {"op": "heal"}, {"op": "status"}.
        """
        if not isinstance(command, dict):
            raise FaultCommandError("a fault command is a dict with an 'op'")
        op = command.get("op")
        try:
            match op:
                case "drop":
                    self.set_drop(float(command["probability"]))
                case "delay":
                    self.set_delay(float(command["seconds"]))
                case "partition":
                    groups = command["groups"]
                    if not isinstance(groups, list) or not all(
                        isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups
                    ):
                        raise FaultCommandError("partition groups are lists of node ids")
                    self.partition(groups)
                case "block":
                    self.block(str(command["src"]), str(command["dst"]))
                case "heal":
                    self.heal()
                case "status":
                    pass
                case _:
                    raise FaultCommandError(f"unknown fault command {op!r}")
        except (KeyError, TypeError) as error:
            raise FaultCommandError(f"fault command {op!r}: missing or bad field {error}") from None
        return self.status()
