"""KeyConditionExpression: the restricted condition a Query gives on an index's keys.

It owns DynamoDB's rules for key conditions (only `=` on the partition key; `=`, `<`, `<=`,
`>`, `>=`, BETWEEN or begins_with on the sort key; joined by AND; top-level attributes only)
and their messages, and the check against a key schema. It never reads items or decides how
a Query walks the store (that is the engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keeldb.expressions import ast
from keeldb.model.errors import ValidationException
from keeldb.model.values import value_type

Value = dict[str, Any]

# The comparison a key condition term makes; values are attribute values.
EQ, LT, LE, GT, GE, BETWEEN, BEGINS_WITH = "=", "<", "<=", ">", ">=", "BETWEEN", "begins_with"
# A comparison read right to left: ":v < k" is "k > :v".
_MIRRORED = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
KEY_CONDITIONS_MAX = 2  # one on the partition key, at most one on the sort key


@dataclass(frozen=True, slots=True)
class KeyTerm:
    """One condition on one key attribute: `name op values`."""

    name: str
    op: str
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class KeyCondition:
    """A checked key condition: the terms by attribute name, in the order written."""

    terms: dict[str, KeyTerm]

    def for_schema(
        self,
        partition_key: str,
        sort_key: str | None,
        key_types: dict[str, str] | None = None,
    ) -> tuple[Value, KeyTerm | None]:
        """The partition key value and the sort key term (if any) for an index's key schema,
        or DynamoDB's error when the condition does not fit that schema."""
        if sort_key is None and len(self.terms) > 1:
            raise ValidationException("Query key condition not supported")
        for name in (partition_key, sort_key):
            if name is None:
                continue
            term = self.terms.get(name)
            if term is None:
                if name == partition_key or len(self.terms) > 1:
                    raise ValidationException(f"Query condition missed key schema element: {name}")
                continue
            expected = (key_types or {}).get(name)
            if expected is not None and any(value_type(v) != expected for v in term.values):
                raise ValidationException(
                    "One or more parameter values were invalid: Condition parameter type does "
                    "not match schema type"
                )
            if name == partition_key and term.op != EQ:
                raise ValidationException("Query key condition not supported")
        partition = self.terms[partition_key]
        sort = self.terms.get(sort_key) if sort_key is not None else None
        return partition.values[0], sort

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.terms)


def key_condition_from(tree: ast.Condition) -> KeyCondition:
    """The key condition a resolved condition states, or DynamoDB's error (these messages
    carry no "Invalid KeyConditionExpression" prefix)."""
    terms: dict[str, KeyTerm] = {}
    _collect(tree, terms)
    if len(terms) not in (1, KEY_CONDITIONS_MAX):
        raise ValidationException("Conditions can be of length 1 or 2 only")
    return KeyCondition(terms)


def _fail(message: str) -> ValidationException:
    return ValidationException(message)


def _collect(node: ast.Condition, terms: dict[str, KeyTerm]) -> None:
    if isinstance(node, ast.Or):
        raise _fail("Invalid operator used in KeyConditionExpression: OR")
    if isinstance(node, ast.Not):
        raise _fail("Invalid operator used in KeyConditionExpression: NOT")
    if isinstance(node, ast.In):
        raise _fail("Invalid operator used in KeyConditionExpression: IN")
    if isinstance(node, ast.And):
        _collect(node.left, terms)
        _collect(node.right, terms)
        return
    if isinstance(node, ast.Compare) and node.op == "<>":
        raise _fail("Invalid operator used in KeyConditionExpression: <>")
    if isinstance(node, ast.Function) and node.name != "begins_with":
        if node.name == "size":
            raise _fail("KeyConditionExpressions cannot contain nested operations")
        raise _fail(f"Invalid operator used in KeyConditionExpression: {node.name}")
    if isinstance(node, ast.Between) and not isinstance(node.operand, ast.Path):
        raise _fail(
            "Invalid condition in KeyConditionExpression: BETWEEN operator must have the key "
            "attribute as its first operand"
        )
    if isinstance(node, ast.Function) and not isinstance(node.args[0], ast.Path):
        raise _fail(
            "Invalid condition in KeyConditionExpression: begins_with operator must have the "
            "key attribute as its first operand"
        )
    if isinstance(node, ast.Compare):
        operands: tuple[ast.Operand, ...] = (node.left, node.right)
    elif isinstance(node, ast.Between):
        operands = (node.operand, node.low, node.high)
    else:
        assert isinstance(node, ast.Function)
        operands = node.args
    name: str | None = None
    name_at = 0
    values: list[Value] = []
    for i, operand in enumerate(operands):
        if isinstance(operand, ast.Path):
            if name is not None:
                raise _fail(
                    "Invalid condition in KeyConditionExpression: Multiple attribute names used "
                    "in one condition"
                )
            if len(operand.parts) > 1:
                raise _fail("KeyConditionExpressions cannot have conditions on nested attributes")
            assert isinstance(operand.parts[0], str)
            name, name_at = operand.parts[0], i
        elif isinstance(operand, ast.Function):
            raise _fail("KeyConditionExpressions cannot contain nested operations")
        else:
            assert isinstance(operand, ast.Literal)
            values.append(operand.value)
    if name is None:
        raise _fail("Invalid condition in KeyConditionExpression: No key attribute specified")
    if name in terms:
        raise _fail("KeyConditionExpressions must only contain one condition per key")
    if isinstance(node, ast.Compare):
        op = node.op if name_at == 0 else _MIRRORED[node.op]
    elif isinstance(node, ast.Between):
        op = BETWEEN
    else:
        op = BEGINS_WITH
    terms[name] = KeyTerm(name, op, tuple(values))
