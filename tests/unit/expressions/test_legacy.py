"""The legacy parameters: every check and message, and what each one translates into (checked
by compiling the translation and running it on items, not by comparing text)."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.expressions import compile_request, legacy
from keeldb.model.errors import SerializationException, ValidationException

INVALID = "One or more parameter values were invalid: "


def s(text: str) -> dict[str, Any]:
    return {"S": text}


def n(text: str) -> dict[str, Any]:
    return {"N": text}


def message(operation: str, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationException) as caught:
        legacy.translate(operation, body)
    return caught.value.message


def condition(operation: str, body: dict[str, Any], param: str = "ConditionExpression") -> Any:
    translated = legacy.translate(operation, body)
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS[operation])
    return {
        "ConditionExpression": compiled.condition,
        "FilterExpression": compiled.filter,
    }[param]


def expected(entries: dict[str, Any], conditional_operator: str | None = None) -> Any:
    body: dict[str, Any] = {"TableName": "t", "Item": {}, "Expected": entries}
    if conditional_operator is not None:
        body["ConditionalOperator"] = conditional_operator
    return condition("PutItem", body)


def updated(updates: dict[str, Any], item: dict[str, Any] | None) -> dict[str, Any]:
    translated = legacy.translate("UpdateItem", {"Key": {}, "AttributeUpdates": updates})
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["UpdateItem"])
    assert compiled.update is not None
    new, _ = compiled.update.apply(item)
    return new


# --- Requests without legacy parameters -------------------------------------------------------


def test_a_request_without_legacy_parameters_is_returned_as_it_is() -> None:
    body = {"TableName": "t", "Item": {}, "ConditionExpression": "a = :v"}
    assert legacy.translate("PutItem", body) is body


def test_translation_never_changes_the_request_it_is_given() -> None:
    body = {"TableName": "t", "Item": {}, "Expected": {"a": {"Value": s("x")}}}
    copy = {"TableName": "t", "Item": {}, "Expected": {"a": {"Value": s("x")}}}
    translated = legacy.translate("PutItem", body)
    assert body == copy
    assert "Expected" not in translated
    assert translated["ConditionExpression"]


# --- Mixing legacy and expression parameters ---------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "legacy_names", "expression_names"),
    [
        (
            "PutItem",
            {"Expected": {"a": {"Exists": False}}, "ConditionExpression": "a = :v"},
            "Expected",
            "ConditionExpression",
        ),
        (
            "PutItem",
            {"ConditionalOperator": "AND", "ConditionExpression": "attribute_exists(pk)"},
            "ConditionalOperator",
            "ConditionExpression",
        ),
        (
            "UpdateItem",
            {
                "AttributeUpdates": {"a": {"Value": s("v")}},
                "Expected": {"a": {"Exists": False}},
                "ConditionalOperator": "AND",
                "UpdateExpression": "SET a = :v",
                "ConditionExpression": "attribute_exists(pk)",
            },
            "AttributeUpdates, Expected, ConditionalOperator",
            "UpdateExpression, ConditionExpression",
        ),
        (
            "Query",
            {
                "KeyConditions": {"pk": {"ComparisonOperator": "EQ"}},
                "QueryFilter": {"a": {"ComparisonOperator": "NULL"}},
                "ConditionalOperator": "AND",
                "KeyConditionExpression": "pk = :p",
                "FilterExpression": "a = :v",
                "ProjectionExpression": "b",
            },
            "QueryFilter, ConditionalOperator, KeyConditions",
            "ProjectionExpression, FilterExpression, KeyConditionExpression",
        ),
        (
            "Scan",
            {
                "AttributesToGet": ["a"],
                "ScanFilter": {"a": {"ComparisonOperator": "NULL"}},
                "ConditionalOperator": "AND",
                "FilterExpression": "a = :v",
                "ProjectionExpression": "b",
            },
            "AttributesToGet, ScanFilter, ConditionalOperator",
            "ProjectionExpression, FilterExpression",
        ),
        (
            "GetItem",
            {"AttributesToGet": ["a"], "ProjectionExpression": "b"},
            "AttributesToGet",
            "ProjectionExpression",
        ),
    ],
)
def test_legacy_and_expression_parameters_together_are_refused_naming_both_in_order(
    operation: str, body: dict[str, Any], legacy_names: str, expression_names: str
) -> None:
    assert message(operation, body) == (
        "Can not use both expression and non-expression parameters in the same request: "
        f"Non-expression parameters: {{{legacy_names}}} "
        f"Expression parameters: {{{expression_names}}}"
    )


def test_key_conditions_may_go_with_a_filter_expression_and_placeholders_do_not_clash() -> None:
    body = {
        "TableName": "t",
        "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("k")]}},
        "FilterExpression": "#l0 = :l0",
        "ExpressionAttributeNames": {"#l0": "a"},
        "ExpressionAttributeValues": {":l0": s("x")},
    }
    translated = legacy.translate("Query", body)
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["Query"])
    assert compiled.key_condition is not None
    partition, sort = compiled.key_condition.for_schema("pk", None)
    assert partition == s("k")
    assert sort is None
    assert compiled.filter is not None
    assert compiled.filter.evaluate({"a": s("x")})
    assert not compiled.filter.evaluate({"a": s("y")})


def test_key_conditions_may_go_with_a_projection_expression() -> None:
    body = {
        "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("k")]}},
        "ProjectionExpression": "a, b",
    }
    translated = legacy.translate("Query", body)
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["Query"])
    assert compiled.projection is not None
    assert compiled.projection.apply({"a": s("1"), "c": s("2")}) == {"a": s("1")}


def test_expression_attribute_names_without_expressions_are_refused() -> None:
    body = {"Expected": {"a": {"Exists": False}}, "ExpressionAttributeNames": {"#a": "a"}}
    assert message("PutItem", body) == (
        "ExpressionAttributeNames can only be specified when using expressions"
    )


@pytest.mark.parametrize(
    ("operation", "body", "expected_message"),
    [
        (
            "PutItem",
            {"Expected": {"a": {"Exists": False}}},
            (
                "ExpressionAttributeValues can only be specified when using expressions: "
                "ConditionExpression is null"
            ),
        ),
        (
            "UpdateItem",
            {"AttributeUpdates": {"a": {"Action": "DELETE"}}},
            (
                "ExpressionAttributeValues can only be specified when using expressions: "
                "UpdateExpression and ConditionExpression are null"
            ),
        ),
        (
            "DeleteItem",
            {"Expected": {"a": {"Exists": False}}},
            "ExpressionAttributeValues can only be specified when using expressions",
        ),
    ],
)
def test_expression_attribute_values_without_expressions_are_refused(
    operation: str, body: dict[str, Any], expected_message: str
) -> None:
    assert message(operation, {**body, "ExpressionAttributeValues": {":v": s("x")}}) == (
        expected_message
    )


# --- ConditionalOperator ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("PutItem", {"ConditionalOperator": "AND", "Item": {}}),
        ("DeleteItem", {"ConditionalOperator": "OR", "Key": {}}),
        (
            "UpdateItem",
            {"ConditionalOperator": "AND", "AttributeUpdates": {"a": {"Value": s("v")}}},
        ),
        ("Scan", {"ConditionalOperator": "AND", "ScanFilter": {}}),
        ("Scan", {"ConditionalOperator": "AND", "AttributesToGet": ["a", "b"]}),
        ("Query", {"ConditionalOperator": "AND"}),
        (
            "Query",
            {
                "ConditionalOperator": "OR",
                "KeyConditions": {
                    "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("k")]}
                },
            },
        ),
    ],
)
def test_conditional_operator_without_a_condition_map_is_refused(
    operation: str, body: dict[str, Any]
) -> None:
    assert (
        message(operation, body) == "ConditionalOperator cannot be used without Filter or Expected"
    )


@pytest.mark.parametrize(
    ("operation", "param"),
    [("PutItem", "Expected"), ("Scan", "ScanFilter"), ("Query", "QueryFilter")],
)
def test_conditional_operator_with_one_condition_is_refused(operation: str, param: str) -> None:
    entry = {"ComparisonOperator": "EQ", "AttributeValueList": [s("x")]}
    body = {"ConditionalOperator": "AND", param: {"a": entry}}
    assert message(operation, body) == (
        "ConditionalOperator can only be used when Filter or Expected has two or more elements"
    )


def test_an_unknown_conditional_operator_breaks_the_enum_constraint() -> None:
    body = {
        "ConditionalOperator": "XOR",
        "Expected": {"a": {"Exists": False}, "b": {"Exists": False}},
    }
    assert message("PutItem", body) == (
        "1 validation error detected: Value 'XOR' at 'conditionalOperator' failed to satisfy "
        "constraint: Member must satisfy enum value set: [AND, OR]"
    )


def test_conditional_operator_or_holds_when_any_condition_holds() -> None:
    cond = expected({"a": {"Value": s("x")}, "b": {"Value": s("y")}}, "OR")
    assert cond.evaluate({"a": s("x")})
    assert cond.evaluate({"b": s("y")})
    assert not cond.evaluate({"a": s("y"), "b": s("x")})


def test_conditional_operator_and_is_the_default() -> None:
    cond = expected({"a": {"Value": s("x")}, "b": {"Value": s("y")}})
    assert cond.evaluate({"a": s("x"), "b": s("y")})
    assert not cond.evaluate({"a": s("x")})


# --- Expected: the Value / Exists form ----------------------------------------------------------


def test_expected_value_alone_means_equal() -> None:
    cond = expected({"a": {"Value": n("1")}})
    assert cond.evaluate({"a": n("1.0")})
    assert not cond.evaluate({"a": n("2")})
    assert not cond.evaluate({"a": s("1")})
    assert not cond.evaluate(None)


def test_expected_exists_true_with_value_means_equal() -> None:
    cond = expected({"a": {"Value": s("x"), "Exists": True}})
    assert cond.evaluate({"a": s("x")})
    assert not cond.evaluate({})


def test_expected_exists_false_means_the_attribute_is_absent() -> None:
    cond = expected({"a": {"Exists": False}})
    assert cond.evaluate(None)
    assert cond.evaluate({"b": s("x")})
    assert not cond.evaluate({"a": s("x")})


@pytest.mark.parametrize(
    ("entry", "expected_message"),
    [
        ({}, "Value must be provided when Exists is null for Attribute: a"),
        ({"Exists": True}, "Value must be provided when Exists is true for Attribute: a"),
        (
            {"Exists": False, "Value": s("x")},
            "Value cannot be used when Exists is false for Attribute: a",
        ),
        (
            {"Value": s("x"), "AttributeValueList": []},
            "Value and AttributeValueList cannot be used together for Attribute: a",
        ),
        (
            {"AttributeValueList": [s("x")]},
            "AttributeValueList can only be used with a ComparisonOperator for Attribute: a",
        ),
        (
            {"ComparisonOperator": "EQ", "Exists": True, "Value": s("x")},
            "Exists and ComparisonOperator cannot be used together for Attribute: a",
        ),
        (
            {"ComparisonOperator": "EQ"},
            "Value or AttributeValueList must be used with ComparisonOperator: EQ for Attribute: a",
        ),
        (
            {"ComparisonOperator": "BETWEEN", "Value": s("a")},
            "Invalid number of argument(s) for the BETWEEN ComparisonOperator",
        ),
        (
            {"ComparisonOperator": "NULL", "Value": s("a")},
            "Invalid number of argument(s) for the NULL ComparisonOperator",
        ),
    ],
)
def test_malformed_expected_entries_get_dynamodbs_messages(
    entry: dict[str, Any], expected_message: str
) -> None:
    assert message("PutItem", {"Expected": {"a": entry}}) == INVALID + expected_message


def test_an_invalid_expected_value_gets_the_attribute_value_message() -> None:
    assert message("PutItem", {"Expected": {"a": {"Value": {}}}}) == (
        "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
    )


def test_an_unknown_comparison_operator_breaks_the_enum_constraint() -> None:
    body = {"Expected": {"a": {"ComparisonOperator": "LIKE", "Value": s("x")}}}
    assert message("PutItem", body) == (
        "1 validation error detected: Value 'LIKE' at 'expected.a.member.comparisonOperator' "
        "failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, "
        "LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
    )


# --- Comparison operators (the same for Expected, QueryFilter and ScanFilter) -------------------


def scan_filter(op: str, *values: dict[str, Any]) -> Any:
    entry: dict[str, Any] = {"ComparisonOperator": op}
    if values:
        entry["AttributeValueList"] = list(values)
    return condition("Scan", {"ScanFilter": {"a": entry}}, "FilterExpression")


@pytest.mark.parametrize(
    ("op", "operand", "item_value", "holds"),
    [
        ("EQ", n("5"), n("5"), True),
        ("EQ", n("5"), n("6"), False),
        ("EQ", {"SS": ["a", "b"]}, {"SS": ["b", "a"]}, True),
        ("EQ", {"L": [s("x")]}, {"L": [s("x")]}, True),
        ("EQ", n("5"), None, False),
        ("NE", n("5"), n("6"), True),
        ("NE", n("5"), n("5"), False),
        ("NE", n("5"), None, True),
        ("NE", n("5"), s("5"), True),
        ("LT", n("5"), n("4"), True),
        ("LT", n("5"), n("5"), False),
        ("LE", n("5"), n("5"), True),
        ("GT", s("b"), s("c"), True),
        ("GT", s("b"), s("a"), False),
        ("GE", s("b"), s("b"), True),
        ("GT", n("1"), s("2"), False),
        ("LT", n("1"), None, False),
        ("CONTAINS", s("ell"), s("hello"), True),
        ("CONTAINS", s("x"), {"SS": ["x", "y"]}, True),
        ("CONTAINS", n("3"), {"NS": ["1", "2"]}, False),
        ("CONTAINS", s("x"), {"L": [s("x")]}, True),
        ("CONTAINS", s("x"), None, False),
        ("NOT_CONTAINS", s("ell"), s("hello"), False),
        ("NOT_CONTAINS", s("z"), s("hello"), True),
        ("NOT_CONTAINS", s("z"), None, False),
        ("BEGINS_WITH", s("he"), s("hello"), True),
        ("BEGINS_WITH", s("lo"), s("hello"), False),
        ("BEGINS_WITH", {"B": "AQ=="}, {"B": "AQI="}, True),
    ],
)
def test_one_operand_comparisons_evaluate_as_dynamodb_does(
    op: str, operand: dict[str, Any], item_value: dict[str, Any] | None, holds: bool
) -> None:
    item = {} if item_value is None else {"a": item_value}
    assert scan_filter(op, operand).evaluate(item) is holds
    entry = {"ComparisonOperator": op, "AttributeValueList": [operand]}
    assert expected({"a": entry}).evaluate(item) is holds


def test_null_and_not_null_test_existence() -> None:
    assert scan_filter("NULL").evaluate({})
    assert not scan_filter("NULL").evaluate({"a": {"NULL": True}})
    assert scan_filter("NOT_NULL").evaluate({"a": {"NULL": True}})
    assert not scan_filter("NOT_NULL").evaluate({})


def test_in_holds_for_any_listed_value() -> None:
    cond = scan_filter("IN", s("a"), s("b"))
    assert cond.evaluate({"a": s("b")})
    assert not cond.evaluate({"a": s("c")})
    assert not cond.evaluate({})


def test_between_is_inclusive() -> None:
    cond = scan_filter("BETWEEN", n("1"), n("3"))
    assert cond.evaluate({"a": n("1")})
    assert cond.evaluate({"a": n("3")})
    assert not cond.evaluate({"a": n("3.5")})
    assert not cond.evaluate({"a": s("2")})


@pytest.mark.parametrize(
    ("op", "count"),
    [
        ("EQ", 0),
        ("EQ", 2),
        ("NE", 2),
        ("LE", 0),
        ("LT", 2),
        ("GE", 2),
        ("GT", 0),
        ("CONTAINS", 2),
        ("NOT_CONTAINS", 0),
        ("BEGINS_WITH", 2),
        ("NULL", 1),
        ("NOT_NULL", 2),
        ("IN", 0),
        ("BETWEEN", 1),
        ("BETWEEN", 3),
    ],
)
def test_a_wrong_number_of_operands_names_the_operator(op: str, count: int) -> None:
    entry: dict[str, Any] = {"ComparisonOperator": op, "AttributeValueList": [s("a")] * count}
    expected_message = INVALID + f"Invalid number of argument(s) for the {op} ComparisonOperator"
    assert message("Scan", {"ScanFilter": {"a": entry}}) == expected_message
    assert message("Query", {"QueryFilter": {"a": entry}}) == expected_message
    if count:
        assert message("PutItem", {"Expected": {"a": entry}}) == expected_message


@pytest.mark.parametrize("op", ["LT", "LE", "GT", "GE", "IN"])
@pytest.mark.parametrize(
    "value",
    [
        {"BOOL": True},
        {"NULL": True},
        {"SS": ["a"]},
        {"NS": ["1"]},
        {"BS": ["YQ=="]},
        {"M": {}},
        {"L": []},
    ],
)
def test_ordering_operators_refuse_unordered_types(op: str, value: dict[str, Any]) -> None:
    (type_,) = value
    entry = {"ComparisonOperator": op, "AttributeValueList": [value]}
    assert message("Scan", {"ScanFilter": {"a": entry}}) == (
        INVALID + f"ComparisonOperator {op} is not valid for {type_} AttributeValue type"
    )


@pytest.mark.parametrize("value", [n("1"), {"SS": ["a"]}, {"BOOL": True}])
def test_begins_with_takes_only_strings_and_binaries(value: dict[str, Any]) -> None:
    (type_,) = value
    entry = {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [value]}
    assert message("Scan", {"ScanFilter": {"a": entry}}) == (
        INVALID + f"ComparisonOperator BEGINS_WITH is not valid for {type_} AttributeValue type"
    )


@pytest.mark.parametrize("op", ["CONTAINS", "NOT_CONTAINS"])
def test_contains_refuses_sets_lists_and_maps(op: str) -> None:
    for value, type_ in (({"SS": ["a"]}, "SS"), ({"L": []}, "L"), ({"M": {}}, "M")):
        entry = {"ComparisonOperator": op, "AttributeValueList": [value]}
        assert message("Scan", {"ScanFilter": {"a": entry}}) == (
            INVALID + f"ComparisonOperator {op} is not valid for {type_} AttributeValue type"
        )


def test_operands_of_different_types_are_refused() -> None:
    entry = {"ComparisonOperator": "IN", "AttributeValueList": [s("a"), n("1")]}
    assert message("Scan", {"ScanFilter": {"a": entry}}) == (
        INVALID + "AttributeValues inside AttributeValueList must be of same type"
    )
    assert message("PutItem", {"Expected": {"a": entry}}) == (
        INVALID + "AttributeValues inside AttributeValueList must be of same type"
    )


@pytest.mark.parametrize("param", ["ScanFilter", "Expected"])
def test_between_with_its_bounds_reversed_is_refused(param: str) -> None:
    entry = {"ComparisonOperator": "BETWEEN", "AttributeValueList": [n("10"), n("9")]}
    operation = "Scan" if param == "ScanFilter" else "PutItem"
    assert message(operation, {param: {"a": entry}}) == (
        "The BETWEEN condition was provided a range where the lower bound is greater than the "
        "upper bound"
    )


def test_a_filter_condition_without_an_operator_breaks_the_not_null_constraint() -> None:
    body = {"ScanFilter": {"a": {"AttributeValueList": [s("x")]}}}
    assert message("Scan", body) == (
        "1 validation error detected: Value null at 'scanFilter.a.member.comparisonOperator' "
        "failed to satisfy constraint: Member must not be null"
    )


def test_an_invalid_value_in_a_filter_gets_the_attribute_value_message() -> None:
    entry = {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "x"}]}
    with pytest.raises(ValidationException) as caught:
        legacy.translate("Scan", {"ScanFilter": {"a": entry}})
    assert "numeric value" in caught.value.message


def test_attribute_names_are_never_read_as_reserved_words_or_paths() -> None:
    cond = expected(
        {"size": {"Value": s("x")}, "a.b": {"Value": s("y")}, "c[0]": {"Exists": False}}
    )
    assert cond.evaluate({"size": s("x"), "a.b": s("y")})
    assert not cond.evaluate({"size": s("x"), "a": {"M": {"b": s("y")}}})


def test_query_filter_translates_into_a_filter_expression() -> None:
    body = {
        "KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("k")]}},
        "QueryFilter": {
            "a": {"ComparisonOperator": "GT", "AttributeValueList": [n("1")]},
            "b": {"ComparisonOperator": "NULL"},
        },
        "ConditionalOperator": "OR",
    }
    cond = condition("Query", body, "FilterExpression")
    assert cond.evaluate({"a": n("2"), "b": s("x")})
    assert cond.evaluate({"a": n("0")})
    assert not cond.evaluate({"a": n("0"), "b": s("x")})


def test_an_empty_condition_map_states_no_condition() -> None:
    translated = legacy.translate("PutItem", {"Item": {}, "Expected": {}})
    assert "ConditionExpression" not in translated
    assert "Expected" not in translated


# --- KeyConditions -----------------------------------------------------------------------------


def key_condition(conditions: dict[str, Any]) -> Any:
    translated = legacy.translate("Query", {"KeyConditions": conditions})
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["Query"])
    return compiled.key_condition


@pytest.mark.parametrize(
    ("op", "values", "term_op"),
    [
        ("EQ", [s("b")], "="),
        ("LT", [s("b")], "<"),
        ("LE", [s("b")], "<="),
        ("GT", [s("b")], ">"),
        ("GE", [s("b")], ">="),
        ("BEGINS_WITH", [s("b")], "begins_with"),
        ("BETWEEN", [s("a"), s("c")], "BETWEEN"),
    ],
)
def test_key_conditions_become_key_condition_terms(
    op: str, values: list[dict[str, Any]], term_op: str
) -> None:
    kc = key_condition(
        {
            "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [n("1")]},
            "sk": {"ComparisonOperator": op, "AttributeValueList": values},
        }
    )
    partition, sort = kc.for_schema("pk", "sk", {"pk": "N", "sk": "S"})
    assert partition == n("1")
    assert sort is not None
    assert sort.op == term_op
    assert list(sort.values) == values


@pytest.mark.parametrize(
    "entry",
    [
        {"ComparisonOperator": "NULL"},
        {"ComparisonOperator": "NOT_NULL"},
        {"ComparisonOperator": "NE", "AttributeValueList": [n("1")]},
        {"ComparisonOperator": "CONTAINS", "AttributeValueList": [s("a")]},
        {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [s("a")]},
        {"ComparisonOperator": "IN", "AttributeValueList": [s("a")]},
    ],
)
def test_key_conditions_refuse_operators_an_index_cannot_serve(entry: dict[str, Any]) -> None:
    body = {
        "KeyConditions": {
            "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [s("k")]},
            "sk": entry,
        }
    }
    assert (
        message("Query", body) == "Attempted conditional constraint is not an indexable operation"
    )


def test_a_range_operator_on_the_partition_key_is_not_supported() -> None:
    kc = key_condition({"pk": {"ComparisonOperator": "GT", "AttributeValueList": [s("k")]}})
    with pytest.raises(ValidationException) as caught:
        kc.for_schema("pk", None)
    assert caught.value.message == "Query key condition not supported"


def test_key_condition_values_are_checked_like_filter_values() -> None:
    body = {"KeyConditions": {"pk": {"ComparisonOperator": "EQ", "AttributeValueList": []}}}
    assert message("Query", body) == (
        INVALID + "Invalid number of argument(s) for the EQ ComparisonOperator"
    )


# --- AttributesToGet ---------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["GetItem", "Query", "Scan"])
def test_duplicate_attributes_to_get_are_refused(operation: str) -> None:
    assert message(operation, {"AttributesToGet": ["a", "b", "a"]}) == (
        INVALID + "Duplicate value in attribute name: a"
    )


def test_attributes_to_get_projects_top_level_attributes_by_their_literal_names() -> None:
    translated = legacy.translate("GetItem", {"Key": {}, "AttributesToGet": ["a.b", "c", "name"]})
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["GetItem"])
    assert compiled.projection is not None
    item = {"a.b": s("1"), "a": {"M": {"b": s("2")}}, "c": n("3"), "name": s("4"), "d": s("5")}
    assert compiled.projection.apply(item) == {"a.b": s("1"), "c": n("3"), "name": s("4")}


def test_empty_attributes_to_get_breaks_the_length_constraint() -> None:
    assert message("GetItem", {"AttributesToGet": []}) == (
        "1 validation error detected: Value '[]' at 'attributesToGet' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )


# --- AttributeUpdates --------------------------------------------------------------------------


def test_put_is_the_default_action_and_replaces_the_value() -> None:
    assert updated({"a": {"Value": s("new")}}, {"a": n("1")}) == {"a": s("new")}
    assert updated({"a": {"Action": "PUT", "Value": {"L": []}}}, None) == {"a": {"L": []}}


def test_delete_without_a_value_removes_the_attribute() -> None:
    assert updated({"a": {"Action": "DELETE"}}, {"a": n("1"), "b": n("2")}) == {"b": n("2")}
    assert updated({"a": {"Action": "DELETE"}}, {"b": n("2")}) == {"b": n("2")}


def test_delete_with_a_set_removes_its_members_and_an_emptied_set() -> None:
    assert updated(
        {"a": {"Action": "DELETE", "Value": {"SS": ["x"]}}}, {"a": {"SS": ["x", "y"]}}
    ) == {"a": {"SS": ["y"]}}
    assert updated({"a": {"Action": "DELETE", "Value": {"SS": ["x"]}}}, {"a": {"SS": ["x"]}}) == {}
    assert updated({"a": {"Action": "DELETE", "Value": {"NS": ["1"]}}}, {}) == {}


def test_add_adds_to_a_number_and_starts_a_missing_number_at_the_value() -> None:
    assert updated({"a": {"Action": "ADD", "Value": n("2")}}, {"a": n("3")}) == {"a": n("5")}
    assert updated({"a": {"Action": "ADD", "Value": n("-2")}}, None) == {"a": n("-2")}


def test_add_unites_sets_and_creates_a_missing_set() -> None:
    new = updated({"a": {"Action": "ADD", "Value": {"NS": ["2", "3"]}}}, {"a": {"NS": ["1", "2"]}})
    assert sorted(new["a"]["NS"]) == ["1", "2", "3"]
    assert updated({"a": {"Action": "ADD", "Value": {"SS": ["x"]}}}, {}) == {"a": {"SS": ["x"]}}


def test_add_of_a_list_appends_to_the_list_or_creates_it() -> None:
    assert updated({"a": {"Action": "ADD", "Value": {"L": [s("b")]}}}, {"a": {"L": [s("a")]}}) == {
        "a": {"L": [s("a"), s("b")]}
    }
    assert updated({"a": {"Action": "ADD", "Value": {"L": [s("b")]}}}, None) == {
        "a": {"L": [s("b")]}
    }


def test_an_update_of_every_kind_at_once() -> None:
    updates = {
        "put": {"Value": s("p")},
        "gone": {"Action": "DELETE"},
        "count": {"Action": "ADD", "Value": n("1")},
        "tags": {"Action": "DELETE", "Value": {"SS": ["old"]}},
    }
    item = {"gone": s("x"), "count": n("9"), "tags": {"SS": ["old", "new"]}}
    assert updated(updates, item) == {"put": s("p"), "count": n("10"), "tags": {"SS": ["new"]}}


@pytest.mark.parametrize("action", ["PUT", "ADD", None])
def test_actions_other_than_delete_need_a_value(action: str | None) -> None:
    entry = {} if action is None else {"Action": action}
    assert message("UpdateItem", {"AttributeUpdates": {"a": entry}}) == (
        INVALID + "Only DELETE action is allowed when no attribute value is specified"
    )


@pytest.mark.parametrize(
    "value", [s("1"), n("1"), {"B": "Yg=="}, {"NULL": True}, {"BOOL": True}, {"M": {}}, {"L": []}]
)
def test_delete_with_a_value_takes_only_sets(value: dict[str, Any]) -> None:
    (type_,) = value
    body = {"AttributeUpdates": {"a": {"Action": "DELETE", "Value": value}}}
    assert message("UpdateItem", body) == (
        INVALID + f"DELETE action with value is not supported for the type {type_}"
    )


@pytest.mark.parametrize(
    "value", [s("1"), {"B": "Yg=="}, {"NULL": True}, {"BOOL": True}, {"M": {}}]
)
def test_add_takes_only_numbers_sets_and_lists(value: dict[str, Any]) -> None:
    (type_,) = value
    body = {"AttributeUpdates": {"a": {"Action": "ADD", "Value": value}}}
    assert message("UpdateItem", body) == (
        INVALID + f"ADD action is not supported for the type {type_}"
    )


def test_an_unknown_action_breaks_the_enum_constraint() -> None:
    body = {"AttributeUpdates": {"a": {"Action": "APPEND", "Value": s("x")}}}
    assert message("UpdateItem", body) == (
        "1 validation error detected: Value 'APPEND' at 'attributeUpdates.a.member.action' "
        "failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
    )


def test_update_and_condition_translate_together() -> None:
    body = {
        "Key": {},
        "AttributeUpdates": {"n": {"Action": "ADD", "Value": n("1")}},
        "Expected": {"n": {"Value": n("1")}},
    }
    translated = legacy.translate("UpdateItem", body)
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["UpdateItem"])
    assert compiled.condition is not None
    assert compiled.update is not None
    assert compiled.condition.evaluate({"n": n("1")})
    assert compiled.update.apply({"n": n("1")})[0] == {"n": n("2")}
    assert compiled.update.top_level_attributes() == {"n"}


def test_source_parameter_names_the_legacy_parameter_a_translation_came_from() -> None:
    body = {"QueryFilter": {"a": {"ComparisonOperator": "NULL"}}}
    assert legacy.source_parameter("Query", body, "FilterExpression") == "QueryFilter"
    assert legacy.source_parameter("Query", {}, "FilterExpression") == "FilterExpression"
    assert legacy.source_parameter("Scan", {"AttributesToGet": ["a"]}, "ProjectionExpression") == (
        "AttributesToGet"
    )


# --- Names, order of the checks, run-time messages ---------------------------------------------


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("PutItem", {"Expected": {"": {"Exists": False}}}),
        ("UpdateItem", {"AttributeUpdates": {"": {"Action": "DELETE"}}}),
        ("GetItem", {"AttributesToGet": [""]}),
        ("Scan", {"ScanFilter": {"": {"ComparisonOperator": "NULL"}}}),
    ],
)
def test_an_empty_attribute_name_is_refused_as_in_an_item(
    operation: str, body: dict[str, Any]
) -> None:
    assert message(operation, body) == "Empty attribute name"


def test_empty_key_conditions_are_refused_for_their_length() -> None:
    assert message("Query", {"KeyConditions": {}}) == "Conditions can be of length 1 or 2 only"


def test_a_query_checks_its_query_filter_before_attributes_to_get_and_key_conditions() -> None:
    body = {
        "KeyConditions": {"pk": {"ComparisonOperator": "NE", "AttributeValueList": [s("k")]}},
        "AttributesToGet": ["a", "a"],
        "QueryFilter": {"b": {"ComparisonOperator": "EQ"}},
    }
    assert message("Query", body) == (
        INVALID + "Invalid number of argument(s) for the EQ ComparisonOperator"
    )
    del body["QueryFilter"]
    assert message("Query", body) == INVALID + "Duplicate value in attribute name: a"
    del body["AttributesToGet"]
    assert message("Query", body) == (
        "Attempted conditional constraint is not an indexable operation"
    )


def test_a_scan_checks_attributes_to_get_before_its_scan_filter() -> None:
    body = {
        "AttributesToGet": ["a", "a"],
        "ScanFilter": {"b": {"ComparisonOperator": "EQ"}},
    }
    assert message("Scan", body) == INVALID + "Duplicate value in attribute name: a"


def test_an_update_checks_attribute_updates_before_expected() -> None:
    body = {"Expected": {"a": {}}, "AttributeUpdates": {"a": {"Action": "PUT"}}}
    assert message("UpdateItem", body) == (
        INVALID + "Only DELETE action is allowed when no attribute value is specified"
    )


def test_a_type_fault_of_a_legacy_update_gets_the_legacy_message() -> None:
    translated = legacy.translate(
        "UpdateItem", {"AttributeUpdates": {"a": {"Action": "ADD", "Value": n("1")}}}
    )
    compiled = compile_request(translated, legacy.EXPRESSION_PARAMETERS["UpdateItem"])
    assert compiled.update is not None
    with pytest.raises(ValidationException) as caught:
        compiled.update.apply({"a": s("text")})
    original = {"AttributeUpdates": {"a": {"Action": "ADD", "Value": n("1")}}}
    assert legacy.update_error(original, caught.value).message == (
        "Type mismatch for attribute to update"
    )
    assert legacy.update_error({"UpdateExpression": "ADD a :v"}, caught.value) is caught.value
    other = ValidationException("Item size to update has exceeded the maximum allowed size")
    assert legacy.update_error(original, other) is other


@pytest.mark.parametrize(
    ("body", "expected_message"),
    [
        ({"Expected": {"a": {"Exists": "yes"}}}, "STRING_VALUE can not be converted to a Boolean"),
        (
            {"Expected": {"a": {"ComparisonOperator": "EQ", "AttributeValueList": "x"}}},
            "Expected list or null",
        ),
        (
            {"Expected": {"a": {"ComparisonOperator": 1}}},
            "NUMBER_VALUE can not be converted to a String",
        ),
        ({"Expected": {"a": [1]}}, "Start of list found where not expected"),
        ({"Expected": ["a"]}, "Start of list found where not expected"),
    ],
)
def test_members_of_the_wrong_json_type_are_serialization_errors(
    body: dict[str, Any], expected_message: str
) -> None:
    with pytest.raises(SerializationException) as caught:
        legacy.translate("PutItem", body)
    assert caught.value.message == expected_message


def test_null_entries_are_absent() -> None:
    translated = legacy.translate("PutItem", {"Expected": {"a": None, "b": {"Exists": False}}})
    assert translated["ExpressionAttributeNames"] == {"#l0": "b"}
    body = {"Expected": {"a": None, "b": {"Exists": False}}, "ConditionalOperator": "AND"}
    assert message("PutItem", body) == (
        "ConditionalOperator can only be used when Filter or Expected has two or more elements"
    )


def test_an_in_with_more_operands_than_an_expression_allows_still_means_in() -> None:
    values = [n(str(i)) for i in range(250)]
    cond = scan_filter("IN", *values)
    assert cond.evaluate({"a": n("0")})
    assert cond.evaluate({"a": n("149")})
    assert cond.evaluate({"a": n("249")})
    assert not cond.evaluate({"a": n("250")})
    assert not cond.evaluate({})


def test_constraint_violations_inside_legacy_maps_come_first_and_together() -> None:
    body = {
        "ScanFilter": {
            "a": {"ComparisonOperator": "LIKE", "AttributeValueList": [s("x")]},
            "b": {"AttributeValueList": [s("x")]},
        },
        "ConditionalOperator": "XOR",
        "FilterExpression": "c = :c",
    }
    assert message("Scan", body) == (
        "3 validation errors detected: "
        "Value null at 'scanFilter.b.member.comparisonOperator' failed to satisfy constraint: "
        "Member must not be null; "
        "Value 'LIKE' at 'scanFilter.a.member.comparisonOperator' failed to satisfy constraint: "
        "Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, "
        "NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]; "
        "Value 'XOR' at 'conditionalOperator' failed to satisfy constraint: "
        "Member must satisfy enum value set: [AND, OR]"
    )
