"""The PartiQL parser alone: the AST of each statement form, parameter binding, and a fuzz
harness proving that any text either parses or is refused with a ValidationException."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine.partiql.parser import (
    And,
    Arithmetic,
    Between,
    Call,
    Compare,
    Delete,
    In,
    Insert,
    Is,
    Literal,
    Not,
    Or,
    Path,
    Select,
    Update,
    UpdateAction,
    parse,
)
from keeldb.model.errors import ValidationException


def test_select_parses_table_index_projection_where_and_order() -> None:
    statement = parse(
        'SELECT a, b.c[2] FROM "t"."i" WHERE a = ? AND NOT (b > 1 OR c IS NOT MISSING) '
        "ORDER BY a DESC",
        [{"S": "x"}],
    )
    assert statement == Select(
        table="t",
        index="i",
        projection=(Path(("a",)), Path(("b", "c", 2))),
        where=And(
            Compare("=", Path(("a",)), Literal({"S": "x"})),
            Not(
                Or(
                    Compare(">", Path(("b",)), Literal({"N": "1"})),
                    Is(Path(("c",)), "MISSING", negated=True),
                )
            ),
        ),
        order_by=((Path(("a",)), True),),
    )


def test_between_in_and_not_equal_forms() -> None:
    statement = parse("SELECT * FROM t WHERE a BETWEEN 1 AND 2 AND b IN ('x') AND c != 3")
    assert isinstance(statement, Select)
    assert statement.where == And(
        And(
            Between(Path(("a",)), Literal({"N": "1"}), Literal({"N": "2"})),
            In(Path(("b",)), (Literal({"S": "x"}),)),
        ),
        Compare("<>", Path(("c",)), Literal({"N": "3"})),
    )


def test_insert_parses_nested_values_and_sets() -> None:
    statement = parse(
        "INSERT INTO t VALUE {'k': 'v', 'm': {'l': [1, <<2, 3>>, NULL]}, 'b': ?}", [{"B": "AA=="}]
    )
    assert statement == Insert(
        "t",
        {
            "k": {"S": "v"},
            "m": {"M": {"l": {"L": [{"N": "1"}, {"NS": ["2", "3"]}, {"NULL": True}]}}},
            "b": {"B": "AA=="},
        },
    )


def test_update_and_delete_parse_actions_and_returning() -> None:
    statement = parse(
        "UPDATE t SET a = a + 1, b = list_append(b, [1]) REMOVE c WHERE k = 1 RETURNING ALL OLD *"
    )
    assert statement == Update(
        "t",
        (
            UpdateAction("SET", Path(("a",)), Arithmetic("+", Path(("a",)), Literal({"N": "1"}))),
            UpdateAction(
                "SET",
                Path(("b",)),
                Call("list_append", (Path(("b",)), Literal({"L": [{"N": "1"}]}))),
            ),
            UpdateAction("REMOVE", Path(("c",))),
        ),
        Compare("=", Path(("k",)), Literal({"N": "1"})),
        "ALL_OLD",
    )
    assert parse("DELETE FROM t WHERE k = 1") == Delete(
        "t", Compare("=", Path(("k",)), Literal({"N": "1"})), None
    )


def test_too_few_parameters_are_refused_and_extra_ones_ignored() -> None:
    with pytest.raises(ValidationException) as caught:
        parse("SELECT * FROM t WHERE a = ? AND b = ?", [{"N": "1"}])
    assert caught.value.message == "Number of parameters in request and statement don't match."
    statement = parse("SELECT * FROM t WHERE a = ?", [{"N": "1"}, {"N": "2"}])
    assert isinstance(statement, Select)
    assert statement.where == Compare("=", Path(("a",)), Literal({"N": "1"}))


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(ValidationException):
        parse("SELECT * FROM t WHERE " + "NOT " * 10_000 + "a = 1")
    with pytest.raises(ValidationException):
        parse("INSERT INTO t VALUE " + "{'a': " * 1000 + "1" + "}" * 1000)


PIECES = [
    "SELECT",
    "INSERT",
    "INTO",
    "VALUE",
    "UPDATE",
    "SET",
    "REMOVE",
    "DELETE",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IS",
    "MISSING",
    "NULL",
    "IN",
    "BETWEEN",
    "RETURNING",
    "ALL",
    "OLD",
    "NEW",
    "ORDER",
    "BY",
    "DESC",
    "EXISTS",
    "a",
    '"t"',
    "'s'",
    "1",
    "-2.5e3",
    "?",
    "*",
    ",",
    ".",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<<",
    ">>",
    ":",
    ";",
    "=",
    "<>",
    "<",
    ">=",
    "+",
    "-",
    "size",
    "set_add",
    "begins_with",
    "TRUE",
    "'",
    '"',
    "!",
    "#",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=30),
    st.lists(st.sampled_from([{"S": "x"}, {"N": "1"}, {"SS": ["a"]}]), max_size=3),
)
def test_any_token_soup_parses_or_is_a_validation_exception(
    pieces: list[str], parameters: list[dict[str, object]]
) -> None:
    try:
        parse(" ".join(pieces), parameters)  # type: ignore[arg-type]
    except ValidationException as error:
        assert error.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_validation_exception(text: str) -> None:
    try:
        parse(text)
    except ValidationException as error:
        assert error.message
