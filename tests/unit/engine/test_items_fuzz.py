"""Garbage in, DynamoDB errors out: random request bodies for the item operations either
succeed or raise a client error, never anything else, and a refused request changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from keeldb.engine.database import Database
from keeldb.model.errors import ClientError, ConditionalCheckFailedException
from keeldb.storage.memory import MemoryLog, MemoryStore

OPERATIONS = ("PutItem", "GetItem", "UpdateItem", "DeleteItem")
MEMBERS = (
    "TableName",
    "Item",
    "Key",
    "ReturnValues",
    "ReturnConsumedCapacity",
    "ReturnItemCollectionMetrics",
    "ReturnValuesOnConditionCheckFailure",
    "ConditionExpression",
    "UpdateExpression",
    "ProjectionExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
    "ConsistentRead",
    "Expected",
    "AttributeUpdates",
    "AttributesToGet",
    "ConditionalOperator",
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
type_names = st.sampled_from(["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M", "X"])
garbage_values = st.recursive(
    st.dictionaries(
        type_names,
        json_scalars | st.sampled_from(["1", "a", "AA==", "-0", "1e200"]),
        max_size=2,
    ),
    lambda inner: st.dictionaries(
        type_names,
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
        max_size=1,
    ),
    max_leaves=6,
)
valid_values = st.recursive(
    st.one_of(
        st.builds(lambda t: {"S": t}, st.text(max_size=5)),
        st.builds(lambda i: {"N": str(i)}, st.integers(-100, 100)),
        st.builds(lambda b: {"BOOL": b}, st.booleans()),
        st.just({"NULL": True}),
        st.just({"B": "AAE="}),
        st.builds(
            lambda xs: {"SS": sorted(xs)}, st.sets(st.text(max_size=3), min_size=1, max_size=3)
        ),
    ),
    lambda inner: (
        st.builds(lambda xs: {"L": xs}, st.lists(inner, max_size=3))
        | st.builds(lambda m: {"M": m}, st.dictionaries(st.text(max_size=3), inner, max_size=3))
    ),
    max_leaves=6,
)
attribute_values = valid_values | garbage_values
items = st.dictionaries(
    st.sampled_from(["pk", "sk", "a", "b", "#a", ":v"]), attribute_values | json_values, max_size=4
)
expressions = st.sampled_from(
    [
        "",
        "a = :v",
        "SET a = :v",
        "REMOVE a",
        "ADD a :v",
        "attribute_exists(pk)",
        "#a",
        "a, b.c[1]",
        "SET pk = :v",
        "SET a = a + :v",
        "DELETE a :v",
        "((a = :v))",
        "a ==",
    ]
)
# Well-formed and half-formed legacy structures, so that requests reach the translation's
# checks and the engine's handling of what it translates into, not only the type checks.
legacy_names = st.sampled_from(["pk", "a", "b", ""])
comparison_operators = st.sampled_from(
    ["EQ", "NE", "LT", "GE", "BETWEEN", "IN", "NULL", "NOT_NULL", "CONTAINS", "BEGINS_WITH", "X"]
)
expected_entries = st.fixed_dictionaries(
    {},
    optional={
        "Exists": st.booleans(),
        "Value": attribute_values,
        "ComparisonOperator": comparison_operators,
        "AttributeValueList": st.lists(attribute_values, max_size=3),
    },
)
update_entries = st.fixed_dictionaries(
    {},
    optional={
        "Action": st.sampled_from(["PUT", "ADD", "DELETE", "X"]),
        "Value": attribute_values,
    },
)
member_values = {
    "TableName": st.sampled_from(["fuzz", "nope", "ab", "fuzz;"]) | json_values,
    "Item": items | json_values,
    "Key": items | json_values,
    "ReturnValues": st.sampled_from(
        ["NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW", "x"]
    ),
    "ReturnConsumedCapacity": st.sampled_from(["NONE", "TOTAL", "INDEXES", "x"]),
    "ReturnItemCollectionMetrics": st.sampled_from(["NONE", "SIZE", "x"]),
    "ReturnValuesOnConditionCheckFailure": st.sampled_from(["NONE", "ALL_OLD", "x"]),
    "ConditionExpression": expressions,
    "UpdateExpression": expressions,
    "ProjectionExpression": expressions,
    "ExpressionAttributeNames": st.dictionaries(
        st.sampled_from(["#a", "a", "#b"]),
        st.sampled_from(["a", "pk", ""]) | json_values,
        max_size=2,
    ),
    "ExpressionAttributeValues": st.dictionaries(
        st.sampled_from([":v", "v", ":w"]), attribute_values, max_size=2
    ),
    "ConsistentRead": json_values,
    "Expected": st.dictionaries(legacy_names, expected_entries, max_size=3) | json_values,
    "AttributeUpdates": st.dictionaries(legacy_names, update_entries, max_size=3) | json_values,
    "AttributesToGet": st.lists(legacy_names, max_size=3) | json_values,
    "ConditionalOperator": st.sampled_from(["AND", "OR", "X"]) | json_values,
}


@st.composite
def requests(draw: Any) -> tuple[str, Any]:
    operation = draw(st.sampled_from(OPERATIONS))
    if draw(st.integers(0, 20)) == 0:
        return operation, draw(json_values)
    names = draw(st.lists(st.sampled_from(MEMBERS), unique=True, max_size=6))
    body = {name: draw(member_values[name]) for name in names}
    if draw(st.booleans()):
        body.setdefault("TableName", "fuzz")
    return operation, body


_loop = asyncio.new_event_loop()
_store = MemoryStore()
_db = Database(_store)
_log = MemoryLog(_db.apply)
_db.attach_log(_log)
_loop.run_until_complete(
    _db.dispatch(
        "CreateTable",
        {
            "TableName": "fuzz",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_any_request_either_succeeds_or_gets_a_client_error_and_changes_nothing(
    request: tuple[str, Any],
) -> None:
    operation, body = request
    before = list(_store.scan(b"", None))
    lsn = _log.committed_lsn()
    try:
        _loop.run_until_complete(_db.dispatch(operation, body))
    except ClientError as error:
        assert error.message is not None
        assert list(_store.scan(b"", None)) == before
        if not isinstance(error, ConditionalCheckFailedException):
            assert _log.committed_lsn() == lsn
