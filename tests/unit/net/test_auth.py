"""The mutual HMAC handshake: both sides prove the secret, and only the secret works."""

from __future__ import annotations

import pytest

from keeldb.net import auth

SECRET = b"s" * 32


def _handshake(dialer_secret: bytes, listener_secret: bytes, expected: str = "L"):
    dialer_nonce = auth.new_nonce()
    dialer, nonce = auth.parse_hello(auth.hello("D", dialer_nonce))
    listener_nonce = auth.new_nonce()
    challenge = auth.challenge(listener_secret, dialer, nonce, "L", listener_nonce)
    answer, dialer_keys = auth.answer_challenge(
        dialer_secret, challenge, "D", dialer_nonce, expected
    )
    listener_keys = auth.check_auth(listener_secret, answer, "D", nonce, "L", listener_nonce)
    return dialer_keys, listener_keys


def test_handshake_with_the_same_secret_gives_matching_direction_keys() -> None:
    dialer_keys, listener_keys = _handshake(SECRET, SECRET)
    assert dialer_keys.send == listener_keys.receive
    assert dialer_keys.receive == listener_keys.send
    assert dialer_keys.send != dialer_keys.receive


def test_dialer_refuses_a_listener_that_does_not_know_the_secret() -> None:
    with pytest.raises(auth.AuthError, match="does not know the cluster secret"):
        _handshake(SECRET, b"x" * 32)


def test_listener_refuses_a_dialer_whose_proof_is_forged() -> None:
    dialer_nonce = auth.new_nonce()
    listener_nonce = auth.new_nonce()
    with pytest.raises(auth.AuthError, match="'D' does not know the cluster secret"):
        auth.check_auth(SECRET, ["auth", b"\0" * 32], "D", dialer_nonce, "L", listener_nonce)


def test_a_listener_proof_cannot_be_replayed_as_a_dialer_proof() -> None:
    dialer_nonce = auth.new_nonce()
    listener_nonce = auth.new_nonce()
    challenge = auth.challenge(SECRET, "D", dialer_nonce, "L", listener_nonce)
    with pytest.raises(auth.AuthError):
        auth.check_auth(SECRET, ["auth", challenge[3]], "D", dialer_nonce, "L", listener_nonce)


def test_dialer_refuses_a_different_node_answering_at_the_address() -> None:
    with pytest.raises(auth.AuthError, match="dialed 'M' but 'L' answered"):
        _handshake(SECRET, SECRET, expected="M")


@pytest.mark.parametrize(
    "hello",
    [
        "hello",
        ["hello", 99, "D", b"n" * 32],
        ["hello", 1, "", b"n" * 32],
        ["hello", 1, "D", b"short"],
        ["bye", 1, "D", b"n" * 32],
    ],
)
def test_malformed_hellos_are_refused(hello: object) -> None:
    with pytest.raises(auth.AuthError):
        auth.parse_hello(hello)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        auth.check_secret(b"short")
