"""A router's calls to its own node's storage service (`Router.local_op`) answer exactly as
calls through the channel handler, which encode the answer and raise it again at the router:
the same results, and errors of the same type, status and body."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

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


async def _prepare(router: Any, storage: Any, local: str) -> None:
    """The table, and how the router calls its node's storage service: "no" (through the
    channel handler), "local_op" (`serve_op` directly) or "attached" (`attach_local`)."""
    await router.dispatch(
        "CreateTable",
        {
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    if local == "local_op":
        router.local_op = functools.partial(storage.serve_op, local=True)
    elif local == "attached":
        router.attach_local(storage)


async def _outcomes(directory: Path, *, local: str) -> list[tuple[str, Any]]:
    async with inprocess.open_cluster(directory, PARTITIONS) as (router, storage):
        await _prepare(router, storage, local)
        served: list[str] = []
        serve_op = storage.serve_op

        async def counted(sender: str, payload: Any, check: bool, *, local: bool) -> Any:
            served.append(payload["op"])
            return await serve_op(sender, payload, check, local=local)

        storage.serve_op = counted  # type: ignore[method-assign]
        if local != "no":
            router.local_op = functools.partial(counted, local=True)
        outcomes = [await _outcome(router, op, body) for op, body in _requests()]
        # What the router learned from the answers is the same too.
        learned = (dict(router.leaders), dict(router.seen), dict(router.stats))
        return [*outcomes, ("learned", learned), ("served", served)]


def test_local_calls_answer_and_fail_exactly_as_calls_through_the_channel(tmp_path: Path) -> None:
    through_channel = asyncio.run(_outcomes(tmp_path / "channel", local="no"))
    local = asyncio.run(_outcomes(tmp_path / "local", local="local_op"))
    assert local == through_channel
    # Item requests run on the replica's database from the router (`Router._item`),
    # without a call of the storage service's `serve_op`.
    attached = asyncio.run(_outcomes(tmp_path / "attached", local="attached"))
    assert attached[:-1] == through_channel[:-1]
    assert attached[-1] == ("served", ["TransactWriteItems", "Query"])
    assert "GetItem" in through_channel[-1][1]
    local = local[:-2]  # the answers alone
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


async def _refused_once(directory: Path, *, local: str, error: Exception) -> list[Any]:
    """Every partition's database fails its first item operation with a group's operating
    error (the operation did not happen); the router asks again."""
    async with inprocess.open_cluster(directory, PARTITIONS) as (router, storage):
        await _prepare(router, storage, local)
        for group_id, replica in storage.replicas.items():
            if group_id.startswith("p"):
                dispatch = replica.database.dispatch
                refused: list[str] = []

                async def once(
                    op: str, body: Any, dispatch: Any = dispatch, refused: Any = refused
                ) -> Any:
                    if not refused:
                        refused.append(op)
                        raise error
                    return await dispatch(op, body)

                replica.database.dispatch = once  # type: ignore[method-assign]
        outcomes = [await _outcome(router, op, body) for op, body in _requests()[:4]]
        return [*outcomes, dict(router.leaders), dict(router.seen), dict(router.stats)]


@pytest.mark.interpreted
def test_a_local_item_request_refused_by_its_group_goes_on_as_through_local_calls(
    tmp_path: Path,
) -> None:
    from keeldb.cluster.group import GroupBusy

    through_local_op = asyncio.run(
        _refused_once(tmp_path / "local", local="local_op", error=GroupBusy())
    )
    attached = asyncio.run(
        _refused_once(tmp_path / "attached", local="attached", error=GroupBusy())
    )
    assert attached == through_local_op
    assert [kind for kind, _ in attached[:4]] == ["ok"] * 4
    assert attached[-1]["redirects"] >= 1
