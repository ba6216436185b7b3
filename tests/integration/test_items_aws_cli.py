"""The item operations through the AWS CLI (`aws dynamodb ... --endpoint-url`), as a user
types them, error output included."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Each `aws` invocation starts a Python interpreter and loads botocore: seconds, not millis.
pytestmark = pytest.mark.slow

CLI_SECONDS_MAX = 60


def aws(endpoint: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
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
    return subprocess.run(
        ["aws", "dynamodb", *args, "--endpoint-url", endpoint, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_SECONDS_MAX,
        check=False,
    )


def test_put_get_update_delete_with_the_aws_cli(
    endpoint: str, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    table = table_factory()
    item = json.dumps({"pk": {"S": "cli"}, "n": {"N": "1"}})
    put = aws(endpoint, tmp_path, "put-item", "--table-name", table, "--item", item)
    assert put.returncode == 0, put.stderr
    update = aws(
        endpoint,
        tmp_path,
        "update-item",
        "--table-name",
        table,
        "--key",
        json.dumps({"pk": {"S": "cli"}}),
        "--update-expression",
        "ADD n :d",
        "--expression-attribute-values",
        json.dumps({":d": {"N": "41"}}),
        "--return-values",
        "ALL_NEW",
    )
    assert update.returncode == 0, update.stderr
    assert json.loads(update.stdout)["Attributes"] == {"pk": {"S": "cli"}, "n": {"N": "42"}}
    got = aws(
        endpoint,
        tmp_path,
        "get-item",
        "--table-name",
        table,
        "--key",
        json.dumps({"pk": {"S": "cli"}}),
    )
    assert json.loads(got.stdout) == {"Item": {"pk": {"S": "cli"}, "n": {"N": "42"}}}
    deleted = aws(
        endpoint,
        tmp_path,
        "delete-item",
        "--table-name",
        table,
        "--key",
        json.dumps({"pk": {"S": "cli"}}),
    )
    assert deleted.returncode == 0, deleted.stderr


def test_the_aws_cli_shows_dynamodb_error_and_message(
    endpoint: str, table_factory: Callable[..., Any], tmp_path: Path
) -> None:
    table = table_factory()
    failed = aws(
        endpoint,
        tmp_path,
        "put-item",
        "--table-name",
        table,
        "--item",
        json.dumps({"pk": {"S": "x"}}),
        "--condition-expression",
        "attribute_exists(pk)",
    )
    assert failed.returncode != 0
    assert "ConditionalCheckFailedException" in failed.stderr
    assert "The conditional request failed" in failed.stderr
