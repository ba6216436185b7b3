"""Reading the members of a request as the JSON types DynamoDB's model gives them, and
reporting what is wrong with them in DynamoDB's words.

Two families of complaint live here, in the order DynamoDB checks a request:

1. deserialisation: a member of the wrong JSON type is a `SerializationException` with the
   message the service's deserialiser produces ("NUMBER_VALUE can not be converted to a
   String", "Start of list found where not expected"); members that are JSON null count as
   absent and unknown members are ignored. The readers (`as_string`, `as_map` ...) check one
   member each; `check_types` checks a whole request against a nested `Shape`.
2. member constraints (required members, name patterns and lengths, enumerations, bounds):
   every violation is collected into one `ValidationException` that begins "N validation
   error(s) detected: ", at most `CONSTRAINT_ERRORS_MAX` of them. A flat request lists its
   `Member`s (reader and constraints) and gets them checked by `constraint_violations`; the
   table operations, whose members nest, collect theirs in a `Violations`.

This module owns the wording of those two families and nothing else: it never looks up a
table, never reads the store and never decides which members an operation has (each
operation's module lists its own members, in the order DynamoDB reports them). It is pure
and sits in `keeldb.model` so that the engine's operations and the legacy-parameter
translation of `keeldb.expressions` (the members inside Expected, KeyConditions ...) word
their complaints alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keeldb.model.errors import SerializationException, ValidationException
from keeldb.model.limits import (
    TABLE_NAME_LENGTH_MAX,
    TABLE_NAME_LENGTH_MIN,
    TABLE_NAME_PATTERN,
    TABLE_NAME_RE,
)

# Item operations also take the table's ARN as TableName (API reference, "TableName": "You can
# also provide the Amazon Resource Name (ARN) of the table"); an ARN has only a length limit.
TABLE_ARN_LENGTH_MAX = 1024
# DynamoDB stops listing constraint violations after ten.
CONSTRAINT_ERRORS_MAX = 10

RETURN_CONSUMED_CAPACITY = ("INDEXES", "TOTAL", "NONE")
CONDITIONAL_OPERATOR = ("AND", "OR")

# ---------------------------------------------------------------------------------------------
# Deserialisation: JSON member types
# ---------------------------------------------------------------------------------------------


def serialization(message: str) -> SerializationException:
    return SerializationException(message)


def token(value: Any) -> str:
    """The JSON token name the deserializer names in its complaint."""
    if value is True:
        return "TRUE_VALUE"
    if value is False:
        return "FALSE_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    return "STRING_VALUE"


def not_expected(value: Any) -> SerializationException:
    """The complaint about a list or a map where a scalar was expected."""
    if isinstance(value, list):
        return serialization("Start of list found where not expected")
    return serialization("Start of structure or map found where not expected.")


def wrong_type(value: Any, target: str) -> SerializationException:
    """DynamoDB's deserializer's complaint about a JSON value where a `target` ("String",
    "Boolean", "Long", "Structure", "List") was expected."""
    if isinstance(value, (list, dict)):
        return not_expected(value)
    return serialization(f"{token(value)} can not be converted to a {target}")


def as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise wrong_type(value, "String")


def as_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise wrong_type(value, "Boolean")


def as_integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, (list, dict)):
            raise not_expected(value)
        raise serialization(f"{token(value)} can not be converted to an Integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise serialization(f"{token(value)} can not be converted to an Integer")
    return int(value)


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        raise serialization("Start of structure or map found where not expected.")
    raise serialization("Expected list or null")


def as_map(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        raise serialization("Start of list found where not expected")
    raise serialization("Expected map or null")


def as_structure(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        raise serialization("Start of list found where not expected")
    raise serialization("Expected null")


def attribute_map(value: Any) -> dict[str, Any]:
    """A map of attribute values (Item, Key, ExpressionAttributeValues, ExclusiveStartKey):
    only the map itself is checked here; each value's own shape and content is
    `keeldb.model.values`' to check."""
    return {k: v for k, v in as_map(value).items() if v is not None}


def string_map(value: Any) -> dict[str, str]:
    return {k: as_string(v) for k, v in as_map(value).items() if v is not None}


def string_list(value: Any) -> list[str]:
    return [as_string(v) for v in as_list(value) if v is not None]


def legacy_map(value: Any) -> dict[str, Any]:
    """Expected, AttributeUpdates, KeyConditions, QueryFilter, ScanFilter: a map of
    structures, kept as given (their members are `keeldb.expressions.legacy`'s to check)."""
    return {k: as_structure(v) for k, v in as_map(value).items() if v is not None}


Reader = Callable[[Any], Any]

# A request's nested shape for `check_types`: a dict of member shapes for a structure, a
# one-element list for a list of that shape, and "S" (string), "Z" (boolean) or "L" (long).
Shape = Any


def check_types(value: Any, shape: Shape) -> Any:
    """`value` with JSON nulls dropped and longs made ints; SerializationException for a
    member of the wrong type. Members the shape does not know are dropped, as DynamoDB's
    deserializer ignores them."""
    if value is None:
        return None
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise wrong_type(value, "Structure")
        out = {}
        for member, member_shape in shape.items():
            checked = check_types(value.get(member), member_shape)
            if checked is not None:
                out[member] = checked
        return out
    if isinstance(shape, list):
        if not isinstance(value, list):
            raise wrong_type(value, "List")
        return [check_types(element, shape[0]) for element in value]
    if shape == "S":
        if not isinstance(value, str):
            raise wrong_type(value, "String")
        return value
    if shape == "Z":
        if not isinstance(value, bool):
            raise wrong_type(value, "Boolean")
        return value
    assert shape == "L", shape
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(value, "Long")
    # A Long member given a fraction keeps its integer part, as a JSON long parser does.
    return int(value)


# ---------------------------------------------------------------------------------------------
# Member constraints
# ---------------------------------------------------------------------------------------------


def constraint_error(errors: Sequence[str]) -> ValidationException:
    """One ValidationException listing `errors` ("Value ... at '...' failed to satisfy
    constraint: ..."), as DynamoDB reports a request's constraint violations together."""
    assert errors
    noun = "error" if len(errors) == 1 else "errors"
    return ValidationException(f"{len(errors)} validation {noun} detected: " + "; ".join(errors))


@dataclass(frozen=True, slots=True)
class Member:
    """One request member: how to read it and the constraints DynamoDB's model puts on it."""

    name: str  # as in the request, e.g. "ReturnValues"
    reader: Reader
    required: bool = False
    enum: tuple[str, ...] = ()
    table_name: bool = False  # the table-name pattern and length (ARNs allowed)
    index_name: bool = False  # the same pattern and length, no ARN
    minimum: int | None = None
    maximum: int | None = None

    @property
    def wire_name(self) -> str:
        # DynamoDB names members in constraint messages with a lower-case first letter.
        return self.name[0].lower() + self.name[1:]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return f"'{value}'"


def _violation(member: Member, value: Any, constraint: str) -> str:
    return (
        f"Value {_show(value)} at '{member.wire_name}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def _name_violations(member: Member, value: str, errors: list[str]) -> None:
    if member.table_name and value.startswith("arn:"):
        if len(value) > TABLE_ARN_LENGTH_MAX:
            errors.append(
                _violation(
                    member, value, f"have length less than or equal to {TABLE_ARN_LENGTH_MAX}"
                )
            )
        return
    if not TABLE_NAME_RE.match(value):
        errors.append(
            _violation(member, value, f"satisfy regular expression pattern: {TABLE_NAME_PATTERN}")
        )
    if len(value) < TABLE_NAME_LENGTH_MIN:
        errors.append(
            _violation(
                member, value, f"have length greater than or equal to {TABLE_NAME_LENGTH_MIN}"
            )
        )
    if len(value) > TABLE_NAME_LENGTH_MAX:
        errors.append(
            _violation(member, value, f"have length less than or equal to {TABLE_NAME_LENGTH_MAX}")
        )


def constraint_violations(members: Sequence[Member], request: dict[str, Any]) -> list[str]:
    """The constraint violations of `request` (members already read), in the order of
    `members`, at most `CONSTRAINT_ERRORS_MAX` of them."""
    errors: list[str] = []
    for member in members:
        value = request.get(member.name)
        if value is None:
            if member.required:
                errors.append(_violation(member, None, "not be null"))
            continue
        if member.table_name or member.index_name:
            _name_violations(member, value, errors)
        if member.enum and value not in member.enum:
            errors.append(
                _violation(member, value, f"satisfy enum value set: [{', '.join(member.enum)}]")
            )
        if member.minimum is not None and value < member.minimum:
            errors.append(
                _violation(member, value, f"have value greater than or equal to {member.minimum}")
            )
        if member.maximum is not None and value > member.maximum:
            errors.append(
                _violation(member, value, f"have value less than or equal to {member.maximum}")
            )
    return errors[:CONSTRAINT_ERRORS_MAX]


def _render(value: Any) -> str:
    """A value as DynamoDB's constraint messages quote it."""
    if value is None:
        return "null"
    return f"'{_text(value)}'"


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k[:1].lower()}{k[1:]}={_text(v)}" for k, v in value.items())
        return "{" + inner + "}"
    return str(value)


class Violations:
    """Constraint violations of one request, reported together as DynamoDB does."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, value: Any, path: str, constraint: str) -> None:
        if len(self.messages) < CONSTRAINT_ERRORS_MAX:
            self.messages.append(
                f"Value {_render(value)} at '{path}' failed to satisfy constraint: {constraint}"
            )

    def not_null(self, value: Any, path: str) -> bool:
        """Record a violation if `value` is missing; True if it is present."""
        if value is None:
            self.add(None, path, "Member must not be null")
            return False
        return True

    def length(self, value: Any, path: str, low: int | None, high: int | None) -> None:
        if value is None:
            return
        if low is not None and len(value) < low:
            self.add(value, path, f"Member must have length greater than or equal to {low}")
        if high is not None and len(value) > high:
            self.add(value, path, f"Member must have length less than or equal to {high}")

    def pattern(self, value: str | None, path: str) -> None:
        if value is not None and not TABLE_NAME_RE.match(value):
            self.add(
                value, path, f"Member must satisfy regular expression pattern: {TABLE_NAME_PATTERN}"
            )

    def enum(self, value: str | None, path: str, allowed: Sequence[str]) -> None:
        if value is not None and value not in allowed:
            self.add(value, path, f"Member must satisfy enum value set: [{', '.join(allowed)}]")

    def at_least(self, value: int | None, path: str, low: int) -> None:
        if value is not None and value < low:
            self.add(value, path, f"Member must have value greater than or equal to {low}")

    def at_most(self, value: int | None, path: str, high: int) -> None:
        if value is not None and value > high:
            self.add(value, path, f"Member must have value less than or equal to {high}")

    def raise_if_any(self) -> None:
        if self.messages:
            raise constraint_error(self.messages)


def check_table_reference(v: Violations, name: str | None, path: str = "tableName") -> None:
    """A table name or a table ARN, as the operations on an existing table take it."""
    if not v.not_null(name, path):
        return
    assert name is not None
    if name.startswith("arn:"):
        v.length(name, path, 1, TABLE_ARN_LENGTH_MAX)
        return
    v.length(name, path, TABLE_NAME_LENGTH_MIN, TABLE_NAME_LENGTH_MAX)
    v.pattern(name, path)
