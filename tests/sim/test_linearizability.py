"""The linearizability checker accepts linearizable histories, rejects the classic violations,
and agrees with a brute-force reference on small random histories."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.consensus.sim.linearizability import (
    KvModel,
    Operation,
    OpKind,
    Verdict,
    check_history,
    check_key,
)


def put(client: int, call: int, ret: int | None, value: bytes, key: str = "k") -> Operation:
    return Operation(client, OpKind.PUT, key, call, ret, value=value)


def get(client: int, call: int, ret: int | None, output: bytes | None, key: str = "k") -> Operation:
    return Operation(client, OpKind.GET, key, call, ret, output=output)


def cas(client: int, call: int, ret: int | None, expected: bytes | None, value: bytes,
        output: bool | None, key: str = "k") -> Operation:
    return Operation(client, OpKind.CAS, key, call, ret, value=value, expected=expected,
                     output=output)


def test_sequential_history_of_put_then_get_is_linearizable() -> None:
    history = [put(1, 1, 2, b"a"), get(2, 3, 4, b"a")]
    assert check_history(history).verdict is Verdict.LINEARIZABLE


def test_get_concurrent_with_put_may_see_old_or_new_value() -> None:
    for seen in (None, b"a"):
        history = [put(1, 1, 4, b"a"), get(2, 2, 3, seen)]
        assert check_history(history).verdict is Verdict.LINEARIZABLE


def test_stale_read_after_a_completed_put_is_not_linearizable() -> None:
    history = [put(1, 1, 2, b"a"), put(1, 3, 4, b"b"), get(2, 5, 6, b"a")]
    result = check_history(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert "get(k) -> b'a'" in result.describe()


def test_lost_write_is_not_linearizable() -> None:
    # Both puts finished, then two reads in sequence see the first value: the second put
    # vanished, although it was acknowledged after the first.
    history = [put(1, 1, 2, b"a"), put(2, 3, 4, b"b"), get(3, 5, 6, b"a"), get(3, 7, 8, b"a")]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_read_your_write_violation_is_not_linearizable() -> None:
    history = [put(1, 1, 2, b"a"), get(1, 3, 4, None)]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_reads_that_flip_back_to_an_old_value_are_not_linearizable() -> None:
    # A write concurrent with two sequential reads: once one read sees it, a later one must.
    history = [put(1, 1, 10, b"a"), get(2, 2, 3, b"a"), get(2, 4, 5, None)]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_two_successful_cas_from_the_same_expected_value_are_not_linearizable() -> None:
    history = [
        put(1, 1, 2, b"0"),
        cas(2, 3, 6, b"0", b"x", True),
        cas(3, 4, 5, b"0", b"y", True),
    ]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_failed_cas_with_matching_value_is_not_linearizable() -> None:
    history = [put(1, 1, 2, b"0"), cas(2, 3, 4, b"0", b"x", False)]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_pending_put_may_take_effect_late_or_never() -> None:
    took_effect = [put(1, 1, None, b"a"), get(2, 5, 6, b"a"), get(2, 7, 8, b"a")]
    never = [put(1, 1, None, b"a"), get(2, 5, 6, None)]
    assert check_history(took_effect).verdict is Verdict.LINEARIZABLE
    assert check_history(never).verdict is Verdict.LINEARIZABLE


def test_pending_put_cannot_take_effect_before_its_call() -> None:
    history = [get(2, 1, 2, b"a"), put(1, 3, None, b"a")]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_pending_put_cannot_be_undone_once_seen() -> None:
    history = [put(1, 1, None, b"a"), get(2, 2, 3, b"a"), get(2, 4, 5, None)]
    assert check_history(history).verdict is Verdict.NOT_LINEARIZABLE


def test_keys_are_checked_independently_and_the_bad_key_is_named() -> None:
    history = [
        put(1, 1, 2, b"a", key="x"),
        get(2, 3, 4, b"a", key="x"),
        put(1, 5, 6, b"b", key="y"),
        get(2, 7, 8, None, key="y"),
    ]
    result = check_history(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    verdicts = {r.key: r.verdict for r in result.keys}
    assert verdicts == {"x": Verdict.LINEARIZABLE, "y": Verdict.NOT_LINEARIZABLE}


def test_exhausted_search_budget_gives_unknown_not_a_guess() -> None:
    # Many concurrent puts and a final read that no order explains: the search must try
    # many orders before concluding, so a tiny budget ends in UNKNOWN.
    history = [put(i, 1 + i, 100 + i, bytes([i])) for i in range(12)]
    history.append(get(99, 200, 201, b"none of them"))
    assert check_key("k", history, steps_max=50).verdict is Verdict.UNKNOWN
    assert check_key("k", history).verdict is Verdict.NOT_LINEARIZABLE


def test_long_sequential_history_checks_quickly() -> None:
    history = []
    t = 0
    for i in range(2000):
        history.append(put(i % 5, t + 1, t + 2, str(i).encode()))
        history.append(get((i + 1) % 5, t + 3, t + 4, str(i).encode()))
        t += 4
    result = check_history(history)
    assert result.verdict is Verdict.LINEARIZABLE
    assert result.keys[0].steps < 20_000


# A brute-force reference: try every order of the operations that respects real time.

def _brute_force(ops: list[Operation]) -> bool:
    for perm in itertools.permutations(range(len(ops))):
        position = {op_index: place for place, op_index in enumerate(perm)}
        respects = all(
            not (ops[a].ret is not None and ops[a].ret < ops[b].call and position[a] > position[b])
            for a in range(len(ops))
            for b in range(len(ops))
        )
        if not respects:
            continue
        # Pending operations may also never happen: try each subset of them omitted.
        pending = [i for i in range(len(ops)) if ops[i].ret is None]
        for omit_count in range(len(pending) + 1):
            for omitted in itertools.combinations(pending, omit_count):
                state = KvModel.init()
                ok = True
                for i in perm:
                    if i in omitted:
                        continue
                    ok, state = KvModel.step(state, ops[i])
                    if not ok:
                        break
                if ok:
                    return True
    return False


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    count = draw(st.integers(1, 5))
    ops = []
    values = [None, b"a", b"b"]
    for client in range(count):
        call = rng.randrange(0, 20) * 2
        ret: int | None = call + 1 + rng.randrange(0, 10) * 2
        if rng.random() < 0.2:
            ret = None
        kind = rng.choice([OpKind.GET, OpKind.PUT, OpKind.CAS])
        if kind is OpKind.GET:
            ops.append(get(client, call, ret, rng.choice(values)))
        elif kind is OpKind.PUT:
            ops.append(put(client, call, ret, rng.choice([b"a", b"b"])))
        else:
            ops.append(cas(client, call, ret, rng.choice(values), rng.choice([b"a", b"b"]),
                           rng.choice([True, False])))
    return ops


@settings(max_examples=300, deadline=None)
@given(small_histories())
def test_checker_agrees_with_brute_force_on_small_histories(ops: list[Operation]) -> None:
    expected = _brute_force(ops)
    verdict = check_key("k", ops).verdict
    assert verdict is not Verdict.UNKNOWN
    assert (verdict is Verdict.LINEARIZABLE) == expected
