"""The history checker at the size of the bank tests' histories (thousands of audits and
transfers): real-time order kept with as few edges as its transitive closure needs, and the
anomalies still found in a long history. Pure: no process is started."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.txn.checker import FAIL, OK, Txn, _realtime_edges, append, check, read

ACCOUNTS = 6


def closure(ids: list[Any], edges: list[tuple[Any, Any]]) -> set[tuple[Any, Any]]:
    successors: dict[Any, set[Any]] = {i: set() for i in ids}
    for a, b in edges:
        successors[a].add(b)
    out: set[tuple[Any, Any]] = set()
    for start in ids:
        stack = list(successors[start])
        reached: set[Any] = set()
        while stack:
            node = stack.pop()
            if node not in reached:
                reached.add(node)
                stack.extend(successors[node])
        out |= {(start, node) for node in reached}
    return out


intervals = st.lists(
    st.tuples(st.integers(0, 40), st.one_of(st.none(), st.integers(0, 8))),
    min_size=1,
    max_size=30,
)


@given(intervals)
@settings(max_examples=300, deadline=None)
def test_real_time_edges_reach_exactly_the_pairs_in_real_time_order(
    spans: list[tuple[int, int | None]],
) -> None:
    txns = [
        Txn(i, (), OK, invoke, None if length is None else invoke + length)
        for i, (invoke, length) in enumerate(spans)
    ]
    full = [
        (a.id, b.id) for a in txns for b in txns if a.complete is not None and a.complete < b.invoke
    ]
    ids = [t.id for t in txns]
    assert closure(ids, _realtime_edges(txns)) == closure(ids, full)


def bank_history(
    transfers: int, audits_per_transfer: int, seed: int
) -> tuple[list[Txn], dict[str, list[str]]]:
    """Serial transfers (each appends to two accounts) and audits reading every account,
    a few in flight at once (overlapping intervals)."""
    rng = random.Random(seed)
    lists: dict[str, list[str]] = {f"a{i}": [] for i in range(ACCOUNTS)}
    history: list[Txn] = []
    clock = 0.0
    for number in range(transfers):
        clock += 1.0
        source, target = rng.sample(sorted(lists), 2)
        tid = f"t{number}"
        lists[source].append(tid)
        lists[target].append(tid)
        history.append(Txn(tid, (append(source, tid), append(target, tid)), OK, clock, clock + 2))
        for audit in range(audits_per_transfer):
            clock += 0.25
            ops = tuple(read(key, list(value)) for key, value in lists.items())
            history.append(Txn(f"r{number}-{audit}", ops, OK, clock, clock + 2))
    return history, lists


def test_a_long_bank_history_gets_edges_in_proportion_to_its_length() -> None:
    history, _ = bank_history(transfers=500, audits_per_transfer=6, seed=1)
    result = check(history, realtime=True)
    assert result.valid, result.anomalies[:3]
    # Every transaction overlaps a handful of others: without the reduction there would be
    # about n * n / 2 real-time edges (over six million here).
    assert result.edges < 30 * len(history)


def test_a_lost_append_is_found_in_a_long_history() -> None:
    history, _ = bank_history(transfers=300, audits_per_transfer=4, seed=2)
    victim = history[100]
    assert victim.id == "t20"
    hidden = victim.ops[0].key
    # Every read invoked after it completed misses t20 on one account.
    changed = []
    for t in history:
        if t.id.startswith("r") and t.invoke > (victim.complete or 0):
            ops = tuple(
                read(op.key, [e for e in op.value if e != "t20"]) if op.key == hidden else op
                for op in t.ops
            )
            changed.append(Txn(t.id, ops, t.status, t.invoke, t.complete))
        else:
            changed.append(t)
    result = check(changed, realtime=True)
    assert "lost-append" in result.kinds()
    assert "lost-append" not in check(history, realtime=True).kinds()


def test_a_refused_transfer_read_in_a_long_history_is_g1a() -> None:
    history, _ = bank_history(transfers=300, audits_per_transfer=4, seed=3)
    refused = [
        Txn(t.id, t.ops, FAIL, t.invoke, t.complete) if t.id == "t150" else t for t in history
    ]
    assert "G1a" in check(refused, realtime=True).kinds()
