"""The log under random crashes: whatever was synced survives, nothing wrong is ever read.

A recording fsync remembers how many bytes of each file were durable at its last fsync. A
simulated power loss cuts every segment back to somewhere between its durable size and its
current size and may leave zeroes or garbage after the cut (as a filesystem may after losing
unsynced pages); a simulated kill -9 leaves the files as they are (the page cache survives).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.storage.wal import WriteAheadLog


@dataclass
class RecordingDisk:
    durable_bytes: dict[str, int] = field(default_factory=dict)

    def fsync(self, fd: int) -> None:
        # The simulation decides what survives, so the real disk need not be synced.
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isfile(path):
            self.durable_bytes[path] = os.fstat(fd).st_size


def lose_power(directory: Path, disk: RecordingDisk, rng: random.Random) -> None:
    """Each file keeps its durable bytes, then some of its unsynced bytes; the rest of its
    unsynced length may read back as zeroes or garbage (its size reached the disk, its data
    did not). Nothing appears beyond the size a file had: a synced file cannot grow."""
    for path in sorted(directory.glob("*.wal")):
        data = path.read_bytes()
        durable = disk.durable_bytes[str(path)]
        assert durable <= len(data)
        cut = rng.randrange(durable, len(data) + 1)
        lost = len(data) - cut
        filler = rng.choice([b"", b"\x00" * lost, rng.randbytes(lost)])
        path.write_bytes(data[:cut] + filler[: rng.randrange(lost + 1)])


def abandon(wal: WriteAheadLog) -> None:
    """What kill -9 does to an open log: its files are closed as they are (a preallocating
    log keeps the zeroes after its last record, which `close` would cut)."""
    for fd in (wal._fd, wal._lock_fd):
        if fd >= 0:
            os.close(fd)
    wal._fd = wal._lock_fd = -1


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.binary(max_size=60), min_size=1, max_size=5)),
        st.tuples(st.just("sync"), st.none()),
        st.tuples(st.just("kill"), st.none()),
        st.tuples(st.just("power loss"), st.integers(0, 2**32)),
        st.tuples(st.just("truncate"), st.integers(0, 100)),
    ),
    max_size=30,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=operations, preallocate_bytes=st.sampled_from([0, 100, 1000]))
def test_synced_records_survive_any_crash_and_recovered_records_are_never_wrong(
    tmp_path_factory: object, steps: list[tuple[str, object]], preallocate_bytes: int
) -> None:
    directory = tmp_path_factory.mktemp("wal")  # type: ignore[attr-defined]
    disk = RecordingDisk()

    def open_log() -> WriteAheadLog:
        return WriteAheadLog(
            directory, segment_bytes=256, fsync=disk.fsync, preallocate_bytes=preallocate_bytes
        )

    wal = open_log()
    appended: list[bytes] = []  # appended[i] has LSN i + 1
    durable_count = 0
    for name, argument in steps:
        if name == "append":
            assert isinstance(argument, list)
            assert wal.append(argument) == len(appended) + len(argument)
            appended.extend(argument)
        elif name == "sync":
            wal.sync()
            durable_count = len(appended)
        elif name == "truncate":
            assert isinstance(argument, int)
            wal.truncate_before(min(argument, len(appended) + 1))
        else:
            abandon(wal)
            if name == "power loss":
                assert isinstance(argument, int)
                lose_power(directory, disk, random.Random(argument))
            wal = open_log()
            first = wal.first_lsn()
            recovered = list(wal.replay(first - 1))
            lsns = [lsn for lsn, _ in recovered]
            assert lsns == list(range(first, first + len(lsns)))
            assert [payload for _, payload in recovered] == appended[
                first - 1 : first - 1 + len(lsns)
            ]
            assert wal.last_lsn() >= durable_count
            if name == "kill":
                assert wal.last_lsn() == len(appended)
            # What was lost was never synced; the log carries on from what survived, and
            # opening made it durable.
            del appended[wal.last_lsn() :]
            durable_count = len(appended)
    wal.close()
