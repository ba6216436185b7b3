"""Store keys: order-preserving key encoding, the physical layout and the range helpers."""

from __future__ import annotations

import base64
import itertools
from decimal import Decimal
from typing import Any

import pytest

from keeldb.model.errors import ValidationException
from keeldb.model.keys import (
    HASH_SPACE,
    PARTITION_HASH_BYTES,
    check_key_value,
    decode_item_key,
    decode_key_value,
    encode_key_value,
    hash_range_bounds,
    index_bounds,
    index_item_key,
    item_key,
    key_after,
    partition_bounds,
    partition_hash,
    prefix_end,
    scan_segment_bounds,
    sort_key_bounds,
    table_bounds,
    table_prefix,
)
from keeldb.model.values import compare_values


def _b(raw: bytes) -> dict[str, str]:
    return {"B": base64.b64encode(raw).decode()}


NUMBERS = [
    "-9.9999999999999999999999999999999999999E+125",
    "-1e125",
    "-123.45",
    "-100",
    "-99",
    "-10.5",
    "-10",
    "-9.99",
    "-1.01",
    "-1",
    "-0.99",
    "-0.1",
    "-1e-130",
    "0",
    "1e-130",
    "1.1e-130",
    "0.001",
    "0.01",
    "0.1",
    "0.11",
    "0.2",
    "1",
    "1.000000000000000000000000000000000001",
    "1.01",
    "1.1",
    "2",
    "9.99",
    "10",
    "10.01",
    "11",
    "99",
    "100",
    "101",
    "12345678901234567890123456789012345678",
    "1e125",
    "9.9999999999999999999999999999999999999E+125",
]
STRINGS = [
    "",
    "\x00",
    "\x00\x00",
    "\x00\x01",
    "\x01",
    "A",
    "Z",
    "a",
    "a\x00",
    "a\x00b",
    "a\x01",
    "ab",
    "b",
    "é",
    "\uffff",
    "\U00010000",
    "\U0010ffff",
]
BINARIES = [
    b"",
    b"\x00",
    b"\x00\x00",
    b"\x00\xff",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
]


def test_numbers_encode_in_numeric_order() -> None:
    ordered = sorted(NUMBERS, key=Decimal)
    assert ordered == NUMBERS  # the fixture itself is in numeric order
    encodings = [encode_key_value({"N": n}) for n in NUMBERS]
    assert encodings == sorted(encodings)
    assert len(set(encodings)) == len(encodings)


def test_strings_encode_in_utf8_byte_order() -> None:
    ordered = sorted(STRINGS, key=lambda s: s.encode("utf-8"))
    encodings = [encode_key_value({"S": s}) for s in ordered]
    assert encodings == sorted(encodings)
    assert len(set(encodings)) == len(encodings)


def test_binaries_encode_in_unsigned_byte_order() -> None:
    ordered = sorted(BINARIES)
    encodings = [encode_key_value(_b(raw)) for raw in ordered]
    assert encodings == sorted(encodings)


@pytest.mark.parametrize(
    ("value", "type_"),
    [({"N": n}, "N") for n in NUMBERS]
    + [({"S": s}, "S") for s in STRINGS]
    + [(_b(b), "B") for b in BINARIES],
)
def test_decode_key_value_inverts_encode_key_value(value: dict[str, Any], type_: str) -> None:
    decoded = decode_key_value(encode_key_value(value), type_)
    assert compare_values(decoded, value) == 0
    assert decoded == ({"N": decoded["N"]} if type_ == "N" else value)


def test_equal_numbers_in_different_spellings_encode_the_same() -> None:
    assert encode_key_value({"N": "1"}) == encode_key_value({"N": "1.000"})
    assert encode_key_value({"N": "1e2"}) == encode_key_value({"N": "100"})
    assert decode_key_value(encode_key_value({"N": "1E+2"}), "N") == {"N": "100"}


def test_no_encoding_is_a_proper_prefix_of_another() -> None:
    encodings = (
        [encode_key_value({"N": n}) for n in NUMBERS]
        + [encode_key_value({"S": s}) for s in STRINGS]
        + [encode_key_value(_b(b)) for b in BINARIES]
    )
    for type_group in (encodings[: len(NUMBERS)], encodings[len(NUMBERS) :]):
        for a in type_group:
            for b in type_group:
                assert a == b or not b.startswith(a)


def test_composite_keys_sort_as_tuples_even_when_the_sort_key_starts_with_0xff() -> None:
    hashes = [{"S": "a"}, {"S": "a\x00"}, {"S": "b"}]
    ranges = [_b(b""), _b(b"\x00"), _b(b"\xff"), _b(b"\xff\xff")]
    pairs = [(h, r) for h in hashes for r in ranges]
    keys = [encode_key_value(h) + encode_key_value(r) for h, r in pairs]
    assert keys == sorted(keys)


def test_decoding_garbage_raises_value_error() -> None:
    for data, type_ in [(b"a", "S"), (b"a\x00\x02", "S"), (b"\x99", "N"), (b"\x60\x82", "N")]:
        with pytest.raises(ValueError):
            decode_key_value(data, type_)
    with pytest.raises(ValueError):
        decode_key_value(encode_key_value({"S": "a"}) + b"x", "S")


def test_partition_hash_is_eight_stable_bytes() -> None:
    digest = partition_hash({"S": "a"})
    assert len(digest) == PARTITION_HASH_BYTES == 8
    # Pinned: stored keys depend on it, so it must never change between versions or machines.
    assert digest.hex() == "126094aa598c0979"
    assert partition_hash({"N": "1.0"}) == partition_hash({"N": "1"})
    assert partition_hash({"S": "1"}) != partition_hash({"N": "1"})
    assert partition_hash({"S": "YQ=="}) != partition_hash({"B": "YQ=="})


def test_item_key_layout_is_table_index_hash_partition_key_sort_key() -> None:
    pk, sk = {"S": "user"}, {"N": "42"}
    key = item_key("t1", 3, pk, sk)
    prefix = table_prefix("t1")
    assert key.startswith(prefix)
    rest = key[len(prefix) :]
    assert rest[:2] == (3).to_bytes(2, "big")
    assert rest[2:10] == partition_hash(pk)
    assert rest[10:] == encode_key_value(pk) + encode_key_value(sk)
    assert item_key("t1", 0, pk, None) == prefix + b"\x00\x00" + partition_hash(
        pk
    ) + encode_key_value(pk)


def test_table_prefixes_do_not_overlap_even_when_ids_are_prefixes() -> None:
    a_start, a_end = table_bounds("t")
    key_of_other = item_key("t1", 0, {"S": "x"}, None)
    assert not (a_start <= key_of_other < a_end)
    assert a_start <= item_key("t", 7, {"S": "x"}, {"S": "y"}) < a_end


def test_index_bounds_hold_only_that_index() -> None:
    start, end = index_bounds("t", 1)
    assert start <= item_key("t", 1, {"S": "x"}, {"S": "\U0010ffff" * 3}) < end
    assert not (start <= item_key("t", 0, {"S": "x"}, None) < end)
    assert not (start <= item_key("t", 2, {"S": "x"}, None) < end)


def test_partition_bounds_hold_exactly_the_items_of_one_partition_key() -> None:
    start, end = partition_bounds("t", 0, {"S": "a"})
    inside = [item_key("t", 0, {"S": "a"}, _b(raw)) for raw in BINARIES]
    outside = [item_key("t", 0, {"S": other}, _b(b"\xff\xff")) for other in ("a\x00", "b", "")]
    assert all(start <= k < end for k in inside)
    assert not any(start <= k < end for k in outside)


def test_prefix_end_and_key_after() -> None:
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert key_after(b"ab") == b"ab\x00"
    assert b"ab" < key_after(b"ab") < b"ab\x00\x00"


def _partition_items(sort_values: list[dict[str, Any]]) -> list[tuple[bytes, dict[str, Any]]]:
    rows = [(item_key("t", 0, {"S": "p"}, v), v) for v in sort_values]
    # Neighbouring partitions, which no bound may include.
    rows += [
        (item_key("t", 0, {"S": other}, sort_values[0]), {"other": True})
        for other in ("o", "q", "p\x00")
    ]
    return sorted(rows, key=lambda row: row[0])


def _in_range(
    rows: list[tuple[bytes, dict[str, Any]]], bounds: tuple[bytes, bytes]
) -> list[dict[str, Any]]:
    start, end = bounds
    return [value for key, value in rows if start <= key < end]


NUMBER_SORT_KEYS = [{"N": n} for n in ("-10", "-1", "0", "0.5", "1", "1.5", "2", "10", "100")]
STRING_SORT_KEYS = [{"S": s} for s in ("a", "a\x00", "ab", "abc", "abd", "ac", "b", "é")]


@pytest.mark.parametrize(
    ("operator", "operands", "keep"),
    [
        ("=", ({"N": "1.0"},), lambda n: n == 1),
        ("<", ({"N": "1"},), lambda n: n < 1),
        ("<=", ({"N": "1"},), lambda n: n <= 1),
        (">", ({"N": "1"},), lambda n: n > 1),
        (">=", ({"N": "1"},), lambda n: n >= 1),
        ("BETWEEN", ({"N": "-1"}, {"N": "2"}), lambda n: -1 <= n <= 2),
        ("BETWEEN", ({"N": "0.7"}, {"N": "0.9"}), lambda n: False),
        ("", (), lambda n: True),
    ],
)
def test_sort_key_bounds_for_numbers_match_a_brute_force_filter(
    operator: str, operands: tuple[dict[str, Any], ...], keep: Any
) -> None:
    rows = _partition_items(NUMBER_SORT_KEYS)
    found = _in_range(rows, sort_key_bounds("t", 0, {"S": "p"}, operator, operands))
    assert found == [v for v in NUMBER_SORT_KEYS if keep(Decimal(v["N"]))]


@pytest.mark.parametrize(
    ("operator", "operands", "keep"),
    [
        ("begins_with", ({"S": "ab"},), lambda s: s.startswith("ab")),
        ("begins_with", ({"S": "a"},), lambda s: s.startswith("a")),
        ("begins_with", ({"S": "a\x00"},), lambda s: s.startswith("a\x00")),
        ("begins_with", ({"S": "z"},), lambda s: False),
        ("=", ({"S": "ab"},), lambda s: s == "ab"),
        (">", ({"S": "a"},), lambda s: s.encode() > b"a"),
        ("<", ({"S": "ab"},), lambda s: s.encode() < b"ab"),
    ],
)
def test_sort_key_bounds_for_strings_match_a_brute_force_filter(
    operator: str, operands: tuple[dict[str, Any], ...], keep: Any
) -> None:
    rows = _partition_items(STRING_SORT_KEYS)
    found = _in_range(rows, sort_key_bounds("t", 0, {"S": "p"}, operator, operands))
    assert found == [v for v in STRING_SORT_KEYS if keep(v["S"])]


def test_begins_with_on_binary_sort_keys_is_bytewise() -> None:
    sort_keys = [_b(raw) for raw in (b"\x00", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\x01")]
    rows = _partition_items(sort_keys)
    found = _in_range(rows, sort_key_bounds("t", 0, {"S": "p"}, "begins_with", (_b(b"\xff\xff"),)))
    assert found == [_b(b"\xff\xff"), _b(b"\xff\xff\x01")]


def test_index_entries_with_equal_index_keys_stay_apart_and_inside_the_sort_key_bounds() -> None:
    first = index_item_key("t", 1, {"S": "g"}, {"N": "5"}, {"S": "item1"}, None)
    second = index_item_key("t", 1, {"S": "g"}, {"N": "5"}, {"S": "item2"}, None)
    assert first < second
    start, end = sort_key_bounds("t", 1, {"S": "g"}, "=", ({"N": "5"},))
    assert start <= first < end
    assert start <= second < end
    low, high = sort_key_bounds("t", 1, {"S": "g"}, "<=", ({"N": "5"},))
    assert low <= second < high
    low, high = sort_key_bounds("t", 1, {"S": "g"}, ">", ({"N": "5"},))
    assert not (low <= second < high)


def test_decode_item_key_reads_back_both_key_values() -> None:
    key = item_key("t", 0, {"N": "-1.5"}, {"B": "AP8="})
    assert decode_item_key(key, "t", 0, "N", "B") == ({"N": "-1.5"}, {"B": "AP8="}, len(key))
    hash_only = item_key("t", 2, {"S": "x"}, None)
    assert decode_item_key(hash_only, "t", 2, "S", None) == ({"S": "x"}, None, len(hash_only))
    with pytest.raises(ValueError):
        decode_item_key(key, "other", 0, "N", "B")


def test_empty_key_values_are_refused_with_dynamodb_messages() -> None:
    with pytest.raises(ValidationException) as caught:
        check_key_value("pk", {"S": ""}, is_hash=True)
    assert caught.value.message == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute "
        "cannot contain an empty string value. Key: pk"
    )
    with pytest.raises(ValidationException) as caught:
        check_key_value("sk", {"B": ""}, is_hash=False)
    assert caught.value.message == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute "
        "cannot contain an empty binary value. Key: sk"
    )
    with pytest.raises(ValidationException) as caught:
        check_key_value("gpk", {"S": ""}, is_hash=True, index_name="byG")
    assert caught.value.message == (
        "One or more parameter values are not valid. A value specified for a secondary index key "
        "is not supported. The AttributeValue for a key attribute cannot contain an empty string "
        "value. IndexName: byG, IndexKey: gpk"
    )


def test_key_size_limits_are_inclusive_and_counted_in_utf8_bytes() -> None:
    check_key_value("pk", {"S": "x" * 2048}, is_hash=True)
    check_key_value("sk", {"S": "x" * 1024}, is_hash=False)
    check_key_value("sk", {"B": base64.b64encode(b"x" * 1024).decode()}, is_hash=False)
    check_key_value("pk", {"N": "1" * 38}, is_hash=True)
    with pytest.raises(ValidationException) as caught:
        check_key_value("pk", {"S": "é" * 1025}, is_hash=True)
    assert caught.value.message == (
        "One or more parameter values were invalid: "
        "Size of hashkey has exceeded the maximum size limit of2048 bytes"
    )
    with pytest.raises(ValidationException) as caught:
        check_key_value("sk", {"B": base64.b64encode(b"x" * 1025).decode()}, is_hash=False)
    assert caught.value.message == (
        "One or more parameter values were invalid: "
        "Aggregated size of all range keys has exceeded the size limit of 1024 bytes"
    )


def test_scan_segments_are_disjoint_and_cover_every_item_of_the_index() -> None:
    keys = sorted(item_key("t", 0, {"N": str(n)}, {"S": "s"}) for n in range(300))
    for total in (1, 2, 3, 7, 16):
        bounds = [scan_segment_bounds("t", 0, segment, total) for segment in range(total)]
        assert bounds[0][0] == index_bounds("t", 0)[0]
        assert bounds[-1][1] == index_bounds("t", 0)[1]
        for (_, end), (start, _) in itertools.pairwise(bounds):
            assert end == start
        counts = [sum(1 for k in keys if start <= k < end) for start, end in bounds]
        assert sum(counts) == len(keys)
        if total <= 3:
            assert min(counts) > 0  # 300 hashed keys spread over every segment


def test_hash_range_bounds_select_by_partition_hash() -> None:
    values = [{"S": f"user{n}"} for n in range(50)]
    half = HASH_SPACE // 2
    start, end = hash_range_bounds("t", 0, 0, half)
    for value in values:
        key = item_key("t", 0, value, None)
        low_half = int.from_bytes(partition_hash(value), "big") < half
        assert (start <= key < end) == low_half


def test_non_canonical_number_encodings_are_refused() -> None:
    one = encode_key_value({"N": "1"})
    assert one == bytes([0x60, 130, 11, 0])  # tag, exponent 0 + 130, pair "10", end
    for corrupt in (bytes([0x60, 130, 11, 1, 0]), bytes([0x60, 130, 1, 11, 0]), b""):
        with pytest.raises(ValueError):
            decode_key_value(corrupt, "N")
