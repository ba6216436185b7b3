"""Order-preserving encoding of key values and the physical layout of store keys.

This module owns the bytes under which items are stored. For two key values of one type,
their encodings compare (as unsigned bytes) exactly as DynamoDB orders the values: S by UTF-8
bytes, N by numeric value, B by unsigned bytes. Every encoding is prefix-free, so that
encodings concatenate into composite keys whose byte order is the tuple order.

A store key is `table_prefix(table) + index id + hash(partition key) + partition key
[+ sort key]` (ARCHITECTURE.md, "Physical key order in the store"): a partition (a hash range
of one table) is then one contiguous key range, and Scan walks items in hash order as DynamoDB
does. The hash is an unkeyed blake2b digest, identical on every machine and in every
process. This module must never use Python's `hash()` (salted per process) or anything else
that differs between replicas, and never does IO.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from keeldb.model.errors import ValidationException
from keeldb.model.limits import (
    NUMBER_EXPONENT_MAX,
    NUMBER_EXPONENT_MIN,
    PARTITION_KEY_BYTES_MAX,
    SORT_KEY_BYTES_MAX,
)
from keeldb.model.numbers import normalize_number, number_parts
from keeldb.model.values import decode_binary, encode_binary

PARTITION_HASH_BYTES = 8  # Enough to spread partitions evenly; fixed so ranges are simple.
INDEX_ID_BYTES = 2  # Index ids 0 (base table) .. 65535: far above 5 LSIs + 20 GSIs.
INDEX_ID_MAX = (1 << (8 * INDEX_ID_BYTES)) - 1

# Strings (as UTF-8) and binaries: 0x00 is escaped as 0x00 0xFF and the value ends with
# 0x00 0x01, which sorts below any escaped or plain continuation.
_ESCAPE = b"\x00\xff"
_TERMINATOR = b"\x00\x01"

# Numbers: one tag byte orders negatives < zero < positives; then the adjusted exponent as
# one byte; then the significant digits two per byte (each byte 1..100), then a terminator.
# For negatives the exponent and digit bytes are complemented and the terminator is high,
# so that larger magnitudes sort first.
_TAG_NEGATIVE = 0x20
_TAG_ZERO = 0x40
_TAG_POSITIVE = 0x60
_EXPONENT_SPAN = NUMBER_EXPONENT_MAX - NUMBER_EXPONENT_MIN  # 255: one byte exactly.
assert _EXPONENT_SPAN <= 0xFF
_DIGIT_PAIR_MAX = 100  # A pair "ab" is stored as 1 + 10a + b, in 1..100.
_POSITIVE_END = 0x00
_NEGATIVE_END = 0xFF

_TABLE_TAG = b"t"


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", _ESCAPE) + _TERMINATOR


def _unescape(data: bytes, start: int) -> tuple[bytes, int]:
    """The raw bytes of an escaped field starting at `start`, and the offset after it."""
    out = bytearray()
    i = start
    while True:
        zero = data.find(b"\x00", i)
        if zero < 0 or zero + 1 >= len(data):
            raise ValueError("unterminated escaped field")
        out += data[i:zero]
        marker = data[zero + 1]
        if marker == 0x01:
            return bytes(out), zero + 2
        if marker != 0xFF:
            raise ValueError("bad escape in key field")
        out.append(0)
        i = zero + 2


def _encode_number(text: str) -> bytes:
    parts = number_parts(text)
    if parts is None:
        return bytes([_TAG_ZERO])
    negative, digits, adjusted = parts
    exponent_byte = adjusted - NUMBER_EXPONENT_MIN
    assert 0 <= exponent_byte <= _EXPONENT_SPAN
    if len(digits) % 2:
        digits += "0"
    pairs = [1 + int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    if negative:
        body = [_EXPONENT_SPAN - exponent_byte] + [_DIGIT_PAIR_MAX + 1 - p for p in pairs]
        return bytes([_TAG_NEGATIVE, *body, _NEGATIVE_END])
    return bytes([_TAG_POSITIVE, exponent_byte, *pairs, _POSITIVE_END])


def _decode_number(data: bytes, start: int) -> tuple[str, int]:
    if start >= len(data):
        raise ValueError("missing number")
    tag = data[start]
    if tag == _TAG_ZERO:
        return "0", start + 1
    if tag not in (_TAG_POSITIVE, _TAG_NEGATIVE):
        raise ValueError("bad number tag")
    negative = tag == _TAG_NEGATIVE
    end_byte = _NEGATIVE_END if negative else _POSITIVE_END
    end = data.index(end_byte, start + 2)
    exponent_byte = data[start + 1]
    pairs = list(data[start + 2 : end])
    if negative:
        exponent_byte = _EXPONENT_SPAN - exponent_byte
        pairs = [_DIGIT_PAIR_MAX + 1 - p for p in pairs]
    if not pairs or not all(1 <= p <= _DIGIT_PAIR_MAX for p in pairs):
        raise ValueError("bad number digits")
    digits = "".join(f"{p - 1:02d}" for p in pairs).rstrip("0")
    if not digits:
        raise ValueError("bad number digits")
    adjusted = exponent_byte + NUMBER_EXPONENT_MIN
    text = f"{'-' if negative else ''}{digits[0]}.{digits[1:] or '0'}E{adjusted:+d}"
    return normalize_number(text), end + 1


def encode_key_value(value: dict[str, Any]) -> bytes:
    """Order-preserving, prefix-free bytes of one S, N or B key value."""
    assert len(value) == 1, value
    if "S" in value:
        return _escape(value["S"].encode("utf-8"))
    if "N" in value:
        return _encode_number(value["N"])
    assert "B" in value, value
    return _escape(decode_binary(value["B"]))


_NOT_VALID = "One or more parameter values are not valid. "
_SECONDARY_NOT_SUPPORTED = "A value specified for a secondary index key is not supported. "
HASH_KEY_TOO_LARGE_MESSAGE = (
    "One or more parameter values were invalid: "
    "Size of hashkey has exceeded the maximum size limit of2048 bytes"  # sic: no space
)
RANGE_KEY_TOO_LARGE_MESSAGE = (
    "One or more parameter values were invalid: "
    "Aggregated size of all range keys has exceeded the size limit of 1024 bytes"
)


def key_value_bytes(value: dict[str, Any]) -> int:
    """The length that counts against the key size limits: UTF-8 bytes of S, raw bytes of B.
    Numbers have no key size limit of their own (38 digits always fit)."""
    if "S" in value:
        return len(value["S"].encode("utf-8"))
    if "B" in value:
        return len(decode_binary(value["B"]))
    return 0


def check_key_value(
    name: str, value: dict[str, Any], *, is_hash: bool, index_name: str | None = None
) -> None:
    """Raise DynamoDB's error when a (canonical, correctly typed) key value cannot be a key:
    an empty S or B, or a partition key over 2048 bytes, or a sort key over 1024 bytes.

    `index_name` names the secondary index whose key this is; None for the table's own key.
    """
    if "S" in value or "B" in value:
        size = key_value_bytes(value)
        if size == 0:
            kind = "string" if "S" in value else "binary"
            empty = f"The AttributeValue for a key attribute cannot contain an empty {kind} value."
            if index_name is None:
                raise ValidationException(f"{_NOT_VALID}{empty} Key: {name}")
            raise ValidationException(
                f"{_NOT_VALID}{_SECONDARY_NOT_SUPPORTED}{empty} "
                f"IndexName: {index_name}, IndexKey: {name}"
            )
        if is_hash and size > PARTITION_KEY_BYTES_MAX:
            raise ValidationException(HASH_KEY_TOO_LARGE_MESSAGE)
        if not is_hash and size > SORT_KEY_BYTES_MAX:
            raise ValidationException(RANGE_KEY_TOO_LARGE_MESSAGE)


def decode_key_value_at(data: bytes, start: int, type_: str) -> tuple[dict[str, Any], int]:
    """The key value of type `type_` encoded at `start`, and the offset after it."""
    if type_ == "N":
        text, end = _decode_number(data, start)
        # Only the one encoding of each number is valid: anything else is corruption.
        if _encode_number(text) != data[start:end]:
            raise ValueError("non-canonical number encoding")
        return {"N": text}, end
    raw, end = _unescape(data, start)
    if type_ == "S":
        return {"S": raw.decode("utf-8")}, end
    assert type_ == "B", type_
    return {"B": encode_binary(raw)}, end


def decode_key_value(data: bytes, type_: str) -> dict[str, Any]:
    """The inverse of `encode_key_value` for a value of type `type_`."""
    value, end = decode_key_value_at(data, 0, type_)
    if end != len(data):
        raise ValueError("trailing bytes after key value")
    return value


def _hash_encoded(type_: str, encoded: bytes) -> bytes:
    digest = hashlib.blake2b(
        type_.encode("ascii") + b":" + encoded, digest_size=PARTITION_HASH_BYTES
    )
    return digest.digest()


def partition_hash(value: dict[str, Any]) -> bytes:
    """8 bytes that place a partition key on the ring; the same on every machine."""
    assert len(value) == 1, value
    (type_,) = value
    return _hash_encoded(type_, encode_key_value(value))


# Prefixes are asked for on every item operation, for the few tables and indexes a node has.
PREFIX_CACHE_ENTRIES_MAX = 4096


@lru_cache(maxsize=PREFIX_CACHE_ENTRIES_MAX)
def table_prefix(table_id: str) -> bytes:
    """The prefix of every store key of one table (all its indexes)."""
    return _TABLE_TAG + _escape(table_id.encode("utf-8"))


@lru_cache(maxsize=PREFIX_CACHE_ENTRIES_MAX)
def index_prefix(table_id: str, index_id: int) -> bytes:
    """The prefix of every store key of one index of a table (0 is the base table)."""
    assert 0 <= index_id <= INDEX_ID_MAX, index_id
    return table_prefix(table_id) + index_id.to_bytes(INDEX_ID_BYTES, "big")


def partition_prefix(table_id: str, index_id: int, hash_value: dict[str, Any]) -> bytes:
    """The prefix of every store key with this partition key value in one index."""
    assert len(hash_value) == 1, hash_value
    (type_,) = hash_value
    encoded = encode_key_value(hash_value)
    return index_prefix(table_id, index_id) + _hash_encoded(type_, encoded) + encoded


def item_key(
    table_id: str, index_id: int, hash_value: dict[str, Any], range_value: dict[str, Any] | None
) -> bytes:
    """The store key of one item in a table or index."""
    key = partition_prefix(table_id, index_id, hash_value)
    if range_value is not None:
        key += encode_key_value(range_value)
    return key


def index_item_key(
    table_id: str,
    index_id: int,
    hash_value: dict[str, Any],
    range_value: dict[str, Any] | None,
    base_hash_value: dict[str, Any],
    base_range_value: dict[str, Any] | None,
) -> bytes:
    """The store key of an item's entry in a secondary index.

    Index keys need not be unique, so the base table's key follows the index key: entries
    with equal index keys are ordered by the base key, and each item has exactly one entry.
    """
    key = item_key(table_id, index_id, hash_value, range_value)
    key += encode_key_value(base_hash_value)
    if base_range_value is not None:
        key += encode_key_value(base_range_value)
    return key


def prefix_end(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    assert stripped, "a prefix of only 0xFF bytes has no end"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def key_after(key: bytes) -> bytes:
    """The smallest byte string greater than `key` (for exclusive starts)."""
    return key + b"\x00"


def table_bounds(table_id: str) -> tuple[bytes, bytes]:
    """[start, end) of every store key of one table, all indexes included."""
    start = table_prefix(table_id)
    return start, prefix_end(start)


def index_bounds(table_id: str, index_id: int) -> tuple[bytes, bytes]:
    """[start, end) of every store key of one index of a table (0 is the base table)."""
    start = index_prefix(table_id, index_id)
    return start, prefix_end(start)


HASH_SPACE = 1 << (8 * PARTITION_HASH_BYTES)  # Partition hashes are integers in [0, 2**64).


def hash_range_bounds(table_id: str, index_id: int, low: int, high: int) -> tuple[bytes, bytes]:
    """[start, end) of the store keys of one index whose partition hash h, read as a
    big-endian integer, lies in low <= h < high: a range of the ring (a partition, a scan
    segment). `high` may be HASH_SPACE, meaning the end of the ring."""
    assert 0 <= low <= high <= HASH_SPACE, (low, high)
    prefix = index_prefix(table_id, index_id)
    start = prefix + low.to_bytes(PARTITION_HASH_BYTES, "big") if low else prefix
    if high == HASH_SPACE:
        return start, prefix_end(prefix)
    return start, prefix + high.to_bytes(PARTITION_HASH_BYTES, "big")


def scan_segment_bounds(
    table_id: str, index_id: int, segment: int, total_segments: int
) -> tuple[bytes, bytes]:
    """[start, end) of one segment of a parallel Scan: the ring cut into `total_segments`
    equal hash ranges, so that segments are disjoint, cover every item, and each segment is
    still read in hash order, as DynamoDB's segments are."""
    assert 0 <= segment < total_segments, (segment, total_segments)
    low = segment * HASH_SPACE // total_segments
    high = (segment + 1) * HASH_SPACE // total_segments
    return hash_range_bounds(table_id, index_id, low, high)


def partition_bounds(
    table_id: str, index_id: int, hash_value: dict[str, Any]
) -> tuple[bytes, bytes]:
    """[start, end) of every item with one partition key value in one index."""
    start = partition_prefix(table_id, index_id, hash_value)
    return start, prefix_end(start)


def sort_key_prefix(value: dict[str, Any]) -> bytes:
    """The bytes every encoded S or B sort key that begins with `value` starts with."""
    assert len(value) == 1, value
    raw: bytes = value["S"].encode("utf-8") if "S" in value else decode_binary(value["B"])
    return raw.replace(b"\x00", _ESCAPE)


def sort_key_bounds(
    table_id: str,
    index_id: int,
    hash_value: dict[str, Any],
    operator: str,
    values: tuple[dict[str, Any], ...] = (),
) -> tuple[bytes, bytes]:
    """[start, end) of the items of one partition whose sort key satisfies a key condition.

    `operator` is one of "=", "<", "<=", ">", ">=", "BETWEEN", "begins_with" (with one value,
    two for BETWEEN) or "" for the whole partition. Encodings are prefix-free, so the items
    whose sort key equals v lie in [p + enc(v), prefix_end(p + enc(v))).
    """
    start, end = partition_bounds(table_id, index_id, hash_value)
    if operator == "":
        return start, end

    def at(value: dict[str, Any]) -> bytes:
        return start + encode_key_value(value)

    if operator == "=":
        return at(values[0]), prefix_end(at(values[0]))
    if operator == "<":
        return start, at(values[0])
    if operator == "<=":
        return start, prefix_end(at(values[0]))
    if operator == ">":
        return prefix_end(at(values[0])), end
    if operator == ">=":
        return at(values[0]), end
    if operator == "BETWEEN":
        return at(values[0]), prefix_end(at(values[1]))
    assert operator == "begins_with", operator
    lower = start + sort_key_prefix(values[0])
    if lower == start:
        return start, end  # begins_with "" matches every sort key.
    return lower, prefix_end(lower)


def decode_item_key(
    key: bytes, table_id: str, index_id: int, hash_type: str, range_type: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
    """(partition key, sort key or None, offset after them) read back from a store key."""
    prefix = index_prefix(table_id, index_id)
    if not key.startswith(prefix):
        raise ValueError("store key of another table or index")
    offset = len(prefix) + PARTITION_HASH_BYTES
    hash_value, offset = decode_key_value_at(key, offset, hash_type)
    range_value = None
    if range_type is not None:
        range_value, offset = decode_key_value_at(key, offset, range_type)
    return hash_value, range_value, offset
