"""The sealed form: round trips, nonces never repeat, and every alteration is refused."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.crypto.errors import AuthenticationError
from keeldb.crypto.sealing import (
    HEADER,
    HEADER_BYTES,
    SEALED_OVERHEAD_BYTES,
    DataKey,
    check_format,
    key_id_of,
)

SECRET = bytes(range(32))


def test_a_sealed_value_opens_to_its_plaintext_and_is_longer_by_the_overhead() -> None:
    key = DataKey(7, "table/x", SECRET)
    sealed = key.seal(b"hello", b"ctx")
    assert len(sealed) == 5 + SEALED_OVERHEAD_BYTES
    assert b"hello" not in sealed
    assert key_id_of(sealed) == 7
    assert key.open(sealed, b"ctx", "v") == b"hello"


def test_sealing_the_same_plaintext_twice_gives_different_ciphertexts() -> None:
    key = DataKey(1, "log", SECRET)
    first, second = key.seal(b"same", b""), key.seal(b"same", b"")
    assert first != second
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]


def test_nonces_within_a_run_are_consecutive_counters_and_never_repeat() -> None:
    key = DataKey(1, "log", SECRET)
    headers = [HEADER.unpack(key.seal(b"x", b"")[:HEADER_BYTES]) for _ in range(1000)]
    salts = {salt for _, _, salt, _ in headers}
    counters = [counter for _, _, _, counter in headers]
    assert len(salts) == 1
    assert counters == list(range(1000))


def test_two_runs_of_one_data_key_use_different_salts_and_open_each_other() -> None:
    first, second = DataKey(3, "node", SECRET), DataKey(3, "node", SECRET)
    a, b = first.seal(b"from first", b"k"), second.seal(b"from second", b"k")
    assert a[5:21] != b[5:21]
    # Same counter 0, but different run keys: the ciphertexts differ.
    assert HEADER.unpack(a[:HEADER_BYTES])[3] == HEADER.unpack(b[:HEADER_BYTES])[3] == 0
    assert second.open(a, b"k", "v") == b"from first"
    assert first.open(b, b"k", "v") == b"from second"


def test_a_value_opened_with_another_context_fails_authentication() -> None:
    key = DataKey(1, "node", SECRET)
    sealed = key.seal(b"data", b"key-a")
    with pytest.raises(AuthenticationError, match="failed authentication"):
        key.open(sealed, b"key-b", "a value")


def test_a_value_opened_with_another_data_key_fails_authentication() -> None:
    sealed = DataKey(1, "node", SECRET).seal(b"data", b"")
    other = DataKey(1, "node", os.urandom(32))
    with pytest.raises(AuthenticationError):
        other.open(sealed, b"", "a value")


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.binary(max_size=64),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_single_altered_byte_is_refused_never_opened_to_other_data(
    plaintext: bytes, position: int, flip: int
) -> None:
    key = DataKey(5, "table/t", SECRET, run_salt=bytes(16))
    sealed = bytearray(key.seal(plaintext, b"ctx"))
    position %= len(sealed)
    sealed[position] ^= flip
    with pytest.raises(AuthenticationError):
        if position < 5:
            # The version and the key id are checked before the key is chosen.
            check_format(bytes(sealed), "v")
            if key_id_of(bytes(sealed)) != 5:
                raise AuthenticationError("another key id")
        key.open(bytes(sealed), b"ctx", "v")


def test_a_cut_value_is_refused() -> None:
    key = DataKey(1, "log", SECRET)
    sealed = key.seal(b"some data", b"")
    with pytest.raises(AuthenticationError):
        check_format(sealed[: SEALED_OVERHEAD_BYTES - 1], "v")
    with pytest.raises(AuthenticationError):
        key.open(sealed[:-1], b"", "v")


def test_plaintext_of_another_format_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="not sealed data"):
        check_format(b"\x92\x05" + bytes(60), "a stored value")


def test_run_keys_of_many_runs_are_cached_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from keeldb.crypto import sealing

    monkeypatch.setattr(sealing, "RUN_KEYS_CACHED_MAX", 4)
    reader = DataKey(2, "node", SECRET)
    for number in range(10):
        writer = DataKey(2, "node", SECRET)
        assert reader.open(writer.seal(b"%d" % number, b""), b"", "v") == b"%d" % number
        assert len(reader._run_ciphers) <= 4
