"""DynamoDB numbers: parsing, canonical form, arithmetic and ordering.

This module owns the rules of the N type: decimals of up to 38 significant digits whose
magnitude lies between 1E-130 and 9.9999999999999999999999999999999999999E+125 (or zero), kept
as canonical decimal strings in plain notation ("1.50" -> "1.5", "-0" -> "0", "1E+2" -> "100"),
which is how DynamoDB returns them (1E+100 comes back as a 1 and a hundred zeros; boto3's
resource layer, which reads numbers with a 38-digit context, is known to choke on exactly
that). Every result is computed exactly: it never rounds, and it never touches the global
`decimal` context (other code, in other threads, may change that).
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, Inexact, InvalidOperation

from keeldb.model.errors import ValidationException
from keeldb.model.limits import NUMBER_DIGITS_MAX, NUMBER_EXPONENT_MAX, NUMBER_EXPONENT_MIN

NOT_A_NUMBER_MESSAGE = "The parameter cannot be converted to a numeric value"
PRECISION_MESSAGE = "Attempting to store more than 38 significant digits in a Number"
OVERFLOW_MESSAGE = (
    "Number overflow. Attempting to store a number with magnitude larger than supported range"
)
UNDERFLOW_MESSAGE = (
    "Number underflow. Attempting to store a number with magnitude smaller than supported range"
)

# The text forms a number may take on the wire: an optional sign, digits with an optional
# decimal point (at least one digit somewhere), and an optional exponent. Python's Decimal
# would also take "NaN", "Infinity", underscores and surrounding blanks: DynamoDB does not.
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")

# Exact arithmetic on two stored numbers needs at most the digits between the largest and the
# smallest exponent (125 - (-130)) plus the 38 of a coefficient, plus one for a carry.
_EXACT_DIGITS_MAX = (NUMBER_EXPONENT_MAX - NUMBER_EXPONENT_MIN) + 2 * NUMBER_DIGITS_MAX + 2
# Exponents written with more digits than this are decided without Decimal (whose own limit
# is 10**18): a request body is far too small to carry enough digits to offset them.
_EXPONENT_DIGITS_MAX = 15
_CONTEXT = Context(
    prec=_EXACT_DIGITS_MAX,
    Emax=10 * _EXACT_DIGITS_MAX,
    Emin=-10 * _EXACT_DIGITS_MAX,
    traps=[InvalidOperation, Inexact],
)


def _parse(text: object) -> Decimal:
    """The exact Decimal a wire text denotes, or DynamoDB's "not a number" error."""
    if not isinstance(text, str) or _NUMBER_RE.match(text) is None:
        shown = text if isinstance(text, str) else ""
        raise ValidationException(f"{NOT_A_NUMBER_MESSAGE}: {shown}")
    mantissa, _, exponent = text.replace("E", "e").partition("e")
    if len(exponent) > _EXPONENT_DIGITS_MAX:
        # Decimal cannot even represent such an exponent (it would signal, or return NaN if
        # the caller's context does not trap): no mantissa written in a request can bring
        # the number back into range, so the exponent's sign alone decides.
        if not mantissa.strip("+-.0"):
            return Decimal(0)
        if exponent.startswith("-"):
            raise ValidationException(UNDERFLOW_MESSAGE)
        raise ValidationException(OVERFLOW_MESSAGE)
    # Decimal(str) is exact whatever the context's precision; no rounding can happen here.
    return Decimal(text)


def _canonical(value: Decimal) -> tuple[int, tuple[int, ...], int]:
    """(sign, digits without leading or trailing zeros, exponent of the last digit).

    Zero is (0, (), 0). Raises DynamoDB's precision, overflow and underflow errors.
    """
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    first = 0
    while first < len(digits) and digits[first] == 0:
        first += 1
    if first == len(digits):
        return (0, (), 0)
    last = len(digits)
    while digits[last - 1] == 0:
        last -= 1
    exponent += len(digits) - last
    digits = digits[first:last]
    # The adjusted exponent: the power of ten of the leading digit (d.ddd x 10^adjusted).
    adjusted = exponent + len(digits) - 1
    # DynamoDB checks the range before the precision: "1.000...0001e200" is an overflow.
    if adjusted > NUMBER_EXPONENT_MAX:
        raise ValidationException(OVERFLOW_MESSAGE)
    if adjusted < NUMBER_EXPONENT_MIN:
        raise ValidationException(UNDERFLOW_MESSAGE)
    if len(digits) > NUMBER_DIGITS_MAX:
        raise ValidationException(PRECISION_MESSAGE)
    return (sign, tuple(digits), exponent)


def _format(sign: int, digits: tuple[int, ...], exponent: int) -> str:
    """Plain decimal notation, never an exponent, as DynamoDB returns numbers."""
    if not digits:
        return "0"
    text = "".join(map(str, digits))
    if exponent >= 0:
        text = text + "0" * exponent
    else:
        point = len(text) + exponent
        if point > 0:
            text = text[:point] + "." + text[point:]
        else:
            text = "0." + "0" * (-point) + text
    return "-" + text if sign else text


# Texts that are already canonical, recognised without building a Decimal: an integer of up
# to 38 digits, or a decimal fraction with no needless zeros whose significant digits (counted
# by `canonical_parts`) fit. Most numbers sent to DynamoDB are of this kind.
_CANONICAL_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?\Z")


def canonical_parts(text: str) -> tuple[bool, str, int] | None:
    """(negative, significant digits, adjusted exponent) of a canonical number text, read
    from the text alone; None when the text is not canonical (or is zero, which has no
    significant digits). The adjusted exponent is the power of ten of the leading digit."""
    if _CANONICAL_RE.match(text) is None:
        return None
    negative = text.startswith("-")
    body = text[1:] if negative else text
    whole, _, fraction = body.partition(".")
    if whole != "0":
        digits = (whole + fraction).rstrip("0")
        adjusted = len(whole) - 1
    else:
        significant = fraction.lstrip("0")
        if not significant:
            return None
        digits = significant
        adjusted = len(significant) - len(fraction) - 1
    if (
        len(digits) > NUMBER_DIGITS_MAX
        or adjusted > NUMBER_EXPONENT_MAX
        or adjusted < NUMBER_EXPONENT_MIN
    ):
        return None
    return negative, digits, adjusted


def normalize_number(text: str) -> str:
    """DynamoDB's canonical text of a number given on the wire, or its ValidationException."""
    if isinstance(text, str) and (text == "0" or canonical_parts(text) is not None):
        return text  # already canonical: the common case, answered from the text alone
    return _format(*_canonical(_parse(text)))


def number_parts(text: str) -> tuple[bool, str, int] | None:
    """(negative, significant digits, adjusted exponent) of any valid number text; None for
    zero. Raises DynamoDB's errors for texts that are no storable number."""
    parts = canonical_parts(text)
    if parts is not None:
        return parts
    sign, digits, exponent = _canonical(_parse(text))
    if not digits:
        return None
    return bool(sign), "".join(map(str, digits)), exponent + len(digits) - 1


def to_decimal(text: str) -> Decimal:
    """The exact value of a number's text (canonical or not), checked against DynamoDB's rules."""
    value = _parse(text)
    _canonical(value)
    return value


def from_decimal(value: Decimal) -> str:
    """The canonical text of a Decimal computed elsewhere, or DynamoDB's range/precision error."""
    if not value.is_finite():
        raise ValidationException(f"{NOT_A_NUMBER_MESSAGE}: {value}")
    return _format(*_canonical(value))


def add_numbers(a: str, b: str) -> str:
    """a + b, exactly, as UpdateExpression `+` and ADD compute it; errors as DynamoDB reports."""
    total = _CONTEXT.add(to_decimal(a), to_decimal(b))
    return from_decimal(total)


def subtract_numbers(a: str, b: str) -> str:
    """a - b, exactly, as UpdateExpression `-` computes it; errors as DynamoDB reports."""
    difference = _CONTEXT.subtract(to_decimal(a), to_decimal(b))
    return from_decimal(difference)


def compare_numbers(a: str, b: str) -> int:
    """-1, 0 or 1 as a is less than, equal to or greater than b, by value."""
    # Decimal comparison is exact and needs no context.
    x = to_decimal(a)
    y = to_decimal(b)
    return (x > y) - (x < y)
