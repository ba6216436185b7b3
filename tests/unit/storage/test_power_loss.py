"""Group commit, checkpoints and recovery together, under simulated power loss.

The log runs on real files with a recording fsync; the store is a fake whose durable state
is what it held at its last `sync()` (as LMDB without syncs may lose anything after it). A
run appends from concurrent writers while checkpoints happen, then the power fails at a
random moment: every file keeps its synced bytes and loses some of the rest, the store falls
back to its last sync. Recovery must bring back every acknowledged record, in LSN order,
and nothing that was not written.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from keeldb.storage.memory import MemoryStore
from keeldb.storage.protocols import Entry
from keeldb.storage.replog import LocalLog
from keeldb.storage.wal import WriteAheadLog


class CrashableStore(MemoryStore):
    """A MemoryStore that remembers what it held at its last sync: its durable state."""

    def __init__(self, durable: tuple[list[tuple[bytes, bytes]], int] | None = None) -> None:
        super().__init__()
        if durable is not None:
            pairs, applied_lsn = durable
            self.write(pairs, [], applied_lsn)
        self.durable: tuple[list[tuple[bytes, bytes]], int] = (
            list(self.scan(b"", None)),
            self.applied_lsn(),
        )

    def sync(self) -> None:
        self.durable = (list(self.scan(b"", None)), self.applied_lsn())


class RecordingDisk:
    def __init__(self) -> None:
        self.durable_bytes: dict[str, int] = {}

    def fsync(self, fd: int) -> None:
        # The simulation decides what survives, so the real disk need not be synced.
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isfile(path):
            self.durable_bytes[path] = os.fstat(fd).st_size


def lose_power(directory: Path, disk: RecordingDisk, rng: random.Random) -> None:
    for path in sorted(directory.glob("*.wal")):
        data = path.read_bytes()
        # A preallocating log cuts its zeroes after the last sync (at a seal, at close):
        # what was cut held no record, so the durable prefix is at most what is left.
        durable = min(disk.durable_bytes[str(path)], len(data))
        cut = rng.randrange(durable, len(data) + 1)
        lost = len(data) - cut
        filler = rng.choice([b"", b"\x00" * lost, rng.randbytes(lost)])
        path.write_bytes(data[:cut] + filler[: rng.randrange(lost + 1)])


def applier(store: CrashableStore) -> tuple[list[int], object]:
    applied: list[int] = []

    def apply(entries: Sequence[Entry]) -> None:
        for lsn, record in entries:
            assert lsn == store.applied_lsn() + 1, "entries applied out of order"
            key, _, value = record.partition(b"=")
            store.write([(key, value)], [], applied_lsn=lsn)
            applied.append(lsn)

    return applied, apply


@pytest.mark.parametrize("sync_mode", ["thread", "inline", "auto", "async"])
@pytest.mark.parametrize("seed", range(12))
def test_power_loss_at_a_random_moment_loses_no_acknowledged_record(
    tmp_path: Path, seed: int, sync_mode: str
) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to name file descriptors")
    rng = random.Random(seed)
    disk = RecordingDisk()
    wal_dir = tmp_path / "wal"
    written: dict[int, bytes] = {}  # the record of every LSN that may be in the state
    acknowledged: set[int] = set()
    in_flight: set[bytes] = set()  # sent, not acknowledged

    async def life(store: CrashableStore, life_number: int) -> None:
        _, apply = applier(store)
        log = await LocalLog.open(
            wal_dir,
            store,
            apply,  # type: ignore[arg-type]
            segment_bytes=rng.choice([200, 500, 4000]),
            checkpoint_wal_bytes=rng.choice([300, 2000, 10**9]),
            fsync=disk.fsync,
            sync_mode=sync_mode,
        )
        # In the auto mode the log asks how many requests are held: here the writers whose
        # record is sent and not answered, and now and then one more (a reader), so that
        # groups are fsynced now on the loop, now in the disk thread.
        log.set_demand(lambda: len(in_flight) + rng.randrange(2))

        async def writer(index: int) -> None:
            for sequence in range(rng.randrange(1, 40)):
                record = b"k%d=%d.%d.%d" % (rng.randrange(12), life_number, index, sequence)
                in_flight.add(record)
                lsn = await log.append(record)
                in_flight.discard(record)
                written[lsn] = record
                acknowledged.add(lsn)

        async def checkpointer() -> None:
            for _ in range(rng.randrange(0, 4)):
                await asyncio.sleep(rng.uniform(0, 0.01))
                await log.checkpoint()

        tasks = [asyncio.ensure_future(writer(i)) for i in range(rng.randrange(1, 8))]
        tasks.append(asyncio.ensure_future(checkpointer()))
        await asyncio.sleep(rng.uniform(0, 0.03))
        # The power fails: no group starts any more; the disk thread finishes its system
        # call; writers already answered take note of it; nobody else runs.
        assert log._flusher is not None
        log._flusher.cancel()
        if log._syncer is not None:
            log._syncer.close()  # a sync in flight never completes
        await asyncio.gather(log._flusher, return_exceptions=True)
        log._disk.shutdown(wait=True)
        for _ in range(3):
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log._wal.close()

    store = CrashableStore()
    for life_number in range(3):
        asyncio.run(life(store, life_number))
        lose_power(wal_dir, disk, rng)
        store = CrashableStore(store.durable)
        # Records that survived in the log without an answer are in-flight ones.
        wal = WriteAheadLog(wal_dir, fsync=disk.fsync)
        for lsn, record in wal.replay(store.applied_lsn()):
            if lsn in acknowledged:
                assert record == written[lsn]
            else:
                assert record in in_flight
                written[lsn] = record
        wal.close()

        async def recover(store: CrashableStore) -> int:
            _, apply = applier(store)
            log = await LocalLog.open(wal_dir, store, apply, fsync=disk.fsync)  # type: ignore[arg-type]
            end = log.committed_lsn()
            await log.close()
            return end

        end = asyncio.run(recover(store))
        # Every acknowledged record is back, and the state is exactly that of the records
        # up to the recovered end of the log, applied in LSN order.
        assert max(acknowledged, default=0) <= end
        state: dict[bytes, bytes] = {}
        for lsn in range(1, end + 1):
            key, _, value = written[lsn].partition(b"=")
            state[key] = value
        assert dict(store.scan(b"", None)) == state
        assert store.applied_lsn() == end
        # Records beyond the end were never acknowledged; the next life reuses their LSNs.
        for lsn in [lsn for lsn in written if lsn > end]:
            assert lsn not in acknowledged
            del written[lsn]
        in_flight.clear()
        store = CrashableStore(store.durable)
    assert acknowledged, "the runs wrote nothing"
