"""Other services on the same endpoint: JSON services by X-Amz-Target prefix and REST
services mounted by path prefix, next to DynamoDB's own operations."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.api.server import ApiServer, Request, RestResponse
from keeldb.model.errors import ValidationException

TIMEOUT_SECONDS = 10


async def _dynamodb(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"Service": "dynamodb", "Operation": operation}


async def _streams(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    if operation == "Fail":
        raise ValidationException("bad stream request")
    return {"Service": "streams", "Operation": operation, "Body": body}


async def _rest(request: Request) -> RestResponse:
    if request.url.endswith(b"/boom"):
        raise RuntimeError("a bug of ours")
    body = json.dumps(
        {
            "method": request.method,
            "url": request.url.decode(),
            "invocation": request.headers.get("x-amz-invocation-type"),
            "body": request.body.decode(),
        }
    ).encode()
    return RestResponse(201, body, headers=[("X-Amz-Function-Error", "Unhandled")])


@pytest.fixture
def port(serve_in_thread: Any) -> Iterator[int]:
    server = ApiServer(_dynamodb, {"GetItem"})
    server.add_json_service("DynamoDBStreams_20120810", _streams, {"ListStreams", "Fail"})
    server.mount("/2015-03-31/", _rest)
    with serve_in_thread(server) as port:
        yield port


def _call(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _json_call(port: int, target: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, payload = _call(
        port,
        "POST",
        "/",
        json.dumps(body).encode(),
        {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"},
    )
    return status, json.loads(payload)


def test_a_json_service_answers_its_own_target_prefix(port: int) -> None:
    status, body = _json_call(port, "DynamoDBStreams_20120810.ListStreams", {"Limit": 3})
    assert status == 200
    assert body == {"Service": "streams", "Operation": "ListStreams", "Body": {"Limit": 3}}


def test_dynamodb_operations_still_go_to_the_database(port: int) -> None:
    status, body = _json_call(port, "DynamoDB_20120810.GetItem", {})
    assert (status, body) == (200, {"Service": "dynamodb", "Operation": "GetItem"})


def test_an_operation_of_one_service_is_unknown_to_the_other(port: int) -> None:
    status, body = _json_call(port, "DynamoDB_20120810.ListStreams", {})
    assert status == 400
    assert body["__type"].endswith("UnknownOperationException")
    status, body = _json_call(port, "DynamoDBStreams_20120810.GetItem", {})
    assert status == 400
    assert body["__type"].endswith("UnknownOperationException")
    status, body = _json_call(port, "Nobody_20120810.ListStreams", {})
    assert status == 400


def test_a_json_service_error_is_shaped_like_dynamodb_errors(port: int) -> None:
    status, body = _json_call(port, "DynamoDBStreams_20120810.Fail", {})
    assert status == 400
    assert body["__type"].endswith("ValidationException")
    assert body["message"] == "bad stream request"


def test_a_mounted_rest_service_sees_method_path_query_headers_and_body(port: int) -> None:
    status, headers, payload = _call(
        port,
        "POST",
        "/2015-03-31/functions/f/invocations?Qualifier=1",
        b'{"a": 1}',
        {"X-Amz-Invocation-Type": "Event"},
    )
    assert status == 201
    assert headers["X-Amz-Function-Error"] == "Unhandled"
    assert "x-amzn-RequestId" in headers
    assert json.loads(payload) == {
        "method": "POST",
        "url": "/2015-03-31/functions/f/invocations?Qualifier=1",
        "invocation": "Event",
        "body": '{"a": 1}',
    }


def test_a_get_outside_every_mount_is_still_the_health_check(port: int) -> None:
    status, _, payload = _call(port, "GET", "/")
    assert status == 200
    assert payload.startswith(b"healthy: dynamodb.")
    status, _, payload = _call(port, "GET", "/2015-03-31/functions/")
    assert status == 201  # the mount, not the health check


def test_a_bug_in_a_mounted_service_is_a_500_and_the_server_carries_on(port: int) -> None:
    status, _, _ = _call(port, "GET", "/2015-03-31/boom")
    assert status == 500
    status, body = _json_call(port, "DynamoDB_20120810.GetItem", {})
    assert body["Operation"] == "GetItem"
    assert status == 200
