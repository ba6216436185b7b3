"""The table and records the in-process benchmarks (benchmarks/write_path.py,
request_path.py, update_path.py) share: the YCSB record of the side-by-side runs (a string
key and ten fields of 100 characters, as `workloads` defines it) in a pay-per-request table,
on an engine over LMDB. It owns nothing else, and is never used by the server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from keeldb.bench.workloads import FIELD_BYTES, FIELD_COUNT, USER_TABLE
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryLog

TABLE = USER_TABLE
FIELDS = FIELD_COUNT
FIELD_CHARACTERS = FIELD_BYTES


def record(i: int) -> dict[str, Any]:
    """The i-th record: key `user{i}` and its ten fields."""
    fields = {f"field{f}": {"S": "x" * FIELD_CHARACTERS} for f in range(FIELDS)}
    return {"YCSB_KEY": {"S": f"user{i}"}, **fields}


async def create_table(db: Database) -> None:
    await db.dispatch(
        "CreateTable",
        {
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "YCSB_KEY", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "YCSB_KEY", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


async def loaded_database(
    directory: Path, items: int, log: Callable[[Database], Any] | None = None
) -> Database:
    """An engine over LMDB in `directory` with an in-memory log (no fsync), or the log that
    `log(db)` makes, the table created and records 0 .. items-1 put."""
    store = LmdbStore(directory / "store")
    db = Database(store)
    if log is None:
        db.attach_log(MemoryLog(db.apply, start_lsn=store.applied_lsn()))
    else:
        db.attach_log(log(db))
    await create_table(db)
    for i in range(items):
        await db.dispatch("PutItem", {"TableName": TABLE, "Item": record(i)})
    return db
