"""Properties of attribute values: canonical forms are fixed points, equality is an
equivalence, garbage is refused with a client error, and item size matches a slow reference."""

from __future__ import annotations

import base64
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.model.errors import ClientError
from keeldb.model.values import (
    item_size,
    number_size,
    set_difference,
    set_union,
    validate_item,
    validate_value,
    values_equal,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_model_strategies import attribute_values, decimals, names, number_texts


def reference_number_size(text: str) -> int:
    """Bytes of DynamoDB's stored number, by building its base-100 digit pairs one by one:
    one exponent byte, one byte per pair of decimal places holding a significant digit,
    and a terminator byte for negatives."""
    value = Decimal(text)
    if value == 0:
        return 1
    digits = "".join(map(str, value.as_tuple().digits)).strip("0")
    leading_power = value.adjusted()
    powers = [leading_power - i for i in range(len(digits))]
    pairs = {power // 2 for power in powers}
    return 1 + len(pairs) + (1 if value < 0 else 0)


def reference_size(value: dict[str, Any]) -> int:
    ((kind, member),) = value.items()
    if kind == "S":
        return len(member.encode("utf-8"))
    if kind == "N":
        return reference_number_size(member)
    if kind == "B":
        return len(base64.b64decode(member))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in member)
    if kind == "NS":
        return sum(reference_number_size(n) for n in member)
    if kind == "BS":
        return sum(len(base64.b64decode(b)) for b in member)
    if kind == "L":
        return 3 + len(member) + sum(reference_size(v) for v in member)
    return (
        3 + len(member) + sum(len(k.encode("utf-8")) + reference_size(v) for k, v in member.items())
    )


@given(number_texts())
def test_number_size_matches_the_digit_pair_reference(text: str) -> None:
    assert number_size(text) == reference_number_size(text)


@settings(max_examples=60)
@given(st.dictionaries(names, attribute_values(), max_size=5))
def test_item_size_matches_the_reference(item: dict[str, dict[str, Any]]) -> None:
    expected = sum(len(name.encode("utf-8")) + reference_size(v) for name, v in item.items())
    assert item_size(item) == expected


@settings(max_examples=60)
@given(attribute_values())
def test_canonical_values_are_fixed_points_of_validation(value: dict[str, Any]) -> None:
    assert validate_value(value) == value


def _respelled(value: dict[str, Any], rnd: Any) -> dict[str, Any]:
    """The same value written differently: sets and maps reordered, numbers re-spelled."""
    ((kind, member),) = value.items()
    if kind == "N":
        return {"N": format(Decimal(member), "E")}
    if kind in ("SS", "NS", "BS"):
        members = [format(Decimal(m), "E") for m in member] if kind == "NS" else list(member)
        rnd.shuffle(members)
        return {kind: members}
    if kind == "L":
        return {"L": [_respelled(v, rnd) for v in member]}
    if kind == "M":
        names = list(member)
        rnd.shuffle(names)
        return {"M": {name: _respelled(member[name], rnd) for name in names}}
    return dict(value)


@settings(max_examples=60)
@given(attribute_values(), st.randoms())
def test_values_equal_holds_for_any_respelling_of_a_value(value: dict[str, Any], rnd: Any) -> None:
    other = _respelled(value, rnd)
    assert values_equal(value, value)
    assert values_equal(value, other)
    assert values_equal(other, value)


small_values = st.sampled_from(
    [
        {"N": "1"},
        {"N": "1.0"},
        {"N": "2"},
        {"S": "1"},
        {"SS": ["a", "b"]},
        {"SS": ["b", "a"]},
        {"SS": ["a"]},
        {"L": [{"N": "1"}]},
        {"L": [{"N": "1.00"}]},
        {"L": []},
        {"M": {}},
        {"M": {"a": {"N": "1"}}},
        {"BOOL": True},
        {"NULL": True},
        {"B": "YQ=="},
    ]
)


@given(small_values, small_values)
def test_values_equal_is_symmetric(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert values_equal(a, b) == values_equal(b, a)


@given(st.lists(decimals(), min_size=1, max_size=6, unique=True), st.randoms())
def test_number_sets_are_equal_whatever_the_order_and_spelling(
    members: list[Decimal], rnd: Any
) -> None:
    plain = [format(d, "f") for d in members]
    shuffled = [format(d, "E") for d in members]
    rnd.shuffle(shuffled)
    assert values_equal(validate_value({"NS": plain}), validate_value({"NS": shuffled}))


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@given(json_like)
def test_any_json_is_either_a_valid_value_or_a_client_error(value: Any) -> None:
    try:
        canonical = validate_value(value)
    except ClientError as error:
        assert error.message
        return
    assert validate_value(canonical) == canonical


@given(st.dictionaries(st.text(max_size=3), json_like, max_size=3))
def test_any_json_item_is_either_valid_or_a_client_error(item: Any) -> None:
    try:
        canonical = validate_item(item)
    except ClientError:
        return
    assert validate_item(canonical) == canonical


@given(
    st.lists(decimals(), min_size=1, max_size=6, unique=True),
    st.lists(decimals(), min_size=1, max_size=6, unique=True),
)
def test_set_union_and_difference_agree_with_value_equality(
    left: list[Decimal], right: list[Decimal]
) -> None:
    a = validate_value({"NS": [format(d, "f") for d in left]})
    b = validate_value({"NS": [format(d, "E") for d in right]})
    union = set_union(a, b)
    assert {Decimal(n) for n in union["NS"]} == set(left) | set(right)
    assert len(union["NS"]) == len(set(left) | set(right))
    difference = set_difference(a, b)
    expected = set(left) - set(right)
    if expected:
        assert difference is not None
        assert {Decimal(n) for n in difference["NS"]} == expected
    else:
        assert difference is None
