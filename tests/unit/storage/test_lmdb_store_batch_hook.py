"""A store batch's hook (`LmdbStore.batch_hook`): `before_commit` runs at the end of every
batch while its writes are not committed yet (another transaction does not see them), and a
hook that raises keeps the batch from committing; `aborted` runs when nothing of a batch is
kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeldb.storage.lmdb_store import LmdbStore


def _committed(store: LmdbStore, key: bytes) -> bool:
    """Whether a reader outside the batch (another transaction) sees `key`."""
    with store._env.begin(db=store._items) as txn:
        return txn.get(key) is not None


class Hook:
    def __init__(self, store: LmdbStore, fail: bool = False) -> None:
        self.store = store
        self.fail = fail
        self.seen: list[tuple[str, int, bool]] = []

    def before_commit(self) -> None:
        self.seen.append(("before", self.store.applied_lsn(), not _committed(self.store, b"k")))
        if self.fail:
            raise OSError("the archive's disk is full")

    def aborted(self) -> None:
        self.seen.append(("aborted", self.store.applied_lsn(), True))


def test_before_commit_runs_at_a_batch_end_before_its_writes_are_committed(
    tmp_path: Path,
) -> None:
    store = LmdbStore(tmp_path / "store")
    store.batch_hook = hook = Hook(store)
    with store.batch():
        store.write([(b"k", b"v")], [], applied_lsn=7)
        assert hook.seen == []
    # It saw the LSN the batch commits with, and the write was not in the file yet.
    assert hook.seen == [("before", 7, True)]
    assert _committed(store, b"k")
    store.close()


def test_a_hook_that_raises_keeps_the_batch_from_committing(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "store")
    store.batch_hook = hook = Hook(store, fail=True)
    with pytest.raises(OSError), store.batch():
        store.write([(b"k", b"v")], [], applied_lsn=3)
    assert hook.seen == [("before", 3, True), ("aborted", 0, True)]
    assert store.get(b"k") is None
    assert store.applied_lsn() == 0
    store.close()


def test_a_batch_that_raises_is_told_aborted_and_never_before_commit(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "store")
    store.batch_hook = hook = Hook(store)
    with pytest.raises(KeyError), store.batch():
        store.write([(b"k", b"v")], [], applied_lsn=3)
        raise KeyError("an applier's bug")
    assert hook.seen == [("aborted", 0, True)]
    store.close()
