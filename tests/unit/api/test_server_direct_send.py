"""Answers written straight to the socket (`HttpProtocol._send`): whole and in order also
when the socket is full and the rest goes through the transport's buffer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.api import server as server_module
from keeldb.api.server import ApiServer

TIMEOUT_SECONDS = 10

ANSWERS = 120
ANSWER_BYTES = 60_000  # far more than the socket buffers hold, all together


async def echo(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"Echo": body}


@pytest.fixture
def port(serve_in_thread: Any) -> Iterator[int]:
    server = ApiServer(echo, {"Echo"}, request_bytes_max=1024 * 1024)
    with serve_in_thread(server) as port:
        yield port


def post(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: DynamoDB_20120810.Echo\r\n"
        f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class Reader:
    """Reads consecutive HTTP responses from one socket: (headers, body); `chunk_bytes` at
    a time, pausing `pause_seconds` after each read (a slow client)."""

    def __init__(
        self, sock: socket.socket, chunk_bytes: int = 1 << 20, pause_seconds: float = 0.0
    ) -> None:
        self.sock = sock
        self.buffer = b""
        self.chunk_bytes = chunk_bytes
        self.pause_seconds = pause_seconds

    def _fill(self) -> None:
        if self.pause_seconds:
            time.sleep(self.pause_seconds)
        chunk = self.sock.recv(self.chunk_bytes)
        if not chunk:
            raise ConnectionError("closed before a whole response")
        self.buffer += chunk

    def read(self) -> tuple[dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return headers, body


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS)


class CountingWrite:
    def __init__(self) -> None:
        self.calls = 0
        self.partial = 0

    def __call__(self, fd: int, data: Any) -> int:
        self.calls += 1
        written = os.write(fd, data)
        if written < len(data):
            self.partial += 1
        return written


@pytest.fixture
def counting_write(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingWrite]:
    counting = CountingWrite()

    class OsWithCountingWrite:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        write = staticmethod(counting)

    monkeypatch.setattr(server_module, "os", OsWithCountingWrite())
    yield counting


@pytest.mark.interpreted
def test_answers_are_written_straight_to_the_socket(
    port: int, counting_write: CountingWrite
) -> None:
    with connect(port) as sock:
        reader = Reader(sock)
        for index in range(5):
            sock.sendall(post({"i": index}))
            assert json.loads(reader.read()[1]) == {"Echo": {"i": index}}
    assert counting_write.calls == 5


@pytest.mark.parametrize(
    ("chunk_bytes", "pause_seconds"),
    [(1 << 20, 0.0), (8192, 0.0002), (65536, 0.001)],
    ids=["late", "slow", "slower"],
)
def test_large_pipelined_answers_to_a_slow_reader_arrive_whole_and_in_order(
    port: int, counting_write: CountingWrite, chunk_bytes: int, pause_seconds: float
) -> None:
    filler = "x" * ANSWER_BYTES
    burst = b"".join(post({"i": index, "f": filler}) for index in range(ANSWERS))
    with connect(port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(burst,), daemon=True)
        sender.start()  # the server stops reading while its answers are not read
        time.sleep(0.3)  # the server fills the socket and buffers the rest meanwhile
        reader = Reader(sock, chunk_bytes, pause_seconds)
        seen = []
        for _ in range(ANSWERS):
            headers, body = reader.read()
            assert int(headers["x-amz-crc32"]) == zlib.crc32(body)
            seen.append(json.loads(body)["Echo"]["i"])
        sender.join(TIMEOUT_SECONDS)
    assert seen == list(range(ANSWERS))
    # The socket filled up: some answers went out in part, or through the transport.
    assert counting_write.partial > 0 or counting_write.calls < ANSWERS


class FakeTransport:
    """Just enough of a transport for `_send`: a write buffer and a closing flag."""

    def __init__(self, buffered: int, closing: bool) -> None:
        self.buffered = buffered
        self.closing = closing
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


@pytest.mark.parametrize(
    ("buffered", "closing", "direct"),
    [(0, False, True), (1, False, False), (0, True, False)],
    ids=["idle", "buffered", "closing"],
)
def test_an_answer_goes_to_the_socket_only_when_nothing_waits_before_it_and_it_is_open(
    buffered: int, closing: bool, direct: bool
) -> None:
    async def scenario() -> None:
        protocol = server_module.HttpProtocol(ApiServer(echo, {"Echo"}))
        ours, theirs = socket.socketpair()
        with ours, theirs:
            protocol._fd = ours.fileno()
            transport = FakeTransport(buffered, closing)
            protocol._send(transport, b"answer")  # type: ignore[arg-type]
            theirs.setblocking(False)
            try:
                received = theirs.recv(100)
            except BlockingIOError:
                received = b""
        assert (received, transport.written) == ((b"answer", []) if direct else (b"", [b"answer"]))

    asyncio.run(scenario())
