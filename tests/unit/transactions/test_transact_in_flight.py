"""Transactions in flight: a log that applies records a few loop turns after they are
appended lets requests overlap, so that the pending overlay and the token states are seen."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keeldb.engine.database import Database
from keeldb.engine.item_store import items_state
from keeldb.model.errors import (
    ConditionalCheckFailedException,
    IdempotentParameterMismatchException,
    TransactionCanceledException,
    TransactionInProgressException,
)
from keeldb.storage.memory import MemoryStore


async def database(lagging_log: type) -> Database:
    db = Database(MemoryStore())
    db.attach_log(lagging_log(db.apply))
    await db.dispatch(
        "CreateTable",
        {
            "TableName": "ttt",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    return db


def put(pk: str, condition: str | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"TableName": "ttt", "Item": {"pk": {"S": pk}}}
    if condition is not None:
        action["ConditionExpression"] = condition
    return {"Put": action}


def test_a_retry_while_the_first_is_in_flight_is_in_progress(lagging_log: type) -> None:
    async def scenario() -> None:
        db = await database(lagging_log)
        request = {"TransactItems": [put("a")], "ClientRequestToken": "tok"}
        first = asyncio.create_task(db.dispatch("TransactWriteItems", request))
        await asyncio.sleep(0)  # the first is proposed, not applied
        with pytest.raises(TransactionInProgressException):
            await db.dispatch("TransactWriteItems", request)
        other = {"TransactItems": [put("b")], "ClientRequestToken": "tok"}
        with pytest.raises(IdempotentParameterMismatchException):
            await db.dispatch("TransactWriteItems", other)
        await first
        assert await db.dispatch("TransactWriteItems", request) == {}

    asyncio.run(scenario())


def test_writes_behind_a_pending_transaction_evaluate_on_its_images(lagging_log: type) -> None:
    async def scenario() -> None:
        db = await database(lagging_log)
        txn = asyncio.create_task(
            db.dispatch("TransactWriteItems", {"TransactItems": [put("a"), put("b")]})
        )
        await asyncio.sleep(0)
        assert items_state(db).pending  # both images are in the overlay
        # A plain conditional put and a second transaction both see the pending items.
        with pytest.raises(ConditionalCheckFailedException):
            await db.dispatch(
                "PutItem",
                {
                    "TableName": "ttt",
                    "Item": {"pk": {"S": "a"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                },
            )
        with pytest.raises(TransactionCanceledException) as caught:
            await db.dispatch(
                "TransactWriteItems",
                {"TransactItems": [put("c"), put("b", "attribute_not_exists(pk)")]},
            )
        assert [r["Code"] for r in caught.value.reasons] == ["None", "ConditionalCheckFailed"]
        await txn
        assert not items_state(db).pending

    asyncio.run(scenario())


def test_a_failed_proposal_leaves_no_image_behind(lagging_log: type) -> None:
    class FailingLog(lagging_log):  # type: ignore[valid-type,misc]
        async def append(self, record: bytes) -> int:
            await asyncio.sleep(0)
            raise OSError("the disk is gone")

    async def scenario() -> None:
        db = await database(lagging_log)
        db._log = FailingLog(db.apply)
        with pytest.raises(OSError):
            await db.dispatch("TransactWriteItems", {"TransactItems": [put("a"), put("b")]})
        assert items_state(db).pending == {}

    asyncio.run(scenario())
