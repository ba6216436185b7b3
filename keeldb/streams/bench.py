"""What a stream costs: PutItem throughput into a table with a stream and into one without,
measured in the same run on the same node (a real log with fsync and an LMDB store in a
temporary directory), alternating rounds so that machine noise hits both alike.

    python -m keeldb.streams.bench [--seconds 2] [--rounds 3] [--writers 64] [--view ...] [--http]

With --http the writes go over HTTP to a `keeldb serve` process started for the run, and the
CPU figure is the server process's own (the clients' CPU is not counted).

It prints writes per second and CPU time per write of each round, and the ratios of the
medians (with / without).
It is a measurement, not a test: figures vary with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog

ITEM_PAD_BYTES = 100  # a small item, so that the per-write cost of the stream shows


async def _create(db: Database, name: str, view: str | None) -> None:
    body: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if view is not None:
        body["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
    await db.dispatch("CreateTable", body)


async def _round(db: Database, table: str, writers: int, seconds: float) -> tuple[float, float]:
    """(writes per second, CPU microseconds per write) of `writers` concurrent PutItem loops
    for `seconds`. CPU time per write is the steadier figure on a shared machine."""
    done = 0
    deadline = time.monotonic() + seconds
    pad = {"S": "x" * ITEM_PAD_BYTES}

    async def loop(number: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < deadline:
            item = {"pk": {"S": f"w{number}-{i % 500}"}, "n": {"N": str(i)}, "pad": pad}
            await db.dispatch("PutItem", {"TableName": table, "Item": item})
            done += 1
            i += 1

    start = time.monotonic()
    cpu_start = time.process_time()
    await asyncio.gather(*(loop(n) for n in range(writers)))
    cpu = time.process_time() - cpu_start
    return done / (time.monotonic() - start), cpu * 1e6 / max(done, 1)


async def measure(
    seconds: float, rounds: int, writers: int, view: str
) -> dict[str, list[tuple[float, float]]]:
    with tempfile.TemporaryDirectory(prefix="keeldb-streams-bench-") as directory:
        store = LmdbStore(Path(directory) / "store")
        db = Database(store)
        log = await LocalLog.open(Path(directory) / "wal", store, db.apply)
        db.attach_log(log)
        try:
            await _create(db, "plain", None)
            await _create(db, "streamed", view)
            results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
            for _ in range(rounds):
                results["without"].append(await _round(db, "plain", writers, seconds))
                results["with"].append(await _round(db, "streamed", writers, seconds))
            return results
        finally:
            await log.close()
            store.close()


SERVER_START_SECONDS_MAX = 30.0
_LISTENING = re.compile(r"KeelDB listening on http://([^:]+):(\d+)")


def _post(connection: http.client.HTTPConnection, operation: str, body: dict[str, Any]) -> None:
    connection.request(
        "POST",
        "/",
        json.dumps(body),
        {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        },
    )
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, data


def _http_round(
    host: str, port: int, server: psutil.Process, table: str, writers: int, seconds: float
) -> tuple[float, float]:
    done = [0] * writers
    deadline = time.monotonic() + seconds
    pad = {"S": "x" * ITEM_PAD_BYTES}

    def loop(number: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        i = 0
        while time.monotonic() < deadline:
            item = {"pk": {"S": f"w{number}-{i % 500}"}, "n": {"N": str(i)}, "pad": pad}
            _post(connection, "PutItem", {"TableName": table, "Item": item})
            i += 1
        done[number] = i
        connection.close()

    cpu_before = sum(server.cpu_times()[:2])
    start = time.monotonic()
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    total = sum(done)
    return total / elapsed, cpu * 1e6 / max(total, 1)


def measure_http(
    seconds: float, rounds: int, writers: int, view: str
) -> dict[str, list[tuple[float, float]]]:
    with tempfile.TemporaryDirectory(prefix="keeldb-streams-bench-") as directory:
        out = Path(directory) / "stdout"
        with out.open("wb") as stdout:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "keeldb",
                    "serve",
                    "--port",
                    "0",
                    "--no-functions",
                    "--data-dir",
                    str(Path(directory) / "data"),
                ],
                stdout=stdout,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS_MAX
            while (match := _LISTENING.search(out.read_text())) is None:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the server did not start:\n" + out.read_text())
                time.sleep(0.05)
            host, port = match.group(1), int(match.group(2))
            connection = http.client.HTTPConnection(host, port, timeout=30)
            for table, table_view in (("plain", None), ("streamed", view)):
                body: dict[str, Any] = {
                    "TableName": table,
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                    "BillingMode": "PAY_PER_REQUEST",
                }
                if table_view is not None:
                    body["StreamSpecification"] = {
                        "StreamEnabled": True,
                        "StreamViewType": table_view,
                    }
                _post(connection, "CreateTable", body)
            connection.close()
            server = psutil.Process(process.pid)
            results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
            for _ in range(rounds):
                results["without"].append(
                    _http_round(host, port, server, "plain", writers, seconds)
                )
                results["with"].append(
                    _http_round(host, port, server, "streamed", writers, seconds)
                )
            return results
        finally:
            process.terminate()
            process.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--view", default="NEW_AND_OLD_IMAGES", help="the stream's view type")
    parser.add_argument("--http", action="store_true", help="write over HTTP to a server process")
    args = parser.parse_args(argv)
    if args.http:
        results = measure_http(args.seconds, args.rounds, args.writers, args.view)
    else:
        results = asyncio.run(measure(args.seconds, args.rounds, args.writers, args.view))
    for kind, rounds in results.items():
        rates = ", ".join(f"{rate:,.0f}" for rate, _ in rounds)
        cpus = ", ".join(f"{cpu:,.0f}" for _, cpu in rounds)
        print(f"{kind:>7} stream: {rates} writes/s; {cpus} CPU us/write")

    def median(kind: str, field: int) -> float:
        return statistics.median(r[field] for r in results[kind])

    print(f"throughput with / without (medians): {median('with', 0) / median('without', 0):.3f}")
    print(f"CPU per write with / without (medians): {median('with', 1) / median('without', 1):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
