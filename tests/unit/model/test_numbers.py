"""DynamoDB numbers: canonical text, the exact error messages, and exact arithmetic."""

from __future__ import annotations

import decimal

import pytest

from keeldb.model.errors import ValidationException
from keeldb.model.numbers import (
    NOT_A_NUMBER_MESSAGE,
    OVERFLOW_MESSAGE,
    PRECISION_MESSAGE,
    UNDERFLOW_MESSAGE,
    add_numbers,
    canonical_parts,
    compare_numbers,
    from_decimal,
    normalize_number,
    number_parts,
    subtract_numbers,
    to_decimal,
)

LARGEST = "9.9999999999999999999999999999999999999E+125"
LARGEST_PLAIN = "9" * 38 + "0" * 88
SMALLEST = "1E-130"
SMALLEST_PLAIN = "0." + "0" * 129 + "1"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1.50", "1.5"),
        ("-0", "0"),
        ("0.000", "0"),
        ("-0.0e5", "0"),
        ("1E+2", "100"),
        ("1e2", "100"),
        ("0.00012", "0.00012"),
        ("1.2e-4", "0.00012"),
        ("00012.3400", "12.34"),
        ("-7", "-7"),
        ("-007.10", "-7.1"),
        (".5", "0.5"),
        ("5.", "5"),
        ("+3", "3"),
        ("123456789012345678901234567890.12345678", "123456789012345678901234567890.12345678"),
        ("1" + "0" * 50, "1" + "0" * 50),
        (
            "12345678901234567890123456789012345678e10",
            "12345678901234567890123456789012345678" + "0" * 10,
        ),
        (LARGEST, LARGEST_PLAIN),
        ("-" + LARGEST, "-" + LARGEST_PLAIN),
        (SMALLEST, SMALLEST_PLAIN),
        ("-1e-130", "-" + SMALLEST_PLAIN),
        ("0.1e-129", SMALLEST_PLAIN),
    ],
)
def test_normalize_number_returns_dynamodb_canonical_plain_notation(
    text: str, canonical: str
) -> None:
    assert normalize_number(text) == canonical


def test_canonical_numbers_never_use_an_exponent() -> None:
    for text in ("1e100", "1e-100", "-4.5e60", "3e-7"):
        assert "e" not in normalize_number(text).lower()


@pytest.mark.parametrize(
    "text",
    [
        "b",
        "1.2.3",
        "1e",
        "e5",
        "--1",
        "1-",
        "NaN",
        "Infinity",
        "-inf",
        "1_000",
        " 1",
        "1 ",
        "0x10",
        "١",
        "1e+",
        ".",
    ],
)
def test_text_that_is_no_number_is_refused_with_the_text_in_the_message(text: str) -> None:
    with pytest.raises(ValidationException) as caught:
        normalize_number(text)
    assert caught.value.message == f"{NOT_A_NUMBER_MESSAGE}: {text}"
    assert caught.value.message.startswith("The parameter cannot be converted to a numeric value: ")


def test_more_than_38_significant_digits_is_refused() -> None:
    for text in (
        "123456789012345678901234567890123456789",
        "-1.23456789012345678901234567890123456789",
    ):
        with pytest.raises(ValidationException) as caught:
            normalize_number(text)
        assert (
            caught.value.message
            == "Attempting to store more than 38 significant digits in a Number"
        )


def test_38_significant_digits_are_accepted_and_zeros_around_them_do_not_count() -> None:
    digits = "12345678901234567890123456789012345678"
    assert normalize_number(digits) == digits
    assert normalize_number("000" + digits + ".000") == digits
    assert normalize_number("0.000" + digits) == "0.000" + digits


@pytest.mark.parametrize("text", ["1e126", "-1e126", "10" + "0" * 125, "1E+200", "99.9e125"])
def test_magnitude_above_the_range_is_an_overflow(text: str) -> None:
    with pytest.raises(ValidationException) as caught:
        normalize_number(text)
    assert caught.value.message == (
        "Number overflow. Attempting to store a number with magnitude larger than supported range"
    )


@pytest.mark.parametrize("text", ["1e-131", "-1e-131", "0.99e-130", "1E-999"])
def test_magnitude_below_the_range_is_an_underflow(text: str) -> None:
    with pytest.raises(ValidationException) as caught:
        normalize_number(text)
    assert caught.value.message == (
        "Number underflow. Attempting to store a number with magnitude smaller than supported range"
    )


def test_range_is_checked_before_precision() -> None:
    with pytest.raises(ValidationException) as caught:
        normalize_number("1." + "1" * 40 + "e200")
    assert caught.value.message == OVERFLOW_MESSAGE
    with pytest.raises(ValidationException) as caught:
        normalize_number("1." + "1" * 40 + "e-200")
    assert caught.value.message == UNDERFLOW_MESSAGE


def test_zero_with_any_exponent_is_zero_not_an_error() -> None:
    assert normalize_number("0e999") == "0"
    assert normalize_number("0e-999") == "0"


def test_to_decimal_is_exact_and_checks_the_rules() -> None:
    assert to_decimal("1.50") == decimal.Decimal("1.5")
    assert to_decimal(LARGEST) == decimal.Decimal(LARGEST)
    with pytest.raises(ValidationException):
        to_decimal("1e126")
    with pytest.raises(ValidationException):
        to_decimal("x")


def test_from_decimal_canonicalises_and_refuses_what_dynamodb_cannot_store() -> None:
    assert from_decimal(decimal.Decimal("2.500")) == "2.5"
    with pytest.raises(ValidationException):
        from_decimal(decimal.Decimal("NaN"))
    with pytest.raises(ValidationException) as caught:
        from_decimal(decimal.Decimal("1e126"))
    assert caught.value.message == OVERFLOW_MESSAGE


@pytest.mark.parametrize(
    ("a", "b", "total"),
    [
        ("1", "2", "3"),
        ("0.1", "0.2", "0.3"),
        ("1.5", "-1.5", "0"),
        ("-5", "3", "-2"),
        ("1E+2", "0.01", "100.01"),
        ("1e-130", "1e-130", "0." + "0" * 129 + "2"),
        ("12345678901234567890123456789012345678", "1", "12345678901234567890123456789012345679"),
    ],
)
def test_add_numbers_is_exact_and_canonical(a: str, b: str, total: str) -> None:
    assert add_numbers(a, b) == total
    assert add_numbers(b, a) == total


def test_subtract_numbers_is_exact_and_canonical() -> None:
    assert subtract_numbers("0.3", "0.1") == "0.2"
    assert subtract_numbers("1", "3") == "-2"
    assert subtract_numbers("-1", "-1") == "0"
    assert subtract_numbers("1e125", "-1e125") == "2" + "0" * 125


def test_arithmetic_past_the_largest_number_is_an_overflow() -> None:
    with pytest.raises(ValidationException) as caught:
        add_numbers(LARGEST, "1E+88")
    assert caught.value.message == OVERFLOW_MESSAGE
    with pytest.raises(ValidationException) as caught:
        subtract_numbers("-" + LARGEST, "1E+88")
    assert caught.value.message == OVERFLOW_MESSAGE


def test_arithmetic_needing_more_than_38_digits_is_a_precision_error() -> None:
    with pytest.raises(ValidationException) as caught:
        add_numbers("1e20", "1e-20")
    assert caught.value.message == PRECISION_MESSAGE
    with pytest.raises(ValidationException) as caught:
        add_numbers("12345678901234567890123456789012345678", "0.1")
    assert caught.value.message == PRECISION_MESSAGE


def test_arithmetic_below_the_smallest_number_is_an_underflow() -> None:
    with pytest.raises(ValidationException) as caught:
        subtract_numbers("1.1e-130", "1e-130")
    assert caught.value.message == UNDERFLOW_MESSAGE


def test_arithmetic_refuses_operands_that_are_no_numbers() -> None:
    with pytest.raises(ValidationException) as caught:
        add_numbers("1", "one")
    assert caught.value.message == f"{NOT_A_NUMBER_MESSAGE}: one"


def test_arithmetic_ignores_the_global_decimal_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.traps[decimal.Inexact] = True
        assert add_numbers("1.00001", "2") == "3.00001"
        assert subtract_numbers("123456789", "1") == "123456788"
        assert normalize_number("1.23456789") == "1.23456789"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1", "2", -1),
        ("2", "1", 1),
        ("1.0", "1", 0),
        ("-0", "0", 0),
        ("-10", "-9", -1),
        ("1e2", "99.99", 1),
        ("-1e-130", "1e-130", -1),
        (LARGEST, "1e125", 1),
    ],
)
def test_compare_numbers_orders_by_value(a: str, b: str, expected: int) -> None:
    assert compare_numbers(a, b) == expected
    assert compare_numbers(b, a) == -expected


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("1", (False, "1", 0)),
        ("-12.5", (True, "125", 1)),
        ("100", (False, "1", 2)),
        ("0.001", (False, "1", -3)),
        ("0", None),
        ("1.50", None),  # not canonical
        ("007", None),
        ("1e2", None),
        ("-0", None),
        ("1" * 39, None),  # too many digits to be a stored number
    ],
)
def test_canonical_parts_reads_canonical_texts_only(text: str, parts: object) -> None:
    assert canonical_parts(text) == parts


def test_number_parts_reads_any_valid_text() -> None:
    assert number_parts("1.50") == (False, "15", 0)
    assert number_parts("-1E+2") == (True, "1", 2)
    assert number_parts("0.0") is None
    with pytest.raises(ValidationException):
        number_parts("1e126")


def test_exponents_beyond_decimals_own_range_are_decided_by_their_sign() -> None:
    for text in ("1e999999999999999999999999", "-5E+99999999999999999999"):
        with pytest.raises(ValidationException) as caught:
            normalize_number(text)
        assert caught.value.message == OVERFLOW_MESSAGE
    with pytest.raises(ValidationException) as caught:
        normalize_number("1e-999999999999999999999999")
    assert caught.value.message == UNDERFLOW_MESSAGE
    assert normalize_number("0.0e999999999999999999999999") == "0"


def test_parsing_is_unaffected_by_a_context_that_does_not_trap() -> None:
    with decimal.localcontext() as ctx:
        ctx.traps[decimal.InvalidOperation] = False
        with pytest.raises(ValidationException) as caught:
            normalize_number("1e999999999999999999999")
        assert caught.value.message == OVERFLOW_MESSAGE
        assert normalize_number("1e-5") == "0.00001"
