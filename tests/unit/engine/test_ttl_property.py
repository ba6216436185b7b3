"""Property test of the Time to Live sweep: whatever the items, their TTL values, the batch and
budget sizes and the clock, passes run until one finishes leave exactly the items that a plain
reference of DynamoDB's rule keeps, and never touch a table without TTL."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine import catalog, ttl
from keeldb.engine.database import Database
from keeldb.storage.memory import MemoryLog, MemoryStore

NOW = 1_800_000_000
FIVE_YEARS = 5 * 365 * 86400
PASSES_MAX = 200  # far more than the largest case needs; a sweep that never ends fails

# TTL values around the interesting instants (now, five years ago), and values of other types.
offsets = st.sampled_from([-FIVE_YEARS - 1, -FIVE_YEARS, -1, 0, 1]) | st.integers(
    -2 * FIVE_YEARS, FIVE_YEARS
)
numbers = offsets.map(lambda d: {"N": str(NOW + d)}) | st.decimals(
    min_value=NOW - FIVE_YEARS - 5, max_value=NOW + 5, places=3
).map(lambda d: {"N": str(d)})
others = st.sampled_from(
    [{"S": str(NOW - 10)}, {"NS": [str(NOW - 10)]}, {"BOOL": True}, {"NULL": True}, None]
)
values = numbers | others


def reference_expired(value: dict[str, Any] | None, now: Decimal) -> bool:
    if value is None or list(value) != ["N"]:
        return False
    expiry = Decimal(value["N"])
    return now - FIVE_YEARS <= expiry < now


@settings(max_examples=60, deadline=None)
@given(
    items=st.dictionaries(st.text("abcdef", min_size=1, max_size=4), values, max_size=40),
    batch=st.integers(1, 12),
    deletes=st.integers(1, 12),
    budget=st.integers(1, 30),
    now_offset=st.decimals(min_value=-2, max_value=2, places=2),
)
def test_passes_keep_exactly_what_the_reference_keeps(
    items: dict[str, dict[str, Any] | None],
    batch: int,
    deletes: int,
    budget: int,
    now_offset: Decimal,
) -> None:
    now = Decimal(NOW) + now_offset
    saved = (ttl.TTL_SCAN_ITEMS_PER_BATCH, ttl.TTL_DELETES_PER_BATCH)
    ttl.TTL_SCAN_ITEMS_PER_BATCH, ttl.TTL_DELETES_PER_BATCH = batch, deletes
    try:
        kept, plain = asyncio.run(_scenario(items, budget, float(now)))
    finally:
        ttl.TTL_SCAN_ITEMS_PER_BATCH, ttl.TTL_DELETES_PER_BATCH = saved
    expected = sorted(pk for pk, value in items.items() if not reference_expired(value, now))
    assert kept == expected
    assert plain == sorted(items)


async def _scenario(
    items: dict[str, dict[str, Any] | None], budget: int, now: float
) -> tuple[list[str], list[str]]:
    store = MemoryStore()
    db = Database(store)
    db.state[catalog.CLOCK_STATE_KEY] = lambda: now
    db.attach_log(MemoryLog(db.apply))
    for name in ("swept", "plain"):
        await db.dispatch(
            "CreateTable",
            {
                "TableName": name,
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        for pk, value in items.items():
            item: dict[str, Any] = {"pk": {"S": pk}}
            if value is not None:
                item["ttl"] = value
            await db.dispatch("PutItem", {"TableName": name, "Item": item})
    await db.dispatch(
        "UpdateTimeToLive",
        {
            "TableName": "swept",
            "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "ttl"},
        },
    )
    for _ in range(PASSES_MAX):
        if (await ttl.sweep(db, scan_items_max=budget)).finished:
            break
    else:
        raise AssertionError(f"no pass finished in {PASSES_MAX}")

    async def keys(name: str) -> list[str]:
        answer = await db.dispatch("Scan", {"TableName": name, "ConsistentRead": True})
        return sorted(item["pk"]["S"] for item in answer["Items"])

    return await keys("swept"), await keys("plain")
