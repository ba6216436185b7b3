"""LMDB store scans read in growing chunks: a short first read for small Query pages, and
every pair exactly once, in order, across chunk boundaries and long-key buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeldb.storage import lmdb_store
from keeldb.storage.lmdb_store import LmdbStore


class CountingStore(LmdbStore):
    """Counts the pairs each chunk read returned."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.chunks: list[int] = []

    def _scan_chunk(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        chunk = super()._scan_chunk(*args, **kwargs)
        self.chunks.append(len(chunk))
        return chunk


def _keys(count: int) -> list[bytes]:
    keys = [b"k%05d" % i for i in range(count)]
    # Long keys (beyond LMDB's key limit) share buckets; put a few among the short ones.
    keys += [b"k00100" + b"x" * 600 + b"%03d" % i for i in range(5)]
    return sorted(keys)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(tmp_path / "store")
    keys = _keys(700)
    store.write([(key, key[::-1]) for key in keys], [], applied_lsn=1)
    yield store
    store.close()


def test_a_scan_stopped_after_ten_pairs_reads_only_the_first_chunk(store: CountingStore) -> None:
    scan = store.scan(b"k", b"l")
    taken = [next(scan) for _ in range(10)]
    assert [key for key, _ in taken] == _keys(700)[:10]
    assert store.chunks == [lmdb_store.SCAN_FIRST_CHUNK_PAIRS]


@pytest.mark.parametrize("reverse", [False, True])
def test_a_whole_scan_returns_every_pair_once_in_order_across_growing_chunks(
    store: CountingStore, reverse: bool
) -> None:
    found = list(store.scan(b"k", b"l", reverse=reverse))
    expected = _keys(700)
    if reverse:
        expected.reverse()
    assert [key for key, _ in found] == expected
    assert all(value == key[::-1] for key, value in found)
    sizes = store.chunks
    assert sizes[0] == lmdb_store.SCAN_FIRST_CHUNK_PAIRS
    assert max(sizes) == lmdb_store.SCAN_CHUNK_PAIRS
    assert sizes == sorted(sizes[:-1]) + sizes[-1:]


def test_a_scan_from_inside_a_bucket_starts_at_its_bound(store: CountingStore) -> None:
    start = b"k00100" + b"x" * 600 + b"002"
    found = [key for key, _ in store.scan(start, b"k00103")]
    expected = [key for key in _keys(700) if start <= key < b"k00103"]
    assert found == expected
    assert found[0] == start
