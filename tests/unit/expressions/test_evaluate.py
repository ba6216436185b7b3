"""Conditions evaluated with DynamoDB's semantics."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from keeldb.expressions import ExpressionContext


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


ITEM: dict[str, Any] = {
    "s": {"S": "hello"},
    "n": {"N": "10"},
    "b": {"B": b64(b"\x01\x02\x03")},
    "t": {"BOOL": True},
    "z": {"NULL": True},
    "ss": {"SS": ["x", "y"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b64(b"\x01"), b64(b"\x02")]},
    "l": {"L": [{"S": "a"}, {"N": "2"}, {"M": {"k": {"S": "v"}}}]},
    "m": {"M": {"inr": {"M": {"deep": {"N": "7"}}}, "lst": {"L": [{"N": "1"}]}}},
    "u": {"S": "é𝄞"},
}

VALUES: dict[str, Any] = {
    ":hello": {"S": "hello"},
    ":he": {"S": "he"},
    ":ll": {"S": "ll"},
    ":ten": {"N": "10.0"},
    ":nine": {"N": "9"},
    ":eleven": {"N": "11"},
    ":two": {"N": "2"},
    ":twofive": {"N": "2.50"},
    ":three": {"N": "3"},
    ":x": {"S": "x"},
    ":a": {"S": "a"},
    ":b12": {"B": b64(b"\x01\x02")},
    ":b2": {"B": b64(b"\x02")},
    ":b1": {"B": b64(b"\x01")},
    ":true": {"BOOL": True},
    ":map": {"M": {"k": {"S": "v"}}},
    ":seven": {"N": "7"},
    ":one": {"N": "1"},
    ":tS": {"S": "S"},
    ":tN": {"S": "N"},
    ":tSS": {"S": "SS"},
    ":tM": {"S": "M"},
    ":tL": {"S": "L"},
    ":tNULL": {"S": "NULL"},
    ":tBOOL": {"S": "BOOL"},
    ":tB": {"S": "B"},
}


def holds(text: str, item: dict[str, Any] | None = ITEM) -> bool:
    ctx = ExpressionContext(None, dict(VALUES))
    return ctx.condition(text).evaluate(item)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s = :hello", True),
        ("n = :ten", True),  # numbers compare by value: 10 = 10.0
        ("n <> :ten", False),
        ("n < :eleven", True),
        ("n <= :ten", True),
        ("n > :nine", True),
        ("n >= :eleven", False),
        ("s > :he", True),
        ("b > :b12", True),
        ("m.inr.deep = :seven", True),
        ("l[1] = :two", True),
        ("l[2].k = m.inr.deep", False),
        ("m.lst[0] = :one", True),
    ],
)
def test_comparisons_of_the_same_type(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_comparisons_between_different_types_are_false_not_errors() -> None:
    assert not holds("s = :ten")
    assert not holds("s < :ten")
    assert not holds("n >= :hello")
    assert holds("s <> :ten")


def test_comparisons_with_a_absent_attribute_are_false_except_not_equal() -> None:
    for op in ("=", "<", "<=", ">", ">="):
        assert not holds(f"absent {op} :ten")
    assert holds("absent <> :ten")
    assert not holds("absent.deeper = :ten")
    assert not holds("s.deeper = :ten")  # a path through a string leads nowhere
    assert not holds("l[9] = :ten")


def test_sets_lists_and_maps_compare_for_equality_only() -> None:
    assert holds("l[2] = :map")
    assert not holds("l[2] <> :map")
    assert not holds("l[2] < m")  # paths to unordered types: false, not an error
    assert not holds("ss >= ss[0]")


def test_between_is_inclusive() -> None:
    assert holds("n BETWEEN :ten AND :eleven")
    assert holds("n BETWEEN :nine AND :ten")
    assert not holds("n BETWEEN :eleven AND :eleven")
    assert not holds("absent BETWEEN :nine AND :ten")
    assert not holds("s BETWEEN :nine AND :ten")


def test_in_matches_any_operand() -> None:
    assert holds("n IN (:nine, :ten)")
    assert not holds("n IN (:nine, :eleven)")
    assert not holds("absent IN (:nine)")


def test_logical_operators() -> None:
    assert holds("s = :hello AND n = :ten")
    assert not holds("s = :hello AND n = :nine")
    assert holds("s = :x OR n = :ten")
    assert holds("NOT s = :x")
    assert not holds("NOT (s = :hello OR n = :nine)")


def test_attribute_exists_and_not_exists() -> None:
    assert holds("attribute_exists(s)")
    assert holds("attribute_exists(m.inr.deep)")
    assert holds("attribute_exists(z)")  # a NULL value exists
    assert not holds("attribute_exists(m.inr.nope)")
    assert holds("attribute_not_exists(nope)")
    assert holds("attribute_not_exists(s)", None)  # no item: nothing exists


@pytest.mark.parametrize(
    ("path", "type_"),
    [
        ("s", ":tS"),
        ("n", ":tN"),
        ("ss", ":tSS"),
        ("m", ":tM"),
        ("l", ":tL"),
        ("z", ":tNULL"),
        ("t", ":tBOOL"),
        ("b", ":tB"),
    ],
)
def test_attribute_type_matches_the_stored_type(path: str, type_: str) -> None:
    assert holds(f"attribute_type({path}, {type_})")
    assert not holds(f"attribute_type({path}, {':tN' if type_ != ':tN' else ':tS'})")


def test_attribute_type_of_a_value_is_the_values_type() -> None:
    assert holds("attribute_type(:ten, :tN)")
    assert not holds("attribute_type(:ten, :tS)")


def test_contains_finds_sets_and_lists_inside_a_list() -> None:
    item = {"e": {"L": [{"S": "hi"}, {"NS": ["1", "2"]}, {"L": [{"N": "3"}]}]}}
    ctx = ExpressionContext(
        None, {":set": {"NS": ["2", "1"]}, ":list": {"L": [{"N": "3.0"}]}, ":b": {"B": "AQ=="}}
    )
    assert ctx.condition("contains(e, :set)").evaluate(item)
    assert ctx.condition("contains(e, :list)").evaluate(item)
    assert not ctx.condition("contains(e, :b)").evaluate(item)


def test_begins_with_on_strings_and_binaries() -> None:
    assert holds("begins_with(s, :he)")
    assert not holds("begins_with(s, :ll)")
    assert holds("begins_with(b, :b12)")
    assert not holds("begins_with(b, :b2)")
    assert not holds("begins_with(absent, :he)")
    assert not holds("begins_with(ss, :x)")


def test_contains_substring_set_member_and_list_element() -> None:
    assert holds("contains(s, :ll)")
    assert not holds("contains(s, :x)")
    assert holds("contains(ss, :x)")
    assert holds("contains(ns, :twofive)")  # by value: 2.5 = 2.50
    assert not holds("contains(ns, :x)")
    assert holds("contains(bs, :b2)")
    assert holds("contains(l, :a)")
    assert holds("contains(l, :two)")
    assert holds("contains(l, :map)")
    assert not holds("contains(l, :x)")
    assert not holds("contains(n, :ten)")
    assert not holds("contains(absent, :x)")


def test_size_counts_utf16_units_bytes_and_elements() -> None:
    ctx = ExpressionContext(
        None, {":5": {"N": "5"}, ":3": {"N": "3"}, ":2": {"N": "2"}, ":1": {"N": "1"}}
    )
    assert ctx.condition("size(s) = :5").evaluate(ITEM)
    assert ctx.condition("size(u) = :3").evaluate(ITEM)  # é is 1 unit, 𝄞 a surrogate pair
    assert ctx.condition("size(b) = :3").evaluate(ITEM)
    assert ctx.condition("size(ss) = :2").evaluate(ITEM)
    assert ctx.condition("size(l) = :3").evaluate(ITEM)
    assert ctx.condition("size(m) = :2").evaluate(ITEM)
    assert ctx.condition("size(m.lst) = :1").evaluate(ITEM)
    assert not ctx.condition("size(n) = :2").evaluate(ITEM)  # numbers have no size
    assert not ctx.condition("size(absent) = :1").evaluate(ITEM)


def test_a_condition_on_an_absent_item_sees_no_attributes() -> None:
    assert not holds("s = :hello", None)
    assert holds("s <> :hello", None)
