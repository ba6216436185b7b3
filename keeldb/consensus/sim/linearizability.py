"""A linearizability checker for key-value histories: Wing & Gong's search with Lowe's
memoization, split per key.

It owns the model of a single register with get/put/cas (`KvModel`), the shape of one
recorded operation (`Operation`), and the search (`check_history`). A history is
linearizable iff every key's sub-history is (Herlihy & Wing 1990, locality; Porcupine calls
this P-compositionality), so each key is searched on its own, which keeps the search small.

The search (Lowe, "Testing for linearizability", 2017, the "just-in-time linearization
with a cache" variant of Wing & Gong 1993) walks the history in real-time order; at each
call it tries to linearize that operation now, remembers the pair (set of linearized
operations, model state) it reached so it never explores it twice, and backtracks when it
meets the return of an operation it has not yet linearized.

Operations whose response never arrived (the client gave up) have no return event: they
may take effect at any point after their call or never, which the search expresses by
placing their return after everything else and accepting any output for them.

This module never does IO and never uses randomness; it is a pure function of the history.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import assert_never

# Default bound on search steps per key; past it the verdict is UNKNOWN, never a guess.
SEARCH_STEPS_MAX = 2_000_000


class OpKind(enum.Enum):
    GET = "get"
    PUT = "put"
    CAS = "cas"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as the client saw it.

    `call` and `ret` are positions in one total real-time order of events (the simulator
    uses its event sequence), so `a.ret < b.call` means a finished before b started.
    `ret is None` means the client never learned the outcome. `output` is the value a get
    returned (None for an absent key), whether a cas succeeded, or None for a put.
    """

    client: int
    kind: OpKind
    key: str
    call: int
    ret: int | None
    value: bytes | None = None
    expected: bytes | None = None
    output: bytes | bool | None = None

    def __post_init__(self) -> None:
        assert self.ret is None or self.ret > self.call


class KvModel:
    """Sequential specification of one key: its state is its value, None when absent."""

    @staticmethod
    def init() -> bytes | None:
        return None

    @staticmethod
    def step(state: bytes | None, op: Operation) -> tuple[bool, bytes | None]:
        """Whether `op` may take effect in `state` with the output recorded, and the state
        after it. An operation without a response accepts any output."""
        unknown = op.ret is None
        match op.kind:
            case OpKind.GET:
                return (unknown or op.output == state), state
            case OpKind.PUT:
                return True, op.value
            case OpKind.CAS:
                succeeded = state == op.expected
                if unknown:
                    return True, (op.value if succeeded else state)
                if op.output is not succeeded:
                    return False, state
                return True, (op.value if succeeded else state)
            case _:
                assert_never(op.kind)


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown (search budget exhausted)"


@dataclass(slots=True)
class KeyResult:
    key: str
    verdict: Verdict
    operations: int
    steps: int
    # For a violation: the operations of the key, in call order, to print for a reader.
    witness: list[Operation] = field(default_factory=list)


@dataclass(slots=True)
class HistoryResult:
    verdict: Verdict
    keys: list[KeyResult]

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    def describe(self) -> str:
        bad = [k for k in self.keys if k.verdict is not Verdict.LINEARIZABLE]
        lines = [f"{self.verdict.value}: {len(self.keys)} keys, {len(bad)} not proven"]
        for result in bad:
            lines.append(f"  key {result.key!r}: {result.verdict.value} "
                         f"({result.operations} ops, {result.steps} steps)")
            for i, op in enumerate(result.witness):
                last = i == len(result.witness) - 1
                mark = "  <- no linearization explains this response" if last else ""
                lines.append(f"    {format_operation(op)}{mark}")
        return "\n".join(lines)


def format_operation(op: Operation) -> str:
    ret = "..." if op.ret is None else str(op.ret)
    match op.kind:
        case OpKind.GET:
            what = f"get({op.key}) -> {op.output!r}"
        case OpKind.PUT:
            what = f"put({op.key}, {op.value!r})"
        case OpKind.CAS:
            what = f"cas({op.key}, {op.expected!r} -> {op.value!r}) -> {op.output!r}"
        case _:
            assert_never(op.kind)
    return f"[{op.call}, {ret}] client {op.client}: {what}"


class _Node:
    """One call or return event in the doubly linked list the search lifts entries out of."""

    __slots__ = ("index", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Operation | None, index: int, is_call: bool) -> None:
        self.op = op
        self.index = index
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _lift(call: _Node) -> None:
    ret = call.match
    assert ret is not None
    assert call.prev is not None
    call.prev.next = call.next
    assert call.next is not None
    call.next.prev = call.prev
    assert ret.prev is not None
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    assert ret is not None
    assert ret.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    assert call.prev is not None
    call.prev.next = call
    assert call.next is not None
    call.next.prev = call


def check_key(key: str, ops: Sequence[Operation], steps_max: int = SEARCH_STEPS_MAX,
              explain: bool = True) -> KeyResult:
    """Search for a linearization of the operations of one key. With `explain`, a
    violation comes with the operations around the first response no order explains."""
    # A get that never returned constrains nothing: it has no output and changes no state.
    ops = [op for op in ops if not (op.ret is None and op.kind is OpKind.GET)]
    if not ops:
        return KeyResult(key, Verdict.LINEARIZABLE, 0, 0)
    never = 1 + max(max(op.call, op.ret or 0) for op in ops)
    events: list[tuple[int, int, int]] = []  # (time, 0 call / 1 return, op index)
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        # A pending operation returns "after everything", in call order among themselves.
        events.append((op.ret if op.ret is not None else never + op.call, 1, i))
    events.sort()
    head = _Node(None, -1, False)
    calls: dict[int, _Node] = {}
    prev = head
    for _, kind, i in events:
        node = _Node(ops[i], i, kind == 0)
        if kind == 0:
            calls[i] = node
        else:
            node.match = calls[i]
            calls[i].match = node
        prev.next = node
        node.prev = prev
        prev = node
    for node in calls.values():
        # The search lifts a call by its match, which is the return; keep call.match = return.
        assert node.match is not None
    state = KvModel.init()
    linearized = 0
    cache: set[tuple[int, bytes | None]] = set()
    stack: list[tuple[_Node, bytes | None]] = []
    steps = 0
    entry = head.next
    while head.next is not None:
        steps += 1
        if steps > steps_max:
            return KeyResult(key, Verdict.UNKNOWN, len(ops), steps)
        assert entry is not None
        if entry.is_call:
            assert entry.op is not None
            ok, after = KvModel.step(state, entry.op)
            if ok:
                bits = linearized | (1 << entry.index)
                if (bits, after) not in cache:
                    cache.add((bits, after))
                    stack.append((entry, state))
                    state = after
                    linearized = bits
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # The return of an operation not yet linearized: this branch is dead.
            if not stack:
                witness = _shortest_failing_prefix(key, ops, steps_max) if explain else []
                return KeyResult(key, Verdict.NOT_LINEARIZABLE, len(ops), steps, witness)
            call, state = stack.pop()
            linearized &= ~(1 << call.index)
            _unlift(call)
            entry = call.next
    return KeyResult(key, Verdict.LINEARIZABLE, len(ops), steps)


# Operations shown from the end of the shortest failing prefix.
WITNESS_OPS_MAX = 12


def _as_of(ops: Sequence[Operation], time: int) -> list[Operation]:
    """The history as it stood at `time`: operations called by then, with responses that
    came later not known yet (those operations are pending)."""
    return [
        op if op.ret is not None and op.ret <= time else
        Operation(op.client, op.kind, op.key, op.call, None, op.value, op.expected)
        for op in ops
        if op.call <= time
    ]


def _shortest_failing_prefix(key: str, ops: Sequence[Operation],
                             steps_max: int) -> list[Operation]:
    """The operations around the first response that no order can explain, found by
    bisecting over event times. Each probe is itself a search, so this runs only on
    failure."""
    times = sorted({op.ret for op in ops if op.ret is not None})
    low, high = 0, len(times) - 1  # the history as of times[high] is known to fail
    while low < high:
        middle = (low + high) // 2
        probe = check_key(key, _as_of(ops, times[middle]), steps_max, explain=False)
        if probe.verdict is Verdict.NOT_LINEARIZABLE:
            high = middle
        else:
            low = middle + 1
    cut = times[high]
    culprit = [op for op in ops if op.ret == cut]
    shown = sorted((op for op in ops if op.call <= cut and op.ret != cut),
                   key=lambda op: op.call)
    # The operations called before the culprit's response, the nearest ones, then the
    # culprit itself (the response that no order can explain) last.
    return shown[-(WITNESS_OPS_MAX - 1):] + culprit


def check_history(
    ops: Iterable[Operation], steps_max: int = SEARCH_STEPS_MAX
) -> HistoryResult:
    """Check a whole history, one key at a time (keys in sorted order, for stable output)."""
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    results = [check_key(key, by_key[key], steps_max) for key in sorted(by_key)]
    verdict = Verdict.LINEARIZABLE
    if any(r.verdict is Verdict.NOT_LINEARIZABLE for r in results):
        verdict = Verdict.NOT_LINEARIZABLE
    elif any(r.verdict is Verdict.UNKNOWN for r in results):
        verdict = Verdict.UNKNOWN
    return HistoryResult(verdict, results)
