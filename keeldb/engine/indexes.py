"""Local and global secondary indexes: their entries, their statistics, their capacity, and
the background work that builds a new global index and removes a deleted one.

This module owns:

- the stored form of an index entry. An item with every key attribute of an index, each of
  the type the index defines and not empty, has exactly one entry in that index, at
  `keeldb.model.keys.index_item_key(table_id, index_id, index hash, index range, table
  hash, table range)`: index key order first, then the base table's key so that entries
  with equal index keys stay unique and ordered. Items lacking a key attribute are absent
  (sparse indexes). The value is `item_store.encode_item(projected image, its size)`: the
  projection (KEYS_ONLY: the table's and the index's keys; INCLUDE: those and the
  NonKeyAttributes; ALL: the whole item) is applied when the entry is written, as DynamoDB
  stores it, so that a Query or Scan of an index reads one store range and never the base
  table (a pointer plus projection at read time would cost a base read per entry and make an
  index page depend on two ranges). The stored size is the projected image's DynamoDB size,
  which is what an index read is charged for; `INDEX_ENTRY_OVERHEAD_BYTES` is added on top
  for IndexSizeBytes and item collection sizes, as DynamoDB accounts index storage;
- `entry_writes`: the puts, deletes and statistics of every maintained index for one item
  write (old image -> new image), which `item_store`'s appliers add to the same atomic store
  write as the item, so base and indexes never disagree, after a crash included;
- per-index statistics (ItemCount, IndexSizeBytes; `index_stats`) and, for tables with local
  indexes, per item collection sizes (`collection_bytes`), each under a key in the table's
  reserved meta range (`item_store.META_INDEX_ID`), written in the same store write as the
  entries they count;
- `plan`: what one item write (old image -> new image) does to each index, derived once and
  shared by the capacity, the item collection check and the applier;
- `write_capacity`: the write units each index costs for one item write, following the
  Developer Guide ("Capacity unit consumption for writes to secondary indexes"): a new entry
  is one put, a removed entry one delete, a moved entry (its index key changed) a delete plus
  a put, a changed projection one put, and nothing when the entry is absent before and after
  or unchanged. Each put or delete costs the entry's size rounded up to 1 KB;
- the backfill of a global index added by UpdateTable (status CREATING): "index_backfill"
  redo records, each indexing at most `BACKFILL_ITEMS_MAX` base items (and about
  `BACKFILL_BYTES_MAX` bytes of them) from a cursor kept in
  the store and moved in the same write, the last one turning the index ACTIVE; and the
  removal of a deleted one (status DELETING): an "index_drop" record whose applier range
  deletes the entries and removes the index from the catalog. Base writes during a backfill
  maintain the CREATING index too, so an entry is never missed, and a crash at any point
  resumes from the last applied batch. `run_backfills(db)` drives both; `ensure_background`
  starts it when there is work (UpdateTable calls it, and the node once at start for work a
  restart left unfinished).

An index's entries live under its own id (`index_id`): recorded in `SecondaryIndex.index_id`
when the index is defined (local indexes first, from 1, at CreateTable; the next unused id for
one added later), so that deleting one global index never moves another's entries. Backfill
and drop records are proposed under the catalog's lock, so that UpdateTable never validates
against a table one of them is about to change.

What other modules use: Query and Scan take an index's id from `index_id` (and may use
`index_view` for its key schema, store range and projected names, and `decode_entry` for a
stored entry); writers other than the item operations (BatchWriteItem, transactions) use
`write_capacity` and `check_collection_size` with the old and new images of each write.

It never validates a request, never answers a client, and its appliers never read a clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb.engine.database import Database, redo_kind
from keeldb.engine.item_store import (
    META_INDEX_ID,
    Item,
    decode_stored,
    encode_item,
)
from keeldb.engine.packing import pack
from keeldb.engine.schema import (
    STATUS_ACTIVE,
    STATUS_CREATING,
    STATUS_DELETING,
    STATUS_UPDATING,
)
from keeldb.model.capacity import write_units
from keeldb.model.keys import (
    encode_key_value,
    index_bounds,
    index_item_key,
    index_prefix,
    key_after,
)
from keeldb.model.values import decode_binary, item_size

if TYPE_CHECKING:
    from keeldb.engine.schema import KeyAttribute, SecondaryIndex, Table

log = logging.getLogger("keeldb.indexes")

STATE_KEY = "indexes"  # this module's entry in `Database.state`

# Every index entry is charged 100 bytes of overhead in index storage (Developer Guide,
# "Storage considerations" of local and global secondary indexes).
INDEX_ENTRY_OVERHEAD_BYTES = 100
# An item collection (a partition key value's items plus their local index entries) may
# hold at most 10 GB (Developer Guide, "Item collection size limit").
ITEM_COLLECTION_BYTES_MAX = 10 * 1024**3
# Base items indexed per backfill record: small enough that one record is one short store
# write that never stalls the items written meanwhile, large enough that a backfill of a
# million items is ten thousand records.
BACKFILL_ITEMS_MAX = 100
# ... and base bytes per backfill record, so that a batch of large items stays one modest
# store write (100 items of 400 KB would otherwise make one of 40 MB).
BACKFILL_BYTES_MAX = 1024 * 1024
# Global indexes in these states are kept up to date by every base write.
MAINTAINED_STATUSES = frozenset({STATUS_ACTIVE, STATUS_CREATING, STATUS_UPDATING})

# Keys in the table's meta range (below `index_prefix(table_id, META_INDEX_ID)`); the item
# store's table statistics use the suffix b"stats", so every suffix here starts otherwise.
_INDEX_STATS_TAG = b"index"
_BACKFILL_TAG = b"backfill"
_COLLECTION_TAG = b"collection"

# DynamoDB's message for ItemCollectionSizeLimitExceededException.
COLLECTION_TOO_BIG_MESSAGE = "Collection size exceeded"


# --- Index ids and what Query and Scan need -------------------------------------------------


def index_id(table: Table, index: SecondaryIndex) -> int:
    """The id under which an index's entries are stored: the one recorded when the index was
    defined, else (catalogs written before ids were recorded) its position among the table's
    indexes, local first, counting from 1. 0 is the base table."""
    if index.index_id is not None:
        return index.index_id
    for position, candidate in enumerate(table.local_indexes + table.global_indexes, start=1):
        if candidate.name == index.name:
            return position
    raise AssertionError(f"index {index.name} is not an index of {table.name}")


def next_index_id(table: Table) -> int:
    """An id no index of `table` uses (deleting ones included)."""
    used = [index_id(table, index) for index in table.local_indexes + table.global_indexes]
    return max(used, default=0) + 1


@dataclass(frozen=True, slots=True)
class IndexView:
    """What a read of one index needs: its key schema, where its entries are, and which
    attributes an entry holds (None: every attribute, projection ALL)."""

    index: SecondaryIndex
    index_id: int
    hash_key: KeyAttribute
    range_key: KeyAttribute | None
    start: bytes  # [start, end): every entry of the index
    end: bytes
    projected_names: frozenset[str] | None


def index_view(table: Table, name: str) -> IndexView | None:
    index = table.index(name)
    if index is None:
        return None
    iid = index_id(table, index)
    start, end = index_bounds(table.table_id, iid)
    names = None if index.projection_type == "ALL" else frozenset(_projected_names(table, index))
    return IndexView(index, iid, index.hash_key, index.range_key, start, end, names)


def decode_entry(data: bytes) -> tuple[Item, int]:
    """(projected item, its size in bytes) from a stored index entry."""
    return decode_stored(data)


# --- Entries --------------------------------------------------------------------------------


def _projected_names(table: Table, index: SecondaryIndex) -> set[str]:
    names = set(table.key_names)
    names.update(index.key_names)
    if index.projection_type == "INCLUDE":
        names.update(index.non_key_attributes)
    return names


def _indexable(value: dict[str, Any] | None, attribute: KeyAttribute) -> bool:
    """Whether `value` can key an index on `attribute`: present, of its type, not empty.
    Writes refuse a wrong type or an empty value (`items.check_index_keys`); items written
    before a global index existed may still have them, and are left out of it."""
    if value is None or attribute.type not in value:
        return False
    if attribute.type == "S":
        return len(value["S"]) > 0
    if attribute.type == "B":
        return len(decode_binary(value["B"])) > 0
    return True


@dataclass(frozen=True, slots=True)
class Entry:
    """An item's entry in one index, before it has a store key."""

    hash_value: dict[str, Any]  # the index's partition key value
    range_value: dict[str, Any] | None  # its sort key value (None without one)
    image: Item  # the projected item
    size: int  # its DynamoDB size in bytes (without the per-entry overhead)

    def key(self, table: Table, iid: int) -> bytes:
        """The entry's store key: index key, then the base table's key."""
        return index_item_key(
            table.table_id,
            iid,
            self.hash_value,
            self.range_value,
            self.image[table.hash_key.name],
            None if table.range_key is None else self.image[table.range_key.name],
        )

    def same_key(self, other: Entry) -> bool:
        """Whether two entries of one item (same base key) sit at the same store key."""
        return self.hash_value == other.hash_value and self.range_value == other.range_value


def entry_for(
    table: Table,
    index: SecondaryIndex,
    item: Item | None,
    size: int | None = None,
    sizes: dict[str, int] | None = None,
) -> Entry | None:
    """The entry `item` (of `size` bytes, if known) has in `index`, or None (no item, or a
    key attribute missing). `sizes` caches the item's attribute sizes across its indexes."""
    if item is None:
        return None
    hash_value = item.get(index.hash_key.name)
    if not _indexable(hash_value, index.hash_key):
        return None
    assert hash_value is not None
    range_value = None
    if index.range_key is not None:
        range_value = item.get(index.range_key.name)
        if not _indexable(range_value, index.range_key):
            return None
    if index.projection_type == "ALL":
        return Entry(hash_value, range_value, item, item_size(item) if size is None else size)
    names = _projected_names(table, index)
    image = {name: value for name, value in item.items() if name in names}
    if sizes is None:
        sizes = {}
    image_size = 0
    for name, value in image.items():
        attribute_size = sizes.get(name)
        if attribute_size is None:
            attribute_size = sizes[name] = item_size({name: value})
        image_size += attribute_size
    return Entry(hash_value, range_value, image, image_size)


@dataclass(frozen=True, slots=True)
class Change:
    """What one item write does to one index: its entry before and after (None: absent)."""

    index: SecondaryIndex
    index_id: int
    before: Entry | None
    after: Entry | None


def plan(
    table: Table,
    old: Item | None,
    old_size: int | None,
    new: Item | None,
    new_size: int | None,
) -> list[Change]:
    """The change one item write (old image -> new image, with their sizes) makes to each
    maintained index, in the table's index order: derived once per write and shared by the
    capacity, the item collection check and the applier."""
    if not table.local_indexes and not table.global_indexes:
        return []  # most tables: nothing to derive, on every write and every apply
    old_sizes: dict[str, int] = {}
    new_sizes: dict[str, int] = {}
    return [
        Change(
            index,
            iid,
            entry_for(table, index, old, old_size, old_sizes),
            entry_for(table, index, new, new_size, new_sizes),
        )
        for index, iid in maintained_indexes(table)
    ]


def maintained_indexes(table: Table) -> list[tuple[SecondaryIndex, int]]:
    """The indexes a base write keeps up to date, with their ids: every local index, and the
    global ones that are not being deleted."""
    out = [(index, index_id(table, index)) for index in table.local_indexes]
    out.extend(
        (index, index_id(table, index))
        for index in table.global_indexes
        if index.status in MAINTAINED_STATUSES
    )
    return out


# --- Statistics -----------------------------------------------------------------------------


def _meta_prefix(table_id: str) -> bytes:
    return index_prefix(table_id, META_INDEX_ID)


def index_stats_key(table_id: str, iid: int) -> bytes:
    return _meta_prefix(table_id) + _INDEX_STATS_TAG + iid.to_bytes(2, "big")


def backfill_cursor_key(table_id: str, iid: int) -> bytes:
    return _meta_prefix(table_id) + _BACKFILL_TAG + iid.to_bytes(2, "big")


def collection_key(table_id: str, hash_value: dict[str, Any]) -> bytes:
    return _meta_prefix(table_id) + _COLLECTION_TAG + encode_key_value(hash_value)


def _read_pair(db: Database, key: bytes) -> tuple[int, int]:
    data = db.store.get(key)
    if data is None:
        return 0, 0
    first, second = msgpack.unpackb(data)
    return int(first), int(second)


def index_stats(db: Database, table: Table, index: SecondaryIndex) -> tuple[int, int]:
    """(ItemCount, IndexSizeBytes) of an index's committed entries, for DescribeTable."""
    return _read_pair(db, index_stats_key(table.table_id, index_id(table, index)))


def collection_bytes(db: Database, table: Table, hash_value: dict[str, Any]) -> int:
    """The committed size of one item collection: the sizes of the items with this partition
    key value plus their local index entries (with overhead). Kept only for tables with local
    indexes, the only ones with an item collection limit."""
    data = db.store.get(collection_key(table.table_id, hash_value))
    if data is None:
        return 0
    size: int = msgpack.unpackb(data)
    return size


class _Batch:
    """The puts and deletes of one store write, with statistics deltas folded in at the end."""

    def __init__(self, db: Database, puts: list[tuple[bytes, bytes]], deletes: list[bytes]):
        self.db = db
        self.puts = puts
        self.deletes = deletes
        self.stats: dict[bytes, list[int]] = {}  # stats key -> [count delta, bytes delta]

    def count(self, stats_key: bytes, count: int, size: int) -> None:
        delta = self.stats.setdefault(stats_key, [0, 0])
        delta[0] += count
        delta[1] += size

    def put_entry(self, stats_key: bytes, key: bytes, entry: Entry) -> int:
        """Store an entry at `key` (replacing whatever is there); the stored bytes delta."""
        old = self.db.store.get(key)
        delta = entry.size + INDEX_ENTRY_OVERHEAD_BYTES
        count = 1
        if old is not None:
            delta -= decode_stored(old)[1] + INDEX_ENTRY_OVERHEAD_BYTES
            count = 0
        self.puts.append((key, encode_item(entry.image, entry.size)))
        self.count(stats_key, count, delta)
        return delta

    def delete_entry(self, stats_key: bytes, key: bytes) -> int:
        """Remove the entry at `key` if there is one; the stored bytes delta."""
        old = self.db.store.get(key)
        if old is None:
            return 0
        delta = -(decode_stored(old)[1] + INDEX_ENTRY_OVERHEAD_BYTES)
        self.deletes.append(key)
        self.count(stats_key, -1, delta)
        return delta

    def finish(self) -> None:
        for key, (count, size) in sorted(self.stats.items()):
            if count == 0 and size == 0:
                continue
            current_count, current_size = _read_pair(self.db, key)
            count += current_count
            size += current_size
            assert count >= 0, count
            assert size >= 0, size
            self.puts.append((key, pack([count, size])))


def entry_writes(
    db: Database,
    table: Table,
    old: Item | None,
    old_size: int,
    new: Item | None,
    new_size: int,
    puts: list[tuple[bytes, bytes]],
    deletes: list[bytes],
) -> None:
    """Add to `puts` / `deletes` what one item write (old image -> new image, with their
    sizes) changes in the table's indexes and their statistics, and, for a table with local
    indexes, in its item collection's size. Deterministic: it reads only the store."""
    changes = plan(table, old, old_size, new, new_size)
    if not changes:
        return
    batch = _Batch(db, puts, deletes)
    collection_delta = new_size - old_size
    for change in changes:
        stats_key = index_stats_key(table.table_id, change.index_id)
        before, after = change.before, change.after
        delta = 0
        if before is not None and (after is None or not after.same_key(before)):
            delta += batch.delete_entry(stats_key, before.key(table, change.index_id))
        if after is not None:
            delta += batch.put_entry(stats_key, after.key(table, change.index_id), after)
        if not change.index.is_global:
            collection_delta += delta
    batch.finish()
    if table.local_indexes and collection_delta:
        image = new if new is not None else old
        assert image is not None
        hash_value = image[table.hash_key.name]
        key = collection_key(table.table_id, hash_value)
        size = collection_bytes(db, table, hash_value) + collection_delta
        assert size >= 0, size
        if size == 0:
            deletes.append(key)
        else:
            puts.append((key, pack(size)))


# --- Capacity and the item collection limit -------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexUnits:
    name: str
    is_global: bool
    units: float


def write_capacity(table: Table, old: Item | None, new: Item | None) -> list[IndexUnits]:
    """The write units each index costs for one item write (old image -> new image), in the
    table's index order; indexes the write does not touch are left out."""
    return changes_capacity(plan(table, old, None, new, None))


def changes_capacity(changes: list[Change]) -> list[IndexUnits]:
    """`write_capacity` of a write whose `plan` is at hand."""
    out: list[IndexUnits] = []
    for change in changes:
        before, after = change.before, change.after
        units = 0.0
        if before is not None and after is not None and before.same_key(after):
            if before.image != after.image:
                units = write_units(max(before.size, after.size))
        else:
            if before is not None:
                units += write_units(before.size)
            if after is not None:
                units += write_units(after.size)
        if units:
            out.append(IndexUnits(change.index.name, change.index.is_global, units))
    return out


def check_collection_size(
    db: Database, table: Table, old: Item | None, old_size: int, new: Item, size: int
) -> None:
    """Refuse a write (old image of `old_size` bytes -> new image of `size` bytes) that would
    take an item collection of a table with local indexes past 10 GB, as DynamoDB does
    (ItemCollectionSizeLimitExceededException)."""
    if table.local_indexes:
        changes = plan(table, old, old_size, new, size)
        check_changes_collection_size(db, table, changes, new, size - old_size)


def check_changes_collection_size(
    db: Database, table: Table, changes: list[Change], new: Item, growth_bytes: int
) -> None:
    """`check_collection_size` of a write whose `plan` is at hand: `growth_bytes` is how much
    the item itself grows, `changes` add its local index entries."""
    if not table.local_indexes:
        return  # before the import below: this runs for every item write
    from keeldb.model.errors import ItemCollectionSizeLimitExceededException

    growth = growth_bytes
    for change in changes:
        if change.index.is_global:
            continue
        if change.before is not None:
            growth -= change.before.size + INDEX_ENTRY_OVERHEAD_BYTES
        if change.after is not None:
            growth += change.after.size + INDEX_ENTRY_OVERHEAD_BYTES
    if growth <= 0:
        return
    current = collection_bytes(db, table, new[table.hash_key.name])
    if current + growth > ITEM_COLLECTION_BYTES_MAX:
        raise ItemCollectionSizeLimitExceededException(COLLECTION_TOO_BIG_MESSAGE)


# --- Backfill and removal of global indexes -------------------------------------------------


def _base_bounds(table: Table) -> tuple[bytes, bytes]:
    return index_bounds(table.table_id, 0)


def _live_index(
    db: Database, record: dict[str, Any], status: str
) -> tuple[Table, SecondaryIndex] | None:
    """The table and global index a backfill or drop record names, if they still exist with
    the id and status the record was proposed for."""
    from keeldb.engine import catalog

    table = catalog.get_table_by_id(db, record["table_id"])
    if table is None:
        return None
    for index in table.global_indexes:
        if index.name == record["index"]:
            if index.status != status or index_id(table, index) != record["index_id"]:
                return None
            return table, index
    return None


@redo_kind("index_backfill")
def apply_index_backfill(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Index the next `items_max` base items after the cursor; the batch that reaches the end
    of the table makes the index ACTIVE, in the same store write."""
    from keeldb.engine import catalog

    if lsn <= db.store.applied_lsn():
        return
    found = _live_index(db, record, STATUS_CREATING)
    if found is None:
        db.store.write([], [], applied_lsn=lsn)
        return
    table, index = found
    iid = index_id(table, index)
    cursor_key = backfill_cursor_key(table.table_id, iid)
    start, end = _base_bounds(table)
    cursor = db.store.get(cursor_key)
    if cursor is not None:
        start = cursor
    # The bounds travel in the record, so that every replica cuts the same batch.
    items_max: int = record["items_max"]
    bytes_max: int = record.get("bytes_max", BACKFILL_BYTES_MAX)
    assert items_max >= 1, items_max
    assert bytes_max >= 1, bytes_max
    puts: list[tuple[bytes, bytes]] = []
    deletes: list[bytes] = []
    batch = _Batch(db, puts, deletes)
    stats_key = index_stats_key(table.table_id, iid)
    read_bytes = 0
    last = b""
    full = False
    for read, (key, data) in enumerate(db.store.scan(start, end), start=1):
        item, size = decode_stored(data)
        entry = entry_for(table, index, item, size)
        if entry is not None:
            batch.put_entry(stats_key, entry.key(table, iid), entry)
        read_bytes += size
        last = key
        if read >= items_max or read_bytes >= bytes_max:
            full = True
            break
    batch.finish()
    done = not full
    updated: Table | None = None
    if done:
        deletes.append(cursor_key)
        updated = _with_index(table, replace(index, status=STATUS_ACTIVE))
        puts.append(catalog.table_entry(updated))
    else:
        puts.append((cursor_key, key_after(last)))
    db.store.write(puts, deletes, applied_lsn=lsn)
    if updated is not None:
        catalog.remember(db, updated)


@redo_kind("index_drop")
def apply_index_drop(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Remove a DELETING global index: its entries by range delete, then its statistics,
    cursor and catalog entry. Two store calls, made crash-safe by their LSNs as DeleteTable's
    are: the range delete records lsn - 1, so a crash between them replays this record."""
    from keeldb.engine import catalog

    if lsn <= db.store.applied_lsn():
        return
    found = _live_index(db, record, STATUS_DELETING)
    if found is None:
        db.store.write([], [], applied_lsn=lsn)
        return
    table, index = found
    iid = index_id(table, index)
    start, end = index_bounds(table.table_id, iid)
    db.store.delete_range(start, end, lsn - 1)
    remaining = tuple(i for i in table.global_indexes if i.name != index.name)
    updated = table.evolve(
        global_indexes=remaining,
        attribute_definitions=_used_definitions(table, remaining),
    )
    deletes = [index_stats_key(table.table_id, iid), backfill_cursor_key(table.table_id, iid)]
    db.store.write([catalog.table_entry(updated)], deletes, applied_lsn=lsn)
    catalog.remember(db, updated)


def _with_index(table: Table, index: SecondaryIndex) -> Table:
    return table.evolve(
        global_indexes=tuple(index if i.name == index.name else i for i in table.global_indexes)
    )


def _used_definitions(
    table: Table, global_indexes: Iterable[SecondaryIndex]
) -> tuple[KeyAttribute, ...]:
    """The table's AttributeDefinitions that some key still uses (DynamoDB drops the others
    when the index that used them is deleted)."""
    used = set(table.key_names)
    for index in (*table.local_indexes, *global_indexes):
        used.update(index.key_names)
    return tuple(a for a in table.attribute_definitions if a.name in used)


def pending_work(db: Database) -> tuple[Table, SecondaryIndex] | None:
    """The first global index (by table name, then index order) being created or deleted."""
    from keeldb.engine import catalog

    for table in catalog.list_tables(db):
        for index in table.global_indexes:
            if index.status in (STATUS_CREATING, STATUS_DELETING):
                return table, index
    return None


async def step(db: Database) -> bool:
    """Propose one backfill batch or one drop; False when there is nothing left to do.

    Proposed under the catalog's lock: the batch that ends a backfill, and a drop, change
    the table, and UpdateTable must never validate against a view they are about to change
    (its record would carry the index list from before them)."""
    from keeldb.engine import catalog

    async with catalog.catalog_lock(db):
        work = pending_work(db)
        if work is None:
            return False
        table, index = work
        record: dict[str, Any] = {
            "table_id": table.table_id,
            "index": index.name,
            "index_id": index_id(table, index),
        }
        if index.status == STATUS_CREATING:
            record.update(
                kind="index_backfill", items_max=BACKFILL_ITEMS_MAX, bytes_max=BACKFILL_BYTES_MAX
            )
        else:
            record["kind"] = "index_drop"
        await db.propose(record)
    return True


async def run_backfills(db: Database) -> None:
    """Backfill every CREATING global index and remove every DELETING one, one batch at a
    time, then return. Other requests run between batches."""
    while await step(db):
        await asyncio.sleep(0)


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        # The log refused a record (the node is closing, or lost its leadership): the work
        # stays recorded in the catalog and resumes the next time the task is started.
        log.warning("index backfill paused (it resumes when the node next starts): %r", error)


def ensure_background(db: Database) -> None:
    """Start `run_backfills` on the running event loop unless it is running already or there
    is nothing to do."""
    if pending_work(db) is None:
        return
    task: asyncio.Task[None] | None = db.state.get(STATE_KEY)
    if task is not None and not task.done():
        return
    task = asyncio.get_running_loop().create_task(run_backfills(db))
    task.add_done_callback(_log_failure)
    db.state[STATE_KEY] = task
