"""The syntax tree of DynamoDB expressions: conditions, updates and projections.

This module owns the node types and nothing else: the parser builds them, the printer turns
them back into text, the resolver checks them and replaces `#names` and `:values`, and the
evaluator runs the resolved form. Nodes are frozen dataclasses compared by value, so that a
parse/print round trip can be checked with `==`. It never parses, prints or evaluates.

Two forms share these classes. A *written* tree is what the text says: a `Path` keeps its
parts as written (identifiers, `#name` placeholders, list indexes) and a value is a
`ValueRef` (":v"). A *resolved* tree has every `#name` replaced by the attribute name it
stands for and every `ValueRef` replaced by a `Literal` holding the attribute value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias
from typing import Literal as TypingLiteral

PathPart: TypeAlias = str | int

COMPARATORS = ("=", "<>", "<", "<=", ">", ">=")
CONDITION_FUNCTIONS = (
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
)
UPDATE_FUNCTIONS = ("if_not_exists", "list_append")
CLAUSE_KINDS = ("SET", "REMOVE", "ADD", "DELETE")


@dataclass(frozen=True, slots=True)
class Path:
    """A document path: a top-level name, then names (map keys) and indexes (list elements)."""

    parts: tuple[PathPart, ...]

    def __post_init__(self) -> None:
        assert self.parts, "a path has at least one part"
        assert isinstance(self.parts[0], str), "a path starts with a name"


@dataclass(frozen=True, slots=True)
class ValueRef:
    """An expression attribute value placeholder as written, e.g. ":v"."""

    name: str


@dataclass(frozen=True, slots=True)
class Literal:
    """An attribute value (DynamoDB JSON) that a `ValueRef` resolved to."""

    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Function:
    """A function call: a condition function, size(), if_not_exists() or list_append()."""

    name: str
    args: tuple[Operand, ...]


ArithmeticOp: TypeAlias = TypingLiteral["+", "-"]


@dataclass(frozen=True, slots=True)
class Arithmetic:
    """`left + right` or `left - right` on the right-hand side of a SET action."""

    op: ArithmeticOp
    left: Operand
    right: Operand


Operand: TypeAlias = Path | ValueRef | Literal | Function | Arithmetic


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # One of COMPARATORS.
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Between:
    operand: Operand
    low: Operand
    high: Operand


@dataclass(frozen=True, slots=True)
class In:
    operand: Operand
    options: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class And:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Or:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition


# A Function appears as a condition when it is one of the boolean functions.
Condition: TypeAlias = Compare | Between | In | And | Or | Not | Function


@dataclass(frozen=True, slots=True)
class SetAction:
    path: Path
    value: Operand


@dataclass(frozen=True, slots=True)
class RemoveAction:
    path: Path


@dataclass(frozen=True, slots=True)
class AddAction:
    path: Path
    value: Operand


@dataclass(frozen=True, slots=True)
class DeleteAction:
    path: Path
    value: Operand


Action: TypeAlias = SetAction | RemoveAction | AddAction | DeleteAction


@dataclass(frozen=True, slots=True)
class UpdateClause:
    kind: str  # One of CLAUSE_KINDS.
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class UpdateExpression:
    clauses: tuple[UpdateClause, ...]

    def actions(self) -> tuple[Action, ...]:
        return tuple(action for clause in self.clauses for action in clause.actions)


@dataclass(frozen=True, slots=True)
class ProjectionExpression:
    paths: tuple[Path, ...]


Node: TypeAlias = Condition | Operand | UpdateExpression | ProjectionExpression
