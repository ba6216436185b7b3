"""The AWS CLI's `aws lambda` commands against `keeldb serve`: deploy, invoke, list."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

# One `aws` invocation starts an interpreter and loads botocore: seconds, not milliseconds.
CLI_SECONDS_MAX = 90


def aws(endpoint: str, home: Path, *args: str) -> Any:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="AKIDKEELDBTEST",
        AWS_SECRET_ACCESS_KEY="keeldb-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_MAX_ATTEMPTS="1",
        AWS_PAGER="",
    )
    done = subprocess.run(
        ["aws", "lambda", *args, "--endpoint-url", endpoint, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_SECONDS_MAX,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


@pytest.mark.slow
def test_the_aws_cli_deploys_invokes_and_lists_a_function(endpoint: str, tmp_path: Path) -> None:
    archive = tmp_path / "code.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("app.py", "def handler(event, context):\n    return {'got': event}\n")
    archive.write_bytes(buffer.getvalue())
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = aws(
        endpoint,
        tmp_path,
        "create-function",
        "--function-name",
        name,
        "--runtime",
        "python3.12",
        "--handler",
        "app.handler",
        "--role",
        "arn:aws:iam::123456789012:role/cli",
        "--zip-file",
        f"fileb://{archive}",
    )
    assert created["FunctionName"] == name
    out = tmp_path / "out.json"
    payload = tmp_path / "payload.json"
    payload.write_bytes(b'{"a": 1}')  # fileb:// reads raw bytes in every CLI version
    answer = aws(
        endpoint,
        tmp_path,
        "invoke",
        "--function-name",
        name,
        "--payload",
        f"fileb://{payload}",
        "--log-type",
        "Tail",
        str(out),
    )
    assert answer["StatusCode"] == 200
    assert answer["ExecutedVersion"] == "$LATEST"
    assert "START RequestId" in base64.b64decode(answer["LogResult"]).decode()
    assert json.loads(out.read_text()) == {"got": {"a": 1}}
    names = [f["FunctionName"] for f in aws(endpoint, tmp_path, "list-functions")["Functions"]]
    assert name in names
    aws(endpoint, tmp_path, "delete-function", "--function-name", name)
