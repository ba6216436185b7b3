"""Properties of number normalisation and arithmetic, checked against exact Decimal values."""

from __future__ import annotations

import sys
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeldb.model.errors import ValidationException
from keeldb.model.numbers import (
    NOT_A_NUMBER_MESSAGE,
    OVERFLOW_MESSAGE,
    PRECISION_MESSAGE,
    UNDERFLOW_MESSAGE,
    add_numbers,
    canonical_parts,
    compare_numbers,
    normalize_number,
    number_parts,
    subtract_numbers,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_model_strategies import decimals, number_texts

# Wide enough that no value a test builds (exponents up to 10**6) overflows the expectation itself.
EXACT = Context(prec=1000, Emax=10**7, Emin=-(10**7))


def _expected_error(value: Decimal) -> str | None:
    """Which rule, if any, a value breaks: the obvious reading of DynamoDB's documented range."""
    if value == 0:
        return None
    magnitude = value.copy_abs()
    if magnitude >= Decimal("1E126"):
        return OVERFLOW_MESSAGE
    if magnitude < Decimal("1E-130"):
        return UNDERFLOW_MESSAGE
    if len(value.normalize(EXACT).as_tuple().digits) > 38:
        return PRECISION_MESSAGE
    return None


@given(number_texts())
def test_normalize_number_keeps_the_value(text: str) -> None:
    assert Decimal(normalize_number(text)) == Decimal(text)


@given(number_texts())
def test_normalize_number_is_idempotent(text: str) -> None:
    once = normalize_number(text)
    assert normalize_number(once) == once


@given(decimals(), st.data())
def test_every_spelling_of_a_value_has_the_same_canonical_text(
    value: Decimal, data: st.DataObject
) -> None:
    first = normalize_number(data.draw(number_texts(value)))
    second = normalize_number(data.draw(number_texts(value)))
    assert first == second


@given(number_texts())
def test_canonical_text_is_plain_and_minimal(text: str) -> None:
    canonical = normalize_number(text)
    assert "e" not in canonical.lower()
    assert not canonical.startswith("+")
    body = canonical.lstrip("-")
    assert body == "0" or not canonical.startswith("-0") or body.startswith("0.")
    assert not (body.startswith("0") and len(body) > 1 and not body.startswith("0."))
    if "." in body:
        assert not body.endswith("0")
        assert not body.endswith(".")
    assert canonical != "-0"


@given(st.text(alphabet="0123456789.eE+- x", max_size=12))
def test_any_text_either_normalises_to_its_value_or_gets_the_rule_it_breaks(text: str) -> None:
    try:
        value = Decimal(text.strip()) if text.strip() == text and " " not in text else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        with pytest.raises(ValidationException) as caught:
            normalize_number(text)
        assert caught.value.message.startswith(NOT_A_NUMBER_MESSAGE)
        return
    expected = _expected_error(value)
    if expected is None:
        assert Decimal(normalize_number(text)) == value
    else:
        with pytest.raises(ValidationException) as caught:
            normalize_number(text)
        assert caught.value.message == expected


@given(decimals(), decimals())
def test_add_and_subtract_agree_with_exact_decimal_arithmetic(a: Decimal, b: Decimal) -> None:
    for operation, exact in (
        (add_numbers, EXACT.add(a, b)),
        (subtract_numbers, EXACT.subtract(a, b)),
    ):
        expected = _expected_error(exact)
        try:
            result = operation(format(a, "f"), format(b, "f"))
        except ValidationException as error:
            assert error.message == expected
        else:
            assert expected is None
            assert Decimal(result) == exact
            assert normalize_number(result) == result


@given(decimals(), decimals())
def test_compare_numbers_agrees_with_decimal_order(a: Decimal, b: Decimal) -> None:
    expected = (a > b) - (a < b)
    assert compare_numbers(format(a, "f"), format(b, "E")) == expected


@given(number_texts())
def test_number_parts_read_from_the_text_agree_with_the_decimal_value(text: str) -> None:
    value = Decimal(text)
    parts = number_parts(text)
    if value == 0:
        assert parts is None
        return
    assert parts is not None
    negative, digits, adjusted = parts
    assert negative == (value < 0)
    assert digits == "".join(map(str, value.as_tuple().digits)).strip("0")
    assert adjusted == value.adjusted()
    canonical = normalize_number(text)
    assert canonical_parts(canonical) == parts


@given(
    st.sampled_from(["0", "1", "-2.5", "0.0001", "99"]),
    st.integers(min_value=-(10**30), max_value=10**30),
)
def test_any_exponent_gives_the_value_or_the_range_error(mantissa: str, exponent: int) -> None:
    text = f"{mantissa}e{exponent}"
    value = Decimal(mantissa).scaleb(exponent, EXACT) if abs(exponent) < 10**6 else None
    try:
        canonical = normalize_number(text)
    except ValidationException as error:
        if value is not None:
            assert error.message == _expected_error(value)
        else:
            assert error.message == (OVERFLOW_MESSAGE if exponent > 0 else UNDERFLOW_MESSAGE)
        return
    if value is None:
        assert Decimal(mantissa) == 0
        assert canonical == "0"
    else:
        assert Decimal(canonical) == value
