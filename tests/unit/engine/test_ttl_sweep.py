"""The Time to Live expiry rule and the sweeper, over the in-memory store with a fake clock: which
items expire, that each expiry is a marked delete record decided on the item's latest view, that
passes are bounded and resume, and that the background task runs and stops cleanly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from keeldb.engine import catalog, ttl
from keeldb.engine.database import Database, decode_record
from keeldb.engine.item_store import items_state
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.storage.protocols import Entry

NOW = 1_800_000_000.0  # a fixed instant for the fake clock (2027-01-15T08:00:00Z)
HOUR = 3600
FIVE_YEARS = 5 * 365 * 86400
# Bounds for the tests that run the background task on a real event loop.
SWEEPER_WAIT_SECONDS_MAX = 5.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class HeldLog:
    """A log whose appends wait until `release()`: proposals stay in flight meanwhile, as they
    do while a real log waits for its disk or its quorum."""

    def __init__(self, apply: Any) -> None:
        self._apply = apply
        self._lsn = 0
        self.held = False
        self._waiting: list[tuple[int, bytes, asyncio.Future[None]]] = []

    async def append(self, record: bytes) -> int:
        self._lsn += 1
        lsn = self._lsn
        if not self.held:
            self._apply([(lsn, record)])
            return lsn
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((lsn, record, done))
        await done
        return lsn

    def pending(self) -> int:
        return len(self._waiting)

    def release(self) -> None:
        self.held = False
        waiting, self._waiting = self._waiting, []
        for lsn, record, done in waiting:
            self._apply([(lsn, record)])
            done.set_result(None)

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


class FailingLog(MemoryLog):
    """A memory log that refuses the next `failures` TTL deletions, as a log that lost its
    disk or its quorum would."""

    def __init__(self, apply: Any, failures: int) -> None:
        super().__init__(apply)
        self.failures = failures

    async def append(self, record: bytes) -> int:
        if self.failures and decode_record(record).get(ttl.TTL_RECORD_FLAG):
            self.failures -= 1
            raise OSError("log unavailable")
        return await super().append(record)


class Node:
    """A database with one table "things" (partition key pk) and a fake clock."""

    def __init__(self, log: str = "memory", failures: int = 0) -> None:
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.clock = FakeClock()
        self.db.state[catalog.CLOCK_STATE_KEY] = self.clock
        self.entries: list[Entry] = []
        self.log: Any
        if log == "held":
            self.log = HeldLog(self._apply)
        elif log == "failing":
            self.log = FailingLog(self._apply, failures)
        else:
            self.log = MemoryLog(self._apply)
        self.db.attach_log(self.log)

    def _apply(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)
        self.db.apply(entries)

    async def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.db.dispatch(op, body)

    async def setup(self, *, enable: bool = True, name: str = "things") -> None:
        await self.call(
            "CreateTable",
            {
                "TableName": name,
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        if enable:
            await self.call(
                "UpdateTimeToLive",
                {
                    "TableName": name,
                    "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expires"},
                },
            )

    async def put(self, pk: str, expires: Any = None, name: str = "things", **extra: Any) -> None:
        item: dict[str, Any] = {"pk": {"S": pk}, **extra}
        if expires is not None:
            item["expires"] = expires if isinstance(expires, dict) else {"N": str(expires)}
        await self.call("PutItem", {"TableName": name, "Item": item})

    async def get(self, pk: str, name: str = "things") -> dict[str, Any] | None:
        answer = await self.call("GetItem", {"TableName": name, "Key": {"pk": {"S": pk}}})
        return answer.get("Item")

    async def keys(self, name: str = "things") -> list[str]:
        answer = await self.call("Scan", {"TableName": name})
        return sorted(item["pk"]["S"] for item in answer["Items"])

    def records(self) -> list[dict[str, Any]]:
        return [decode_record(data) for _, data in self.entries]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# --- The expiry rule ------------------------------------------------------------------------


def _item(value: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": {"S": "a"}}
    if value is not None:
        item["expires"] = value
    return item


@pytest.mark.parametrize(
    ("value", "expired"),
    [
        ({"N": str(int(NOW) - 1)}, True),
        ({"N": str(NOW - 0.5)}, True),
        ({"N": str(int(NOW) - FIVE_YEARS)}, True),  # the oldest expiry still deleted
        ({"N": str(int(NOW) - FIVE_YEARS - 1)}, False),  # more than five years ago: ignored
        ({"N": str(int(NOW))}, False),  # expires at now: not before now
        ({"N": str(int(NOW) + 1)}, False),
        ({"N": str(int(NOW * 1000) - 1000)}, False),  # milliseconds read as seconds: far future
        ({"N": "-1"}, False),  # 1969: far more than five years ago
        ({"N": "0"}, False),
        ({"N": "9" * 38}, False),
        ({"S": str(int(NOW) - 1)}, False),  # a string is not a TTL value
        ({"NS": [str(int(NOW) - 1)]}, False),  # neither is a set of numbers
        ({"L": [{"N": str(int(NOW) - 1)}]}, False),
        ({"M": {"N": {"N": str(int(NOW) - 1)}}}, False),
        ({"BOOL": True}, False),
        ({"NULL": True}, False),
        (None, False),
    ],
)
def test_is_expired_applies_dynamodbs_rule(value: dict[str, Any] | None, expired: bool) -> None:
    assert ttl.is_expired(_item(value), "expires", NOW) is expired


def test_expiry_seconds_reads_the_exact_number() -> None:
    value = {"N": "1800000000.123456789012345678901234567"}
    assert ttl.expiry_seconds(_item(value), "expires") == Decimal(value["N"])


def test_an_attribute_of_another_name_is_not_the_ttl_attribute() -> None:
    assert not ttl.is_expired(_item({"N": "1"}) | {"other": {"N": "1"}}, "other2", NOW)


def test_user_identity_names_the_service_only_for_ttl_deletions() -> None:
    marked = {"kind": "delete", "key": b"k", ttl.TTL_RECORD_FLAG: True}
    assert ttl.user_identity(marked) == {
        "Type": "Service",
        "PrincipalId": "dynamodb.amazonaws.com",
    }
    assert ttl.user_identity({"kind": "delete", "key": b"k"}) is None
    assert ttl.user_identity({"kind": "put", "key": b"k", "item": {}}) is None


# --- One pass -------------------------------------------------------------------------------


def test_a_pass_deletes_exactly_the_expired_items() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("past", NOW - 10)
        await node.put("just-past", NOW - 0.001)
        await node.put("future", NOW + 10)
        await node.put("ancient", NOW - FIVE_YEARS - 10)
        await node.put("string", {"S": str(NOW - 10)})
        await node.put("none")
        result = await ttl.sweep(node.db)
        assert result.deleted_items == 2
        assert result.scanned_items == 6
        assert result.finished
        assert await node.keys() == ["ancient", "future", "none", "string"]

    run(scenario())


def test_an_item_held_by_a_prepared_transaction_waits_for_a_later_pass() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("held", NOW - 10)
        await node.put("free", NOW - 10)
        table = catalog.find_table(node.db, "things")
        assert table is not None
        from keeldb.engine.item_store import storage_key

        held_key = storage_key(table, {"pk": {"S": "held"}})
        items_state(node.db).held[held_key] = "a-transaction"
        result = await ttl.sweep(node.db)  # no error: the held item is passed over
        assert result.deleted_items == 1
        assert await node.keys() == ["held"]
        del items_state(node.db).held[held_key]
        result = await ttl.sweep(node.db)
        assert result.deleted_items == 1
        assert await node.keys() == []

    run(scenario())


def test_expired_items_are_still_read_until_a_pass_deletes_them() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", NOW - 10)
        assert await node.get("a") is not None
        assert await node.keys() == ["a"]
        await ttl.sweep(node.db)
        assert await node.get("a") is None

    run(scenario())


def test_items_expire_as_the_clock_moves() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", NOW + 100)
        assert (await ttl.sweep(node.db)).deleted_items == 0
        node.clock.now += 101
        assert (await ttl.sweep(node.db)).deleted_items == 1
        assert await node.keys() == []

    run(scenario())


def test_a_table_without_ttl_is_left_alone() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup(enable=False)
        await node.put("a", NOW - 10)
        result = await ttl.sweep(node.db)
        assert result.scanned_items == 0
        assert await node.keys() == ["a"]

    run(scenario())


def test_disabling_ttl_stops_deletions() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        node.clock.now += HOUR
        await node.call(
            "UpdateTimeToLive",
            {
                "TableName": "things",
                "TimeToLiveSpecification": {"Enabled": False, "AttributeName": "expires"},
            },
        )
        await node.put("a", NOW)
        await ttl.sweep(node.db)
        assert await node.keys() == ["a"]

    run(scenario())


def test_only_the_configured_attribute_counts() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", None, other={"N": str(NOW - 10)})
        await ttl.sweep(node.db)
        assert await node.keys() == ["a"]

    run(scenario())


def test_a_ttl_deletion_is_a_delete_record_marked_as_the_services() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", NOW - 10)
        await node.call("DeleteItem", {"TableName": "things", "Key": {"pk": {"S": "b"}}})
        await ttl.sweep(node.db)
        deletes = [r for r in node.records() if r["kind"] == "delete"]
        assert len(deletes) == 2
        client, expiry = deletes
        assert ttl.user_identity(client) is None
        assert ttl.user_identity(expiry) == ttl.SERVICE_USER_IDENTITY
        table = catalog.get_table(node.db, "things")
        assert expiry["table"] == table.table_id
        assert expiry["name"] == "things"

    run(scenario())


def test_ttl_deletions_consume_no_write_capacity() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", NOW - 10)
        before = dict(items_state(node.db).write_units)
        await ttl.sweep(node.db)
        assert items_state(node.db).write_units == before
        assert await node.keys() == []

    run(scenario())


def test_the_table_statistics_count_the_deletions() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        for i in range(5):
            await node.put(f"k{i}", NOW - 10 if i % 2 else NOW + 10)
        await ttl.sweep(node.db)
        described = await node.call("DescribeTable", {"TableName": "things"})
        assert described["Table"]["ItemCount"] == 3

    run(scenario())


def test_only_the_tables_with_ttl_are_swept() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.setup(enable=False, name="plain")
        await node.put("a", NOW - 10)
        await node.put("a", NOW - 10, name="plain")
        await ttl.sweep(node.db)
        assert await node.keys() == []
        assert await node.keys("plain") == ["a"]

    run(scenario())


# --- Latest view: a client's write always wins ---------------------------------------------------


def test_an_item_rewritten_while_in_flight_is_not_deleted() -> None:
    async def scenario() -> None:
        node = Node(log="held")
        await node.setup()
        await node.put("a", NOW - 10)  # committed and expired
        node.log.held = True
        # A client extends the item's life; its write is proposed but not yet committed.
        rewrite = asyncio.create_task(node.put("a", NOW + HOUR, note={"S": "renewed"}))
        await asyncio.sleep(0)
        assert node.log.pending() == 1
        sweeping = asyncio.create_task(ttl.sweep(node.db))
        for _ in range(10):
            await asyncio.sleep(0)
        assert node.log.pending() == 1  # the sweeper proposed nothing
        node.log.release()
        await rewrite
        result = await sweeping
        assert result.deleted_items == 0
        item = await node.get("a")
        assert item is not None
        assert item["note"] == {"S": "renewed"}

    run(scenario())


def test_an_item_deleted_while_in_flight_is_not_deleted_again() -> None:
    async def scenario() -> None:
        node = Node(log="held")
        await node.setup()
        await node.put("a", NOW - 10)
        node.log.held = True
        deleting = asyncio.create_task(
            node.call("DeleteItem", {"TableName": "things", "Key": {"pk": {"S": "a"}}})
        )
        await asyncio.sleep(0)
        sweeping = asyncio.create_task(ttl.sweep(node.db))
        for _ in range(10):
            await asyncio.sleep(0)
        assert node.log.pending() == 1
        node.log.release()
        await deleting
        assert (await sweeping).deleted_items == 0

    run(scenario())


def test_a_write_after_the_ttl_delete_follows_it_in_the_log() -> None:
    async def scenario() -> None:
        node = Node(log="held")
        await node.setup()
        await node.put("a", NOW - 10)
        node.log.held = True
        sweeping = asyncio.create_task(ttl.sweep(node.db))
        for _ in range(10):
            await asyncio.sleep(0)
        assert node.log.pending() == 1  # the TTL delete is in flight
        # The client's write is evaluated on the latest view (the item already deleted) and
        # lands after the delete: the new item survives.
        rewrite = asyncio.create_task(node.put("a", NOW + HOUR))
        await asyncio.sleep(0)
        node.log.release()
        node.log.release()
        await rewrite
        assert (await sweeping).deleted_items == 1
        item = await node.get("a")
        assert item is not None
        assert item["expires"] == {"N": str(int(NOW + HOUR))}

    run(scenario())


# --- Bounded passes ---------------------------------------------------------------------------


def test_a_pass_stops_at_its_item_budget_and_the_next_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ttl, "TTL_SCAN_ITEMS_PER_BATCH", 10)

    async def scenario() -> None:
        node = Node()
        await node.setup()
        for i in range(35):
            await node.put(f"k{i:02}", NOW - 10)
        first = await ttl.sweep(node.db, scan_items_max=20)
        assert (first.scanned_items, first.deleted_items, first.finished) == (20, 20, False)
        assert len(await node.keys()) == 15
        second = await ttl.sweep(node.db, scan_items_max=20)
        assert (second.scanned_items, second.deleted_items, second.finished) == (15, 15, True)
        assert await node.keys() == []

    run(scenario())


def test_a_batch_proposes_a_bounded_number_of_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttl, "TTL_DELETES_PER_BATCH", 3)
    in_flight_max = 0

    async def scenario() -> None:
        nonlocal in_flight_max
        node = Node(log="held")
        await node.setup()
        node.log.held = False
        for i in range(10):
            await node.put(f"k{i}", NOW - 10)
        node.log.held = True
        sweeping = asyncio.create_task(ttl.sweep(node.db))
        while not sweeping.done():
            for _ in range(5):
                await asyncio.sleep(0)
            in_flight_max = max(in_flight_max, node.log.pending())
            node.log.release()
            node.log.held = True
        assert (await sweeping).deleted_items == 10

    run(scenario())
    assert in_flight_max == 3


def test_a_pass_after_a_finished_one_starts_again_from_the_first_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ttl, "TTL_SCAN_ITEMS_PER_BATCH", 4)

    async def scenario() -> None:
        node = Node()
        await node.setup()
        for i in range(6):
            await node.put(f"k{i}", NOW + 10)
        assert (await ttl.sweep(node.db)).finished
        node.clock.now += 20
        result = await ttl.sweep(node.db)
        assert (result.scanned_items, result.deleted_items) == (6, 6)

    run(scenario())


def test_cursors_of_deleted_tables_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttl, "TTL_SCAN_ITEMS_PER_BATCH", 2)

    async def scenario() -> None:
        node = Node()
        await node.setup()
        for i in range(5):
            await node.put(f"k{i}", NOW + 10)
        await ttl.sweep(node.db, scan_items_max=2)
        assert len(ttl.sweep_state(node.db).cursors) == 1
        await node.call("DeleteTable", {"TableName": "things"})
        await ttl.sweep(node.db)
        assert ttl.sweep_state(node.db).cursors == {}

    run(scenario())


# --- The background task ---------------------------------------------------------------------


async def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + SWEEPER_WAIT_SECONDS_MAX
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_sweeper_deletes_expired_items_in_the_background() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", NOW - 10)
        await node.put("b", NOW + HOUR)
        passes: list[ttl.SweepResult] = []
        sweeper = ttl.TtlSweeper(node.db, 0.01, on_pass=passes.append)
        sweeper.start()
        try:

            async def gone() -> bool:
                return await node.keys() == ["b"]

            await _wait_until(gone)
        finally:
            await sweeper.stop()
        assert sum(p.deleted_items for p in passes) == 1

    run(scenario())


def test_the_sweeper_waits_one_interval_before_its_first_pass() -> None:
    async def scenario() -> None:
        node = Node()
        await node.setup()
        await node.put("a", NOW - 10)
        sweeper = ttl.TtlSweeper(node.db, 0.2)
        sweeper.start()
        await asyncio.sleep(0.05)
        assert await node.keys() == ["a"]
        await sweeper.stop()

    run(scenario())


def test_stopping_the_sweeper_does_not_wait_for_its_interval() -> None:
    async def scenario() -> float:
        node = Node()
        await node.setup()
        sweeper = ttl.TtlSweeper(node.db, 3600)
        sweeper.start()
        await asyncio.sleep(0)
        started = time.monotonic()
        await sweeper.stop()
        assert sweeper._task is not None
        assert sweeper._task.done()
        return time.monotonic() - started

    assert run(scenario()) < 1.0


def test_stopping_a_sweeper_that_never_started_is_harmless() -> None:
    async def scenario() -> None:
        node = Node()
        await ttl.TtlSweeper(node.db, 1).stop()

    run(scenario())


def test_the_sweeper_retries_after_a_failed_pass() -> None:
    async def scenario() -> None:
        node = Node(log="failing", failures=1)
        await node.setup()
        await node.put("a", NOW - 10)
        sweeper = ttl.TtlSweeper(node.db, 0.01)
        sweeper.start()
        try:

            async def gone() -> bool:
                return await node.keys() == []

            await _wait_until(gone)
        finally:
            await sweeper.stop()
        assert node.log.failures == 0

    run(scenario())


# --- Secondary indexes ------------------------------------------------------------------------


def test_a_ttl_deletion_removes_the_item_from_its_indexes() -> None:
    async def scenario() -> None:
        node = Node()
        await node.call(
            "CreateTable",
            {
                "TableName": "things",
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "owner", "AttributeType": "S"},
                ],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": "by-owner",
                        "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        await node.call(
            "UpdateTimeToLive",
            {
                "TableName": "things",
                "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expires"},
            },
        )
        await node.put("old", NOW - 10, owner={"S": "ann"})
        await node.put("new", NOW + 10, owner={"S": "ann"})

        async def owned() -> list[str]:
            answer = await node.call(
                "Query",
                {
                    "TableName": "things",
                    "IndexName": "by-owner",
                    "KeyConditionExpression": "#o = :o",
                    "ExpressionAttributeNames": {"#o": "owner"},
                    "ExpressionAttributeValues": {":o": {"S": "ann"}},
                },
            )
            return sorted(item["pk"]["S"] for item in answer["Items"])

        assert await owned() == ["new", "old"]
        await ttl.sweep(node.db)
        assert await owned() == ["new"]

    run(scenario())


def test_one_big_table_does_not_keep_the_others_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttl, "TTL_SCAN_ITEMS_PER_BATCH", 5)

    async def scenario() -> None:
        node = Node()
        await node.setup(name="big")
        await node.setup(name="small")
        for i in range(30):
            await node.put(f"k{i:02}", NOW + 10, name="big")
        await node.put("s", NOW - 10, name="small")
        # Each pass may read 5 items: the first reads from "big", the second starts with
        # "small" although "big" is not finished.
        first = await ttl.sweep(node.db, scan_items_max=5)
        assert (first.scanned_items, first.finished) == (5, False)
        assert await node.keys("small") == ["s"]
        second = await ttl.sweep(node.db, scan_items_max=5)
        assert second.deleted_items == 1
        assert await node.keys("small") == []

    run(scenario())


def test_a_pass_whose_budget_ends_with_a_table_resumes_at_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ttl, "TTL_SCAN_ITEMS_PER_BATCH", 10)

    async def scenario() -> None:
        node = Node()
        await node.setup(name="first")
        await node.setup(name="second")
        for i in range(5):
            await node.put(f"k{i}", NOW + 10, name="first")
        await node.put("s", NOW - 10, name="second")
        # "first" is read to its end exactly when the budget runs out: "second" is next.
        one = await ttl.sweep(node.db, scan_items_max=5)
        assert (one.scanned_items, one.deleted_items, one.finished) == (5, 0, False)
        two = await ttl.sweep(node.db, scan_items_max=5)
        assert (two.scanned_items, two.deleted_items) == (6, 1)

    run(scenario())
