"""The router over several partitions answers as one single-node database does.

In-process: one storage service holds every group of a 4-partition ring (groups of one whose
log is an in-memory log: consensus is not what these tests are about), the router calls it
directly, and every answer is compared with a single-node `Database` given the same
requests. Scan pages must come back in the same (hash) order with the same paging keys, a
global index's pages in the index's order, batches whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster import (
    catalog_sync,  # noqa: F401  (registers the catalog_sync redo kind)
    inprocess,
)
from keeldb.cluster.router import Router
from keeldb.engine.database import Database
from keeldb.model.errors import ClientError
from keeldb.storage.memory import MemoryLog, MemoryStore

PARTITIONS = 4


class Pair:
    """The router of a partitioned cluster and a single-node database, fed alike."""

    def __init__(self, router: Router, single: Database) -> None:
        self.router = router
        self.single = single

    async def both(self, op: str, body: dict[str, Any]) -> tuple[Any, Any]:
        async def run(dispatch: Any) -> Any:
            try:
                return await dispatch(op, body)
            except ClientError as error:
                return ("error", error.body())

        return await run(self.router.dispatch), await run(self.single.dispatch)


@contextlib.asynccontextmanager
async def _open_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    single = Database(MemoryStore())
    single.attach_log(MemoryLog(single.apply))
    async with inprocess.open_cluster(tmp_path, PARTITIONS) as (router, _storage):
        yield Pair(router, single)


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


TABLE = {
    "TableName": "things",
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
        {"AttributeName": "g", "AttributeType": "S"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by_g",
            "KeySchema": [
                {"AttributeName": "g", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


async def _fill(pair: Pair, count: int = 120) -> None:
    await pair.both("CreateTable", TABLE)
    rng = random.Random(7)
    for i in range(count):
        item = {
            "pk": {"S": f"p{rng.randrange(30)}"},
            "sk": {"N": str(i)},
            "g": {"S": "even" if i % 2 == 0 else "odd"},
            "n": {"N": str(rng.randrange(100))},
        }
        await pair.both("PutItem", {"TableName": "things", "Item": item})


async def _pages(dispatch: Any, op: str, body: dict[str, Any]) -> list[Any]:
    pages = []
    request = dict(body)
    for _ in range(500):
        page = await dispatch(op, request)
        pages.append(page)
        if "LastEvaluatedKey" not in page:
            return pages
        request = dict(body, ExclusiveStartKey=page["LastEvaluatedKey"])
    raise AssertionError("paging did not end")


@in_cluster
async def test_items_spread_over_every_partition(pair: Pair) -> None:
    await _fill(pair)
    storage_counts = []
    for p in range(PARTITIONS):
        answer = await pair.router._partition_op(
            p, "Scan", {"TableName": "things", "Select": "COUNT"}, "strong", 1e18, check=False
        )
        storage_counts.append(answer["Count"])
    assert all(c > 0 for c in storage_counts)
    assert sum(storage_counts) == 120


@pytest.mark.parametrize("limit", [None, 1, 7, 50])
@in_cluster
async def test_scan_pages_match_a_single_node_item_for_item(pair: Pair, limit: int | None) -> None:
    await _fill(pair)
    body: dict[str, Any] = {"TableName": "things"}
    if limit is not None:
        body["Limit"] = limit
    mine = await _pages(pair.router.dispatch, "Scan", body)
    theirs = await _pages(pair.single.dispatch, "Scan", body)
    flat = [i for p in mine for i in p["Items"]]
    assert flat == [i for p in theirs for i in p["Items"]]
    if limit is not None:
        assert all(p["Count"] <= limit for p in mine)


@in_cluster
async def test_a_filtered_scan_returns_what_a_single_node_returns(pair: Pair) -> None:
    await _fill(pair)
    body = {
        "TableName": "things",
        "FilterExpression": "n < :x",
        "ExpressionAttributeValues": {":x": {"N": "30"}},
        "Limit": 9,
    }
    mine = await _pages(pair.router.dispatch, "Scan", body)
    theirs = await _pages(pair.single.dispatch, "Scan", body)
    assert [i for p in mine for i in p["Items"]] == [i for p in theirs for i in p["Items"]]
    assert sum(p["ScannedCount"] for p in mine) == 120


@in_cluster
async def test_parallel_scan_segments_cover_the_table_once(pair: Pair) -> None:
    await _fill(pair)
    seen = []
    for segment in range(3):
        body = {"TableName": "things", "Segment": segment, "TotalSegments": 3, "Limit": 10}
        mine = await _pages(pair.router.dispatch, "Scan", body)
        theirs = await _pages(pair.single.dispatch, "Scan", body)
        flat = [i for p in mine for i in p["Items"]]
        assert flat == [i for p in theirs for i in p["Items"]]
        seen += flat
    assert len(seen) == 120


@pytest.mark.parametrize("forward", [True, False])
@in_cluster
async def test_query_on_a_partition_key_matches_a_single_node(pair: Pair, forward: bool) -> None:
    await _fill(pair)
    for value in ("p3", "p17", "nothing"):
        body = {
            "TableName": "things",
            "KeyConditionExpression": "pk = :p AND sk > :s",
            "ExpressionAttributeValues": {":p": {"S": value}, ":s": {"N": "10"}},
            "ScanIndexForward": forward,
            "Limit": 2,
        }
        mine = await _pages(pair.router.dispatch, "Query", body)
        theirs = await _pages(pair.single.dispatch, "Query", body)
        assert mine == theirs


@pytest.mark.parametrize("limit", [None, 3, 11])
@in_cluster
async def test_global_index_pages_merge_in_the_index_order(pair: Pair, limit: int | None) -> None:
    await _fill(pair)
    body: dict[str, Any] = {
        "TableName": "things",
        "IndexName": "by_g",
        "KeyConditionExpression": "g = :g",
        "ExpressionAttributeValues": {":g": {"S": "odd"}},
    }
    if limit is not None:
        body["Limit"] = limit
    mine = await _pages(pair.router.dispatch, "Query", body)
    theirs = await _pages(pair.single.dispatch, "Query", body)
    assert [i for p in mine for i in p["Items"]] == [i for p in theirs for i in p["Items"]]
    if limit is not None:
        assert [p["Count"] for p in mine[:-1]] == [limit] * (len(mine) - 1)


@in_cluster
async def test_batches_are_split_and_merged(pair: Pair) -> None:
    await _fill(pair, count=40)
    keys = [{"pk": {"S": f"p{i}"}, "sk": {"N": str(i)}} for i in range(40)]
    request = {"RequestItems": {"things": {"Keys": keys, "ConsistentRead": True}}}
    mine, theirs = await pair.both("BatchGetItem", request)

    def ordered(answer: Any) -> Any:
        return sorted(answer["Responses"]["things"], key=lambda i: int(i["sk"]["N"]))

    assert ordered(mine) == ordered(theirs)
    assert mine["UnprocessedKeys"] == {}
    writes = {
        "RequestItems": {
            "things": [{"DeleteRequest": {"Key": k}} for k in keys[:20]]
            + [{"PutRequest": {"Item": {**k, "x": {"S": "new"}}}} for k in keys[20:25]]
        }
    }
    mine, theirs = await pair.both("BatchWriteItem", writes)
    assert mine == theirs
    mine, theirs = await pair.both("Scan", {"TableName": "things"})
    assert mine == theirs


@in_cluster
async def test_a_malformed_batch_gets_the_single_node_error(pair: Pair) -> None:
    await _fill(pair, count=5)
    key = {"pk": {"S": "p1"}, "sk": {"N": "1"}}
    twice = {"RequestItems": {"things": [{"DeleteRequest": {"Key": key}}] * 2}}
    mine, theirs = await pair.both("BatchWriteItem", twice)
    assert mine == theirs
    assert mine[0] == "error"
    too_many = {"RequestItems": {"things": {"Keys": [key] * 101}}}
    mine, theirs = await pair.both("BatchGetItem", too_many)
    assert mine == theirs
    assert mine[0] == "error"


@in_cluster
async def test_describe_table_sums_the_partitions_counts(pair: Pair) -> None:
    await _fill(pair)
    mine, theirs = await pair.both("DescribeTable", {"TableName": "things"})
    assert mine["Table"]["ItemCount"] == theirs["Table"]["ItemCount"] == 120
    (index,) = mine["Table"]["GlobalSecondaryIndexes"]
    assert index["ItemCount"] == 120


@in_cluster
async def test_errors_are_the_single_node_errors(pair: Pair) -> None:
    await _fill(pair, count=3)
    cases = [
        ("GetItem", {"TableName": "missing", "Key": {"pk": {"S": "a"}}}),
        ("GetItem", {"TableName": "things", "Key": {"pk": {"S": "a"}}}),
        ("PutItem", {"TableName": "things", "Item": {"pk": {"N": "1"}, "sk": {"N": "1"}}}),
        (
            "PutItem",
            {
                "TableName": "things",
                "Item": {"pk": {"S": "p1"}, "sk": {"N": "0"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            },
        ),
        ("Query", {"TableName": "things", "KeyConditionExpression": "sk = :s"}),
        ("Scan", {"TableName": "things", "Limit": 0}),
        ("CreateTable", TABLE),
    ]
    for op, body in cases:
        mine, theirs = await pair.both(op, body)
        assert mine == theirs, (op, body)


@in_cluster
async def test_partiql_runs_through_the_router(pair: Pair) -> None:
    await _fill(pair, count=30)
    statement = {"Statement": 'SELECT * FROM "things" WHERE pk = ?', "Parameters": [{"S": "p3"}]}
    mine, theirs = await pair.both("ExecuteStatement", statement)
    assert mine == theirs
    insert = {"Statement": "INSERT INTO \"things\" VALUE {'pk': 'p3', 'sk': 0}"}
    mine, theirs = await pair.both("ExecuteStatement", insert)
    assert mine == theirs


@in_cluster
async def test_transactions_in_one_partition_and_across_partitions_answer_as_a_single_node(
    pair: Pair,
) -> None:
    await _fill(pair, count=3)
    same = {
        "TransactItems": [
            {"Put": {"TableName": "things", "Item": {"pk": {"S": "t"}, "sk": {"N": str(i)}}}}
            for i in range(3)
        ]
    }
    mine, theirs = await pair.both("TransactWriteItems", same)
    assert mine == theirs
    spread = {
        "TransactItems": [
            {"Put": {"TableName": "things", "Item": {"pk": {"S": f"t{i}"}, "sk": {"N": "1"}}}}
            for i in range(8)
        ]
    }
    assert len(keyroute_partitions(pair, spread)) > 1
    mine, theirs = await pair.both("TransactWriteItems", spread)
    assert mine == theirs
    failing = {
        "TransactItems": [
            {
                "Put": {
                    "TableName": "things",
                    "Item": {"pk": {"S": f"t{i}"}, "sk": {"N": "1"}, "x": {"S": "no"}},
                    **({"ConditionExpression": "attribute_not_exists(pk)"} if i == 5 else {}),
                }
            }
            for i in range(8)
        ]
    }
    mine, theirs = await pair.both("TransactWriteItems", failing)
    assert mine == theirs
    assert mine[0] == "error"
    mine, theirs = await pair.both("Scan", {"TableName": "things", "ConsistentRead": True})
    assert mine == theirs
    assert not any("x" in item for item in mine["Items"])
    mine, theirs = await pair.both("TransactWriteItems", {"TransactItems": []})
    assert mine == theirs


@in_cluster
async def test_a_transactional_read_across_partitions_answers_as_a_single_node(
    pair: Pair,
) -> None:
    await _fill(pair, count=3)
    for i in range(8):
        item = {"pk": {"S": f"r{i}"}, "sk": {"N": "1"}, "v": {"N": str(i)}}
        await pair.both("PutItem", {"TableName": "things", "Item": item})
    gets = {
        "TransactItems": [
            {
                "Get": {
                    "TableName": "things",
                    "Key": {"pk": {"S": f"r{i}"}, "sk": {"N": "1"}},
                    "ProjectionExpression": "v",
                }
            }
            for i in [*range(8), 99]
        ]
    }
    assert len(keyroute_partitions(pair, gets)) > 1
    mine, theirs = await pair.both("TransactGetItems", gets)
    assert mine == theirs
    assert mine["Responses"][3] == {"Item": {"v": {"N": "3"}}}
    assert mine["Responses"][8] == {}


def keyroute_partitions(pair: Pair, body: dict[str, Any]) -> set[int | None]:
    from keeldb.cluster import keyroute

    router = pair.router
    return set(keyroute.transact_partitions(router.cache, router.ring, body))
