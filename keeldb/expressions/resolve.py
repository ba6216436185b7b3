"""Checking written expression trees and resolving their `#names` and `:values`.

It owns DynamoDB's semantic rules of expressions, each with DynamoDB's exact message: reserved
words, undefined names and values, unknown and misused functions, operand counts and types,
redundant parentheses, overlapping and conflicting document paths, clauses used twice, and
the size limits on expressions. Like DynamoDB it checks the whole tree, keeps the first
problem of each kind, and reports the most important kind (the orders below follow DynamoDB's
observable precedence). It never evaluates anything against an item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keeldb.expressions import ast
from keeldb.expressions.reserved import is_reserved
from keeldb.model.limits import EXPRESSION_IN_OPERANDS_MAX, EXPRESSION_OPERATORS_MAX
from keeldb.model.values import compare_values, value_type

# The order in which DynamoDB reports the kinds of problem of one expression.
CONDITION_PROBLEM_ORDER = (
    "limits",
    "parentheses",
    "unknown_function",
    "misused_function",
    "reserved",
    "index_range",
    "undefined",
    "nesting",
    "operand_count",
    "distinct",
    "function",
)
UPDATE_PROBLEM_ORDER = (
    "limits",
    "reserved",
    "index_range",
    "unknown_function",
    "misused_function",
    "section",
    "undefined_name",
    "undefined_value",
    "nesting",
    "overlap",
    "conflict",
    "operand",
    "function",
)
PROJECTION_PROBLEM_ORDER = (
    "reserved",
    "index_range",
    "undefined_name",
    "nesting",
    "overlap",
    "conflict",
)
# A list index is a Java int in DynamoDB: larger ones are refused.
LIST_INDEX_MAX = 2**31 - 1
# "DynamoDB supports nested attributes up to 32 levels deep": a path has at most 32 parts.
PATH_PARTS_MAX = 32

FUNCTION_ARITY = {
    "attribute_exists": 1,
    "attribute_not_exists": 1,
    "attribute_type": 2,
    "begins_with": 2,
    "contains": 2,
    "size": 1,
    "if_not_exists": 2,
    "list_append": 2,
}
ATTRIBUTE_TYPE_NAMES = ("S", "N", "B", "NULL", "SS", "BOOL", "L", "BS", "NS", "M")
# DynamoDB lists the valid names, and the possible types of a path operand, in these orders.
VALID_TYPES_TEXT = "{B,NULL,SS,BOOL,L,BS,N,NS,S,M}"
ANY_TYPE_TEXT = "{NS,SS,L,BS,N,M,B,BOOL,NULL,S}"
# Type names in messages about ADD and DELETE operands.
UPDATE_TYPE_NAMES = {
    "S": "STRING",
    "N": "NUMBER",
    "B": "BINARY",
    "NULL": "NULL",
    "BOOL": "BOOLEAN",
    "L": "LIST",
    "M": "MAP",
}
SET_TYPES = ("SS", "NS", "BS")
ORDERED_TYPES = ("S", "N", "B")


@dataclass
class Substitutions:
    """The request's ExpressionAttributeNames/Values and which of them were used."""

    names: dict[str, str]
    values: dict[str, dict[str, Any]]
    used_names: set[str] = field(default_factory=set)
    used_values: set[str] = field(default_factory=set)


class Problem(Exception):
    """A semantic problem, reported as "Invalid <param>: <message>" by the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def path_list_text(parts: tuple[ast.PathPart, ...]) -> str:
    """A resolved path as DynamoDB quotes it in messages: [a, b, [3]]."""
    shown = [f"[{part}]" if isinstance(part, int) else part for part in parts]
    return "[" + ", ".join(shown) + "]"


class _Problems:
    def __init__(self, order: tuple[str, ...]) -> None:
        self.order = order
        self.found: dict[str, str] = {}

    def add(self, kind: str, message: str) -> None:
        assert kind in self.order, kind
        self.found.setdefault(kind, message)

    def has(self, kind: str) -> bool:
        return kind in self.found

    def raise_first(self) -> None:
        for kind in self.order:
            if kind in self.found:
                raise Problem(self.found[kind])


def _static_type(node: ast.Operand) -> str | None:
    """The type of an operand known without an item: a value's type, or N for size()."""
    if isinstance(node, ast.Literal):
        return value_type(node.value)
    if isinstance(node, ast.Function) and node.name == "size":
        return "N"
    return None


def _literal_text(value: dict[str, Any]) -> str:
    type_ = value_type(value)
    return f"AttributeValue: {{{type_}:{value[type_]}}}"


class _Resolver:
    def __init__(self, subs: Substitutions, problems: _Problems, *, update: bool) -> None:
        self.subs = subs
        self.problems = problems
        self.update = update
        self.operators = 0

    # --- leaves ------------------------------------------------------------------------------

    def path(self, path: ast.Path) -> ast.Path:
        parts: list[ast.PathPart] = []
        for part in path.parts:
            if isinstance(part, int):
                if part > LIST_INDEX_MAX:
                    self.problems.add(
                        "index_range",
                        f"List index is not within the allowable range; index: [{part}]",
                    )
                parts.append(part)
            elif part.startswith("#"):
                parts.append(self.name(part))
            else:
                if is_reserved(part):
                    self.problems.add(
                        "reserved",
                        f"Attribute name is a reserved keyword; reserved keyword: {part}",
                    )
                parts.append(part)
        if len(parts) > PATH_PARTS_MAX:
            self.problems.add(
                "nesting",
                f"The document path has too many nesting levels; nesting levels: {len(parts)}",
            )
        return ast.Path(tuple(parts))

    def name(self, placeholder: str) -> str:
        if placeholder in self.subs.names:
            self.subs.used_names.add(placeholder)
            return self.subs.names[placeholder]
        kind = "undefined_name" if "undefined_name" in self.problems.order else "undefined"
        self.problems.add(
            kind,
            "An expression attribute name used in the document path is not defined; "
            f"attribute name: {placeholder}",
        )
        return placeholder

    def value(self, ref: ast.ValueRef) -> ast.Operand:
        if ref.name in self.subs.values:
            self.subs.used_values.add(ref.name)
            return ast.Literal(self.subs.values[ref.name])
        kind = "undefined_value" if "undefined_value" in self.problems.order else "undefined"
        self.problems.add(
            kind,
            "An expression attribute value used in expression is not defined; "
            f"attribute value: {ref.name}",
        )
        # A stand-in so the rest of the tree can still be checked.
        return ast.Literal({"NULL": True})

    # --- operands ----------------------------------------------------------------------------

    def operand(self, node: ast.Operand) -> ast.Operand:
        if isinstance(node, ast.Path):
            return self.path(node)
        if isinstance(node, ast.ValueRef):
            return self.value(node)
        if isinstance(node, ast.Function):
            return self.function(node)
        if isinstance(node, ast.Arithmetic):
            self.operators += 1
            left, right = self.operand(node.left), self.operand(node.right)
            for arg in (left, right):
                if isinstance(arg, ast.Literal) and value_type(arg.value) != "N":
                    self.problems.add(
                        "function",
                        "Incorrect operand type for operator or function; operator or "
                        f"function: {node.op}, operand type: {value_type(arg.value)}",
                    )
                    break
            return ast.Arithmetic(node.op, left, right)
        raise AssertionError(f"not a written operand: {node!r}")

    def check_misused(self, args: tuple[ast.Operand, ...]) -> None:
        """Only size() may be an operand (of a comparison or of another function)."""
        for arg in args:
            if isinstance(arg, ast.Function) and arg.name != "size":
                self.problems.add(
                    "misused_function",
                    "The function is not allowed to be used this way in an expression; "
                    f"function: {arg.name}",
                )
                return

    def check_distinct(self, operator: str, args: tuple[ast.Operand, ...]) -> None:
        if len(args) != 2:
            return
        first, second = args
        if isinstance(first, ast.Path) and isinstance(second, ast.Path) and first == second:
            self.problems.add(
                "distinct",
                "The first operand must be distinct from the remaining operands for this "
                f"operator or function; operator: {operator}, first operand: "
                f"{path_list_text(first.parts)}",
            )

    def function(self, node: ast.Function) -> ast.Function:
        self.operators += 1
        allowed = ast.UPDATE_FUNCTIONS if self.update else ast.CONDITION_FUNCTIONS
        args = tuple(self.operand(arg) for arg in node.args)
        resolved = ast.Function(node.name, args)
        if node.name not in allowed:
            if node.name in ast.UPDATE_FUNCTIONS:
                message = (
                    f"The function is not allowed in a condition expression; function: {node.name}"
                )
            elif node.name in ast.CONDITION_FUNCTIONS:
                message = (
                    f"The function is not allowed in an update expression; function: {node.name}"
                )
            else:
                message = f"Invalid function name; function: {node.name}"
            self.problems.add("unknown_function", message)
            return resolved
        if not self.update:
            self.check_misused(args)
        else:
            # DynamoDB takes if_not_exists() inside list_append() but no list_append() inside
            # another function call.
            for arg in args:
                if isinstance(arg, ast.Function) and arg.name == "list_append":
                    self.problems.add(
                        "misused_function",
                        "The function is not allowed to be used this way in an expression; "
                        "function: list_append",
                    )
        arity = FUNCTION_ARITY[node.name]
        if len(args) != arity:
            kind = "function" if self.update else "operand_count"
            self.problems.add(
                kind,
                "Incorrect number of operands for operator or function; operator or function: "
                f"{node.name}, number of operands: {len(args)}",
            )
            return resolved
        if not self.update:
            self.check_distinct(node.name, args)
        problem = self._function_type_problem(node.name, args)
        if problem is not None:
            self.problems.add("function", problem)
        return resolved

    def _function_type_problem(self, name: str, args: tuple[ast.Operand, ...]) -> str | None:
        def operand_type(type_: str) -> str:
            return (
                "Incorrect operand type for operator or function; operator or function: "
                f"{name}, operand type: {type_}"
            )

        if name in ("attribute_exists", "attribute_not_exists", "if_not_exists"):
            if not isinstance(args[0], ast.Path):
                return (
                    f"Operator or function requires a document path; operator or function: {name}"
                )
            return None
        if name == "attribute_type":
            # The first operand may be a value too (its type is then known); the second must
            # be a value naming a type.
            type_ = _static_type(args[1])
            if type_ != "S":
                return operand_type(type_ or ANY_TYPE_TEXT)
            assert isinstance(args[1], ast.Literal)
            type_name = args[1].value["S"]
            if type_name not in ATTRIBUTE_TYPE_NAMES:
                return (
                    f"Invalid attribute type name found; type: {type_name}, valid types: "
                    f"{VALID_TYPES_TEXT}"
                )
            return None
        if name == "begins_with":
            for arg in args:
                type_ = _static_type(arg)
                if type_ is not None and type_ not in ("S", "B"):
                    return operand_type(type_)
            return None
        if name == "size":
            type_ = _static_type(args[0])
            if type_ in ("N", "BOOL", "NULL"):
                return operand_type(type_)
            return None
        if name == "list_append":
            for arg in args:
                if isinstance(arg, ast.Literal) and value_type(arg.value) != "L":
                    return operand_type(value_type(arg.value))
            return None
        return None

    # --- conditions --------------------------------------------------------------------------

    def condition(self, node: ast.Condition) -> ast.Condition:
        if isinstance(node, (ast.And, ast.Or)):
            self.operators += 1
            first, second = self.condition(node.left), self.condition(node.right)
            return type(node)(first, second)
        if isinstance(node, ast.Not):
            self.operators += 1
            return ast.Not(self.condition(node.operand))
        if isinstance(node, ast.Compare):
            self.operators += 1
            left, right = self.operand(node.left), self.operand(node.right)
            self.check_misused((left, right))
            self.check_distinct(node.op, (left, right))
            if node.op not in ("=", "<>"):
                self._check_orderable(node.op, (left, right))
            return ast.Compare(node.op, left, right)
        if isinstance(node, ast.Between):
            self.operators += 1
            operand = self.operand(node.operand)
            low, high = self.operand(node.low), self.operand(node.high)
            self.check_misused((operand, low, high))
            self._check_orderable("BETWEEN", (operand, low, high))
            self._check_bounds(low, high)
            return ast.Between(operand, low, high)
        if isinstance(node, ast.In):
            self.operators += 1
            operand = self.operand(node.operand)
            options = tuple(self.operand(option) for option in node.options)
            if len(options) > EXPRESSION_IN_OPERANDS_MAX:
                self.problems.add(
                    "limits",
                    "The IN operator is provided with too many operands; number of operands: "
                    f"{len(options)}",
                )
            self.check_misused((operand, *options))
            return ast.In(operand, options)
        if isinstance(node, ast.Function):
            resolved = self.function(node)
            if node.name == "size":
                self.problems.add(
                    "misused_function",
                    "The function is not allowed to be used this way in an expression; "
                    "function: size",
                )
            return resolved
        raise AssertionError(f"not a written condition: {node!r}")

    def _check_orderable(self, operator: str, operands: tuple[ast.Operand, ...]) -> None:
        """An ordering comparison refuses a value of a type without an order (only S, N and B
        have one); a path to such a value is not an error, the comparison is just false."""
        for operand in operands:
            if isinstance(operand, ast.Literal):
                type_ = value_type(operand.value)
                if type_ not in ORDERED_TYPES:
                    self.problems.add(
                        "function",
                        "Incorrect operand type for operator or function; operator or function: "
                        f"{operator}, operand type: {type_}",
                    )
                    return

    def _check_bounds(self, low: ast.Operand, high: ast.Operand) -> None:
        if not (isinstance(low, ast.Literal) and isinstance(high, ast.Literal)):
            return
        bounds = f"lower bound operand: {_literal_text(low.value)}, upper bound operand: " + (
            _literal_text(high.value)
        )
        if value_type(low.value) != value_type(high.value):
            self.problems.add(
                "function",
                "The BETWEEN operator requires same data type for lower and upper bounds; "
                + bounds,
            )
        elif (compare_values(low.value, high.value) or 0) > 0:
            self.problems.add(
                "function",
                "The BETWEEN operator requires upper bound to be greater than or equal to lower "
                "bound; " + bounds,
            )

    def check_operator_count(self) -> None:
        if self.operators > EXPRESSION_OPERATORS_MAX:
            self.problems.add(
                "limits",
                f"The expression contains too many operators; operator count: {self.operators}",
            )


def _check_paths(paths: list[tuple[ast.PathPart, ...]], problems: _Problems) -> None:
    """DynamoDB's rule that no two paths of one update or projection overlap or conflict."""
    seen: list[tuple[ast.PathPart, ...]] = []
    for path in paths:
        for earlier in seen:
            kind = _path_clash(earlier, path)
            if kind is not None:
                verb = "overlap" if kind == "overlap" else "conflict"
                problems.add(
                    kind,
                    f"Two document paths {verb} with each other; must remove or rewrite one of "
                    f"these paths; path one: {path_list_text(earlier)}, path two: "
                    f"{path_list_text(path)}",
                )
                return
        seen.append(path)


def _path_clash(one: tuple[ast.PathPart, ...], two: tuple[ast.PathPart, ...]) -> str | None:
    for a, b in zip(one, two):
        if isinstance(a, int) != isinstance(b, int):
            return "conflict"
        if a != b:
            return None
    return "overlap"


# --- entry points ------------------------------------------------------------------------------


def resolve_condition(
    tree: ast.Condition, subs: Substitutions, *, redundant_parentheses: bool = False
) -> ast.Condition:
    """The resolved condition, or Problem with DynamoDB's message for the first problem."""
    problems = _Problems(CONDITION_PROBLEM_ORDER)
    if redundant_parentheses:
        problems.add("parentheses", "The expression has redundant parentheses;")
    resolver = _Resolver(subs, problems, update=False)
    resolved = resolver.condition(tree)
    resolver.check_operator_count()
    problems.raise_first()
    return resolved


def resolve_update(tree: ast.UpdateExpression, subs: Substitutions) -> ast.UpdateExpression:
    problems = _Problems(UPDATE_PROBLEM_ORDER)
    resolver = _Resolver(subs, problems, update=True)
    kinds: set[str] = set()
    clauses: list[ast.UpdateClause] = []
    paths: list[tuple[ast.PathPart, ...]] = []
    for clause in tree.clauses:
        if clause.kind in kinds:
            problems.add(
                "section",
                f'The "{clause.kind}" section can only be used once in an update expression;',
            )
        kinds.add(clause.kind)
        actions: list[ast.Action] = []
        for action in clause.actions:
            path = resolver.path(action.path)
            paths.append(path.parts)
            if isinstance(action, ast.SetAction):
                actions.append(ast.SetAction(path, resolver.operand(action.value)))
            elif isinstance(action, ast.RemoveAction):
                actions.append(ast.RemoveAction(path))
            else:
                value = resolver.operand(action.value)
                _check_add_delete_operand(clause.kind, value, problems)
                if isinstance(action, ast.AddAction):
                    actions.append(ast.AddAction(path, value))
                else:
                    actions.append(ast.DeleteAction(path, value))
        clauses.append(ast.UpdateClause(clause.kind, tuple(actions)))
    _check_paths(paths, problems)
    resolver.check_operator_count()
    problems.raise_first()
    return ast.UpdateExpression(tuple(clauses))


def _check_add_delete_operand(kind: str, value: ast.Operand, problems: _Problems) -> None:
    if not isinstance(value, ast.Literal):
        return
    type_ = value_type(value.value)
    allowed = ("N", *SET_TYPES) if kind == "ADD" else SET_TYPES
    if type_ not in allowed:
        problems.add(
            "operand",
            "Incorrect operand type for operator or function; operator: "
            f"{kind}, operand type: {UPDATE_TYPE_NAMES.get(type_, type_)}, "
            f"typeSet: ALLOWED_FOR_{kind}_OPERAND",
        )


def resolve_projection(
    tree: ast.ProjectionExpression, subs: Substitutions
) -> ast.ProjectionExpression:
    problems = _Problems(PROJECTION_PROBLEM_ORDER)
    resolver = _Resolver(subs, problems, update=False)
    paths = tuple(resolver.path(path) for path in tree.paths)
    _check_paths([path.parts for path in paths], problems)
    problems.raise_first()
    return ast.ProjectionExpression(paths)
