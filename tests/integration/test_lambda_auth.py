"""The Lambda API of a server with credentials: requests are SigV4-verified for the "lambda"
service, and a handler reaches the database with the node's first key."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

KEY_ID = "AKIDLAMBDAAUTH"
SECRET = "lambda-auth-secret"
ROLE = "arn:aws:iam::123456789012:role/auth"
WRITER = """
import boto3
def handler(event, context):
    ddb = boto3.client("dynamodb")
    ddb.put_item(TableName=event["table"], Item={"pk": {"S": "from-handler"}})
    return ddb.get_item(TableName=event["table"], Key={"pk": {"S": "from-handler"}})["Item"]
"""


def client(service: str, url: str, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=60),
    )


def zip_of(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", text)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, launch_server: Any) -> Any:
    base = tmp_path_factory.mktemp("lambda-auth")
    credentials = base / "credentials"
    credentials.write_text(f"{KEY_ID} {SECRET}\n")
    process = launch_server(
        [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(base / "data"),
            "--credentials",
            str(credentials),
        ],
        base / "logs",
    )
    yield process
    process.stop()


def test_a_signed_client_deploys_and_the_handler_uses_the_nodes_key(secured: Any) -> None:
    lam = client("lambda", secured.url)
    ddb = client("dynamodb", secured.url)
    ddb.create_table(
        TableName="auth-target",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    lam.create_function(
        FunctionName="writer",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Timeout=30,
        Code={"ZipFile": zip_of(WRITER)},
    )
    answer = lam.invoke(FunctionName="writer", Payload=json.dumps({"table": "auth-target"}))
    assert "FunctionError" not in answer, answer["Payload"].read()
    assert json.loads(answer["Payload"].read()) == {"pk": {"S": "from-handler"}}
    # Found by ARN too: the percent-encoded path is what was signed.
    arn = lam.get_function(FunctionName="writer")["Configuration"]["FunctionArn"]
    assert lam.get_function_configuration(FunctionName=arn)["FunctionName"] == "writer"


def test_a_wrong_secret_is_an_invalid_signature(secured: Any) -> None:
    lam = client("lambda", secured.url, secret="wrong")
    with pytest.raises(lam.exceptions.ClientError) as caught:
        lam.list_functions()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_unknown_key_is_an_unrecognized_client(secured: Any) -> None:
    lam = client("lambda", secured.url, key_id="AKIDUNKNOWN")
    with pytest.raises(lam.exceptions.ClientError) as caught:
        lam.get_account_settings()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_an_unsigned_request_is_refused(secured: Any) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{secured.url}/2015-03-31/functions/", timeout=10)
    assert caught.value.code == 403
    assert caught.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_the_code_location_is_a_link_that_needs_no_signature(secured: Any, tmp_path: Path) -> None:
    lam = client("lambda", secured.url)
    lam.create_function(
        FunctionName="linked",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_of("def handler(e, c):\n    return 1\n")},
    )
    location = lam.get_function(FunctionName="linked")["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=10) as response:
        assert zipfile.ZipFile(io.BytesIO(response.read())).read("app.py").startswith(b"def")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(location[:-4] + "0000", timeout=10)
    assert caught.value.code == 404
