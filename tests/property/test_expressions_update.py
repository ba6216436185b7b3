"""Random SET/REMOVE updates on nested maps and lists agree with an obvious reference.

The reference works on plain Python containers (dicts for maps, lists for lists), marks list
elements for removal with a sentinel and closes the lists up at the end, so that every index
refers to the list as it was before the update; it shares no code with the evaluator.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keeldb.expressions import ExpressionContext, ast
from keeldb.expressions.printer import to_text
from keeldb.model.errors import ValidationException

NAMES = ["a", "b", "c"]
KEYS = ["x", "y", "z"]
INVALID_PATH = "The document path provided in the update expression is invalid for update"
MISSING = "The provided expression refers to an attribute that does not exist in the item"

leaves = st.sampled_from([{"N": "1"}, {"S": "s"}, {"BOOL": False}, {"NULL": True}])
documents = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: {"L": items}),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3).map(lambda m: {"M": m}),
    ),
    max_leaves=10,
)
items = st.dictionaries(st.sampled_from(NAMES), documents, max_size=3)
paths = st.builds(
    lambda head, rest: (head, *rest),
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(KEYS) | st.integers(0, 4), max_size=3),
)


class Removed:
    """Marks a list element removed; lists close up at the end."""


def to_plain(value: dict[str, Any]) -> Any:
    if "M" in value:
        return {k: to_plain(v) for k, v in value["M"].items()}
    if "L" in value:
        return [to_plain(v) for v in value["L"]]
    return ("leaf", value)


def from_plain(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"M": {k: from_plain(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [from_plain(v) for v in value if not isinstance(v, Removed)]}
    return value[1]  # type: ignore[no-any-return]


def find(root: dict[str, Any], parts: tuple[Any, ...]) -> Any:
    """The container holding the last part, or None."""
    current: Any = root
    for part in parts[:-1]:
        if isinstance(part, int):
            if not isinstance(current, list) or part >= len(current):
                return None
        elif not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
        if isinstance(current, Removed):
            return None
    last = parts[-1]
    if isinstance(last, int) and not isinstance(current, list):
        return None
    if isinstance(last, str) and not isinstance(current, dict):
        return None
    return current


def lookup(root: dict[str, Any], parts: tuple[Any, ...]) -> Any:
    container = find(root, parts)
    if container is None:
        return None
    last = parts[-1]
    if isinstance(last, int):
        return container[last] if last < len(container) else None
    return container.get(last)


def reference(
    item: dict[str, Any], actions: list[tuple[str, tuple[Any, ...], Any]]
) -> dict[str, Any] | str:
    """The item after the update, or the error message DynamoDB gives."""
    root = {name: to_plain(value) for name, value in item.items()}
    original = copy.deepcopy(root)
    resolved = []
    for kind, parts, source in actions:
        if kind == "SET" and isinstance(source, tuple):
            found = lookup(original, source)
            if found is None:
                return MISSING
            resolved.append((kind, parts, copy.deepcopy(found)))
        elif kind == "SET":
            resolved.append((kind, parts, to_plain(source)))
        else:
            resolved.append((kind, parts, None))

    # "If you add multiple elements in a single SET operation, the elements are sorted in
    # order by element number" (Developer Guide): sort writes by path, numbers as numbers.
    def order(parts: tuple[Any, ...]) -> list[tuple[int, Any]]:
        return [(0, p) if isinstance(p, int) else (1, p) for p in parts]

    for kind, parts, value in sorted(resolved, key=lambda entry: order(entry[1])):
        if kind != "SET":
            continue
        container = find(root, parts)
        if container is None:
            return INVALID_PATH
        last = parts[-1]
        if isinstance(last, int) and last >= len(container):
            container.append(value)
        else:
            container[last] = value
    for kind, parts, _ in resolved:
        if kind != "REMOVE":
            continue
        container = find(root, parts)
        if container is None:
            return INVALID_PATH
        last = parts[-1]
        if isinstance(last, int):
            if last < len(container):
                container[last] = Removed()
        else:
            container.pop(last, None)
    return {name: from_plain(value) for name, value in root.items()}


@st.composite
def updates(draw: st.DrawFn) -> tuple[list[tuple[str, tuple[Any, ...], Any]], dict[str, Any]]:
    actions = []
    values: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["SET", "SET", "REMOVE"]))
        parts = draw(paths)
        if kind == "SET" and draw(st.booleans()):
            actions.append((kind, parts, draw(paths)))
        elif kind == "SET":
            value = draw(documents)
            values[f":v{len(values)}"] = value
            actions.append((kind, parts, value))
        else:
            actions.append((kind, parts, None))
    return actions, values


def expression(actions: list[tuple[str, tuple[Any, ...], Any]]) -> str:
    sets, removes, index = [], [], 0
    for kind, parts, source in actions:
        if kind == "SET":
            if isinstance(source, tuple):
                value: ast.Operand = ast.Path(source)
            else:
                value = ast.ValueRef(f":v{index}")
                index += 1
            sets.append(ast.SetAction(ast.Path(parts), value))
        else:
            removes.append(ast.RemoveAction(ast.Path(parts)))
    clauses = []
    if sets:
        clauses.append(ast.UpdateClause("SET", tuple(sets)))
    if removes:
        clauses.append(ast.UpdateClause("REMOVE", tuple(removes)))
    return to_text(ast.UpdateExpression(tuple(clauses)))


@settings(max_examples=300, deadline=None)
@given(updates(), items)
def test_set_and_remove_agree_with_the_reference(
    generated: tuple[list[tuple[str, tuple[Any, ...], Any]], dict[str, Any]],
    item: dict[str, Any],
) -> None:
    actions, values = generated
    try:
        update = ExpressionContext(None, values or None).update(expression(actions))
    except ValidationException:
        assume(False)  # overlapping or conflicting paths: rejected before any item is read
        raise
    frozen = copy.deepcopy(item)
    expected = reference(item, actions)
    try:
        after, _ = update.apply(item)
    except ValidationException as error:
        assert error.message == expected
    else:
        assert after == expected
    assert item == frozen
