"""The encrypting store: the Store contract holds, nothing is stored in plaintext, and a
value altered or moved on disk is refused."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from keeldb.crypto.errors import AuthenticationError
from keeldb.crypto.keyring import NODE_SCOPE, Keyring, table_scope
from keeldb.crypto.master_key import MasterKey
from keeldb.crypto.store import EncryptingStore, table_id_of
from keeldb.model.keys import index_prefix, item_key, table_prefix
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.memory import MemoryStore

TABLE = "0d8c5b02-3a43-4b0a-9d8e-5d0d2d3c9f10"


def make(tmp_path: Path) -> tuple[EncryptingStore, MemoryStore]:
    inner = MemoryStore()
    keyring = Keyring.create(tmp_path / "keyring", MasterKey(os.urandom(32)))
    return EncryptingStore(inner, keyring), inner


def key(n: int, table: str = TABLE) -> bytes:
    return item_key(table, 0, {"S": f"k{n:04d}"}, None)


def test_table_ids_are_read_from_store_keys() -> None:
    assert table_id_of(key(1)) == TABLE
    assert table_id_of(index_prefix(TABLE, 3) + b"rest") == TABLE
    assert table_id_of(table_prefix("a\x00b") + b"x") == "a\x00b"
    assert table_id_of(b"ctable-name") is None
    assert table_id_of(b"t-unterminated") is None


def test_the_store_contract_holds_against_a_plain_store(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    reference = MemoryStore()
    rng = random.Random(5)
    lsn = 0
    for _ in range(300):
        lsn += 1
        choice = rng.random()
        if choice < 0.7:
            puts = [(key(rng.randrange(50)), os.urandom(rng.randrange(40))) for _ in range(3)]
            deletes = [key(rng.randrange(50))]
            store.write(puts, deletes, lsn)
            reference.write(puts, deletes, lsn)
        else:
            low, high = sorted(rng.sample(range(50), 2))
            store.delete_range(key(low), key(high), lsn)
            reference.delete_range(key(low), key(high), lsn)
        probe = key(rng.randrange(50))
        assert store.get(probe) == reference.get(probe)
    for reverse in (False, True):
        assert list(store.scan(b"", None, reverse=reverse)) == list(
            reference.scan(b"", None, reverse=reverse)
        )
    assert store.applied_lsn() == reference.applied_lsn() == lsn


def test_values_are_sealed_with_the_key_of_their_table(tmp_path: Path) -> None:
    store, inner = make(tmp_path)
    marker = b"MARKER-in-a-value"
    store.write([(key(1), marker), (b"ccatalog-entry", marker)], [], 1)
    for _, raw in inner.scan(b"", None):
        assert marker not in raw
    table_key = store.keyring.key_for(table_scope(TABLE))
    node_key = store.keyring.key_for(NODE_SCOPE)
    assert int.from_bytes(inner.get(key(1))[1:5], "big") == table_key.key_id  # type: ignore[index]
    catalog_value = inner.get(b"ccatalog-entry")
    assert int.from_bytes(catalog_value[1:5], "big") == node_key.key_id  # type: ignore[index]


def test_a_value_moved_to_another_key_is_refused(tmp_path: Path) -> None:
    store, inner = make(tmp_path)
    store.write([(key(1), b"one"), (key(2), b"two")], [], 1)
    inner.write([(key(2), inner.get(key(1)))], [], 2)  # type: ignore[list-item]
    assert store.get(key(1)) == b"one"
    with pytest.raises(AuthenticationError, match=f"of table {TABLE} failed authentication"):
        store.get(key(2))
    with pytest.raises(AuthenticationError):
        list(store.scan(b"", None))


def test_an_altered_value_is_refused_never_returned(tmp_path: Path) -> None:
    store, inner = make(tmp_path)
    store.write([(key(1), b"precious")], [], 1)
    raw = bytearray(inner.get(key(1)))  # type: ignore[arg-type]
    raw[-3] ^= 0x40
    inner.write([(key(1), bytes(raw))], [], 2)
    with pytest.raises(AuthenticationError):
        store.get(key(1))


def test_a_plaintext_value_in_an_encrypted_store_is_refused(tmp_path: Path) -> None:
    store, inner = make(tmp_path)
    inner.write([(key(1), b"\x92\x01\x80plain")], [], 1)
    with pytest.raises(AuthenticationError, match="not sealed"):
        store.get(key(1))


def test_over_lmdb_batches_snapshots_and_long_keys_pass_through(tmp_path: Path) -> None:
    master = MasterKey(os.urandom(32))
    keyring = Keyring.create(tmp_path / "keyring", master)
    store = EncryptingStore(LmdbStore(tmp_path / "store"), keyring)
    long_key = item_key(TABLE, 0, {"S": "x" * 1500}, None)
    with store.batch():
        store.write([(long_key, b"long"), (key(1), b"short")], [], 1)
    applied = store.snapshot(tmp_path / "copy")
    store.close()
    assert applied == 1
    copy = LmdbStore(tmp_path / "copy")
    assert all(b"long" not in v and b"short" not in v for _, v in copy.scan(b"", None))
    reader = EncryptingStore(copy, Keyring.load(tmp_path / "keyring", master))
    assert reader.get(long_key) == b"long"
    assert dict(reader.scan(b"", None)) == {long_key: b"long", key(1): b"short"}
    reader.close()


def test_a_sibling_store_shares_the_keyring_and_leaves_it_held(tmp_path: Path) -> None:
    from keeldb.crypto.errors import KeyringInUseError
    from keeldb.crypto.store import keyring_of, sibling_store

    master = MasterKey(os.urandom(32))
    live = EncryptingStore(MemoryStore(), Keyring.create(tmp_path / "keyring", master))
    live.write([(key(1), b"live")], [], 1)
    scratch_inner = MemoryStore()
    scratch = sibling_store(live, scratch_inner)
    scratch.write([(key(1), b"scratch")], [], 1)
    assert scratch.get(key(1)) == b"scratch"
    assert b"scratch" not in scratch_inner.get(key(1))  # type: ignore[operator]
    scratch.close()
    # The live store still holds the keyring: a second writer is refused.
    with pytest.raises(KeyringInUseError):
        Keyring.load(tmp_path / "keyring", master)
    assert keyring_of(live) is live.keyring
    plain = MemoryStore()
    assert keyring_of(plain) is None
    assert sibling_store(plain, scratch_inner) is scratch_inner
    live.close()


def test_sealed_objects_open_only_under_their_own_name(tmp_path: Path) -> None:
    from keeldb.crypto.objects import open_object, seal_object

    keyring = Keyring.create(tmp_path / "keyring", MasterKey(os.urandom(32)))
    sealed = seal_object(keyring, TABLE, "backups/1/part-0000", b"MARKER items")
    assert b"MARKER" not in sealed
    assert open_object(keyring, "backups/1/part-0000", sealed) == b"MARKER items"
    with pytest.raises(AuthenticationError):
        open_object(keyring, "backups/1/part-0001", sealed)
    keyring.close()


def test_remembered_plaintexts_never_hide_a_changed_ciphertext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keeldb.crypto import store as store_module

    store, inner = make(tmp_path)
    store.write([(key(1), b"first")], [], 1)
    assert store.get(key(1)) == b"first"  # remembered from the write
    raw = bytearray(inner.get(key(1)))  # type: ignore[arg-type]
    raw[-1] ^= 1
    inner.write([(key(1), bytes(raw))], [], 2)
    with pytest.raises(AuthenticationError):
        store.get(key(1))
    # The memory is bounded in bytes: the oldest values are forgotten first.
    monkeypatch.setattr(store_module, "OPENED_CACHE_BYTES_MAX", 2000)
    for n in range(100):
        store.write([(key(n), bytes(100))], [], 3 + n)
    assert store._opened_bytes <= 2000
    assert key(99) in store._opened
    assert key(2) not in store._opened
    assert all(store.get(key(n)) == bytes(100) for n in range(2, 100))
