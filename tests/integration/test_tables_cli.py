"""The AWS CLI's table commands against a real `keeldb serve`, as the README shows them:
`aws dynamodb ... --endpoint-url URL`."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest

# Each CLI call starts a Python process with botocore: the test takes seconds, hence slow.
pytestmark = [
    pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed"),
    pytest.mark.slow,
]


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_cli_creates_describes_lists_and_deletes_a_table(
    aws_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    created = ok(
        aws_cli(
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
    ok(aws_cli("wait", "table-exists", "--table-name", name))
    described = ok(aws_cli("describe-table", "--table-name", name))["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert described["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert name in ok(aws_cli("list-tables"))["TableNames"]
    duplicate = aws_cli(
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
    ok(aws_cli("delete-table", "--table-name", name))
    ok(aws_cli("wait", "table-not-exists", "--table-name", name))
    missing = aws_cli("describe-table", "--table-name", name)
    assert missing.returncode != 0
    assert f"Requested resource not found: Table: {name} not found" in missing.stderr
