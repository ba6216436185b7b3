"""The grammar: precedence, paths, functions, clauses, and DynamoDB's syntax error shape."""

from __future__ import annotations

import pytest

from keeldb.expressions import ast
from keeldb.expressions.lexer import ExpressionSyntaxError
from keeldb.expressions.parser import parse_condition, parse_projection, parse_update
from keeldb.expressions.printer import to_text

A, B, C = ast.Path(("a",)), ast.Path(("b",)), ast.Path(("c",))
V, W = ast.ValueRef(":v"), ast.ValueRef(":w")


def cond(text: str) -> ast.Node:
    return parse_condition(text).tree


def syntax(parse, text: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ExpressionSyntaxError) as caught:
        parse(text)
    return caught.value.token, caught.value.near


@pytest.mark.parametrize("op", ["=", "<>", "<", "<=", ">", ">="])
def test_every_comparator_parses_between_two_operands(op: str) -> None:
    assert cond(f"a {op} :v") == ast.Compare(op, A, V)


def test_and_binds_tighter_than_or() -> None:
    tree = cond("a = :v OR b = :v AND c = :v")
    assert tree == ast.Or(
        ast.Compare("=", A, V), ast.And(ast.Compare("=", B, V), ast.Compare("=", C, V))
    )


def test_not_binds_tighter_than_and() -> None:
    tree = cond("NOT a = :v AND b = :v")
    assert tree == ast.And(ast.Not(ast.Compare("=", A, V)), ast.Compare("=", B, V))


def test_parentheses_override_precedence() -> None:
    tree = cond("(a = :v OR b = :v) AND c = :v")
    assert tree == ast.And(
        ast.Or(ast.Compare("=", A, V), ast.Compare("=", B, V)), ast.Compare("=", C, V)
    )


def test_and_and_or_are_left_associative() -> None:
    tree = cond("a = :v AND b = :v AND c = :v")
    assert tree == ast.And(
        ast.And(ast.Compare("=", A, V), ast.Compare("=", B, V)), ast.Compare("=", C, V)
    )


def test_keywords_are_case_insensitive() -> None:
    assert cond("a between :v and :w or not b in (:v)") == ast.Or(
        ast.Between(A, V, W), ast.Not(ast.In(B, (V,)))
    )


def test_between_and_in_parse_their_operands() -> None:
    assert cond("a BETWEEN :v AND :w") == ast.Between(A, V, W)
    assert cond("a IN (:v, :w, b)") == ast.In(A, (V, W, B))


def test_document_paths_keep_names_placeholders_and_indexes() -> None:
    tree = cond("a.#b[3].c[0][12] = :v")
    assert tree == ast.Compare("=", ast.Path(("a", "#b", 3, "c", 0, 12)), V)


def test_a_function_is_a_condition_and_size_is_an_operand() -> None:
    assert cond("attribute_exists(a)") == ast.Function("attribute_exists", (A,))
    assert cond("size(a) > :v") == ast.Compare(">", ast.Function("size", (A,)), V)


def test_a_parenthesised_operand_is_an_operand() -> None:
    assert cond("(a) = :v") == ast.Compare("=", A, V)


def test_double_parentheses_are_noted_as_redundant() -> None:
    assert parse_condition("((a = :v))").redundant_parentheses
    assert parse_condition("((a)) = :v").redundant_parentheses
    assert not parse_condition("(a = :v) AND (b = :v)").redundant_parentheses


def test_syntax_error_names_the_token_and_the_text_around_it() -> None:
    assert syntax(parse_condition, "a x b") == ("x", "a x b")


def test_syntax_error_at_the_end_names_eof() -> None:
    assert syntax(parse_update, "SET a") == ("<EOF>", "a")
    assert syntax(parse_update, "SET a = ") == ("<EOF>", "= ")


def test_syntax_error_quotes_the_neighbours_without_spaces_when_there_are_none() -> None:
    assert syntax(parse_update, "SET path = VALUE 1") == ("1", "VALUE 1")
    assert syntax(parse_condition, "a=:v:w") == (":w", ":v:w")


def test_an_unknown_character_is_a_syntax_error() -> None:
    assert syntax(parse_condition, "a = :v;") == (";", ":v;")
    assert syntax(parse_condition, "a == :v") == ("=", "== :v")


def test_a_keyword_cannot_stand_for_an_attribute() -> None:
    assert syntax(parse_condition, "and = :v")[0] == "and"


def test_update_parses_all_four_clauses_in_any_order() -> None:
    tree = parse_update("REMOVE a[1], b ADD c :v SET d = :w DELETE e :v").tree
    assert isinstance(tree, ast.UpdateExpression)
    assert [clause.kind for clause in tree.clauses] == ["REMOVE", "ADD", "SET", "DELETE"]
    assert tree.clauses[0].actions == (
        ast.RemoveAction(ast.Path(("a", 1))),
        ast.RemoveAction(B),
    )


def test_set_parses_arithmetic_and_nested_functions() -> None:
    tree = parse_update("SET a = if_not_exists(a, :v) + :w, b = list_append(:v, b)").tree
    assert isinstance(tree, ast.UpdateExpression)
    first, second = tree.clauses[0].actions
    assert first == ast.SetAction(A, ast.Arithmetic("+", ast.Function("if_not_exists", (A, V)), W))
    assert second == ast.SetAction(B, ast.Function("list_append", (V, B)))


def test_set_takes_at_most_one_arithmetic_operator() -> None:
    assert syntax(parse_update, "SET a = b + c + d")[0] == "+"


def test_add_and_delete_take_a_value_placeholder() -> None:
    assert syntax(parse_update, "ADD a b")[0] == "b"


def test_projection_is_a_comma_separated_list_of_paths() -> None:
    tree = parse_projection("a, b.c, d[2]").tree
    assert tree == ast.ProjectionExpression((A, ast.Path(("b", "c")), ast.Path(("d", 2))))


def test_projection_does_not_take_values() -> None:
    assert syntax(parse_projection, "a, :v")[0] == ":v"


@pytest.mark.parametrize(
    "text",
    [
        "a = :v",
        "NOT (a = :v OR b < :w)",
        "a = :v OR (b = :v OR c = :v)",
        "a.b[1].#c IN (:v, :w) AND size(a) BETWEEN :v AND :w",
        "contains(a, :v) AND NOT begins_with(#x, :w)",
    ],
)
def test_printed_conditions_parse_back_to_the_same_tree(text: str) -> None:
    tree = cond(text)
    assert cond(to_text(tree)) == tree


def test_printed_updates_parse_back_to_the_same_tree() -> None:
    tree = parse_update("SET a = (b + :v) - :w, c = list_append(c, :v) REMOVE d[0]").tree
    assert parse_update(to_text(tree)).tree == tree
