"""A global index being backfilled survives a server killed with SIGKILL: after the restart the
backfill resumes from its last logged batch, and the index ends ACTIVE with exactly the
entries the table's items call for."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

ITEMS = 1500  # fifteen backfill batches: the kill lands before the last one in practice
INDEX_WAIT_SECONDS_MAX = 30.0


def _index(ddb: Any, table: str) -> dict[str, Any] | None:
    described = ddb.describe_table(TableName=table)["Table"]
    indexes: list[dict[str, Any]] = described.get("GlobalSecondaryIndexes", [])
    return indexes[0] if indexes else None


def _fill_and_index(
    ddb: Any, table: str, item_for: Callable[[int], dict[str, Any]], projection: str
) -> None:
    """Create `table`, write ITEMS items, then ask for a global index on `tag`: the backfill
    starts in the background."""
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, ITEMS, 25):
        ddb.batch_write_item(
            RequestItems={
                table: [{"PutRequest": {"Item": item_for(i)}} for i in range(start, start + 25)]
            }
        )
    ddb.update_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "tag", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "by_tag",
                    "KeySchema": [{"AttributeName": "tag", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": projection},
                }
            }
        ],
    )


def test_a_backfill_interrupted_by_sigkill_resumes_after_restart(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Any
) -> None:
    data = tmp_path / "data"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    _fill_and_index(
        ddb,
        "backfilled",
        # Every third item lacks the index key: it stays out.
        lambda i: {"pk": {"S": f"k{i:05}"}, **({} if i % 3 == 0 else {"tag": {"S": f"t{i % 4}"}})},
        "ALL",
    )
    first.stop(signal.SIGKILL)

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    deadline = time.monotonic() + INDEX_WAIT_SECONDS_MAX
    while True:
        index = _index(ddb, "backfilled")
        assert index is not None
        if index["IndexStatus"] == "ACTIVE":
            break
        assert index["IndexStatus"] == "CREATING"
        assert time.monotonic() < deadline, "backfill did not finish after the restart"
        time.sleep(0.05)
    expected = ITEMS - len(range(0, ITEMS, 3))
    assert index["ItemCount"] == expected
    counted = 0
    for tag in range(4):
        answer = ddb.query(
            TableName="backfilled",
            IndexName="by_tag",
            KeyConditionExpression="tag = :t",
            ExpressionAttributeValues={":t": {"S": f"t{tag}"}},
            Select="COUNT",
        )
        assert "LastEvaluatedKey" not in answer
        counted += answer["Count"]
    assert counted == expected


def test_a_server_stopped_during_a_backfill_exits_cleanly_and_resumes_it(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Any
) -> None:
    data = tmp_path / "data"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    _fill_and_index(
        ddb, "stopped", lambda i: {"pk": {"S": f"k{i:05}"}, "tag": {"S": "t"}}, "KEYS_ONLY"
    )
    assert first.stop(signal.SIGTERM) == 0
    assert "Traceback" not in first.output()

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    deadline = time.monotonic() + INDEX_WAIT_SECONDS_MAX
    while (index := _index(ddb, "stopped")) is not None and index["IndexStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, "backfill did not finish after the restart"
        time.sleep(0.05)
    assert index is not None
    assert index["ItemCount"] == ITEMS
