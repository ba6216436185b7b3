"""The commit times of partition records and a replica's point-in-time archive
(`keeldb.cluster.backup_route`), in process over a real LMDB store: a partition rebuilt as of
an instant holds exactly what was committed by then, and a window survives a reopen only if
the archive saw every record the store applied."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster.backup_route import (
    COMMIT_TIME_KEY,
    PartitionArchive,
    TimedCodec,
    _items_of,
    record_time,
    stamp_record,
)
from keeldb.engine import catalog
from keeldb.engine.database import Database, decode_record, encode_record
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryLog, MemoryStore

Database(MemoryStore())  # imports the operation modules, so "put" is a redo kind

TABLE = {
    "TableName": "tbl",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


class FakeClock:
    """Microseconds that the test sets (and may move backwards)."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@pytest.mark.parametrize("entries", [1, 14, 15, 40])
def test_a_stamped_record_decodes_as_the_record_with_its_commit_time(entries: int) -> None:
    record: dict[str, Any] = {"kind": "put"}
    record.update({f"m{n}": n for n in range(entries - 1)})
    data = encode_record(record)
    stamped = stamp_record(data, 1_764_000_000_123_456)
    assert decode_record(stamped) == {**record, COMMIT_TIME_KEY: 1_764_000_000_123_456}
    assert record_time(stamped) == 1_764_000_000_123_456
    assert record_time(data) == 0


def test_commit_times_never_step_back_when_the_clock_does() -> None:
    class Sink:
        def note(self, stamp: int, data: bytes) -> None:
            self.stamp = stamp

    clock = FakeClock(5_000)
    codec = TimedCodec(Sink(), clock)
    data = encode_record({"kind": "put"})
    first = record_time(codec.seal(data))
    clock.now_us = 1_000
    second = record_time(codec.seal(data))
    assert first == 5_000
    assert second == 5_001
    # A record another leader stamped later moves this replica's floor too.
    codec.open(stamp_record(data, 9_000))
    assert record_time(codec.seal(data)) == 9_001


async def _open(directory: Path, clock: FakeClock) -> tuple[Database, LmdbStore, PartitionArchive]:
    store = LmdbStore(directory / "store")
    database = Database(store)
    archive = PartitionArchive(directory / "pitr", store, clock)
    archive.open()
    database.record_codec = TimedCodec(archive, clock)
    database.attach_log(MemoryLog(database.apply, start_lsn=store.applied_lsn()))
    return database, store, archive


def _keys(database: Database, table_id: str) -> dict[str, str]:
    items, _size = _items_of(database, table_id)
    return {item["pk"]["S"]: item["v"]["S"] for item, _ in items}


def test_a_partition_rebuilt_at_an_instant_holds_exactly_what_was_committed_by_then(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        database, store, archive = await _open(tmp_path, clock)
        await database.dispatch("CreateTable", TABLE)
        await asyncio.sleep(0)  # the archive's mark after the batch
        model: dict[str, str] = {}
        states: list[tuple[int, dict[str, str]]] = []
        for step in range(30):
            clock.now_us = 2_000_000 + step * 1_000
            key = f"k{step % 7}"
            if step % 5 == 4:
                await database.dispatch(
                    "DeleteItem", {"TableName": "tbl", "Key": {"pk": {"S": key}}}
                )
                model.pop(key, None)
            else:
                item = {"pk": {"S": key}, "v": {"S": f"v{step}"}}
                await database.dispatch("PutItem", {"TableName": "tbl", "Item": item})
                model[key] = f"v{step}"
            states.append((clock.now_us, dict(model)))
            await asyncio.sleep(0)
        table = catalog.find_table(database, "tbl")
        assert table is not None
        table_id = table.table_id
        before = {}
        for at, state in states:
            for instant, expected in ((at - 1, before), (at, state)):
                rebuilt, remove = archive.rebuild(instant, tmp_path)
                try:
                    assert _keys(rebuilt, table_id) == expected, instant
                finally:
                    remove()
            before = state
        store.close()

    asyncio.run(main())


def test_a_window_goes_on_after_a_reopen_only_if_the_archive_saw_every_applied_record(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock(1_000_000)
        database, store, archive = await _open(tmp_path, clock)
        await database.dispatch("CreateTable", TABLE)
        await database.dispatch(
            "PutItem", {"TableName": "tbl", "Item": {"pk": {"S": "a"}, "v": {"S": "1"}}}
        )
        await asyncio.sleep(0)
        first_window = archive.base_time_us
        store.close()
        # Reopened as after a stop: the same window.
        database, store, archive = await _open(tmp_path, clock)
        assert archive.base_time_us == first_window
        # The store applies a record the archive never sees (no codec): a new window.
        database.record_codec = None
        await database.dispatch(
            "PutItem", {"TableName": "tbl", "Item": {"pk": {"S": "b"}, "v": {"S": "2"}}}
        )
        store.close()
        clock.now_us = 3_000_000
        database, store, archive = await _open(tmp_path, clock)
        assert first_window == 1_000_000
        assert archive.base_time_us == 3_000_000
        store.close()

    asyncio.run(main())


def test_a_torn_last_frame_leaves_the_frames_before_it(tmp_path: Path) -> None:
    import msgpack

    from keeldb.cluster.backup_route import READ_CHUNK_BYTES, _frames

    path = tmp_path / "records.bin"
    frames = [[0, n, b"x" * 70_000] for n in range(40)]  # more than one read chunk
    data = b"".join(msgpack.packb(f, use_bin_type=True) for f in frames)
    assert len(data) > 2 * READ_CHUNK_BYTES
    path.write_bytes(data[:-5])
    assert list(_frames(path)) == frames[:-1]
    assert list(_frames(path, size=len(data) - 5)) == frames[:-1]
    assert list(_frames(tmp_path / "missing.bin")) == []
