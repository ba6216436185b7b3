"""Request-level bookkeeping: substitution maps, unused entries, parameters that go together."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.expressions import ExpressionContext, compile_request
from keeldb.model.errors import ValidationException


def request_error(
    body: dict[str, Any], params: tuple[str, ...], legacy: tuple[str, ...] = ()
) -> str:
    with pytest.raises(ValidationException) as caught:
        compile_request(body, params, legacy)
    return caught.value.message


UPDATE_PARAMS = ("UpdateExpression", "ConditionExpression")


def test_unused_names_across_all_expressions_are_reported() -> None:
    body = {
        "UpdateExpression": "SET #a = :v",
        "ConditionExpression": "attribute_exists(#b)",
        "ExpressionAttributeNames": {"#a": "a", "#b": "b", "#c": "c", "#d": "d"},
        "ExpressionAttributeValues": {":v": {"S": "x"}},
    }
    assert request_error(body, UPDATE_PARAMS) == (
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#c, #d}"
    )


def test_unused_values_are_reported_after_names() -> None:
    body = {
        "UpdateExpression": "SET a = :v",
        "ExpressionAttributeValues": {":v": {"S": "x"}, ":x": {"S": "y"}},
    }
    assert request_error(body, UPDATE_PARAMS) == (
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:x}"
    )


def test_a_name_used_in_any_expression_counts_as_used() -> None:
    compiled = compile_request(
        {
            "ConditionExpression": "#a = :v",
            "UpdateExpression": "SET b = :v",
            "ExpressionAttributeNames": {"#a": "a"},
            "ExpressionAttributeValues": {":v": {"N": "1"}},
        },
        UPDATE_PARAMS,
    )
    assert compiled.update is not None and compiled.condition is not None
    assert compiled.condition.evaluate({"a": {"N": "1.0"}})


def test_names_without_expressions_are_rejected() -> None:
    body = {"ExpressionAttributeNames": {"#a": "a"}}
    assert request_error(body, ("ProjectionExpression",)) == (
        "ExpressionAttributeNames can only be specified when using expressions"
    )


def test_values_without_value_expressions_are_rejected() -> None:
    body = {"ProjectionExpression": "a", "ExpressionAttributeValues": {":v": {"N": "1"}}}
    assert request_error(
        body, ("ProjectionExpression", "FilterExpression", "KeyConditionExpression")
    ) == (
        "ExpressionAttributeValues can only be specified when using expressions: "
        "FilterExpression and KeyConditionExpression are null"
    )
    assert request_error(
        {"ExpressionAttributeValues": {":v": {"N": "1"}}}, ("ConditionExpression",)
    ) == (
        "ExpressionAttributeValues can only be specified when using expressions: "
        "ConditionExpression is null"
    )


def test_legacy_and_expression_parameters_cannot_be_mixed() -> None:
    body = {"ProjectionExpression": "a", "AttributesToGet": ["a"]}
    assert request_error(body, ("ProjectionExpression",), ("AttributesToGet",)) == (
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}"
    )


def test_empty_maps_are_rejected() -> None:
    with pytest.raises(ValidationException, match="^ExpressionAttributeNames must not be empty$"):
        ExpressionContext({}, None)
    with pytest.raises(ValidationException, match="^ExpressionAttributeValues must not be empty$"):
        ExpressionContext(None, {})


def test_malformed_placeholder_keys_are_rejected() -> None:
    with pytest.raises(ValidationException) as caught:
        ExpressionContext({"a": "a"}, None)
    assert (
        caught.value.message
        == 'ExpressionAttributeNames contains invalid key: Syntax error; key: "a"'
    )
    with pytest.raises(ValidationException) as caught:
        ExpressionContext(None, {"v": {"S": "x"}})
    assert (
        caught.value.message
        == 'ExpressionAttributeValues contains invalid key: Syntax error; key: "v"'
    )


def test_invalid_values_are_rejected_naming_their_key() -> None:
    with pytest.raises(ValidationException) as caught:
        ExpressionContext(None, {":v": {"SS": []}})
    assert caught.value.message.startswith("ExpressionAttributeValues contains invalid value: ")
    assert caught.value.message.endswith(" for key :v")


def test_values_are_normalised_before_use() -> None:
    ctx = ExpressionContext(None, {":v": {"N": "1.50"}})
    update = ctx.update("SET a = :v")
    after, _ = update.apply({})
    assert after == {"a": {"N": "1.5"}}


def test_expressions_are_compiled_in_dynamodbs_order() -> None:
    body = {
        "ConditionExpression": "a x",
        "UpdateExpression": "SET b y",
    }
    assert request_error(body, UPDATE_PARAMS).startswith("Invalid UpdateExpression: Syntax error;")


def test_a_condition_names_the_top_level_attributes_it_reads() -> None:
    ctx = ExpressionContext({"#k": "pk"}, {":v": {"N": "1"}})
    condition = ctx.filter("#k = :v OR (size(a.b[0]) > :v AND NOT contains(c, d.e))")
    assert condition.top_level_attributes() == {"pk", "a", "c", "d"}


def test_an_empty_attribute_name_is_rejected_naming_its_key() -> None:
    with pytest.raises(ValidationException) as caught:
        ExpressionContext({"#a": "a", "#DE": ""}, None)
    assert caught.value.message == (
        "ExpressionAttributeNames contains invalid value: Empty attribute name for key #DE"
    )
