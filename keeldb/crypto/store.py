"""A `Store` that keeps every value sealed: the encrypting wrapper around the item store.

This module owns which data key seals which stored value. A value under a table's key range
(`keeldb.model.keys.table_prefix`: the table's items, its index entries and its statistics)
is sealed with that table's data key; any other value (the catalog, stream records) with the
node key. The store key itself is the associated data, so a value moved to another key, or
to another table, does not open. Values written or read lately are remembered in memory with
their plaintext, so that the hot items' reads and read-modify-writes decrypt nothing.

Store keys stay in plaintext: the store is ordered by them, and Query, Scan and range deletes
depend on that order, which encryption would destroy. A store key holds the table id, the
index id and the key attribute values of an item (and the table name for the catalog), so
those are visible on disk; every other attribute is not. See docs/encryption.md.

It never changes what is written or read (the engine decides that), never writes a value
unsealed, and never returns data that failed authentication: that raises
`AuthenticationError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from keeldb.crypto.keyring import NODE_SCOPE, Keyring, table_scope
from keeldb.model.keys import table_prefix
from keeldb.storage.protocols import Store

VALUE_CONTEXT_TAG = b"S"  # associated data of a stored value: this tag and its store key
_TABLE_TAG = table_prefix("")[:1]
_FIELD_END = b"\x00\x01"
# The layout this module reads table ids from: a tag byte, then the id escaped (0x00 as
# 0x00 0xFF) and terminated by 0x00 0x01.
assert table_prefix("a\x00b") == _TABLE_TAG + b"a\x00\xffb" + _FIELD_END
TABLE_SCOPES_CACHED_MAX = 65536  # table prefixes remembered; beyond, the cache starts over
OPENED_CACHE_BYTES_MAX = 16 << 20  # plaintexts of recently written or read values kept in
# memory (never on disk), so that the hot items' reads and read-modify-writes decrypt nothing
OPENED_VALUE_BYTES_MAX = 64 << 10  # larger values are always decrypted


def table_id_of(key: bytes) -> str | None:
    """The table id a store key belongs to, or None for keys outside every table."""
    if not key.startswith(_TABLE_TAG):
        return None
    position = len(_TABLE_TAG)
    while True:
        zero = key.find(b"\x00", position)
        if zero < 0 or zero + 1 >= len(key):
            return None
        marker = key[zero + 1]
        if marker == _FIELD_END[1]:
            escaped = key[len(_TABLE_TAG) : zero]
            try:
                return escaped.replace(b"\x00\xff", b"\x00").decode("utf-8")
            except UnicodeDecodeError:
                return None
        position = zero + 2


class EncryptingStore:
    """Wraps a `Store`: seals values on the way in, opens them on the way out.

    Everything else the inner store offers (`batch`, `snapshot`, `path` ...) is passed
    through: a snapshot is a copy of sealed values, readable with this keyring.
    """

    def __init__(self, inner: Store, keyring: Keyring, *, owns_keyring: bool = True) -> None:
        """`owns_keyring`: closing this store releases the keyring (the node's own store);
        False for stores that borrow a node's keyring (scratch copies, snapshots)."""
        self.inner = inner
        self.keyring = keyring
        self.owns_keyring = owns_keyring
        # table prefix (the store key up to the end of the table id) -> scope
        self._scopes: dict[bytes, str] = {}
        # store key -> (sealed value, its plaintext), oldest first: values written or read
        # lately. A read whose sealed bytes equal the remembered ones (a memcmp) takes the
        # plaintext instead of decrypting again: the same ciphertext at the same key opened
        # to exactly that plaintext before. Anything else is opened and authenticated.
        self._opened: dict[bytes, tuple[bytes, bytes, int]] = {}  # ..., size counted
        self._opened_bytes = 0
        self._opened_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _scope(self, key: bytes) -> str:
        if key[:1] != _TABLE_TAG:
            return NODE_SCOPE
        # The table prefix; just the tag for an unterminated key, which belongs to no table.
        prefix = key[: key.find(_FIELD_END) + 2]
        scope = self._scopes.get(prefix)
        if scope is None:
            table_id = table_id_of(key)
            scope = NODE_SCOPE if table_id is None else table_scope(table_id)
            if len(self._scopes) >= TABLE_SCOPES_CACHED_MAX:
                self._scopes.clear()
            self._scopes[prefix] = scope
        return scope

    def seal(self, key: bytes, value: bytes) -> bytes:
        sealed = self.keyring.key_for(self._scope(key)).seal(value, VALUE_CONTEXT_TAG + key)
        self._remember(key, sealed, value)
        return sealed

    def open(self, key: bytes, sealed: bytes, *, remember: bool = True) -> bytes:
        opened = self._opened.get(key)
        if opened is not None and opened[0] == sealed:
            return opened[1]
        plaintext = self.keyring.open(sealed, VALUE_CONTEXT_TAG + key, self._what(key))
        if remember:
            self._remember(key, sealed, plaintext)
        return plaintext

    def _remember(self, key: bytes, sealed: bytes, plaintext: bytes) -> None:
        size = len(key) + len(sealed) + len(plaintext)
        if size > OPENED_VALUE_BYTES_MAX:
            return
        opened = self._opened
        with self._opened_lock:  # readers in worker threads (backups, snapshots) remember too
            old = opened.pop(key, None)
            opened[key] = (sealed, plaintext, size)
            self._opened_bytes += size if old is None else size - old[2]
            while self._opened_bytes > OPENED_CACHE_BYTES_MAX:
                self._opened_bytes -= opened.pop(next(iter(opened)))[2]

    def _what(self, key: bytes) -> str:
        table_id = table_id_of(key)
        return "a stored value" + ("" if table_id is None else f" of table {table_id}")

    # --- the Store protocol ----------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        sealed = self.inner.get(key)
        return None if sealed is None else self.open(key, sealed)

    def scan(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        for key, sealed in self.inner.scan(start, end, reverse=reverse):
            # A scan reads many values once: it uses what is remembered but adds nothing.
            yield key, self.open(key, sealed, remember=False)

    def write(
        self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes], applied_lsn: int
    ) -> None:
        sealed = [(key, self.seal(key, value)) for key, value in puts]
        self.inner.write(sealed, deletes, applied_lsn)

    def delete_range(self, start: bytes, end: bytes, applied_lsn: int) -> None:
        self.inner.delete_range(start, end, applied_lsn)

    def applied_lsn(self) -> int:
        return self.inner.applied_lsn()

    def sync(self) -> None:
        self.inner.sync()

    def close(self) -> None:
        """Close the inner store, then release the keyring if this store owns it."""
        try:
            self.inner.close()
        finally:
            if self.owns_keyring:
                self.keyring.close()


def keyring_of(store: object) -> Keyring | None:
    """The keyring a store seals with, or None when it keeps plaintext."""
    return store.keyring if isinstance(store, EncryptingStore) else None


def sibling_store(live: object, inner: Any) -> Any:
    """`inner` (a scratch store, an opened snapshot copy) wrapped the way `live` (a node's
    store) is: sealed with the same keyring, which closing it leaves open. Unchanged when
    `live` keeps plaintext."""
    keyring = keyring_of(live)
    if keyring is None:
        return inner
    return EncryptingStore(inner, keyring, owns_keyring=False)
