"""Point-in-time restore against a reference model: random writes at random (sometimes
backward-stepping) clock readings, archived in random segment sizes with random seals and
snapshots; a restore to any instant must give exactly the model's table as of that instant."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.backup.archive import Archiver, load_manifest
from keeldb.backup.rebuild import rebuild_at
from keeldb.backup.store import DirectoryStore
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.item_store import decode_item
from keeldb.model.keys import index_bounds
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog

TABLE = "model"
KEYS = ["a", "b", "c", "d", "e"]

write = st.tuples(
    st.sampled_from(["put", "delete", "seal", "snapshot"]),
    st.sampled_from(KEYS),
    st.integers(0, 99),
    st.integers(-2_000_000, 3_000_000),  # how the clock moves before the operation (us)
)


class Clock:
    def __init__(self) -> None:
        self.now_us = 1_700_000_000_000_000

    def __call__(self) -> int:
        return self.now_us


def table_items(database: Database, table_id: str) -> dict[str, int]:
    start, end = index_bounds(table_id, 0)
    items = {}
    for _, value in database.store.scan(start, end):
        item = decode_item(value)
        items[item["pk"]["S"]] = int(item["v"]["N"])
    return items


async def run_history(
    directory: Path, operations: list[tuple[str, str, int, int]], segment_bytes: int
) -> tuple[list[tuple[int, dict[str, int]]], str, Any]:
    clock = Clock()
    store = LmdbStore(directory / "store")
    database = Database(store)
    log = await LocalLog.open(
        directory / "wal",
        store,
        database.apply,
        clock_us=clock,
        segment_bytes=segment_bytes,
        checkpoint_interval_seconds=3600,
    )
    database.attach_log(log)
    database.state[catalog.CLOCK_STATE_KEY] = lambda: clock() / 1e6
    backups = DirectoryStore(directory / "backups")
    archiver = Archiver(backups, log, store.snapshot, interval_seconds=3600)
    await archiver.start()
    await database.dispatch(
        "CreateTable",
        {
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    table_id = catalog.get_table(database, TABLE).table_id
    model: dict[str, int] = {}
    history = [(log.committed_time_us(), dict(model))]
    for kind, key, value, step_us in operations:
        clock.now_us += step_us
        if kind == "put":
            await database.dispatch(
                "PutItem", {"TableName": TABLE, "Item": {"pk": {"S": key}, "v": {"N": str(value)}}}
            )
            model[key] = value
        elif kind == "delete":
            await database.dispatch("DeleteItem", {"TableName": TABLE, "Key": {"pk": {"S": key}}})
            model.pop(key, None)
        elif kind == "seal":
            await archiver.flush()
            continue
        else:
            await archiver.flush(snapshot=True)
            continue
        history.append((log.committed_time_us(), dict(model)))
    await archiver.flush()
    await archiver.close()
    await log.close()
    store.close()
    return history, table_id, backups


def expected_at(history: list[tuple[int, dict[str, int]]], instant_us: int) -> dict[str, int]:
    state: dict[str, int] = {}
    for time_us, snapshot in history:
        if time_us <= instant_us:
            state = snapshot
    return state


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    operations=st.lists(write, min_size=1, max_size=25),
    segment_bytes=st.sampled_from([160, 400, 4096]),
    picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=6),
)
def test_a_restore_to_any_instant_equals_the_model_at_that_instant(
    operations: list[tuple[str, str, int, int]], segment_bytes: int, picks: list[int]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="keeldb-pitr-"))
    try:
        history, table_id, backups = asyncio.run(run_history(directory, operations, segment_bytes))
        manifest = load_manifest(backups)
        first = history[0][0]
        last = history[-1][0]
        # Instants at and between commits, exactly on commit times and one microsecond off.
        instants = {first, last, last + 10**6}
        for pick in picks:
            time_us = history[pick % len(history)][0]
            instants.update({time_us, time_us - 1, time_us + 1})
        for number, instant in enumerate(sorted(i for i in instants if i >= first)):
            rebuilt = rebuild_at(
                backups,
                manifest,
                instant,
                directory / f"restore{number}",
                Database,
                table_ids=frozenset([table_id]),
            )
            try:
                found = table_items(rebuilt.database, table_id)
            finally:
                rebuilt.close()
            assert found == expected_at(history, instant), instant
    finally:
        shutil.rmtree(directory, ignore_errors=True)
