"""Time to Live through the AWS CLI (`aws dynamodb update-time-to-live` and
`describe-time-to-live`), as a user types them, error output included."""

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


def test_enable_and_describe_ttl_with_the_aws_cli(
    endpoint: str, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    table = table_factory()
    enable = aws(
        endpoint,
        tmp_path,
        "update-time-to-live",
        "--table-name",
        table,
        "--time-to-live-specification",
        "Enabled=true,AttributeName=ttl",
    )
    assert enable.returncode == 0, enable.stderr
    answer: dict[str, Any] = json.loads(enable.stdout)
    assert answer == {"TimeToLiveSpecification": {"Enabled": True, "AttributeName": "ttl"}}
    describe = aws(endpoint, tmp_path, "describe-time-to-live", "--table-name", table)
    assert describe.returncode == 0, describe.stderr
    assert json.loads(describe.stdout) == {
        "TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    }
    again = aws(
        endpoint,
        tmp_path,
        "update-time-to-live",
        "--table-name",
        table,
        "--time-to-live-specification",
        "Enabled=true,AttributeName=ttl",
    )
    assert again.returncode != 0
    assert (
        "An error occurred (ValidationException) when calling the UpdateTimeToLive operation: "
        "TimeToLive is already enabled"
    ) in again.stderr
