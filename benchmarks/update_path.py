"""One UpdateItem's CPU in the expression code and in the engine, in one process.

Two loops over the same requests (workload A's `SET #f = :v` on a field of a ten-field
record of 100-character strings, names and values new in every request as a client sends
them):

- `expressions`: what the UpdateItem operation asks of `keeldb.expressions` for one request:
  the context's checks of the names and values, compiling the (cached) update, the unused
  check, the top-level attributes and paths, and applying it to the stored item.
- `operation`: the whole UpdateItem through `Database.dispatch` over an LMDB store in a
  temporary directory with a log that commits each record as it is appended (no HTTP, no
  group commit).

Reported: the thread's CPU per request (`time.thread_time`), the median over `--chunks`
slices and the least disturbed slice. Compare trees alternately in one sitting
(PYTHONPATH=TREE python benchmarks/update_path.py), as the figures move with the host's load.

    python benchmarks/update_path.py --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from keeldb.bench.inprocess import FIELDS, TABLE, loaded_database, record
from keeldb.expressions import ExpressionContext

ITEMS = 2000


def bodies(count: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "TableName": TABLE,
            "Key": {"YCSB_KEY": {"S": f"user{rng.randrange(ITEMS)}"}},
            "UpdateExpression": "SET #f = :v",
            "ExpressionAttributeNames": {"#f": f"field{rng.randrange(FIELDS)}"},
            "ExpressionAttributeValues": {":v": {"S": f"{rng.randrange(10**9):0100d}"}},
        }
        for _ in range(count)
    ]


def report(name: str, per_request_us: list[float]) -> None:
    ordered = sorted(per_request_us)
    print(
        f"{name}: {ordered[len(ordered) // 2]:.2f} µs of CPU per UpdateItem "
        f"(least {ordered[0]:.2f})"
    )


def expressions(requests: list[dict[str, Any]], chunks: int) -> list[float]:
    stored = record(0)
    size = max(1, len(requests) // chunks)
    per_request_us = []
    for start in range(0, len(requests), size):
        chunk = requests[start : start + size]
        cpu = time.thread_time()
        for body in chunk:
            context = ExpressionContext(
                body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues")
            )
            update = context.update(body["UpdateExpression"])
            context.check_unused()
            update.top_level_attributes()
            update.paths  # noqa: B018 - read as the operation reads it
            new, _ = update.apply(stored)
            assert new is not stored
        per_request_us.append((time.thread_time() - cpu) / len(chunk) * 1e6)
    return per_request_us


async def operation(requests: list[dict[str, Any]], chunks: int, directory: Path) -> list[float]:
    db = await loaded_database(directory, ITEMS)
    size = max(1, len(requests) // chunks)
    per_request_us = []
    try:
        for start in range(0, len(requests), size):
            chunk = requests[start : start + size]
            cpu = time.thread_time()
            for body in chunk:
                await db.dispatch("UpdateItem", body)
            per_request_us.append((time.thread_time() - cpu) / len(chunk) * 1e6)
    finally:
        db.store.close()
    return per_request_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="per loop")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--only", choices=("expressions", "operation"))
    args = parser.parse_args()
    rng = random.Random(1)
    requests = bodies(args.requests, rng)
    if args.only in (None, "expressions"):
        report("expressions", expressions(requests, args.chunks))
    if args.only in (None, "operation"):
        with tempfile.TemporaryDirectory(prefix="keeldb-update-path-") as name:
            report("operation", asyncio.run(operation(requests, args.chunks, Path(name))))


if __name__ == "__main__":
    main()
