"""KeyConditionExpression: the restricted form Query takes, with DynamoDB's messages."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.expressions import ExpressionContext, KeyTerm
from keeldb.model.errors import ValidationException

VALUES: dict[str, Any] = {":p": {"S": "p"}, ":a": {"N": "1"}, ":b": {"N": "2"}, ":s": {"S": "x"}}


def key(text: str) -> Any:
    return ExpressionContext(None, dict(VALUES)).key_condition(text)


def fails(text: str) -> str:
    with pytest.raises(ValidationException) as caught:
        key(text)
    return caught.value.message


def test_partition_key_equality_alone() -> None:
    condition = key("pk = :p")
    assert condition.for_schema("pk", "sk") == ({"S": "p"}, None)


@pytest.mark.parametrize("op", ["=", "<", "<=", ">", ">="])
def test_sort_key_comparisons(op: str) -> None:
    _, sort = key(f"pk = :p AND sk {op} :a").for_schema("pk", "sk")
    assert sort == KeyTerm("sk", op, ({"N": "1"},))


def test_sort_key_between_and_begins_with() -> None:
    _, sort = key("pk = :p AND sk BETWEEN :a AND :b").for_schema("pk", "sk")
    assert sort == KeyTerm("sk", "BETWEEN", ({"N": "1"}, {"N": "2"}))
    _, sort = key("begins_with(sk, :s) AND pk = :p").for_schema("pk", "sk")
    assert sort == KeyTerm("sk", "begins_with", ({"S": "x"},))


def test_a_value_on_the_left_mirrors_the_comparison() -> None:
    _, sort = key("pk = :p AND :a < sk").for_schema("pk", "sk")
    assert sort == KeyTerm("sk", ">", ({"N": "1"},))


def test_names_are_substituted_in_key_conditions() -> None:
    condition = ExpressionContext({"#k": "pk"}, dict(VALUES)).key_condition("#k = :p")
    assert condition.names == ("pk",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pk = :p OR sk = :a", "Invalid operator used in KeyConditionExpression: OR"),
        ("NOT pk = :p", "Invalid operator used in KeyConditionExpression: NOT"),
        ("pk IN (:p)", "Invalid operator used in KeyConditionExpression: IN"),
        ("pk <> :p", "Invalid operator used in KeyConditionExpression: <>"),
        (
            "attribute_exists(pk)",
            "Invalid operator used in KeyConditionExpression: attribute_exists",
        ),
        ("contains(pk, :s)", "Invalid operator used in KeyConditionExpression: contains"),
        ("size(pk) = :a", "KeyConditionExpressions cannot contain nested operations"),
        ("pk.x = :p", "KeyConditionExpressions cannot have conditions on nested attributes"),
        (
            "pk = sk",
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        ),
        (":p = :s", "Invalid condition in KeyConditionExpression: No key attribute specified"),
        ("pk = :p AND pk = :s", "KeyConditionExpressions must only contain one condition per key"),
        ("pk = :p AND sk = :a AND xtra = :b", "Conditions can be of length 1 or 2 only"),
    ],
)
def test_conditions_a_key_condition_cannot_state(text: str, message: str) -> None:
    assert fails(text) == message


def test_schema_checks_report_dynamodbs_messages() -> None:
    def schema_error(text: str, sort_key: str | None, types: dict[str, str] | None = None) -> str:
        with pytest.raises(ValidationException) as caught:
            key(text).for_schema("pk", sort_key, types)
        return caught.value.message

    assert schema_error("sk = :a", "sk") == "Query condition missed key schema element: pk"
    assert schema_error("pk = :p AND xtra = :a", "sk") == (
        "Query condition missed key schema element: sk"
    )
    assert schema_error("pk = :p AND sk = :a", None) == "Query key condition not supported"
    assert schema_error("pk < :p", "sk") == "Query key condition not supported"
    assert schema_error("pk = :a", "sk", {"pk": "S", "sk": "N"}) == (
        "One or more parameter values were invalid: Condition parameter type does not match "
        "schema type"
    )
