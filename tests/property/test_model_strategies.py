"""Hypothesis strategies for DynamoDB values, shared by the model's property tests, and the
checks that they generate what they promise."""

from __future__ import annotations

import base64
from decimal import Context, Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

EXPONENT_MIN, EXPONENT_MAX = -130, 125
_WIDE = Context(prec=100)


def canonical_text(value: Decimal) -> str:
    """DynamoDB's canonical text of a number, computed the obvious way (for fixtures)."""
    return format(value.normalize(_WIDE), "f") if value else "0"


@st.composite
def decimals(draw: st.DrawFn) -> Decimal:
    """Any number DynamoDB can store: zero, or up to 38 significant digits with an adjusted
    exponent in [-130, 125], either sign; biased towards the edges of the range."""
    if draw(st.integers(0, 20)) == 0:
        return Decimal(0)
    count = draw(st.integers(1, 38))
    first = draw(st.integers(1, 9))
    rest = draw(st.lists(st.integers(0, 9), min_size=count - 1, max_size=count - 1))
    digits = str(first) + "".join(map(str, rest))
    adjusted = draw(
        st.one_of(
            st.integers(EXPONENT_MIN, EXPONENT_MAX),
            st.sampled_from(
                [EXPONENT_MIN, EXPONENT_MIN + 1, -1, 0, 1, EXPONENT_MAX - 1, EXPONENT_MAX]
            ),
        )
    )
    sign = "-" if draw(st.booleans()) else ""
    return Decimal(f"{sign}{digits[0]}.{digits[1:] or '0'}E{adjusted}")


@st.composite
def number_texts(draw: st.DrawFn, value: Decimal | None = None) -> str:
    """A wire spelling of a storable number: plain or scientific, with zeros padded around."""
    if value is None:
        value = draw(decimals())
    sign, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    # Shift the decimal point: digits * 10^exponent == (digits + zeros) * 10^(exponent - zeros).
    trailing = draw(st.integers(0, 3))
    digits += "0" * trailing
    exponent -= trailing
    leading = "0" * draw(st.integers(0, 3))
    style = draw(st.sampled_from(["scientific", "plain", "point"]))
    minus = "-" if sign else draw(st.sampled_from(["", "", "+"]))
    if style == "scientific":
        e = draw(st.sampled_from(["e", "E"]))
        exp = f"{exponent:+d}" if draw(st.booleans()) else str(exponent)
        return f"{minus}{leading}{digits}{e}{exp}"
    if style == "point" and exponent < 0 and -exponent <= len(digits):
        point = len(digits) + exponent
        return f"{minus}{leading}{digits[:point] or '0'}.{digits[point:]}"
    return f"{minus}{format(value.copy_abs(), 'f')}"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


strings = st.text(max_size=20)
names = st.text(min_size=1, max_size=20)  # attribute names are never empty
binaries = st.binary(max_size=20)


def scalar_values() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        strings.map(lambda s: {"S": s}),
        decimals().map(lambda d: {"N": canonical_text(d)}),
        binaries.map(lambda b: {"B": b64(b)}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.just({"NULL": True}),
        st.lists(strings, min_size=1, max_size=5, unique=True).map(lambda v: {"SS": v}),
        st.lists(binaries, min_size=1, max_size=5, unique=True).map(
            lambda v: {"BS": [b64(b) for b in v]}
        ),
        st.lists(decimals(), min_size=1, max_size=5, unique=True).map(
            lambda v: {"NS": [canonical_text(d) for d in v]}
        ),
    )


def attribute_values() -> st.SearchStrategy[dict[str, Any]]:
    """Canonical (already valid) attribute values of every type, nested a few levels."""
    return st.recursive(
        scalar_values(),
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(lambda v: {"L": v}),
            st.dictionaries(names, children, max_size=4).map(lambda v: {"M": v}),
        ),
        max_leaves=12,
    )


# The generators themselves must produce what they promise, or the properties prove little.


@given(decimals())
def test_generated_numbers_lie_in_dynamodbs_range(value: Decimal) -> None:
    if value:
        assert EXPONENT_MIN <= value.adjusted() <= EXPONENT_MAX
        assert len(value.as_tuple().digits) <= 38


@given(decimals(), st.data())
def test_generated_spellings_denote_the_value_they_spell(
    value: Decimal, data: st.DataObject
) -> None:
    assert Decimal(data.draw(number_texts(value))) == value


@given(decimals())
def test_canonical_fixture_text_has_no_exponent_and_no_needless_zeros(value: Decimal) -> None:
    text = canonical_text(value)
    assert Decimal(text) == value
    assert "E" not in text
    assert not ("." in text and text.endswith("0"))
