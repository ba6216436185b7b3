"""Frames on a node-to-node connection: a length prefix, then a body; after the handshake,
every body carries a MAC over its sequence number and its data, and its data is a batch of
messages.

Owns the byte format of one frame, its size limit, the per-frame authentication code, the
batch of messages a frame carries, and the sans-IO `FrameDecoder` that cuts a byte stream
into frames. It never opens sockets, never decides what a message means (the transport
does) and never trusts a length it has not checked against FRAME_BYTES_MAX.

Wire format::

    frame        length u32 (big-endian, bytes of body) | body
    body         before authentication: msgpack data (one handshake message)
                 after:  mac (16 bytes) | data
    data         a msgpack array of messages (each already msgpack-encoded by the sender)
    mac          keyed BLAKE2b-128 of data, key = the direction's key,
                 salt = sequence u64 big-endian

The sequence number counts the frames sent in one direction of one connection from 0; it is
not sent, both ends count, so a replayed, dropped, reordered or altered frame fails its MAC.
A sender puts every message it has queued for a peer into one frame (up to a batch limit),
so one MAC and one length prefix cover a whole round of messages. Keyed BLAKE2b is a MAC in
its own right (no HMAC construction needed) and costs a fraction of HMAC-SHA256 on the
short bodies that dominate this traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence

FRAME_BYTES_MAX = 64 * 1024 * 1024  # a body, at most: a snapshot of a partition's state
# travels in one InstallSnapshot message, so the bound is generous; beyond it a length is
# garbage (or an attack) and the connection is closed.
LENGTH = struct.Struct("!I")
LENGTH_BYTES = LENGTH.size
MAC_BYTES = 16  # keyed BLAKE2b-128
BATCH_HEADER_BYTES_MAX = 5  # a msgpack array header (array 32: one byte and a u32)
_SEQUENCE = struct.Struct("!Q")
_ARRAY16 = struct.Struct("!BH")
_ARRAY32 = struct.Struct("!BI")


class FramingError(Exception):
    """The peer sent bytes that are not a valid frame: the connection must be closed."""


def encode_frame(body: bytes) -> bytes:
    """One frame holding `body` (raises FramingError when it is too large to send)."""
    if len(body) > FRAME_BYTES_MAX:
        raise FramingError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX} bytes")
    return LENGTH.pack(len(body)) + body


def frame_mac(key: bytes, sequence: int, data: bytes) -> bytes:
    return hashlib.blake2b(
        data, key=key, digest_size=MAC_BYTES, salt=_SEQUENCE.pack(sequence)
    ).digest()


def batch(messages: Sequence[bytes]) -> bytes:
    """The data of a frame carrying `messages` (each one msgpack object): a msgpack array
    of them, built without decoding them again."""
    count = len(messages)
    if count < 16:
        header = bytes([0x90 | count])
    elif count < 1 << 16:
        header = _ARRAY16.pack(0xDC, count)
    else:
        header = _ARRAY32.pack(0xDD, count)
    return header + b"".join(messages)


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
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            source = data  # the common case: frames cut from the chunk itself, one copy each
        bodies: list[bytes] = []
        offset = 0
        size = len(source)
        frame_bytes_max = self._frame_bytes_max
        while size - offset >= LENGTH_BYTES:
            (length,) = LENGTH.unpack_from(source, offset)
            if length > frame_bytes_max:
                raise FramingError(f"frame length {length} exceeds {frame_bytes_max} bytes")
            end = offset + LENGTH_BYTES + length
            if end > size:
                break
            bodies.append(bytes(source[offset + LENGTH_BYTES : end]))
            offset = end
        if source is self._buffer:
            if offset:
                del self._buffer[:offset]
        elif offset < size:
            self._buffer += data[offset:]
        return bodies

    def set_limit(self, frame_bytes_max: int) -> None:
        """Frames longer than this are garbage from now on (a connection's limit grows once
        its peer has proven itself)."""
        self._frame_bytes_max = frame_bytes_max

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
