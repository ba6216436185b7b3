"""The HTTP layer over raw sockets: framing, keep-alive, pipelining and DynamoDB's error
shapes. The database behind it is a small fake engine, since only the wire is under test."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from keeldb.api import server as server_module
from keeldb.api.server import PIPELINE_REQUESTS_MAX, ApiServer
from keeldb.model.errors import ConditionalCheckFailedException, ValidationException

TIMEOUT_SECONDS = 10


class FakeEngine:
    """Answers a few operations the way an engine would, including failing."""

    operations: ClassVar[set[str]] = {"Echo", "Fail", "Boom", "Slow", "Odd", "Condition", "Count"}

    def __init__(self) -> None:
        self.calls = 0

    async def dispatch(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if operation == "Echo":
            return {"Echo": body}
        if operation == "Fail":
            raise ValidationException("1 validation error detected: bad")
        if operation == "Condition":
            raise ConditionalCheckFailedException(item={"k": {"S": "v"}})
        if operation == "Boom":
            raise RuntimeError("a bug of ours")
        if operation == "Slow":
            await asyncio.sleep(body.get("seconds", 0.05))
            return {"Slept": True}
        if operation == "Odd":
            return {"NotJson": object()}
        if operation == "Count":
            return {"Calls": self.calls}
        raise AssertionError(operation)


class Running:
    def __init__(self, server: ApiServer, port: int, engine: FakeEngine) -> None:
        self.server = server
        self.port = port
        self.engine = engine


@pytest.fixture
def running(serve_in_thread: Any) -> Iterator[Running]:
    engine = FakeEngine()
    server = ApiServer(
        engine.dispatch,
        engine.operations,
        region="eu-west-1",
        request_bytes_max=1024 * 1024,
        request_read_seconds_max=0.5,
    )
    with serve_in_thread(server) as port:
        yield Running(server, port, engine)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS)
    return sock


def post(
    target: str | None,
    body: bytes,
    *,
    content_type: str | None = "application/x-amz-json-1.0",
    extra: str = "",
    method: str = "POST",
) -> bytes:
    lines = [f"{method} / HTTP/1.1", "Host: localhost"]
    if target is not None:
        lines.append(f"X-Amz-Target: {target}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return head.encode() + body


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Reader:
    """Reads consecutive HTTP responses from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a response head")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed in a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(status, headers, body)

    def closed(self) -> bool:
        """True when the server closed the connection (and sent nothing more)."""
        try:
            return not self._fill()
        except ConnectionResetError:
            return True


def exchange(port: int, raw: bytes) -> Response:
    with connect(port) as sock:
        sock.sendall(raw)
        return Reader(sock).read()


def test_a_request_gets_the_operation_result_with_crc32_and_request_id(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b'{"a": 1}'))
    assert response.status == 200
    assert response.json() == {"Echo": {"a": 1}}
    assert response.headers["content-type"] == "application/x-amz-json-1.0"
    assert int(response.headers["x-amz-crc32"]) == zlib.crc32(response.body)
    assert len(response.headers["x-amzn-requestid"]) == 52
    assert response.headers["x-amzn-requestid"].isalnum()
    assert response.headers["x-amzn-requestid"].upper() == response.headers["x-amzn-requestid"]


def test_request_ids_differ_between_requests(running: Running) -> None:
    first = exchange(running.port, post("DynamoDB_20120810.Echo", b"{}"))
    second = exchange(running.port, post("DynamoDB_20120810.Echo", b"{}"))
    assert first.headers["x-amzn-requestid"] != second.headers["x-amzn-requestid"]


def test_application_json_requests_get_application_json_answers(running: Running) -> None:
    response = exchange(
        running.port, post("DynamoDB_20120810.Echo", b"{}", content_type="application/json")
    )
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"


def test_keep_alive_serves_several_requests_on_one_connection(running: Running) -> None:
    with connect(running.port) as sock:
        reader = Reader(sock)
        for index in range(5):
            sock.sendall(post("DynamoDB_20120810.Echo", json.dumps({"i": index}).encode()))
            response = reader.read()
            assert response.status == 200
            assert response.json() == {"Echo": {"i": index}}
            assert "connection" not in response.headers


def test_pipelined_requests_are_answered_in_order(running: Running) -> None:
    # The slow request comes first: its answer must still come first.
    burst = post("DynamoDB_20120810.Slow", b'{"seconds": 0.1}') + b"".join(
        post("DynamoDB_20120810.Echo", json.dumps({"i": index}).encode()) for index in range(10)
    )
    with connect(running.port) as sock:
        sock.sendall(burst)
        reader = Reader(sock)
        assert reader.read().json() == {"Slept": True}
        for index in range(10):
            assert reader.read().json() == {"Echo": {"i": index}}


def test_a_deep_pipeline_is_answered_whole(running: Running) -> None:
    count = PIPELINE_REQUESTS_MAX * 3
    burst = b"".join(
        post("DynamoDB_20120810.Echo", json.dumps({"i": index}).encode()) for index in range(count)
    )
    with connect(running.port) as sock:
        sock.sendall(burst)
        reader = Reader(sock)
        answers = [reader.read().json()["Echo"]["i"] for _ in range(count)]
    assert answers == list(range(count))


def test_a_request_split_across_many_packets_is_reassembled(running: Running) -> None:
    raw = post("DynamoDB_20120810.Echo", b'{"split": "yes"}')
    with connect(running.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(raw)):
            sock.sendall(raw[index : index + 1])
        assert Reader(sock).read().json() == {"Echo": {"split": "yes"}}


def test_http_1_0_without_keep_alive_closes_after_the_answer(running: Running) -> None:
    raw = post("DynamoDB_20120810.Echo", b"{}").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    with connect(running.port) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        response = reader.read()
        assert response.status == 200
        assert response.headers["connection"] == "close"
        assert reader.closed()


def test_connection_close_header_is_honoured(running: Running) -> None:
    raw = post("DynamoDB_20120810.Echo", b"{}", extra="Connection: close\r\n")
    with connect(running.port) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        assert reader.read().status == 200
        assert reader.closed()


def test_malformed_json_is_a_serialization_exception_without_message(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b"hi"))
    assert response.status == 400
    assert response.json() == {"__type": "com.amazon.coral.service#SerializationException"}
    assert int(response.headers["x-amz-crc32"]) == zlib.crc32(response.body)
    assert running.engine.calls == 0


def test_a_json_array_body_is_a_serialization_exception(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b"[1, 2]"))
    assert response.status == 400
    assert response.json() == {"__type": "com.amazon.coral.service#SerializationException"}


def test_an_empty_body_with_a_valid_target_is_a_serialization_exception(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b""))
    assert response.status == 400
    assert response.json() == {"__type": "com.amazon.coral.service#SerializationException"}


def test_numbers_beyond_64_bits_reach_the_engine(running: Running) -> None:
    body = b'{"Limit": 1' + b"0" * 30 + b"}"
    response = exchange(running.port, post("DynamoDB_20120810.Echo", body))
    assert response.status == 200
    assert response.json()["Echo"]["Limit"] == pytest.approx(1e30)


def test_nan_is_not_json(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b'{"Limit": NaN}'))
    assert response.status == 400
    assert response.json() == {"__type": "com.amazon.coral.service#SerializationException"}


@pytest.mark.parametrize(
    "target",
    [
        None,
        "whatever",
        "DynamoDB_20120810.ListTable",
        "DynamoDB_20111205.Echo",
        "DynamoDB_20120810",
    ],
)
def test_missing_or_unknown_target_is_an_unknown_operation(
    running: Running, target: str | None
) -> None:
    response = exchange(running.port, post(target, b"{}"))
    assert response.status == 400
    assert response.json() == {"__type": "com.amazon.coral.service#UnknownOperationException"}
    assert running.engine.calls == 0


def test_malformed_json_is_reported_before_an_unknown_target(running: Running) -> None:
    response = exchange(running.port, post("Nope.Nope", b"{"))
    assert response.json() == {"__type": "com.amazon.coral.service#SerializationException"}


def test_a_client_error_keeps_its_type_message_and_status(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Fail", b"{}"))
    assert response.status == 400
    assert response.json() == {
        "__type": "com.amazon.coral.validate#ValidationException",
        "message": "1 validation error detected: bad",
    }


def test_a_conditional_check_failure_carries_the_old_item(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Condition", b"{}"))
    assert response.status == 400
    assert response.json() == {
        "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
        "message": "The conditional request failed",
        "Item": {"k": {"S": "v"}},
    }


def test_a_bug_in_a_handler_is_a_500_and_the_connection_lives_on(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(running.port) as sock:
        reader = Reader(sock)
        sock.sendall(post("DynamoDB_20120810.Boom", b"{}"))
        response = reader.read()
        assert response.status == 500
        assert response.json() == {
            "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "message": "Internal server error",
        }
        sock.sendall(post("DynamoDB_20120810.Echo", b"{}"))
        assert reader.read().status == 200
    assert "a bug of ours" in caplog.text


def test_an_unserialisable_result_is_a_500(running: Running) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Odd", b"{}"))
    assert response.status == 500
    assert response.json()["__type"].endswith("#InternalServerError")


def test_get_is_the_health_check(running: Running) -> None:
    response = exchange(running.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 200
    assert response.body == b"healthy: dynamodb.eu-west-1.amazonaws.com "
    assert int(response.headers["x-amz-crc32"]) == zlib.crc32(response.body)
    assert len(response.headers["x-amzn-requestid"]) == 52


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_dynamodbs_404(running: Running, method: str) -> None:
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b"{}", method=method))
    assert response.status == 404
    assert response.body == b"<UnknownOperationException/>\n"
    assert response.headers["x-amz-crc32"] == "3552371480"
    assert response.headers["content-length"] == "29"


@pytest.mark.parametrize(
    "content_type", [None, "whatever", "application/x-amz-json-1.1", "application/jsonasdf"]
)
def test_a_body_with_another_content_type_gets_a_404(
    running: Running, content_type: str | None
) -> None:
    response = exchange(
        running.port, post("DynamoDB_20120810.Echo", b"hi", content_type=content_type)
    )
    assert response.status == 404
    assert response.body == b"<UnknownOperationException/>\n"


def test_content_type_parameters_are_ignored(running: Running) -> None:
    response = exchange(
        running.port,
        post("DynamoDB_20120810.Echo", b"{}", content_type="  application/json ; charset=x"),
    )
    assert response.status == 200


def test_an_origin_gets_cors_headers_and_a_preflight_is_answered(running: Running) -> None:
    response = exchange(
        running.port, post("DynamoDB_20120810.Echo", b"{}", extra="Origin: http://x\r\n")
    )
    assert response.headers["access-control-allow-origin"] == "*"
    preflight = exchange(
        running.port,
        b"OPTIONS / HTTP/1.1\r\nHost: h\r\nOrigin: http://x\r\n"
        b"Access-Control-Request-Headers: a, b\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    )
    assert preflight.status == 200
    assert preflight.headers["access-control-allow-headers"] == "a, b"
    assert preflight.headers["access-control-allow-methods"] == "POST"
    assert preflight.headers["access-control-max-age"] == "172800"
    assert preflight.body == b""


def test_an_oversize_body_is_refused_with_413_before_it_is_read(running: Running) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: h\r\nX-Amz-Target: DynamoDB_20120810.Echo\r\n"
        b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: %d\r\n\r\n"
        % (1024 * 1024 + 1)
    )
    with connect(running.port) as sock:
        sock.sendall(head)
        reader = Reader(sock)
        response = reader.read()
        assert response.status == 413
        assert reader.closed()
    assert running.engine.calls == 0


def test_a_body_at_the_size_limit_is_accepted(running: Running) -> None:
    value = "x" * (1024 * 1024 - len('{"v": ""}'))
    body = json.dumps({"v": value}).encode()
    assert len(body) == 1024 * 1024
    response = exchange(running.port, post("DynamoDB_20120810.Echo", body))
    assert response.status == 200
    assert response.json() == {"Echo": {"v": value}}


def test_a_chunked_body_past_the_limit_is_refused(running: Running) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: h\r\nX-Amz-Target: DynamoDB_20120810.Echo\r\n"
        b"Content-Type: application/x-amz-json-1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b"x" * 256 * 1024)
    with connect(running.port) as sock:
        sock.sendall(head)
        reader = Reader(sock)
        try:
            for _ in range(5):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert reader.read().status == 413
    assert running.engine.calls == 0


def test_expect_100_continue_gets_an_interim_response(running: Running) -> None:
    body = b'{"c": true}'
    head = post("DynamoDB_20120810.Echo", b"", extra="Expect: 100-continue\r\n")
    head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
    with connect(running.port) as sock:
        sock.sendall(head)
        reader = Reader(sock)
        interim = reader.read()
        assert interim.status == 100
        sock.sendall(body)
        response = reader.read()
        assert response.status == 200
        assert response.json() == {"Echo": {"c": True}}


def test_garbage_gets_a_400_and_the_connection_closes(running: Running) -> None:
    with connect(running.port) as sock:
        sock.sendall(b"\x00\x01 this is not http\r\n\r\n")
        reader = Reader(sock)
        assert reader.read().status == 400
        assert reader.closed()


def test_the_server_survives_a_client_that_leaves_mid_request(running: Running) -> None:
    with connect(running.port) as sock:
        sock.sendall(post("DynamoDB_20120810.Slow", b'{"seconds": 0.05}'))
    with connect(running.port) as sock:
        sock.sendall(post("DynamoDB_20120810.Echo", b"{}")[:40])
    response = exchange(running.port, post("DynamoDB_20120810.Echo", b"{}"))
    assert response.status == 200


def test_requests_sent_before_a_half_close_are_still_answered(running: Running) -> None:
    with connect(running.port) as sock:
        sock.sendall(post("DynamoDB_20120810.Slow", b'{"seconds": 0.05}'))
        sock.sendall(post("DynamoDB_20120810.Echo", b'{"after": 1}'))
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert reader.read().json() == {"Slept": True}
        assert reader.read().json() == {"Echo": {"after": 1}}
        assert reader.closed()


def test_an_oversize_body_sent_in_full_still_gets_its_413(running: Running) -> None:
    body = b"x" * (3 * 1024 * 1024)
    with connect(running.port) as sock:
        try:
            sock.sendall(post("DynamoDB_20120810.Echo", body))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader = Reader(sock)
        assert reader.read().status == 413


def test_head_gets_the_404_headers_without_a_body(running: Running) -> None:
    with connect(running.port) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        sock.sendall(post("DynamoDB_20120810.Echo", b'{"next": 1}'))
        reader = Reader(sock)
        head = reader.buffer
        while b"\r\n\r\n" not in head:
            reader._fill()
            head = reader.buffer
        status_and_headers, _, rest = head.partition(b"\r\n\r\n")
        assert status_and_headers.startswith(b"HTTP/1.1 404 ")
        assert b"Content-Length: 29" in status_and_headers
        reader.buffer = rest
        assert reader.read().json() == {"Echo": {"next": 1}}


def test_a_client_that_reads_late_gets_every_answer_of_a_long_pipeline(running: Running) -> None:
    # Large answers fill the socket buffers, so the server must stop reading and writing
    # and resume both once the client drains its side, without losing or reordering any.
    padding = "p" * 64 * 1024
    count = 150
    requests = b"".join(
        post("DynamoDB_20120810.Echo", json.dumps({"i": index, "pad": padding}).encode())
        for index in range(count)
    )
    with connect(running.port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        time.sleep(0.3)
        reader = Reader(sock)
        answers = [reader.read().json()["Echo"]["i"] for _ in range(count)]
        sender.join(TIMEOUT_SECONDS)
    assert answers == list(range(count))


def test_an_interim_continue_never_overtakes_an_earlier_answer(running: Running) -> None:
    body = b'{"second": true}'
    expecting = post("DynamoDB_20120810.Echo", b"", extra="Expect: 100-continue\r\n")
    expecting = expecting.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
    with connect(running.port) as sock:
        sock.sendall(post("DynamoDB_20120810.Slow", b'{"seconds": 0.2}') + expecting + body)
        reader = Reader(sock)
        first = reader.read()
        assert first.json() == {"Slept": True}
        second = reader.read()
        assert second.status == 200
        assert second.json() == {"Echo": {"second": True}}


def test_pipelined_large_bodies_past_the_byte_bound_are_all_answered(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "PIPELINE_BYTES_MAX", 2 * 1024 * 1024)
    padding = "q" * 500 * 1024
    count = 20
    requests = post("DynamoDB_20120810.Slow", b'{"seconds": 0.1}') + b"".join(
        post("DynamoDB_20120810.Echo", json.dumps({"i": index, "pad": padding}).encode())
        for index in range(count)
    )
    with connect(running.port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(requests,))
        sender.start()
        reader = Reader(sock)
        assert reader.read().json() == {"Slept": True}
        answers = [reader.read().json()["Echo"]["i"] for _ in range(count)]
        sender.join(TIMEOUT_SECONDS)
    assert answers == list(range(count))


def test_a_request_that_stalls_halfway_loses_its_connection(running: Running) -> None:
    with connect(running.port) as sock:
        sock.sendall(post("DynamoDB_20120810.Echo", b"{}")[:30])
        started = time.monotonic()
        assert Reader(sock).closed()
        waited = time.monotonic() - started
    assert 0.4 < waited < 5


def test_an_idle_keep_alive_connection_is_not_a_stalled_one(running: Running) -> None:
    with connect(running.port) as sock:
        reader = Reader(sock)
        sock.sendall(post("DynamoDB_20120810.Echo", b'{"n": 1}'))
        assert reader.read().status == 200
        time.sleep(1.2)
        sock.sendall(post("DynamoDB_20120810.Echo", b'{"n": 2}'))
        assert reader.read().json() == {"Echo": {"n": 2}}
