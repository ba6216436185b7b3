"""Length-prefixed msgpack frames between the pool, the zygote and the instances.

Owns: the frame format (a 4-byte big-endian body length, then a msgpack map) and its limit,
with a blocking reader/writer for the zygote and the instances and an asyncio one for the
pool. It must never interpret a frame's contents.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgpack

# A sync invocation carries up to 6 MB of request or response payload (Lambda's limit);
# the rest of the frame is small metadata and up to LOG_BYTES_MAX of log text.
FRAME_BYTES_MAX = 8 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer closed the socket or sent a frame that breaks the format."""


class PeerClosed(FrameError):
    """The peer closed the socket; `between_frames` when it sent no part of a next frame."""

    def __init__(self, between_frames: bool) -> None:
        super().__init__("peer closed the socket")
        self.between_frames = between_frames


def encode(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX}")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False)
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        raise FrameError(f"frame body is not msgpack: {e}") from e
    if not isinstance(message, dict):
        raise FrameError("frame body is not a map")
    return message


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise PeerClosed(False)
        got += n
    return bytes(buffer)


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def recv(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if size > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {size} bytes exceeds {FRAME_BYTES_MAX}")
    return decode(_recv_exactly(sock, size))


async def _arecv_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int, *, frame_start: bool = False
) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            n = await loop.sock_recv_into(sock, view[got:])
        except ConnectionResetError:
            # A unix socket closed with data it never read is reset: the peer read no more.
            raise PeerClosed(frame_start and got == 0) from None
        if n == 0:
            raise PeerClosed(frame_start and got == 0)
        got += n
    return bytes(buffer)


async def arecv(sock: socket.socket) -> dict[str, Any]:
    """The next frame. PeerClosed(between_frames=True) if the peer closed the socket (or
    reset it) before sending any byte of it."""
    loop = asyncio.get_running_loop()
    header = await _arecv_exactly(loop, sock, _HEADER.size, frame_start=True)
    (size,) = _HEADER.unpack(header)
    if size > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {size} bytes exceeds {FRAME_BYTES_MAX}")
    return decode(await _arecv_exactly(loop, sock, size))


async def asend(sock: socket.socket, message: dict[str, Any]) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, encode(message))
