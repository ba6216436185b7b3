"""Key encoding preserves DynamoDB's order for S, N and B, round-trips, and composes."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from keeldb.model.keys import (
    decode_item_key,
    decode_key_value,
    encode_key_value,
    item_key,
    partition_bounds,
    sort_key_bounds,
)
from keeldb.model.numbers import normalize_number

sys.path.insert(0, str(Path(__file__).parent))
from test_model_strategies import b64, decimals, number_texts


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


@given(st.text(), st.text())
def test_string_encoding_order_is_utf8_byte_order(a: str, b: str) -> None:
    ea, eb = encode_key_value({"S": a}), encode_key_value({"S": b})
    ua, ub = a.encode("utf-8"), b.encode("utf-8")
    assert _sign((ea > eb) - (ea < eb)) == _sign((ua > ub) - (ua < ub))


@given(st.binary(), st.binary())
def test_binary_encoding_order_is_unsigned_byte_order(a: bytes, b: bytes) -> None:
    ea, eb = encode_key_value({"B": b64(a)}), encode_key_value({"B": b64(b)})
    assert _sign((ea > eb) - (ea < eb)) == _sign((a > b) - (a < b))


@given(decimals(), decimals())
def test_number_encoding_order_is_numeric_order(a: Decimal, b: Decimal) -> None:
    ea, eb = encode_key_value({"N": format(a, "f")}), encode_key_value({"N": format(b, "E")})
    assert _sign((ea > eb) - (ea < eb)) == _sign((a > b) - (a < b))


@given(number_texts())
def test_numbers_round_trip_to_their_canonical_text(text: str) -> None:
    assert decode_key_value(encode_key_value({"N": text}), "N") == {"N": normalize_number(text)}


@given(st.text())
def test_strings_round_trip(text: str) -> None:
    assert decode_key_value(encode_key_value({"S": text}), "S") == {"S": text}


@given(st.binary())
def test_binaries_round_trip(raw: bytes) -> None:
    assert decode_key_value(encode_key_value({"B": b64(raw)}), "B") == {"B": b64(raw)}


KEY_VALUES_BY_TYPE = {
    "S": st.text(max_size=8).map(lambda s: ("S", {"S": s}, s.encode("utf-8"))),
    "B": st.binary(max_size=8).map(lambda b: ("B", {"B": b64(b)}, b)),
    "N": decimals().map(lambda d: ("N", {"N": format(d, "f")}, d)),
}
key_values = st.one_of(*KEY_VALUES_BY_TYPE.values())


@given(st.data())
def test_composite_keys_sort_as_tuples(data: st.DataObject) -> None:
    hashes = KEY_VALUES_BY_TYPE[data.draw(st.sampled_from(["S", "N", "B"]))]
    ranges = KEY_VALUES_BY_TYPE[data.draw(st.sampled_from(["S", "N", "B"]))]
    (_, h1, k1), (_, h2, k2) = data.draw(hashes), data.draw(hashes)
    (_, r1, s1), (_, r2, s2) = data.draw(ranges), data.draw(ranges)
    e1 = encode_key_value(h1) + encode_key_value(r1)
    e2 = encode_key_value(h2) + encode_key_value(r2)
    t1, t2 = (k1, s1), (k2, s2)
    assert _sign((e1 > e2) - (e1 < e2)) == _sign((t1 > t2) - (t1 < t2))


@given(key_values, key_values)
def test_item_keys_decode_back_to_their_key_values(hash_kv: tuple, range_kv: tuple) -> None:
    hash_type, hash_value, _ = hash_kv
    range_type, range_value, _ = range_kv
    key = item_key("table-id", 0, hash_value, range_value)
    decoded_hash, decoded_range, end = decode_item_key(key, "table-id", 0, hash_type, range_type)
    assert end == len(key)
    assert encode_key_value(decoded_hash) == encode_key_value(hash_value)
    assert encode_key_value(decoded_range) == encode_key_value(range_value)


@given(st.text(max_size=4), st.lists(st.text(max_size=4), max_size=12), st.text(max_size=3))
def test_begins_with_bounds_select_exactly_the_prefixed_sort_keys(
    partition: str, sort_keys: list[str], prefix: str
) -> None:
    rows = sorted((item_key("t", 0, {"S": partition}, {"S": s}), s) for s in set(sort_keys))
    start, end = sort_key_bounds("t", 0, {"S": partition}, "begins_with", ({"S": prefix},))
    found = [s for key, s in rows if start <= key < end]
    assert found == sorted(
        (s for s in set(sort_keys) if s.startswith(prefix)), key=lambda s: s.encode()
    )
    whole = partition_bounds("t", 0, {"S": partition})
    assert whole[0] <= start <= end <= whole[1]


@given(decimals(), st.lists(decimals(), max_size=12), st.sampled_from(["=", "<", "<=", ">", ">="]))
def test_comparison_bounds_select_exactly_the_matching_number_sort_keys(
    operand: Decimal, sort_keys: list[Decimal], operator: str
) -> None:
    unique = sorted(set(sort_keys))
    rows = sorted((item_key("t", 0, {"N": "1"}, {"N": format(d, "f")}), d) for d in unique)
    start, end = sort_key_bounds("t", 0, {"N": "1"}, operator, ({"N": format(operand, "f")},))
    found = [d for key, d in rows if start <= key < end]
    keep = {
        "=": lambda d: d == operand,
        "<": lambda d: d < operand,
        "<=": lambda d: d <= operand,
        ">": lambda d: d > operand,
        ">=": lambda d: d >= operand,
    }[operator]
    assert found == [d for d in unique if keep(d)]


@given(st.binary(max_size=24), st.sampled_from(["S", "N", "B"]))
def test_decoding_arbitrary_bytes_gives_a_key_value_or_value_error(data: bytes, type_: str) -> None:
    try:
        value = decode_key_value(data, type_)
    except ValueError:
        return
    assert encode_key_value(value) == data
