"""The request-level checks of the item operations (PutItem, GetItem, UpdateItem, DeleteItem)
that need no table: JSON member types, member constraints, and which parameters may be
combined.

DynamoDB checks a request in three passes, and so do we, in the same order:

1. deserialisation: a member of the wrong JSON type is a `SerializationException` with the
   message the service's deserialiser produces ("NUMBER_VALUE can not be converted to a
   String"; unknown members are ignored, members that are JSON null count as absent);
2. member constraints (required members, the table name pattern and length, enumerations):
   every violation is collected into one `ValidationException` that begins "N validation
   error(s) detected: ", in the order DynamoDB lists the members of each operation;
3. the operation's own rules: the legacy parameters are translated into expressions (and
   refused beside them) by `keeldb.expressions.legacy`, which the operations call first;
   then ExpressionAttributeNames/Values only with expressions.

The write operations (PutItem, UpdateItem, DeleteItem) report the errors of request
validation (pass 3, attribute values and expressions) inside the "1 validation error
detected: " envelope, as DynamoDB does today; `enveloped` applies it.

This module owns those passes (but for the legacy translation) and the envelope. It never
looks up a table, never reads the store and never evaluates an expression: that comes after, in `keeldb.engine.items`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from keeldb.model.errors import ValidationException
from keeldb.model.request_shapes import (
    CONDITIONAL_OPERATOR,
    RETURN_CONSUMED_CAPACITY,
    Member,
    Reader,
    as_boolean,
    as_string,
    attribute_map,
    constraint_error,
    constraint_violations,
    legacy_map,
    serialization,
    string_list,
    string_map,
)

RETURN_VALUES = ("ALL_NEW", "UPDATED_OLD", "ALL_OLD", "NONE", "UPDATED_NEW")
RETURN_ITEM_COLLECTION_METRICS = ("SIZE", "NONE")
RETURN_VALUES_ON_CONDITION_CHECK_FAILURE = ("ALL_OLD", "NONE")

# ---------------------------------------------------------------------------------------------
# Pass 1: JSON member types (the readers are `keeldb.model.request_shapes`')
# ---------------------------------------------------------------------------------------------

_READERS: dict[str, Reader] = {
    "TableName": as_string,
    "Item": attribute_map,
    "Key": attribute_map,
    "Expected": legacy_map,
    "AttributeUpdates": legacy_map,
    "AttributesToGet": string_list,
    "ConditionalOperator": as_string,
    "ConsistentRead": as_boolean,
    "ReturnValues": as_string,
    "ReturnConsumedCapacity": as_string,
    "ReturnItemCollectionMetrics": as_string,
    "ReturnValuesOnConditionCheckFailure": as_string,
    "ConditionExpression": as_string,
    "UpdateExpression": as_string,
    "ProjectionExpression": as_string,
    "ExpressionAttributeNames": string_map,
    "ExpressionAttributeValues": attribute_map,
}

# ---------------------------------------------------------------------------------------------
# Pass 2: member constraints
# ---------------------------------------------------------------------------------------------


def _table_name() -> Member:
    return Member("TableName", as_string, required=True, table_name=True)


_RCC = Member("ReturnConsumedCapacity", as_string, enum=RETURN_CONSUMED_CAPACITY)
_RV = Member("ReturnValues", as_string, enum=RETURN_VALUES)
_RICM = Member("ReturnItemCollectionMetrics", as_string, enum=RETURN_ITEM_COLLECTION_METRICS)
_RVOCCF = Member(
    "ReturnValuesOnConditionCheckFailure", as_string, enum=RETURN_VALUES_ON_CONDITION_CHECK_FAILURE
)
_COND_OP = Member("ConditionalOperator", as_string, enum=CONDITIONAL_OPERATOR)

# Members in the order DynamoDB reports their violations, per operation.
MEMBERS: dict[str, tuple[Member, ...]] = {
    "PutItem": (
        _RCC,
        _table_name(),
        Member("Item", attribute_map, required=True),
        _COND_OP,
        _RV,
        _RICM,
        _RVOCCF,
    ),
    "GetItem": (_RCC, _table_name(), Member("Key", attribute_map, required=True)),
    "UpdateItem": (
        _RCC,
        _table_name(),
        _RICM,
        _RV,
        Member("Key", attribute_map, required=True),
        _COND_OP,
        _RVOCCF,
    ),
    "DeleteItem": (
        _RCC,
        _table_name(),
        _RV,
        _RICM,
        Member("Key", attribute_map, required=True),
        _COND_OP,
        _RVOCCF,
    ),
}

# The members each operation knows; anything else in a request is ignored, as DynamoDB does.
KNOWN: dict[str, tuple[str, ...]] = {
    "PutItem": (
        "TableName",
        "Item",
        "Expected",
        "ConditionalOperator",
        "ReturnValues",
        "ReturnConsumedCapacity",
        "ReturnItemCollectionMetrics",
        "ReturnValuesOnConditionCheckFailure",
        "ConditionExpression",
        "ExpressionAttributeNames",
        "ExpressionAttributeValues",
    ),
    "GetItem": (
        "TableName",
        "Key",
        "AttributesToGet",
        "ConsistentRead",
        "ReturnConsumedCapacity",
        "ProjectionExpression",
        "ExpressionAttributeNames",
    ),
    "UpdateItem": (
        "TableName",
        "Key",
        "AttributeUpdates",
        "Expected",
        "ConditionalOperator",
        "ReturnValues",
        "ReturnConsumedCapacity",
        "ReturnItemCollectionMetrics",
        "ReturnValuesOnConditionCheckFailure",
        "UpdateExpression",
        "ConditionExpression",
        "ExpressionAttributeNames",
        "ExpressionAttributeValues",
    ),
    "DeleteItem": (
        "TableName",
        "Key",
        "Expected",
        "ConditionalOperator",
        "ReturnValues",
        "ReturnConsumedCapacity",
        "ReturnItemCollectionMetrics",
        "ReturnValuesOnConditionCheckFailure",
        "ConditionExpression",
        "ExpressionAttributeNames",
        "ExpressionAttributeValues",
    ),
}


def read_request(operation: str, body: Any) -> dict[str, Any]:
    """Passes 1 and 2: the request with typed members (unknown and null members dropped), or
    the SerializationException / ValidationException DynamoDB answers."""
    if not isinstance(body, dict):
        raise serialization("Start of list found where not expected")
    request: dict[str, Any] = {}
    for name in KNOWN[operation]:
        value = body.get(name)
        if value is not None:
            request[name] = _READERS[name](value)
    errors = constraint_violations(MEMBERS[operation], request)
    if errors:
        raise constraint_error(errors)
    return request


# ---------------------------------------------------------------------------------------------
# Pass 3 (the part that needs no attribute values): expression parameters
# ---------------------------------------------------------------------------------------------


def check_expression_parameters(
    request: dict[str, Any],
    expressions: Sequence[str],
    *,
    name_null_expressions: bool = True,
) -> None:
    """DynamoDB's refusal of ExpressionAttributeNames / ExpressionAttributeValues in a request
    without an expression that could use them. `request` has had its legacy parameters
    translated (`keeldb.expressions.legacy`, which also refuses mixing them with expression
    parameters).

    `name_null_expressions`: whether the "ExpressionAttributeValues can only be specified"
    message ends by naming the missing expressions (PutItem and UpdateItem do; DeleteItem
    does not)."""
    used = [name for name in expressions if name in request]
    if "ExpressionAttributeNames" in request and not used:
        raise ValidationException(
            "ExpressionAttributeNames can only be specified when using expressions"
        )
    value_expressions = [name for name in expressions if name != "ProjectionExpression"]
    if (
        value_expressions
        and "ExpressionAttributeValues" in request
        and not any(name in request for name in value_expressions)
    ):
        message = "ExpressionAttributeValues can only be specified when using expressions"
        if name_null_expressions:
            verb = "are" if len(value_expressions) > 1 else "is"
            message += f": {' and '.join(value_expressions)} {verb} null"
        raise ValidationException(message)


# ---------------------------------------------------------------------------------------------
# The envelope of request-validation errors of the write operations
# ---------------------------------------------------------------------------------------------

ENVELOPE = "1 validation error detected: "
_COUNTED_RE = re.compile(r"\d+ validation errors? detected: ")
# Request-validation errors DynamoDB's write operations report without the envelope: an empty
# or multi-typed AttributeValue, and names or values no expression used.
_BARE_PREFIXES = ("Supplied AttributeValue ", "Value provided in ExpressionAttribute")
_NULL_NOT_TRUE = (
    "One or more parameter values were invalid: Null attribute value types must have the value "
    "of true"
)


def enveloped(error: ValidationException) -> ValidationException:
    """A request-validation error of PutItem, UpdateItem or DeleteItem as DynamoDB reports it
    today: inside the "1 validation error detected: " envelope.

    DynamoDB splits its errors by family: request validation (attribute values, ReturnValues,
    which parameters go together, the expressions' syntax and operands) is enveloped;
    data-plane, structural and limit errors (keys against the schema, item size, update
    paths) are not, and neither are an empty or multi-typed AttributeValue nor a name or
    value no expression used. A NULL that is not true is reported with the value's own
    message, even inside ExpressionAttributeValues.
    """
    message = error.message
    if _COUNTED_RE.match(message) or message.startswith(_BARE_PREFIXES):
        return error
    if message.startswith("ExpressionAttributeValues contains invalid value: ") and (
        _NULL_NOT_TRUE in message
    ):
        message = _NULL_NOT_TRUE
    return ValidationException(ENVELOPE + message)
