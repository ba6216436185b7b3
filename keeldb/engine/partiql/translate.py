"""PartiQL conditions, paths and update actions written as DynamoDB expressions.

It owns the correspondence between the PartiQL AST (`parser`) and DynamoDB's expression
language: every attribute name becomes a `#nN` placeholder and every value a `:vN`
placeholder, so that names which are reserved words or hold odd characters, and values of
any type, need no quoting. It also finds the key equalities in a WHERE clause.

It never reads a table or an item and never does IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keeldb.engine.partiql.parser import (
    IS_TYPES,
    And,
    Arithmetic,
    Between,
    Call,
    Compare,
    Condition,
    Function,
    In,
    Is,
    Literal,
    Not,
    Operand,
    Or,
    Path,
    UpdateAction,
)
from keeldb.model.errors import ValidationException
from keeldb.model.values import compare_values, values_equal

AttributeValue = dict[str, Any]

# The functions DynamoDB's update and condition expressions know, by PartiQL name.
VALUE_FUNCTIONS = ("size", "list_append", "if_not_exists")
SET_FUNCTIONS = {"set_add": "ADD", "set_delete": "DELETE"}
# For `value op path`, the operator that says the same with the path on the left.
FLIPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
SET_TYPES = ("SS", "NS", "BS")


@dataclass
class Placeholders:
    """The ExpressionAttributeNames and ExpressionAttributeValues of one generated request."""

    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, AttributeValue] = field(default_factory=dict)
    _by_name: dict[str, str] = field(default_factory=dict)

    def name(self, name: str) -> str:
        placeholder = self._by_name.get(name)
        if placeholder is None:
            placeholder = f"#n{len(self._by_name)}"
            self._by_name[name] = placeholder
            self.names[placeholder] = name
        return placeholder

    def value(self, value: AttributeValue) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def request_members(self) -> dict[str, Any]:
        """The two maps as request members; an empty map is left out (DynamoDB refuses one)."""
        members: dict[str, Any] = {}
        if self.names:
            members["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            members["ExpressionAttributeValues"] = dict(self.values)
        return members


def path_text(path: Path, ph: Placeholders) -> str:
    out = ph.name(str(path.parts[0]))
    for part in path.parts[1:]:
        out += f"[{part}]" if isinstance(part, int) else "." + ph.name(part)
    return out


def operand_text(operand: Operand, ph: Placeholders) -> str:
    """An operand of an update action: a value, a path, `a + b`, `a - b` or a function."""
    if isinstance(operand, Path):
        return path_text(operand, ph)
    if isinstance(operand, Literal):
        return ph.value(operand.value)
    if isinstance(operand, Arithmetic):
        return f"{operand_text(operand.left, ph)} {operand.op} {operand_text(operand.right, ph)}"
    assert isinstance(operand, Call)
    if operand.name not in VALUE_FUNCTIONS:
        raise ValidationException(f"Unrecognized function: {operand.name}")
    args = ", ".join(operand_text(a, ph) for a in operand.args)
    return f"{operand.name}({args})"


def _compared_text(operand: Operand, ph: Placeholders) -> str:
    """An operand of a condition: a value, a path or size(path); arithmetic and the update
    functions have no place there."""
    if isinstance(operand, Arithmetic):
        raise ValidationException(
            f"Unsupported operator in Condition Expression. Operator: {operand.op}"
        )
    if isinstance(operand, Call) and operand.name != "size":
        if operand.name in VALUE_FUNCTIONS or operand.name in SET_FUNCTIONS:
            raise ValidationException(
                f"Unsupported operator in Condition Expression. Operator: {operand.name}"
            )
        raise ValidationException(f"Unrecognized function: {operand.name}")
    return operand_text(operand, ph)


# Binding strength of a printed condition, for parenthesising only where needed: DynamoDB
# refuses redundant parentheses. OR binds loosest, then AND, then NOT, then the rest.
_OR, _AND, _NOT, _ATOM = range(4)


def condition_text(condition: Condition, ph: Placeholders) -> str:
    return _condition(condition, ph)[0]


def _operand_of(condition: Condition, ph: Placeholders, strength_min: int) -> str:
    text, strength = _condition(condition, ph)
    return f"({text})" if strength < strength_min else text


def _condition(condition: Condition, ph: Placeholders) -> tuple[str, int]:
    """The condition as DynamoDB expression text, and how strongly it binds."""
    if isinstance(condition, Or):
        left = _operand_of(condition.left, ph, _OR)
        return f"{left} OR {_operand_of(condition.right, ph, _OR)}", _OR
    if isinstance(condition, And):
        left = _operand_of(condition.left, ph, _AND)
        return f"{left} AND {_operand_of(condition.right, ph, _AND)}", _AND
    if isinstance(condition, Not):
        return f"NOT {_operand_of(condition.operand, ph, _NOT)}", _NOT
    if isinstance(condition, Compare):
        left = _compared_text(condition.left, ph)
        return f"{left} {condition.op} {_compared_text(condition.right, ph)}", _ATOM
    if isinstance(condition, Between):
        # As two comparisons: in PartiQL, as in SQL, bounds in the wrong order match nothing,
        # where a DynamoDB BETWEEN would refuse the expression.
        operand = _compared_text(condition.operand, ph)
        low = _compared_text(condition.low, ph)
        high = _compared_text(condition.high, ph)
        return f"{operand} >= {low} AND {operand} <= {high}", _AND
    if isinstance(condition, In):
        operand = _compared_text(condition.operand, ph)
        values = ", ".join(_compared_text(v, ph) for v in condition.values)
        return f"{operand} IN ({values})", _ATOM
    if isinstance(condition, Is):
        path = path_text(condition.path, ph)
        if condition.type_name == "MISSING":
            function = "attribute_exists" if condition.negated else "attribute_not_exists"
            return f"{function}({path})", _ATOM
        type_value = ph.value({"S": IS_TYPES[condition.type_name]})
        text = f"attribute_type({path}, {type_value})"
        return (f"NOT {text}", _NOT) if condition.negated else (text, _ATOM)
    assert isinstance(condition, Function)
    args = ", ".join(_compared_text(a, ph) for a in condition.args)
    return f"{condition.name}({args})", _ATOM


def parenthesised(condition: Condition, ph: Placeholders) -> str:
    """The condition as an operand of AND or OR in text of our own."""
    return _operand_of(condition, ph, _ATOM)


def conjuncts(condition: Condition | None) -> list[Condition]:
    """The terms of a top-level AND chain (one term for any other condition)."""
    if condition is None:
        return []
    if isinstance(condition, And):
        return conjuncts(condition.left) + conjuncts(condition.right)
    return [condition]


def join_and(terms: list[Condition]) -> Condition | None:
    if not terms:
        return None
    result = terms[0]
    for term in terms[1:]:
        result = And(result, term)
    return result


def key_equality(term: Condition) -> tuple[str, AttributeValue] | None:
    """`attr = value` (either way round) on a top-level attribute, as (attr, value)."""
    if not isinstance(term, Compare) or term.op != "=":
        return None
    for path, value in ((term.left, term.right), (term.right, term.left)):
        if isinstance(path, Path) and len(path.parts) == 1 and isinstance(value, Literal):
            return path.name, value.value
    return None


def partition_values(condition: Condition | None, name: str) -> list[AttributeValue] | None:
    """The partition key values an item must have for `condition` to hold, when the
    condition pins the key attribute `name` to a finite set (`k = v`, `k IN [..]`, and AND
    and OR of such); None when any value could match (Developer Guide, "PartiQL select
    statements": equality or IN on the partition key avoids a full table scan)."""
    if condition is None:
        return None
    if isinstance(condition, Compare):
        found = key_equality(condition)
        return [found[1]] if found is not None and found[0] == name else None
    if isinstance(condition, In):
        operand = condition.operand
        if not (isinstance(operand, Path) and operand.parts == (name,)):
            return None
        if not all(isinstance(v, Literal) for v in condition.values):
            return None
        return _distinct([v.value for v in condition.values if isinstance(v, Literal)])
    if isinstance(condition, And):
        left = partition_values(condition.left, name)
        right = partition_values(condition.right, name)
        if left is None or right is None:
            return left if right is None else right
        return [v for v in left if any(values_equal(v, w) for w in right)]
    if isinstance(condition, Or):
        left = partition_values(condition.left, name)
        right = partition_values(condition.right, name)
        if left is None or right is None:
            return None
        return _distinct(left + right)
    return None


def _distinct(values: list[AttributeValue]) -> list[AttributeValue]:
    out: list[AttributeValue] = []
    for value in values:
        if not any(values_equal(value, seen) for seen in out):
            out.append(value)
    return out


def split_key(
    where: Condition | None, key_names: tuple[str, ...]
) -> tuple[dict[str, AttributeValue], list[Condition]]:
    """The first equality on each key attribute among the WHERE clause's conjuncts, and the
    conjuncts left over."""
    key: dict[str, AttributeValue] = {}
    rest: list[Condition] = []
    for term in conjuncts(where):
        found = key_equality(term)
        if found is not None and found[0] in key_names and found[0] not in key:
            key[found[0]] = found[1]
        else:
            rest.append(term)
    return key, rest


def sort_key_term(terms: list[Condition], name: str, type_: str, ph: Placeholders) -> str | None:
    """A KeyConditionExpression term on the sort key `name` from the first conjunct that
    is one (a comparison, BETWEEN or begins_with against values of the key's type)."""

    def literal_of(operand: Operand) -> AttributeValue | None:
        if isinstance(operand, Literal) and type_ in operand.value:
            return operand.value
        return None

    def is_key(operand: Operand) -> bool:
        return isinstance(operand, Path) and operand.parts == (name,)

    for term in terms:
        if isinstance(term, Compare) and term.op != "<>":
            if is_key(term.left) and (value := literal_of(term.right)) is not None:
                return f"{ph.name(name)} {term.op} {ph.value(value)}"
            if is_key(term.right) and (value := literal_of(term.left)) is not None:
                return f"{ph.name(name)} {FLIPPED[term.op]} {ph.value(value)}"
        if isinstance(term, Between) and is_key(term.operand):
            low, high = literal_of(term.low), literal_of(term.high)
            if low is not None and high is not None and (compare_values(low, high) or 0) <= 0:
                return f"{ph.name(name)} BETWEEN {ph.value(low)} AND {ph.value(high)}"
        if (
            isinstance(term, Function)
            and term.name == "begins_with"
            and len(term.args) == 2
            and is_key(term.args[0])
            and type_ in ("S", "B")
            and (value := literal_of(term.args[1])) is not None
        ):
            return f"begins_with({ph.name(name)}, {ph.value(value)})"
    return None


def update_text(actions: tuple[UpdateAction, ...], ph: Placeholders) -> str:
    """The UpdateExpression of an UPDATE's SET and REMOVE actions; `SET a = set_add(a, <<..>>)`
    is DynamoDB's ADD, `set_delete` its DELETE."""
    clauses: dict[str, list[str]] = {"SET": [], "REMOVE": [], "ADD": [], "DELETE": []}
    for action in actions:
        target = path_text(action.path, ph)
        if action.kind == "REMOVE":
            clauses["REMOVE"].append(target)
            continue
        value = action.value
        assert value is not None
        if isinstance(value, Call) and value.name in SET_FUNCTIONS:
            label = value.name.upper()
            if len(value.args) != 2:
                raise ValidationException(f"{label} must have exactly two arguments")
            if value.args[0] != action.path:
                raise ValidationException(
                    f"The first argument to {label} must equal the assignment value"
                )
            elements = value.args[1]
            if not isinstance(elements, Literal) or not any(t in elements.value for t in SET_TYPES):
                raise ValidationException(
                    f"The second argument to {label} must be a value with type SET"
                )
            clauses[SET_FUNCTIONS[value.name]].append(f"{target} {ph.value(elements.value)}")
            continue
        clauses["SET"].append(f"{target} = {operand_text(value, ph)}")
    return " ".join(f"{kind} {', '.join(parts)}" for kind, parts in clauses.items() if parts)
