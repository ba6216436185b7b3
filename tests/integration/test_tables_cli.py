"""The AWS CLI's table commands against a real `keeldb serve`, as the README shows them:
`aws dynamodb ... --endpoint-url URL`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from typing import Any

import pytest

CLI_SECONDS_MAX = 60  # one CLI call starts Python and botocore: a few seconds at most

# Each CLI call starts a Python process with botocore: the test takes seconds, hence slow.
pytestmark = [
    pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed"),
    pytest.mark.slow,
]


def aws(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="AKIDKEELDBTEST",
        AWS_SECRET_ACCESS_KEY="keeldb-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
    )
    return subprocess.run(
        ["aws", "dynamodb", *args, "--endpoint-url", endpoint, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_SECONDS_MAX,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_cli_creates_describes_lists_and_deletes_a_table(endpoint: str) -> None:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    created = ok(
        aws(
            endpoint,
            "create-table",
            "--table-name",
            name,
            "--attribute-definitions",
            "AttributeName=id,AttributeType=S",
            "--key-schema",
            "AttributeName=id,KeyType=HASH",
            "--billing-mode",
            "PAY_PER_REQUEST",
        )
    )
    assert created["TableDescription"]["TableStatus"] == "CREATING"
    ok(aws(endpoint, "wait", "table-exists", "--table-name", name))
    described = ok(aws(endpoint, "describe-table", "--table-name", name))["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert described["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert name in ok(aws(endpoint, "list-tables"))["TableNames"]
    duplicate = aws(
        endpoint,
        "create-table",
        "--table-name",
        name,
        "--attribute-definitions",
        "AttributeName=id,AttributeType=S",
        "--key-schema",
        "AttributeName=id,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    )
    assert duplicate.returncode != 0
    assert "ResourceInUseException" in duplicate.stderr
    assert f"Table already exists: {name}" in duplicate.stderr
    ok(aws(endpoint, "delete-table", "--table-name", name))
    ok(aws(endpoint, "wait", "table-not-exists", "--table-name", name))
    missing = aws(endpoint, "describe-table", "--table-name", name)
    assert missing.returncode != 0
    assert f"Requested resource not found: Table: {name} not found" in missing.stderr
