"""The history checker finds each anomaly in a history built to have it, names the cycle,
and passes histories that are serial by construction."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.txn.checker import FAIL, INFO, OK, Txn, append, check, read


def test_a_serial_history_is_valid() -> None:
    history = [
        Txn("t1", (append("x", 1), append("y", 1)), OK, 0, 1),
        Txn("t2", (read("x", [1]), append("x", 2)), OK, 2, 3),
        Txn("t3", (read("x", [1, 2]), read("y", [1])), OK, 4, 5),
    ]
    result = check(history, realtime=True)
    assert result.valid, result.anomalies
    assert result.edges >= 3


def test_a_write_cycle_is_g0() -> None:
    history = [
        Txn("t1", (append("x", 1), append("y", 1))),
        Txn("t2", (append("x", 2), append("y", 2))),
        Txn("r", (read("x", [1, 2]), read("y", [2, 1]))),
    ]
    result = check(history)
    g0 = [a for a in result.anomalies if a.kind == "G0"]
    assert len(g0) == 1
    assert {(a, k, b) for a, k, b in g0[0].cycle} == {("t1", "ww", "t2"), ("t2", "ww", "t1")}


def test_reading_each_others_writes_is_g1c() -> None:
    history = [
        Txn("t1", (append("x", 1), read("y", [2]))),
        Txn("t2", (append("y", 2), read("x", [1]))),
    ]
    assert check(history).kinds() == {"G1c"}


def test_read_skew_is_g_single() -> None:
    history = [
        Txn("t1", (read("x", []), read("y", [2]))),
        Txn("t2", (append("x", 2), append("y", 2))),
        Txn("r", (read("x", [2]),)),
    ]
    result = check(history)
    assert result.kinds() == {"G-single"}
    (anomaly,) = result.anomalies
    assert sorted(k for _, k, _ in anomaly.cycle) == ["rw", "wr"]


def test_write_skew_is_g2() -> None:
    history = [
        Txn("t1", (read("x", []), append("y", 1))),
        Txn("t2", (read("y", []), append("x", 2))),
        Txn("r", (read("x", [2]), read("y", [1]))),
    ]
    assert check(history).kinds() == {"G2"}


def test_reading_a_refused_write_is_g1a() -> None:
    history = [
        Txn("t1", (append("x", 1),), FAIL),
        Txn("r", (read("x", [1]),)),
    ]
    assert "G1a" in check(history).kinds()


def test_reads_that_disagree_on_the_order_are_reported() -> None:
    history = [
        Txn("t1", (append("x", 1),)),
        Txn("t2", (append("x", 2),)),
        Txn("r1", (read("x", [1]),)),
        Txn("r2", (read("x", [2]),)),
    ]
    assert "incompatible-order" in check(history).kinds()


def test_an_acknowledged_append_missing_later_is_lost() -> None:
    history = [
        Txn("t1", (append("x", 1),), OK, 0, 1),
        Txn("t2", (append("x", 2),), OK, 0, 1),
        Txn("r", (read("x", [2]),), OK, 5, 6),
    ]
    assert "lost-append" in check(history, realtime=True).kinds()
    assert "lost-append" not in check(history, realtime=False).kinds()


def test_an_unknown_outcome_counts_only_if_seen() -> None:
    history = [
        Txn("t1", (append("x", 1),), INFO, 0, None),
        Txn("t2", (append("x", 2),), INFO, 0, None),
        Txn("r", (read("x", [1]),), OK, 5, 6),
    ]
    assert check(history, realtime=True).valid


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_histories_executed_serially_are_valid(seed: int) -> None:
    rng = random.Random(seed)
    state: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    history = []
    element = 0
    for number in range(rng.randint(1, 25)):
        ops = []
        for _ in range(rng.randint(1, 4)):
            key = rng.choice("abc")
            if rng.random() < 0.5:
                ops.append(read(key, list(state[key])))
            else:
                element += 1
                state[key].append(element)
                ops.append(append(key, element))
        history.append(Txn(number, tuple(ops), OK, 2 * number, 2 * number + 1))
    history.append(Txn("final", tuple(read(k, v) for k, v in state.items()), OK, 10**6, 10**6))
    result = check(history, realtime=True)
    assert result.valid, result.anomalies


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_a_read_that_reorders_a_serial_history_is_caught(seed: int) -> None:
    rng = random.Random(seed)
    state: dict[str, list[int]] = {"a": [], "b": []}
    history = []
    for number in range(12):
        key = rng.choice("ab")
        history.append(Txn(number, (append(key, number),), OK, 2 * number, 2 * number + 1))
        state[key].append(number)
    history.append(Txn("r1", tuple(read(k, v) for k, v in state.items()), OK, 100, 101))
    key = max(state, key=lambda k: len(state[k]))
    swapped = list(state[key])
    swapped[-1], swapped[-2] = swapped[-2], swapped[-1]
    # A later reader sees the last two appends of one key in the other order.
    history.append(Txn("r2", (read(key, swapped),), OK, 102, 103))
    assert not check(history).valid
