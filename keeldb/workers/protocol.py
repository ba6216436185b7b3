"""The frames between a worker and the primary: length-prefixed, a binary header, a body.

Owns: the byte format of the channel, the shapes of its messages and their limits, and a
sans-IO decoder that turns received bytes into messages. It never touches sockets, event
loops or the database.

A frame is a 4-byte big-endian length (of everything after it), a 1-byte kind, a 4-byte
big-endian call id, and a body whose form depends on the kind:

    worker -> primary
      CALL_JSON    service prefix and operation (each a 1-byte length and ASCII), then the
                   request's JSON body                   an AWS JSON request (DynamoDB, Streams)
      CALL_REST    msgpack [method, url, headers, body]  a request of a mounted REST service
      READY        msgpack pid                            the worker serves (once; id 0)
    primary -> worker
      HELLO        msgpack settings                       first message: what to serve and how
      ANSWER_JSON  the result's JSON bytes                sent on to the client as they are
      ANSWER_ERROR 2-byte status, the error's JSON body   a client error, as DynamoDB sends it
      ANSWER_REST  msgpack [status, body, content type, headers]
      ANSWER_FAILED (empty)                               the primary failed (our bug): a 500

The frequent messages (CALL_JSON and its answers) carry JSON, not msgpack: the worker has the
request decoded and re-encodes it with orjson (about 1 µs for an UpdateItem), the primary
decodes it with orjson, and the primary's encoded answer reaches the client without being
decoded in the worker. Measured on the development machine, msgpack took 6 µs to pack and
25 µs to unpack such a request, against 1 µs and 11 µs for orjson (loaded host; ratios are
what count). The rare messages use msgpack for its bytes values.

A call's id is chosen by the worker and unique among its calls in flight; answers may come in
any order (a write waits for its group commit while a later catalog read is answered).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import msgpack

CALL_JSON = 1
CALL_REST = 2
READY = 3
HELLO = 10
ANSWER_JSON = 11
ANSWER_ERROR = 12
ANSWER_REST = 13
ANSWER_FAILED = 14
KINDS = frozenset(
    {CALL_JSON, CALL_REST, READY, HELLO, ANSWER_JSON, ANSWER_ERROR, ANSWER_REST, ANSWER_FAILED}
)

# The largest frame either side accepts: a request body is at most 16 MB (the HTTP front
# end's REQUEST_BYTES_MAX) and an answer at most about that (a 16 MB BatchGetItem answer),
# plus room for the headers of a REST call.
FRAME_BYTES_MAX = 48 * 1024 * 1024
NAME_BYTES_MAX = 255  # a service prefix or operation name (each has a 1-byte length)
CALL_ID_MAX = (1 << 32) - 1  # ids are 4 bytes; a worker's counter wraps below this
_HEADER = struct.Struct(">IBI")  # length, kind, call id
HEADER_BYTES = _HEADER.size
_LENGTH_BYTES = 4
_FRAME_LENGTH = struct.Struct(">I")
_STATUS = struct.Struct(">H")


class FrameError(Exception):
    """The peer sent bytes that are not a frame: an operating error (the channel is closed)."""


class Message(NamedTuple):
    kind: int
    call_id: int
    body: bytes


def frame(kind: int, call_id: int, body: bytes) -> bytes:
    """One frame of `kind` for call `call_id` with `body`."""
    assert kind in KINDS, kind
    assert 0 <= call_id <= CALL_ID_MAX, call_id
    length = len(body) + HEADER_BYTES - _LENGTH_BYTES
    if length > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {length} bytes exceeds {FRAME_BYTES_MAX}")
    return _HEADER.pack(length, kind, call_id) + body


def call_json(call_id: int, service: str, operation: str, body: bytes) -> bytes:
    service_bytes = service.encode("ascii")
    operation_bytes = operation.encode("ascii")
    assert len(service_bytes) <= NAME_BYTES_MAX and len(operation_bytes) <= NAME_BYTES_MAX
    return frame(
        CALL_JSON,
        call_id,
        b"%c%s%c%s%s"
        % (len(service_bytes), service_bytes, len(operation_bytes), operation_bytes, body),
    )


def parse_call_json(body: bytes) -> tuple[str, str, bytes]:
    """(service prefix, operation, JSON body) of a CALL_JSON body."""
    try:
        service_end = 1 + body[0]
        operation_end = service_end + 1 + body[service_end]
        service = body[1:service_end].decode("ascii")
        operation = body[service_end + 1 : operation_end].decode("ascii")
    except (IndexError, UnicodeDecodeError):
        raise FrameError("a malformed JSON call") from None
    return service, operation, body[operation_end:]


def answer_error(call_id: int, status: int, body: bytes) -> bytes:
    return frame(ANSWER_ERROR, call_id, _STATUS.pack(status) + body)


def parse_answer_error(body: bytes) -> tuple[int, bytes]:
    if len(body) < _STATUS.size:
        raise FrameError("a malformed error answer")
    return _STATUS.unpack_from(body)[0], body[_STATUS.size :]


def packed(kind: int, call_id: int, value: Any) -> bytes:
    """A frame whose body is one msgpack value (the rare messages)."""
    return frame(kind, call_id, msgpack.packb(value, use_bin_type=True))


def unpacked(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise FrameError(f"undecodable frame body: {error}") from None


class FrameDecoder:
    """Feed it received bytes; it returns the whole messages they complete, in order."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buffer = bytearray()
        self._frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        if not buffer:
            # The usual case: whole frames in one read, parsed without copying into the buffer.
            messages, used = self._parse(data)
            if used < len(data):
                buffer += memoryview(data)[used:]
            return messages
        buffer += data
        if len(buffer) >= _LENGTH_BYTES:
            (length,) = _FRAME_LENGTH.unpack_from(buffer)
            if length <= self._frame_bytes_max and len(buffer) < _LENGTH_BYTES + length:
                return []  # a large frame still arriving: no copy until it is whole
        messages, used = self._parse(bytes(buffer))
        del buffer[:used]
        return messages

    def _parse(self, data: bytes) -> tuple[list[Message], int]:
        messages: list[Message] = []
        position = 0
        end = len(data)
        unpack_from = _HEADER.unpack_from
        while end - position >= HEADER_BYTES:
            length, kind, call_id = unpack_from(data, position)
            if length > self._frame_bytes_max or length < HEADER_BYTES - _LENGTH_BYTES:
                raise FrameError(f"frame of {length} bytes (at most {self._frame_bytes_max})")
            if kind not in KINDS:
                raise FrameError(f"a frame of unknown kind {kind}")
            stop = position + _LENGTH_BYTES + length
            if stop > end:
                break
            messages.append(Message(kind, call_id, data[position + HEADER_BYTES : stop]))
            position = stop
        return messages, position

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
