"""Paging fidelity of the router over several partitions: a global-index Query or Scan with
Limit and a filter evaluates exactly Limit entries, and a batch split over partitions that
one of them would refuse applies nothing, as on a single node.

In-process, as tests/cluster/test_cluster_router.py: one storage service holds every group of
a 4-partition ring (groups of one with an in-memory log), the router calls it directly, and
every answer is compared with a single-node `Database` given the same requests.
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
from keeldb.model.keys import partition_hash
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


def _same_pages(cluster: list[Any], single: list[Any]) -> None:
    assert len(cluster) == len(single)
    for mine, theirs in zip(cluster, single, strict=True):
        for member in ("Items", "Count", "ScannedCount", "LastEvaluatedKey"):
            assert mine.get(member) == theirs.get(member), member


@in_cluster
async def test_a_global_index_query_with_limit_and_filter_evaluates_exactly_limit(
    pair: Pair,
) -> None:
    await _fill(pair)
    body = {
        "TableName": "things",
        "IndexName": "by_g",
        "KeyConditionExpression": "#g = :g",
        "FilterExpression": "#n > :n",
        "ExpressionAttributeNames": {"#g": "g", "#n": "n"},
        "ExpressionAttributeValues": {":g": {"S": "even"}, ":n": {"N": "40"}},
        "Limit": 7,
    }
    cluster = await _pages(pair.router.dispatch, "Query", body)
    single = await _pages(pair.single.dispatch, "Query", body)
    assert all(page["ScannedCount"] == 7 for page in single[:-1])
    _same_pages(cluster, single)
    backwards = dict(body, ScanIndexForward=False, Limit=5)
    _same_pages(
        await _pages(pair.router.dispatch, "Query", backwards),
        await _pages(pair.single.dispatch, "Query", backwards),
    )


@in_cluster
async def test_a_global_index_scan_with_limit_and_filter_evaluates_exactly_limit(
    pair: Pair,
) -> None:
    await _fill(pair)
    for body in (
        {
            "TableName": "things",
            "IndexName": "by_g",
            "FilterExpression": "n < :n",
            "ExpressionAttributeValues": {":n": {"N": "50"}},
            "Limit": 9,
        },
        {
            "TableName": "things",
            "IndexName": "by_g",
            "ScanFilter": {"n": {"ComparisonOperator": "GE", "AttributeValueList": [{"N": "70"}]}},
            "Limit": 4,
            "Select": "COUNT",
        },
    ):
        _same_pages(
            await _pages(pair.router.dispatch, "Scan", body),
            await _pages(pair.single.dispatch, "Scan", body),
        )


@in_cluster
async def test_an_index_page_that_reads_exactly_limit_entries_has_a_last_evaluated_key(
    pair: Pair,
) -> None:
    """One node that stops at Limit entries names the last one read, even when no entry
    follows it (the next page is empty): so does a page merged from every partition."""
    await _fill(pair, count=12)
    for op, body in (
        ("Scan", {"TableName": "things", "IndexName": "by_g", "Limit": 12}),
        (
            "Query",
            {
                "TableName": "things",
                "IndexName": "by_g",
                "KeyConditionExpression": "g = :g",
                "ExpressionAttributeValues": {":g": {"S": "odd"}},
                "Limit": 6,
            },
        ),
    ):
        cluster = await _pages(pair.router.dispatch, op, body)
        single = await _pages(pair.single.dispatch, op, body)
        assert len(single) == 2 and single[-1]["Count"] == 0, single
        assert "LastEvaluatedKey" in single[0]
        _same_pages(cluster, single)


@in_cluster
async def test_a_filtered_limited_index_query_with_a_bad_filter_gets_the_single_nodes_error(
    pair: Pair,
) -> None:
    await _fill(pair, count=20)
    body = {
        "TableName": "things",
        "IndexName": "by_g",
        "KeyConditionExpression": "g = :g",
        "FilterExpression": "n > :missing",
        "ExpressionAttributeValues": {":g": {"S": "nothing-here"}},
        "Limit": 3,
    }
    mine, theirs = await pair.both("Query", body)
    assert mine[0] == "error"
    assert mine == theirs


@in_cluster
async def test_a_batch_one_partition_would_refuse_applies_nothing_anywhere(pair: Pair) -> None:
    await _fill(pair, count=0)
    requests = [
        {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}, "g": {"S": "x"}}}}
        for i in range(12)
    ]
    # The last item's index key has the wrong type: its partition refuses its part.
    requests.append(
        {"PutRequest": {"Item": {"pk": {"S": "bad"}, "sk": {"N": "99"}, "g": {"N": "1"}}}}
    )
    body = {"RequestItems": {"things": requests}}
    partitions = {
        pair.router.ring.partition_of_hash_bytes(partition_hash(r["PutRequest"]["Item"]["pk"]))
        for r in requests
    }
    assert len(partitions) > 1
    mine, theirs = await pair.both("BatchWriteItem", body)
    assert theirs[0] == "error"
    assert mine == theirs
    count = {"TableName": "things", "Select": "COUNT", "ConsistentRead": True}
    mine_count, theirs_count = await pair.both("Scan", count)
    assert theirs_count["Count"] == 0
    assert mine_count["Count"] == 0


@in_cluster
async def test_a_valid_batch_over_partitions_still_applies_every_part(pair: Pair) -> None:
    await _fill(pair, count=0)
    requests = [
        {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}, "g": {"S": "x"}}}}
        for i in range(25)
    ]
    mine, theirs = await pair.both("BatchWriteItem", {"RequestItems": {"things": requests}})
    assert mine == theirs == {"UnprocessedItems": {}}
    count = {"TableName": "things", "Select": "COUNT", "ConsistentRead": True}
    mine_count, _ = await pair.both("Scan", count)
    assert mine_count["Count"] == 25


BIG_TABLE = {
    "TableName": "big",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "g", "AttributeType": "S"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by_g",
            "KeySchema": [
                {"AttributeName": "g", "KeyType": "HASH"},
                {"AttributeName": "pk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


async def _fill_big(pair: Pair, count: int = 120) -> None:
    """Items of 20 to 40 KB, so that a 1 MB page holds a few dozen and spans partitions."""
    await pair.both("CreateTable", BIG_TABLE)
    rng = random.Random(11)
    for i in range(count):
        item = {
            "pk": {"S": f"k{i}"},
            "blob": {"S": "x" * rng.randrange(20_000, 40_000)},
            "n": {"N": str(i % 10)},
            "g": {"S": "a" if i % 3 else "b"},
        }
        await pair.both("PutItem", {"TableName": "big", "Item": item})


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"FilterExpression": "n = :n", "ExpressionAttributeValues": {":n": {"N": "3"}}},
        {"ProjectionExpression": "pk, n"},
        {"Select": "COUNT"},
        {"Limit": 70},
    ],
    ids=["whole", "filtered", "projected", "count", "limit-above-page"],
)
@in_cluster
async def test_a_scan_page_spanning_partitions_stops_at_one_megabyte_as_one_node(
    pair: Pair, extra: dict[str, Any]
) -> None:
    await _fill_big(pair)
    body = {"TableName": "big", "ConsistentRead": True, **extra}
    cluster = await _pages(pair.router.dispatch, "Scan", body)
    single = await _pages(pair.single.dispatch, "Scan", body)
    assert len(single) >= 3  # several pages, each cut at 1 MB
    _same_pages(cluster, single)


@pytest.mark.parametrize(
    ("op", "extra"),
    [
        ("Query", {}),
        ("Query", {"FilterExpression": "n < :n", "ExpressionAttributeValues": {":n": {"N": "4"}}}),
        ("Query", {"ProjectionExpression": "n"}),
        ("Query", {"Select": "COUNT", "ScanIndexForward": False}),
        ("Scan", {}),
        ("Scan", {"FilterExpression": "n = :n", "ExpressionAttributeValues": {":n": {"N": "2"}}}),
    ],
    ids=["query", "query-filtered", "query-projected", "query-count", "scan", "scan-filtered"],
)
@in_cluster
async def test_a_global_index_page_stops_at_one_megabyte_read_as_one_node(
    pair: Pair, op: str, extra: dict[str, Any]
) -> None:
    await _fill_big(pair)
    body: dict[str, Any] = {"TableName": "big", "IndexName": "by_g", **extra}
    if op == "Query":
        body["KeyConditionExpression"] = "g = :g"
        body["ExpressionAttributeValues"] = {
            **body.get("ExpressionAttributeValues", {}),
            ":g": {"S": "a"},
        }
    cluster = await _pages(pair.router.dispatch, op, body)
    single = await _pages(pair.single.dispatch, op, body)
    assert len(single) >= 2  # cut at 1 MB
    _same_pages(cluster, single)
