"""A router's calls to its own node's storage service (`Router.local_op`) answer exactly as
calls through the channel handler, which encode the answer and raise it again at the router:
the same results, and errors of the same type, status and body."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from keeldb.cluster import inprocess
from keeldb.model.errors import ClientError

TABLE = "local"
PARTITIONS = 4


def _requests() -> list[tuple[str, dict[str, Any]]]:
    key = {"pk": {"S": "a"}}
    return [
        ("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": "a"}, "n": {"N": "1"}}}),
        ("GetItem", {"TableName": TABLE, "Key": key}),
        ("GetItem", {"TableName": TABLE, "Key": key, "ConsistentRead": True}),
        (
            "UpdateItem",
            {
                "TableName": TABLE,
                "Key": key,
                "UpdateExpression": "SET n = n + :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
                "ReturnValues": "ALL_NEW",
            },
        ),
        (
            "PutItem",
            {
                "TableName": TABLE,
                "Item": {"pk": {"S": "a"}},
                "ConditionExpression": "attribute_not_exists(pk)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            },
        ),
        ("GetItem", {"TableName": TABLE, "Key": {"pk": {"N": "1"}}}),
        ("GetItem", {"TableName": TABLE, "Key": {}}),
        ("GetItem", {"TableName": "missing", "Key": key}),
        ("DeleteItem", {"TableName": TABLE, "Key": key, "ConditionExpression": "n = :v"}),
        (
            "TransactWriteItems",
            {
                "TransactItems": [
                    {
                        "ConditionCheck": {
                            "TableName": TABLE,
                            "Key": key,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                ]
            },
        ),
        ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :a"}),
    ]


async def _outcome(router: Any, op: str, body: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", await router.dispatch(op, body)
    except ClientError as error:
        return "error", (error.status, error.body())


async def _outcomes(directory: Path, *, local: bool) -> list[tuple[str, Any]]:
    async with inprocess.open_cluster(directory, PARTITIONS) as (router, storage):
        await router.dispatch(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        if local:
            router.local_op = functools.partial(storage.serve_op, local=True)
        return [await _outcome(router, op, body) for op, body in _requests()]


def test_local_calls_answer_and_fail_exactly_as_calls_through_the_channel(tmp_path: Path) -> None:
    through_channel = asyncio.run(_outcomes(tmp_path / "channel", local=False))
    local = asyncio.run(_outcomes(tmp_path / "local", local=True))
    assert local == through_channel
    kinds = [kind for kind, _ in local]
    # The comparison covers both answers and errors (several error types among them).
    assert kinds.count("ok") >= 4
    assert kinds.count("error") >= 5
    types = {value[1]["__type"].rsplit("#", 1)[1] for kind, value in local if kind == "error"}
    assert {
        "ConditionalCheckFailedException",
        "ValidationException",
        "ResourceNotFoundException",
        "TransactionCanceledException",
    } <= types
