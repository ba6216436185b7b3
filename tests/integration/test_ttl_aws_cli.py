"""Time to Live through the AWS CLI (`aws dynamodb update-time-to-live` and
`describe-time-to-live`), as a user types them, error output included."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

# Each `aws` invocation starts a Python interpreter and loads botocore: seconds, not millis.
pytestmark = pytest.mark.slow


def test_enable_and_describe_ttl_with_the_aws_cli(
    aws_cli: Callable[..., subprocess.CompletedProcess[str]], table_factory: Callable[..., str]
) -> None:
    table = table_factory()
    enable = aws_cli(
        "update-time-to-live",
        "--table-name",
        table,
        "--time-to-live-specification",
        "Enabled=true,AttributeName=ttl",
    )
    assert enable.returncode == 0, enable.stderr
    answer: dict[str, Any] = json.loads(enable.stdout)
    assert answer == {"TimeToLiveSpecification": {"Enabled": True, "AttributeName": "ttl"}}
    describe = aws_cli("describe-time-to-live", "--table-name", table)
    assert describe.returncode == 0, describe.stderr
    assert json.loads(describe.stdout) == {
        "TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    }
    again = aws_cli(
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
