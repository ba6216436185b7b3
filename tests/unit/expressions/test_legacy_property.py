"""Property: a legacy condition (Expected, ScanFilter) and the expression it is translated into
hold for exactly the same items. The reference below reads the legacy semantics of the AWS
Developer Guide ("Legacy conditional parameters", "ComparisonOperator") directly on
DynamoDB-JSON values, sharing no code with the expression evaluator."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.expressions import compile_request, legacy

Value = dict[str, Any]
NAMES = ("a", "b", "c")

# --- The reference: legacy semantics, written out plainly -------------------------------------


def _type(value: Value) -> str:
    (type_,) = value
    return type_


def _scalar_key(type_: str, member: Any) -> Any:
    if type_ == "N":
        return Decimal(member)
    if type_ == "B":
        return base64.b64decode(member)
    return member


def ref_equal(x: Value, y: Value) -> bool:
    tx, ty = _type(x), _type(y)
    if tx != ty:
        return False
    if tx in ("S", "N", "B", "BOOL", "NULL"):
        return bool(_scalar_key(tx, x[tx]) == _scalar_key(ty, y[ty]))
    if tx in ("SS", "NS", "BS"):
        element = tx[0]
        return {_scalar_key(element, m) for m in x[tx]} == {_scalar_key(element, m) for m in y[ty]}
    if tx == "L":
        return len(x["L"]) == len(y["L"]) and all(
            ref_equal(p, q) for p, q in zip(x["L"], y["L"], strict=True)
        )
    assert tx == "M"
    return x["M"].keys() == y["M"].keys() and all(ref_equal(x["M"][k], y["M"][k]) for k in x["M"])


def ref_order(x: Value, y: Value) -> int | None:
    """-1/0/1 for two values of the same ordered type (S, N, B), else None."""
    tx, ty = _type(x), _type(y)
    if tx != ty or tx not in ("S", "N", "B"):
        return None
    p = _scalar_key(tx, x[tx])
    q = _scalar_key(ty, y[ty])
    if tx == "S":
        p, q = p.encode("utf-8"), q.encode("utf-8")
    return (p > q) - (p < q)


def ref_contains(attribute: Value, operand: Value) -> bool:
    ta, to = _type(attribute), _type(operand)
    if ta == "S":
        return to == "S" and operand["S"] in attribute["S"]
    if ta == "B":
        return to == "B" and base64.b64decode(operand["B"]) in base64.b64decode(attribute["B"])
    if ta in ("SS", "NS", "BS"):
        return to == ta[0] and any(ref_equal({to: m}, operand) for m in attribute[ta])
    if ta == "L":
        return any(ref_equal(element, operand) for element in attribute["L"])
    return False


def ref_holds(op: str, attribute: Value | None, values: list[Value]) -> bool:
    if op == "NULL":
        return attribute is None
    if op == "NOT_NULL":
        return attribute is not None
    if op == "NE":
        return attribute is None or not ref_equal(attribute, values[0])
    if attribute is None:
        return False
    if op == "EQ":
        return ref_equal(attribute, values[0])
    if op == "IN":
        return any(ref_equal(attribute, v) for v in values)
    if op == "CONTAINS":
        return ref_contains(attribute, values[0])
    if op == "NOT_CONTAINS":
        return not ref_contains(attribute, values[0])
    if op == "BEGINS_WITH":
        t = _type(attribute)
        if t != _type(values[0]) or t not in ("S", "B"):
            return False
        return bool(_scalar_key(t, attribute[t]).startswith(_scalar_key(t, values[0][t])))
    if op == "BETWEEN":
        low, high = ref_order(attribute, values[0]), ref_order(attribute, values[1])
        return low is not None and high is not None and low >= 0 and high <= 0
    order = ref_order(attribute, values[0])
    if order is None:
        return False
    return {"LT": order < 0, "LE": order <= 0, "GT": order > 0, "GE": order >= 0}[op]


def ref_expected_entry(entry: dict[str, Any]) -> tuple[str, list[Value]]:
    """An Expected entry in (operator, values) form: Value alone or with Exists true is EQ,
    Exists false is NULL."""
    if "ComparisonOperator" in entry:
        if "Value" in entry:
            return entry["ComparisonOperator"], [entry["Value"]]
        return entry["ComparisonOperator"], entry.get("AttributeValueList", [])
    if entry.get("Exists", True):
        return "EQ", [entry["Value"]]
    return "NULL", []


def ref_evaluate(
    conditions: dict[str, tuple[str, list[Value]]], joiner: str, item: dict[str, Value]
) -> bool:
    results = [ref_holds(op, item.get(name), values) for name, (op, values) in conditions.items()]
    return any(results) if joiner == "OR" else all(results)


# --- Strategies -------------------------------------------------------------------------------

strings = st.text(alphabet="abc", min_size=1, max_size=3)
numbers = st.integers(-3, 3).map(str) | st.sampled_from(["0.5", "-1.5", "2.0", "1e1"])
binaries = st.binary(min_size=1, max_size=2).map(lambda b: base64.b64encode(b).decode())
scalars = st.one_of(
    strings.map(lambda s: {"S": s}),
    numbers.map(lambda n: {"N": n}),
    binaries.map(lambda b: {"B": b}),
)
attribute_values = st.one_of(
    scalars,
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(strings, min_size=1, max_size=3).map(lambda s: {"SS": sorted(s)}),
    st.sets(st.integers(-3, 3), min_size=1, max_size=3).map(
        lambda s: {"NS": [str(m) for m in sorted(s)]}
    ),
    st.lists(scalars, max_size=3).map(lambda members: {"L": members}),
)
items = st.dictionaries(st.sampled_from(NAMES), attribute_values, max_size=3)


@st.composite
def comparisons(draw: st.DrawFn) -> tuple[str, list[Value]]:
    op = draw(
        st.sampled_from(
            [
                "EQ",
                "NE",
                "LE",
                "LT",
                "GE",
                "GT",
                "NOT_NULL",
                "NULL",
                "CONTAINS",
                "NOT_CONTAINS",
                "BEGINS_WITH",
                "IN",
                "BETWEEN",
            ]
        )
    )
    if op in ("NULL", "NOT_NULL"):
        return op, []
    if op in ("EQ", "NE"):
        return op, [draw(attribute_values)]
    if op == "BEGINS_WITH":
        prefix = draw(st.one_of(strings.map(lambda s: {"S": s}), binaries.map(lambda b: {"B": b})))
        return op, [prefix]
    if op in ("CONTAINS", "NOT_CONTAINS"):
        return op, [draw(scalars)]
    if op in ("LE", "LT", "GE", "GT"):
        return op, [draw(scalars)]
    first = draw(scalars)
    (type_,) = first
    same = {"S": strings.map(lambda s: {"S": s}), "N": numbers.map(lambda n: {"N": n})}.get(
        type_, binaries.map(lambda b: {"B": b})
    )
    if op == "IN":
        return op, [first, *draw(st.lists(same, max_size=3))]
    second = draw(same)
    low, high = sorted([first, second], key=lambda v: _sort_key(v))
    return op, [low, high]


def _sort_key(value: Value) -> Any:
    (type_,) = value
    key = _scalar_key(type_, value[type_])
    return key.encode("utf-8") if type_ == "S" else key


@st.composite
def expected_entries(draw: st.DrawFn) -> dict[str, Any]:
    form = draw(st.sampled_from(["value", "exists_true", "exists_false", "operator", "single"]))
    if form == "value":
        return {"Value": draw(attribute_values)}
    if form == "exists_true":
        return {"Value": draw(attribute_values), "Exists": True}
    if form == "exists_false":
        return {"Exists": False}
    op, values = draw(comparisons())
    if form == "single" and len(values) == 1:
        return {"ComparisonOperator": op, "Value": values[0]}
    entry: dict[str, Any] = {"ComparisonOperator": op}
    if values:
        entry["AttributeValueList"] = values
    return entry


# --- Properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    conditions=st.dictionaries(st.sampled_from(NAMES), expected_entries(), min_size=1),
    joiner=st.sampled_from(["AND", "OR"]),
    item=st.one_of(st.none(), items),
)
def test_expected_and_its_condition_expression_agree(
    conditions: dict[str, Any], joiner: str, item: dict[str, Value] | None
) -> None:
    body: dict[str, Any] = {"TableName": "t", "Item": {}, "Expected": conditions}
    if len(conditions) > 1:
        body["ConditionalOperator"] = joiner
    else:
        joiner = "AND"
    translated = legacy.translate("PutItem", body)
    compiled = compile_request(translated, ("ConditionExpression",))
    assert compiled.condition is not None
    reference = {name: ref_expected_entry(entry) for name, entry in conditions.items()}
    assert compiled.condition.evaluate(item) == ref_evaluate(reference, joiner, item or {})


@settings(max_examples=200, deadline=None)
@given(
    conditions=st.dictionaries(st.sampled_from(NAMES), comparisons(), min_size=1),
    joiner=st.sampled_from(["AND", "OR"]),
    item=items,
)
def test_scan_filter_and_its_filter_expression_agree(
    conditions: dict[str, tuple[str, list[Value]]], joiner: str, item: dict[str, Value]
) -> None:
    scan_filter = {}
    for name, (op, values) in conditions.items():
        entry: dict[str, Any] = {"ComparisonOperator": op}
        if values:
            entry["AttributeValueList"] = values
        scan_filter[name] = entry
    body: dict[str, Any] = {"TableName": "t", "ScanFilter": scan_filter}
    if len(conditions) > 1:
        body["ConditionalOperator"] = joiner
    else:
        joiner = "AND"
    translated = legacy.translate("Scan", body)
    compiled = compile_request(translated, ("ProjectionExpression", "FilterExpression"))
    assert compiled.filter is not None
    assert compiled.filter.evaluate(item) == ref_evaluate(conditions, joiner, item)
