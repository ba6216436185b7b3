"""Inside a batch the applied LSN is stored once, when the batch commits: what a reopened
store (a restart) and a snapshot read must still be exactly the last LSN of the last
committed batch, never one of its middle writes, never one of an aborted batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeldb.storage.lmdb_store import LmdbStore


def _reopened_lsn(path: Path) -> int:
    again = LmdbStore(path)
    try:
        return again.applied_lsn()
    finally:
        again.close()


def test_a_committed_batch_stores_its_last_lsn(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = LmdbStore(path)
    with store.batch():
        for lsn in range(1, 6):
            store.write([(b"k%d" % lsn, b"v")], [], applied_lsn=lsn)
        assert store.applied_lsn() == 5
    store.sync()
    store.close()
    assert _reopened_lsn(path) == 5


def test_a_batch_that_only_deletes_a_range_stores_its_lsn(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = LmdbStore(path)
    store.write([(b"a", b"1"), (b"b", b"2")], [], applied_lsn=1)
    with store.batch():
        store.delete_range(b"a", b"c", applied_lsn=2)
    store.sync()
    store.close()
    assert _reopened_lsn(path) == 2


def test_an_aborted_batch_keeps_the_lsn_stored_before_it(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = LmdbStore(path)
    store.write([(b"a", b"0")], [], applied_lsn=3)
    with pytest.raises(RuntimeError), store.batch():
        store.write([(b"a", b"1")], [], applied_lsn=4)
        raise RuntimeError("boom")
    assert store.applied_lsn() == 3
    with store.batch():
        pass  # an empty batch stores nothing new
    store.sync()
    store.close()
    assert _reopened_lsn(path) == 3


def test_a_snapshot_after_a_batch_holds_the_batch_lsn(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "store")
    with store.batch():
        store.write([(b"a", b"1")], [], applied_lsn=7)
        store.write([(b"b", b"2")], [], applied_lsn=8)
    assert store.snapshot(tmp_path / "copy") == 8
    store.close()
    assert _reopened_lsn(tmp_path / "copy") == 8
