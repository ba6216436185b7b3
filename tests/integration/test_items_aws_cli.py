"""The item operations through the AWS CLI (`aws dynamodb ... --endpoint-url`), as a user
types them, error output included."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

# Each `aws` invocation starts a Python interpreter and loads botocore: seconds, not millis.
pytestmark = pytest.mark.slow


def test_put_get_update_delete_with_the_aws_cli(
    aws_cli: Callable[..., subprocess.CompletedProcess[str]], table_factory: Callable[..., str]
) -> None:
    table = table_factory()
    item = json.dumps({"pk": {"S": "cli"}, "n": {"N": "1"}})
    put = aws_cli("put-item", "--table-name", table, "--item", item)
    assert put.returncode == 0, put.stderr
    update = aws_cli(
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
    got = aws_cli(
        "get-item",
        "--table-name",
        table,
        "--key",
        json.dumps({"pk": {"S": "cli"}}),
    )
    assert json.loads(got.stdout) == {"Item": {"pk": {"S": "cli"}, "n": {"N": "42"}}}
    deleted = aws_cli(
        "delete-item",
        "--table-name",
        table,
        "--key",
        json.dumps({"pk": {"S": "cli"}}),
    )
    assert deleted.returncode == 0, deleted.stderr


def test_the_aws_cli_shows_dynamodb_error_and_message(
    aws_cli: Callable[..., subprocess.CompletedProcess[str]], table_factory: Callable[..., Any]
) -> None:
    table = table_factory()
    failed = aws_cli(
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
