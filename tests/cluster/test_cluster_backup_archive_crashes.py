"""kill -9 around a store batch's commit on a replica's point-in-time archive
(`keeldb.cluster.backup_route.PartitionArchive`), in a real process over a real LMDB store.

A child process applies writes the way a replica does: each loop turn's records go to a log
file (fsynced: the log is the durability point) and then to the store in one batch, whose
frames and mark the archive writes just before the store commits it. The child kills itself
with SIGKILL at a chosen point of a chosen batch: after the archive's write and before the
store's commit, or after the commit. The test then reopens the store and the archive as a
restarted replica would, applies the log records the store is missing (as the log's replay
does), and requires that the window went on (the archive still starts where it did) and
that the partition rebuilt as of every commit time holds exactly what the log had committed
by then. A last case cuts the mark off the archive's end, as a process killed after the
commit and before a mark written after it (records applied outside a store batch) leaves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from keeldb.cluster.backup_route import (
    BASE_FILE,
    FRAME_MARK,
    FRAME_RECORD,
    PartitionArchive,
    TimedCodec,
    _frames,
    _items_of,
    record_time,
)
from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryStore

CHILD_SECONDS_MAX = 60.0
OPERATIONS = 60  # writes in the child, in turns of up to TURN_WRITES
TURN_WRITES = 4
KILL_BATCH = 9  # the batch (CreateTable's is the first) around whose commit the child dies
LOG_FILE = "log.bin"  # [lsn, record] frames, fsynced before the store applies them

TABLE = {
    "TableName": "tbl",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


class Clock:
    """Commit times that move by a millisecond at each reading, from a start the test sets."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        self.now_us += 1_000
        return self.now_us


class BatchLog:
    """A log of one member over a file: the records appended in one loop turn are written
    and fsynced, then applied in one store batch (a group commit)."""

    def __init__(self, directory: Path, database: Database, store: LmdbStore) -> None:
        self.database = database
        self.store = store
        self.lsn = store.applied_lsn()
        self.file = open(directory / LOG_FILE, "ab")  # noqa: SIM115 - the process dies with it
        self.queue: list[tuple[bytes, asyncio.Future[int]]] = []
        self.batches = 0
        self.kill_after_commit = -1  # the batch after whose commit the process dies

    async def append(self, data: bytes) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not self.queue:
            asyncio.get_running_loop().call_soon(self.commit)
        self.queue.append((data, future))
        return await future

    def committed_lsn(self) -> int:
        return self.lsn

    def commit(self) -> None:
        queue, self.queue = self.queue, []
        entries = []
        for data, _ in queue:
            self.lsn += 1
            entries.append((self.lsn, data))
            self.file.write(msgpack.packb([self.lsn, data], use_bin_type=True))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.batches += 1
        with self.store.batch():
            self.database.apply(entries)
        if self.batches == self.kill_after_commit:
            os.kill(os.getpid(), signal.SIGKILL)
        for (_, future), (lsn, _) in zip(queue, entries, strict=True):
            future.set_result(lsn)


def _open(directory: Path, clock: Clock) -> tuple[Database, LmdbStore, PartitionArchive]:
    store = LmdbStore(directory / "store")
    database = Database(store)
    archive = PartitionArchive(directory / "pitr", store, clock)
    archive.open()
    database.record_codec = TimedCodec(archive, clock)
    return database, store, archive


def child(directory: Path, point: str) -> None:
    """The writer that dies: `point` is "archived" (after the archive's write, before the
    store's commit) or "committed" (after the store's commit)."""

    async def main() -> None:
        database, store, archive = _open(directory, Clock(1_000_000_000))
        log = BatchLog(directory, database, store)
        database.attach_log(log)  # type: ignore[arg-type]
        if point == "committed":
            log.kill_after_commit = KILL_BATCH
        else:
            write_and_commit = archive.before_commit

            def before_commit() -> None:
                write_and_commit()
                if log.batches == KILL_BATCH:
                    os.kill(os.getpid(), signal.SIGKILL)

            archive.before_commit = before_commit  # type: ignore[method-assign]
        await database.dispatch("CreateTable", TABLE)
        for start in range(0, OPERATIONS, TURN_WRITES):
            writes = []
            for step in range(start, start + TURN_WRITES):
                key = {"pk": {"S": f"k{step % 7}"}}
                if step % 5 == 4:
                    writes.append(database.dispatch("DeleteItem", {"TableName": "tbl", "Key": key}))
                else:
                    item = {**key, "v": {"S": f"v{step}"}}
                    writes.append(database.dispatch("PutItem", {"TableName": "tbl", "Item": item}))
            await asyncio.gather(*writes)

    asyncio.run(main())


def _run_child(directory: Path, point: str) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from tests.cluster.test_cluster_backup_archive_crashes import child; "
        "child(Path(sys.argv[1]), sys.argv[2])"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run(
        [sys.executable, "-c", code, str(directory), point],
        cwd=root,
        env=env,
        capture_output=True,
        timeout=CHILD_SECONDS_MAX,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


def _log(directory: Path) -> list[tuple[int, bytes]]:
    return [(int(lsn), bytes(data)) for lsn, data in _frames(directory / LOG_FILE)]


def _keys(database: Database) -> dict[str, str]:
    table = catalog.find_table(database, "tbl")
    assert table is not None
    items, _size = _items_of(database, table.table_id)
    return {item["pk"]["S"]: item["v"]["S"] for item, _ in items}


def _reference(entries: list[tuple[int, bytes]], time_us: int) -> dict[str, str]:
    """What the log had committed at `time_us`, applied to a fresh store."""
    database = Database(MemoryStore())
    database.apply([(lsn, data) for lsn, data in entries if record_time(data) <= time_us])
    return _keys(database)


def _restart_and_check(directory: Path) -> None:
    """Reopen as a restarted replica, replay the log's missing records, and compare every
    instant's rebuild with what the log had committed by then."""
    window = json.loads((directory / "pitr" / BASE_FILE).read_text())["time_us"]
    entries = _log(directory)
    assert len(entries) > KILL_BATCH

    async def main() -> None:
        database, store, archive = _open(directory, Clock(2_000_000_000))
        try:
            assert archive.base_time_us == window, "the window did not go on"
            missing = [(lsn, data) for lsn, data in entries if lsn > store.applied_lsn()]
            with store.batch():
                database.apply(missing)
            assert store.applied_lsn() == entries[-1][0]
            assert _keys(database) == _reference(entries, 1 << 62)
            times = sorted({record_time(data) for _, data in entries})
            for instant in [t - 1 for t in times[1:]] + times:
                rebuilt, remove = archive.rebuild(instant, directory)
                try:
                    assert _keys(rebuilt) == _reference(entries, instant), instant
                finally:
                    remove()
        finally:
            store.close()

    asyncio.run(main())


@pytest.mark.parametrize("point", ["archived", "committed"])
def test_a_kill_around_a_batch_commit_keeps_the_window_and_restores_every_instant(
    tmp_path: Path, point: str
) -> None:
    _run_child(tmp_path, point)
    _restart_and_check(tmp_path)


def test_the_archive_is_never_behind_the_store_when_killed_before_the_commit(
    tmp_path: Path,
) -> None:
    _run_child(tmp_path, "archived")
    store = LmdbStore(tmp_path / "store")
    applied = store.applied_lsn()
    store.close()
    frames = list(_frames(tmp_path / "pitr" / "records.bin"))
    records = [f for f in frames if f[0] == FRAME_RECORD]
    marks = [f[1] for f in frames if f[0] == FRAME_MARK]
    logged = _log(tmp_path)
    # The killed batch's records and mark are in the archive; the store never got them.
    assert len(records) == len(logged)
    assert marks[-1] == logged[-1][0]
    assert applied < marks[-1]


def _cut_archive(directory: Path, keep: Callable[[list[Any]], int]) -> None:
    """Keep the first `keep(frames)` frames of the archive's only segment."""
    path = directory / "pitr" / "records.bin"
    frames = list(_frames(path))
    assert frames[-1][0] == FRAME_MARK
    kept = frames[: keep(frames)]
    path.write_bytes(b"".join(msgpack.packb(f, use_bin_type=True) for f in kept))


def test_records_after_the_last_mark_keep_the_window_and_restore_every_instant(
    tmp_path: Path,
) -> None:
    _run_child(tmp_path, "committed")
    _cut_archive(tmp_path, lambda frames: len(frames) - 1)  # the last mark
    _restart_and_check(tmp_path)


def test_a_store_ahead_of_every_mark_without_records_after_it_starts_a_new_window(
    tmp_path: Path,
) -> None:
    _run_child(tmp_path, "committed")
    # The last batch's frames and mark gone: the store applied records the archive lacks.
    _cut_archive(
        tmp_path, lambda frames: max(i for i, f in enumerate(frames[:-1]) if f[0] == FRAME_MARK) + 1
    )
    window = json.loads((tmp_path / "pitr" / BASE_FILE).read_text())["time_us"]
    _database, store, archive = _open(tmp_path, Clock(3_000_000_000))
    try:
        assert archive.base_time_us is not None
        assert archive.base_time_us > window
    finally:
        store.close()
