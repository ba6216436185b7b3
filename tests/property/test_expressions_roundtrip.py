"""Printing any expression tree and parsing the text gives back the same tree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.expressions import ast
from keeldb.expressions.parser import (
    CONDITION_KEYWORDS,
    parse_condition,
    parse_projection,
    parse_update,
)
from keeldb.expressions.printer import to_text

KEYWORDS = CONDITION_KEYWORDS | set(ast.CLAUSE_KINDS)

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
WORD_CHARACTERS = LETTERS + "_0123456789"


def word(first: str, size_max: int) -> st.SearchStrategy[str]:
    return st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(first),
        st.text(alphabet=WORD_CHARACTERS, max_size=size_max),
    )


identifiers = word(LETTERS, 6).filter(lambda text: text.upper() not in KEYWORDS)
placeholders = st.builds(lambda text: "#" + text, st.text(WORD_CHARACTERS, min_size=1, max_size=5))
names = identifiers | placeholders
paths = st.builds(
    lambda head, rest: ast.Path((head, *rest)),
    names,
    st.lists(names | st.integers(0, 10_000), max_size=4),
)
values = st.builds(
    lambda text: ast.ValueRef(":" + text), st.text(WORD_CHARACTERS, min_size=1, max_size=5)
)
function_names = st.sampled_from(ast.CONDITION_FUNCTIONS) | identifiers


def condition_operands() -> st.SearchStrategy[ast.Operand]:
    return st.recursive(
        paths | values,
        lambda inner: st.builds(
            lambda name, args: ast.Function(name, tuple(args)),
            function_names,
            st.lists(inner, min_size=1, max_size=3),
        ),
        max_leaves=4,
    )


operands = condition_operands()
predicates = st.one_of(
    st.builds(ast.Compare, st.sampled_from(ast.COMPARATORS), operands, operands),
    st.builds(ast.Between, operands, operands, operands),
    st.builds(
        lambda x, xs: ast.In(x, tuple(xs)), operands, st.lists(operands, min_size=1, max_size=4)
    ),
    st.builds(
        lambda name, args: ast.Function(name, tuple(args)),
        function_names,
        st.lists(operands, min_size=1, max_size=3),
    ),
)
conditions = st.recursive(
    predicates,
    lambda inner: st.one_of(
        st.builds(ast.And, inner, inner),
        st.builds(ast.Or, inner, inner),
        st.builds(ast.Not, inner),
    ),
    max_leaves=8,
)

update_terms = st.recursive(
    paths | values,
    lambda inner: st.one_of(
        st.builds(
            lambda name, args: ast.Function(name, tuple(args)),
            st.sampled_from(ast.UPDATE_FUNCTIONS) | identifiers,
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(ast.Arithmetic, st.sampled_from(["+", "-"]), inner, inner),
    ),
    max_leaves=4,
)
set_values = update_terms


def clause(kind: str) -> st.SearchStrategy[ast.UpdateClause]:
    if kind == "SET":
        action = st.builds(ast.SetAction, paths, set_values)
    elif kind == "REMOVE":
        action = st.builds(ast.RemoveAction, paths)
    elif kind == "ADD":
        action = st.builds(ast.AddAction, paths, values)
    else:
        action = st.builds(ast.DeleteAction, paths, values)
    return st.builds(
        lambda actions: ast.UpdateClause(kind, tuple(actions)),
        st.lists(action, min_size=1, max_size=3),
    )


updates = st.builds(
    lambda clauses: ast.UpdateExpression(tuple(clauses)),
    st.lists(st.sampled_from(ast.CLAUSE_KINDS).flatmap(clause), min_size=1, max_size=4),
)
projections = st.builds(
    lambda ps: ast.ProjectionExpression(tuple(ps)), st.lists(paths, min_size=1, max_size=5)
)


@settings(max_examples=150, deadline=None)
@given(conditions)
def test_condition_print_then_parse_is_the_identity(tree: ast.Condition) -> None:
    parsed = parse_condition(to_text(tree))
    assert parsed.tree == tree
    assert not parsed.redundant_parentheses


@settings(max_examples=100, deadline=None)
@given(updates)
def test_update_print_then_parse_is_the_identity(tree: ast.UpdateExpression) -> None:
    assert parse_update(to_text(tree)).tree == tree


@settings(max_examples=100, deadline=None)
@given(projections)
def test_projection_print_then_parse_is_the_identity(tree: ast.ProjectionExpression) -> None:
    assert parse_projection(to_text(tree)).tree == tree


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab:#.[]()0=<> ,ANDORTSEIbetwn_", max_size=30))
def test_any_text_either_parses_or_raises_the_syntax_error(text: str) -> None:
    from keeldb.expressions.lexer import ExpressionSyntaxError

    for parse in (parse_condition, parse_update, parse_projection):
        try:
            tree = parse(text).tree
        except ExpressionSyntaxError as error:
            assert error.token
        else:
            assert parse(to_text(tree)).tree == tree
