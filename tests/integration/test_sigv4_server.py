"""A server started with `--credentials FILE` verifies every request's SigV4 signature."""

from __future__ import annotations

import datetime as dt
import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

KEY_ID = "AKIDSIGNEDTEST"
SECRET = "signed-test-secret"


@pytest.fixture(scope="module")
def secured(
    launch_server: Callable[[list[str], Path], Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("secured")
    path = base / "credentials"
    path.write_text(f"# test keys\n{KEY_ID} {SECRET}\n")
    server = launch_server(
        ["--host", "127.0.0.1", "--port", "0", "--in-memory", "--credentials", str(path)],
        base / "logs",
    )
    try:
        yield server
    finally:
        server.stop()


def client(make: Any, endpoint: str, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    return make(endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret)


def send_signed(endpoint: str, at: dt.datetime, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ListTables request signed by botocore as if at `at`."""
    host = urlsplit(endpoint).netloc
    request = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Host": host,
        },
    )
    with monkeypatch.context() as patch:
        patch.setattr("botocore.auth.get_current_datetime", lambda: at.replace(tzinfo=None))
        SigV4Auth(Credentials(KEY_ID, SECRET), "dynamodb", "us-east-1").add_auth(request)
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/", body=b"{}", headers=dict(request.headers.items()))
    response = conn.getresponse()
    result = response.status, json.loads(response.read())
    conn.close()
    return result


def test_the_startup_line_says_authentication_is_enabled(secured: Any) -> None:
    assert "authentication enabled, 1 access key)" in secured.startup_line


def test_a_correctly_signed_request_is_served(secured: Any, client_factory: Any) -> None:
    assert "TableNames" in client(client_factory, secured.url).list_tables()


def test_a_wrong_secret_is_an_invalid_signature(secured: Any, client_factory: Any) -> None:
    with pytest.raises(ClientError) as caught:
        client(client_factory, secured.url, secret="wrong").list_tables()
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert error["Message"].startswith(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. "
        "Consult the service documentation for details.\n\n"
        "The Canonical String for this request should have been\n'POST\n/\n"
    )


def test_an_unknown_access_key_is_unrecognized(secured: Any, client_factory: Any) -> None:
    with pytest.raises(ClientError) as caught:
        client(client_factory, secured.url, key_id="AKIDNOBODY").list_tables()
    error = caught.value.response["Error"]
    assert error["Code"] == "UnrecognizedClientException"
    assert error["Message"] == "The security token included in the request is invalid."


def test_an_unsigned_request_is_missing_its_token(secured: Any) -> None:
    conn = http.client.HTTPConnection(urlsplit(secured.url).netloc, timeout=30)
    conn.request(
        "POST",
        "/",
        body=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
        },
    )
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read()) == {
        "__type": "com.amazon.coral.service#MissingAuthenticationTokenException",
        "message": "Request is missing Authentication Token",
    }
    conn.close()


def test_a_stale_signature_has_expired(secured: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    signed_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    status, body = send_signed(secured.url, signed_at, monkeypatch)
    assert status == 400
    assert body["__type"] == "com.amazon.coral.service#InvalidSignatureException"
    assert body["message"].startswith(
        f"Signature expired: {signed_at.strftime('%Y%m%dT%H%M%SZ')} is now earlier than "
    )
    assert body["message"].endswith(" - 15 min.)")


def test_a_fresh_signature_made_outside_boto3_is_served(
    secured: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, body = send_signed(secured.url, dt.datetime.now(dt.UTC), monkeypatch)
    assert status == 200
    assert "TableNames" in body


def test_without_credentials_any_well_formed_request_is_served(endpoint: str) -> None:
    conn = http.client.HTTPConnection(urlsplit(endpoint).netloc, timeout=30)
    conn.request(
        "POST",
        "/",
        body=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
        },
    )
    response = conn.getresponse()
    assert response.status == 200
    assert "TableNames" in json.loads(response.read())
    conn.close()
