"""Mutual authentication of two nodes that share a cluster secret.

Owns the handshake's messages and their HMAC-SHA256 proofs, and the derivation of the two
per-connection frame keys. It never touches sockets (the transport carries the messages) and
never reveals anything from which the secret could be recovered: only MACs over fresh nonces.

The handshake (three messages, each a msgpack list in an unsealed frame)::

    dialer   -> listener   ["hello", version, dialer id, dialer nonce]
    listener -> dialer     ["challenge", listener id, listener nonce, listener proof]
    dialer   -> listener   ["auth", dialer proof]
    listener -> dialer     ["welcome"]

    transcript      dialer nonce | listener nonce | dialer id | 0 | listener id
    listener proof  HMAC(secret, "listener" 0 transcript)
    dialer proof    HMAC(secret, "dialer" 0 transcript)
    frame keys      HMAC(secret, "to-listener" 0 transcript), HMAC(secret, "to-dialer" 0 ...)

Both nonces are fresh random 32 bytes, so a proof or a recorded session is useless in any
other connection; distinct labels keep a listener's proof from serving as a dialer's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

PROTOCOL_VERSION = 2  # 2: frames carry batches of messages under a BLAKE2b MAC
NONCE_BYTES = 32
NODE_ID_BYTES_MAX = 256  # a node id longer than this is garbage
SECRET_BYTES_MIN = 16  # a shorter cluster secret is refused: it could be guessed


class AuthError(Exception):
    """The other end did not prove it knows the cluster secret, or broke the handshake."""


@dataclass(frozen=True, slots=True)
class SessionKeys:
    send: bytes
    receive: bytes


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def check_secret(secret: bytes) -> None:
    if len(secret) < SECRET_BYTES_MIN:
        raise ValueError(f"the cluster secret must have at least {SECRET_BYTES_MIN} bytes")


def _transcript(dialer_nonce: bytes, listener_nonce: bytes, dialer: str, listener: str) -> bytes:
    return dialer_nonce + listener_nonce + dialer.encode() + b"\0" + listener.encode()


def _mac(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.digest(secret, label + b"\0" + transcript, hashlib.sha256)


def hello(dialer: str, dialer_nonce: bytes) -> list[object]:
    return ["hello", PROTOCOL_VERSION, dialer, dialer_nonce]


def parse_hello(message: object) -> tuple[str, bytes]:
    """The dialer's id and nonce from its hello; AuthError for anything else."""
    if not isinstance(message, list) or len(message) != 4 or message[0] != "hello":
        raise AuthError("expected a hello")
    _, version, dialer, nonce = message
    if version != PROTOCOL_VERSION:
        raise AuthError(f"protocol version {version!r}, this node speaks {PROTOCOL_VERSION}")
    _check_id(dialer)
    _check_nonce(nonce)
    return dialer, nonce


def challenge(
    secret: bytes, dialer: str, dialer_nonce: bytes, listener: str, listener_nonce: bytes
) -> list[object]:
    transcript = _transcript(dialer_nonce, listener_nonce, dialer, listener)
    return ["challenge", listener, listener_nonce, _mac(secret, b"listener", transcript)]


def answer_challenge(
    secret: bytes, message: object, dialer: str, dialer_nonce: bytes, expected_listener: str
) -> tuple[list[object], SessionKeys]:
    """Check the listener's proof; return the dialer's proof and the dialer's frame keys."""
    if not isinstance(message, list) or len(message) != 4 or message[0] != "challenge":
        raise AuthError("expected a challenge")
    _, listener, listener_nonce, proof = message
    _check_id(listener)
    _check_nonce(listener_nonce)
    if listener != expected_listener:
        raise AuthError(f"dialed {expected_listener!r} but {listener!r} answered")
    transcript = _transcript(dialer_nonce, listener_nonce, dialer, listener)
    expected = _mac(secret, b"listener", transcript)
    if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
        raise AuthError(f"{listener!r} does not know the cluster secret")
    keys = SessionKeys(
        send=_mac(secret, b"to-listener", transcript),
        receive=_mac(secret, b"to-dialer", transcript),
    )
    return ["auth", _mac(secret, b"dialer", transcript)], keys


def check_auth(
    secret: bytes,
    message: object,
    dialer: str,
    dialer_nonce: bytes,
    listener: str,
    listener_nonce: bytes,
) -> SessionKeys:
    """Check the dialer's proof; return the listener's frame keys."""
    if not isinstance(message, list) or len(message) != 2 or message[0] != "auth":
        raise AuthError("expected an auth message")
    proof = message[1]
    transcript = _transcript(dialer_nonce, listener_nonce, dialer, listener)
    expected = _mac(secret, b"dialer", transcript)
    if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
        raise AuthError(f"{dialer!r} does not know the cluster secret")
    return SessionKeys(
        send=_mac(secret, b"to-dialer", transcript),
        receive=_mac(secret, b"to-listener", transcript),
    )


def _check_id(node_id: object) -> None:
    if not isinstance(node_id, str) or not node_id or len(node_id) > NODE_ID_BYTES_MAX:
        raise AuthError("malformed node id")


def _check_nonce(nonce: object) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise AuthError("malformed nonce")
