"""ProjectionExpression applied with DynamoDB's semantics for nested paths and indexes."""

from __future__ import annotations

from typing import Any

from keeldb.expressions import ExpressionContext

ITEM: dict[str, Any] = {
    "a": {"S": "x"},
    "b": {"M": {"c": {"N": "1"}, "d": {"L": [{"S": "p"}, {"S": "q"}, {"M": {"e": {"N": "2"}}}]}}},
    "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}]},
}


def project(text: str, names: dict[str, str] | None = None) -> dict[str, Any]:
    return ExpressionContext(names, None).projection(text).apply(ITEM)


def test_top_level_attributes_are_copied() -> None:
    assert project("a, l") == {"a": ITEM["a"], "l": ITEM["l"]}


def test_nested_paths_keep_their_nesting() -> None:
    assert project("b.c") == {"b": {"M": {"c": {"N": "1"}}}}
    assert project("b.d[2].e") == {"b": {"M": {"d": {"L": [{"M": {"e": {"N": "2"}}}]}}}}


def test_list_elements_close_up_in_index_order() -> None:
    assert project("l[2], l[0]") == {"l": {"L": [{"N": "0"}, {"N": "2"}]}}


def test_paths_into_one_map_merge() -> None:
    assert project("b.c, b.d[1]") == {"b": {"M": {"c": {"N": "1"}, "d": {"L": [{"S": "q"}]}}}}


def test_paths_that_lead_nowhere_are_left_out() -> None:
    assert project("nope, b.zz, l[7], a.c") == {}


def test_names_are_substituted() -> None:
    assert project("#n.c", {"#n": "b"}) == {"b": {"M": {"c": {"N": "1"}}}}


def test_projection_exposes_its_resolved_paths() -> None:
    projection = ExpressionContext({"#n": "b"}, None).projection("#n.d[1], a")
    assert projection.paths == (("b", "d", 1), ("a",))
    assert projection.top_level_attributes() == {"a", "b"}
