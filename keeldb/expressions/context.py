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
from keeldb.expressions.plan import UpdatePlan, plan_update
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

# Resolved expressions kept for reuse, keyed by what their resolution depends on (see
# `_ResolvedCache`). Clients send the same few expressions with new values over and over; a
# bound keeps a client that sends endless distinct texts from growing memory (an entry holds
# its key, at most a few KB of text and names, and never a request's values).
RESOLVED_CACHE_ENTRIES_MAX = 512

# Well-formed placeholder keys remembered (of each kind): clients use a few dozen; the bound
# keeps one that sends endless distinct keys from growing memory (a key is at most an
# expression's length).
PLACEHOLDER_KEYS_SEEN_MAX = 1024

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


class Update:
    """A compiled UpdateExpression.

    Made either from its resolved tree, or from a cached resolution and the request's values:
    then its tree is built only when asked for, and an update of the planned shape
    (`keeldb.expressions.plan`) is applied from its plan.
    """

    __slots__ = ("_plan", "_resolved", "_tree", "_values", "text")

    def __init__(
        self,
        text: str,
        tree: ast.UpdateExpression | None = None,
        *,
        resolved: _Resolved | None = None,
        values: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        assert tree is not None or resolved is not None, "an update needs a tree or a resolution"
        self.text = text
        self._tree = tree
        self._resolved = resolved
        self._values = values
        # The plan, when the resolution has one and there are values to bind it to.
        self._plan = None if resolved is None or values is None else resolved.plan

    @property
    def tree(self) -> ast.UpdateExpression:
        """The resolved tree."""
        tree = self._tree
        if tree is None:
            assert self._resolved is not None
            assert self._values is not None
            tree = self._tree = self._resolved.instantiate(self._values)
        return tree

    def apply(self, item: Item | None) -> tuple[Item, UpdateEffect]:
        """The item after the update (a new dict; `item` is never changed) and what changed."""
        plan = self._plan
        if plan is not None:
            assert self._values is not None
            return plan.apply(self._values, item)
        return apply_update(self.tree, item)

    def top_level_attributes(self) -> set[str]:
        """The top-level attribute names the update writes or removes."""
        plan = self._plan
        if plan is not None:
            return set(plan.names)
        names = set()
        for action in self.tree.actions():
            first = action.path.parts[0]
            assert isinstance(first, str)
            names.add(first)
        return names

    @property
    def paths(self) -> tuple[tuple[ast.PathPart, ...], ...]:
        plan = self._plan
        if plan is not None:
            return plan.paths
        return tuple(action.path.parts for action in self.tree.actions())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Update):
            return NotImplemented
        return self.text == other.text and self.tree == other.tree

    __hash__ = None  # type: ignore[assignment]  # a tree holds dicts

    def __repr__(self) -> str:
        return f"Update(text={self.text!r}, tree={self.tree!r})"


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


Builder = Callable[[dict[str, dict[str, Any]]], Any]

# The fields of each node class, in constructor order, for rebuilding a node with new values.
_NODE_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(cls.__slots__)
    for cls in (
        ast.Path,
        ast.Literal,
        ast.Function,
        ast.Arithmetic,
        ast.Compare,
        ast.Between,
        ast.In,
        ast.And,
        ast.Or,
        ast.Not,
        ast.SetAction,
        ast.RemoveAction,
        ast.AddAction,
        ast.DeleteAction,
        ast.UpdateClause,
        ast.UpdateExpression,
        ast.ProjectionExpression,
    )
}


class _ValueDependent(Exception):
    """A resolved tree whose checks read its values' contents, not only their types."""


def _builder(node: Any, slots: dict[int, str]) -> Builder | None:
    """A function that rebuilds `node` with other values in place of the literals that came
    from the placeholders in `slots` (id of the value -> placeholder), sharing every subtree
    that holds none; None when nothing below `node` came from a placeholder.

    Raises _ValueDependent for BETWEEN (its bounds are compared) and attribute_type() (its
    type name is read): their resolution could fail for other values of the same types.
    """
    cls = type(node)
    if cls is ast.Literal:
        name = slots.get(id(node.value))
        if name is None:
            return None
        return lambda values: ast.Literal(values[name])
    if cls is tuple:
        parts = [(_builder(element, slots), element) for element in node]
        if all(build is None for build, _ in parts):
            return None
        return lambda values: tuple(
            element if build is None else build(values) for build, element in parts
        )
    if cls is ast.Between or (cls is ast.Function and node.name == "attribute_type"):
        raise _ValueDependent
    fields = _NODE_FIELDS.get(cls)
    if fields is None:
        return None  # a name, an index, an operator: no value below
    members = [(_builder(getattr(node, f), slots), getattr(node, f)) for f in fields]
    if all(build is None for build, _ in members):
        return None
    return lambda values: cls(
        *[member if build is None else build(values) for build, member in members]
    )


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One resolved expression, ready to be given another request's values."""

    tree: Any  # the resolved tree itself when it holds no values (build is None)
    build: Builder | None
    used_names: frozenset[str]
    used_values: frozenset[str]
    # An update of the planned shape, applied without rebuilding its tree.
    plan: UpdatePlan | None = None

    def instantiate(self, values: dict[str, dict[str, Any]]) -> Any:
        return self.tree if self.build is None else self.build(values)


class _ResolvedCache:
    """Resolved expressions by (kind, text, names, the type of each value).

    Resolution reads the names, the text and only the types of the values (apart from
    BETWEEN and attribute_type(), never cached): so a request with the same key resolves to
    the same tree with its own values in it, and uses the same placeholders. Only successful
    resolutions are kept; a failing one is resolved again, and fails again, each time. Least
    recently used entries go first. Safe under threads: each step is one dict operation.
    """

    def __init__(self, entries_max: int) -> None:
        assert entries_max > 0, entries_max
        self.entries_max = entries_max
        self._entries: dict[tuple[Any, ...], _Resolved] = {}

    def get(self, key: tuple[Any, ...]) -> _Resolved | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._entries[key] = entry  # now the most recently used
        return entry

    def put(self, key: tuple[Any, ...], entry: _Resolved) -> None:
        entries = self._entries
        while len(entries) >= self.entries_max:
            oldest = next(iter(entries), None)
            if oldest is None:
                break
            entries.pop(oldest, None)
        entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


RESOLVED_CACHE = _ResolvedCache(RESOLVED_CACHE_ENTRIES_MAX)


class _SeenKeys:
    """Placeholder keys already found well formed, so that a client's usual few are not
    matched against the pattern again. Safe under threads: each step is one set operation."""

    def __init__(self, keys_max: int) -> None:
        assert keys_max > 0, keys_max
        self.keys_max = keys_max
        self._keys: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        if len(self._keys) >= self.keys_max:
            self._keys.clear()
        self._keys.add(key)


# Name keys ("#...") and value keys (":...") are remembered apart: a key is only ever found
# well formed as one of the two.
_NAME_KEYS_SEEN = _SeenKeys(PLACEHOLDER_KEYS_SEEN_MAX)
_VALUE_KEYS_SEEN = _SeenKeys(PLACEHOLDER_KEYS_SEEN_MAX)


def _check_key(key: str, seen: _SeenKeys, pattern: re.Pattern[str], parameter: str) -> None:
    """Refuse a placeholder key of `parameter` that `pattern` does not match; remember a
    well-formed one in `seen`, so it is not matched again."""
    if key not in seen:
        if not pattern.match(key):
            raise ValidationException(
                f'{parameter} contains invalid key: Syntax error; key: "{key}"'
            )
        seen.add(key)


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
                _check_key(key, _NAME_KEYS_SEEN, _NAME_KEY_RE, "ExpressionAttributeNames")
                if name == "":
                    raise ValidationException(
                        "ExpressionAttributeNames contains invalid value: Empty attribute name "
                        f"for key {key}"
                    )
                checked_names[key] = name
        checked_values: dict[str, dict[str, Any]] = {}
        value_types: list[tuple[str, str]] = []
        if values is not None:
            if not values:
                raise ValidationException("ExpressionAttributeValues must not be empty")
            for key in values:
                _check_key(key, _VALUE_KEYS_SEEN, _VALUE_KEY_RE, "ExpressionAttributeValues")
            for key, value in values.items():
                try:
                    checked = validate_value(value)
                except ValidationException as error:
                    raise ValidationException(
                        "ExpressionAttributeValues contains invalid value: "
                        f"{error.message} for key {key}"
                    ) from None
                checked_values[key] = checked
                (type_,) = checked  # a valid value has exactly one member: its type
                value_types.append((key, type_))
        self.subs = Substitutions(checked_names, checked_values)
        # What a resolved expression depends on besides its text (see `_ResolvedCache`).
        self._shape = (tuple(checked_names.items()), tuple(value_types))

    # --- compiling ---------------------------------------------------------------------------

    def _cached(
        self,
        kind: str,
        text: str,
        param: str,
        parse: Callable[[str], Parsed],
        resolve: Callable[[Parsed, Substitutions], T],
    ) -> T:
        """`_compile`, through the cache of resolved expressions: a hit rebuilds the tree
        with this request's values and marks the same names and values used."""
        tree, entry = self._resolved(kind, text, param, parse, resolve)
        if tree is None:
            assert entry is not None
            built: T = entry.instantiate(self.subs.values)
            return built
        return tree

    def _cache_key(self, kind: str, text: str) -> tuple[Any, ...]:
        """What a resolution depends on: the kind, the text, the names map and the type of
        each value (see `_ResolvedCache`)."""
        return (kind, text, self._shape)

    def _resolved(
        self,
        kind: str,
        text: str,
        param: str,
        parse: Callable[[str], Parsed],
        resolve: Callable[[Parsed, Substitutions], T],
        planner: Callable[[Any, dict[int, str]], UpdatePlan | None] | None = None,
    ) -> tuple[T | None, _Resolved | None]:
        """The resolved tree and the cache entry of the expression, marking its names and
        values used: on a hit the tree is None (the entry builds it), and an expression that
        cannot be cached has no entry. `planner`, given
        the resolved tree and the placeholder of each value in it, makes the plan kept with
        the entry."""
        subs = self.subs
        key = self._cache_key(kind, text)
        entry = RESOLVED_CACHE.get(key)
        if entry is not None:
            subs.used_names.update(entry.used_names)
            subs.used_values.update(entry.used_values)
            return None, entry
        # Resolved against fresh bookkeeping, to learn which names and values it uses.
        own = Substitutions(subs.names, subs.values)
        tree = self._compile(text, param, parse, lambda parsed: resolve(parsed, own))
        subs.used_names.update(own.used_names)
        subs.used_values.update(own.used_values)
        slots = {id(value): name for name, value in subs.values.items()}
        try:
            build = _builder(tree, slots)
        except _ValueDependent:
            return tree, None
        entry = _Resolved(
            None if build is not None else tree,
            build,
            frozenset(own.used_names),
            frozenset(own.used_values),
            None if planner is None else planner(tree, slots),
        )
        RESOLVED_CACHE.put(key, entry)
        return tree, entry

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
        def resolve(parsed: Parsed, subs: Substitutions) -> ast.Condition:
            tree = parsed.tree
            assert isinstance(
                tree, (ast.Compare, ast.Between, ast.In, ast.And, ast.Or, ast.Not, ast.Function)
            )
            return resolve_condition(tree, subs, redundant_parentheses=parsed.redundant_parentheses)

        return self._cached("condition", text, param, parse_condition, resolve)

    def condition(self, text: str, param: str = "ConditionExpression") -> Condition:
        return Condition(text, self._condition_tree(text, param))

    def filter(self, text: str) -> Condition:
        return self.condition(text, "FilterExpression")

    def key_condition(self, text: str) -> KeyCondition:
        return key_condition_from(self._condition_tree(text, "KeyConditionExpression"))

    def update(self, text: str) -> Update:
        def resolve(parsed: Parsed, subs: Substitutions) -> ast.UpdateExpression:
            assert isinstance(parsed.tree, ast.UpdateExpression)
            return resolve_update(parsed.tree, subs)

        tree, entry = self._resolved(
            "update", text, "UpdateExpression", parse_update, resolve, plan_update
        )
        if entry is None:
            assert tree is not None
            return Update(text, tree)
        return Update(text, tree, resolved=entry, values=self.subs.values)

    def projection(self, text: str) -> Projection:
        def resolve(parsed: Parsed, subs: Substitutions) -> ast.ProjectionExpression:
            assert isinstance(parsed.tree, ast.ProjectionExpression)
            return resolve_projection(parsed.tree, subs)

        tree = self._cached("projection", text, "ProjectionExpression", parse_projection, resolve)
        return Projection(text, tuple(path.parts for path in tree.paths))

    # --- after all expressions ---------------------------------------------------------------

    def check_unused(self) -> None:
        """DynamoDB's error for names or values no expression of the request used."""
        subs = self.subs
        # The used sets only ever hold keys of the maps: equal sizes mean all were used.
        if len(subs.used_names) == len(subs.names) and len(subs.used_values) == len(subs.values):
            return
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
