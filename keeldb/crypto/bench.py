"""What encryption at rest costs the engine: a YCSB A mix on an in-process node, on and off.

    python -m keeldb.crypto.bench [--records N] [--seconds S] [--rounds R] [--concurrency C]

Runs the same workload (50% GetItem, 50% UpdateItem of one ~100-byte field, items of ten
such fields, Zipf-like key choice) against a `Database` over a real `LmdbStore` and
`LocalLog` in a temporary directory, alternating encryption off and on for R rounds, and
prints each round's operations per second and CPU time per operation, then the medians and
their ratios. Rounds alternate so that a busy machine's noise falls on both sides alike. It
measures the engine, not HTTP: the front end costs the same with or without encryption, so
this ratio bounds the cost a client sees from above.

A benchmark, not a test; it writes only under a temporary directory and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from keeldb.crypto.keyring import Keyring
from keeldb.crypto.master_key import MasterKey
from keeldb.crypto.store import EncryptingStore
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog

FIELDS = 10
FIELD_BYTES = 100
TABLE = "usertable"
ZIPF_SKEW = 0.99  # YCSB's default theta
FIELD_POOL = 1000  # distinct field values the updates draw from


def _field(rng: random.Random) -> str:
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=FIELD_BYTES))


async def _open(directory: Path, master: MasterKey | None) -> tuple[Database, Any, Any]:
    store: Any = LmdbStore(directory / "store")
    codec = None
    if master is not None:
        keyring = Keyring.create(directory / "keyring", master)
        store = EncryptingStore(store, keyring)
        codec = keyring.record_codec
    database = Database(store, record_codec=codec)
    log = await LocalLog.open(directory / "wal", store, database.apply)
    database.attach_log(log)
    return database, store, log


async def _round(
    directory: Path, encrypted: bool, records: int, seconds: float, concurrency: int
) -> tuple[float, float]:
    """(operations per second, CPU microseconds per operation) of one round."""
    master = MasterKey(os.urandom(32)) if encrypted else None
    database, store, log = await _open(directory, master)
    rng = random.Random(7)
    try:
        await database.dispatch(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

        async def load(first: int) -> None:
            for n in range(first, records, concurrency):
                item = {f"field{f}": {"S": _field(rng)} for f in range(FIELDS)}
                item["key"] = {"S": f"user{n}"}
                await database.dispatch("PutItem", {"TableName": TABLE, "Item": item})

        await asyncio.gather(*(load(c) for c in range(concurrency)))
        cumulative = list(itertools.accumulate(1 / (n + 1) ** ZIPF_SKEW for n in range(records)))
        fields = [_field(rng) for _ in range(FIELD_POOL)]  # values are drawn, not generated
        operations = 0
        deadline = time.monotonic() + seconds

        async def worker(seed: int) -> None:
            nonlocal operations
            local = random.Random(seed)
            while time.monotonic() < deadline:
                (n,) = local.choices(range(records), cum_weights=cumulative)
                key = {"key": {"S": f"user{n}"}}
                if local.random() < 0.5:
                    await database.dispatch("GetItem", {"TableName": TABLE, "Key": key})
                else:
                    await database.dispatch(
                        "UpdateItem",
                        {
                            "TableName": TABLE,
                            "Key": key,
                            "UpdateExpression": "SET field0 = :v",
                            "ExpressionAttributeValues": {":v": {"S": local.choice(fields)}},
                        },
                    )
                operations += 1

        cpu_before, wall_before = time.process_time(), time.monotonic()
        await asyncio.gather(*(worker(c) for c in range(concurrency)))
        cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
        return operations / wall, 1e6 * cpu / max(operations, 1)
    finally:
        await log.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m keeldb.crypto.bench")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    base = Path(tempfile.mkdtemp(prefix="keeldb-crypto-bench-"))
    try:
        for number in range(args.rounds):
            for encrypted in (False, True) if number % 2 == 0 else (True, False):
                directory = base / f"{number}-{'on' if encrypted else 'off'}"
                rate, cpu = asyncio.run(
                    _round(directory, encrypted, args.records, args.seconds, args.concurrency)
                )
                shutil.rmtree(directory)
                results[encrypted].append((rate, cpu))
                label = "on " if encrypted else "off"
                print(f"round {number} encryption {label}: {rate:8.1f} ops/s {cpu:7.1f} us CPU/op")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    off_rate = statistics.median(r for r, _ in results[False])
    on_rate = statistics.median(r for r, _ in results[True])
    off_cpu = statistics.median(c for _, c in results[False])
    on_cpu = statistics.median(c for _, c in results[True])
    print(f"median off: {off_rate:.1f} ops/s, {off_cpu:.1f} us CPU/op")
    print(f"median on:  {on_rate:.1f} ops/s, {on_cpu:.1f} us CPU/op")
    print(f"throughput on/off: {on_rate / off_rate:.3f}; CPU per op on/off: {on_cpu / off_cpu:.3f}")


if __name__ == "__main__":
    main()
