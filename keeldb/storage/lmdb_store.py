"""The materialised item store of a node: a `Store` kept in LMDB.

This module owns the LMDB environment (its files, flags and map size), the mapping of store
keys longer than LMDB's key limit, and the atomic recording of the applied LSN with every
batch. It never decides what is written (the engine does, from redo records) and never makes
a write durable on its own: the write-ahead log is the durability point, and `sync` is called
by the checkpoint before log segments are removed.

LMDB flags (see docs/storage.md):

- ``sync=False`` (MDB_NOSYNC): a commit does not fsync. LMDB may lag the log; after a crash
  the log replays what LMDB is missing. LMDB's documentation states that without syncs the
  database keeps its integrity (atomicity, consistency, isolation) as long as the operating
  system's page cache survives (any process crash, kill -9 included) or the filesystem
  preserves write order; only durability is lost, and the log supplies it.
  ``durable_commits=True`` selects MDB_NOMETASYNC instead: each commit fdatasyncs the data
  pages and LMDB keeps its integrity after power loss on any filesystem, at the price of one
  more fdatasync per batch.
- ``writemap=False``: with a writable memory map a crash could write pages out of order
  even without power loss, and stray pointer writes could reach the file.
- ``map_size`` is large (a sparse reservation of address space, not disk) and grows on
  MapFullError.

Keys: LMDB refuses keys longer than 511 bytes, while a store key (table, index, hash,
partition key up to 2048 bytes, sort key up to 1024 bytes) may be longer. A key of at most
LMDB_KEY_INLINE_BYTES bytes is stored as itself. A longer key is stored in a "bucket" record
whose LMDB key is its first LMDB_KEY_INLINE_BYTES bytes plus one 0x00 byte, and whose value
holds the sorted (rest of key, value) pairs of every long key with that prefix. Only long
keys make LMDB keys of exactly LMDB_KEY_INLINE_BYTES + 1 bytes, and the mapping preserves
byte order, so scans stay ordered.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, cast

import lmdb
import msgpack  # type: ignore[import-untyped]
from mypy_extensions import mypyc_attr

from keeldb.storage.wal import fsync_directory, make_directory_durable

MAP_BYTES_INITIAL = 1 << 40  # 1 TiB of address space; the file only grows as data is written.
MAP_BYTES_GROWTH_FACTOR = 2  # On MapFullError the map doubles.
LMDB_KEY_INLINE_BYTES = 510  # LMDB's key limit (511, its compile-time MDB_MAXKEYSIZE) less one
# byte for the bucket marker.
SCAN_CHUNK_PAIRS = 256  # A scan reads at most this many pairs per short read transaction, so
# that no read transaction stays open while the caller consumes results (a long-lived reader
# would stop LMDB from reusing pages and would block growing the map).
SCAN_FIRST_CHUNK_PAIRS = 16  # ... and fewer in its first one: most scans are Query pages with
# a small Limit (the caller stops early), and copying 256 items of up to 400 KB to use ten of
# them made a Query cost as much as a Scan of its whole partition.
SCAN_CHUNK_GROWTH = 4  # each following chunk is this many times larger, up to SCAN_CHUNK_PAIRS
STORE_DBS_MAX = 2  # the "items" and "meta" sub-databases

_ITEMS_DB = b"items"
_META_DB = b"meta"
_APPLIED_LSN_KEY = b"applied_lsn"
_LSN = struct.Struct("<Q")
_BUCKET_MARKER = b"\x00"


def _is_bucket(lmdb_key: bytes | memoryview) -> bool:
    return len(lmdb_key) == LMDB_KEY_INLINE_BYTES + 1


def _bucket_key(key: bytes) -> bytes:
    return key[:LMDB_KEY_INLINE_BYTES] + _BUCKET_MARKER


def _lmdb_key(key: bytes) -> bytes:
    return key if len(key) <= LMDB_KEY_INLINE_BYTES else _bucket_key(key)


def _decode_bucket(value: bytes | memoryview) -> list[list[bytes]]:
    pairs: list[list[bytes]] = msgpack.unpackb(value, use_list=True)
    return pairs


def _encode_bucket(pairs: list[list[bytes]]) -> bytes:
    packed: bytes = msgpack.packb(pairs, use_bin_type=True)
    return packed


class BatchHook(Protocol):
    """What a store batch tells at its end (`LmdbStore.batch_hook`)."""

    def before_commit(self) -> None: ...

    def aborted(self) -> None: ...


# Subclassed by interpreted code (a worker's read-only view of the store).
@mypyc_attr(allow_interpreted_subclasses=True)
class LmdbStore:
    """A `Store` in an LMDB environment in directory `path`, created if missing."""

    def __init__(
        self,
        path: Path,
        *,
        durable_commits: bool = False,
        map_bytes: int = MAP_BYTES_INITIAL,
    ) -> None:
        self.path = Path(path)
        make_directory_durable(self.path)
        is_new = not (self.path / "data.mdb").exists()
        self._env = lmdb.open(
            str(self.path),
            map_size=map_bytes,
            max_dbs=STORE_DBS_MAX,
            subdir=True,
            sync=durable_commits,
            metasync=False,
            writemap=False,
            readahead=False,  # random point reads dominate; readahead wastes page cache
            lock=True,
        )
        if is_new:
            # The new data file's name must survive power loss like its contents will.
            fsync_directory(self.path)
        self._items = self._env.open_db(_ITEMS_DB)
        self._meta = self._env.open_db(_META_DB)
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(_APPLIED_LSN_KEY)
        self._applied_lsn = 0 if raw is None else _LSN.unpack(raw)[0]
        # While a batch is open (see `batch`), writes go to this one transaction.
        self._txn: lmdb.Transaction | None = None
        # Told of the end of every batch: `before_commit()` just before it commits (a
        # replica's archive writes the batch's records there, so that they are in its file
        # before the store holds them; if it raises, nothing of the batch is kept), and
        # `aborted()` when nothing of it was kept.
        self.batch_hook: BatchHook | None = None
        self._closed = False

    # --- reading -------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._txn is not None:
            return self._get_in(self._txn, key)
        with self._env.begin(db=self._items) as txn:
            return self._get_in(txn, key)

    def _get_in(self, txn: lmdb.Transaction, key: bytes) -> bytes | None:
        raw = txn.get(_lmdb_key(key), db=self._items)
        if raw is None:
            return None
        if len(key) <= LMDB_KEY_INLINE_BYTES:
            return bytes(raw)
        rest = key[LMDB_KEY_INLINE_BYTES:]
        pairs = _decode_bucket(raw)
        index = bisect.bisect_left(pairs, [rest])
        if index < len(pairs) and pairs[index][0] == rest:
            return pairs[index][1]
        return None

    def scan(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with start <= key < end, read in short transactions of SCAN_CHUNK_PAIRS.

        Like the in-memory store, a scan sees writes made between two of its steps past
        the point it has reached; each pair it yields was present when it was read.
        """
        if end is not None and end <= start:
            return
        position: bytes | None = None  # the last key yielded
        pairs_max = SCAN_FIRST_CHUNK_PAIRS
        while True:
            chunk = self._scan_chunk(start, end, reverse, position, pairs_max)
            yield from chunk
            if len(chunk) < pairs_max:
                return
            position = chunk[-1][0]
            pairs_max = min(pairs_max * SCAN_CHUNK_GROWTH, SCAN_CHUNK_PAIRS)

    def _scan_chunk(
        self,
        start: bytes,
        end: bytes | None,
        reverse: bool,
        after: bytes | None,
        pairs_max: int = SCAN_CHUNK_PAIRS,
    ) -> list[tuple[bytes, bytes]]:
        """Up to `pairs_max` pairs in range, strictly beyond `after` in scan order."""
        if self._txn is not None:
            return self._scan_chunk_in(self._txn, start, end, reverse, after, pairs_max)
        with self._env.begin(db=self._items) as txn:
            return self._scan_chunk_in(txn, start, end, reverse, after, pairs_max)

    def _scan_chunk_in(
        self,
        txn: lmdb.Transaction,
        start: bytes,
        end: bytes | None,
        reverse: bool,
        after: bytes | None,
        pairs_max: int = SCAN_CHUNK_PAIRS,
    ) -> list[tuple[bytes, bytes]]:
        assert pairs_max >= 1
        out: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=self._items)

        def wanted(key: bytes) -> bool:
            if key < start or (end is not None and key >= end):
                return False
            if after is None:
                return True
            return key < after if reverse else key > after

        if not reverse:
            low = start if after is None else after
            if not cursor.set_range(_lmdb_key(low)):
                return out
            append = out.append
            # The environment is opened without `buffers`, so keys and values come as bytes.
            pairs = cast(Iterator[tuple[bytes, bytes]], cursor.iternext())
            for lmdb_key, raw in pairs:
                # LMDB order is key order (the key mapping is monotonic), so the first key
                # at or past `end` ends the chunk.
                if not _is_bucket(lmdb_key):
                    # The common case, without the per-pair checks a bucket needs: a plain
                    # key at or past `low` is past `start`, and only `after` itself is not
                    # beyond `after`.
                    if end is not None and lmdb_key >= end:
                        return out
                    if lmdb_key != after:
                        append((lmdb_key, raw))
                        if len(out) == pairs_max:
                            return out
                    continue
                for key, value in self._expand(lmdb_key, raw, reverse=False):
                    if end is not None and key >= end:
                        return out
                    if wanted(key):
                        append((key, value))
                        if len(out) == pairs_max:
                            return out
            return out
        high = end if after is None else after
        # Position on the last LMDB key <= high's mapping, then walk backwards.
        if high is None:
            positioned = cursor.last()
        else:
            target = _lmdb_key(high)
            if cursor.set_range(target):
                if bytes(cursor.key()) > target:
                    positioned = cursor.prev()
                else:
                    positioned = True
            else:
                positioned = cursor.last()
        if not positioned:
            return out
        for previous_key, previous_raw in cursor.iterprev():
            for key, value in self._expand(previous_key, previous_raw, reverse=True):
                if key < start:
                    return out
                if wanted(key):
                    out.append((key, value))
                    if len(out) == pairs_max:
                        return out
        return out

    @staticmethod
    def _expand(
        lmdb_key: bytes | memoryview, raw: bytes | memoryview, *, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        if not _is_bucket(lmdb_key):
            return [(bytes(lmdb_key), bytes(raw))]
        prefix = bytes(lmdb_key[:LMDB_KEY_INLINE_BYTES])
        pairs = [(prefix + rest, value) for rest, value in _decode_bucket(raw)]
        if reverse:
            pairs.reverse()
        return pairs

    def applied_lsn(self) -> int:
        return self._applied_lsn

    @property
    def in_batch(self) -> bool:
        """Whether a batch is open (its writes commit when it ends)."""
        return self._txn is not None

    # --- writing -------------------------------------------------------------------------

    def batch(self) -> _Batch:
        """Group every write made inside into one LMDB transaction (one commit per batch).

        The log applies a whole group commit inside one batch. Reads inside see the batch's
        writes. If the block raises, nothing of it is kept.
        """
        return _Batch(self)

    def _begin_batch(self) -> int:
        """Open the batch's write transaction; the applied LSN before it."""
        assert self._txn is None, "batches do not nest"
        self._txn = self._env.begin(write=True)
        return self._applied_lsn

    def _commit_batch(self, applied_before: int) -> None:
        txn = self._txn
        assert txn is not None
        try:
            if self.batch_hook is not None:
                self.batch_hook.before_commit()
            if self._applied_lsn != applied_before:
                # Once per batch: the writes inside only moved `_applied_lsn` (`_record_lsn`).
                txn.put(_APPLIED_LSN_KEY, _LSN.pack(self._applied_lsn), db=self._meta)
            self._txn = None
            txn.commit()
        except BaseException as error:
            self._abort_batch(txn, applied_before, error)
            raise

    def _abort_batch(
        self, txn: lmdb.Transaction, applied_before: int, error: BaseException | None
    ) -> None:
        self._txn = None
        txn.abort()
        self._applied_lsn = applied_before
        if self.batch_hook is not None:
            self.batch_hook.aborted()
        if isinstance(error, lmdb.MapFullError):
            # The batch cannot be redone here (the caller's code ran inside it); make
            # room so that a restart, which replays the batch from the log, succeeds.
            self._grow_map()

    def write(
        self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes], applied_lsn: int
    ) -> None:
        assert applied_lsn >= self._applied_lsn
        txn = self._txn
        if txn is not None:
            # Inside a batch (a replica applies every record so), straight into its
            # transaction: the common case, without a closure per record.
            self._write_in(txn, puts, deletes, applied_lsn)
            return
        self._run_write(lambda txn: self._write_in(txn, puts, deletes, applied_lsn))

    def delete_range(self, start: bytes, end: bytes, applied_lsn: int) -> None:
        assert applied_lsn >= self._applied_lsn
        self._run_write(lambda txn: self._delete_range_in(txn, start, end, applied_lsn))

    def _run_write(self, operation: Callable[[lmdb.Transaction], None]) -> None:
        if self._txn is not None:
            operation(self._txn)
            return
        applied_before = self._applied_lsn
        while True:
            txn = self._env.begin(write=True)
            try:
                operation(txn)
                txn.commit()
                return
            except lmdb.MapFullError:
                # The map (not the disk) is full: abort, make the map larger and redo the
                # whole write, so it stays atomic.
                txn.abort()
                self._applied_lsn = applied_before
                self._grow_map()
            except BaseException:
                txn.abort()
                self._applied_lsn = applied_before
                raise

    def _grow_map(self) -> None:
        assert self._txn is None
        size = self._env.info()["map_size"]
        self._env.set_mapsize(size * MAP_BYTES_GROWTH_FACTOR)

    def _write_in(
        self,
        txn: lmdb.Transaction,
        puts: Sequence[tuple[bytes, bytes]],
        deletes: Sequence[bytes],
        applied_lsn: int,
    ) -> None:
        for key in deletes:
            self._delete_in(txn, key)
        for key, value in puts:
            self._put_in(txn, key, value)
        self._record_lsn(txn, applied_lsn)

    def _put_in(self, txn: lmdb.Transaction, key: bytes, value: bytes) -> None:
        if len(key) <= LMDB_KEY_INLINE_BYTES:
            txn.put(key, value, db=self._items)
            return
        bucket = _bucket_key(key)
        raw = txn.get(bucket, db=self._items)
        pairs = [] if raw is None else _decode_bucket(raw)
        rest = key[LMDB_KEY_INLINE_BYTES:]
        index = bisect.bisect_left(pairs, [rest])
        if index < len(pairs) and pairs[index][0] == rest:
            pairs[index][1] = value
        else:
            pairs.insert(index, [rest, value])
        txn.put(bucket, _encode_bucket(pairs), db=self._items)

    def _delete_in(self, txn: lmdb.Transaction, key: bytes) -> None:
        if len(key) <= LMDB_KEY_INLINE_BYTES:
            txn.delete(key, db=self._items)
            return
        bucket = _bucket_key(key)
        raw = txn.get(bucket, db=self._items)
        if raw is None:
            return
        pairs = _decode_bucket(raw)
        rest = key[LMDB_KEY_INLINE_BYTES:]
        index = bisect.bisect_left(pairs, [rest])
        if index < len(pairs) and pairs[index][0] == rest:
            del pairs[index]
            if pairs:
                txn.put(bucket, _encode_bucket(pairs), db=self._items)
            else:
                txn.delete(bucket, db=self._items)

    def _delete_range_in(
        self, txn: lmdb.Transaction, start: bytes, end: bytes, applied_lsn: int
    ) -> None:
        doomed = [key for key, _ in self._scan_all_in(txn, start, end)]
        for key in doomed:
            self._delete_in(txn, key)
        self._record_lsn(txn, applied_lsn)

    def _scan_all_in(
        self, txn: lmdb.Transaction, start: bytes, end: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        after: bytes | None = None
        while True:
            chunk = self._scan_chunk_in(txn, start, end, False, after)
            yield from chunk
            if len(chunk) < SCAN_CHUNK_PAIRS:
                return
            after = chunk[-1][0]

    def _record_lsn(self, txn: lmdb.Transaction, applied_lsn: int) -> None:
        if txn is not self._txn:
            txn.put(_APPLIED_LSN_KEY, _LSN.pack(applied_lsn), db=self._meta)
        # Inside a batch the LSN is stored once, when the batch commits (`batch`): the
        # records of a group commit each move it, and only the last one counts.
        self._applied_lsn = applied_lsn

    # --- durability ----------------------------------------------------------------------

    def sync(self) -> None:
        """Flush every committed transaction to disk (the checkpoint's first step)."""
        self._env.sync(True)

    def snapshot(self, destination: Path) -> int:
        """Write a compact, consistent copy of the store to the new directory `destination`.

        Returns the applied LSN the copy holds: a store opened on the copy continues from
        the log records after it. It reads one snapshot (one read transaction) and may run
        in another thread while this one keeps writing.
        """
        destination = Path(destination)
        make_directory_durable(destination)
        with self._env.begin() as txn:
            raw = txn.get(_APPLIED_LSN_KEY, db=self._meta)
            applied_lsn = 0 if raw is None else int(_LSN.unpack(raw)[0])
            self._env.copy(str(destination), compact=True, txn=txn)
        fsync_directory(destination)
        return applied_lsn

    def close(self) -> None:
        if self._closed:
            return
        assert self._txn is None, "close() inside a batch"
        self._closed = True
        self._env.close()


class _Batch:
    """`LmdbStore.batch`: the context of one write transaction (committed when the block
    ends normally, aborted if it raises)."""

    __slots__ = ("_applied_before", "_store")

    def __init__(self, store: LmdbStore) -> None:
        self._store = store
        self._applied_before = 0

    def __enter__(self) -> None:
        self._applied_before = self._store._begin_batch()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        store = self._store
        if error is None:
            store._commit_batch(self._applied_before)
        else:
            txn = store._txn
            assert txn is not None
            store._abort_batch(txn, self._applied_before, error)
