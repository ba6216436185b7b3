"""The backup store's verified uploads and downloads, and the manifest's restore rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeldb.backup.manifest import ArchiveGapError, Manifest, SegmentEntry, SnapshotEntry
from keeldb.backup.store import (
    ArchiveCorruptError,
    DirectoryStore,
    ObjectMissingError,
    get_verified,
    parse_s3_url,
    put_verified,
    sha256_bytes,
)


class BitFlippingStore(DirectoryStore):
    """A store whose disk damages every object it writes (one flipped bit)."""

    def put(self, key: str, data: bytes) -> None:
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 1
        super().put(key, bytes(damaged))


def test_a_directory_store_puts_gets_lists_and_deletes_whole_objects(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.put("a/b/one", b"1")
    store.put("a/two", b"22")
    store.put("c/three", b"333")
    (tmp_path / "a" / ".part-left-by-a-crash").write_bytes(b"half")
    assert store.get("a/b/one") == b"1"
    assert store.list("a/") == ["a/b/one", "a/two"]
    assert store.list("") == ["a/b/one", "a/two", "c/three"]
    store.delete("a/two")
    with pytest.raises(ObjectMissingError):
        store.get("a/two")
    assert store.bucket("exports").list("") == []


def test_a_verified_upload_refuses_an_object_that_reads_back_different(tmp_path: Path) -> None:
    with pytest.raises(ArchiveCorruptError, match="read back with sha256"):
        put_verified(BitFlippingStore(tmp_path), "x", b"payload" * 10)
    assert put_verified(DirectoryStore(tmp_path), "y", b"ok") == sha256_bytes(b"ok")


def test_a_verified_download_refuses_a_damaged_object_and_names_it(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    sha = put_verified(store, "archive/wal/1", b"records")
    (tmp_path / "archive" / "wal" / "1").write_bytes(b"recordz")
    with pytest.raises(ArchiveCorruptError, match="archive/wal/1 is damaged"):
        get_verified(store, "archive/wal/1", sha)


def test_s3_urls_name_a_bucket_and_a_prefix() -> None:
    assert parse_s3_url("s3://bucket/some/prefix/") == ("bucket", "some/prefix/")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError):
        parse_s3_url("/tmp/backups")


def segment(first: int, last: int, t0: int, t1: int) -> SegmentEntry:
    return SegmentEntry(f"s{first}", "0" * 64, 10, first, last, t0, t1)


def snapshot(lsn: int, time_us: int) -> SnapshotEntry:
    return SnapshotEntry(f"p{lsn}", "0" * 64, 10, lsn, time_us)


def test_a_restore_starts_from_the_newest_snapshot_at_or_before_its_instant() -> None:
    manifest = Manifest(snapshots=[snapshot(0, 100), snapshot(20, 500)])
    assert manifest.snapshot_for(99) is None
    assert manifest.snapshot_for(100) == snapshot(0, 100)
    assert manifest.snapshot_for(499) == snapshot(0, 100)
    assert manifest.snapshot_for(500) == snapshot(20, 500)


def test_a_restore_replays_the_segments_up_to_the_first_record_after_its_instant() -> None:
    segments = [segment(1, 10, 100, 200), segment(11, 20, 210, 300), segment(21, 30, 310, 400)]
    manifest = Manifest(segments=segments, snapshots=[snapshot(0, 50)])
    assert manifest.segments_after(0, 250) == segments[:2]
    assert manifest.segments_after(12, 400) == segments[1:]
    assert manifest.segments_after(30, 10**9) == []


def test_a_gap_in_the_archived_log_is_an_error_not_a_silent_skip() -> None:
    manifest = Manifest(segments=[segment(1, 10, 100, 200), segment(15, 20, 300, 400)])
    with pytest.raises(ArchiveGapError, match="11..14"):
        manifest.segments_after(0, 350)


def test_a_manifest_survives_its_json_form() -> None:
    manifest = Manifest(
        segments=[segment(1, 2, 3, 4)],
        snapshots=[snapshot(0, 1)],
        extras={"keyring": {"key": "k", "sha256": "s"}},
    )
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.archived_lsn() == 2
    assert again.archived_time_us() == 4


def test_a_directory_store_never_names_a_path_outside_its_root(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "root")
    for key in ("../escape", "a/../../escape", "./x"):
        with pytest.raises(ValueError):
            store.put(key, b"x")
    for name in ("..", "a/b", ""):
        with pytest.raises(ValueError):
            store.bucket(name)
    store.put("a//b", b"x")  # empty parts are skipped
    assert store.get("a/b") == b"x"
    assert not (tmp_path / "escape").exists()


def test_pruning_keeps_the_newest_snapshot_before_the_cutoff_and_everything_after() -> None:
    manifest = Manifest(
        segments=[segment(1, 10, 100, 200), segment(11, 20, 210, 300), segment(21, 30, 310, 400)],
        snapshots=[snapshot(0, 50), snapshot(10, 205), snapshot(20, 305)],
    )
    assert manifest.prune(40) == []  # no snapshot old enough: nothing can go
    dropped = manifest.prune(250)
    assert dropped == ["p0", "s1"]
    assert [s.lsn for s in manifest.snapshots] == [10, 20]
    assert [s.first_lsn for s in manifest.segments] == [11, 21]
    # Every instant from the cutoff on still restores: a snapshot at or before it, no gap.
    for instant in (250, 305, 400):
        start = manifest.snapshot_for(instant)
        assert start is not None
        manifest.segments_after(start.lsn, instant)
