"""Random conditions on random items agree with a slow, obvious reference evaluator.

The reference turns DynamoDB values into plain Python values (Decimal, bytes, tuples,
frozensets, dicts) and applies the documented rules directly, with none of the production
code's helpers.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keeldb.expressions import ExpressionContext, ast
from keeldb.expressions.printer import to_text
from keeldb.model.errors import ValidationException

NAMES = ["a", "b", "c"]
KEYS = ["x", "y"]

# --- values ----------------------------------------------------------------------------------

numbers = st.sampled_from(["0", "1", "-1", "2.5", "10", "100", "-3.75"])
strings = st.sampled_from(["", "a", "ab", "abc", "b", "ba", "é", "𝄞x"])
binaries = st.sampled_from([b"", b"\x00", b"\x01", b"\x01\x02", b"\xff"]).map(
    lambda raw: base64.b64encode(raw).decode()
)
scalars = st.one_of(
    numbers.map(lambda n: {"N": n}),
    strings.map(lambda s: {"S": s}),
    binaries.map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(strings, min_size=1, max_size=3, unique=True).map(lambda ss: {"SS": ss}),
    st.lists(numbers, min_size=1, max_size=3, unique=True).map(lambda ns: {"NS": ns}),
)
attribute_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: {"L": items}),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=2).map(lambda m: {"M": m}),
    ),
    max_leaves=5,
)
items = st.dictionaries(st.sampled_from(NAMES), attribute_values, max_size=3)

# --- the reference ---------------------------------------------------------------------------


def plain(value: dict[str, Any]) -> tuple[str, Any]:
    ((type_, member),) = value.items()
    if type_ == "N":
        return ("N", Decimal(member))
    if type_ == "B":
        return ("B", base64.b64decode(member))
    if type_ == "SS":
        return ("SS", frozenset(member))
    if type_ == "NS":
        return ("NS", frozenset(Decimal(n) for n in member))
    if type_ == "BS":
        return ("BS", frozenset(base64.b64decode(b) for b in member))
    if type_ == "L":
        return ("L", tuple(plain(v) for v in member))
    if type_ == "M":
        return ("M", {k: plain(v) for k, v in member.items()})
    return (type_, member)


def lookup(item: dict[str, Any] | None, parts: tuple[Any, ...]) -> tuple[str, Any] | None:
    if item is None or parts[0] not in item:
        return None
    current = plain(item[parts[0]])
    for part in parts[1:]:
        if isinstance(part, int):
            if current[0] != "L" or part >= len(current[1]):
                return None
            current = current[1][part]
        else:
            if current[0] != "M" or part not in current[1]:
                return None
            current = current[1][part]
    return current


def ref_operand(node: ast.Operand, item: dict[str, Any] | None) -> tuple[str, Any] | None:
    if isinstance(node, ast.Path):
        return lookup(item, node.parts)
    if isinstance(node, ast.Literal):
        return plain(node.value)
    assert isinstance(node, ast.Function) and node.name == "size"
    value = ref_operand(node.args[0], item)
    if value is None:
        return None
    type_, member = value
    if type_ == "S":
        return ("N", Decimal(sum(2 if ord(ch) > 0xFFFF else 1 for ch in member)))
    if type_ == "B" or type_ in ("SS", "NS", "BS", "L", "M"):
        return ("N", Decimal(len(member)))
    return None


def ordered(value: tuple[str, Any]) -> Any:
    type_, member = value
    return member.encode("utf-8") if type_ == "S" else member


def ref_compare(op: str, left: Any, right: Any) -> bool:
    if op == "<>":
        return left is None or right is None or left != right
    if left is None or right is None:
        return False
    if op == "=":
        return left == right
    if left[0] != right[0] or left[0] not in ("S", "N", "B"):
        return False
    x, y = ordered(left), ordered(right)
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def ref_evaluate(node: ast.Condition, item: dict[str, Any] | None) -> bool:
    if isinstance(node, ast.And):
        return ref_evaluate(node.left, item) and ref_evaluate(node.right, item)
    if isinstance(node, ast.Or):
        return ref_evaluate(node.left, item) or ref_evaluate(node.right, item)
    if isinstance(node, ast.Not):
        return not ref_evaluate(node.operand, item)
    if isinstance(node, ast.Compare):
        return ref_compare(node.op, ref_operand(node.left, item), ref_operand(node.right, item))
    if isinstance(node, ast.Between):
        x = ref_operand(node.operand, item)
        low, high = ref_operand(node.low, item), ref_operand(node.high, item)
        return ref_compare(">=", x, low) and ref_compare("<=", x, high)
    if isinstance(node, ast.In):
        x = ref_operand(node.operand, item)
        return x is not None and any(ref_operand(o, item) == x for o in node.options)
    assert isinstance(node, ast.Function)
    first = ref_operand(node.args[0], item)
    if node.name == "attribute_exists":
        return first is not None
    if node.name == "attribute_not_exists":
        return first is None
    second = ref_operand(node.args[1], item)
    if first is None or second is None:
        return False
    if node.name == "attribute_type":
        return second == ("S", first[0])
    if node.name == "begins_with":
        return first[0] == second[0] and first[0] in ("S", "B") and first[1].startswith(second[1])
    assert node.name == "contains"
    if first[0] in ("S", "B"):
        return second[0] == first[0] and second[1] in first[1]
    if first[0] in ("SS", "NS", "BS"):
        return second[0] == first[0][0] and second[1] in first[1]
    if first[0] == "L":
        return second in first[1]
    return False


# --- random conditions -----------------------------------------------------------------------

paths = st.builds(
    lambda head, rest: ast.Path((head, *rest)),
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(KEYS) | st.integers(0, 2), max_size=2),
)


@st.composite
def conditions(draw: st.DrawFn) -> tuple[ast.Condition, dict[str, Any]]:
    values: dict[str, Any] = {}

    def value() -> ast.ValueRef:
        name = f":v{len(values)}"
        values[name] = draw(attribute_values)
        return ast.ValueRef(name)

    def operand() -> ast.Operand:
        choice = draw(st.integers(0, 4))
        if choice <= 1:
            return draw(paths)
        if choice <= 3:
            return value()
        return ast.Function("size", (draw(paths),))

    def predicate() -> ast.Condition:
        kind = draw(st.sampled_from(["cmp", "cmp", "between", "in", "fn"]))
        if kind == "cmp":
            return ast.Compare(draw(st.sampled_from(ast.COMPARATORS)), operand(), operand())
        if kind == "between":
            return ast.Between(operand(), operand(), operand())
        if kind == "in":
            count = draw(st.integers(1, 3))
            return ast.In(operand(), tuple(operand() for _ in range(count)))
        name = draw(
            st.sampled_from(
                [
                    "attribute_exists",
                    "attribute_not_exists",
                    "attribute_type",
                    "begins_with",
                    "contains",
                ]
            )
        )
        if name.startswith("attribute_") and name != "attribute_type":
            return ast.Function(name, (draw(paths),))
        if name == "attribute_type":
            type_name = draw(st.sampled_from(["S", "N", "B", "BOOL", "NULL", "L", "M", "SS", "NS"]))
            ref = f":v{len(values)}"
            values[ref] = {"S": type_name}
            return ast.Function(name, (draw(paths), ast.ValueRef(ref)))
        return ast.Function(name, (draw(paths), operand()))

    def condition(depth: int) -> ast.Condition:
        if depth == 0 or draw(st.booleans()):
            return predicate()
        kind = draw(st.sampled_from(["and", "or", "not"]))
        if kind == "not":
            return ast.Not(condition(depth - 1))
        left = condition(depth - 1)
        right = condition(depth - 1)
        return ast.And(left, right) if kind == "and" else ast.Or(left, right)

    return condition(3), values


@settings(max_examples=300, deadline=None)
@given(conditions(), st.one_of(st.none(), items))
def test_evaluation_agrees_with_the_reference(
    generated: tuple[ast.Condition, dict[str, Any]], item: dict[str, Any] | None
) -> None:
    tree, values = generated
    try:
        compiled = ExpressionContext(None, values).condition(to_text(tree))
    except ValidationException:
        assume(False)  # statically invalid (e.g. BETWEEN bounds out of order): not our subject
        raise
    assert compiled.evaluate(item) == ref_evaluate(compiled.tree, item)
