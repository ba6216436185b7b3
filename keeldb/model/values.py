"""Attribute values: validation of the wire form, equality, ordering and DynamoDB's item size.

This module owns what a valid attribute value is. Values stay in DynamoDB's JSON shape
(`{"S": "x"}`, `{"N": "1.5"}`, `{"B": "<base64>"}`, `{"L": [...]}`, `{"M": {...}}`,
`{"SS": [...]}` ...); `validate_value` turns a value as received into its canonical stored
form (numbers normalised, binaries re-encoded canonically) or raises the error DynamoDB
raises, with DynamoDB's message, word for word. It never decides anything about keys or
tables (that is `keys` and the engine) and never does IO.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal
from typing import Any

from keeldb.model.errors import SerializationException, ValidationException
from keeldb.model.limits import ATTRIBUTE_NAME_BYTES_MAX, ITEM_BYTES_MAX, NESTING_DEPTH_MAX
from keeldb.model.numbers import NOT_A_NUMBER_MESSAGE, normalize_number, number_parts, to_decimal

# The ten data types, in the order DynamoDB's AttributeValue shape lists them.
TYPES = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")
_TYPE_SET = frozenset(TYPES)
SCALAR_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL"})
SET_TYPES = frozenset({"SS", "NS", "BS"})
KEY_TYPES = frozenset({"S", "N", "B"})

INVALID = "One or more parameter values were invalid: "
EMPTY_VALUE_MESSAGE = (
    "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
)
MULTIPLE_TYPES_MESSAGE = (
    "Supplied AttributeValue has more than one datatypes set, "
    "must contain exactly one of the supported datatypes"
)
NULL_NOT_TRUE_MESSAGE = INVALID + "Null attribute value types must have the value of true"
# DynamoDB's own wording, double space and grammar included.
EMPTY_SET_MESSAGES = {
    "SS": INVALID + "An string set  may not be empty",
    "NS": INVALID + "An number set  may not be empty",
    "BS": INVALID + "Binary sets should not be empty",
}
NUMBER_SET_DUPLICATES_MESSAGE = "Input collection contains duplicates"
NULL_STRING_IN_SET_MESSAGE = INVALID + "An string set may not have a null string as a member"
NULL_VALUE_MESSAGE = "The supplied Item contains a null AttributeValue"
# Attribute names (of an item, and of a map's entries): 1 to 65535 bytes of UTF-8.
EMPTY_NAME_MESSAGE = "Empty attribute name"
NAME_TOO_LARGE_MESSAGE = "Attribute name is too large, must be less than 65536 bytes"
NESTING_MESSAGE = (
    "Nesting Levels have exceeded supported limits: "
    "Attributes in the item have nested levels beyond supported limit"
)

# Strings must be Unicode text: a lone surrogate escape has no UTF-8 form, so it could be
# neither sized nor returned. DynamoDB's own wording for this case is not documented.
INVALID_UTF8_MESSAGE = "Invalid UTF-8: a string contains a lone surrogate code point"

_BASE64_ALPHABET_RE = re.compile(r"[^A-Za-z0-9+/=]|=[^=]")


# --- Wire-shape errors --------------------------------------------------------------------
# A member of the wrong JSON type is refused by DynamoDB's deserializer before validation,
# as a SerializationException whose message names the Java class it could not convert.


# DynamoDB's JSON reader turns every JSON number into this class before conversion.
_JSON_NUMBER_CLASS = "com.amazon.coral.value.json.numbers.TruncatingBigNumber"
# Strings the reader accepts where a boolean is due, as it reads them case-insensitively.
_BOOLEAN_SPELLINGS = {"TRUE": True, "1": True, "YES": True, "FALSE": False, "0": False, "NO": False}


def _java_class(value: object) -> str:
    if isinstance(value, bool):
        return "java.lang.Boolean"
    if isinstance(value, (int, float)):
        return _JSON_NUMBER_CLASS
    return "java.lang.String"


def _shape_error(value: object, expected: str) -> SerializationException:
    """The deserializer's complaint about `value` where `expected` ("String", "Boolean",
    "Blob", "List", "Map" or "Structure") was due."""
    if isinstance(value, list):
        assert expected != "List", "a list is the expected shape, not an error"
        return SerializationException("Start of list found where not expected")
    if isinstance(value, dict):
        return SerializationException("Start of structure or map found where not expected.")
    if expected == "List":
        return SerializationException("Expected list or null")
    if expected == "Map":
        return SerializationException("Expected map or null")
    if expected == "Structure":
        return SerializationException("Expected null")
    if expected == "Boolean":
        return SerializationException(f"'{str(value).upper()}' can not be converted to an Boolean")
    article = "a" if expected == "Blob" else "an"
    return SerializationException(
        f"class {_java_class(value)} can not be converted to {article} {expected}"
    )


def _check_string(value: object) -> str:
    if not isinstance(value, str):
        raise _shape_error(value, "String")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SerializationException(INVALID_UTF8_MESSAGE) from None
    return value


def _check_boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.upper() in _BOOLEAN_SPELLINGS:
        return _BOOLEAN_SPELLINGS[value.upper()]
    if isinstance(value, (int, float)):
        raise SerializationException(
            f"class {_JSON_NUMBER_CLASS} can not be converted to an Boolean"
        )
    raise _shape_error(value, "Boolean")


def _check_list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise _shape_error(value, "List")
    return value


def canonical_binary(text: object) -> str:
    """The canonical base64 text of a binary given on the wire, or the deserializer's error."""
    if not isinstance(text, str):
        raise _shape_error(text, "Blob")
    prefix = f"'{text}' can not be converted to a Blob: "
    if len(text) % 4:
        raise SerializationException(
            prefix
            + f"Base64 encoded length is expected a multiple of 4 bytes but found: {len(text)}"
        )
    bad = _BASE64_ALPHABET_RE.search(text)
    if bad is not None:
        raise SerializationException(prefix + f"Invalid Base64 character: '{bad.group(0)[0]}'")
    last_character_error = SerializationException(
        prefix + "Invalid last non-pad Base64 character dectected"  # sic
    )
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        # Padding in the wrong place ("Y===", "===="): nothing decodes back to this text.
        raise last_character_error from None
    canonical = base64.b64encode(raw).decode("ascii")
    if canonical != text:
        # Unused bits in the last character are set ("Yh=="): DynamoDB refuses those.
        raise last_character_error
    return canonical


def decode_binary(b64: str) -> bytes:
    """The raw bytes of a canonical (validated) base64 text."""
    return base64.b64decode(b64)


def encode_binary(raw: bytes) -> str:
    """The canonical base64 text of raw bytes."""
    return base64.b64encode(raw).decode("ascii")


# --- Validation ---------------------------------------------------------------------------


def _number_text(text: object) -> str:
    if text is None or text == "":
        # DynamoDB gives no value in the message when the string is empty.
        raise ValidationException(NOT_A_NUMBER_MESSAGE)
    return normalize_number(_check_string(text))


def _validate_member(type_: str, member: Any, depth: int) -> Any:
    """The canonical form of one present member of an AttributeValue."""
    if type_ == "S":
        return _check_string(member)
    if type_ == "N":
        return _number_text(member)
    if type_ == "B":
        return canonical_binary(member)
    if type_ == "BOOL":
        return _check_boolean(member)
    if type_ == "NULL":
        if _check_boolean(member) is not True:
            raise ValidationException(NULL_NOT_TRUE_MESSAGE)
        return True
    if type_ in SET_TYPES:
        return _validate_set(type_, _check_list(member))
    if type_ == "L":
        # A null element is an AttributeValue with no data type in it.
        return [
            validate_value({} if element is None else element, depth=depth + 1)
            for element in _check_list(member)
        ]
    assert type_ == "M", type_
    if not isinstance(member, dict):
        raise _shape_error(member, "Map")
    out: dict[str, Any] = {}
    for name, element in member.items():
        if element is None:
            continue  # A null map value is absent, as DynamoDB's deserializer reads it.
        out[check_attribute_name(name)] = validate_value(element, depth=depth + 1)
    return out


def check_attribute_name(name: Any) -> str:
    """An attribute name of an item or a map, or DynamoDB's error: 1 to 65535 UTF-8 bytes."""
    text = _check_string(name)
    if not text:
        raise ValidationException(EMPTY_NAME_MESSAGE)
    # Every character takes at most 4 bytes: only long names need encoding to be measured.
    if (
        len(text) * 4 > ATTRIBUTE_NAME_BYTES_MAX
        and len(text.encode("utf-8")) > ATTRIBUTE_NAME_BYTES_MAX
    ):
        raise ValidationException(NAME_TOO_LARGE_MESSAGE)
    return text


def _show(members: list[Any]) -> str:
    return "[" + ", ".join(str(m) for m in members) + "]"


def _validate_set(type_: str, members: list[Any]) -> list[Any]:
    if not members:
        raise ValidationException(EMPTY_SET_MESSAGES[type_])
    if type_ == "SS":
        if any(m is None for m in members):
            raise ValidationException(NULL_STRING_IN_SET_MESSAGE)
        strings = [_check_string(m) for m in members]
        if len(set(strings)) != len(strings):
            raise ValidationException(
                INVALID + f"Input collection {_show(strings)} contains duplicates."
            )
        return strings
    if type_ == "BS":
        if any(m is None for m in members):
            raise ValidationException(NULL_VALUE_MESSAGE)
        binaries = [canonical_binary(m) for m in members]
        if len(set(binaries)) != len(binaries):
            raise ValidationException(
                INVALID + f"Input collection {_show(members)}of type BS contains duplicates."
            )
        return binaries
    numbers = [_number_text(m) for m in members]
    # Canonical texts are equal exactly when the values are: 1 and 1.0 are duplicates.
    if len(set(numbers)) != len(numbers):
        raise ValidationException(NUMBER_SET_DUPLICATES_MESSAGE)
    return numbers


def validate_value(value: Any, *, depth: int = 0) -> dict[str, Any]:
    """The canonical form of one attribute value as received, or DynamoDB's error for it.

    `depth` is the number of lists and maps around the value: a top-level attribute is at
    depth 0, which DynamoDB counts as nesting level 1, and level 32 is the deepest allowed.
    """
    if not isinstance(value, dict):
        raise _shape_error(value, "Structure")
    if depth >= NESTING_DEPTH_MAX:
        raise ValidationException(NESTING_MESSAGE)
    if len(value) == 1:
        # The common case, one member: no need to look for the others.
        ((type_, member),) = value.items()
        if type_ in _TYPE_SET and member is not None:
            return {type_: _validate_member(type_, member, depth)}
    # Members DynamoDB does not know, and members set to null, are absent.
    present = [t for t in TYPES if value.get(t) is not None]
    if not present:
        raise ValidationException(EMPTY_VALUE_MESSAGE)
    # Each member is checked before the count, as DynamoDB does: {"S": "a", "N": "x"}
    # is reported as a bad number, not as two data types.
    canonical = {t: _validate_member(t, value[t], depth) for t in present}
    if len(present) > 1:
        raise ValidationException(MULTIPLE_TYPES_MESSAGE)
    return canonical


def validate_item(item: Any) -> dict[str, dict[str, Any]]:
    """The canonical form of an item (attribute name -> value) as received."""
    return validate_item_sized(item)[0]


def validate_item_sized(item: Any) -> tuple[dict[str, dict[str, Any]], int]:
    """The canonical form of an item as received and its size (`item_size`), in one pass.

    Same checks, order and errors as `validate_value` on each value after
    `check_attribute_name` on its name. The common attribute (an ASCII name, a one-member
    ASCII string value) takes a short path: it cannot fail any check, and its size is its
    length; anything else goes through the general functions.
    """
    if not isinstance(item, dict):
        raise _shape_error(item, "Map")
    out: dict[str, dict[str, Any]] = {}
    size = 0
    for name, value in item.items():
        if value is None:
            continue  # A null map value is absent, as DynamoDB's deserializer reads it.
        if type(name) is str and name and name.isascii() and len(name) <= ATTRIBUTE_NAME_BYTES_MAX:
            if type(value) is dict and len(value) == 1:
                member = value.get("S")
                if type(member) is str and member.isascii():
                    out[name] = {"S": member}
                    size += len(name) + len(member)
                    continue
            canonical = validate_value(value)
            out[name] = canonical
            size += len(name) + value_size(canonical)
            continue
        # The value is checked before its name, as the general form
        # `out[check_attribute_name(name)] = validate_value(value)` does.
        canonical = validate_value(value)
        name = check_attribute_name(name)
        out[name] = canonical
        size += len(name.encode("utf-8")) + value_size(canonical)
    return out, size


# --- Reading values -----------------------------------------------------------------------


def value_type(value: dict[str, Any]) -> str:
    """The data type of a canonical value: "S", "N", "B", "BOOL", "NULL", "L", "M", "SS" ..."""
    assert len(value) == 1, value
    (type_,) = value
    assert type_ in TYPES, type_
    return type_


def values_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """DynamoDB equality: numbers by value, sets as sets, lists in order, maps by keys."""
    type_a = value_type(a)
    if type_a != value_type(b):
        return False
    x, y = a[type_a], b[type_a]
    if type_a == "N":
        return bool(x == y) or to_decimal(x) == to_decimal(y)
    if type_a == "NS":
        return {to_decimal(n) for n in x} == {to_decimal(n) for n in y}
    if type_a in ("SS", "BS"):
        return set(x) == set(y)
    if type_a == "B":
        return bool(decode_binary(x) == decode_binary(y))
    if type_a == "L":
        return len(x) == len(y) and all(values_equal(p, q) for p, q in zip(x, y))
    if type_a == "M":
        return x.keys() == y.keys() and all(values_equal(x[k], y[k]) for k in x)
    return bool(x == y)


def set_union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The members of set a, then those of set b not already in a (ADD on a set).

    Both sets are canonical and of one type: canonical texts are equal exactly when the
    members are (1 and 1.0 share the text "1"), so membership is a plain set lookup.
    """
    type_ = value_type(a)
    assert type_ in SET_TYPES, type_
    assert value_type(b) == type_, (a, b)
    members = list(a[type_])
    seen = set(members)
    for member in b[type_]:
        if member not in seen:
            seen.add(member)
            members.append(member)
    return {type_: members}


def set_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The members of set a that are not in set b (DELETE from a set); None when nothing is
    left, since DynamoDB has no empty sets. Both sets canonical and of one type."""
    type_ = value_type(a)
    assert type_ in SET_TYPES, type_
    assert value_type(b) == type_, (a, b)
    removed = set(b[type_])
    left = [m for m in a[type_] if m not in removed]
    return {type_: left} if left else None


def compare_values(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """-1, 0 or 1 for two values of one ordered type (S by UTF-8 bytes, N by value, B by
    unsigned bytes); None when DynamoDB cannot order them (types differ or are unordered)."""
    type_a = value_type(a)
    if type_a != value_type(b) or type_a not in KEY_TYPES:
        return None
    if type_a == "N":
        m, n = to_decimal(a["N"]), to_decimal(b["N"])
        return int(m > n) - int(m < n)
    if type_a == "S":
        # Code point order is UTF-8 byte order (for text without lone surrogates, which
        # validation refuses), so the strings compare directly, without encoding them.
        s: str = a["S"]
        t: str = b["S"]
        return int(s > t) - int(s < t)
    x, y = decode_binary(a["B"]), decode_binary(b["B"])
    return int(x > y) - int(x < y)


# --- Size ---------------------------------------------------------------------------------
# "DynamoDB item sizes and formats" (Developer Guide, CapacityUnitCalculations.html): the size
# of an item is the sum of its attribute names' UTF-8 lengths and its values' sizes.


def number_size(text: str) -> int:
    """Bytes a number takes in DynamoDB's item size.

    The guide gives "approximately 1 byte per two significant digits, plus 1 byte". Exactly,
    DynamoDB stores a number as an exponent byte and base-100 digit pairs aligned on the
    decimal point (leading and trailing zeros trimmed), plus one terminator byte when it is
    negative: so "1.5" (pairs 01|50) takes 3 bytes where "15" (pair 15) takes 2. Zero is 1.
    """
    parts = number_parts(text)
    if parts is None:
        return 1
    negative, digits, adjusted = parts
    count = len(digits)
    # The leading pair is "0d" when the adjusted exponent (the power of ten of the leading
    # digit) is even, which costs one more byte exactly when the digit count is even too.
    pad = 1 if count % 2 == 0 and adjusted % 2 == 0 else 0
    return 1 + (count + 1) // 2 + pad + (1 if negative else 0)


def value_size(value: dict[str, Any]) -> int:
    """Bytes one canonical value counts for in DynamoDB's item size."""
    type_ = value_type(value)
    member = value[type_]
    if type_ == "S":
        return len(member.encode("utf-8"))
    if type_ == "N":
        return number_size(member)
    if type_ == "B":
        return len(decode_binary(member))
    if type_ in ("BOOL", "NULL"):
        return 1
    if type_ == "SS":
        return sum(len(s.encode("utf-8")) for s in member)
    if type_ == "NS":
        return sum(number_size(n) for n in member)
    if type_ == "BS":
        return sum(len(decode_binary(b)) for b in member)
    # Lists and maps: 3 bytes of overhead, plus 1 byte per element, plus the elements (with
    # their names, for a map).
    if type_ == "L":
        return 3 + sum(1 + value_size(element) for element in member)
    assert type_ == "M", type_
    return 3 + sum(
        1 + len(name.encode("utf-8")) + value_size(element) for name, element in member.items()
    )


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """Bytes an item counts for against the 400 KB limit and in capacity units."""
    size = 0
    for name, value in item.items():
        size += attribute_size(name, value)
    return size


def attribute_size(name: str, value: dict[str, Any]) -> int:
    """Bytes one top-level attribute (its name and its canonical value) counts for in the
    item's size. An ASCII text's UTF-8 length is its length: checked in C, without encoding
    it, for the names and strings most items are made of."""
    name_bytes = len(name) if name.isascii() else len(name.encode("utf-8"))
    member = value.get("S")
    if member is not None and len(value) == 1:
        return name_bytes + (len(member) if member.isascii() else len(member.encode("utf-8")))
    return name_bytes + value_size(value)


def decimal_of(value: dict[str, Any]) -> Decimal:
    """The exact value of a canonical N value."""
    return to_decimal(value["N"])


ITEM_TOO_LARGE_MESSAGE = "Item size has exceeded the maximum allowed size"
ITEM_UPDATE_TOO_LARGE_MESSAGE = "Item size to update has exceeded the maximum allowed size"


def check_item_size(item: dict[str, dict[str, Any]], *, update: bool = False) -> int:
    """The item's size, or DynamoDB's error when it is over the 400 KB item limit.

    `update` selects the message UpdateItem gives when its result would be too large.
    """
    size = item_size(item)
    if size > ITEM_BYTES_MAX:
        raise ValidationException(
            ITEM_UPDATE_TOO_LARGE_MESSAGE if update else ITEM_TOO_LARGE_MESSAGE
        )
    return size
