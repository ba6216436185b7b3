"""Garbage in, DynamoDB's ValidationException out: never a crash, whatever the text.

Any text either compiles or raises ValidationException; anything that compiles evaluates or
applies to any item without raising anything but ValidationException (update errors).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.expressions import ExpressionContext
from keeldb.model.errors import ValidationException

FRAGMENTS = [
    "a",
    "b",
    "c",
    "#n",
    "#m",
    ":v",
    ":w",
    ":s",
    ":l",
    " ",
    "  ",
    ".",
    "[",
    "]",
    "0",
    "1",
    "99",
    "(",
    ")",
    ",",
    "=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "SET",
    "REMOVE",
    "ADD",
    "DELETE",
    "size",
    "contains",
    "begins_with",
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "if_not_exists",
    "list_append",
    "name",
    "_",
    "!",
    "#",
    ":",
    "é",
]
# Text built from expression-like pieces: operands, operators, keywords and calls, glued
# with or without spaces, so that a fair share of it is (nearly) well formed.
operand_texts = st.sampled_from(
    ["a", "b.c", "a[0]", "a[1].b", "#n", "#m.c", ":v", ":w", ":s", ":l", "size(a)", "size(#n)"]
)
predicate_texts = st.one_of(
    st.builds(
        lambda x, op, y: f"{x} {op} {y}",
        operand_texts,
        st.sampled_from(["=", "<>", "<", "<=", ">", ">="]),
        operand_texts,
    ),
    st.builds(
        lambda x, y, z: f"{x} BETWEEN {y} AND {z}", operand_texts, operand_texts, operand_texts
    ),
    st.builds(
        lambda x, ys: f"{x} IN ({', '.join(ys)})",
        operand_texts,
        st.lists(operand_texts, min_size=1, max_size=3),
    ),
    st.builds(
        lambda f, xs: f"{f}({', '.join(xs)})",
        st.sampled_from(
            [
                "attribute_exists",
                "attribute_not_exists",
                "attribute_type",
                "begins_with",
                "contains",
                "size",
                "if_not_exists",
            ]
        ),
        st.lists(operand_texts, min_size=1, max_size=3),
    ),
)
condition_texts = st.recursive(
    predicate_texts,
    lambda inner: st.one_of(
        st.builds(lambda x, y: f"{x} AND {y}", inner, inner),
        st.builds(lambda x, y: f"{x} OR {y}", inner, inner),
        st.builds(lambda x: f"NOT {x}", inner),
        st.builds(lambda x: f"({x})", inner),
    ),
    max_leaves=5,
)
update_texts = st.builds(
    lambda clauses: " ".join(clauses),
    st.lists(
        st.one_of(
            st.builds(
                lambda sets: "SET " + ", ".join(sets),
                st.lists(
                    st.builds(
                        lambda p, v: f"{p} = {v}",
                        operand_texts,
                        st.one_of(
                            operand_texts,
                            st.builds(
                                lambda x, op, y: f"{x} {op} {y}",
                                operand_texts,
                                st.sampled_from(["+", "-"]),
                                operand_texts,
                            ),
                            st.builds(
                                lambda x, y: f"list_append({x}, {y})", operand_texts, operand_texts
                            ),
                            st.builds(
                                lambda x, y: f"if_not_exists({x}, {y})",
                                operand_texts,
                                operand_texts,
                            ),
                        ),
                    ),
                    min_size=1,
                    max_size=3,
                ),
            ),
            st.builds(
                lambda ps: "REMOVE " + ", ".join(ps),
                st.lists(operand_texts, min_size=1, max_size=3),
            ),
            st.builds(lambda p, v: f"ADD {p} {v}", operand_texts, operand_texts),
            st.builds(lambda p, v: f"DELETE {p} {v}", operand_texts, operand_texts),
        ),
        min_size=1,
        max_size=3,
    ),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """Well-formed text, sometimes with a piece cut out or a stray fragment put in."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + text[at + draw(st.integers(1, 3)) :]
        else:
            text = text[:at] + draw(st.sampled_from(FRAGMENTS)) + text[at:]
    return text


texts = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(" ".join),
    mutated(condition_texts),
    mutated(update_texts),
)
NAMES = {"#n": "a", "#m": "b"}
VALUES: dict[str, Any] = {
    ":v": {"N": "1"},
    ":w": {"N": "2"},
    ":s": {"S": "S"},
    ":l": {"L": [{"N": "1"}]},
}
leaves = st.sampled_from(
    [{"N": "1"}, {"N": "5"}, {"S": "S"}, {"S": ""}, {"SS": ["S"]}, {"NS": ["1"]}, {"BOOL": True}]
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: {"L": xs}),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=2).map(
            lambda m: {"M": m}
        ),
    ),
    max_leaves=6,
)
items = st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "c"]), values, max_size=3))


@settings(max_examples=400, deadline=None)
@given(texts, items)
def test_any_condition_text_compiles_or_is_refused_and_never_crashes(
    text: str, item: dict[str, Any] | None
) -> None:
    context = ExpressionContext(dict(NAMES), dict(VALUES))
    try:
        condition = context.condition(text)
    except ValidationException as error:
        assert error.message.startswith("Invalid ConditionExpression: ")
        return
    assert isinstance(condition.evaluate(item), bool)


@settings(max_examples=400, deadline=None)
@given(texts, items)
def test_any_update_text_compiles_or_is_refused_and_never_crashes(
    text: str, item: dict[str, Any] | None
) -> None:
    context = ExpressionContext(dict(NAMES), dict(VALUES))
    try:
        update = context.update(text)
    except ValidationException as error:
        assert error.message.startswith("Invalid UpdateExpression: ")
        return
    try:
        after, effect = update.apply(item)
    except ValidationException:
        return
    assert isinstance(after, dict)
    assert isinstance(effect.updated_new(), dict)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_any_projection_or_key_condition_text_compiles_or_is_refused(text: str) -> None:
    for compile_ in ("projection", "key_condition", "filter"):
        context = ExpressionContext(dict(NAMES), dict(VALUES))
        try:
            getattr(context, compile_)(text)
        except ValidationException:
            pass
