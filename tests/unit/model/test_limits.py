"""The named limits hold DynamoDB's documented values."""

from __future__ import annotations

from keeldb.model import limits


def test_item_and_key_limits_are_dynamodbs() -> None:
    assert limits.ITEM_BYTES_MAX == 409600
    assert limits.PARTITION_KEY_BYTES_MAX == 2048
    assert limits.SORT_KEY_BYTES_MAX == 1024
    assert limits.NESTING_DEPTH_MAX == 32
    assert limits.NUMBER_DIGITS_MAX == 38
    assert (limits.NUMBER_EXPONENT_MIN, limits.NUMBER_EXPONENT_MAX) == (-130, 125)


def test_request_limits_are_dynamodbs() -> None:
    assert limits.BATCH_WRITE_ITEMS_MAX == 25
    assert limits.BATCH_GET_KEYS_MAX == 100
    assert limits.TRANSACT_ITEMS_MAX == 100
    assert limits.PAGE_BYTES_MAX == 1048576
    assert limits.EXPRESSION_BYTES_MAX == 4096


def test_table_name_pattern_accepts_only_dynamodbs_characters() -> None:
    for good in ("abc", "A_b-c.1", "x" * 255):
        assert limits.TABLE_NAME_RE.match(good)
    for bad in ("a b", "tab/le", "ünï", "abc\n", ""):
        assert not limits.TABLE_NAME_RE.match(bad)
    assert limits.TABLE_NAME_PATTERN == "[a-zA-Z0-9_.-]+"
    assert (limits.TABLE_NAME_LENGTH_MIN, limits.TABLE_NAME_LENGTH_MAX) == (3, 255)


def test_every_limit_name_ends_with_its_unit_or_kind() -> None:
    names = [n for n in vars(limits) if n.isupper() and not n.startswith("_")]
    endings = ("_MAX", "_MIN", "_BYTES", "_PATTERN", "_RE")
    assert names
    assert [n for n in names if not n.endswith(endings)] == []
