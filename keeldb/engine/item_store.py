"""Where items live in the store, and the two views of them the item operations read.

This module owns:

- the stored form of an item: the key is `keeldb.model.keys.item_key(table_id, 0, hash,
  range)`, so a table's items are one contiguous range in DynamoDB's physical order; the value
  is a msgpack array [item size in bytes, the item's canonical wire-form dict]
  (`encode_item` / `decode_item` / `decode_stored`, which Query and Scan use too), so that
  neither the appliers nor capacity arithmetic recompute a size that was computed once;
- the per-table statistics (ItemCount, TableSizeBytes) kept in the store under a key inside
  the table's prefix (`stats_key`), updated in the same atomic write as the item they count,
  so that they are exact after any crash and vanish with DeleteTable's range delete;
- the pending overlay: after-images that were proposed to the log but are not applied yet,
  per storage key, oldest first. A write evaluates its condition and update on the LATEST view
  (the newest pending after-image, else the committed item), so that writes to one item are
  evaluated in log order as a Multi-Paxos or Raft leader must; a read sees committed state
  only. An entry leaves the overlay when its record is applied, or when its proposal fails.
  This asks two things of the log: `append` fixes a record's place in the log before its
  first await (so proposal order is log order), and it either returns once the record is
  applied or raises (a replica that stops leading must fail its pending proposals, or their
  images would stay in its overlay);
- the appliers of the "put" and "delete" redo records: each turns one record into exactly one
  `store.write(puts, deletes, applied_lsn)`, deterministically and without validation (the
  record was validated before it was proposed). That one write holds the item, its entries
  in every secondary index (added, moved or removed, `keeldb.engine.indexes.entry_writes`)
  and every statistics record they change, so base and indexes never disagree. A record the store already holds (replayed
  at recovery) is skipped, and one whose table was deleted meanwhile only moves the LSN.
  `apply_items_write` applies a record of several such writes (BatchWriteItem's) as one
  store write, each built over the state the writes before it left (`propose_writes`
  proposes it, with every after-image in the overlay).

It never validates a request, never evaluates an expression and never answers a client.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb.engine import catalog, streams
from keeldb.engine.packing import pack
from keeldb.model.keys import INDEX_ID_MAX, index_prefix, item_key

if TYPE_CHECKING:
    from keeldb.engine.database import Database
    from keeldb.engine.schema import SecondaryIndex, Table

Item = dict[str, dict[str, Any]]

STATE_KEY = "items"  # this module's entry in `Database.state`
# The last index id is reserved for a table's own records (its statistics): inside the
# table's range, so DeleteTable's range delete removes them, and outside the base table's and
# every secondary index's range, so Query and Scan never meet them.
META_INDEX_ID = INDEX_ID_MAX
STATS_SUFFIX = b"stats"
# The msgpack encoding of a stored value's head (`stored_size`): a fixarray of two, then the
# size as a positive fixint or a uint8/16/32/64.
_MSGPACK_ARRAY_OF_TWO = 0x92
_MSGPACK_FIXINT_MAX = 0x7F
_MSGPACK_UINT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
# Store keys of items, remembered by table and key value: every item operation asks for one,
# and clients come back to the same items (a zipfian workload's hot keys). Encoding a key and
# hashing its partition key costs ~1.2 µs, a hit ~0.3 µs. At most 3 KB of key text each
# (2048 + 1024 bytes of key values), so the cache holds at most ~12 MB.
STORAGE_KEY_CACHE_ENTRIES_MAX = 4096


@dataclass(slots=True)
class PendingWrite:
    """One proposed, not yet applied, write of an item: its after-image (None: deleted) and
    that image's size in bytes (0 for a delete)."""

    image: Item | None
    size: int


@dataclass(slots=True)
class ItemsState:
    # storage key -> writes proposed and not applied yet, oldest first (log order).
    pending: dict[bytes, deque[PendingWrite]] = field(default_factory=dict)
    # Capacity consumed per table name since the process started, failed conditional writes
    # included (DynamoDB meters those too); the basis for admission control and metrics.
    read_units: dict[str, float] = field(default_factory=dict)
    write_units: dict[str, float] = field(default_factory=dict)
    # storage key -> id of the prepared transaction that holds the item (a transaction across
    # partitions, between its prepare and its commit or cancel): a plain write to it is
    # refused with TransactionConflictException, as DynamoDB does.
    held: dict[bytes, str] = field(default_factory=dict)


def items_state(db: Database) -> ItemsState:
    state = db.state.get(STATE_KEY)
    if state is None:
        state = db.state[STATE_KEY] = ItemsState()
    assert isinstance(state, ItemsState)
    return state


# --- Stored form ----------------------------------------------------------------------------


def encode_item(item: Item, size: int) -> bytes:
    """The stored value of an item whose DynamoDB size is `size` bytes."""
    assert size >= 0, size
    return pack([size, item])


def decode_stored(data: bytes) -> tuple[Item, int]:
    """(item, its size in bytes) from a stored value."""
    size, item = msgpack.unpackb(data, raw=False)
    return item, size


def stored_size(data: bytes) -> int:
    """The size in bytes recorded in a stored value, without decoding its item: the value
    is a msgpack array of two whose first element is the size, an unsigned integer."""
    if len(data) > 1 and data[0] == _MSGPACK_ARRAY_OF_TWO:
        head = data[1]
        if head <= _MSGPACK_FIXINT_MAX:
            return head
        width = _MSGPACK_UINT_WIDTHS.get(head)
        if width is not None and len(data) >= 2 + width:
            return int.from_bytes(data[2 : 2 + width], "big")
    return decode_stored(data)[1]


def decode_item(data: bytes) -> Item:
    return decode_stored(data)[0]


def storage_key(table: Table, key: Item) -> bytes:
    """The store key of the item whose primary key attributes are in `key` (validated)."""
    hash_value = key[table.hash_key.name]
    range_value = None if table.range_key is None else key[table.range_key.name]
    (hash_type,) = hash_value
    try:
        if range_value is None:
            return _storage_key(table.table_id, hash_type, hash_value[hash_type], None, None)
        (range_type,) = range_value
        return _storage_key(
            table.table_id, hash_type, hash_value[hash_type], range_type, range_value[range_type]
        )
    except TypeError:  # a value that cannot be a dictionary key: not remembered
        return item_key(table.table_id, 0, hash_value, range_value)


@lru_cache(maxsize=STORAGE_KEY_CACHE_ENTRIES_MAX)
def _storage_key(
    table_id: str, hash_type: str, hash_text: str, range_type: str | None, range_text: str | None
) -> bytes:
    """`item_key` of a base-table item, remembered: a pure function of its arguments (a key
    value is its type and its text), so a remembered key is the key."""
    range_value = None if range_type is None else {range_type: range_text}
    return item_key(table_id, 0, {hash_type: hash_text}, range_value)


def stats_key(table_id: str) -> bytes:
    return index_prefix(table_id, META_INDEX_ID) + STATS_SUFFIX


def _read_stats(db: Database, key: bytes) -> tuple[int, int]:
    data = db.store.get(key)
    if data is None:
        return 0, 0
    count, size = msgpack.unpackb(data)
    return int(count), int(size)


def table_stats(db: Database, table: Table) -> tuple[int, int]:
    """(ItemCount, TableSizeBytes) of a table's committed items, for DescribeTable."""
    return _read_stats(db, stats_key(table.table_id))


# --- Views ----------------------------------------------------------------------------------


def committed_item(db: Database, key: bytes) -> tuple[Item | None, int]:
    """The committed item at `key` and its size (None and 0 if there is none)."""
    data = db.store.get(key)
    if data is None:
        return None, 0
    return decode_stored(data)


def latest_item(db: Database, key: bytes) -> tuple[Item | None, int]:
    """The newest after-image of an item and its size: pending if a write is in flight, else
    committed."""
    queue = items_state(db).pending.get(key)
    if queue:
        write = queue[-1]
        return write.image, write.size
    return committed_item(db, key)


def _stamp(db: Database, keys: Any) -> None:
    """Each plain write takes its place in the timestamp order of the transactions across
    partitions (`transactions_partition.PartitionState.stamp`; nothing where none ran)."""
    stamps = db.state.get("transactions_partition")
    if stamps is not None:
        for key in keys:
            stamps.stamp((key,))


async def propose_write(
    db: Database,
    key: bytes,
    image: Item | None,
    size: int,
    record: dict[str, Any],
    *,
    round_trips: bool = False,
) -> int:
    """Append `record` (the write of `image` at `key`) to the log and wait until it is applied.

    The after-image joins the overlay before the first await, so that a write to the same item
    that arrives while this one is in flight evaluates on it. It leaves the overlay when the
    record is applied; if the proposal fails, it leaves now, so no stale image survives. A
    cancelled caller leaves it in place: the record may be in the log already, and its
    applier removes it. `round_trips`: as `Database.propose`'s.
    """
    state = items_state(db)
    if key in state.held:
        from keeldb.model.errors import TransactionConflictException

        raise TransactionConflictException("Transaction is ongoing for the item")
    _stamp(db, (key,))
    pending = state.pending
    write = PendingWrite(image, size)
    queue = pending.get(key)
    if queue is None:
        queue = pending[key] = deque()
    queue.append(write)
    try:
        return await db.propose(record, round_trips=round_trips)
    except Exception:
        queue = pending.get(key)
        if queue is not None:
            try:
                queue.remove(write)
            except ValueError:
                pass
            if not queue:
                del pending[key]
        raise


async def propose_writes(
    db: Database, writes: list[tuple[bytes, Item | None, int]], record: dict[str, Any]
) -> int:
    """`propose_write` for several items written by one record: (store key, after-image,
    size) each, keys distinct. Every image joins the overlay before the first await and
    leaves it when the record is applied, or at once if the proposal fails. An item held by
    a prepared transaction refuses the whole record before anything is proposed."""
    state = items_state(db)
    held = state.held
    for key, _, _ in writes:
        if key in held:
            from keeldb.model.errors import TransactionConflictException

            raise TransactionConflictException("Transaction is ongoing for the item")
    _stamp(db, [key for key, _, _ in writes])
    pending = state.pending
    joined: list[tuple[bytes, PendingWrite]] = []
    for key, image, size in writes:
        write = PendingWrite(image, size)
        queue = pending.get(key)
        if queue is None:
            queue = pending[key] = deque()
        queue.append(write)
        joined.append((key, write))
    try:
        return await db.propose(record)
    except Exception:
        for key, write in joined:
            queue = pending.get(key)
            if queue is not None:
                try:
                    queue.remove(write)
                except ValueError:
                    pass
                if not queue:
                    del pending[key]
        raise


def _settle(db: Database, key: bytes) -> None:
    """The oldest pending write of `key` has been applied: it leaves the overlay."""
    pending = items_state(db).pending
    queue = pending.get(key)
    if queue is None:
        return  # Replayed at recovery, or proposed by another member: nothing in flight here.
    queue.popleft()
    if not queue:
        del pending[key]


# --- Appliers -------------------------------------------------------------------------------


def apply_item_write(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Apply one "put" or "delete" record as one atomic store write with the statistics."""
    key: bytes = record["key"]
    try:
        if lsn <= db.store.applied_lsn():
            return  # Replayed at recovery, and already in the store.
        table = catalog.find_table(db, record["name"])
        if table is None or table.table_id != record["table"]:
            # The table was deleted after this write was validated: the write belongs to a
            # table that no longer exists. Only the LSN moves.
            db.store.write([], [], applied_lsn=lsn)
            return
        db.store.write(*_item_write(db, table, key, record), applied_lsn=lsn)
    finally:
        _settle(db, key)


def apply_items_write(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Apply a record of several item writes ("writes": the fields of one "put" or "delete"
    record each) as one atomic store write: each item's writes are built over the store as
    the items before it in the record left it, so that statistics add up; a write whose
    table was deleted meanwhile is skipped."""
    from keeldb.engine.transactions import staged_writes

    writes: list[dict[str, Any]] = record["writes"]
    try:
        if lsn <= db.store.applied_lsn():
            return  # Replayed at recovery, and already in the store.
        _, puts, deletes = staged_writes(db, writes)
        db.store.write(puts, deletes, applied_lsn=lsn)
    finally:
        for write in writes:
            _settle(db, write["key"])


def _item_write(
    db: Database, table: Table, key: bytes, record: dict[str, Any]
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """The puts and deletes of one item write: the item, its entries in every secondary
    index (`indexes.entry_writes`) and the statistics records.

    A put carries its after-image either as the stored value itself ("value", what the item
    operations propose: encoded once, copied into the store as it is) or as the item and
    its size ("item" and "size": transactions, loads, and records written before "value"
    existed). The images are decoded only when an index or the stream needs them."""
    value: bytes | None = record.get("value")
    image: Item | None = record.get("item")
    skey = stats_key(record["table"])
    old = db.store.get(key)
    count, size = _read_stats(db, skey)
    needs_images = bool(table.global_indexes or table.local_indexes or table.stream_enabled)
    old_item: Item | None = None
    old_size = 0
    if old is not None:
        if needs_images:
            old_item, old_size = decode_stored(old)
        else:
            # Only the statistics read the old item here: its size is enough.
            old_size = stored_size(old)
        count -= 1
        size -= old_size
    puts: list[tuple[bytes, bytes]] = []
    deletes: list[bytes] = []
    image_size = 0
    if value is not None:
        assert image is None, "a put carries its image once"
        image_size = stored_size(value)
        if needs_images:
            image = decode_item(value)
        puts.append((key, value))
        count += 1
        size += image_size
    elif image is None:
        if old is not None:
            deletes.append(key)
    else:
        image_size = record["size"]
        puts.append((key, encode_item(image, image_size)))
        count += 1
        size += image_size
    assert count >= 0, count
    assert size >= 0, size
    puts.append((skey, pack([count, size])))
    indexes.entry_writes(db, table, old_item, old_size, image, image_size, puts, deletes)
    if table.stream_enabled:
        # The change's stream record is part of this same atomic write.
        streams.item_written(db, table, old_item, old_size, image, image_size, record, puts)
    return puts, deletes


def index_stats(db: Database, table: Table, index: SecondaryIndex) -> tuple[int, int]:
    """(ItemCount, IndexSizeBytes) of a secondary index, for DescribeTable."""
    return indexes.index_stats(db, table, index)


# Imported last: `indexes` builds on this module (it imports it first), and this module's
# appliers call back into it; by the time an applier runs, both are whole. A module-level
# name, not an import per call, since the appliers run once per item written.
from keeldb.engine import indexes
