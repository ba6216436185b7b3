"""Safety and liveness checkers fed by the simulated world.

It owns the four verdicts of a run: agreement (no slot chosen with two values), durability
(every acknowledged command survives into every later leader and into every caught-up
replica at the end), linearizability of the clients' history (delegated to
`linearizability.check_history`), and liveness (after the faults heal, every request
finishes within a bound of simulated time). Checkers only observe: they never change what
the world does, so a run is the same with or without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keeldb.consensus.sim.linearizability import (
    SEARCH_STEPS_MAX,
    HistoryResult,
    Operation,
    OpKind,
    Verdict,
    check_history,
)
from keeldb.consensus.sim.trace import canonical, short

AGREEMENT = "agreement"
DURABILITY = "durability"
LINEARIZABILITY = "linearizability"
LIVENESS = "liveness"
# Not a checker of its own: an assertion (or any exception) inside the core or the world
# stopped the run, which is a failure of that seed like any violation.
EXCEPTION = "exception"
CHECKERS = (AGREEMENT, DURABILITY, LINEARIZABILITY, LIVENESS, EXCEPTION)


@dataclass(frozen=True, slots=True)
class Violation:
    checker: str
    time_us: int
    message: str

    def __str__(self) -> str:
        return f"{self.checker} violated at {self.time_us / 1000:.3f}ms: {self.message}"


class AgreementChecker:
    """Remembers, per slot, the first value anyone applied or reported chosen there."""

    def __init__(self) -> None:
        # slot -> (canonical value, where first seen, readable value)
        self.chosen: dict[int, tuple[str, str, str]] = {}
        self.violations: list[Violation] = []

    def observe(self, time_us: int, slot: int, value: object, source: str) -> None:
        text = canonical(value)
        first = self.chosen.setdefault(slot, (text, source, short(value)))
        if first[0] != text and len(self.violations) < 10:
            self.violations.append(Violation(
                AGREEMENT, time_us,
                f"slot {slot} chosen as {first[2][:200]} (applied at {first[1]}) "
                f"and as {short(value)[:200]} (applied at {source})",
            ))


class DurabilityChecker:
    """Acknowledged commands, by (client, request), and when they were acknowledged."""

    def __init__(self) -> None:
        self.acknowledged: dict[tuple[int, int], int] = {}
        self.violations: list[Violation] = []

    def acknowledge(self, time_us: int, client: int, request: int) -> None:
        self.acknowledged.setdefault((client, request), time_us)

    def check_replica(self, time_us: int, who: str, has_applied: object,
                      acknowledged_before_us: int) -> None:
        """Every command acknowledged before `acknowledged_before_us` must be applied at
        `who`. `has_applied(client, request)` answers from that replica's state."""
        assert callable(has_applied)
        missing = sorted(
            key for key, at in self.acknowledged.items()
            if at < acknowledged_before_us and not has_applied(*key)
        )
        if missing and len(self.violations) < 10:
            shown = ", ".join(f"client {c} request {r}" for c, r in missing[:5])
            self.violations.append(Violation(
                DURABILITY, time_us,
                f"{who} lacks {len(missing)} acknowledged command(s): {shown}",
            ))


class HistoryRecorder:
    """Invocations and responses of the clients, in one total real-time order."""

    def __init__(self) -> None:
        self.position = 0
        self.open: dict[tuple[int, int], Operation] = {}
        self.done: list[Operation] = []
        self.invoked_at_us: dict[tuple[int, int], int] = {}

    def _next(self) -> int:
        self.position += 1
        return self.position

    def invoke(self, time_us: int, client: int, request: int, kind: OpKind, key: str,
               value: bytes | None, expected: bytes | None) -> None:
        op = Operation(client, kind, key, self._next(), None, value=value, expected=expected)
        self.open[(client, request)] = op
        self.invoked_at_us[(client, request)] = time_us

    def respond(self, client: int, request: int, output: bytes | bool | None) -> None:
        op = self.open.pop((client, request))
        self.done.append(Operation(op.client, op.kind, op.key, op.call, self._next(),
                                   value=op.value, expected=op.expected, output=output))

    def abandon(self, client: int, request: int) -> None:
        """The client gave up: the outcome stays unknown (the operation may still apply)."""
        self.done.append(self.open.pop((client, request)))

    def operations(self) -> list[Operation]:
        return self.done + list(self.open.values())


class LivenessChecker:
    """After the heal time, every request in flight or issued must finish within a bound."""

    def __init__(self, bound_us: int) -> None:
        self.bound_us = bound_us
        self.heal_us: int | None = None
        self.violations: list[Violation] = []

    def healed(self, time_us: int) -> None:
        self.heal_us = time_us

    def abandoned(self, time_us: int, client: int, request: int, invoked_us: int) -> None:
        """A client gave up. Only a request issued after the heal had its whole deadline
        in a healed world; one issued before may have spent it waiting out the faults."""
        if self.heal_us is not None and invoked_us >= self.heal_us and len(self.violations) < 10:
            self.violations.append(Violation(
                LIVENESS, time_us,
                f"client {client} gave up on request {request}, issued after the faults "
                f"healed, after {(time_us - invoked_us) / 1000:.0f}ms",
            ))

    def check_end(self, time_us: int, history: HistoryRecorder) -> None:
        """Called at heal + bound. Clients stop issuing well before that, so a request
        still open had the faults healed for most of the bound and did not finish."""
        if self.heal_us is None:
            return
        late = sorted(history.open)
        if late and len(self.violations) < 10:
            shown = ", ".join(f"client {c} request {r}" for c, r in late[:5])
            self.violations.append(Violation(
                LIVENESS, time_us,
                f"{len(late)} request(s) unfinished {(time_us - self.heal_us) / 1000:.0f}ms "
                f"after the faults healed: {shown}",
            ))


@dataclass(slots=True)
class Verdicts:
    violations: list[Violation] = field(default_factory=list)
    linearizability: HistoryResult | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def checkers_failed(self) -> list[str]:
        return sorted({v.checker for v in self.violations})


def check_linearizability(time_us: int, history: HistoryRecorder,
                          steps_max: int = SEARCH_STEPS_MAX) -> tuple[HistoryResult, list[Violation]]:
    result = check_history(history.operations(), steps_max)
    violations = []
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        violations.append(Violation(LINEARIZABILITY, time_us, result.describe()))
    return result, violations
