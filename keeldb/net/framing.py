"""Frames on a node-to-node connection: a length prefix, then a body; after the handshake,
every body carries a MAC over its sequence number and its data.

Owns the byte format of one frame, its size limit, the per-frame authentication code and
the sans-IO `FrameDecoder` that cuts a byte stream into frames. It never opens sockets,
never decides what a frame means (the transport does) and never trusts a length it has not
checked against FRAME_BYTES_MAX.

Wire format::

    frame        length u32 (big-endian, bytes of body) | body
    body         before authentication: msgpack data
                 after:  mac (32 bytes) | msgpack data
    mac          HMAC-SHA256(direction key, sequence u64 big-endian | data)

The sequence number counts the frames sent in one direction of one connection from 0; it is
not sent, both ends count, so a replayed, dropped, reordered or altered frame fails its MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

FRAME_BYTES_MAX = 64 * 1024 * 1024  # a body, at most: a snapshot of a partition's state
# travels in one InstallSnapshot message, so the bound is generous; beyond it a length is
# garbage (or an attack) and the connection is closed.
LENGTH = struct.Struct("!I")
LENGTH_BYTES = LENGTH.size
MAC_BYTES = 32  # HMAC-SHA256
_SEQUENCE = struct.Struct("!Q")


class FramingError(Exception):
    """The peer sent bytes that are not a valid frame: the connection must be closed."""


def encode_frame(body: bytes) -> bytes:
    """One frame holding `body` (raises FramingError when it is too large to send)."""
    if len(body) > FRAME_BYTES_MAX:
        raise FramingError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX} bytes")
    return LENGTH.pack(len(body)) + body


def frame_mac(key: bytes, sequence: int, data: bytes) -> bytes:
    return hmac.digest(key, _SEQUENCE.pack(sequence) + data, hashlib.sha256)


def seal(key: bytes, sequence: int, data: bytes) -> bytes:
    """A frame body that authenticates `data` as frame number `sequence` of a direction."""
    return frame_mac(key, sequence, data) + data


def open_sealed(key: bytes, sequence: int, body: bytes) -> bytes:
    """The data of a sealed body, or FramingError when its MAC does not verify."""
    if len(body) < MAC_BYTES:
        raise FramingError("frame shorter than its MAC")
    data = body[MAC_BYTES:]
    if not hmac.compare_digest(body[:MAC_BYTES], frame_mac(key, sequence, data)):
        raise FramingError(f"frame {sequence}: MAC does not verify")
    return data


class FrameDecoder:
    """Cuts a byte stream into frame bodies; feed it bytes as they arrive."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buffer = bytearray()
        self._frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes) -> list[bytes]:
        """Every complete body the stream now holds, in order; FramingError on garbage."""
        self._buffer += data
        bodies: list[bytes] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= LENGTH_BYTES:
            (length,) = LENGTH.unpack_from(buffer, offset)
            if length > self._frame_bytes_max:
                raise FramingError(f"frame length {length} exceeds {self._frame_bytes_max} bytes")
            end = offset + LENGTH_BYTES + length
            if end > len(buffer):
                break
            bodies.append(bytes(buffer[offset + LENGTH_BYTES : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return bodies

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
