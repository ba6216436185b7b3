"""What a stream costs: PutItem throughput into a table with a stream and into one without,
measured in the same run on the same node (a real log with fsync and an LMDB store in a
temporary directory), alternating rounds so that machine noise hits both alike.

    python -m keeldb.streams.bench [--seconds 2] [--rounds 3] [--writers 64] [--view NEW_AND_OLD_IMAGES]

It prints writes per second and CPU time per write of each round, and the ratios of the
medians (with / without).
It is a measurement, not a test: figures vary with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    parser.add_argument("--view", default="NEW_AND_OLD_IMAGES", help="the stream's view type")
    args = parser.parse_args(argv)
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
