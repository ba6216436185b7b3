"""The frames between a worker and the primary: length-prefixed msgpack arrays.

Owns: the byte format of the channel (a 4-byte big-endian length, then one msgpack array),
the shapes of its messages and their limits, and a sans-IO decoder that turns received bytes
into messages. It never touches sockets, event loops or the database.

Messages (every one is a msgpack array whose first element is its kind):

    worker -> primary
      [CALL_JSON, id, service prefix, operation, body]   an AWS JSON request, body decoded
      [CALL_REST, id, method, url, headers, body]        a request of a mounted REST service
      [READY, pid]                                        the worker serves (once)
    primary -> worker
      [HELLO, settings]                                   first message: what to serve and how
      [ANSWER_JSON, id, response JSON bytes]              the operation's result, encoded
      [ANSWER_ERROR, id, status, error JSON bytes]        a client error, as DynamoDB sends it
      [ANSWER_REST, id, status, body, content type, headers]
      [ANSWER_FAILED, id]                                 the primary failed (our bug): a 500

A call's id is chosen by the worker and unique among its calls in flight; answers may come in
any order (a write waits for its group commit while a later catalog read is answered).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

CALL_JSON = 1
CALL_REST = 2
READY = 3
HELLO = 10
ANSWER_JSON = 11
ANSWER_ERROR = 12
ANSWER_REST = 13
ANSWER_FAILED = 14

# The largest frame either side accepts: a request body is at most 16 MB (the HTTP front
# end's REQUEST_BYTES_MAX) and an answer at most about that (a 16 MB BatchGetItem answer),
# plus room for the headers of a REST call.
FRAME_BYTES_MAX = 48 * 1024 * 1024
_LENGTH = struct.Struct(">I")
LENGTH_BYTES = _LENGTH.size


class FrameError(Exception):
    """The peer sent bytes that are not a frame: an operating error (the channel is closed)."""


def encode(message: list[Any]) -> bytes:
    """One frame: the length of the msgpack body, then the body."""
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX}")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Feed it received bytes; it returns the whole messages they complete, in order."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buffer = bytearray()
        self._frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes) -> list[list[Any]]:
        buffer = self._buffer
        if not buffer and len(data) >= LENGTH_BYTES:
            # The usual case: whole frames in one read, parsed without copying into the buffer.
            messages, used = self._parse(data)
            if used < len(data):
                buffer += memoryview(data)[used:]
            return messages
        buffer += data
        messages, used = self._parse(buffer)
        del buffer[:used]
        return messages

    def _parse(self, data: bytes | bytearray) -> tuple[list[list[Any]], int]:
        messages: list[list[Any]] = []
        position = 0
        end = len(data)
        while end - position >= LENGTH_BYTES:
            (length,) = _LENGTH.unpack_from(data, position)
            if length > self._frame_bytes_max:
                raise FrameError(f"frame of {length} bytes exceeds {self._frame_bytes_max}")
            start = position + LENGTH_BYTES
            if end - start < length:
                break
            try:
                message = msgpack.unpackb(data[start : start + length], raw=False)
            except (ValueError, msgpack.UnpackException) as error:
                raise FrameError(f"undecodable frame: {error}") from None
            if not isinstance(message, list) or not message:
                raise FrameError("a frame is not a message")
            messages.append(message)
            position = start + length
        return messages, position

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
