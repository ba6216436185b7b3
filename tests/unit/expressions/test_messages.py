"""Every client mistake in an expression gets DynamoDB's exact message."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.expressions import ExpressionContext
from keeldb.model.errors import ValidationException

VALUES: dict[str, dict[str, Any]] = {
    ":n": {"N": "1"},
    ":m": {"N": "2"},
    ":s": {"S": "x"},
    ":t": {"S": "S"},
    ":b": {"BOOL": True},
    ":l": {"L": []},
    ":ss": {"SS": ["a"]},
}
NAMES = {"#a": "a", "#b": "b"}


def message(kind: str, text: str) -> str:
    ctx = ExpressionContext(dict(NAMES), dict(VALUES))
    with pytest.raises(ValidationException) as caught:
        getattr(ctx, kind)(text)
    return caught.value.message


def cond_message(text: str) -> str:
    return message("condition", text)


def update_message(text: str) -> str:
    return message("update", text)


@pytest.mark.parametrize(
    ("kind", "param"),
    [
        ("condition", "ConditionExpression"),
        ("filter", "FilterExpression"),
        ("key_condition", "KeyConditionExpression"),
        ("update", "UpdateExpression"),
        ("projection", "ProjectionExpression"),
    ],
)
def test_an_empty_expression_is_rejected_naming_its_parameter(kind: str, param: str) -> None:
    assert message(kind, "") == f"Invalid {param}: The expression can not be empty;"


def test_a_syntax_error_is_reported_with_token_and_near() -> None:
    assert (
        cond_message("a x b")
        == 'Invalid ConditionExpression: Syntax error; token: "x", near: "a x b"'
    )
    assert (
        update_message("SET a = :n :m")
        == 'Invalid UpdateExpression: Syntax error; token: ":m", near: ":n :m"'
    )


def test_an_expression_over_4_kb_is_rejected_with_its_size() -> None:
    text = "a = :n" + " OR a = :n" * 410  # 4106 bytes
    assert len(text.encode()) == 4106
    assert cond_message(text) == (
        "Invalid ConditionExpression: Expression size has exceeded the maximum allowed size; "
        "expression size: 4106"
    )


def test_an_expression_of_exactly_4_kb_is_accepted() -> None:
    text = "a = :n" + " " * (4096 - 6)
    ExpressionContext(None, dict(VALUES)).condition(text)


def test_more_than_300_operators_are_rejected() -> None:
    text = " AND ".join(["a = :n"] * 151)  # 151 comparisons + 150 ANDs
    assert cond_message(text) == (
        "Invalid ConditionExpression: The expression contains too many operators; "
        "operator count: 301"
    )


def test_in_takes_at_most_100_operands() -> None:
    assert cond_message("a IN (" + ", ".join([":n"] * 101) + ")") == (
        "Invalid ConditionExpression: The IN operator is provided with too many operands; "
        "number of operands: 101"
    )
    ExpressionContext(None, dict(VALUES)).condition("a IN (" + ", ".join([":n"] * 100) + ")")


def test_a_reserved_word_as_an_attribute_name_is_rejected() -> None:
    assert cond_message("Name = :s") == (
        "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: Name"
    )
    assert update_message("SET a.size = :n") == (
        "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: size"
    )
    assert message("projection", "a, comment") == (
        "Invalid ProjectionExpression: Attribute name is a reserved keyword; "
        "reserved keyword: comment"
    )


def test_a_path_may_be_32_levels_deep() -> None:
    ExpressionContext(None, None).projection("a" + ".b" * 31)
    assert message("projection", "a" + ".b" * 32) == (
        "Invalid ProjectionExpression: The document path has too many nesting levels; "
        "nesting levels: 33"
    )


def test_a_list_index_must_fit_a_32_bit_integer() -> None:
    ExpressionContext(None, None).projection("a[2147483647]")
    assert message("projection", "a[2147483648]") == (
        "Invalid ProjectionExpression: List index is not within the allowable range; "
        "index: [2147483648]"
    )


def test_an_undefined_name_is_rejected() -> None:
    assert cond_message("#zz = :n") == (
        "Invalid ConditionExpression: An expression attribute name used in the document path is "
        "not defined; attribute name: #zz"
    )


def test_an_undefined_value_is_rejected() -> None:
    assert update_message("SET a = :zz") == (
        "Invalid UpdateExpression: An expression attribute value used in expression is not "
        "defined; attribute value: :zz"
    )


def test_an_unknown_function_is_rejected() -> None:
    assert cond_message("frobnicate(a)") == (
        "Invalid ConditionExpression: Invalid function name; function: frobnicate"
    )
    assert update_message("SET a = f123_hi(b)") == (
        "Invalid UpdateExpression: Invalid function name; function: f123_hi"
    )


def test_function_names_are_case_sensitive() -> None:
    assert update_message("SET a = LIST_APPEND(a, :l)") == (
        "Invalid UpdateExpression: Invalid function name; function: LIST_APPEND"
    )


def test_condition_functions_are_not_allowed_in_updates_and_the_reverse() -> None:
    assert update_message("SET a = size(b)") == (
        "Invalid UpdateExpression: The function is not allowed in an update expression; "
        "function: size"
    )
    assert cond_message("if_not_exists(a, a) = :n") == (
        "Invalid ConditionExpression: The function is not allowed in a condition expression; "
        "function: if_not_exists"
    )


def test_a_boolean_function_cannot_be_an_operand() -> None:
    assert cond_message("attribute_exists(a) = :b") == (
        "Invalid ConditionExpression: The function is not allowed to be used this way in an "
        "expression; function: attribute_exists"
    )


def test_size_cannot_be_a_condition_by_itself() -> None:
    assert cond_message("size(a)") == (
        "Invalid ConditionExpression: The function is not allowed to be used this way in an "
        "expression; function: size"
    )


def test_wrong_number_of_function_operands_is_rejected() -> None:
    assert cond_message("attribute_exists(a, b)") == (
        "Invalid ConditionExpression: Incorrect number of operands for operator or function; "
        "operator or function: attribute_exists, number of operands: 2"
    )
    assert update_message("SET a = list_append(a)") == (
        "Invalid UpdateExpression: Incorrect number of operands for operator or function; "
        "operator or function: list_append, number of operands: 1"
    )


def test_attribute_exists_needs_a_document_path() -> None:
    assert cond_message("attribute_exists(:n)") == (
        "Invalid ConditionExpression: Operator or function requires a document path; "
        "operator or function: attribute_exists"
    )
    assert update_message("SET a = if_not_exists(:n, :m)") == (
        "Invalid UpdateExpression: Operator or function requires a document path; "
        "operator or function: if_not_exists"
    )


@pytest.mark.parametrize(
    ("text", "function", "type_"),
    [
        ("begins_with(a, :n)", "begins_with", "N"),
        ("begins_with(a, :b)", "begins_with", "BOOL"),
        ("size(a) = size(:n)", "size", "N"),
        ("attribute_type(a, :n)", "attribute_type", "N"),
        ("attribute_type(a, b)", "attribute_type", "{NS,SS,L,BS,N,M,B,BOOL,NULL,S}"),
    ],
)
def test_function_operand_types_are_checked(text: str, function: str, type_: str) -> None:
    assert cond_message(text) == (
        "Invalid ConditionExpression: Incorrect operand type for operator or function; "
        f"operator or function: {function}, operand type: {type_}"
    )


def test_attribute_type_names_must_be_valid() -> None:
    assert cond_message("attribute_type(a, :s)") == (
        "Invalid ConditionExpression: Invalid attribute type name found; type: x, "
        "valid types: {B,NULL,SS,BOOL,L,BS,N,NS,S,M}"
    )


def test_comparing_a_path_with_itself_is_rejected() -> None:
    assert cond_message("a.b = a.b") == (
        "Invalid ConditionExpression: The first operand must be distinct from the remaining "
        "operands for this operator or function; operator: =, first operand: [a, b]"
    )


def test_between_bounds_must_share_a_type_and_be_in_order() -> None:
    assert cond_message("a BETWEEN :n AND :s") == (
        "Invalid ConditionExpression: The BETWEEN operator requires same data type for lower "
        "and upper bounds; lower bound operand: AttributeValue: {N:1}, upper bound operand: "
        "AttributeValue: {S:x}"
    )
    assert cond_message("a BETWEEN :m AND :n") == (
        "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater "
        "than or equal to lower bound; lower bound operand: AttributeValue: {N:2}, upper bound "
        "operand: AttributeValue: {N:1}"
    )


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
@pytest.mark.parametrize(("value", "type_"), [(":b", "BOOL"), (":l", "L"), (":ss", "SS")])
def test_ordering_a_value_without_an_order_is_rejected(op: str, value: str, type_: str) -> None:
    assert cond_message(f"a {op} {value}") == (
        "Invalid ConditionExpression: Incorrect operand type for operator or function; "
        f"operator or function: {op}, operand type: {type_}"
    )
    assert message("filter", f"size(a) {op} {value}").startswith(
        "Invalid FilterExpression: Incorrect operand type"
    )


def test_between_refuses_values_without_an_order() -> None:
    assert cond_message("a BETWEEN :b AND :b") == (
        "Invalid ConditionExpression: Incorrect operand type for operator or function; "
        "operator or function: BETWEEN, operand type: BOOL"
    )


def test_equality_takes_values_of_every_type() -> None:
    ExpressionContext(None, dict(VALUES)).condition("a = :l OR a <> :ss OR a IN (:b, :l)")


def test_redundant_parentheses_are_rejected() -> None:
    assert cond_message("((a = :n))") == (
        "Invalid ConditionExpression: The expression has redundant parentheses;"
    )


def test_arithmetic_operands_must_be_numbers() -> None:
    assert update_message("SET a = :s + :n") == (
        "Invalid UpdateExpression: Incorrect operand type for operator or function; "
        "operator or function: +, operand type: S"
    )


def test_list_append_cannot_be_nested_in_another_function() -> None:
    assert update_message("SET a = list_append(list_append(:l, :l), :l)") == (
        "Invalid UpdateExpression: The function is not allowed to be used this way in an "
        "expression; function: list_append"
    )
    ExpressionContext(None, dict(VALUES)).update("SET a = list_append(if_not_exists(a, :l), :l)")


def test_names_written_directly_start_with_a_letter() -> None:
    assert update_message("SET _123 = :n") == (
        'Invalid UpdateExpression: Syntax error; token: "_", near: "SET _123"'
    )
    ExpressionContext({"#_": "x"}, dict(VALUES)).update("SET #_ = :n, A123_ = :n")


def test_list_append_operands_must_be_lists() -> None:
    assert update_message("SET a = list_append(a, :n)") == (
        "Invalid UpdateExpression: Incorrect operand type for operator or function; "
        "operator or function: list_append, operand type: N"
    )


def test_add_takes_numbers_and_sets_only() -> None:
    assert update_message("ADD a :s") == (
        "Invalid UpdateExpression: Incorrect operand type for operator or function; "
        "operator: ADD, operand type: STRING, typeSet: ALLOWED_FOR_ADD_OPERAND"
    )
    assert update_message("ADD a :l") == (
        "Invalid UpdateExpression: Incorrect operand type for operator or function; "
        "operator: ADD, operand type: LIST, typeSet: ALLOWED_FOR_ADD_OPERAND"
    )


def test_delete_takes_sets_only() -> None:
    assert update_message("DELETE a :n") == (
        "Invalid UpdateExpression: Incorrect operand type for operator or function; "
        "operator: DELETE, operand type: NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND"
    )


def test_a_clause_may_appear_only_once() -> None:
    assert update_message("SET a = :n SET b = :m") == (
        'Invalid UpdateExpression: The "SET" section can only be used once in an update expression;'
    )


def test_overlapping_update_paths_are_rejected() -> None:
    assert update_message("SET a = :n REMOVE a.b") == (
        "Invalid UpdateExpression: Two document paths overlap with each other; must remove or "
        "rewrite one of these paths; path one: [a], path two: [a, b]"
    )
    assert update_message("SET #a = :n, a = :m") == (
        "Invalid UpdateExpression: Two document paths overlap with each other; must remove or "
        "rewrite one of these paths; path one: [a], path two: [a]"
    )


def test_conflicting_update_paths_are_rejected() -> None:
    assert update_message("SET a[1] = :n, a.b = :m") == (
        "Invalid UpdateExpression: Two document paths conflict with each other; must remove or "
        "rewrite one of these paths; path one: [a, [1]], path two: [a, b]"
    )


def test_distinct_sibling_paths_do_not_overlap() -> None:
    ctx = ExpressionContext(None, dict(VALUES))
    ctx.update("SET a.b = :n, a.c = :m, a.d[0] = :n REMOVE a.d[1]")


def test_overlapping_projection_paths_are_rejected() -> None:
    assert message("projection", "a.b, a") == (
        "Invalid ProjectionExpression: Two document paths overlap with each other; must remove "
        "or rewrite one of these paths; path one: [a, b], path two: [a]"
    )
    assert message("projection", "a[0], a.b") == (
        "Invalid ProjectionExpression: Two document paths conflict with each other; must remove "
        "or rewrite one of these paths; path one: [a, [0]], path two: [a, b]"
    )


def test_syntax_errors_win_over_every_other_problem() -> None:
    assert cond_message("Name = :zz x").startswith("Invalid ConditionExpression: Syntax error;")


def test_redundant_parentheses_win_over_unknown_functions_and_reserved_words() -> None:
    assert cond_message("((foo(Name)))").endswith("redundant parentheses;")


def test_unknown_function_wins_over_reserved_word_and_undefined_value() -> None:
    assert cond_message("Name = :zz AND foo(a)") == (
        "Invalid ConditionExpression: Invalid function name; function: foo"
    )


def test_reserved_word_wins_over_undefined_name() -> None:
    assert cond_message("#zz = :n AND Name = :n").endswith("reserved keyword: Name")


def test_in_an_update_reserved_word_wins_over_undefined_names_and_values() -> None:
    assert update_message("SET #zz = :zz, Name = :n").endswith("reserved keyword: Name")
    assert update_message("SET a = :zz, #zz = :n").endswith("attribute name: #zz")
