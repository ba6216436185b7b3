"""The durable write path in one process, without HTTP: CPU per write and per group commit.

Runs the engine (`Database.dispatch` with JSON decoding and encoding) over the node's real
log (`LocalLog`: WAL segments, fsync per group, the disk thread) and LMDB store in a
temporary directory, with `--writers` concurrent writers (so groups of about that many
records), and reports CPU (`time.process_time`: every thread of the process, the disk
thread's system calls included) and wall time per PutItem and per UpdateItem of one field,
and records per group commit. `--log memory` swaps the log for one that commits at once,
which isolates the engine; `--bare` appends 1.3 KB records to the log with a trivial
apply, which isolates the group commit. Run it from the tree to measure (PYTHONPATH), and
compare trees or settings alternately in one sitting: the figures move with the host's load.
Each operation's requests are timed in `--chunks` slices; the report gives medians over the
slices, and for the event-loop thread's own CPU (`time.thread_time`: the serial part, which
bounds a server's throughput) also the least disturbed slice.

    python -m benchmarks.write_path --writers 4 --records 3000
    python -m benchmarks.write_path --bare --writers 1 --sync-mode inline
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from keeldb.bench.inprocess import FIELD_CHARACTERS, TABLE, create_table, record
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryLog
from keeldb.storage.replog import LocalLog


async def open_log(args: argparse.Namespace, directory: Path, store: LmdbStore, apply: Any) -> Any:
    if args.log == "memory":
        return MemoryLog(apply, start_lsn=store.applied_lsn())
    options: dict[str, Any] = {}
    if args.sync_mode is not None:
        options["sync_mode"] = args.sync_mode
    if args.preallocate_bytes is not None:
        options["preallocate_bytes"] = args.preallocate_bytes
    return await LocalLog.open(directory / "wal", store, apply, **options)


async def timed(
    log: Any, writers: int, bodies: list[Any], run: Any
) -> tuple[float, float, float, float]:
    """(CPU µs, event-loop thread CPU µs, wall µs per operation, records per group) of `run`
    over `bodies`."""
    groups_before = getattr(log, "fsync_count", 0)

    async def writer(first: int) -> None:
        for body in bodies[first::writers]:
            await run(body)

    cpu = time.process_time()
    loop_cpu = time.thread_time()  # this thread runs the loop: the server's bound
    wall = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    cpu_us = (time.process_time() - cpu) / len(bodies) * 1e6
    loop_us = (time.thread_time() - loop_cpu) / len(bodies) * 1e6
    wall_us = (time.perf_counter() - wall) / len(bodies) * 1e6
    groups = getattr(log, "fsync_count", 0) - groups_before
    return cpu_us, loop_us, wall_us, len(bodies) / groups if groups else float("nan")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def engine(args: argparse.Namespace, directory: Path) -> None:
    store = LmdbStore(directory / "store")
    db = Database(store)
    log = await open_log(args, directory, store, db.apply)
    db.attach_log(log)
    await create_table(db)
    rng = random.Random(1)
    count = args.records
    puts = [orjson.dumps({"TableName": TABLE, "Item": record(i)}) for i in range(count)]
    updates = [
        orjson.dumps(
            {
                "TableName": TABLE,
                "Key": {"YCSB_KEY": {"S": f"user{rng.randrange(count)}"}},
                "UpdateExpression": "SET #f = :v",
                "ExpressionAttributeNames": {"#f": "field3"},
                "ExpressionAttributeValues": {":v": {"S": "y" * FIELD_CHARACTERS}},
            }
        )
        for _ in range(count)
    ]
    for operation, bodies in (("PutItem", puts), ("UpdateItem", updates)):

        async def run(body: bytes, operation: str = operation) -> None:
            orjson.dumps(await db.dispatch(operation, orjson.loads(body)))

        # The bodies in `--chunks` slices, each timed alone: on a shared host the least
        # disturbed slice (the minimum) says more than the mean of all of them.
        size = max(1, len(bodies) // args.chunks)
        results = [
            await timed(log, args.writers, bodies[start : start + size], run)
            for start in range(0, len(bodies), size)
        ]
        cpu_us = median([r[0] for r in results])
        loop_us = [r[1] for r in results]
        wall_us = median([r[2] for r in results])
        per_group = median([r[3] for r in results])
        print(
            f"{operation}: {cpu_us:.1f} µs CPU, loop thread {median(loop_us):.1f} "
            f"(least {min(loop_us):.1f}), {wall_us:.1f} µs wall per operation; "
            f"{per_group:.1f} records per group"
        )
    await log.close()
    store.close()


async def bare(args: argparse.Namespace, directory: Path) -> None:
    store = LmdbStore(directory / "store")
    keys = 5000

    def apply(entries: Any) -> None:
        for lsn, payload in entries:
            store.write([(b"k%d" % (lsn % keys), payload)], [], applied_lsn=lsn)

    log = await open_log(args, directory, store, apply)
    payload = os.urandom(1300)  # about a PutItem's record of the YCSB item

    async def run(_: object) -> None:
        await log.append(payload)

    cpu_us, loop_us, wall_us, per_group = await timed(
        log, args.writers, [None] * args.records, run
    )
    print(
        f"append: {cpu_us:.1f} µs CPU, {wall_us:.1f} µs wall per record; "
        f"{per_group:.1f} records per group, {cpu_us * per_group:.1f} µs CPU per group, "
        f"{loop_us * per_group:.1f} of it on the event-loop thread"
    )
    await log.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument(
        "--chunks", type=int, default=10, help="timed slices per operation (medians reported)"
    )
    parser.add_argument("--log", choices=("wal", "memory"), default="wal")
    parser.add_argument("--bare", action="store_true", help="the log alone, no engine")
    parser.add_argument("--sync-mode", choices=("thread", "inline"), default=None)
    parser.add_argument("--preallocate-bytes", type=int, default=None)
    args = parser.parse_args()
    uvloop.install()
    with tempfile.TemporaryDirectory(prefix="keeldb-write-path-") as name:
        asyncio.run((bare if args.bare else engine)(args, Path(name)))


if __name__ == "__main__":
    main()
