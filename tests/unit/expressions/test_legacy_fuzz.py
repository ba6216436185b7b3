"""Fuzz: whatever a client puts into the legacy parameters, the translation either raises a
client error (DynamoDB's error types) or gives expression parameters that the expression
layer compiles without complaint. Never another exception (which would be a 500)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.expressions import compile_request, legacy
from keeldb.model.errors import ClientError

OPERATIONS = tuple(legacy.LEGACY_PARAMETERS)
OPERATORS = (*legacy.COMPARISON_OPERATORS, "LIKE")

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(alphabet="abSN1", max_size=3)
)
attribute_values = st.one_of(
    st.fixed_dictionaries({"S": st.text(alphabet="ab", max_size=2)}),
    st.fixed_dictionaries({"N": st.sampled_from(["1", "-2.5", "x", ""])}),
    st.fixed_dictionaries({"B": st.sampled_from(["YQ==", "Yg==", "!"])}),
    st.fixed_dictionaries({"SS": st.lists(st.sampled_from(["a", "b"]), max_size=2)}),
    st.fixed_dictionaries({"NS": st.lists(st.sampled_from(["1", "2"]), max_size=2)}),
    st.fixed_dictionaries({"L": st.lists(st.fixed_dictionaries({"S": st.just("a")}), max_size=2)}),
    st.fixed_dictionaries({"BOOL": st.booleans()}),
    st.fixed_dictionaries({"NULL": st.booleans()}),
    st.fixed_dictionaries({"M": st.just({})}),
    st.just({}),
    json_scalars,
)
names = st.sampled_from(["a", "b", "pk", "", "size", "x.y"])
value_lists = st.one_of(st.none(), st.lists(attribute_values, max_size=3), json_scalars)
entries = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "ComparisonOperator": st.one_of(st.sampled_from(OPERATORS), json_scalars),
            "AttributeValueList": value_lists,
            "Value": attribute_values,
            "Exists": st.one_of(st.booleans(), json_scalars),
            "Action": st.one_of(st.sampled_from(["ADD", "PUT", "DELETE", "SET"]), json_scalars),
        },
    ),
    json_scalars,
    st.lists(json_scalars, max_size=1),
)
condition_maps = st.one_of(st.dictionaries(names, entries, max_size=3), json_scalars)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "Expected": condition_maps,
        "AttributeUpdates": condition_maps,
        "KeyConditions": condition_maps,
        "QueryFilter": condition_maps,
        "ScanFilter": condition_maps,
        "AttributesToGet": st.one_of(st.lists(names, max_size=3), json_scalars),
        "ConditionalOperator": st.one_of(st.sampled_from(["AND", "OR", "XOR"]), json_scalars),
        "FilterExpression": st.just("c = :c"),
        "ExpressionAttributeValues": st.just({":c": {"S": "x"}}),
    },
)


@settings(max_examples=400, deadline=None)
@given(operation=st.sampled_from(OPERATIONS), body=bodies)
def test_garbage_is_refused_as_a_client_error_and_anything_else_compiles(
    operation: str, body: dict[str, Any]
) -> None:
    try:
        translated = legacy.translate(operation, body)
    except ClientError:
        return
    if translated is body:
        return  # no legacy parameter of this operation: the operation's own checks apply
    for param in legacy.LEGACY_PARAMETERS[operation]:
        assert param not in translated
    expression_params = legacy.EXPRESSION_PARAMETERS[operation]
    compile_request(translated, expression_params)
