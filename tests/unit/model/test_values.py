"""Attribute values: DynamoDB's validation messages word for word, equality, order and size."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.model.errors import SerializationException, ValidationException
from keeldb.model.limits import ITEM_BYTES_MAX
from keeldb.model.values import (
    check_item_size,
    compare_values,
    decode_binary,
    item_size,
    number_size,
    set_difference,
    set_union,
    validate_item,
    validate_value,
    value_size,
    value_type,
    values_equal,
)

INVALID = "One or more parameter values were invalid: "
NUMBER_CLASS = "com.amazon.coral.value.json.numbers.TruncatingBigNumber"  # DynamoDB's JSON numbers


def _validation_message(value: Any) -> str:
    with pytest.raises(ValidationException) as caught:
        validate_value(value)
    return caught.value.message


def _serialization_message(value: Any) -> str:
    with pytest.raises(SerializationException) as caught:
        validate_value(value)
    return caught.value.message


# --- valid values come back canonical -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ({"S": "x"}, {"S": "x"}),
        ({"S": ""}, {"S": ""}),
        ({"N": "1.50"}, {"N": "1.5"}),
        ({"N": "-0"}, {"N": "0"}),
        ({"B": "YWJj"}, {"B": "YWJj"}),
        ({"B": ""}, {"B": ""}),
        ({"BOOL": False}, {"BOOL": False}),
        ({"NULL": True}, {"NULL": True}),
        ({"SS": ["a", "", "b"]}, {"SS": ["a", "", "b"]}),
        ({"NS": ["1.0", "2e1", "-3"]}, {"NS": ["1", "20", "-3"]}),
        ({"BS": ["YQ==", ""]}, {"BS": ["YQ==", ""]}),
        ({"L": []}, {"L": []}),
        ({"M": {}}, {"M": {}}),
        (
            {"L": [{"N": "01"}, {"M": {"k": {"N": "1E+1"}}}]},
            {"L": [{"N": "1"}, {"M": {"k": {"N": "10"}}}]},
        ),
    ],
)
def test_valid_values_come_back_in_canonical_form(
    value: dict[str, Any], canonical: dict[str, Any]
) -> None:
    assert validate_value(value) == canonical


def test_members_set_to_null_and_unknown_members_are_absent() -> None:
    assert validate_value({"S": "a", "N": None}) == {"S": "a"}
    assert validate_value({"S": "a", "X": "ignored"}) == {"S": "a"}
    assert validate_value({"M": {"a": None, "b": {"S": "x"}}}) == {"M": {"b": {"S": "x"}}}


def test_validate_item_validates_every_attribute_and_drops_null_ones() -> None:
    item = validate_item({"pk": {"S": "k"}, "n": {"N": "007"}, "gone": None})
    assert item == {"pk": {"S": "k"}, "n": {"N": "7"}}
    with pytest.raises(ValidationException):
        validate_item({"pk": {"S": "k"}, "bad": {}})


# --- DynamoDB's messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [{}, {"a": ""}, {"S": None}, {"M": {"a": {}}}, {"L": [{}]}, {"L": [{"a": {}}]}]
)
def test_a_value_with_no_data_type_is_empty(value: dict[str, Any]) -> None:
    assert _validation_message(value) == (
        "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
    )


def test_a_value_with_two_data_types_is_refused() -> None:
    assert _validation_message({"S": "a", "N": "1"}) == (
        "Supplied AttributeValue has more than one datatypes set, "
        "must contain exactly one of the supported datatypes"
    )


def test_each_member_is_checked_before_the_number_of_data_types() -> None:
    assert _validation_message({"S": "a", "N": "b"}) == (
        "The parameter cannot be converted to a numeric value: b"
    )
    assert (
        _validation_message({"S": "", "N": ""})
        == "The parameter cannot be converted to a numeric value"
    )


def test_an_empty_number_text_gives_no_value_in_the_message() -> None:
    assert _validation_message({"N": ""}) == "The parameter cannot be converted to a numeric value"
    assert (
        _validation_message({"NS": ["1", ""]})
        == "The parameter cannot be converted to a numeric value"
    )
    assert (
        _validation_message({"NS": ["1", "b"]})
        == "The parameter cannot be converted to a numeric value: b"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"NULL": False}, "Null attribute value types must have the value of true"),
        ({"SS": []}, "An string set  may not be empty"),
        ({"NS": []}, "An number set  may not be empty"),
        ({"BS": []}, "Binary sets should not be empty"),
        ({"SS": ["a", "a"]}, "Input collection [a, a] contains duplicates."),
        ({"BS": ["Yg==", "Yg=="]}, "Input collection [Yg==, Yg==]of type BS contains duplicates."),
    ],
)
def test_invalid_values_get_dynamodb_parameter_messages(
    value: dict[str, Any], message: str
) -> None:
    assert _validation_message(value) == INVALID + message


def test_number_sets_are_duplicate_checked_by_value() -> None:
    for members in (["1", "1"], ["1", "1.0"], ["1e2", "100"], ["-0", "0"]):
        assert _validation_message({"NS": members}) == "Input collection contains duplicates"


def test_number_rules_apply_inside_sets_lists_and_maps() -> None:
    too_precise = "123456789012345678901234567890123456789"
    expected = "Attempting to store more than 38 significant digits in a Number"
    assert _validation_message({"NS": [too_precise]}) == expected
    assert _validation_message({"L": [{"N": too_precise}]}) == expected
    assert _validation_message({"M": {"a": {"N": too_precise}}}) == expected
    assert _validation_message({"N": "1e126"}) == (
        "Number overflow. Attempting to store a number with magnitude larger than supported range"
    )
    assert _validation_message({"N": "-1e-131"}) == (
        "Number underflow. Attempting to store a number with magnitude smaller than supported range"
    )


def _nested(wraps: int, kind: str = "M") -> dict[str, Any]:
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(wraps):
        value = {"M": {"n": value}} if kind == "M" else {"L": [value]}
    return value


def test_nesting_up_to_32_levels_is_accepted_counting_the_attribute_as_level_1() -> None:
    assert validate_value(_nested(31)) == _nested(31)
    assert validate_value(_nested(31, "L")) == _nested(31, "L")


def test_nesting_deeper_than_32_levels_is_refused() -> None:
    message = (
        "Nesting Levels have exceeded supported limits: "
        "Attributes in the item have nested levels beyond supported limit"
    )
    assert _validation_message(_nested(32)) == message
    assert _validation_message(_nested(32, "L")) == message
    assert _validation_message(_nested(40)) == message


# --- wire shapes (SerializationException) -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "Expected null"),
        (5, "Expected null"),
        ([], "Start of list found where not expected"),
        (
            {"S": 5},
            f"class {NUMBER_CLASS} can not be converted to an String",
        ),
        ({"S": True}, "class java.lang.Boolean can not be converted to an String"),
        ({"S": []}, "Start of list found where not expected"),
        ({"S": {}}, "Start of structure or map found where not expected."),
        (
            {"N": 5},
            f"class {NUMBER_CLASS} can not be converted to an String",
        ),
        (
            {"B": 5},
            f"class {NUMBER_CLASS} can not be converted to a Blob",
        ),
        ({"B": False}, "class java.lang.Boolean can not be converted to a Blob"),
        ({"BOOL": "maybe"}, "'MAYBE' can not be converted to an Boolean"),
        (
            {"BOOL": 1},
            f"class {NUMBER_CLASS} can not be converted to an Boolean",
        ),
        ({"L": "x"}, "Expected list or null"),
        ({"L": {}}, "Start of structure or map found where not expected."),
        ({"SS": "a"}, "Expected list or null"),
        ({"M": "x"}, "Expected map or null"),
        ({"M": []}, "Start of list found where not expected"),
        (
            {"SS": [1]},
            f"class {NUMBER_CLASS} can not be converted to an String",
        ),
    ],
)
def test_members_of_the_wrong_json_type_are_serialization_errors(value: Any, message: str) -> None:
    assert _serialization_message(value) == message


def test_booleans_may_be_spelled_as_strings_as_dynamodb_reads_them() -> None:
    assert validate_value({"BOOL": "true"}) == {"BOOL": True}
    assert validate_value({"BOOL": "No"}) == {"BOOL": False}
    assert validate_value({"NULL": "TRUE"}) == {"NULL": True}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "Base64 encoded length is expected a multiple of 4 bytes but found: 3"),
        ("YWJjZ", "Base64 encoded length is expected a multiple of 4 bytes but found: 5"),
        ("YW!j", "Invalid Base64 character: '!'"),
        ("Y=Jj", "Invalid Base64 character: '='"),
        ("Yh==", "Invalid last non-pad Base64 character dectected"),
        ("Y===", "Invalid last non-pad Base64 character dectected"),
        ("====", "Invalid last non-pad Base64 character dectected"),
        ("YQ=a", "Invalid Base64 character: '='"),
        ("YW\nj", "Invalid Base64 character: '\n'"),
        ("YW-_", "Invalid Base64 character: '-'"),
    ],
)
def test_invalid_base64_is_a_serialization_error(text: str, reason: str) -> None:
    expected = f"'{text}' can not be converted to a Blob: {reason}"
    assert _serialization_message({"B": text}) == expected
    assert _serialization_message({"BS": [text]}) == expected


def test_strings_must_have_a_utf8_form() -> None:
    with pytest.raises(SerializationException):
        validate_value({"S": "a\ud800"})
    with pytest.raises(SerializationException):
        validate_item({"\udc00": {"S": "x"}})


# --- reading values ------------------------------------------------------------------------------


def test_value_type_names_the_single_data_type() -> None:
    assert value_type({"SS": ["a"]}) == "SS"
    assert value_type({"NULL": True}) == "NULL"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"N": "1"}, {"N": "1.0"}, True),
        ({"N": "1"}, {"N": "2"}, False),
        ({"N": "1"}, {"S": "1"}, False),
        ({"S": "a"}, {"S": "a"}, True),
        ({"B": "YQ=="}, {"B": "YQ=="}, True),
        ({"SS": ["a", "b"]}, {"SS": ["b", "a"]}, True),
        ({"SS": ["a", "b"]}, {"SS": ["a"]}, False),
        ({"NS": ["1", "2"]}, {"NS": ["2.0", "1"]}, True),
        ({"BS": ["YQ==", "Yg=="]}, {"BS": ["Yg==", "YQ=="]}, True),
        ({"L": [{"N": "1"}, {"S": "x"}]}, {"L": [{"N": "1.0"}, {"S": "x"}]}, True),
        ({"L": [{"N": "1"}, {"S": "x"}]}, {"L": [{"S": "x"}, {"N": "1"}]}, False),
        ({"L": [{"N": "1"}]}, {"L": [{"N": "1"}, {"N": "1"}]}, False),
        (
            {"M": {"a": {"N": "1"}, "b": {"S": "x"}}},
            {"M": {"b": {"S": "x"}, "a": {"N": "1"}}},
            True,
        ),
        ({"M": {"a": {"N": "1"}}}, {"M": {"b": {"N": "1"}}}, False),
        ({"BOOL": True}, {"BOOL": True}, True),
        ({"BOOL": True}, {"BOOL": False}, False),
        ({"NULL": True}, {"NULL": True}, True),
    ],
)
def test_values_equal_follows_dynamodb_equality(
    a: dict[str, Any], b: dict[str, Any], equal: bool
) -> None:
    assert values_equal(a, b) is equal
    assert values_equal(b, a) is equal


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ({"S": "a"}, {"S": "b"}, -1),
        ({"S": "a"}, {"S": "a"}, 0),
        ({"S": "Z"}, {"S": "a"}, -1),
        ({"S": "a"}, {"S": "ab"}, -1),
        ({"S": "\uffff"}, {"S": "\U00010000"}, -1),  # UTF-8 order, not UTF-16 order
        ({"N": "10"}, {"N": "9"}, 1),
        ({"N": "-10"}, {"N": "-9"}, -1),
        ({"N": "1.0"}, {"N": "1"}, 0),
        ({"B": "AA=="}, {"B": "/w=="}, -1),  # 0x00 < 0xFF, unsigned
        ({"B": "gA=="}, {"B": "fw=="}, 1),  # 0x80 > 0x7F, unsigned
        ({"B": ""}, {"B": "AA=="}, -1),
    ],
)
def test_compare_values_orders_s_by_utf8_n_by_value_b_unsigned(
    a: dict[str, Any], b: dict[str, Any], order: int
) -> None:
    assert compare_values(a, b) == order
    assert compare_values(b, a) == -order


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"S": "1"}, {"N": "1"}),
        ({"BOOL": True}, {"BOOL": False}),
        ({"NULL": True}, {"NULL": True}),
        ({"SS": ["a"]}, {"SS": ["b"]}),
        ({"L": []}, {"L": []}),
        ({"M": {}}, {"M": {}}),
    ],
)
def test_compare_values_is_none_for_values_dynamodb_cannot_order(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    assert compare_values(a, b) is None


def test_decode_binary_returns_raw_bytes() -> None:
    assert decode_binary("AP8=") == b"\x00\xff"
    assert decode_binary("") == b""


# --- size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 1),
        ("-0", 1),
        ("1", 2),  # pairs: 01 -> exponent byte + 1
        ("15", 2),  # 15
        ("100", 2),  # 01 (00 trimmed)
        ("1.5", 3),  # 01|50
        ("12345", 4),  # 01|23|45
        ("123456", 4),  # 12|34|56
        ("0.5", 2),  # .50
        ("0.05", 2),  # .05
        ("-1", 3),  # negatives carry one more byte
        ("-15", 3),
        ("12345678901234567890123456789012345678", 20),  # 38 digits, 19 pairs
        ("1.2345678901234567890123456789012345678", 21),  # 38 digits, 01|23|...|78 -> 20 pairs
    ],
)
def test_number_size_counts_base_100_digit_pairs(text: str, size: int) -> None:
    assert number_size(text) == size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "abc"}, 3),
        ({"S": ""}, 0),
        ({"S": "é"}, 2),
        ({"S": "\U0001f600"}, 4),
        ({"B": "YWJj"}, 3),
        ({"B": ""}, 0),
        ({"BOOL": True}, 1),
        ({"NULL": True}, 1),
        ({"SS": ["a", "bc", ""]}, 3),
        ({"NS": ["1", "-1", "1.5"]}, 2 + 3 + 3),
        ({"BS": ["YQ==", "YWI="]}, 3),
        ({"L": []}, 3),
        ({"M": {}}, 3),
        ({"L": [{"S": "ab"}, {"N": "1"}]}, 3 + (1 + 2) + (1 + 2)),
        ({"M": {"k": {"S": "ab"}, "kk": {"BOOL": True}}}, 3 + (1 + 1 + 2) + (1 + 2 + 1)),
        ({"M": {"l": {"L": [{"NULL": True}]}}}, 3 + (1 + 1 + (3 + 1 + 1))),
    ],
)
def test_value_size_follows_the_item_size_rules(value: dict[str, Any], size: int) -> None:
    assert value_size(value) == size


def test_item_size_adds_attribute_name_lengths_in_utf8() -> None:
    item = {
        "id": {"S": "abc"},  # 2 + 3
        "n": {"N": "12345"},  # 1 + 4
        "flag": {"BOOL": True},  # 4 + 1
        "l": {"L": [{"S": "xy"}]},  # 1 + 3 + 1 + 2
        "ñ": {"NULL": True},  # 2 + 1
    }
    assert item_size(item) == 5 + 5 + 5 + 7 + 3
    assert item_size({}) == 0


def test_check_item_size_accepts_exactly_400_kb_and_refuses_one_byte_more() -> None:
    name = "a"
    at_limit = {name: {"S": "x" * (ITEM_BYTES_MAX - 1)}}
    assert check_item_size(at_limit) == ITEM_BYTES_MAX
    over = {name: {"S": "x" * ITEM_BYTES_MAX}}
    with pytest.raises(ValidationException) as caught:
        check_item_size(over)
    assert caught.value.message == "Item size has exceeded the maximum allowed size"
    with pytest.raises(ValidationException) as caught:
        check_item_size(over, update=True)
    assert caught.value.message == "Item size to update has exceeded the maximum allowed size"


# --- attribute names and null members ------------------------------------------------------------


def test_attribute_names_must_be_1_to_65535_utf8_bytes() -> None:
    assert validate_item({"a" * 65535: {"S": "x"}}) == {"a" * 65535: {"S": "x"}}
    with pytest.raises(ValidationException) as caught:
        validate_item({"": {"S": "x"}})
    assert caught.value.message == "Empty attribute name"
    with pytest.raises(ValidationException) as caught:
        validate_item({"é" * 32768: {"S": "x"}})
    assert caught.value.message == "Attribute name is too large, must be less than 65536 bytes"
    with pytest.raises(ValidationException) as caught:
        validate_value({"M": {"": {"S": "x"}}})
    assert caught.value.message == "Empty attribute name"


def test_null_members_of_sets_and_lists_are_refused() -> None:
    assert _validation_message({"SS": ["a", None]}) == (
        INVALID + "An string set may not have a null string as a member"
    )
    assert (
        _validation_message({"NS": ["1", None]})
        == "The parameter cannot be converted to a numeric value"
    )
    assert (
        _validation_message({"BS": ["YQ==", None]})
        == "The supplied Item contains a null AttributeValue"
    )
    assert _validation_message({"L": [None]}) == (
        "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
    )


def test_set_union_adds_only_members_not_already_present() -> None:
    assert set_union({"SS": ["a", "b"]}, {"SS": ["b", "c", "c"]}) == {"SS": ["a", "b", "c"]}
    numbers = set_union(validate_value({"NS": ["1", "2"]}), validate_value({"NS": ["1.0", "3"]}))
    assert numbers == {"NS": ["1", "2", "3"]}
    assert set_union({"BS": ["YQ=="]}, {"BS": ["YQ==", "Yg=="]}) == {"BS": ["YQ==", "Yg=="]}


def test_set_difference_removes_members_and_leaves_no_empty_set() -> None:
    assert set_difference({"SS": ["a", "b"]}, {"SS": ["b", "z"]}) == {"SS": ["a"]}
    numbers = set_difference(validate_value({"NS": ["1", "2"]}), validate_value({"NS": ["2.0"]}))
    assert numbers == {"NS": ["1"]}
    assert set_difference({"SS": ["a"]}, {"SS": ["a"]}) is None
