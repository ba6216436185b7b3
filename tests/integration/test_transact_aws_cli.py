"""Transactions through the AWS CLI, as a user types them: transact-write-items with a
condition that cancels it (DynamoDB's text in the CLI's error), transact-get-items, and
execute-transaction."""

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


def test_transactions_with_the_aws_cli(
    endpoint: str, ddb: Any, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    table = table_factory()
    items = [
        {"Put": {"TableName": table, "Item": {"pk": {"S": "a"}, "n": {"N": "1"}}}},
        {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}, "n": {"N": "2"}}}},
    ]
    write = aws(endpoint, tmp_path, "transact-write-items", "--transact-items", json.dumps(items))
    assert write.returncode == 0, write.stderr

    cancelled = [
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": {"pk": {"S": "a"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {"Delete": {"TableName": table, "Key": {"pk": {"S": "b"}}}},
    ]
    refused = aws(
        endpoint, tmp_path, "transact-write-items", "--transact-items", json.dumps(cancelled)
    )
    assert refused.returncode != 0
    assert "TransactionCanceledException" in refused.stderr
    assert (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[ConditionalCheckFailed, None]"
    ) in refused.stderr

    gets = [{"Get": {"TableName": table, "Key": {"pk": {"S": k}}}} for k in ("a", "b")]
    read = aws(endpoint, tmp_path, "transact-get-items", "--transact-items", json.dumps(gets))
    assert read.returncode == 0, read.stderr
    responses = json.loads(read.stdout)["Responses"]
    assert [r["Item"]["n"]["N"] for r in responses] == ["1", "2"]

    statements = [{"Statement": f"UPDATE \"{table}\" SET n = n + 10 WHERE pk = 'a'"}]
    partiql = aws(
        endpoint, tmp_path, "execute-transaction", "--transact-statements", json.dumps(statements)
    )
    assert partiql.returncode == 0, partiql.stderr
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "11"}
