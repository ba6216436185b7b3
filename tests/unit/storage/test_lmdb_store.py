"""LmdbStore keeps the Store contract, checked against MemoryStore as the plain reference."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from keeldb.storage.lmdb_store import LMDB_KEY_INLINE_BYTES, SCAN_CHUNK_PAIRS, LmdbStore
from keeldb.storage.memory import MemoryStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    opened = LmdbStore(tmp_path / "store")
    yield opened
    opened.close()


def test_put_get_delete_and_applied_lsn(store: LmdbStore) -> None:
    assert store.applied_lsn() == 0
    assert store.get(b"a") is None
    store.write([(b"a", b"1"), (b"b", b"2")], [], applied_lsn=1)
    assert store.get(b"a") == b"1"
    store.write([(b"a", b"3")], [b"b"], applied_lsn=2)
    assert (store.get(b"a"), store.get(b"b"), store.applied_lsn()) == (b"3", None, 2)


def test_a_batch_puts_after_deletes_so_a_key_in_both_is_kept(store: LmdbStore) -> None:
    store.write([(b"k", b"new")], [b"k"], applied_lsn=1)
    assert store.get(b"k") == b"new"


def test_data_and_applied_lsn_survive_reopening(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    store.write([(b"x", b"y"), (b"z" * 900, b"long")], [], applied_lsn=17)
    store.sync()
    store.close()
    again = LmdbStore(tmp_path / "s")
    assert (again.get(b"x"), again.get(b"z" * 900), again.applied_lsn()) == (b"y", b"long", 17)
    again.close()


def test_scan_respects_bounds_and_direction(store: LmdbStore) -> None:
    keys = [b"a", b"b", b"ba", b"c", b"d"]
    store.write([(k, k.upper()) for k in keys], [], applied_lsn=1)
    assert [k for k, _ in store.scan(b"b", b"d")] == [b"b", b"ba", b"c"]
    assert [k for k, _ in store.scan(b"b", b"d", reverse=True)] == [b"c", b"ba", b"b"]
    assert [k for k, _ in store.scan(b"", None)] == keys
    assert [k for k, _ in store.scan(b"", None, reverse=True)] == keys[::-1]
    assert list(store.scan(b"c", b"c")) == []
    assert list(store.scan(b"e", None)) == []
    assert [k for k, _ in store.scan(b"bb", None, reverse=True)] == [b"c", b"d"][::-1]


def test_delete_range_removes_exactly_the_half_open_range(store: LmdbStore) -> None:
    store.write([(bytes([i]), b"v") for i in range(10)], [], applied_lsn=1)
    store.delete_range(bytes([3]), bytes([7]), applied_lsn=2)
    assert [k[0] for k, _ in store.scan(b"", None)] == [0, 1, 2, 7, 8, 9]
    assert store.applied_lsn() == 2


def test_long_keys_beyond_lmdb_key_limit_are_stored_and_ordered(store: LmdbStore) -> None:
    prefix = b"p" * LMDB_KEY_INLINE_BYTES
    keys = [
        prefix,
        prefix + b"\x00",
        prefix + b"\x00\x00",
        prefix + b"a" * 1500,
        prefix + b"b",
        b"p" * (LMDB_KEY_INLINE_BYTES - 1),
        b"p" * (LMDB_KEY_INLINE_BYTES - 1) + b"q" + b"r" * 2000,
        b"q",
    ]
    store.write([(k, b"%d" % len(k)) for k in keys], [], applied_lsn=1)
    for key in keys:
        assert store.get(key) == b"%d" % len(key)
    assert store.get(prefix + b"c") is None
    assert [k for k, _ in store.scan(b"", None)] == sorted(keys)
    assert [k for k, _ in store.scan(b"", None, reverse=True)] == sorted(keys, reverse=True)
    assert [k for k, _ in store.scan(prefix + b"\x00", prefix + b"b")] == [
        prefix + b"\x00",
        prefix + b"\x00\x00",
        prefix + b"a" * 1500,
    ]
    store.write([], [prefix + b"\x00", prefix + b"a" * 1500], applied_lsn=2)
    assert store.get(prefix + b"\x00") is None
    assert store.get(prefix + b"\x00\x00") == b"%d" % (LMDB_KEY_INLINE_BYTES + 2)


def test_a_scan_spanning_many_chunks_returns_every_pair_once(store: LmdbStore) -> None:
    count = SCAN_CHUNK_PAIRS * 3 + 5
    store.write([(b"k%06d" % i, b"v%d" % i) for i in range(count)], [], applied_lsn=1)
    forward = list(store.scan(b"k", None))
    assert [k for k, _ in forward] == [b"k%06d" % i for i in range(count)]
    backward = list(store.scan(b"k", b"k999999", reverse=True))
    assert backward == forward[::-1]


def test_a_scan_tolerates_writes_between_its_steps(store: LmdbStore) -> None:
    count = SCAN_CHUNK_PAIRS * 2
    store.write([(b"k%06d" % i, b"v") for i in range(count)], [], applied_lsn=1)
    seen = []
    for index, (key, _) in enumerate(store.scan(b"", None)):
        seen.append(key)
        if index == 0:
            store.write([(b"k%06d" % (count + 1), b"late")], [b"k%06d" % (count - 1)], 2)
    assert b"k%06d" % (count + 1) in seen
    assert b"k%06d" % (count - 1) not in seen


def test_a_batch_commits_all_its_writes_together(store: LmdbStore) -> None:
    with store.batch():
        store.write([(b"a", b"1")], [], applied_lsn=1)
        assert store.get(b"a") == b"1"
        assert [k for k, _ in store.scan(b"", None)] == [b"a"]
        store.write([(b"b", b"2")], [], applied_lsn=2)
    assert (store.get(b"a"), store.get(b"b"), store.applied_lsn()) == (b"1", b"2", 2)


def test_a_batch_that_raises_leaves_nothing_behind(store: LmdbStore) -> None:
    store.write([(b"a", b"0")], [], applied_lsn=1)
    with pytest.raises(RuntimeError), store.batch():
        store.write([(b"a", b"1"), (b"b", b"2")], [], applied_lsn=2)
        raise RuntimeError("boom")
    assert (store.get(b"a"), store.get(b"b"), store.applied_lsn()) == (b"0", None, 1)


def test_the_map_grows_when_it_is_full(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "small", map_bytes=256 * 1024)
    value = b"v" * 4000
    for i in range(200):  # about 800 KB, more than the initial map
        store.write([(b"k%04d" % i, value)], [], applied_lsn=i + 1)
    assert store.get(b"k0199") == value
    assert store.applied_lsn() == 200
    store.close()


def test_a_failed_write_changes_nothing(store: LmdbStore) -> None:
    store.write([(b"a", b"0")], [], applied_lsn=1)
    with pytest.raises(lmdb.BadValsizeError):
        store.write([(b"b", b"1"), (b"", b"empty keys are refused")], [], applied_lsn=2)
    assert (store.get(b"b"), store.applied_lsn()) == (None, 1)


def test_random_operations_match_the_memory_store(tmp_path: Path) -> None:
    rng = random.Random(11)
    real = LmdbStore(tmp_path / "s")
    model = MemoryStore()
    alphabet = [b"a", b"b", b"\x00", b"\xff"]

    def random_key() -> bytes:
        size = rng.choice([1, 2, 3, LMDB_KEY_INLINE_BYTES - 1, LMDB_KEY_INLINE_BYTES, 600])
        if size > 3:
            return b"L" * (size - 2) + rng.choice(alphabet) + rng.choice(alphabet)
        return b"".join(rng.choice(alphabet) for _ in range(size))

    for lsn in range(1, 400):
        choice = rng.random()
        if choice < 0.8:
            puts = [(random_key(), rng.randbytes(rng.randrange(0, 8))) for _ in range(3)]
            deletes = [random_key() for _ in range(rng.randrange(0, 3))]
            real.write(puts, deletes, lsn)
            model.write(puts, deletes, lsn)
        else:
            start, end = sorted([random_key(), random_key()])
            real.delete_range(start, end, lsn)
            model.delete_range(start, end, lsn)
        if lsn % 20 == 0:
            start, end = sorted([random_key(), random_key()])
            for reverse in (False, True):
                assert list(real.scan(start, end, reverse=reverse)) == list(
                    model.scan(start, end, reverse=reverse)
                )
                assert list(real.scan(start, None, reverse=reverse)) == list(
                    model.scan(start, None, reverse=reverse)
                )
    assert list(real.scan(b"", None)) == list(model.scan(b"", None))
    assert real.applied_lsn() == model.applied_lsn()
    real.close()


def test_chunked_scans_resume_inside_a_bucket_of_long_keys(store: LmdbStore) -> None:
    prefix = b"p" * LMDB_KEY_INLINE_BYTES
    long_keys = [prefix + b"%05d" % i for i in range(SCAN_CHUNK_PAIRS * 2 + 7)]
    short_keys = [b"a", b"z"]
    store.write([(k, k[-5:]) for k in long_keys + short_keys], [], applied_lsn=1)
    everything = sorted(long_keys + short_keys)
    assert [k for k, _ in store.scan(b"", None)] == everything
    assert [k for k, _ in store.scan(b"", None, reverse=True)] == everything[::-1]
    middle = long_keys[100:400]
    assert [k for k, _ in store.scan(middle[0], long_keys[400])] == middle
    assert [k for k, _ in store.scan(middle[0], long_keys[400], reverse=True)] == middle[::-1]
    store.delete_range(long_keys[10], long_keys[500], applied_lsn=2)
    remaining = [k for k, _ in store.scan(b"", None)]
    assert remaining == sorted(short_keys + long_keys[:10] + long_keys[500:])


def test_a_snapshot_is_a_consistent_copy_with_its_applied_lsn(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    store.write([(b"a", b"1"), (b"p" * 700, b"long")], [], applied_lsn=3)
    assert store.snapshot(tmp_path / "copy") == 3
    store.write([(b"b", b"2")], [b"a"], applied_lsn=4)
    copy = LmdbStore(tmp_path / "copy")
    assert list(copy.scan(b"", None)) == [(b"a", b"1"), (b"p" * 700, b"long")]
    assert copy.applied_lsn() == 3
    copy.close()
    store.close()
