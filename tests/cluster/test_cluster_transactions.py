"""Transactions across partitions answer as one partition's do: ClientRequestToken
idempotency through the coordinator ledger (also after the coordinator died), the capacity
and item collection metrics of the whole transaction, and one stream record per changed item
on each partition.

In-process: one storage service holds every group of a 4-partition ring (groups of one over
in-memory logs: consensus is not what these tests are about), the router calls it directly,
and answers are compared with a single-node `Database` given the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster import (
    catalog_sync,  # noqa: F401  (registers the catalog_sync redo kind)
    inprocess,
    keyroute,
    txn_route,
)
from keeldb.cluster.placement import META_GROUP, partition_group
from keeldb.cluster.router import Router, _RoutedLedger, _RoutedPartitions
from keeldb.cluster.storage import LocalLedger, StorageService
from keeldb.engine import streams
from keeldb.engine import transactions_partition as tp
from keeldb.engine.database import Database
from keeldb.engine.transactions_coordinator import recover_stale
from keeldb.model.errors import ClientError, ResourceNotFoundException
from keeldb.storage.memory import MemoryLog, MemoryStore

PARTITIONS = 4


class Pair:
    """The router of a partitioned cluster (and its storage) and a single-node database."""

    def __init__(self, router: Router, storage: StorageService, single: Database) -> None:
        self.router = router
        self.storage = storage
        self.single = single

    async def both(self, op: str, body: dict[str, Any]) -> tuple[Any, Any]:
        return await self.mine(op, body), await _answer(self.single.dispatch, op, body)

    async def mine(self, op: str, body: dict[str, Any]) -> Any:
        return await _answer(self.router.dispatch, op, body)

    def partition_db(self, partition: int) -> Database:
        database: Database = self.storage.replicas[partition_group(partition)].database
        return database

    @property
    def meta_db(self) -> Database:
        database: Database = self.storage.replicas[META_GROUP].database
        return database

    def spread(self, body: dict[str, Any]) -> set[int | None]:
        return set(keyroute.transact_partitions(self.router.cache, self.router.ring, body))


async def _answer(dispatch: Any, op: str, body: dict[str, Any]) -> Any:
    try:
        return await dispatch(op, body)
    except ClientError as error:
        return ("error", error.body())


@contextlib.asynccontextmanager
async def _open_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    single = Database(MemoryStore())
    single.attach_log(MemoryLog(single.apply))
    async with inprocess.open_cluster(tmp_path, PARTITIONS) as (router, storage):
        yield Pair(router, storage, single)


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """Where the in-process cluster of a test keeps its stores (see `in_cluster`)."""
    return tmp_path


def in_cluster(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on its own event loop with a fresh cluster and single node."""

    @functools.wraps(fn)
    def run(pair: Path, *args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            async with _open_pair(pair) as opened:
                await fn(opened, *args, **kwargs)

        asyncio.run(main())

    return run


def _table(name: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    body.update(extra)
    return body


WITH_INDEX = _table(
    "indexed",
    AttributeDefinitions=[
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "g", "AttributeType": "S"},
    ],
    GlobalSecondaryIndexes=[
        {
            "IndexName": "by-g",
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
)

WITH_LOCAL_INDEX = {
    "TableName": "local",
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "l", "AttributeType": "S"},
    ],
    "LocalSecondaryIndexes": [
        {
            "IndexName": "by-l",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "l", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


def _add(table: str, pk: str, amount: int) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": "ADD n :a",
            "ExpressionAttributeValues": {":a": {"N": str(amount)}},
        }
    }


def _transfer(pks: list[str], **extra: Any) -> dict[str, Any]:
    return {"TransactItems": [_add("plain", pk, 1) for pk in pks], **extra}


async def _value(pair: Pair, pk: str) -> Any:
    answer = await pair.router.dispatch(
        "GetItem", {"TableName": "plain", "Key": {"pk": {"S": pk}}, "ConsistentRead": True}
    )
    found = answer.get("Item")
    return None if found is None else int(found["n"]["N"])


PKS = [f"k{i}" for i in range(8)]


@in_cluster
async def test_capacity_of_a_transaction_across_partitions_is_a_single_nodes(
    pair: Pair,
) -> None:
    await pair.both("CreateTable", WITH_INDEX)
    for i in range(3):
        await pair.both(
            "PutItem",
            {"TableName": "indexed", "Item": {"pk": {"S": f"old{i}"}, "g": {"S": "x" * 2000}}},
        )
    body: dict[str, Any] = {
        "TransactItems": [
            {"Put": {"TableName": "indexed", "Item": {"pk": {"S": "a"}, "g": {"S": "x"}}}},
            {"Put": {"TableName": "indexed", "Item": {"pk": {"S": "b"}}}},
            {
                "Update": {
                    "TableName": "indexed",
                    "Key": {"pk": {"S": "old0"}},
                    "UpdateExpression": "SET g = :g",
                    "ExpressionAttributeValues": {":g": {"S": "y"}},
                }
            },
            {"Delete": {"TableName": "indexed", "Key": {"pk": {"S": "old1"}}}},
            {
                "ConditionCheck": {
                    "TableName": "indexed",
                    "Key": {"pk": {"S": "old2"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ]
    }
    assert len(pair.spread(body)) > 1
    mine, theirs = await pair.both(
        "TransactWriteItems", dict(body, ReturnConsumedCapacity="INDEXES")
    )
    assert mine == theirs
    assert mine["ConsumedCapacity"][0]["GlobalSecondaryIndexes"]["by-g"]["CapacityUnits"] > 0
    puts = [
        {"Put": {"TableName": "indexed", "Item": {"pk": {"S": pk}, "g": {"S": "x"}}}} for pk in PKS
    ]
    total = {"TransactItems": puts, "ReturnConsumedCapacity": "TOTAL"}
    mine, theirs = await pair.both("TransactWriteItems", total)
    assert mine == theirs
    assert mine["ConsumedCapacity"] == [
        {"TableName": "indexed", "CapacityUnits": 32.0, "WriteCapacityUnits": 32.0}
    ]


@in_cluster
async def test_capacity_names_each_index_and_doubles_the_units(pair: Pair) -> None:
    await pair.both("CreateTable", WITH_INDEX)
    body = {
        "TransactItems": [
            {"Put": {"TableName": "indexed", "Item": {"pk": {"S": pk}, "g": {"S": "x"}}}}
            for pk in PKS
        ],
        "ReturnConsumedCapacity": "INDEXES",
    }
    assert len(pair.spread(body)) > 1
    mine = await pair.mine("TransactWriteItems", body)
    (consumed,) = mine["ConsumedCapacity"]
    assert consumed["Table"]["CapacityUnits"] == 2.0 * len(PKS)
    assert consumed["GlobalSecondaryIndexes"]["by-g"]["CapacityUnits"] == 2.0 * len(PKS)
    assert consumed["CapacityUnits"] == 4.0 * len(PKS)


@in_cluster
async def test_item_collection_metrics_across_partitions_are_a_single_nodes(
    pair: Pair,
) -> None:
    await pair.both("CreateTable", WITH_LOCAL_INDEX)
    await pair.both("CreateTable", _table("plain"))
    body = {
        "TransactItems": [
            {
                "Put": {
                    "TableName": "local",
                    "Item": {"pk": {"S": pk}, "sk": {"S": "1"}, "l": {"S": "v"}},
                }
            }
            for pk in PKS[:4]
        ]
        + [_add("plain", pk, 1) for pk in PKS[4:]]
        + [{"Delete": {"TableName": "local", "Key": {"pk": {"S": "gone"}, "sk": {"S": "1"}}}}],
        "ReturnItemCollectionMetrics": "SIZE",
        "ReturnConsumedCapacity": "TOTAL",
    }
    assert len(pair.spread(body)) > 1
    mine, theirs = await pair.both("TransactWriteItems", body)
    assert mine == theirs
    assert len(mine["ItemCollectionMetrics"]["local"]) == 5
    assert [m["ItemCollectionKey"]["pk"]["S"] for m in mine["ItemCollectionMetrics"]["local"]] == [
        *PKS[:4],
        "gone",
    ]


@in_cluster
async def test_a_transactional_read_across_partitions_meters_as_a_single_node(
    pair: Pair,
) -> None:
    await pair.both("CreateTable", _table("plain"))
    for i, pk in enumerate(PKS):
        item = {"pk": {"S": pk}, "n": {"N": str(i)}, "pad": {"S": "p" * (1000 * i)}}
        await pair.both("PutItem", {"TableName": "plain", "Item": item})
    gets = {
        "TransactItems": [
            {
                "Get": {
                    "TableName": "plain",
                    "Key": {"pk": {"S": pk}},
                    "ProjectionExpression": "#n",
                    "ExpressionAttributeNames": {"#n": "n"},
                }
            }
            for pk in [*PKS, "missing"]
        ],
        "ReturnConsumedCapacity": "TOTAL",
    }
    assert len(pair.spread(gets)) > 1
    mine, theirs = await pair.both("TransactGetItems", gets)
    assert mine == theirs
    assert mine["Responses"][2] == {"Item": {"n": {"N": "2"}}}
    assert mine["ConsumedCapacity"][0]["CapacityUnits"] > 2.0 * len(PKS)
    bad = dict(gets, TransactItems=[dict(g) for g in gets["TransactItems"]])
    bad["TransactItems"][0] = {
        "Get": {
            "TableName": "plain",
            "Key": {"pk": {"S": "k0"}},
            "ExpressionAttributeNames": {"#unused": "n"},
        }
    }
    mine, theirs = await pair.both("TransactGetItems", bad)
    assert mine == theirs
    assert mine[0] == "error"


@in_cluster
async def test_a_token_applies_a_transaction_across_partitions_once(pair: Pair) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS, ClientRequestToken="transfer-1")
    assert len(pair.spread(body)) > 1
    mine, theirs = await pair.both("TransactWriteItems", body)
    assert mine == theirs == {}
    again = dict(body, ReturnConsumedCapacity="TOTAL")
    mine, theirs = await pair.both("TransactWriteItems", again)
    assert mine == theirs
    assert mine["ConsumedCapacity"][0]["ReadCapacityUnits"] == 2.0 * len(PKS)
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)


@in_cluster
async def test_a_token_with_other_actions_is_a_parameter_mismatch(pair: Pair) -> None:
    await pair.both("CreateTable", _table("plain"))
    await pair.both("TransactWriteItems", _transfer(PKS, ClientRequestToken="t"))
    other = _transfer(PKS[1:], ClientRequestToken="t")
    assert len(pair.spread(other)) > 1
    mine, theirs = await pair.both("TransactWriteItems", other)
    assert mine == theirs
    assert mine[1]["__type"].endswith("IdempotentParameterMismatchException")
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)


@in_cluster
async def test_a_token_expires_after_ten_minutes(pair: Pair) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS, ClientRequestToken="t")
    await pair.mine("TransactWriteItems", body)
    # Ten minutes and a second later, by the ledger's clock: the token is forgotten.
    digest = txn_route.transactions.request_digest(body)
    ledger = LocalLedger(pair.meta_db)
    later = txn_route._now_ms() + 601_000
    assert not tp.ledger_token_committed(ledger.db, "t", digest, later)
    assert tp.ledger_token_committed(ledger.db, "t", digest, txn_route._now_ms())


@in_cluster
async def test_concurrent_retries_of_one_token_apply_it_once(pair: Pair) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS, ClientRequestToken="racing")
    answers = await asyncio.gather(*(pair.mine("TransactWriteItems", body) for _ in range(4)))
    codes = sorted(
        a[1]["__type"].split("#")[-1] if a and a[0] == "error" else "ok" for a in answers
    )
    assert "ok" in codes
    assert set(codes) <= {"ok", "TransactionInProgressException"}
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)
    assert await pair.mine("TransactWriteItems", body) == {}
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)


class CoordinatorDied(Exception):
    """The router coordinating the transaction died at this point."""


class DyingLedger:
    """The metadata group's ledger as a router sees it, until the router dies right after
    the ledger recorded its decision (the transaction WILL commit, nothing committed yet)."""

    def __init__(self, ledger: _RoutedLedger) -> None:
        self.ledger = ledger

    async def step(self, record: dict[str, Any]) -> bool:
        taken = await self.ledger.step(record)
        if record["status"] == tp.LEDGER_COMMITTING:
            raise CoordinatorDied
        return taken

    async def entries(self) -> list[dict[str, Any]]:
        return await self.ledger.entries()

    async def token_committed(self, token: str, digest: str, now_ms: int) -> bool:
        return await self.ledger.token_committed(token, digest, now_ms)


@in_cluster
async def test_a_retry_after_the_coordinator_died_is_in_progress_then_applied_once(
    pair: Pair,
) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS, ClientRequestToken="orphan")
    partitions = keyroute.transact_partitions(pair.router.cache, pair.router.ring, body)
    deadline = asyncio.get_running_loop().time() + 10
    with pytest.raises(CoordinatorDied):
        await txn_route.transact_write_across(
            pair.router,
            body,
            partitions,
            deadline,
            DyingLedger(_RoutedLedger(pair.router, deadline)),  # type: ignore[arg-type]
            _RoutedPartitions(pair.router, deadline, collect=True),
        )
    # Decided but not committed: the items are held, a retry is in progress, and a retry
    # with other actions is a mismatch.
    answer = await pair.mine("TransactWriteItems", body)
    assert answer[1]["__type"].endswith("TransactionInProgressException")
    assert answer[1]["message"] == "Transaction is in progress"
    other = await pair.mine("TransactWriteItems", _transfer(PKS[2:], ClientRequestToken="orphan"))
    assert other[1]["__type"].endswith("IdempotentParameterMismatchException")
    # The metadata leader finishes it (as it does every half second for stale entries).
    finished = await recover_stale(
        LocalLedger(pair.meta_db),
        pair.router.partitions_view(),
        txn_route._now_ms() + 10_000,
    )
    assert finished == [tp.token_txid("orphan")]
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)
    assert await pair.mine("TransactWriteItems", body) == {}
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)


@in_cluster
async def test_a_cancelled_transaction_with_a_token_runs_again_on_retry(pair: Pair) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = {
        "TransactItems": [_add("plain", pk, 1) for pk in PKS[1:]]
        + [
            {
                "ConditionCheck": {
                    "TableName": "plain",
                    "Key": {"pk": {"S": PKS[0]}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        ],
        "ClientRequestToken": "later",
    }
    assert len(pair.spread(body)) > 1
    mine, theirs = await pair.both("TransactWriteItems", body)
    assert mine == theirs
    assert mine[1]["__type"].endswith("TransactionCanceledException")
    put = {"TableName": "plain", "Item": {"pk": {"S": PKS[0]}, "n": {"N": "0"}}}
    await pair.both("PutItem", put)
    mine, theirs = await pair.both("TransactWriteItems", body)
    assert mine == theirs == {}
    assert [await _value(pair, pk) for pk in PKS] == [0] + [1] * (len(PKS) - 1)


def _stream_records(db: Database) -> list[Any]:
    out = []
    for stream in streams.list_streams(db):
        for shard in stream.shards:
            out.extend(streams.read_records(db, stream, shard, -1, 10_000))
    return out


@in_cluster
async def test_each_partition_records_one_stream_record_per_changed_item(pair: Pair) -> None:
    table = _table(
        "streamed",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    await pair.both("CreateTable", table)
    await pair.both(
        "PutItem", {"TableName": "streamed", "Item": {"pk": {"S": "k0"}, "n": {"N": "5"}}}
    )
    before = {p: len(_stream_records(pair.partition_db(p))) for p in range(PARTITIONS)}
    body = {
        "TransactItems": [
            {"Put": {"TableName": "streamed", "Item": {"pk": {"S": pk}, "n": {"N": "1"}}}}
            for pk in PKS[1:]
        ]
        + [{"Delete": {"TableName": "streamed", "Key": {"pk": {"S": "k0"}}}}]
        + [{"Delete": {"TableName": "streamed", "Key": {"pk": {"S": "never"}}}}],
        "ClientRequestToken": "streamed-once",
    }
    partitions = keyroute.transact_partitions(pair.router.cache, pair.router.ring, body)
    assert len(set(partitions)) > 1
    assert await pair.mine("TransactWriteItems", body) == {}
    expected: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    for action, partition in zip(body["TransactItems"], partitions, strict=True):
        assert partition is not None
        ((_kind, spec),) = action.items()
        pk = (spec.get("Item") or spec["Key"])["pk"]["S"]
        if pk != "never":  # deleting a missing item changes nothing: no record
            expected[partition].append(pk)
    for partition in range(PARTITIONS):
        records = _stream_records(pair.partition_db(partition))[before[partition] :]
        assert sorted(r.keys["pk"]["S"] for r in records) == sorted(expected[partition])
        for record in records:
            if record.keys["pk"]["S"] == "k0":
                assert record.old_image == {"pk": {"S": "k0"}, "n": {"N": "5"}}
                assert record.new_image is None
    # The same commit sent again (as a recovering coordinator, or a router whose first call
    # timed out, sends it), and a retry of the request: no record more.
    txid = tp.token_txid("streamed-once")
    for partition in range(PARTITIONS):
        assert await tp.commit(pair.partition_db(partition), txid) is None
    assert await pair.mine("TransactWriteItems", body) == {}
    total = sum(len(_stream_records(pair.partition_db(p))) for p in range(PARTITIONS))
    assert total == sum(before.values()) + len(PKS)


@in_cluster
async def test_the_ledger_refuses_to_start_a_token_committed_in_the_last_ten_minutes(
    pair: Pair,
) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS, ClientRequestToken="once")
    assert await pair.mine("TransactWriteItems", body) == {}
    digest = txn_route.transactions.request_digest(body)
    now = txn_route._now_ms()

    def start(time_ms: int) -> dict[str, Any]:
        return tp.ledger_record(
            tp.token_txid("once"),
            1,
            tp.LEDGER_STARTED,
            None,
            {},
            time_ms,
            token="once",
            digest=digest,
        )

    # A coordinator that asked the ledger before the first one committed, and starts now.
    assert not await tp.ledger_step(pair.meta_db, start(now))
    assert tp.ledger_entries(pair.meta_db) == []
    # Ten minutes later the token is forgotten: the same start takes effect.
    assert await tp.ledger_step(pair.meta_db, start(now + 601_000))
    assert [e["txid"] for e in tp.ledger_entries(pair.meta_db)] == [tp.token_txid("once")]


@in_cluster
async def test_a_transaction_refused_by_timestamp_order_runs_again_with_a_new_timestamp(
    pair: Pair,
) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS)
    partitions = {p for p in pair.spread(body) if p is not None}
    assert len(partitions) > 1
    # One partition refuses every timestamp older than a little ahead of now, as a leader
    # that has just taken over does: the first attempt conflicts, a later one commits.
    state = tp.partition_state(pair.partition_db(min(partitions)))
    state.floor = time.time_ns() // 1000 + 50_000
    assert await pair.mine("TransactWriteItems", body) == {}
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)
    # A floor beyond the retries: cancelled whole, with the conflicts as reasons.
    state.floor = time.time_ns() // 1000 + 60_000_000
    answer = await pair.mine("TransactWriteItems", body)
    assert answer[0] == "error"
    assert answer[1]["__type"].endswith("TransactionCanceledException")
    codes = {r["Code"] for r in answer[1]["CancellationReasons"]}
    assert codes == {"None", "TransactionConflict"}
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)
    reads = {
        "TransactItems": [{"Get": {"TableName": "plain", "Key": {"pk": {"S": pk}}}} for pk in PKS]
    }
    answer = await pair.mine("TransactGetItems", reads)
    assert answer[1]["__type"].endswith("TransactionCanceledException")


@in_cluster
async def test_a_refused_timestamp_beside_a_failed_condition_is_tried_again(pair: Pair) -> None:
    """Cancelled either way (one item's condition fails), the transaction still runs again
    past a partition's new-leader floor, so that every item's reason is what its check
    finds, as on a single node, not a conflict with its early timestamp."""
    await pair.both("CreateTable", _table("plain"))
    await pair.both("TransactWriteItems", _transfer(PKS))
    checks = {
        "TransactItems": [
            {
                "ConditionCheck": {
                    "TableName": "plain",
                    "Key": {"pk": {"S": pk}},
                    "ConditionExpression": "n = :two",
                    "ExpressionAttributeValues": {":two": {"N": "2"}},
                }
            }
            for pk in PKS
        ]
    }
    partitions = {p for p in pair.spread(checks) if p is not None}
    assert len(partitions) > 1
    state = tp.partition_state(pair.partition_db(min(partitions)))
    state.floor = time.time_ns() // 1000 + 50_000
    mine, single = await pair.both("TransactWriteItems", checks)
    assert mine[0] == "error" and single[0] == "error"
    codes = [r["Code"] for r in mine[1]["CancellationReasons"]]
    assert codes == ["ConditionalCheckFailed"] * len(PKS), codes
    assert mine == single


@in_cluster
async def test_an_action_with_a_wrong_key_is_refused_beside_the_others_checked_where_they_are(
    pair: Pair,
) -> None:
    """An action whose key does not match the schema cannot be placed on the ring: it is
    cancelled with its ValidationError reason, while every other action is still checked
    on the partition that holds its item, as a single node checks them all."""
    await pair.both("CreateTable", _table("plain"))
    for pk in PKS:
        await pair.both("PutItem", {"TableName": "plain", "Item": {"pk": {"S": pk}}})

    def check(pk: str, condition: str) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": "plain",
                "Key": {"pk": {"S": pk}},
                "ConditionExpression": condition,
            }
        }

    wrong_key = {"Delete": {"TableName": "plain", "Key": {"pk": {"N": "1"}}}}
    across = [check(pk, "attribute_exists(pk)") for pk in PKS[:4]] + [wrong_key]
    assert len({p for p in pair.spread({"TransactItems": across}) if p is not None}) > 1
    alone = [check(PKS[0], "attribute_exists(pk)"), check(PKS[0], "attribute_exists(n)")]
    for actions in (
        across,
        [*alone[:1], wrong_key],
        [wrong_key, check(PKS[1], "attribute_exists(n)")],
    ):
        mine, single = await pair.both("TransactWriteItems", {"TransactItems": actions})
        assert single[0] == "error", single
        assert mine == single
    # Nothing was deleted or written anywhere.
    for pk in PKS:
        answer = await pair.router.dispatch(
            "GetItem", {"TableName": "plain", "Key": {"pk": {"S": pk}}, "ConsistentRead": True}
        )
        assert answer["Item"] == {"pk": {"S": pk}}


@in_cluster
async def test_a_read_across_partitions_reports_the_first_error_a_single_node_finds(
    pair: Pair,
) -> None:
    """A TransactGetItems over several partitions is checked whole at the router, in the
    single node's order: a duplicate item is reported before a later Get's empty key,
    whichever partition would have answered first."""
    await pair.both("CreateTable", _table("plain"))

    def get(pk: str) -> dict[str, Any]:
        return {"Get": {"TableName": "plain", "Key": {"pk": {"S": pk}}}}

    def partition(pk: str) -> int | None:
        (found,) = pair.spread({"TransactItems": [get(pk)]})
        return found

    # `near` shares the empty key's partition and `far` lies in another: the share holding
    # the empty key is then sent first, while the duplicate comes first in the request.
    near = next(pk for pk in PKS if partition(pk) == partition(""))
    far = next(pk for pk in PKS if partition(pk) != partition(""))
    for order in ([near, far, far, ""], ["", far, near, near]):
        body = {"TransactItems": [get(pk) for pk in order]}
        mine, single = await pair.both("TransactGetItems", body)
        assert single[0] == "error", single
        assert mine == single


class LaggingPartitions(_RoutedPartitions):
    """The partition leaders, one of which has not learnt of the table yet for its first
    `lagging` prepares (as a partition whose catalog sync is late answers)."""

    def __init__(self, router: Router, deadline: float, lagging: int) -> None:
        super().__init__(router, deadline, collect=True)
        self.lagging = lagging
        self.refused = 0

    async def prepare(
        self, partition: str, txid: str, ts: int, items: list[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        if partition == "p0" and self.refused < self.lagging:
            self.refused += 1
            raise ResourceNotFoundException("Requested resource not found")
        return await super().prepare(partition, txid, ts, items)


@in_cluster
async def test_a_partition_that_learns_of_a_table_late_is_asked_again(pair: Pair) -> None:
    await pair.both("CreateTable", _table("plain"))
    body = _transfer(PKS, ClientRequestToken="late-table")
    partitions = keyroute.transact_partitions(pair.router.cache, pair.router.ring, body)
    assert 0 in partitions and len(set(partitions)) > 1
    deadline = asyncio.get_running_loop().time() + 10
    view = LaggingPartitions(pair.router, deadline, lagging=2)
    ledger = _RoutedLedger(pair.router, deadline)
    answer = await txn_route.transact_write_across(
        pair.router, body, partitions, deadline, ledger, view
    )
    assert answer == {}
    assert view.refused == 2
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)
    # A partition that never learns of it: the client hears ResourceNotFoundException, and
    # nothing is written anywhere.
    other = _transfer(PKS)
    view = LaggingPartitions(pair.router, deadline + 10, lagging=1_000)
    with pytest.raises(ResourceNotFoundException):
        await txn_route.transact_write_across(
            pair.router, other, partitions, deadline + 10, ledger, view
        )
    assert [await _value(pair, pk) for pk in PKS] == [1] * len(PKS)
    assert tp.ledger_entries(pair.meta_db) == []
