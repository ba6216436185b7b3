"""A cluster replica's point-in-time archive is kept to the retention, as a single node's is:
its records are cut into segments and a trim rolls the base forward over the segments
committed before the cutoff (`keeldb.cluster.backup_route.PartitionArchive.trim`), in
process over a real LMDB store, then on a real cluster whose retention is two seconds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster.backup_route import (
    BASE_FILE,
    RECORDS_FILE,
    PartitionArchive,
    TimedCodec,
    _items_of,
)
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryLog, MemoryStore

Database(MemoryStore())  # imports the operation modules, so "put" is a redo kind

TABLE = {
    "TableName": "tbl",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}
STEP_US = 1_000  # between two writes of the tests' clock
SEGMENT_SECONDS = 0.005  # five writes per segment


class FakeClock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def _open(directory: Path, clock: FakeClock) -> tuple[Database, LmdbStore, PartitionArchive]:
    store = LmdbStore(directory / "store")
    database = Database(store)
    archive = PartitionArchive(directory / "pitr", store, clock, segment_seconds=SEGMENT_SECONDS)
    archive.open()
    database.record_codec = TimedCodec(archive, clock)
    database.attach_log(MemoryLog(database.apply, start_lsn=store.applied_lsn()))
    return database, store, archive


async def _write(database: Database, clock: FakeClock, steps: range) -> dict[int, dict[str, str]]:
    """Puts and deletes at one clock step each; the table's state after each, by time."""
    states: dict[int, dict[str, str]] = {}
    model: dict[str, str] = {}
    table = catalog.find_table(database, "tbl")
    assert table is not None
    model = _keys(database, table.table_id)
    for step in steps:
        clock.now_us = 2_000_000 + step * STEP_US
        key = f"k{step % 7}"
        if step % 5 == 4:
            await database.dispatch("DeleteItem", {"TableName": "tbl", "Key": {"pk": {"S": key}}})
            model.pop(key, None)
        else:
            item = {"pk": {"S": key}, "v": {"S": f"v{step}"}}
            await database.dispatch("PutItem", {"TableName": "tbl", "Item": item})
            model[key] = f"v{step}"
        await asyncio.sleep(0)  # the archive's mark after the batch
        states[clock.now_us] = dict(model)
    return states


def _keys(database: Database, table_id: str) -> dict[str, str]:
    items, _size = _items_of(database, table_id)
    return {item["pk"]["S"]: item["v"]["S"] for item, _ in items}


def _rebuilt(archive: PartitionArchive, table_id: str, instant: int, workdir: Path) -> Any:
    database, remove = archive.rebuild(instant, workdir)
    try:
        return _keys(database, table_id)
    finally:
        remove()


def _records_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.name.startswith("records"))


def test_a_trim_keeps_every_instant_after_the_cutoff_and_drops_the_segments_before(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        database, store, archive = await _open(tmp_path, clock)
        await database.dispatch("CreateTable", TABLE)
        await asyncio.sleep(0)
        table = catalog.find_table(database, "tbl")
        assert table is not None
        states = await _write(database, clock, range(40))
        assert len(archive.segments) >= 7
        first_window = archive.base_time_us
        before = _records_bytes(tmp_path / "pitr")
        cutoff = 2_000_000 + 20 * STEP_US
        assert await archive.trim(cutoff, tmp_path, _in_thread)
        window = archive.base_time_us
        assert window is not None and first_window is not None
        assert first_window < window <= cutoff
        assert window > cutoff - 2 * int(SEGMENT_SECONDS * 1_000_000)
        assert _records_bytes(tmp_path / "pitr") < before
        assert not (tmp_path / "pitr" / RECORDS_FILE).exists()
        assert not (tmp_path / "pitr" / "base").exists()
        base = json.loads((tmp_path / "pitr" / BASE_FILE).read_text())
        assert base["dir"] == archive.base_name
        assert base["first_segment"] == archive.segments[0].seq
        for instant, expected in states.items():
            if instant >= window:
                assert _rebuilt(archive, table.table_id, instant, tmp_path) == expected, instant
            else:
                with pytest.raises(RuntimeError, match="before this partition's archive window"):
                    archive.rebuild(instant, tmp_path)
        # Nothing left to trim before the same cutoff.
        assert not await archive.trim(cutoff, tmp_path, _in_thread)
        store.close()
        # Reopened as after a stop: the trimmed window goes on.
        database, store, archive = await _open(tmp_path, clock)
        assert archive.base_time_us == window
        later = await _write(database, clock, range(40, 50))
        for instant, expected in {**states, **later}.items():
            if instant >= window:
                assert _rebuilt(archive, table.table_id, instant, tmp_path) == expected, instant
        store.close()

    asyncio.run(main())


def test_a_trim_waits_until_it_can_drop_a_segments_span_of_records(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        store = LmdbStore(tmp_path / "store")
        database = Database(store)
        # Segments closed by size (a few records each), spans of 20 steps.
        span_us = 20 * STEP_US
        archive = PartitionArchive(
            tmp_path / "pitr", store, clock, segment_bytes=300, segment_seconds=span_us / 1e6
        )
        archive.open()
        database.record_codec = TimedCodec(archive, clock)
        database.attach_log(MemoryLog(database.apply, start_lsn=store.applied_lsn()))
        await database.dispatch("CreateTable", TABLE)
        await _write(database, clock, range(60))
        assert await archive.trim(2_000_000 + 10 * STEP_US, tmp_path, _in_thread)
        window = archive.base_time_us
        assert window is not None
        # Closed segments lie wholly before this cutoff, but the window is within a span.
        assert archive.segments[0].last_stamp < window + span_us
        assert not await archive.trim(window + span_us, tmp_path, _in_thread)
        assert archive.base_time_us == window
        assert await archive.trim(window + span_us + 1, tmp_path, _in_thread)
        assert archive.base_time_us is not None and archive.base_time_us > window
        store.close()

    asyncio.run(main())


def test_a_start_removes_what_a_trim_stopped_midway_left(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        database, store, archive = await _open(tmp_path, clock)
        await database.dispatch("CreateTable", TABLE)
        table = catalog.find_table(database, "tbl")
        assert table is not None
        states = await _write(database, clock, range(30))
        pitr = tmp_path / "pitr"
        # Stopped before base.json was replaced: a new base that nothing names.
        (pitr / "base-00000009").mkdir()
        (pitr / "base-00000009" / "data.mdb").write_bytes(b"half a copy")
        store.close()
        database, store, archive = await _open(tmp_path, clock)
        assert not (pitr / "base-00000009").exists()
        assert archive.base_name == "base"
        assert await archive.trim(2_000_000 + 15 * STEP_US, tmp_path, _in_thread)
        window = archive.base_time_us
        assert window is not None
        kept = archive.segments[0].seq
        # Stopped after base.json was replaced: the old base and segments still there.
        (pitr / "base").mkdir()
        (pitr / RECORDS_FILE).write_bytes(b"")
        store.close()
        database, store, archive = await _open(tmp_path, clock)
        assert archive.base_time_us == window
        assert archive.segments[0].seq == kept
        assert not (pitr / "base").exists()
        assert not (pitr / RECORDS_FILE).exists()
        for instant, expected in states.items():
            if instant >= window:
                assert _rebuilt(archive, table.table_id, instant, tmp_path) == expected, instant
        store.close()

    asyncio.run(main())


def test_a_trim_waits_while_a_rebuild_reads_the_archive(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        database, store, archive = await _open(tmp_path, clock)
        await database.dispatch("CreateTable", TABLE)
        await _write(database, clock, range(20))
        window = archive.base_time_us
        archive._reading()  # a rebuild in a worker thread, reading the base and segments
        assert not await archive.trim(clock.now_us, tmp_path, _in_thread)
        assert archive.base_time_us == window
        assert (tmp_path / "pitr" / RECORDS_FILE).exists()
        assert sorted(p.name for p in (tmp_path / "pitr").iterdir() if p.is_dir()) == ["base"]
        archive._done()
        assert await archive.trim(clock.now_us, tmp_path, _in_thread)
        store.close()

    asyncio.run(main())


def test_a_trim_prepared_before_a_new_window_started_is_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        database, store, archive = await _open(tmp_path, clock)
        await database.dispatch("CreateTable", TABLE)
        await _write(database, clock, range(20))

        async def run_then_new_window(fn: Callable[..., Any], *args: Any) -> Any:
            result = await asyncio.to_thread(fn, *args)
            if fn == archive._roll:
                archive.new_window()  # a snapshot installed from the leader meanwhile
            return result

        assert not await archive.trim(clock.now_us, tmp_path, run_then_new_window)
        assert archive.base_time_us == clock.now_us
        assert archive.base_name == "base"
        assert [s.seq for s in archive.segments] == [0]
        assert sorted(p.name for p in (tmp_path / "pitr").iterdir() if p.is_dir()) == ["base"]
        store.close()

    asyncio.run(main())


@pytest.mark.process
@pytest.mark.slow
def test_a_clusters_archives_hold_only_the_retention(
    cluster_factory: Callable[..., Any],
) -> None:
    retention = 2.0
    cluster = cluster_factory(
        nodes=3,
        partitions=2,
        env={
            "KEELDB_ARCHIVE_RETENTION_SECONDS": str(retention),
            "KEELDB_ARCHIVE_SEGMENT_SECONDS": "0.5",
            "KEELDB_ARCHIVE_TRIM_SECONDS": "0.5",
        },
    )
    client = cluster.client(cluster.node_ids[0])
    client.create_table(TableName="tbl", **{k: v for k, v in TABLE.items() if k != "TableName"})
    client.update_continuous_backups(
        TableName="tbl", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    started = time.time()
    number = 0
    while time.time() - started < 2 * retention + 2:
        client.put_item(TableName="tbl", Item={"pk": {"S": f"k{number % 50}"}, "v": {"S": "x"}})
        number += 1
        time.sleep(0.01)
    # Every replica's window starts within the retention (and a segment and a check or two).
    deadline = time.monotonic() + 15
    while True:
        now_us = time.time_ns() // 1000
        starts = {
            str(path.relative_to(cluster.data_dir)): (
                now_us - json.loads(path.read_text())["time_us"]
            )
            / 1e6
            for path in cluster.data_dir.glob("**/groups/p*/pitr/base.json")
        }
        assert len(starts) == 2 * 3, starts
        if all(age < retention + 3.0 for age in starts.values()):
            break
        assert time.monotonic() < deadline, starts
        time.sleep(0.5)
    # The latest state is still restorable, whole.
    client.restore_table_to_point_in_time(
        SourceTableName="tbl", TargetTableName="tbl-latest", UseLatestRestorableTime=True
    )
    deadline = time.monotonic() + 60
    while client.describe_table(TableName="tbl-latest")["Table"]["TableStatus"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    restored = client.scan(TableName="tbl-latest", ConsistentRead=True)["Items"]
    assert len(restored) == min(number, 50)
