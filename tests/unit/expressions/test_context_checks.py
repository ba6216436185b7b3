"""The request-level checks of names and values stay DynamoDB's when their work is
remembered: a placeholder key found well formed as a value key is still refused as a name
key (and the other way round), the memory of keys is bounded, and a name or value left
unused is refused whether or not the expressions came from the cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keeldb.expressions import context as expression_context
from keeldb.expressions.context import RESOLVED_CACHE, ExpressionContext, _SeenKeys
from keeldb.model.errors import ValidationException


@pytest.fixture(autouse=True)
def cold_cache() -> Iterator[None]:
    RESOLVED_CACHE.clear()
    yield
    RESOLVED_CACHE.clear()


def key_kind_mistakes() -> list[str]:
    """Keys of one kind used as the other after being seen well formed; which were let in."""
    let_in = []
    ExpressionContext(None, {":k": {"N": "1"}})
    try:
        ExpressionContext({":k": "a"}, None)
        let_in.append("value key as a name key")
    except ValidationException as error:
        assert error.message == (
            'ExpressionAttributeNames contains invalid key: Syntax error; key: ":k"'
        )
    ExpressionContext({"#k": "a"}, None)
    try:
        ExpressionContext(None, {"#k": {"N": "1"}})
        let_in.append("name key as a value key")
    except ValidationException as error:
        assert error.message == (
            'ExpressionAttributeValues contains invalid key: Syntax error; key: "#k"'
        )
    return let_in


def test_a_key_seen_well_formed_of_one_kind_is_still_refused_as_the_other() -> None:
    assert key_kind_mistakes() == []


def test_one_memory_for_both_kinds_of_key_would_be_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = _SeenKeys(16)
    monkeypatch.setattr(expression_context, "_NAME_KEYS_SEEN", shared)
    monkeypatch.setattr(expression_context, "_VALUE_KEYS_SEEN", shared)
    assert key_kind_mistakes() == ["value key as a name key", "name key as a value key"]


@pytest.mark.parametrize("key", ["#", "#a-b", "# a", "#é", "a"])
def test_malformed_name_keys_are_refused_every_time(key: str) -> None:
    for _ in range(2):
        with pytest.raises(
            ValidationException, match="ExpressionAttributeNames contains invalid key"
        ):
            ExpressionContext({key: "x"}, None)


def test_the_memory_of_keys_is_bounded() -> None:
    seen = _SeenKeys(3)
    for i in range(10):
        seen.add(f"#k{i}")
        assert len(seen._keys) <= 3
    assert "#k9" in seen


@pytest.mark.parametrize("cached", [False, True])
def test_an_unused_name_or_value_is_refused_on_a_hit_and_a_miss(cached: bool) -> None:
    names = {"#f": "a", "#g": "b"}
    values = {":v": {"N": "1"}, ":w": {"N": "2"}}
    if cached:  # the same expressions with the same names and value types, once before
        ExpressionContext(names, values).update("SET #f = :v")
        ExpressionContext({"#f": "a"}, values).update("SET #f = :v")
        assert len(RESOLVED_CACHE) == 2
    context = ExpressionContext(names, values)
    context.update("SET #f = :v")
    with pytest.raises(ValidationException, match=r"ExpressionAttributeNames unused.*keys: \{#g\}"):
        context.check_unused()
    context = ExpressionContext({"#f": "a"}, values)
    context.update("SET #f = :v")
    with pytest.raises(
        ValidationException, match=r"ExpressionAttributeValues unused.*keys: \{:w\}"
    ):
        context.check_unused()
