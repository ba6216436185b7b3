"""Concurrent bank transfers through the engine with a log that applies records a moment
after they are appended (so transactions overlap in flight), recorded as list-append
histories and checked: the real implementation yields a valid history and an invariant
total; the deliberately broken variant (conditions and updates evaluated on committed state
instead of the latest view) is caught by the checker."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from keeldb.engine import transactions
from keeldb.engine.database import Database
from keeldb.model.errors import TransactionCanceledException
from keeldb.storage.memory import MemoryStore
from keeldb.txn.checker import FAIL, OK, Txn, append, check, read

ACCOUNTS = 5
OPENING_BALANCE = 100


def account(number: int) -> dict[str, Any]:
    return {"pk": {"S": f"acct{number}"}}


async def run_bank(lagging_log: type, broken: bool, seed: int) -> tuple[list[Txn], list[int]]:
    db = Database(MemoryStore())
    db.attach_log(lagging_log(db.apply))
    await db.dispatch(
        "CreateTable",
        {
            "TableName": "bank",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    for number in range(ACCOUNTS):
        item = {**account(number), "bal": {"N": str(OPENING_BALANCE)}, "hist": {"L": []}}
        await db.dispatch("PutItem", {"TableName": "bank", "Item": item})
    transactions.transactions_state(db).evaluate_on_committed = broken
    rng = random.Random(seed)
    history: list[Txn] = []
    totals: list[int] = []
    clock = 0

    def tick() -> int:
        nonlocal clock
        clock += 1
        return clock

    async def transfer(number: int) -> None:
        source, target = rng.sample(range(ACCOUNTS), 2)
        amount = rng.randint(1, 30)
        tid = f"x{number}"
        values = {":a": {"N": str(amount)}, ":id": {"L": [{"S": tid}]}}
        invoke = tick()
        try:
            await db.dispatch(
                "TransactWriteItems",
                {
                    "TransactItems": [
                        {
                            "Update": {
                                "TableName": "bank",
                                "Key": account(source),
                                "UpdateExpression": "SET bal = bal - :a, hist = list_append(hist, :id)",
                                "ConditionExpression": "bal >= :a",
                                "ExpressionAttributeValues": values,
                            }
                        },
                        {
                            "Update": {
                                "TableName": "bank",
                                "Key": account(target),
                                "UpdateExpression": "SET bal = bal + :a, hist = list_append(hist, :id)",
                                "ExpressionAttributeValues": values,
                            }
                        },
                    ]
                },
            )
            status = OK
        except TransactionCanceledException:
            status = FAIL
        ops = (append(f"acct{source}", tid), append(f"acct{target}", tid))
        history.append(Txn(tid, ops, status, invoke, tick()))

    async def audit(number: int) -> None:
        invoke = tick()
        answer = await db.dispatch(
            "TransactGetItems",
            {
                "TransactItems": [
                    {"Get": {"TableName": "bank", "Key": account(i)}} for i in range(ACCOUNTS)
                ]
            },
        )
        ops = []
        total = 0
        for i, response in enumerate(answer["Responses"]):
            found = response["Item"]
            total += int(found["bal"]["N"])
            ops.append(read(f"acct{i}", [e["S"] for e in found["hist"]["L"]]))
        totals.append(total)
        history.append(Txn(f"r{number}", tuple(ops), OK, invoke, tick()))

    for wave in range(8):
        tasks = [transfer(wave * 10 + i) for i in range(6)] + [audit(wave * 10 + 9)]
        await asyncio.gather(*tasks)
    await audit(10_000)
    return history, totals


def test_concurrent_transfers_are_serializable_and_keep_the_total(lagging_log: type) -> None:
    for seed in range(3):
        history, totals = asyncio.run(run_bank(lagging_log, broken=False, seed=seed))
        assert set(totals) == {ACCOUNTS * OPENING_BALANCE}
        committed = [t for t in history if t.status == OK and t.id.startswith("x")]
        assert len(committed) > 10  # the transfers really ran, most of them commit
        result = check(history, realtime=True)
        assert result.valid, result.anomalies[:3]


def test_evaluating_on_committed_state_is_caught_by_the_checker(lagging_log: type) -> None:
    caught = set()
    for seed in range(3):
        history, _ = asyncio.run(run_bank(lagging_log, broken=True, seed=seed))
        result = check(history, realtime=True)
        caught |= result.kinds()
    assert caught & {"lost-append", "incompatible-order", "G0", "G1c", "G-single", "G2"}
