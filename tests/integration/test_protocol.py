"""The wire protocol of a real `keeldb serve` process, seen by raw HTTP and by boto3."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import zlib
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from keeldb.api.server import REQUEST_BYTES_MAX

TARGET = "DynamoDB_20120810."


def connection(endpoint: str) -> http.client.HTTPConnection:
    parts = urlsplit(endpoint)
    assert parts.hostname is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def call(
    conn: http.client.HTTPConnection,
    target: str | None,
    body: bytes,
    *,
    method: str = "POST",
    content_type: str = "application/x-amz-json-1.0",
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": content_type}
    if target is not None:
        headers["X-Amz-Target"] = target
    conn.request(method, "/", body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def test_list_tables_answers_with_crc32_and_request_id(endpoint: str) -> None:
    conn = connection(endpoint)
    status, headers, body = call(conn, TARGET + "ListTables", b"{}")
    assert status == 200
    assert "TableNames" in json.loads(body)
    assert int(headers["x-amz-crc32"]) == zlib.crc32(body)
    assert headers["content-type"] == "application/x-amz-json-1.0"
    assert int(headers["content-length"]) == len(body)
    assert len(headers["x-amzn-requestid"]) == 52
    conn.close()


def test_one_connection_carries_many_requests(endpoint: str) -> None:
    conn = connection(endpoint)
    call(conn, TARGET + "ListTables", b"{}")
    sock = conn.sock
    for _ in range(20):
        status, _, _ = call(conn, TARGET + "ListTables", b"{}")
        assert status == 200
    assert conn.sock is sock, "the server closed a keep-alive connection"
    conn.close()


def test_unknown_operation_and_missing_target(endpoint: str) -> None:
    conn = connection(endpoint)
    for target in (None, TARGET + "ListTable", "DynamoDB_20120810", "Other_20120810.ListTables"):
        status, headers, body = call(conn, target, b"{}")
        assert status == 400
        assert json.loads(body) == {"__type": "com.amazon.coral.service#UnknownOperationException"}
        assert int(headers["x-amz-crc32"]) == zlib.crc32(body)
    conn.close()


def test_malformed_json_is_a_serialization_exception(endpoint: str) -> None:
    conn = connection(endpoint)
    status, _, body = call(conn, TARGET + "ListTables", b'{"Limit": ')
    assert status == 400
    assert json.loads(body) == {"__type": "com.amazon.coral.service#SerializationException"}
    conn.close()


def test_get_is_dynamodbs_health_check(endpoint: str) -> None:
    conn = connection(endpoint)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"healthy: dynamodb.us-east-1.amazonaws.com "
    conn.close()


def test_put_gets_dynamodbs_404(endpoint: str) -> None:
    conn = connection(endpoint)
    status, _, body = call(conn, TARGET + "ListTables", b"{}", method="PUT")
    assert status == 404
    assert body == b"<UnknownOperationException/>\n"
    conn.close()


def test_a_request_over_16_mb_is_refused_with_413(endpoint: str) -> None:
    conn = connection(endpoint)
    body = b'{"TableName": "' + b"x" * REQUEST_BYTES_MAX + b'"}'
    try:
        conn.request(
            "POST",
            "/",
            body=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": TARGET + "ListTables",
            },
        )
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the whole body is sent
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


def test_boto3_reports_client_errors_with_their_code(ddb: Any) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.describe_table(TableName="no-such-table-here")
    error = caught.value.response["Error"]
    assert error["Code"] == "ResourceNotFoundException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(caught.value.response["ResponseMetadata"]["RequestId"]) == 52


def test_boto3_sees_a_created_table_in_list_tables(ddb: Any, table_factory: Any) -> None:
    name = table_factory()
    names: list[str] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = ddb.list_tables(**kwargs)
        names += page["TableNames"]
        if "LastEvaluatedTableName" not in page:
            break
        kwargs = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}
    assert name in names


def test_concurrent_clients_all_get_answers(endpoint: str) -> None:
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            conn = connection(endpoint)
            for _ in range(25):
                status, headers, body = call(conn, TARGET + "ListTables", b"{}")
                assert status == 200
                assert int(headers["x-amz-crc32"]) == zlib.crc32(body)
            conn.close()
        except BaseException as error:  # noqa: BLE001 - reported in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert not any(thread.is_alive() for thread in threads)


def test_hundreds_of_open_connections_are_all_served(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    assert parts.hostname is not None
    assert parts.port is not None
    request = (
        b"POST / HTTP/1.1\r\nHost: h\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n"
        b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}"
    )
    sockets = [
        socket.create_connection((parts.hostname, parts.port), timeout=30) for _ in range(300)
    ]
    try:
        for sock in sockets:
            sock.sendall(request)
        for sock in sockets:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                assert chunk, "connection closed without an answer"
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for sock in sockets:
            sock.close()
