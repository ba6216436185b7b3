"""Update plans: top-level `SET a = :v`, `REMOVE a`, `ADD a :n`, `DELETE a :s` applied from a
plan bound to each request's values give exactly what the general evaluator gives (item,
insertion order, effect, first error); other shapes are never planned; and a cached plan is
reused only for the same expression text, names map and value types (each part of the
cache key is shown to matter by breaking it on purpose)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.expressions import ExpressionContext
from keeldb.expressions.context import RESOLVED_CACHE
from keeldb.expressions.evaluate import apply_update
from keeldb.model.errors import ValidationException

Item = dict[str, dict[str, Any]]


@pytest.fixture(autouse=True)
def cold_cache() -> Iterator[None]:
    RESOLVED_CACHE.clear()
    yield
    RESOLVED_CACHE.clear()


def compiled(
    text: str, names: dict[str, str] | None, values: dict[str, Any] | None
) -> Any:  # an Update
    context = ExpressionContext(names, values)
    update = context.update(text)
    context.check_unused()
    return update


def planned(text: str, names: dict[str, str] | None, values: dict[str, Any] | None) -> bool:
    compiled(text, names, values)  # cached on the first request
    update = compiled(text, names, values)
    return update._plan is not None


def outcome(run: Callable[[], tuple[Item, Any]]) -> tuple[Any, ...]:
    """What an apply gives, comparable across evaluators: the new item with its attribute
    order, the effect's paths and images, or the error's type and message."""
    try:
        new, effect = run()
    except ValidationException as error:
        return ("error", error.message)
    return ("ok", list(new.items()), effect.paths, effect.updated_old(), effect.updated_new())


# --- which shapes are planned ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names", "values"),
    [
        ("SET #f = :v", {"#f": "a"}, {":v": {"S": "x"}}),
        ("SET a = :v, b = :w", None, {":v": {"S": "x"}, ":w": {"L": [{"N": "1"}]}}),
        ("REMOVE a, b", None, None),
        ("ADD n :one", None, {":one": {"N": "1"}}),
        ("DELETE s :x", None, {":x": {"SS": ["a"]}}),
        (
            "SET a = :v REMOVE b ADD c :n DELETE d :s",
            None,
            {":v": {"BOOL": True}, ":n": {"N": "2"}, ":s": {"NS": ["1"]}},
        ),
    ],
)
def test_top_level_updates_of_values_are_planned(
    text: str, names: dict[str, str] | None, values: dict[str, Any] | None
) -> None:
    assert planned(text, names, values)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("SET a.b = :v", {":v": {"S": "x"}}),
        ("SET a[0] = :v", {":v": {"S": "x"}}),
        ("REMOVE a.b", None),
        ("SET a = b", None),
        ("SET a = :v + :v", {":v": {"N": "1"}}),
        ("SET a = if_not_exists(a, :v)", {":v": {"N": "1"}}),
        ("SET a = list_append(a, :v)", {":v": {"L": []}}),
        ("SET a = :v, b.c = :v", {":v": {"N": "1"}}),
    ],
)
def test_other_shapes_are_left_to_the_general_evaluator(
    text: str, values: dict[str, Any] | None
) -> None:
    assert not planned(text, None, values)
    # ...and a cache hit answers as a fresh resolution does.
    hit = compiled(text, None, values)
    RESOLVED_CACHE.clear()
    fresh = compiled(text, None, values)
    item: Item = {"a": {"M": {"b": {"N": "1"}}}, "b": {"M": {}}}
    assert outcome(lambda: hit.apply(item)) == outcome(lambda: fresh.apply(item))


# --- the plan against the general evaluator -----------------------------------------------------

ATTRIBUTES = ("a", "b", "c", "d", "e")
scalars = st.one_of(
    st.builds(lambda t: {"S": t}, st.text(max_size=3)),
    st.builds(lambda i: {"N": str(i)}, st.integers(-5, 5)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
)
sets = st.one_of(
    st.builds(lambda m: {"SS": sorted(m)}, st.sets(st.sampled_from("xyz"), min_size=1)),
    st.builds(lambda m: {"NS": sorted(m)}, st.sets(st.sampled_from("123"), min_size=1)),
)
values_st = st.one_of(
    scalars,
    sets,
    st.builds(lambda e: {"L": e}, st.lists(scalars, max_size=2)),
    st.builds(lambda m: {"M": m}, st.dictionaries(st.sampled_from("pq"), scalars, max_size=2)),
)
items = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(("k", *ATTRIBUTES)), values_st, max_size=6),
)


@st.composite
def updates(draw: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A valid-looking top-level update: each attribute once, by name or placeholder."""
    chosen = draw(st.lists(st.sampled_from(ATTRIBUTES), min_size=1, max_size=5, unique=True))
    clauses: dict[str, list[str]] = {"SET": [], "REMOVE": [], "ADD": [], "DELETE": []}
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for i, attribute in enumerate(chosen):
        path = attribute
        if draw(st.booleans()):
            path = f"#n{i}"
            names[path] = attribute
        kind = draw(st.sampled_from(tuple(clauses)))
        if kind == "REMOVE":
            clauses[kind].append(path)
            continue
        placeholder = f":v{i}"
        if kind == "SET":
            values[placeholder] = draw(values_st)
            clauses[kind].append(f"{path} = {placeholder}")
        elif kind == "ADD":
            values[placeholder] = draw(
                st.one_of(st.builds(lambda i: {"N": str(i)}, st.integers(-3, 3)), sets)
            )
            clauses[kind].append(f"{path} {placeholder}")
        else:
            values[placeholder] = draw(sets)
            clauses[kind].append(f"{path} {placeholder}")
    order = draw(st.permutations(tuple(clauses)))
    text = " ".join(f"{k} {', '.join(clauses[k])}" for k in order if clauses[k])
    return text, names, values


@settings(max_examples=300, deadline=None)
@given(update=updates(), item=items)
def test_a_plan_gives_what_the_general_evaluator_gives(
    update: tuple[str, dict[str, str], dict[str, Any]], item: Item | None
) -> None:
    text, names, values = update
    names_or_none = names or None
    compiled(text, names_or_none, values or None)  # the first request caches the plan
    hit = compiled(text, names_or_none, values or None)
    assert hit._plan is not None
    snapshot = None if item is None else {k: dict(v) for k, v in item.items()}
    fast = outcome(lambda: hit.apply(item))
    general = outcome(lambda: apply_update(hit.tree, item))
    assert fast == general
    assert item == snapshot  # never changed
    assert hit.top_level_attributes() == {str(p[0]) for p in hit.paths}
    assert hit.paths == tuple(a.path.parts for a in hit.tree.actions())


def test_a_set_value_is_copied_into_the_item_not_shared() -> None:
    values = {":v": {"L": [{"S": "x"}]}, ":w": {"S": "y"}}
    compiled("SET a = :v, b = :w", None, values)
    update = compiled("SET a = :v, b = :w", None, values)
    assert update._plan is not None
    new, _ = update.apply(None)
    assert new == {"a": {"L": [{"S": "x"}]}, "b": {"S": "y"}}
    assert new["a"]["L"] is not update._values[":v"]["L"]
    assert new["b"] is not update._values[":w"]


def test_an_add_of_the_wrong_type_to_an_attribute_fails_like_the_general_path() -> None:
    values = {":n": {"N": "1"}}
    compiled("ADD a :n", None, values)
    update = compiled("ADD a :n", None, values)
    with pytest.raises(ValidationException, match="incorrect data type"):
        update.apply({"a": {"S": "text"}})


def test_remove_from_a_missing_item_is_ignored_and_set_creates_it() -> None:
    compiled("SET a = :v REMOVE b", None, {":v": {"N": "1"}})
    update = compiled("SET a = :v REMOVE b", None, {":v": {"N": "2"}})
    new, effect = update.apply(None)
    assert new == {"a": {"N": "2"}}
    assert effect.updated_old() == {}
    assert effect.updated_new() == {"a": {"N": "2"}}


# --- when a cached plan must not be reused ------------------------------------------------------


def reuse_mistakes() -> list[str]:
    """Requests that share a cache entry only if the key is broken, each with what it must
    give; the names of the scenarios whose answer was wrong."""
    wrong = []
    item = {"k": {"S": "1"}, "a": {"N": "5"}, "b": {"N": "7"}}

    # The names map: "#f" stands for another attribute in the second request.
    RESOLVED_CACHE.clear()
    compiled("SET #f = :v", {"#f": "a"}, {":v": {"N": "1"}}).apply(item)
    new, _ = compiled("SET #f = :v", {"#f": "b"}, {":v": {"N": "1"}}).apply(item)
    if new != {"k": {"S": "1"}, "a": {"N": "5"}, "b": {"N": "1"}}:
        wrong.append("names")

    # The value types: ADD of a number is fine, ADD of a string is refused when compiled.
    RESOLVED_CACHE.clear()
    compiled("ADD a :v", None, {":v": {"N": "1"}}).apply(item)
    try:
        compiled("ADD a :v", None, {":v": {"S": "1"}}).apply(item)
        wrong.append("value types")
    except ValidationException as error:
        if "operator: ADD, operand type: STRING" not in error.message:
            wrong.append("value types")

    # The text: the same names and values in another expression.
    RESOLVED_CACHE.clear()
    compiled("SET a = :v", None, {":v": {"N": "1"}}).apply(item)
    new, _ = compiled("ADD a :v", None, {":v": {"N": "1"}}).apply(item)
    if new["a"] != {"N": "6"}:
        wrong.append("text")

    # The values themselves are the request's own, never the first request's.
    RESOLVED_CACHE.clear()
    compiled("SET a = :v", None, {":v": {"N": "1"}}).apply(item)
    new, _ = compiled("SET a = :v", None, {":v": {"N": "2"}}).apply(item)
    if new["a"] != {"N": "2"}:
        wrong.append("values")
    return wrong


def test_a_cached_plan_is_reused_only_for_the_same_text_names_and_value_types() -> None:
    assert reuse_mistakes() == []


@pytest.mark.interpreted
@pytest.mark.parametrize(
    ("broken", "caught"),
    [
        (lambda self, kind, text: (kind, text, self._shape[1]), "names"),
        (
            lambda self, kind, text: (kind, text, self._shape[0], tuple(self.subs.values)),
            "value types",
        ),
        (lambda self, kind, text: (kind, self._shape), "text"),
    ],
    ids=["without names", "without value types", "without text"],
)
def test_a_broken_cache_key_is_caught(
    monkeypatch: pytest.MonkeyPatch, broken: Callable[..., Any], caught: str
) -> None:
    monkeypatch.setattr(ExpressionContext, "_cache_key", broken)
    assert caught in reuse_mistakes()


def test_new_attributes_are_written_in_path_order_as_the_general_evaluator_writes_them() -> None:
    values = {":c": {"N": "3"}, ":a": {"N": "1"}, ":b": {"SS": ["x"]}}
    text = "SET c = :c, a = :a ADD b :b"
    compiled(text, None, values)
    update = compiled(text, None, values)
    assert update._plan is not None
    new, _ = update.apply({"k": {"S": "1"}})
    assert list(new) == ["k", "a", "b", "c"]
    general, _ = apply_update(update.tree, {"k": {"S": "1"}})
    assert list(general) == list(new)
