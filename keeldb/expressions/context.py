"""Compiling the expressions of one request, with its ExpressionAttributeNames and Values.

It owns the request-level rules: the two substitution maps are checked once (not empty, keys
well formed, values valid), each expression is size-checked, parsed and resolved with its
parameter's name in every message ("Invalid UpdateExpression: ..."), and after all of them a
name or value nobody used is an error, as in DynamoDB. It never touches storage: the
compiled Condition, Update, Projection and KeyCondition are pure functions of items.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from keeldb.expressions import ast
from keeldb.expressions.evaluate import UpdateEffect, apply_update, evaluate, project
from keeldb.expressions.keycondition import KeyCondition, key_condition_from
from keeldb.expressions.lexer import ExpressionSyntaxError, invalid
from keeldb.expressions.parser import Parsed, parse_condition, parse_projection, parse_update
from keeldb.expressions.resolve import (
    Problem,
    Substitutions,
    resolve_condition,
    resolve_projection,
    resolve_update,
)
from keeldb.model.errors import ValidationException
from keeldb.model.limits import EXPRESSION_BYTES_MAX
from keeldb.model.values import validate_value

Item = dict[str, dict[str, Any]]
T = TypeVar("T")

_NAME_KEY_RE = re.compile(r"#[0-9a-zA-Z_]+\Z")
_VALUE_KEY_RE = re.compile(r":[0-9a-zA-Z_]+\Z")

# The order in which DynamoDB compiles the expressions of one request (and so which error
# a request with several bad expressions gets).
COMPILE_ORDER = (
    "UpdateExpression",
    "ConditionExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
)


@dataclass(frozen=True)
class Condition:
    """A compiled ConditionExpression or FilterExpression."""

    text: str
    tree: ast.Condition  # resolved

    def evaluate(self, item: Item | None) -> bool:
        """Whether the condition holds; `item` None means the item does not exist."""
        return evaluate(self.tree, item)

    def top_level_attributes(self) -> set[str]:
        """The top-level attribute names the condition reads (for Query's rule that a
        FilterExpression may not name a key attribute)."""
        return {str(path.parts[0]) for path in _paths_in(self.tree)}


@dataclass(frozen=True)
class Update:
    """A compiled UpdateExpression."""

    text: str
    tree: ast.UpdateExpression  # resolved

    def apply(self, item: Item | None) -> tuple[Item, UpdateEffect]:
        """The item after the update (a new dict; `item` is never changed) and what changed."""
        return apply_update(self.tree, item)

    def top_level_attributes(self) -> set[str]:
        """The top-level attribute names the update writes or removes."""
        names = set()
        for action in self.tree.actions():
            first = action.path.parts[0]
            assert isinstance(first, str)
            names.add(first)
        return names

    @property
    def paths(self) -> tuple[tuple[ast.PathPart, ...], ...]:
        return tuple(action.path.parts for action in self.tree.actions())


@dataclass(frozen=True)
class Projection:
    """A compiled ProjectionExpression."""

    text: str
    paths: tuple[tuple[ast.PathPart, ...], ...]  # resolved, in the order written

    def apply(self, item: Item) -> Item:
        """The projected item: DynamoDB semantics for nested paths and list indexes."""
        return project(item, self.paths)

    def top_level_attributes(self) -> set[str]:
        return {str(path[0]) for path in self.paths}


def _paths_in(node: ast.Condition | ast.Operand) -> list[ast.Path]:
    if isinstance(node, ast.Path):
        return [node]
    if isinstance(node, (ast.And, ast.Or)):
        return _paths_in(node.left) + _paths_in(node.right)
    if isinstance(node, ast.Not):
        return _paths_in(node.operand)
    if isinstance(node, ast.Compare):
        return _paths_in(node.left) + _paths_in(node.right)
    if isinstance(node, ast.Between):
        return _paths_in(node.operand) + _paths_in(node.low) + _paths_in(node.high)
    if isinstance(node, ast.In):
        return [p for operand in (node.operand, *node.options) for p in _paths_in(operand)]
    if isinstance(node, ast.Function):
        return [p for arg in node.args for p in _paths_in(arg)]
    return []


class ExpressionContext:
    """The substitution maps of one request and the bookkeeping of which entries were used.

    Raises ValidationException at construction for an empty map, a malformed key or an
    invalid value, with DynamoDB's messages.
    """

    def __init__(
        self, names: dict[str, str] | None, values: dict[str, dict[str, Any]] | None
    ) -> None:
        self.names_given = names is not None
        self.values_given = values is not None
        checked_names: dict[str, str] = {}
        if names is not None:
            if not names:
                raise ValidationException("ExpressionAttributeNames must not be empty")
            for key, name in names.items():
                if not _NAME_KEY_RE.match(key):
                    raise ValidationException(
                        f'ExpressionAttributeNames contains invalid key: Syntax error; key: "{key}"'
                    )
                if name == "":
                    raise ValidationException(
                        "ExpressionAttributeNames contains invalid value: Empty attribute name "
                        f"for key {key}"
                    )
                checked_names[key] = name
        checked_values: dict[str, dict[str, Any]] = {}
        if values is not None:
            if not values:
                raise ValidationException("ExpressionAttributeValues must not be empty")
            for key in values:
                if not _VALUE_KEY_RE.match(key):
                    raise ValidationException(
                        "ExpressionAttributeValues contains invalid key: Syntax error; "
                        f'key: "{key}"'
                    )
            for key, value in values.items():
                try:
                    checked_values[key] = validate_value(value)
                except ValidationException as error:
                    raise ValidationException(
                        "ExpressionAttributeValues contains invalid value: "
                        f"{error.message} for key {key}"
                    ) from None
        self.subs = Substitutions(checked_names, checked_values)

    # --- compiling ---------------------------------------------------------------------------

    def _compile(
        self, text: str, param: str, parse: Callable[[str], Parsed], resolve: Callable[[Parsed], T]
    ) -> T:
        if text == "":
            raise invalid(param, "The expression can not be empty;")
        size_bytes = len(text.encode("utf-8"))
        if size_bytes > EXPRESSION_BYTES_MAX:
            raise invalid(
                param,
                "Expression size has exceeded the maximum allowed size; "
                f"expression size: {size_bytes}",
            )
        try:
            parsed = parse(text)
        except ExpressionSyntaxError as error:
            raise invalid(param, error.detail) from None
        try:
            return resolve(parsed)
        except Problem as problem:
            raise invalid(param, problem.message) from None

    def _condition_tree(self, text: str, param: str) -> ast.Condition:
        def resolve(parsed: Parsed) -> ast.Condition:
            tree = parsed.tree
            assert isinstance(
                tree, (ast.Compare, ast.Between, ast.In, ast.And, ast.Or, ast.Not, ast.Function)
            )
            return resolve_condition(
                tree, self.subs, redundant_parentheses=parsed.redundant_parentheses
            )

        return self._compile(text, param, parse_condition, resolve)

    def condition(self, text: str, param: str = "ConditionExpression") -> Condition:
        return Condition(text, self._condition_tree(text, param))

    def filter(self, text: str) -> Condition:
        return self.condition(text, "FilterExpression")

    def key_condition(self, text: str) -> KeyCondition:
        return key_condition_from(self._condition_tree(text, "KeyConditionExpression"))

    def update(self, text: str) -> Update:
        def resolve(parsed: Parsed) -> ast.UpdateExpression:
            assert isinstance(parsed.tree, ast.UpdateExpression)
            return resolve_update(parsed.tree, self.subs)

        return Update(text, self._compile(text, "UpdateExpression", parse_update, resolve))

    def projection(self, text: str) -> Projection:
        def resolve(parsed: Parsed) -> ast.ProjectionExpression:
            assert isinstance(parsed.tree, ast.ProjectionExpression)
            return resolve_projection(parsed.tree, self.subs)

        tree = self._compile(text, "ProjectionExpression", parse_projection, resolve)
        return Projection(text, tuple(path.parts for path in tree.paths))

    # --- after all expressions ---------------------------------------------------------------

    def check_unused(self) -> None:
        """DynamoDB's error for names or values no expression of the request used."""
        unused_names = [k for k in self.subs.names if k not in self.subs.used_names]
        if unused_names:
            raise ValidationException(
                "Value provided in ExpressionAttributeNames unused in expressions: "
                f"keys: {{{', '.join(unused_names)}}}"
            )
        unused_values = [k for k in self.subs.values if k not in self.subs.used_values]
        if unused_values:
            raise ValidationException(
                "Value provided in ExpressionAttributeValues unused in expressions: "
                f"keys: {{{', '.join(unused_values)}}}"
            )


@dataclass(frozen=True)
class CompiledExpressions:
    """Every expression of one request, compiled; None where the request gave none."""

    update: Update | None = None
    condition: Condition | None = None
    key_condition: KeyCondition | None = None
    filter: Condition | None = None
    projection: Projection | None = None


def compile_request(
    body: dict[str, Any],
    expression_params: tuple[str, ...],
    legacy_params: tuple[str, ...] = (),
) -> CompiledExpressions:
    """All expressions of a request body, checked in DynamoDB's order.

    `expression_params` are the expression parameters the operation accepts, in the order
    DynamoDB names them in its messages (e.g. PutItem: ("ConditionExpression",); Query:
    ("ProjectionExpression", "FilterExpression", "KeyConditionExpression")); `legacy_params`
    the non-expression parameters that must not be mixed with them.
    """
    given = [p for p in expression_params if body.get(p) is not None]
    if given:
        legacy = [p for p in legacy_params if body.get(p) is not None]
        if legacy:
            raise ValidationException(
                "Can not use both expression and non-expression parameters in the same "
                f"request: Non-expression parameters: {{{', '.join(legacy)}}} "
                f"Expression parameters: {{{', '.join(given)}}}"
            )
    names = body.get("ExpressionAttributeNames")
    values = body.get("ExpressionAttributeValues")
    if names is not None and not given:
        raise ValidationException(
            "ExpressionAttributeNames can only be specified when using expressions"
        )
    value_params = [p for p in expression_params if p != "ProjectionExpression"]
    if (
        values is not None
        and value_params
        and not any(body.get(p) is not None for p in value_params)
    ):
        verb = "are" if len(value_params) > 1 else "is"
        raise ValidationException(
            "ExpressionAttributeValues can only be specified when using expressions: "
            f"{' and '.join(value_params)} {verb} null"
        )
    context = ExpressionContext(names, values)
    compiled: dict[str, Any] = {}
    for param in COMPILE_ORDER:
        text = body.get(param)
        if param not in expression_params or text is None:
            continue
        if param == "UpdateExpression":
            compiled["update"] = context.update(text)
        elif param == "ConditionExpression":
            compiled["condition"] = context.condition(text)
        elif param == "KeyConditionExpression":
            compiled["key_condition"] = context.key_condition(text)
        elif param == "FilterExpression":
            compiled["filter"] = context.filter(text)
        else:
            compiled["projection"] = context.projection(text)
    context.check_unused()
    return CompiledExpressions(**compiled)
