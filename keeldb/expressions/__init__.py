"""Parser and evaluator for DynamoDB expressions (condition, key condition, filter,
projection, update), with `#name` and `:value` substitution.

Pure: depends only on `keeldb.model` and the standard library; no IO, no clocks.

    ctx = ExpressionContext(body.get("ExpressionAttributeNames"),
                            body.get("ExpressionAttributeValues"))
    update = ctx.update(body["UpdateExpression"])
    condition = ctx.condition(body["ConditionExpression"])
    ctx.check_unused()
    if not condition.evaluate(old_item): ...
    new_item, effect = update.apply(old_item)

or, for a whole request, `compile_request(body, expression_params, legacy_params)`.
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
