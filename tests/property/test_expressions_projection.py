"""Random projections of random items agree with an obvious reference.

The reference walks the item (not the paths): it keeps a node when some path leads to it or
through it, which is DynamoDB's projection read the other way round.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keeldb.expressions import ExpressionContext, ast
from keeldb.expressions.printer import projection_text
from keeldb.model.errors import ValidationException

NAMES = ["a", "b", "c"]
KEYS = ["x", "y", "z"]

leaves = st.sampled_from([{"N": "1"}, {"S": "s"}, {"BOOL": False}, {"SS": ["q"]}])
documents = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: {"L": items}),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3).map(lambda m: {"M": m}),
    ),
    max_leaves=12,
)
items = st.dictionaries(st.sampled_from(NAMES), documents, max_size=3)
paths = st.builds(
    lambda head, rest: (head, *rest),
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(KEYS) | st.integers(0, 3), max_size=3),
)


def reference(item: dict[str, Any], wanted: list[tuple[Any, ...]]) -> dict[str, Any]:
    def keep(value: dict[str, Any], prefix: tuple[Any, ...]) -> dict[str, Any] | None:
        if prefix in wanted:
            return value  # a path names this node: all of it
        if not any(path[: len(prefix)] == prefix for path in wanted):
            return None  # no path goes through here
        if "M" in value:
            members = {}
            for key, member in value["M"].items():
                kept = keep(member, (*prefix, key))
                if kept is not None:
                    members[key] = kept
            return {"M": members} if members else None
        if "L" in value:
            elements = []
            for index, element in enumerate(value["L"]):
                kept = keep(element, (*prefix, index))
                if kept is not None:
                    elements.append(kept)
            return {"L": elements} if elements else None
        return None  # a path goes through a scalar: it leads nowhere

    out = {}
    for name, value in item.items():
        kept = keep(value, (name,))
        if kept is not None:
            out[name] = kept
    return out


@settings(max_examples=300, deadline=None)
@given(items, st.lists(paths, min_size=1, max_size=4))
def test_projection_agrees_with_the_reference(
    item: dict[str, Any], wanted: list[tuple[Any, ...]]
) -> None:
    text = projection_text(ast.ProjectionExpression(tuple(ast.Path(p) for p in wanted)))
    try:
        projection = ExpressionContext(None, None).projection(text)
    except ValidationException:
        assume(False)  # overlapping or conflicting paths
        raise
    assert projection.apply(item) == reference(item, wanted)
