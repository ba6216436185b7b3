"""Timestamp order between transactions across partitions and everything else a partition
does, on in-process databases (the bank tests' ordering rules, one at a time):

- a plain write, or a single-partition transaction, takes the timestamps of what it saw, so
  a transaction across partitions with an earlier timestamp cannot be applied after it;
- a member that begins to lead raises its floor to its clock, since the read timestamps
  the previous leader granted lived only in that leader's memory;
- a share cancelled before its prepare arrived refuses that prepare (it would hold its
  items with no ledger entry left to finish them).

Each is shown as the history it prevents: without the rule, the older transaction would
be prepared (the assertion on TransactionConflict then fails).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from keeldb.engine import catalog
from keeldb.engine import transactions_partition as tp
from keeldb.engine.database import Database
from keeldb.engine.item_store import items_state, storage_key
from keeldb.storage.memory import MemoryLog, MemoryStore

TABLE = "bank"


class LeaderLog(MemoryLog):
    """A MemoryLog that says it leads at a ballot (as a cluster group's log does)."""

    ballot: Any = None

    @property
    def is_leader(self) -> bool:
        return self.ballot is not None

    @property
    def replica(self) -> Any:
        return SimpleNamespace(ballot=self.ballot)


class Partition:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.log = LeaderLog(self.db.apply, start_lsn=self.store.applied_lsn())
        self.db.attach_log(self.log)
        self.loop = asyncio.new_event_loop()
        self(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.loop.run_until_complete(self.db.dispatch(operation, body))
        return result

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def key(self, pk: str) -> bytes:
        table = catalog.find_table(self.db, TABLE)
        assert table is not None
        return storage_key(table, {"pk": {"S": pk}})

    def put(self, pk: str, n: int) -> None:
        self("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": pk}, "n": {"N": str(n)}}})

    def prepare(self, txid: str, ts: int, items: list[dict[str, Any]]) -> list[str | None]:
        reasons = self.run(tp.prepare(self.db, txid, ts, items))
        return [None if r is None else r["Code"] for r in reasons]

    def commit(self, txid: str) -> None:
        self.run(tp.commit(self.db, txid))

    def cancel(self, txid: str) -> None:
        self.run(tp.cancel(self.db, txid))


def put_action(pk: str, n: int) -> dict[str, Any]:
    return {"Put": {"TableName": TABLE, "Item": {"pk": {"S": pk}, "n": {"N": str(n)}}}}


def check_action(pk: str) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": TABLE,
            "Key": {"pk": {"S": pk}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }


@pytest.fixture
def part() -> Any:
    partition = Partition()
    yield partition
    partition.loop.close()


def test_a_plain_write_after_a_transactional_read_is_ordered_after_that_read(
    part: Partition,
) -> None:
    part.put("x", 1)
    # An audit at 200 reads x; then a plain write changes x.
    assert tp.read_at(part.db, 200, [part.key("x")]) == [None]
    part.put("x", 2)
    # A transaction at 150 would be serialised before the audit, yet it would read the
    # plain write the audit did not see: it must conflict.
    assert part.prepare("t1", 150, [check_action("x")]) == ["TransactionConflict"]
    # A later one reads it fine.
    assert part.prepare("t2", 250, [check_action("x")]) == [None]
    part.cancel("t2")


def test_each_item_of_a_batch_write_is_ordered_after_the_reads_of_that_item(
    part: Partition,
) -> None:
    part.put("x", 1)
    assert tp.read_at(part.db, 200, [part.key("x")]) == [None]
    part(
        "BatchWriteItem",
        {
            "RequestItems": {
                TABLE: [
                    {"PutRequest": {"Item": {"pk": {"S": "x"}, "n": {"N": "2"}}}},
                    {"PutRequest": {"Item": {"pk": {"S": "y"}, "n": {"N": "2"}}}},
                ]
            }
        },
    )
    assert part.prepare("t1", 150, [check_action("x")]) == ["TransactionConflict"]
    # y was read by nobody: an older transaction may still read it.
    assert part.prepare("t2", 150, [check_action("y")]) == [None]
    part.cancel("t2")


def test_a_plain_write_alone_changes_no_timestamp(part: Partition) -> None:
    part.put("x", 1)
    assert part.prepare("t1", 10, [check_action("x")]) == [None]
    part.cancel("t1")


def test_a_single_partition_transaction_carries_the_timestamps_it_saw(part: Partition) -> None:
    part.put("x", 1)
    part.put("y", 1)
    # A transaction across partitions at 300 writes y here.
    assert part.prepare("t1", 300, [put_action("y", 5)]) == [None]
    part.commit("t1")
    # A single-partition transaction reads y (its condition) and writes x.
    part(
        "TransactWriteItems",
        {
            "TransactItems": [
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "y"}},
                        "ConditionExpression": "n = :five",
                        "ExpressionAttributeValues": {":five": {"N": "5"}},
                    }
                },
                put_action("x", 7),
            ]
        },
    )
    # x now holds what a transaction at 300 decided: one at 250 must not read it.
    assert part.prepare("t2", 250, [check_action("x")]) == ["TransactionConflict"]
    assert part.prepare("t3", 350, [check_action("x")]) == [None]
    part.cancel("t3")


def test_a_new_leader_refuses_transactions_older_than_its_clock(part: Partition) -> None:
    part.put("x", 1)
    old = time.time_ns() // 1000 - 10_000_000  # ten seconds ago
    part.log.ballot = (1, "node1")
    assert part.prepare("t1", old, [put_action("x", 2)]) == ["TransactionConflict"]
    fresh = time.time_ns() // 1000 + 2 * tp.CLOCK_SKEW_US_MAX
    assert part.prepare("t2", fresh, [put_action("x", 3)]) == [None]
    part.commit("t2")
    # Leading again at a later ballot: the floor moves to the clock again.
    time.sleep(2 * tp.CLOCK_SKEW_US_MAX / 1e6)
    part.log.ballot = (2, "node1")
    assert part.prepare("t3", fresh + 1, [put_action("x", 4)]) == ["TransactionConflict"]


def test_a_log_without_ballots_keeps_its_floor(part: Partition) -> None:
    part.put("x", 1)
    assert part.prepare("t1", 5, [put_action("x", 2)]) == [None]
    part.commit("t1")
    assert tp.partition_state(part.db).floor == 0


def test_a_prepare_that_comes_after_its_cancel_holds_nothing(part: Partition) -> None:
    part.put("x", 1)
    part.put("y", 1)
    part.log.ballot = (1, "node1")
    assert part.prepare("t0", 1, [check_action("y")]) == ["TransactionConflict"]  # the floor
    time.sleep(3 * tp.CLOCK_SKEW_US_MAX / 1e6)
    started = time.time_ns() // 1000  # later than the new leader's floor
    # The coordinator gave up on the prepare and cancelled the transaction here first.
    part.cancel("t1")
    assert part.prepare("t1", started, [put_action("x", 2)]) == ["TransactionConflict"]
    assert items_state(part.db).held == {}
    # Only the late prepare is refused: another transaction at that timestamp prepares ...
    assert part.prepare("t2", started, [put_action("y", 2)]) == [None]
    part.cancel("t2")
    # ... and so does a new attempt of the same transaction (a token's), with a later one.
    assert part.prepare("t1", time.time_ns() // 1000, [put_action("x", 3)]) == [None]
    assert set(items_state(part.db).held.values()) == {"t1"}
    part.commit("t1")
    assert items_state(part.db).held == {}


def test_a_prepare_proposed_after_its_cancel_is_refused_when_applied(part: Partition) -> None:
    part.put("x", 1)
    part.log.ballot = (1, "node1")
    assert part.prepare("t0", 1, [check_action("x")]) == ["TransactionConflict"]  # the floor
    time.sleep(3 * tp.CLOCK_SKEW_US_MAX / 1e6)
    started = time.time_ns() // 1000

    async def both() -> Any:
        # The cancel is proposed first; the prepare is checked before it is applied.
        return await asyncio.gather(
            tp.cancel(part.db, "t1"), tp.prepare(part.db, "t1", started, [put_action("x", 2)])
        )

    _, reasons = part.run(both())
    assert [r and r["Code"] for r in reasons] == ["TransactionConflict"]
    assert items_state(part.db).held == {}
    assert part.db.store.get(tp.prepared_key("t1")) is None
