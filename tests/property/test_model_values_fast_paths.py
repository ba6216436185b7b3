"""The short paths of item validation and sizing agree with the general functions: the same
canonical item, the same size, and for bad input the same error type and message."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.model.errors import ClientError
from keeldb.model.values import (
    attribute_size,
    check_attribute_name,
    item_size,
    validate_item,
    validate_item_sized,
    validate_value,
    value_size,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_model_strategies import attribute_values

# Wire values as clients send them, good and bad: one-member strings (ASCII or not, lone
# surrogates included), other members, several members, nulls, and JSON of the wrong shape.
wire_members = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=st.characters(codec="ascii"), max_size=8),
    st.sampled_from(["\ud800", "é", "", "1", "x" * 3]),
    st.none(),
    st.integers(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=3),
)
wire_values = st.one_of(
    attribute_values(),
    st.dictionaries(
        st.sampled_from(["S", "N", "B", "BOOL", "NULL", "SS", "X"]), wire_members, max_size=3
    ),
    st.none(),
    st.text(max_size=3),
    st.integers(),
    st.lists(st.integers(), max_size=2),
)
wire_names = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "é", "\ud800", "a" * 65535, "a" * 65536, "é" * 16384, "é" * 40000]),
)
wire_items = st.dictionaries(wire_names, wire_values, max_size=6)


def reference_validate(item: Any) -> tuple[dict[str, Any], int]:
    """Validation and size the long way: every name, then its value, then the sum."""
    out = {}
    for name, value in item.items():
        if value is None:
            continue
        out[check_attribute_name(name)] = validate_value(value)
    size = sum(len(n.encode("utf-8")) + value_size(v) for n, v in out.items())
    return out, size


def outcome(fn: Any, item: Any) -> Any:
    try:
        return ("ok", fn(item))
    except ClientError as error:
        return ("error", type(error).__name__, error.message)


@settings(max_examples=400)
@given(wire_items)
def test_fused_validation_answers_as_the_general_functions(item: dict[str, Any]) -> None:
    assert outcome(validate_item_sized, item) == outcome(reference_validate, item)


@settings(max_examples=200)
@given(wire_items)
def test_validate_item_is_the_first_half_of_the_fused_answer(item: dict[str, Any]) -> None:
    expected = outcome(reference_validate, item)
    got = outcome(validate_item, item)
    if expected[0] == "ok":
        assert got == ("ok", expected[1][0])
    else:
        assert got == expected


@settings(max_examples=200)
@given(st.dictionaries(st.text(min_size=1, max_size=6), attribute_values(), max_size=6))
def test_item_size_is_the_sum_of_attribute_sizes(item: dict[str, Any]) -> None:
    expected = sum(len(n.encode("utf-8")) + value_size(v) for n, v in item.items())
    assert item_size(item) == expected
    assert sum(attribute_size(n, v) for n, v in item.items()) == expected


def test_non_ascii_strings_are_sized_in_utf8_bytes() -> None:
    assert attribute_size("é", {"S": "€"}) == 2 + 3
    assert validate_item_sized({"na": {"S": "€€"}})[1] == 2 + 6


def test_a_map_holding_an_s_member_is_not_sized_as_a_string() -> None:
    value = {"M": {"S": {"S": "abc"}}}
    assert attribute_size("m", value) == 1 + value_size(value)


def test_a_lone_surrogate_string_is_refused_by_the_fused_validation() -> None:
    with pytest.raises(ClientError) as caught:
        validate_item_sized({"a": {"S": "\ud800"}})
    assert "lone surrogate" in caught.value.message
