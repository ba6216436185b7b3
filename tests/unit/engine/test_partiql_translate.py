"""PartiQL conditions written as DynamoDB expressions: any condition tree prints as an
expression DynamoDB's grammar accepts (no redundant parentheses), and means what a plain
reference evaluator of the tree says, item by item."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine.partiql.parser import (
    And,
    Between,
    Compare,
    Condition,
    In,
    Is,
    Literal,
    Not,
    Or,
    Path,
)
from keeldb.engine.partiql.translate import Placeholders, condition_text, partition_values
from keeldb.expressions import ExpressionContext

X = Path(("x",))
NUMBERS = st.integers(-3, 3)


def num(value: int) -> Literal:
    return Literal({"N": str(value)})


atoms = st.one_of(
    st.builds(
        lambda op, v: Compare(op, X, num(v)), st.sampled_from(["=", "<", "<=", ">", ">="]), NUMBERS
    ),
    st.builds(lambda a, b: Between(X, num(a), num(b)), NUMBERS, NUMBERS),
    st.builds(
        lambda vs: In(X, tuple(num(v) for v in vs)), st.lists(NUMBERS, min_size=1, max_size=4)
    ),
    st.builds(lambda negated: Is(X, "MISSING", negated), st.booleans()),
    st.builds(lambda negated: Is(X, "NUMERIC", negated), st.booleans()),
)
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)
    ),
    max_leaves=8,
)


def reference(condition: Condition, x: int | None) -> bool:
    """What the tree means for an item whose x is `x` (None: no x)."""
    if isinstance(condition, And):
        return reference(condition.left, x) and reference(condition.right, x)
    if isinstance(condition, Or):
        return reference(condition.left, x) or reference(condition.right, x)
    if isinstance(condition, Not):
        return not reference(condition.operand, x)
    if isinstance(condition, Is):
        # x, when present, is a number: IS MISSING asks for absence, IS NUMERIC for presence.
        holds = (x is None) if condition.type_name == "MISSING" else (x is not None)
        return holds != condition.negated
    if x is None:
        return False
    if isinstance(condition, Compare):
        v = int(condition.right.value["N"])  # type: ignore[union-attr]
        return {"=": x == v, "<": x < v, "<=": x <= v, ">": x > v, ">=": x >= v}[condition.op]
    if isinstance(condition, Between):
        low = int(condition.low.value["N"])  # type: ignore[union-attr]
        high = int(condition.high.value["N"])  # type: ignore[union-attr]
        return low <= x <= high
    assert isinstance(condition, In)
    return any(x == int(v.value["N"]) for v in condition.values)  # type: ignore[union-attr]


def item(x: int | None) -> dict[str, Any]:
    return {"k": {"S": "k"}} if x is None else {"k": {"S": "k"}, "x": {"N": str(x)}}


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_any_condition_prints_as_an_accepted_expression_with_its_meaning(
    condition: Condition,
) -> None:
    ph = Placeholders()
    text = condition_text(condition, ph)
    compiled = ExpressionContext(ph.names or None, ph.values or None).condition(text)
    for x in (None, -3, -1, 0, 1, 2, 4):
        assert compiled.evaluate(item(x)) == reference(condition, x), (text, x)


def test_partition_values_follow_and_or_and_in() -> None:
    k = Path(("k",))
    a, b, c = Literal({"S": "a"}), Literal({"S": "b"}), Literal({"S": "c"})
    assert partition_values(Compare("=", k, a), "k") == [{"S": "a"}]
    assert partition_values(Compare("=", a, k), "k") == [{"S": "a"}]
    assert partition_values(Or(Compare("=", k, a), In(k, (b, a))), "k") == [{"S": "a"}, {"S": "b"}]
    assert partition_values(And(In(k, (a, b, c)), In(k, (c, a))), "k") == [{"S": "a"}, {"S": "c"}]
    assert partition_values(And(Compare("=", k, a), Compare(">", X, num(1))), "k") == [{"S": "a"}]
    assert partition_values(Or(Compare("=", k, a), Compare(">", X, num(1))), "k") is None
    assert partition_values(Compare("<", k, a), "k") is None
    assert partition_values(Not(Compare("=", k, a)), "k") is None
