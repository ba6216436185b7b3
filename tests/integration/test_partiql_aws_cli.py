"""PartiQL through the AWS CLI (`aws dynamodb execute-statement`), as a user types it, with
the CLI's own paging over NextToken and DynamoDB's error text in its output."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

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


def test_execute_statement_with_the_aws_cli(
    endpoint: str, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    table = table_factory(hash_key="pk", range_key="sk", range_type="N")
    for i in range(5):
        insert = aws(
            endpoint,
            tmp_path,
            "execute-statement",
            "--statement",
            f"INSERT INTO \"{table}\" VALUE {{'pk': 'cli', 'sk': {i}}}",
        )
        assert insert.returncode == 0, insert.stderr

    # execute-statement is not paginated by the CLI: one page, and the NextToken to go on.
    select = aws(
        endpoint,
        tmp_path,
        "execute-statement",
        "--statement",
        f'SELECT sk FROM "{table}" WHERE pk = ?',
        "--parameters",
        json.dumps([{"S": "cli"}]),
        "--limit",
        "2",
    )
    assert select.returncode == 0, select.stderr
    assert [item["sk"]["N"] for item in json.loads(select.stdout)["Items"]] == ["0", "1"]
    token = json.loads(select.stdout)["NextToken"]
    rest = aws(
        endpoint,
        tmp_path,
        "execute-statement",
        "--statement",
        f'SELECT sk FROM "{table}" WHERE pk = ?',
        "--parameters",
        json.dumps([{"S": "cli"}]),
        "--next-token",
        token,
    )
    assert rest.returncode == 0, rest.stderr
    assert [item["sk"]["N"] for item in json.loads(rest.stdout)["Items"]] == ["2", "3", "4"]

    duplicate = aws(
        endpoint,
        tmp_path,
        "execute-statement",
        "--statement",
        f"INSERT INTO \"{table}\" VALUE {{'pk': 'cli', 'sk': 0}}",
    )
    assert duplicate.returncode != 0
    assert "DuplicateItemException" in duplicate.stderr
    assert "Duplicate primary key exists in table" in duplicate.stderr
