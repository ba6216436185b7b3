"""Benchmark of transactions on one node: plain-write throughput with and without
transactions in flight, and transaction throughput and latency for 2, 10 and 100 items.

Runs the engine in-process (no HTTP) over the LMDB store and the durable local log (real
fsync, group commit) in a temporary directory, on uvloop. Each phase runs for `--seconds`;
figures on a shared machine are noisy, so compare the ratios printed within one run.

    python benchmarks/transactions_bench.py [--seconds 3] [--rounds 10] [--writers 16] [--txn-rate 20]
        [--txn-items 2]

With `--cluster`, it also starts a local cluster (`keeldb cluster up`: 3 nodes, 2 partitions,
in a temporary directory; stopped with `keeldb cluster down`) and measures TransactWriteItems
through boto3 over HTTP with random keys, so that most transactions span both partitions
(coordinated by the router: prepare, ledger, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop

from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog

TABLE = "bench"
KEYS = 100_000  # key space of the plain writers and of the transactions (random keys)
PAYLOAD_BYTES = 100
WITHIN_PERCENT_TARGET = 5.0  # plain-write throughput with transactions in flight vs without


def item(key: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{key}"}, "v": {"S": "x" * PAYLOAD_BYTES}}


async def open_database(directory: Path) -> tuple[Database, LocalLog, LmdbStore]:
    store = LmdbStore(directory / "store")
    db = Database(store)
    log = await LocalLog.open(directory / "wal", store, db.apply)
    db.attach_log(log)
    await db.dispatch(
        "CreateTable",
        {
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    return db, log, store


async def plain_writers(db: Database, writers: int, seconds: float, seed: int) -> float:
    """PutItem throughput (items/s) of `writers` concurrent writers."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def writer(number: int) -> None:
        nonlocal done
        rng = random.Random(seed * 1000 + number)
        while time.perf_counter() < deadline:
            await db.dispatch("PutItem", {"TableName": TABLE, "Item": item(rng.randrange(KEYS))})
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    return done / (time.perf_counter() - start)


def transaction(rng: random.Random, size: int) -> dict[str, Any]:
    keys = rng.sample(range(KEYS), size)
    return {"TransactItems": [{"Put": {"TableName": TABLE, "Item": item(k)}} for k in keys]}


async def paced_transactions(
    db: Database, rate: float, size: int, stop: asyncio.Event, seed: int
) -> int:
    """Start `rate` transactions of `size` items per second (each its own task) until stopped."""
    rng = random.Random(seed)
    started = 0
    tasks: set[asyncio.Task[Any]] = set()
    begin = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - begin) * rate)
        while started < due:
            task = asyncio.create_task(db.dispatch("TransactWriteItems", transaction(rng, size)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            started += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return started


async def transaction_workers(
    db: Database, workers: int, size: int, seconds: float, seed: int
) -> tuple[float, list[float]]:
    """(transactions/s, latencies in seconds) of `workers` closed-loop transaction clients."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while time.perf_counter() < deadline:
            request = transaction(rng, size)
            began = time.perf_counter()
            await db.dispatch("TransactWriteItems", request)
            latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return len(latencies) / (time.perf_counter() - start), latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="keeldb-txn-bench-"))
    try:
        db, log, store = await open_database(directory)
        await plain_writers(db, args.writers, min(1.0, args.seconds), 0)  # warm up

        # Alternate short windows without and with transactions in flight, so that the
        # machine's drift (other processes) hits both alike; compare the medians.
        alone_rates: list[float] = []
        beside_rates: list[float] = []
        txn_rates: list[float] = []
        window = args.seconds / args.rounds
        for number in range(args.rounds):
            alone_rates.append(await plain_writers(db, args.writers, window, 10 + number))
            stop = asyncio.Event()
            pacer = asyncio.create_task(
                paced_transactions(db, args.txn_rate, args.txn_items, stop, 100 + number)
            )
            beside_rates.append(await plain_writers(db, args.writers, window, 200 + number))
            stop.set()
            txn_rates.append(await pacer / window)
        alone = statistics.median(alone_rates)
        beside = statistics.median(beside_rates)
        ratios = [b / a for a, b in zip(alone_rates, beside_rates, strict=True)]
        change = 100.0 * (statistics.median(ratios) - 1.0)
        # The engine runs on one event loop: the transactions' own item writes take their
        # share of it. Plain writes plus transaction items against plain writes alone says
        # whether anything beyond that share was lost (waiting, conflicts, extra work).
        txn_items = statistics.median(txn_rates) * args.txn_items
        total_change = 100.0 * (beside + txn_items - alone) / alone
        met = "met" if change >= -WITHIN_PERCENT_TARGET else "NOT met"
        print(
            f"plain PutItem, {args.writers} writers, {args.rounds} alternating windows of "
            f"{window:.2f} s: median {alone:,.0f}/s alone, {beside:,.0f}/s with "
            f"{statistics.median(txn_rates):,.0f} {args.txn_items}-item transactions/s in "
            f"flight: median ratio {change:+.1f}% (target within {WITHIN_PERCENT_TARGET:.0f}%: "
            f"{met}); plain + transaction items {beside + txn_items:,.0f}/s: "
            f"{total_change:+.1f}% of alone"
        )
        for size in (2, 10, 100):
            workers = max(1, min(args.writers, 1600 // size))
            rate, latencies = await transaction_workers(db, workers, size, args.seconds, size)
            print(
                f"transactions of {size:3d} items, {workers:2d} clients: {rate:8,.0f} txn/s "
                f"({rate * size:9,.0f} items/s), p50 {1000 * statistics.median(latencies):6.1f} ms, "
                f"p99 {1000 * percentile(latencies, 0.99):6.1f} ms"
            )
        rate, _ = await transaction_workers(db, args.writers, 1, args.seconds, 7)
        print(f"for scale, one-item transactions, {args.writers} clients: {rate:,.0f} txn/s")
        await log.close()
        store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


CLUSTER_SECONDS_MAX = 120.0  # for `keeldb cluster up` / `down` on a loaded machine


def _cluster_phase(
    client: Any, size: int, seconds: float, clients: int
) -> tuple[float, list[float], int]:
    """(transactions/s, latencies in seconds, failures) of closed-loop boto3 clients."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(number: int) -> None:
        nonlocal failures
        ddb = client(number)
        while time.monotonic() < stop_at:
            items = [
                {"Put": {"TableName": TABLE, "Item": {**item(0), "pk": {"S": uuid.uuid4().hex}}}}
                for _ in range(size)
            ]
            began = time.perf_counter()
            try:
                ddb.transact_write_items(TransactItems=items)
            except Exception:  # noqa: BLE001 - counted and reported
                with lock:
                    failures += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), latencies, failures


def cluster_bench(seconds: float, clients: int) -> None:
    """Cross-partition transactions through a local cluster's routers (boto3 over HTTP)."""
    import boto3
    from botocore.config import Config

    directory = Path(tempfile.mkdtemp(prefix="keeldb-txn-cluster-"))
    keeldb = [sys.executable, "-m", "keeldb", "cluster"]
    try:
        up = subprocess.run(
            [*keeldb, "up", "--nodes", "3", "--partitions", "2", "--data-dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=CLUSTER_SECONDS_MAX,
            check=True,
        )
        endpoints = re.findall(r"http://127\.0\.0\.1:\d+", up.stdout.split("endpoints:")[-1])
        config = Config(retries={"max_attempts": 1}, read_timeout=30)

        def client(number: int) -> Any:
            return boto3.client(
                "dynamodb",
                endpoint_url=endpoints[number % len(endpoints)],
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
                config=config,
            )

        admin = client(0)
        admin.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        deadline = time.monotonic() + CLUSTER_SECONDS_MAX
        while admin.describe_table(TableName=TABLE)["Table"]["TableStatus"] != "ACTIVE":
            assert time.monotonic() < deadline, "the table never became ACTIVE"
            time.sleep(0.2)
        for size in (2, 10, 100):
            rate, latencies, failures = _cluster_phase(client, size, seconds, clients)
            p50 = 1000 * statistics.median(latencies) if latencies else float("nan")
            p99 = 1000 * percentile(latencies, 0.99) if latencies else float("nan")
            print(
                f"cluster (3 nodes, 2 partitions), {size:3d}-item transactions on random keys, "
                f"{clients} clients: {rate:7,.1f} txn/s ({rate * size:8,.0f} items/s), "
                f"p50 {p50:7.1f} ms, p99 {p99:7.1f} ms, {failures} failed"
            )
    finally:
        subprocess.run(
            [*keeldb, "down", "--data-dir", str(directory)],
            capture_output=True,
            timeout=CLUSTER_SECONDS_MAX,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=10, help="alternating windows, in --seconds")
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--txn-rate", type=float, default=20.0, help="transactions/s beside")
    parser.add_argument("--txn-items", type=int, default=2, help="items per transaction beside")
    parser.add_argument("--cluster", action="store_true", help="also measure across partitions")
    parser.add_argument("--cluster-clients", type=int, default=8)
    args = parser.parse_args()
    uvloop.run(run(args))
    if args.cluster:
        cluster_bench(args.seconds, args.cluster_clients)
    else:
        print("across partitions: run with --cluster (starts a local 3-node cluster)")


if __name__ == "__main__":
    main()
