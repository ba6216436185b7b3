"""An Elle-style checker of transaction histories over list-append registers.

A history is a list of `Txn`: each a sequence of `Op`s (append a unique element to a key's
list, or read a key's whole list), its outcome ("ok": acknowledged, "fail": refused, so it
must have had no effect, "info": unknown) and the interval it ran in (invoke and complete
times, any monotonic unit). Because appended elements are unique and reads return whole
lists, every read names the exact version it saw, and the longest read of a key gives the
key's version order. From that the checker derives the dependency graph between committed
transactions (Adya's; Kingsbury and Alvaro, "Elle", VLDB 2020):

- ww: T1 appended the element just before T2's element on some key;
- wr: T2 read a list whose last element T1 appended;
- rw: T1 read a list, and T2 appended the element that follows its last one
  (an anti-dependency);
- rt (optional, for strict serializability): T1 completed before T2 was invoked (only as
  many of these as their transitive closure needs, so long histories stay cheap).

and searches it for cycles, reported with their edges and classified as G0 (ww only), G1c
(ww and wr), G-single (exactly one rw) or G2 (more rw). Without a cycle it also reports the
non-cyclic anomalies that list-append makes visible: G1a (a read saw an element of a
refused transaction), incompatible-order (two reads of one key that are not prefixes of one
another), duplicate elements, and lost-append (an acknowledged append missing from a read
invoked after it completed).

It is pure: no IO, no clock, no randomness.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
FAIL = "fail"
INFO = "info"

WW = "ww"
WR = "wr"
RW = "rw"
RT = "rt"


@dataclass(frozen=True, slots=True)
class Op:
    """("append", key, element) or ("read", key, the list read: a tuple, None if unknown)."""

    kind: str
    key: Any
    value: Any

    def __post_init__(self) -> None:
        assert self.kind in ("append", "read"), self.kind


def append(key: Any, element: Any) -> Op:
    return Op("append", key, element)


def read(key: Any, elements: Sequence[Any] | None) -> Op:
    return Op("read", key, None if elements is None else tuple(elements))


@dataclass(frozen=True, slots=True)
class Txn:
    id: Any
    ops: tuple[Op, ...]
    status: str = OK
    invoke: float = 0.0
    complete: float | None = None  # None: never completed (a crash): treated as "info"

    def __post_init__(self) -> None:
        assert self.status in (OK, FAIL, INFO), self.status


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str  # "G0", "G1c", "G-single", "G2", "G1a", "incompatible-order", ...
    # For a cycle: the steps (from txn id, edge kind, to txn id), the last returning to the first.
    cycle: tuple[tuple[Any, str, Any], ...] = ()
    detail: str = ""


@dataclass(slots=True)
class Result:
    anomalies: list[Anomaly] = field(default_factory=list)
    edges: int = 0  # how many dependency edges the graph had (a sanity figure for tests)

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def kinds(self) -> set[str]:
        return {a.kind for a in self.anomalies}


def check(history: Iterable[Txn], *, realtime: bool = False) -> Result:
    """Check a history; `realtime` adds real-time edges (strict serializability)."""
    txns = list(history)
    result = Result()
    by_id = {t.id: t for t in txns}
    assert len(by_id) == len(txns), "transaction ids must be unique"

    writer: dict[tuple[Any, Any], Any] = {}  # (key, element) -> id of the appending txn
    for t in txns:
        for op in t.ops:
            if op.kind == "append":
                if (op.key, op.value) in writer:
                    result.anomalies.append(
                        Anomaly("duplicate-append", detail=f"{op.value!r} appended twice")
                    )
                writer[(op.key, op.value)] = t.id

    # Which transactions took effect: ok ones, and info ones that some read observed.
    observed: set[Any] = set()
    reads: dict[Any, list[tuple[Any, tuple[Any, ...]]]] = {}
    for t in txns:
        for op in t.ops:
            if op.kind == "read" and op.value is not None:
                if t.status == FAIL:
                    continue
                reads.setdefault(op.key, []).append((t.id, op.value))
                for element in op.value:
                    origin = writer.get((op.key, element))
                    if origin is not None:
                        observed.add(origin)
    committed = {t.id for t in txns if t.status == OK or (t.status == INFO and t.id in observed)}

    for key, key_reads in reads.items():
        for reader, elements in key_reads:
            if len(set(elements)) != len(elements):
                result.anomalies.append(
                    Anomaly("duplicate-elements", detail=f"{reader!r} read {key!r}={elements}")
                )
            for element in elements:
                origin = writer.get((key, element))
                if origin is None:
                    result.anomalies.append(
                        Anomaly("garbage-read", detail=f"{reader!r} read unknown {element!r}")
                    )
                elif by_id[origin].status == FAIL:
                    result.anomalies.append(
                        Anomaly(
                            "G1a",
                            detail=f"{reader!r} read {element!r} of refused {origin!r}",
                        )
                    )

    # Version order of each key: the longest read; every other read must be a prefix of it.
    orders: dict[Any, tuple[Any, ...]] = {}
    for key, key_reads in reads.items():
        longest = max((elements for _, elements in key_reads), key=len)
        for reader, elements in key_reads:
            if longest[: len(elements)] != elements:
                result.anomalies.append(
                    Anomaly(
                        "incompatible-order",
                        detail=f"{key!r}: {reader!r} read {elements}, another {longest}",
                    )
                )
        orders[key] = longest

    graph: dict[Any, dict[Any, str]] = {t: {} for t in committed}

    def edge(a: Any, kind: str, b: Any) -> None:
        if a == b or a not in graph or b not in graph:
            return
        # Keep the strongest explanation: ww/wr over rw over rt.
        rank = {WW: 0, WR: 0, RW: 1, RT: 2}
        current = graph[a].get(b)
        if current is None or rank[kind] < rank[current]:
            graph[a][b] = kind
            result.edges += current is None

    unseen: dict[Any, list[Any]] = {}  # key -> committed appenders no read has seen
    seen = {key: set(order) for key, order in orders.items()}
    for t in txns:
        if t.id in committed:
            for op in t.ops:
                if op.kind == "append" and op.value not in seen.get(op.key, ()):
                    unseen.setdefault(op.key, []).append(t.id)
    for key, order in orders.items():
        writers = [writer.get((key, e)) for e in order]
        for first, second in itertools.pairwise(writers):
            edge(first, WW, second)
        # Committed appends no read saw come after the longest read's last element.
        for later in unseen.get(key, ()):
            if writers:
                edge(writers[-1], WW, later)
        for reader, elements in reads[key]:
            if order[: len(elements)] != elements:
                continue
            if elements:
                edge(writer.get((key, elements[-1])), WR, reader)
            if len(elements) < len(order):
                edge(reader, RW, writer.get((key, order[len(elements)])))
            else:
                for later in unseen.get(key, ()):
                    edge(reader, RW, later)

    if realtime:
        for earlier, later in _realtime_edges([t for t in txns if t.id in committed]):
            edge(earlier, RT, later)
        result.anomalies.extend(_lost_appends(txns, by_id, reads, orders))

    for cycle in _cycles(graph):
        kinds = [kind for _, kind, _ in cycle]
        rw = kinds.count(RW)
        if rw == 0 and all(k == WW for k in kinds if k != RT):
            name = "G0"
        elif rw == 0:
            name = "G1c"
        elif rw == 1:
            name = "G-single"
        else:
            name = "G2"
        result.anomalies.append(Anomaly(name, tuple(cycle)))
    return result


def _realtime_edges(txns: list[Txn]) -> list[tuple[Any, Any]]:
    """Real-time edges (T1 completed before T2 was invoked), only as many as their
    transitive closure needs: a sweep in time order keeps the frontier, the completed
    transactions that no completed one follows yet; each transaction invoked gets an edge
    from every member of the frontier, and when it completes it replaces, in the frontier,
    those it had edges from. So a history of n transactions gets about n times its
    concurrency edges instead of n squared, with the same paths."""
    events: list[tuple[float, int, int]] = []  # (time, 0 invoke / 1 complete, index)
    for index, t in enumerate(txns):
        events.append((t.invoke, 0, index))
        if t.complete is not None:
            events.append((t.complete, 1, index))
    # At equal times invokes come first: a transaction completed at the very moment another
    # was invoked does not precede it.
    events.sort()
    frontier: set[int] = set()
    before: dict[int, set[int]] = {}
    edges: list[tuple[Any, Any]] = []
    for _, kind, index in events:
        if kind == 0:
            before[index] = set(frontier)
            edges.extend((txns[earlier].id, txns[index].id) for earlier in sorted(frontier))
        else:
            frontier -= before.pop(index, set())
            frontier.add(index)
    return edges


def _lost_appends(
    txns: list[Txn],
    by_id: dict[Any, Txn],
    reads: dict[Any, list[tuple[Any, tuple[Any, ...]]]],
    orders: dict[Any, tuple[Any, ...]],
) -> list[Anomaly]:
    """An acknowledged append missing from a read of its key invoked after it completed.
    A read that is a prefix of the key's version order holds exactly the elements before
    its length, so per key the reads are sorted by invocation and the shortest one from
    each point on answers for all; the other reads (already reported as incompatible) are
    searched one by one."""
    found: list[Anomaly] = []
    per_key: dict[Any, tuple[list[float], list[int], list[tuple[float, Any, set[Any]]]]] = {}
    for key, key_reads in reads.items():
        order = orders[key]
        prefix: list[tuple[float, int]] = []
        other: list[tuple[float, Any, set[Any]]] = []
        for reader, elements in key_reads:
            invoke = by_id[reader].invoke
            if order[: len(elements)] == elements:
                prefix.append((invoke, len(elements)))
            else:
                other.append((invoke, reader, set(elements)))
        prefix.sort()
        shortest = [0] * len(prefix)  # the shortest read from each position on
        low = None
        for position in range(len(prefix) - 1, -1, -1):
            length = prefix[position][1]
            low = length if low is None else min(low, length)
            shortest[position] = low
        per_key[key] = ([invoke for invoke, _ in prefix], shortest, other)
    places = {key: {e: i for i, e in enumerate(order)} for key, order in orders.items()}
    for t in txns:
        if t.status != OK or t.complete is None:
            continue
        for op in t.ops:
            if op.kind != "append" or op.key not in per_key:
                continue
            invokes, shortest, other = per_key[op.key]
            start = bisect.bisect_right(invokes, t.complete)
            place = places[op.key].get(op.value)
            missing = start < len(invokes) and (place is None or shortest[start] <= place)
            if not missing:
                missing = any(i > t.complete and op.value not in e for i, _, e in other)
            if missing:
                found.append(
                    Anomaly(
                        "lost-append",
                        detail=f"{t.id!r}'s {op.value!r} on {op.key!r} is missing from a "
                        f"read invoked after it completed",
                    )
                )
    return found


def _cycles(graph: dict[Any, dict[Any, str]]) -> list[list[tuple[Any, str, Any]]]:
    """One cycle per strongly connected component with more than one node (Tarjan, written
    iteratively so long histories do not exhaust the stack)."""
    index: dict[Any, int] = {}
    low: dict[Any, int] = {}
    on_stack: set[Any] = set()
    stack: list[Any] = []
    components: list[list[Any]] = []
    counter = 0
    for root, children_of_root in graph.items():
        if root in index:
            continue
        work: list[tuple[Any, Any]] = [(root, iter(children_of_root))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(graph, set(c), c[0]) for c in components]


def _cycle_in(graph: dict[Any, dict[Any, str]], members: set[Any], start: Any) -> list[Any]:
    """A shortest cycle through `start` inside one strongly connected component (BFS)."""
    parent: dict[Any, Any] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in graph[node]:
                if child not in members:
                    continue
                if child == start:
                    steps = [(node, graph[node][child], start)]
                    while parent[node] is not None:
                        previous = parent[node]
                        steps.append((previous, graph[previous][node], node))
                        node = previous
                    return list(reversed(steps))
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError("a strongly connected component without a cycle")
