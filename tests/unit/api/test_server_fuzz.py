"""Garbage on the wire either parses or is refused: the server answers with well-formed HTTP
or closes the connection, and keeps serving everyone else."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.api.server import ApiServer

TIMEOUT_SECONDS = 5
VALID = (
    b"POST / HTTP/1.1\r\nHost: h\r\nX-Amz-Target: DynamoDB_20120810.Echo\r\n"
    b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}"
)


async def echo(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"Echo": body}


@pytest.fixture(scope="module")
def port(serve_in_thread: Any) -> Iterator[int]:
    server = ApiServer(echo, {"Echo"})
    with serve_in_thread(server, stop_seconds=TIMEOUT_SECONDS, require_stopped=False) as port:
        yield port


def send_and_drain(port: int, data: bytes) -> bytes:
    """Send, half-close, and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def assert_well_formed(received: bytes) -> None:
    """Every response present starts with a status line and carries a matching length."""
    while received:
        assert received.startswith(b"HTTP/1.1 "), received[:80]
        head, separator, rest = received.partition(b"\r\n\r\n")
        assert separator, received[:200]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        assert len(rest) >= length
        received = rest[length:]


fragments = st.sampled_from(
    [
        b"POST / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\n",
        b"Host: h\r\n",
        b"X-Amz-Target: DynamoDB_20120810.Echo\r\n",
        b"Content-Type: application/x-amz-json-1.0\r\n",
        b"Content-Length: 2\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"{}",
        b'{"a": [1, 2, {"b": null}]}',
        b"2\r\n{}\r\n0\r\n\r\n",
        b"\x00\xff",
        b"HTTP/1.1",
    ]
)
wire = st.one_of(
    st.binary(max_size=300),
    st.lists(fragments, max_size=14).map(b"".join),
    st.lists(st.one_of(fragments, st.binary(max_size=8)), max_size=10).map(b"".join),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=wire)
def test_any_bytes_get_well_formed_answers_and_the_server_lives_on(port: int, data: bytes) -> None:
    assert_well_formed(send_and_drain(port, data))
    answer = send_and_drain(port, VALID)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'{"Echo":{}}')
