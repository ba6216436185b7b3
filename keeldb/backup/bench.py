"""Restore throughput: `python -m keeldb.backup.bench [--megabytes N] [--workers 1,4]`.

Fills a table on a node of its own (a temporary data directory), then restores it to the
latest restorable time once per worker count and reports MB/s of restored item data, so that
the parallel and the one-at-a-time restore are measured in the same run on the same data.
It is a measurement tool: it asserts nothing and changes nothing outside its directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from keeldb.engine import backups as ops
from keeldb.node import Node, NodeConfig

ITEM_BYTES = 1000  # the payload attribute of each item
BATCH_ITEMS = 25  # BatchWriteItem's limit


async def _wait_active(node: Node, name: str) -> dict[str, Any]:
    while True:
        table: dict[str, Any] = (
            await node.database.dispatch("DescribeTable", {"TableName": name})
        )["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        await asyncio.sleep(0.01)


async def run(megabytes: float, worker_counts: list[int], directory: Path) -> list[str]:
    os.environ.setdefault("KEELDB_ARCHIVE_INTERVAL_SECONDS", "3600")
    node = await Node.start(NodeConfig(port=0, data_dir=directory, functions=False))
    lines = []
    try:
        db = node.database
        await db.dispatch(
            "CreateTable",
            {
                "TableName": "bench",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        await db.dispatch(
            "UpdateContinuousBackups",
            {
                "TableName": "bench",
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        )
        count = int(megabytes * 1e6 / ITEM_BYTES)
        payload = "x" * ITEM_BYTES

        async def load(first: int, last: int) -> None:
            for start in range(first, last, BATCH_ITEMS):
                requests = [
                    {"PutRequest": {"Item": {"pk": {"S": f"k{n:09d}"}, "p": {"S": payload}}}}
                    for n in range(start, min(start + BATCH_ITEMS, last))
                ]
                await db.dispatch("BatchWriteItem", {"RequestItems": {"bench": requests}})

        loaders = 16
        step = -(-count // loaders)
        await asyncio.gather(*(load(n * step, min(count, (n + 1) * step)) for n in range(loaders)))
        await asyncio.sleep(1.1)  # past the latest restorable time's lag
        service = db.state[ops.HOOKS_KEY]
        for workers in worker_counts:
            service.load_workers = workers
            target = f"bench-{workers}"
            started = time.monotonic()
            await db.dispatch(
                "RestoreTableToPointInTime",
                {
                    "SourceTableName": "bench",
                    "TargetTableName": target,
                    "UseLatestRestorableTime": True,
                },
            )
            table = await _wait_active(node, target)
            seconds = time.monotonic() - started
            size = table["TableSizeBytes"]
            progress = service.progress[table["TableId"]]
            assert progress.loading_since is not None and progress.finished is not None
            rebuild = progress.loading_since - progress.started
            loading = progress.finished - progress.loading_since
            lines.append(
                f"restore with {workers} worker(s): {table['ItemCount']} items, "
                f"{size / 1e6:.1f} MB in {seconds:.2f} s = {size / 1e6 / seconds:.1f} MB/s "
                f"(rebuild from the archive {rebuild:.2f} s; parallel load {loading:.2f} s = "
                f"{size / 1e6 / loading:.1f} MB/s)"
            )
            await db.dispatch("DeleteTable", {"TableName": target})
    finally:
        await node.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50.0, help="table size to restore")
    parser.add_argument("--workers", default="1,4", help="worker counts to compare")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="keeldb-restore-bench-"))
    try:
        counts = [int(n) for n in args.workers.split(",")]
        for line in asyncio.run(run(args.megabytes, counts, directory)):
            print(line)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
