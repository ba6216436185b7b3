"""DynamoDB's legacy (pre-expression) parameters, translated into expression parameters.

It owns the legacy parameters' rules and messages: Expected (the Value/Exists form and the
ComparisonOperator/AttributeValueList form) and ConditionalOperator, AttributeUpdates,
AttributesToGet, KeyConditions, QueryFilter and ScanFilter; DynamoDB's refusal to mix them
with expression parameters; and their translation into the expression parameters that mean
the same thing (ConditionExpression, UpdateExpression, ProjectionExpression,
KeyConditionExpression, FilterExpression). An operation calls it once, right after reading
its request and before its own expression checks:

    request = legacy.translate("UpdateItem", request)

and then handles the request as if the client had written expressions (BatchGetItem
translates each table's KeysAndAttributes as "GetItem"). Two helpers keep DynamoDB's wording
where a legacy request fails later, in the operation: `source_parameter` names the legacy
parameter a message should name ("QueryFilter can only contain non-primary key attributes",
"Cannot specify the AttributesToGet when choosing to get ALL_ATTRIBUTES"), and
`update_error` turns an UpdateExpression type fault of a translated AttributeUpdates into
"Type mismatch for attribute to update". The translation is
built as a written expression tree (`ast`) and printed (`printer`), with every attribute name
a generated `#name` and every value a generated `:value` placeholder (so no name needs
escaping and no reserved word matters), chosen so that they never clash with placeholders
the request already has (Query allows KeyConditions beside a FilterExpression).

The semantics are those of the AWS Developer Guide pages "Legacy conditional parameters"
(Expected, ComparisonOperator, ConditionalOperator, AttributeUpdates, KeyConditions,
QueryFilter, ScanFilter, AttributesToGet): NE and the comparisons are those of the
expression comparators; NULL and NOT_NULL test existence; NOT_CONTAINS is false for a
missing attribute; a legacy ADD of a list appends to the list (or creates it).

It never reads items, tables or the store, and never evaluates anything: the expressions it
produces are compiled and evaluated by `context` and `evaluate` like any others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from keeldb.expressions import ast
from keeldb.expressions.evaluate import INCORRECT_TYPE_MESSAGE
from keeldb.expressions.printer import condition_text, projection_text, update_text
from keeldb.model.errors import ValidationException
from keeldb.model.limits import EXPRESSION_IN_OPERANDS_MAX
from keeldb.model.request_shapes import as_boolean, as_list, as_string, legacy_map
from keeldb.model.values import check_attribute_name, compare_values, validate_value, value_type

Body = dict[str, Any]
Value = dict[str, Any]

INVALID = "One or more parameter values were invalid: "

# The legacy and the expression parameters of each operation, each in the order DynamoDB
# lists them in its "Can not use both expression and non-expression parameters" message.
LEGACY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "GetItem": ("AttributesToGet",),
    "PutItem": ("Expected", "ConditionalOperator"),
    "DeleteItem": ("Expected", "ConditionalOperator"),
    "UpdateItem": ("AttributeUpdates", "Expected", "ConditionalOperator"),
    "Query": ("AttributesToGet", "QueryFilter", "ConditionalOperator", "KeyConditions"),
    "Scan": ("AttributesToGet", "ScanFilter", "ConditionalOperator"),
}
EXPRESSION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "GetItem": ("ProjectionExpression",),
    "PutItem": ("ConditionExpression",),
    "DeleteItem": ("ConditionExpression",),
    "UpdateItem": ("UpdateExpression", "ConditionExpression"),
    "Query": ("ProjectionExpression", "FilterExpression", "KeyConditionExpression"),
    "Scan": ("ProjectionExpression", "FilterExpression"),
}
# The condition map ConditionalOperator joins, per operation.
CONDITION_MAP = {
    "PutItem": "Expected",
    "DeleteItem": "Expected",
    "UpdateItem": "Expected",
    "Query": "QueryFilter",
    "Scan": "ScanFilter",
}
# The order in which DynamoDB checks the legacy parameters of each operation (and so which
# error a request with several bad ones gets): dynalite's validations, checked against
# DynamoDB, check a Query's QueryFilter before its AttributesToGet and its KeyConditions last,
# a Scan's AttributesToGet before its ScanFilter, and AttributeUpdates before Expected.
CHECK_ORDER: dict[str, tuple[str, ...]] = {
    "GetItem": ("AttributesToGet",),
    "PutItem": ("Expected",),
    "DeleteItem": ("Expected",),
    "UpdateItem": ("AttributeUpdates", "Expected"),
    "Query": ("QueryFilter", "AttributesToGet", "KeyConditions"),
    "Scan": ("AttributesToGet", "ScanFilter"),
}
# Which expression parameter each legacy parameter becomes.
REPLACEMENT = {
    "Expected": "ConditionExpression",
    "AttributeUpdates": "UpdateExpression",
    "AttributesToGet": "ProjectionExpression",
    "KeyConditions": "KeyConditionExpression",
    "QueryFilter": "FilterExpression",
    "ScanFilter": "FilterExpression",
}

# The ComparisonOperator enum in the order DynamoDB's constraint message lists it.
COMPARISON_OPERATORS = (
    "IN",
    "NULL",
    "BETWEEN",
    "LT",
    "NOT_CONTAINS",
    "EQ",
    "GT",
    "NOT_NULL",
    "NE",
    "LE",
    "BEGINS_WITH",
    "GE",
    "CONTAINS",
)
CONDITIONAL_OPERATORS = ("AND", "OR")
ACTIONS = ("ADD", "PUT", "DELETE")

# How many values each operator takes: an exact count, or (for IN) at least one.
_ONE = frozenset({"EQ", "NE", "LE", "LT", "GE", "GT", "CONTAINS", "NOT_CONTAINS", "BEGINS_WITH"})
_NONE = frozenset({"NULL", "NOT_NULL"})
# The value types each operator accepts (DynamoDB Local's LocalDBComparisonOperator: EQ and
# NE take any type; ordering operators the ordered scalars; CONTAINS any scalar).
_ORDERED = frozenset({"S", "N", "B"})
_SCALARS = frozenset({"S", "N", "B", "BOOL", "NULL"})
_TYPES_ALLOWED: dict[str, frozenset[str] | None] = {
    "EQ": None,
    "NE": None,
    "LE": _ORDERED,
    "LT": _ORDERED,
    "GE": _ORDERED,
    "GT": _ORDERED,
    "IN": _ORDERED,
    "BETWEEN": _ORDERED,
    "CONTAINS": _SCALARS,
    "NOT_CONTAINS": _SCALARS,
    "BEGINS_WITH": frozenset({"S", "B"}),
    "NULL": None,
    "NOT_NULL": None,
}
_COMPARATOR = {"EQ": "=", "NE": "<>", "LE": "<=", "LT": "<", "GE": ">=", "GT": ">"}
# Operators a Query can use on a key (developer guide, "KeyConditions").
_INDEXABLE = frozenset({"EQ", "LE", "LT", "GE", "GT", "BEGINS_WITH", "BETWEEN"})
_SET_TYPES = frozenset({"SS", "NS", "BS"})
_ADD_TYPES = frozenset({"N", "SS", "NS", "BS", "L"})

MIXED_MESSAGE = (
    "Can not use both expression and non-expression parameters in the same request: "
    "Non-expression parameters: {{{legacy}}} Expression parameters: {{{expressions}}}"
)
NAMES_WITHOUT_EXPRESSIONS_MESSAGE = (
    "ExpressionAttributeNames can only be specified when using expressions"
)
VALUES_WITHOUT_EXPRESSIONS_MESSAGE = (
    "ExpressionAttributeValues can only be specified when using expressions"
)
CONDITIONAL_OPERATOR_ALONE_MESSAGE = "ConditionalOperator cannot be used without Filter or Expected"
CONDITIONAL_OPERATOR_ONE_MESSAGE = (
    "ConditionalOperator can only be used when Filter or Expected has two or more elements"
)
BETWEEN_BOUNDS_MESSAGE = (
    "The BETWEEN condition was provided a range where the lower bound is greater than the "
    "upper bound"
)
KEY_CONDITIONS_COUNT_MESSAGE = "Conditions can be of length 1 or 2 only"
NOT_INDEXABLE_MESSAGE = "Attempted conditional constraint is not an indexable operation"
SAME_TYPE_MESSAGE = INVALID + "AttributeValues inside AttributeValueList must be of same type"
ONLY_DELETE_MESSAGE = INVALID + "Only DELETE action is allowed when no attribute value is specified"


def _constraint(value: Any, where: str, constraint: str) -> ValidationException:
    shown = "null" if value is None else f"'{value}'"
    return ValidationException(
        f"1 validation error detected: Value {shown} at '{where}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _enum(value: Any, where: str, allowed: Iterable[str]) -> ValidationException:
    return _constraint(value, where, f"Member must satisfy enum value set: [{', '.join(allowed)}]")


def _lower_first(name: str) -> str:
    return name[0].lower() + name[1:]


# --- Members inside the legacy structures -----------------------------------------------------
# The request readers check the maps of structures; the members inside each structure are
# read here, with the deserializer's messages, so that garbage is a client error.


def _string(value: Any) -> str | None:
    return None if value is None else as_string(value)


def _boolean(value: Any) -> bool | None:
    return None if value is None else as_boolean(value)


def _list(value: Any) -> list[Any] | None:
    return None if value is None else as_list(value)


# A map of structures with its JSON nulls left out (a null entry is absent).
_entries = legacy_map


# --- Placeholders -----------------------------------------------------------------------------


class _Placeholders:
    """Generated `#name` and `:value` placeholders, unlike any the request already has."""

    def __init__(self, names: dict[str, str] | None, values: dict[str, Value] | None) -> None:
        taken = [*(names or {}), *(values or {})]
        stem = "l"
        while any(key[1:].startswith(stem) for key in taken):
            stem += "_"
        self._stem = stem
        self.names: dict[str, str] = {}
        self.values: dict[str, Value] = {}
        self._by_name: dict[str, str] = {}

    def name(self, attribute: str) -> ast.Path:
        """The placeholder of an attribute name, checked as DynamoDB checks item names."""
        check_attribute_name(attribute)
        key = self._by_name.get(attribute)
        if key is None:
            key = f"#{self._stem}{len(self._by_name)}"
            self._by_name[attribute] = key
            self.names[key] = attribute
        return ast.Path((key,))

    def value(self, value: Value) -> ast.ValueRef:
        key = f":{self._stem}{len(self.values)}"
        self.values[key] = value
        return ast.ValueRef(key)


# --- Validation of one condition ----------------------------------------------------------------


def _check_values(op: str, values: list[Value]) -> list[Value]:
    """The checks every legacy comparison shares: operand count, one type, allowed types and
    BETWEEN's order. `values` are already valid attribute values."""
    count = len(values)
    if op in _ONE:
        count_ok = count == 1
    elif op in _NONE:
        count_ok = count == 0
    elif op == "BETWEEN":
        count_ok = count == 2
    else:
        assert op == "IN", op
        count_ok = count > 0
    if not count_ok:
        raise ValidationException(
            INVALID + f"Invalid number of argument(s) for the {op} ComparisonOperator"
        )
    if values:
        first = value_type(values[0])
        if any(value_type(v) != first for v in values):
            raise ValidationException(SAME_TYPE_MESSAGE)
        allowed = _TYPES_ALLOWED[op]
        if allowed is not None:
            for v in values:
                if value_type(v) not in allowed:
                    raise ValidationException(
                        INVALID + f"ComparisonOperator {op} is not valid for {value_type(v)} "
                        "AttributeValue type"
                    )
    if op == "BETWEEN":
        order = compare_values(values[0], values[1])
        if order is not None and order > 0:
            raise ValidationException(BETWEEN_BOUNDS_MESSAGE)
    return values


def _value_list(raw: Any) -> list[Value]:
    members = _list(raw)
    if members is None:
        return []
    return [validate_value(v) for v in members if v is not None]


def _condition(filter_param: str, name: str, raw: dict[str, Any]) -> tuple[str, list[Value]]:
    """A QueryFilter, ScanFilter or KeyConditions entry: (operator, values), checked."""
    where = f"{_lower_first(filter_param)}.{name}.member.comparisonOperator"
    op = _string(raw.get("ComparisonOperator"))
    values = _value_list(raw.get("AttributeValueList"))
    if op is None:
        raise _constraint(None, where, "Member must not be null")
    if op not in COMPARISON_OPERATORS:
        raise _enum(op, where, COMPARISON_OPERATORS)
    return op, _check_values(op, values)


def _expected(name: str, raw: dict[str, Any]) -> tuple[str, list[Value]]:
    """An Expected entry as (operator, values), checked with DynamoDB's messages; the
    Value/Exists form becomes EQ (Exists true or absent) or NULL (Exists false)."""
    op = _string(raw.get("ComparisonOperator"))
    value = raw.get("Value")
    value_list = _list(raw.get("AttributeValueList"))
    exists = _boolean(raw.get("Exists"))
    if value_list is not None and value is not None:
        raise ValidationException(
            INVALID + f"Value and AttributeValueList cannot be used together for Attribute: {name}"
        )
    if op is not None:
        if op not in COMPARISON_OPERATORS:
            raise _enum(op, f"expected.{name}.member.comparisonOperator", COMPARISON_OPERATORS)
        if exists is not None:
            raise ValidationException(
                INVALID
                + f"Exists and ComparisonOperator cannot be used together for Attribute: {name}"
            )
        if op not in _NONE and value_list is None and value is None:
            raise ValidationException(
                INVALID + f"Value or AttributeValueList must be used with ComparisonOperator: "
                f"{op} for Attribute: {name}"
            )
        values = [validate_value(value)] if value is not None else _value_list(value_list)
        return op, _check_values(op, values)
    if value_list is not None:
        raise ValidationException(
            INVALID
            + f"AttributeValueList can only be used with a ComparisonOperator for Attribute: {name}"
        )
    if exists is None or exists:
        if value is None:
            shown = "null" if exists is None else "true"
            raise ValidationException(
                INVALID + f"Value must be provided when Exists is {shown} for Attribute: {name}"
            )
        return "EQ", [validate_value(value)]
    if value is not None:
        raise ValidationException(
            INVALID + f"Value cannot be used when Exists is false for Attribute: {name}"
        )
    return "NULL", []


# --- Conditions as expression trees -----------------------------------------------------------


def _comparison(op: str, path: ast.Path, values: list[ast.Operand]) -> ast.Condition:
    if op in _COMPARATOR:
        return ast.Compare(_COMPARATOR[op], path, values[0])
    if op == "NULL":
        return ast.Function("attribute_not_exists", (path,))
    if op == "NOT_NULL":
        return ast.Function("attribute_exists", (path,))
    if op == "CONTAINS":
        return ast.Function("contains", (path, values[0]))
    if op == "NOT_CONTAINS":
        # Legacy NOT_CONTAINS is false when the attribute is missing; NOT contains() alone
        # would be true.
        return ast.And(
            ast.Function("attribute_exists", (path,)),
            ast.Not(ast.Function("contains", (path, values[0]))),
        )
    if op == "BEGINS_WITH":
        return ast.Function("begins_with", (path, values[0]))
    if op == "IN":
        # An expression's IN takes at most EXPRESSION_IN_OPERANDS_MAX operands; a legacy IN
        # has no such limit, so a longer list becomes INs joined by OR, which means the same.
        groups = [
            ast.In(path, tuple(values[i : i + EXPRESSION_IN_OPERANDS_MAX]))
            for i in range(0, len(values), EXPRESSION_IN_OPERANDS_MAX)
        ]
        return _join(list(groups), "OR")
    assert op == "BETWEEN", op
    return ast.Between(path, values[0], values[1])


def _join(conditions: list[ast.Condition], conditional_operator: str) -> ast.Condition:
    tree = conditions[0]
    for condition in conditions[1:]:
        tree = ast.Or(tree, condition) if conditional_operator == "OR" else ast.And(tree, condition)
    return tree


def _condition_tree(
    terms: list[tuple[str, str, list[Value]]], conditional_operator: str, ph: _Placeholders
) -> ast.Condition:
    built = [
        _comparison(op, ph.name(name), [ph.value(v) for v in values]) for name, op, values in terms
    ]
    return _join(built, conditional_operator)


# --- AttributeUpdates -------------------------------------------------------------------------


def _update_tree(updates: Any, ph: _Placeholders) -> ast.UpdateExpression | None:
    sets: list[ast.Action] = []
    removes: list[ast.Action] = []
    adds: list[ast.Action] = []
    deletes: list[ast.Action] = []
    for name, raw in _entries(updates).items():
        action = _string(raw.get("Action"))
        if action is None:
            action = "PUT"
        if action not in ACTIONS:
            raise _enum(action, f"attributeUpdates.{name}.member.action", ACTIONS)
        value = raw.get("Value")
        if value is not None:
            value = validate_value(value)
        if value is None and action != "DELETE":
            raise ValidationException(ONLY_DELETE_MESSAGE)
        type_ = value_type(value) if value is not None else None
        if action == "DELETE" and type_ is not None and type_ not in _SET_TYPES:
            raise ValidationException(
                INVALID + f"DELETE action with value is not supported for the type {type_}"
            )
        if action == "ADD" and type_ not in _ADD_TYPES:
            raise ValidationException(INVALID + f"ADD action is not supported for the type {type_}")
        path = ph.name(name)
        if value is None:
            assert action == "DELETE", action
            removes.append(ast.RemoveAction(path))
        elif action == "PUT":
            sets.append(ast.SetAction(path, ph.value(value)))
        elif action == "DELETE":
            deletes.append(ast.DeleteAction(path, ph.value(value)))
        elif type_ == "L":
            # A legacy ADD of a list appends to the attribute, which starts as an empty list.
            base = ast.Function("if_not_exists", (path, ph.value({"L": []})))
            appended = ast.Function("list_append", (base, ph.value(value)))
            sets.append(ast.SetAction(path, appended))
        else:
            adds.append(ast.AddAction(path, ph.value(value)))
    clauses = tuple(
        ast.UpdateClause(kind, tuple(actions))
        for kind, actions in (
            ("SET", sets),
            ("REMOVE", removes),
            ("ADD", adds),
            ("DELETE", deletes),
        )
        if actions
    )
    return ast.UpdateExpression(clauses) if clauses else None


# --- AttributesToGet --------------------------------------------------------------------------


def _projection_tree(names: Any, ph: _Placeholders) -> ast.ProjectionExpression:
    names = [name for name in _list(names) or [] if name is not None]
    if not names:
        raise _constraint(
            "[]", "attributesToGet", "Member must have length greater than or equal to 1"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValidationException(INVALID + f"Duplicate value in attribute name: {name}")
        seen.add(name)
    return ast.ProjectionExpression(tuple(ph.name(name) for name in names))


# --- The request ------------------------------------------------------------------------------


def _given(body: Body, params: Iterable[str]) -> list[str]:
    return [p for p in params if body.get(p) is not None]


CONSTRAINT_ERRORS_MAX = 10  # DynamoDB stops listing constraint violations after ten.


def _violation(value: Any, where: str, constraint: str) -> str:
    shown = "null" if value is None else f"'{value}'"
    return f"Value {shown} at '{where}' failed to satisfy constraint: {constraint}"


def check_constraints(operation: str, body: Body) -> None:
    """The member constraints inside the legacy structures (ComparisonOperator and Action
    enumerations, a filter condition's required ComparisonOperator) and ConditionalOperator's
    enumeration: DynamoDB checks them with the other member constraints, before any rule of
    the operation, and reports them together ("2 validation errors detected: ...; ...").
    Members of a map are listed last key first, as DynamoDB lists them."""
    violations: list[str] = []
    for param in LEGACY_PARAMETERS[operation]:
        given = body.get(param)
        if given is None:
            continue
        if param == "ConditionalOperator":
            if isinstance(given, str) and given not in CONDITIONAL_OPERATORS:
                enum = f"Member must satisfy enum value set: [{', '.join(CONDITIONAL_OPERATORS)}]"
                violations.append(_violation(given, "conditionalOperator", enum))
            continue
        if param == "AttributesToGet" or not isinstance(given, dict):
            continue
        names: list[str] = list(given)
        for name in reversed(names):
            entry = given[name]
            if not isinstance(entry, dict):
                continue
            where = f"{_lower_first(param)}.{name}.member"
            if param == "AttributeUpdates":
                action = entry.get("Action")
                if isinstance(action, str) and action not in ACTIONS:
                    enum = f"Member must satisfy enum value set: [{', '.join(ACTIONS)}]"
                    violations.append(_violation(action, f"{where}.action", enum))
                continue
            op = entry.get("ComparisonOperator")
            if op is None and param != "Expected":
                violations.append(
                    _violation(None, f"{where}.comparisonOperator", "Member must not be null")
                )
            elif isinstance(op, str) and op not in COMPARISON_OPERATORS:
                enum = f"Member must satisfy enum value set: [{', '.join(COMPARISON_OPERATORS)}]"
                violations.append(_violation(op, f"{where}.comparisonOperator", enum))
    if violations:
        count = len(violations)
        raise ValidationException(
            f"{count} validation error{'s' if count > 1 else ''} detected: "
            + "; ".join(violations[:CONSTRAINT_ERRORS_MAX])
        )


def check_mixing(operation: str, body: Body) -> None:
    """DynamoDB's refusal of a request that gives both legacy and expression parameters.
    KeyConditions may go with a FilterExpression or ProjectionExpression: it mixes only with
    a KeyConditionExpression."""
    expressions = _given(body, EXPRESSION_PARAMETERS[operation])
    if not expressions:
        return
    legacy = _given(body, LEGACY_PARAMETERS[operation])
    if "KeyConditions" in legacy and body.get("KeyConditionExpression") is None:
        legacy.remove("KeyConditions")
    if legacy:
        raise ValidationException(
            MIXED_MESSAGE.format(legacy=", ".join(legacy), expressions=", ".join(expressions))
        )


def _check_substitutions_need_expressions(operation: str, body: Body) -> None:
    """Names and values are for expressions only; the request gives none (the generated
    placeholders would otherwise hide the client's mistake)."""
    expressions = EXPRESSION_PARAMETERS[operation]
    if _given(body, expressions):
        return
    if body.get("ExpressionAttributeNames") is not None:
        raise ValidationException(NAMES_WITHOUT_EXPRESSIONS_MESSAGE)
    value_expressions = [p for p in expressions if p != "ProjectionExpression"]
    if value_expressions and body.get("ExpressionAttributeValues") is not None:
        if operation == "DeleteItem":
            # DeleteItem's message does not name the missing expression (as the engine's
            # own check for DeleteItem says).
            raise ValidationException(VALUES_WITHOUT_EXPRESSIONS_MESSAGE)
        verb = "are" if len(value_expressions) > 1 else "is"
        raise ValidationException(
            f"{VALUES_WITHOUT_EXPRESSIONS_MESSAGE}: {' and '.join(value_expressions)} {verb} null"
        )


def _conditional_operator(operation: str, body: Body) -> str:
    """The request's ConditionalOperator (AND when absent), checked against its map."""
    op = _string(body.get("ConditionalOperator"))
    if op is None:
        return "AND"
    if op not in CONDITIONAL_OPERATORS:
        raise _enum(op, "conditionalOperator", CONDITIONAL_OPERATORS)
    conditions = body.get(CONDITION_MAP[operation])
    conditions = _entries(conditions) if conditions is not None else {}
    if not conditions:
        raise ValidationException(CONDITIONAL_OPERATOR_ALONE_MESSAGE)
    if len(conditions) == 1:
        raise ValidationException(CONDITIONAL_OPERATOR_ONE_MESSAGE)
    return str(op)


def _key_condition_tree(conditions: Any, ph: _Placeholders) -> ast.Condition:
    entries = _entries(conditions)
    if not entries:
        raise ValidationException(KEY_CONDITIONS_COUNT_MESSAGE)
    terms = []
    for name, raw in entries.items():
        op, values = _condition("KeyConditions", name, raw)
        terms.append((name, op, values))
    for _name, op, _values in terms:
        if op not in _INDEXABLE:
            raise ValidationException(NOT_INDEXABLE_MESSAGE)
    return _condition_tree(terms, "AND", ph)


def _filter_tree(
    param: str, conditions: dict[str, dict[str, Any]], conditional_operator: str, ph: _Placeholders
) -> ast.Condition:
    terms = []
    for name, raw in conditions.items():
        op, values = _condition(param, name, raw)
        terms.append((name, op, values))
    return _condition_tree(terms, conditional_operator, ph)


def _expected_tree(
    expected: dict[str, dict[str, Any]], conditional_operator: str, ph: _Placeholders
) -> ast.Condition:
    terms = []
    for name, raw in expected.items():
        op, values = _expected(name, raw)
        terms.append((name, op, values))
    return _condition_tree(terms, conditional_operator, ph)


def uses_legacy(operation: str, body: Body) -> bool:
    """Whether the request gives any legacy parameter of its operation."""
    params = LEGACY_PARAMETERS.get(operation, ())
    if body.keys().isdisjoint(params):
        return False  # the usual request: none of them named at all
    return bool(_given(body, params))


def translate(operation: str, body: Body) -> Body:
    """The request with its legacy parameters replaced by the expression parameters that mean
    the same, or DynamoDB's ValidationException for them.

    A request without legacy parameters is returned as it is (the same object). Otherwise a
    new dict is returned (`body` is never changed) in which ExpressionAttributeNames and
    ExpressionAttributeValues hold the request's own entries plus the generated ones.
    `operation` is one of GetItem, PutItem, DeleteItem, UpdateItem, Query, Scan (for
    BatchGetItem, translate each table's KeysAndAttributes with "GetItem").
    """
    assert operation in LEGACY_PARAMETERS, f"no legacy parameters for {operation}"
    if not uses_legacy(operation, body):
        return body
    check_constraints(operation, body)
    check_mixing(operation, body)
    _check_substitutions_need_expressions(operation, body)
    conditional_operator = "AND"
    if operation in CONDITION_MAP:
        conditional_operator = _conditional_operator(operation, body)
    names = body.get("ExpressionAttributeNames")
    values = body.get("ExpressionAttributeValues")
    ph = _Placeholders(names, values)
    out = {k: v for k, v in body.items() if k not in LEGACY_PARAMETERS[operation]}
    for param in CHECK_ORDER[operation]:
        given = body.get(param)
        if given is None:
            continue
        if param == "AttributeUpdates":
            update = _update_tree(given, ph)
            if update is not None:
                out["UpdateExpression"] = update_text(update)
        elif param == "AttributesToGet":
            out["ProjectionExpression"] = projection_text(_projection_tree(given, ph))
        elif param == "KeyConditions":
            out["KeyConditionExpression"] = condition_text(_key_condition_tree(given, ph))
        elif not _entries(given):
            continue  # An empty Expected, QueryFilter or ScanFilter states no condition.
        elif param == "Expected":
            tree = _expected_tree(_entries(given), conditional_operator, ph)
            out["ConditionExpression"] = condition_text(tree)
        else:
            tree = _filter_tree(param, _entries(given), conditional_operator, ph)
            out["FilterExpression"] = condition_text(tree)
    if all(p == "ProjectionExpression" for p in EXPRESSION_PARAMETERS[operation]):
        # GetItem has no ExpressionAttributeValues member: one sent anyway is ignored.
        out.pop("ExpressionAttributeValues", None)
    if ph.names:
        out["ExpressionAttributeNames"] = {**(names or {}), **ph.names}
    if ph.values:
        out["ExpressionAttributeValues"] = {**(values or {}), **ph.values}
    return out


def source_parameter(operation: str, body: Body, expression_param: str) -> str:
    """The parameter a message about `expression_param` should name: the legacy parameter it
    was translated from (e.g. "QueryFilter" for FilterExpression) when the original request
    `body` gave that one, else `expression_param` itself. DynamoDB names the legacy parameter,
    e.g. "QueryFilter can only contain non-primary key attributes: Primary key attribute: pk"
    where an expression gets "Filter Expression can only contain ...".
    """
    for legacy in LEGACY_PARAMETERS.get(operation, ()):
        if REPLACEMENT.get(legacy) == expression_param and body.get(legacy) is not None:
            return legacy
    return expression_param


# DynamoDB's message when a legacy ADD or DELETE meets an attribute of another type; the
# expression evaluator says INCORRECT_TYPE_MESSAGE for the same fault in an UpdateExpression.
UPDATE_TYPE_MISMATCH_MESSAGE = "Type mismatch for attribute to update"


def update_error(body: Body, error: ValidationException) -> ValidationException:
    """The error to report for `error`, raised while applying the UpdateExpression translated
    from the original request `body`: a type fault of an AttributeUpdates action gets
    DynamoDB's legacy wording; anything else is returned unchanged."""
    if body.get("AttributeUpdates") is None or error.message != INCORRECT_TYPE_MESSAGE:
        return error
    return ValidationException(UPDATE_TYPE_MISMATCH_MESSAGE)
