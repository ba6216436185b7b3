"""A member's record log: records come back as written, a torn tail is cut, and a rewrite
keeps the replayed state while dropping old segments; store snapshots and tokens."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from keeldb.cluster.group import (
    install_store_snapshot,
    store_snapshot,
    store_token,
    store_token_lsn,
)
from keeldb.cluster.group_storage import GroupWal
from keeldb.consensus.messages import (
    AcceptRecord,
    ChosenRecord,
    CommitRecord,
    IncarnationRecord,
    PromiseRecord,
    SnapshotRecord,
)
from keeldb.consensus.replica import DurableState
from keeldb.consensus.types import Ballot, Config, Entry, EntryKind, LogEntry, Snapshot
from keeldb.storage.memory import MemoryStore
from keeldb.storage.wal import CorruptLogError


def _cmd(i: int) -> Entry:
    return Entry(EntryKind.COMMAND, b"cmd%d" % i, 1, i)


def _history(count: int) -> list:
    records: list = [IncarnationRecord(1), PromiseRecord(Ballot(1, 1))]
    for slot in range(1, count + 1):
        records.append(AcceptRecord(LogEntry(slot, Ballot(1, 1), _cmd(slot))))
        if slot % 10 == 0:
            records.append(CommitRecord(slot))
    return records


def test_records_come_back_in_order_after_reopening(tmp_path: Path) -> None:
    records = _history(50)
    wal = GroupWal(tmp_path / "g")
    wal.append(records[:20])
    wal.append(records[20:])
    wal.close()
    wal = GroupWal(tmp_path / "g")
    assert wal.read_all() == records
    wal.close()


def test_a_torn_last_record_is_cut_and_the_rest_replays(tmp_path: Path) -> None:
    records = _history(30)
    wal = GroupWal(tmp_path / "g")
    wal.append(records)
    (segment,) = wal.segment_paths()
    wal.close()
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # the last record lost its tail in a crash
    wal = GroupWal(tmp_path / "g")
    assert wal.read_all() == records[:-1]
    wal.close()


def test_damage_before_valid_records_refuses_to_open(tmp_path: Path) -> None:
    wal = GroupWal(tmp_path / "g")
    wal.append(_history(30))
    (segment,) = wal.segment_paths()
    wal.close()
    data = bytearray(segment.read_bytes())
    data[200] ^= 0xFF  # inside an early record, with valid ones after it
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError):
        GroupWal(tmp_path / "g")


def test_a_rewrite_keeps_the_replayed_state_and_removes_old_segments(tmp_path: Path) -> None:
    wal = GroupWal(tmp_path / "g", segment_bytes=4096)
    records = _history(400)
    wal.append(records)
    state = DurableState.replay(records)
    # The core compacts: a snapshot at slot 350, entries above it kept.
    snapshot = Snapshot(350, ((351, Config.standard([1, 2, 3])),), b"state bytes")
    state.snapshot = snapshot
    state.commit_slot = 400
    state.log = {s: e for s, e in state.log.items() if s > 350}
    segments_before = len(wal.segment_paths())
    removed = wal.rewrite(state.records())
    assert removed > 0 and len(wal.segment_paths()) < segments_before
    more = [ChosenRecord(401, _cmd(401)), CommitRecord(401)]
    wal.append(more)
    wal.close()
    wal = GroupWal(tmp_path / "g", segment_bytes=4096)
    replayed = DurableState.replay(wal.read_all())
    expected = DurableState.replay([*state.records(), *more])
    assert replayed == expected
    assert replayed.snapshot == snapshot and replayed.commit_slot == 401
    assert SnapshotRecord(snapshot) in wal.read_all()
    wal.close()


def test_a_rewrite_replays_alone_even_when_older_commit_records_survive_it(
    tmp_path: Path,
) -> None:
    """The votes of slots above the snapshot sit in segments the rewrite removes, while a
    commit record for them sits in the segment it keeps: replaying that commit record before
    the compact list must not hide the compact list's votes."""
    wal = GroupWal(tmp_path / "g", segment_bytes=4096)
    votes = [AcceptRecord(LogEntry(s, Ballot(1, 1), _cmd(s))) for s in range(1, 301)]
    wal.append([IncarnationRecord(1), PromiseRecord(Ballot(1, 1)), *votes])
    wal.append([PromiseRecord(Ballot(1, 1))] * 300)  # later records fill new segments
    wal.append([CommitRecord(300)])
    state = DurableState.replay(wal.read_all())
    state.snapshot = Snapshot(250, ((251, Config.standard([1, 2, 3])),), b"state")
    state.log = {s: e for s, e in state.log.items() if s > 250}
    assert wal.rewrite(state.records()) > 0
    wal.close()
    wal = GroupWal(tmp_path / "g", segment_bytes=4096)
    replayed = DurableState.replay(wal.read_all())
    assert sorted(replayed.log) == list(range(251, 301))
    assert replayed == DurableState.replay(state.records())
    wal.close()


def test_a_torn_rewrite_falls_back_to_the_records_before_it(tmp_path: Path) -> None:
    wal = GroupWal(tmp_path / "g", segment_bytes=1 << 20)
    records = _history(50)
    wal.append(records)
    state = DurableState.replay(records)
    wal.rewrite(state.records())
    (segment,) = wal.segment_paths()
    wal.close()
    segment.write_bytes(segment.read_bytes()[:-5])  # the compact list's last record is torn
    wal = GroupWal(tmp_path / "g", segment_bytes=1 << 20)
    assert DurableState.replay(wal.read_all()) == state
    wal.close()


def test_a_store_snapshot_replaces_the_state_and_garbage_leaves_the_store_untouched() -> None:
    source = MemoryStore()
    source.write([(b"a", b"1"), (b"b", b"2")], [], applied_lsn=7)
    target = MemoryStore()
    target.write([(b"b", b"old"), (b"z", b"stale")], [], applied_lsn=3)
    for garbage in (b"", b"\xc1", msgpack.packb(["kvsnap1"]), msgpack.packb(["other", []])):
        with pytest.raises(ValueError, match="not a store snapshot"):
            install_store_snapshot(target, garbage, 9)
    assert dict(target.scan(b"", None)) == {b"b": b"old", b"z": b"stale"}
    install_store_snapshot(target, store_snapshot(source), 7)
    assert dict(target.scan(b"", None)) == {b"a": b"1", b"b": b"2"}
    assert target.applied_lsn() == 7
    assert store_token_lsn(store_token(source)) == 7
    assert store_token_lsn(store_snapshot(source)) is None
