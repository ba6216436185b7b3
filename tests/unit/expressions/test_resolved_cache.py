"""The cache of resolved expressions: hits carry the new request's values, placeholders stay
accounted for, failures and value-dependent checks are never cached, and it is bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keeldb.expressions import ast
from keeldb.expressions.context import RESOLVED_CACHE, ExpressionContext, _ResolvedCache
from keeldb.model.errors import ValidationException


@pytest.fixture(autouse=True)
def cold_cache() -> Iterator[None]:
    RESOLVED_CACHE.clear()
    yield
    RESOLVED_CACHE.clear()


def update_of(value: str) -> ast.UpdateExpression:
    context = ExpressionContext({"#f": "field1"}, {":v": {"S": value}})
    update = context.update("SET #f = :v")
    context.check_unused()
    return update.tree


def test_a_cached_update_carries_the_values_of_the_request_that_hit_it() -> None:
    first = update_of("one")
    assert len(RESOLVED_CACHE) == 1
    second = update_of("two")
    assert len(RESOLVED_CACHE) == 1
    assert first.clauses[0].actions[0] == ast.SetAction(
        ast.Path(("field1",)), ast.Literal({"S": "one"})
    )
    assert second.clauses[0].actions[0] == ast.SetAction(
        ast.Path(("field1",)), ast.Literal({"S": "two"})
    )


def test_a_hit_applies_its_own_values_to_the_item() -> None:
    for value in ("a", "b", "c"):
        context = ExpressionContext({"#f": "x"}, {":v": {"S": value}})
        after, _ = context.update("SET #f = :v").apply({"k": {"S": "1"}})
        assert after == {"k": {"S": "1"}, "x": {"S": value}}


def test_other_names_or_value_types_are_other_entries() -> None:
    ExpressionContext({"#f": "a"}, {":v": {"S": "x"}}).update("SET #f = :v")
    ExpressionContext({"#f": "b"}, {":v": {"S": "x"}}).update("SET #f = :v")
    ExpressionContext({"#f": "a"}, {":v": {"N": "1"}}).update("SET #f = :v")
    assert len(RESOLVED_CACHE) == 3


def test_an_unused_value_is_still_refused_after_a_hit() -> None:
    ExpressionContext(None, {":v": {"N": "1"}, ":u": {"N": "2"}}).condition("a = :v")
    context = ExpressionContext(None, {":v": {"N": "1"}, ":u": {"N": "2"}})
    context.condition("a = :v")
    with pytest.raises(ValidationException, match="unused in expressions: keys: {:u}"):
        context.check_unused()


def test_names_used_by_a_cached_expression_count_as_used() -> None:
    for _ in range(2):
        context = ExpressionContext({"#a": "x", "#b": "y"}, None)
        context.projection("#a, #b")
        context.check_unused()  # raises if the hit forgot its names


def test_a_failing_expression_is_not_cached_and_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValidationException, match="reserved keyword"):
            ExpressionContext(None, {":v": {"N": "1"}}).condition("size = :v")
    assert len(RESOLVED_CACHE) == 0


def test_between_is_resolved_per_request_since_its_bounds_are_compared() -> None:
    ExpressionContext(None, {":a": {"N": "1"}, ":b": {"N": "2"}}).condition("x BETWEEN :a AND :b")
    with pytest.raises(ValidationException, match="upper bound to be greater"):
        ExpressionContext(None, {":a": {"N": "2"}, ":b": {"N": "1"}}).condition(
            "x BETWEEN :a AND :b"
        )


def test_attribute_type_is_resolved_per_request_since_its_type_name_is_read() -> None:
    ExpressionContext(None, {":t": {"S": "N"}}).condition("attribute_type(x, :t)")
    with pytest.raises(ValidationException, match="Invalid attribute type name"):
        ExpressionContext(None, {":t": {"S": "Q"}}).condition("attribute_type(x, :t)")


@pytest.mark.interpreted
def test_the_cache_keeps_at_most_its_bound_and_drops_the_least_recently_used() -> None:
    cache = _ResolvedCache(2)
    entry = object()
    cache.put(("a",), entry)  # type: ignore[arg-type]
    cache.put(("b",), entry)  # type: ignore[arg-type]
    assert cache.get(("a",)) is entry  # "a" is now the most recent
    cache.put(("c",), entry)  # type: ignore[arg-type]
    assert len(cache) == 2
    assert cache.get(("b",)) is None
    assert cache.get(("a",)) is entry
    assert cache.get(("c",)) is entry
