"""Parser and evaluator for DynamoDB expressions (condition, key condition, filter,
projection, update), with `#name` and `:value` substitution.

Pure: depends only on `keeldb.model` and the standard library; no IO, no clocks. Every
client mistake raises `keeldb.model.errors.ValidationException` with DynamoDB's message.

One request's expressions share one context (the unused-name check spans all of them):

    ctx = ExpressionContext(body.get("ExpressionAttributeNames"),
                            body.get("ExpressionAttributeValues"))
    update = ctx.update(body["UpdateExpression"])          # compile in DynamoDB's order:
    condition = ctx.condition(body["ConditionExpression"])  # update, condition, key
    ctx.check_unused()                                      # condition, filter, projection
    if not condition.evaluate(old_item): ...                # old_item None: no item
    new_item, effect = update.apply(old_item)               # never mutates old_item
    effect.updated_old(), effect.updated_new()              # ReturnValues UPDATED_*

or `compile_request(body, expression_params, legacy_params)` for all of it, including the
"can only be specified when using expressions" and legacy-mixing checks. A Query's key
condition: `ctx.key_condition(text).for_schema(hash_key, range_key, key_types)` gives the
partition key value and the sort key term (op, values).
"""

from keeldb.expressions.context import (
    CompiledExpressions,
    Condition,
    ExpressionContext,
    Projection,
    Update,
    compile_request,
)
from keeldb.expressions.evaluate import UpdateEffect
from keeldb.expressions.keycondition import KeyCondition, KeyTerm

__all__ = [
    "CompiledExpressions",
    "Condition",
    "ExpressionContext",
    "KeyCondition",
    "KeyTerm",
    "Projection",
    "Update",
    "UpdateEffect",
    "compile_request",
]
