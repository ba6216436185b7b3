"""Stream records: DynamoDB Streams change records derived from committed redo records.

This module owns:

- the stored form of streams, under the store prefix `STREAM_PREFIX` (outside every table's
  range, so that a deleted table's streams stay readable until retention passes, as
  DynamoDB's do):
  - one descriptor per stream (`descriptor_key`): table name and TableId, label, view type,
    key schema, status, and its shards, each with the positions where it opened, where it
    closed (None while open) and up to where it was trimmed;
  - one entry per stream record (`record_key`): stream, shard, then its position as 8
    big-endian bytes, so that a shard's records are one contiguous range in order;
- positions and sequence numbers: the records of the log entry with LSN `L` take positions
  `L * RECORDS_PER_ENTRY_MAX + i` (i = 0, 1 ... in the order the entry's applier writes its
  items, changed or not), and a record's SequenceNumber is `SEQUENCE_BASE + position` in decimal: 21 digits,
  increasing in log order, unique, and the same on every replica;
- the hooks the appliers call, so that a stream record is part of the same atomic store write
  as the change it reports: `item_written` (from `item_store._item_write`, per item, inside
  any applier) and `table_changed` (from the catalog's appliers: a stream is born when its
  table's stream is enabled, and its shard closes when the stream is disabled or the table is
  deleted; a stream whose table entry was written by another applier gets its descriptor
  with its first record) and `partition_synced` (from a cluster partition's catalog sync: the
  partition's shard opens when it learns of the stream);
- the "stream_trim" redo record (`plan_trim`), which removes the records its proposer found
  older than the retention period (a bounded number per record, named by position, so that
  replicas trim alike whatever their clocks) and forgets disabled streams, and closed shards,
  whose records are all gone; and the "stream_roll" redo record, which closes a stream's open shard and
  opens its child (the shard lineage a partition split will use too);
- `wait_for_records`, which in-process consumers await instead of polling.

Recovery replays only entries above the store's applied LSN, and an entry's stream records
are written with its changes in one store write, so every committed change is reported
exactly once and no uncommitted change ever is. A write that leaves its item as it was
reports nothing, as in DynamoDB.

ApproximateCreationDateTime is the time the record was applied on this node (redo records
do not carry the proposer's clock); everything else in a record is derived from the log.
This module never answers a client and never opens files or sockets; the DynamoDB Streams
API over it lives in `keeldb.streams`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb.engine.database import redo_kind
from keeldb.model.keys import prefix_end
from keeldb.model.values import item_size

if TYPE_CHECKING:
    from keeldb.engine.database import Database
    from keeldb.engine.schema import Table

Item = dict[str, dict[str, Any]]

STATE_KEY = "streams"  # this module's entry in `Database.state`

# --- Store layout ---------------------------------------------------------------------------

STREAM_PREFIX = b"s"
DESCRIPTOR_TAG = b"d"
RECORD_TAG = b"r"
POSITION_BYTES = 8
SHARD_NUMBER_BYTES = 2

# --- Limits and formats ---------------------------------------------------------------------

# One log entry writes at most this many items (a transaction 100, a backup's load batch
# 1000).
RECORDS_PER_ENTRY_MAX = 1000
# Sequence numbers are decimal strings of at least 21 digits, as DynamoDB's are (the API
# model's SequenceNumber has length 21..40).
SEQUENCE_BASE = 10**20
# Positions are stored in POSITION_BYTES; every one of them keeps its sequence number at 21
# digits (10^20 + 2^64 < 10^21).
POSITION_MAX = (1 << (8 * POSITION_BYTES)) - 1
assert SEQUENCE_BASE + POSITION_MAX < 10**21
SHARD_ID_HEX_DIGITS = 8
EVENT_ID_HEX_DIGITS = 32  # DynamoDB's eventID is 32 hexadecimal digits

VIEW_KEYS_ONLY = "KEYS_ONLY"
VIEW_NEW_IMAGE = "NEW_IMAGE"
VIEW_OLD_IMAGE = "OLD_IMAGE"
VIEW_NEW_AND_OLD_IMAGES = "NEW_AND_OLD_IMAGES"

STATUS_ENABLED = "ENABLED"
STATUS_DISABLED = "DISABLED"

EVENT_INSERT = "INSERT"
EVENT_MODIFY = "MODIFY"
EVENT_REMOVE = "REMOVE"
_EVENT_CODES = (EVENT_INSERT, EVENT_MODIFY, EVENT_REMOVE)


def sequence_number(position: int) -> str:
    assert 0 <= position <= POSITION_MAX, position
    return str(SEQUENCE_BASE + position)


def position_of(sequence: str) -> int | None:
    """The position a sequence number names, or None if it is not one of ours."""
    if not sequence.isdigit() or not sequence.isascii():
        return None
    position = int(sequence) - SEQUENCE_BASE
    if position < 0 or position > POSITION_MAX:
        return None
    return position


def entry_position(lsn: int) -> int:
    """The first position of the records of log entry `lsn`."""
    return lsn * RECORDS_PER_ENTRY_MAX


# --- Stream descriptors ---------------------------------------------------------------------


@dataclass(slots=True)
class Shard:
    """One shard of a stream. Positions: records of the shard have opened < p < closed;
    every record at or before `trimmed` is gone. A shard that follows another (a rollover,
    later a partition split) names it as its parent, by number and by ShardId (the parent
    may be forgotten before its child)."""

    number: int
    parent: int | None
    opened: int
    closed: int | None
    trimmed: int
    created_ms: int
    closed_ms: int | None = None
    parent_id: str | None = None

    def to_record(self) -> list[Any]:
        return [
            self.number,
            self.parent,
            self.opened,
            self.closed,
            self.trimmed,
            self.created_ms,
            self.closed_ms,
            self.parent_id,
        ]

    @classmethod
    def from_record(cls, record: list[Any]) -> Shard:
        return cls(*record)


@dataclass(slots=True)
class Stream:
    """A stream of one table: born when its StreamSpecification is enabled, disabled when it
    is disabled or the table is deleted, forgotten when retention has passed after that."""

    table_name: str
    table_id: str
    label: str
    view_type: str
    key_schema: list[tuple[str, str]]  # (attribute name, KeyType)
    status: str
    created_ms: int  # CreationRequestDateTime
    disabled_ms: int | None
    table_arn: str
    shards: list[Shard] = field(default_factory=list)

    @property
    def arn(self) -> str:
        return f"{self.table_arn}/stream/{self.label}"

    @property
    def key(self) -> bytes:
        return stream_key(self.table_id, self.label)

    def to_record(self) -> dict[str, Any]:
        return {
            "table_name": self.table_name,
            "table_id": self.table_id,
            "label": self.label,
            "view_type": self.view_type,
            "key_schema": [list(k) for k in self.key_schema],
            "status": self.status,
            "created_ms": self.created_ms,
            "disabled_ms": self.disabled_ms,
            "table_arn": self.table_arn,
            "shards": [s.to_record() for s in self.shards],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Stream:
        return cls(
            table_name=record["table_name"],
            table_id=record["table_id"],
            label=record["label"],
            view_type=record["view_type"],
            key_schema=[(n, t) for n, t in record["key_schema"]],
            status=record["status"],
            created_ms=record["created_ms"],
            disabled_ms=record["disabled_ms"],
            table_arn=record["table_arn"],
            shards=[Shard.from_record(s) for s in record["shards"]],
        )

    def shard(self, number: int) -> Shard | None:
        for shard in self.shards:
            if shard.number == number:
                return shard
        return None

    def open_shard(self) -> Shard | None:
        for shard in self.shards:
            if shard.closed is None:
                return shard
        return None

    def shard_id(self, shard: Shard) -> str:
        """ "shardId-<creation millis, 20 digits>-<8 hex digits>", as DynamoDB's shard ids;
        the digits are a digest of the stream and the shard number, so every replica names a
        shard alike."""
        digest = hashlib.blake2b(
            self.key + shard.number.to_bytes(SHARD_NUMBER_BYTES, "big"),
            digest_size=SHARD_ID_HEX_DIGITS // 2,
        ).hexdigest()
        return f"shardId-{shard.created_ms:020d}-{digest}"

    def shard_by_id(self, shard_id: str) -> Shard | None:
        for shard in self.shards:
            if self.shard_id(shard) == shard_id:
                return shard
        return None


def stream_key(table_id: str, label: str) -> bytes:
    # A TableId is a UUID and a label an ISO 8601 time: neither holds a 0x00 byte, so the
    # key is prefix-free.
    return table_id.encode("utf-8") + b"\x00" + label.encode("ascii") + b"\x00"


def descriptor_key(key: bytes) -> bytes:
    return STREAM_PREFIX + DESCRIPTOR_TAG + key


def shard_prefix(key: bytes, shard: int) -> bytes:
    return STREAM_PREFIX + RECORD_TAG + key + shard.to_bytes(SHARD_NUMBER_BYTES, "big")


def record_key(key: bytes, shard: int, position: int) -> bytes:
    return shard_prefix(key, shard) + position.to_bytes(POSITION_BYTES, "big")


def list_streams(db: Database) -> list[Stream]:
    """Every stream this node knows, live or disabled, in store order."""
    start = STREAM_PREFIX + DESCRIPTOR_TAG
    return [
        Stream.from_record(msgpack.unpackb(value, raw=False))
        for _, value in db.store.scan(start, prefix_end(start))
    ]


def find_stream(db: Database, table_id: str, label: str) -> Stream | None:
    data = db.store.get(descriptor_key(stream_key(table_id, label)))
    if data is None:
        return None
    return Stream.from_record(msgpack.unpackb(data, raw=False))


def _descriptor_entry(stream: Stream) -> tuple[bytes, bytes]:
    return descriptor_key(stream.key), msgpack.packb(stream.to_record(), use_bin_type=True)


def _label_millis(label: str) -> int:
    """The creation time a label ("2026-11-27T12:34:56.789") names, in milliseconds."""
    import datetime

    stamp = datetime.datetime.strptime(label, "%Y-%m-%dT%H:%M:%S.%f")
    return int(stamp.replace(tzinfo=datetime.UTC).timestamp() * 1000)


# `catalog.CLOCK_STATE_KEY`: the catalog imports this module, so the key is repeated here
# (a test checks that both agree). The clock hook lets tests move time.
CLOCK_STATE_KEY = "clock"


def _now_ms(db: Database) -> int:
    clock = db.state.get(CLOCK_STATE_KEY)
    return int((clock() if clock is not None else time.time()) * 1000)


def table_changed(
    db: Database, lsn: int, before: Table | None, after: Table | None
) -> list[tuple[bytes, bytes]]:
    """The store puts that follow a catalog change of one table at `lsn` (create: `before`
    None; delete: `after` None): a new stream when a stream is enabled, a closed shard and a
    DISABLED status when it is disabled or the table goes. Written by the catalog's applier
    in the same store write as the table's entry."""
    puts: list[tuple[bytes, bytes]] = []
    was = before is not None and before.stream_enabled
    label_before = before.stream_label if before is not None else None
    now = after is not None and after.stream_enabled
    label_after = after.stream_label if after is not None else None
    if was and (not now or label_after != label_before):
        assert before is not None and label_before is not None
        old = find_stream(db, before.table_id, label_before)
        if old is not None and old.status == STATUS_ENABLED:
            old.status = STATUS_DISABLED
            old.disabled_ms = _now_ms(db)
            for shard in old.shards:
                if shard.closed is None:
                    shard.closed = entry_position(lsn)
                    shard.closed_ms = old.disabled_ms
            puts.append(_descriptor_entry(old))
        streams_state(db).open_shards.pop(stream_key(before.table_id, label_before), None)
    if now and (not was or label_after != label_before):
        assert after is not None
        stream = _new_stream(after, entry_position(lsn))
        puts.append(_descriptor_entry(stream))
        streams_state(db).open_shards[stream.key] = 0
    return puts


def partition_synced(db: Database, lsn: int, table: Table) -> list[tuple[bytes, bytes]]:
    """The store put that opens this partition's shard of `table`'s stream, when a cluster's
    catalog sync at `lsn` tells the partition of a streaming table whose stream it has no
    descriptor of yet (a new table, a newly enabled stream, a new label); nothing otherwise.

    Written by the sync's applier in the same store write as the table's entry, so every
    partition lists an open shard from the moment the stream is enabled, as DynamoDB lists a
    stream's shards, and no record of the stream can precede its shard. A repeated or
    replayed sync finds the descriptor and opens nothing. Closing stays with the partition
    leader's "stream_close" record (`keeldb.cluster.streams_route`), which records the
    proposer's time on every replica."""
    if not table.stream_enabled:
        return []
    assert table.stream_label is not None
    if find_stream(db, table.table_id, table.stream_label) is not None:
        return []
    stream = _new_stream(table, entry_position(lsn))
    streams_state(db).open_shards[stream.key] = 0
    return [_descriptor_entry(stream)]


def _new_stream(table: Table, opened: int) -> Stream:
    """The descriptor of a table's newly enabled stream, its one shard opened at `opened`."""
    label = table.stream_label
    assert label is not None and table.stream_view_type is not None
    key_schema = [(table.hash_key.name, "HASH")]
    if table.range_key is not None:
        key_schema.append((table.range_key.name, "RANGE"))
    created_ms = _label_millis(label)
    return Stream(
        table_name=table.name,
        table_id=table.table_id,
        label=label,
        view_type=table.stream_view_type,
        key_schema=key_schema,
        status=STATUS_ENABLED,
        created_ms=created_ms,
        disabled_ms=None,
        table_arn=table.arn,
        # One shard per partition; a single node holds one partition per table.
        shards=[Shard(0, None, opened, None, opened - 1, created_ms)],
    )


# --- Stream records -------------------------------------------------------------------------


@dataclass(slots=True)
class StreamsState:
    # The LSN whose items are being written and how many it has written so far: an
    # applier may write several items of one entry before it writes the store.
    entry_lsn: int = 0
    entry_records: int = 0
    # Consumers waiting in `wait_for_records`.
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    # Records written since the process started.
    records_written: int = 0
    # Stream key -> the number of its open shard, read from the descriptor at the first
    # write and kept in step by the appliers that open and close shards.
    open_shards: dict[bytes, int] = field(default_factory=dict)


def streams_state(db: Database) -> StreamsState:
    state = db.state.get(STATE_KEY)
    if state is None:
        state = db.state[STATE_KEY] = StreamsState()
    assert isinstance(state, StreamsState)
    return state


def _same_value(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """DynamoDB equality of two stored values. Stored numbers and binaries are canonical, so
    differing texts of a scalar mean differing values; only sets (in another order), and
    lists and maps holding them, need a closer look."""
    if a == b:
        return True
    ((type_a, x),) = a.items()
    ((type_b, y),) = b.items()
    if type_a != type_b:
        return False
    if type_a in _SET_TYPES:
        return len(x) == len(y) and set(x) == set(y)
    if type_a == "L":
        return len(x) == len(y) and all(_same_value(p, q) for p, q in zip(x, y, strict=True))
    if type_a == "M":
        return x.keys() == y.keys() and all(_same_value(x[k], y[k]) for k in x)
    return False


_SET_TYPES = frozenset(("SS", "NS", "BS"))


def _same_item(old: Item, new: Item) -> bool:
    """True if a write left the item as it was (DynamoDB reports no change then)."""
    if old is new or old == new:
        return True
    if old.keys() != new.keys():
        return False
    for name, value in old.items():
        other = new[name]
        if value != other and not _same_value(value, other):
            return False
    return True


def item_written(
    db: Database,
    table: Table,
    old: Item | None,
    old_size: int,
    new: Item | None,
    new_size: int,
    record: dict[str, Any],
    puts: list[tuple[bytes, bytes]],
) -> None:
    """Add the stream record of one item change to `puts`, the store write that makes the
    change. Called by the item store, per item, only for a table whose stream is enabled,
    with the old and new images and their sizes in bytes (0 for a missing image).

    The entry being applied is the one after the store's applied LSN: every applier records
    its LSN with its one store write, after the items it writes.
    """
    assert table.stream_enabled
    # The i-th item the entry writes takes position i, whether or not it changes anything:
    # an applier that is replayed after writing part of its items (each in a store write of
    # its own) finds those unchanged, and the rest must take the positions they had.
    state = streams_state(db)
    lsn = db.store.applied_lsn() + 1
    if state.entry_lsn != lsn:
        state.entry_lsn = lsn
        state.entry_records = 0
    index = state.entry_records
    assert index < RECORDS_PER_ENTRY_MAX, index
    state.entry_records += 1
    if old is None and new is None:
        return  # DeleteItem of a missing item: nothing changed.
    if old is not None and new is not None and _same_item(old, new):
        return  # The item was rewritten as it was.
    position = entry_position(lsn) + index
    label = table.stream_label
    assert label is not None
    view = table.stream_view_type
    image = new if new is not None else old
    assert image is not None
    keys = {name: image[name] for name in table.key_names}
    if old is None:
        event = 0
    elif new is None:
        event = 2
    else:
        event = 1
    new_image = new if view in (VIEW_NEW_IMAGE, VIEW_NEW_AND_OLD_IMAGES) else None
    old_image = old if view in (VIEW_OLD_IMAGE, VIEW_NEW_AND_OLD_IMAGES) else None
    # SizeBytes: the keys and the images the record carries.
    size = item_size(keys)
    if new_image is not None:
        size += new_size
    if old_image is not None:
        size += old_size
    # The userIdentity of a change the service made itself (a TTL deletion), else None.
    identity = _ttl_module().user_identity(record)
    value = [event, keys, new_image, old_image, size, _now_ms(db), identity]
    skey = stream_key(table.table_id, label)
    shard = state.open_shards.get(skey)
    if shard is None:
        shard = _load_open_shard(db, state, table, entry_position(lsn), puts)
    puts.append((record_key(skey, shard, position), msgpack.packb(value, use_bin_type=True)))
    state.records_written += 1
    if state.waiters:
        _wake(state)


def _load_open_shard(
    db: Database, state: StreamsState, table: Table, first: int, puts: list[tuple[bytes, bytes]]
) -> int:
    """The number of the open shard of `table`'s stream, read from its descriptor. A stream
    whose table entry was written without the catalog's appliers (so without a descriptor)
    gets its descriptor now, in the same store write as its first record at `first`."""
    assert table.stream_label is not None
    stream = find_stream(db, table.table_id, table.stream_label)
    if stream is None:
        stream = _new_stream(table, first - 1)
        puts.append(_descriptor_entry(stream))
    shard = stream.open_shard()
    assert shard is not None, stream.label  # an enabled stream always has an open shard
    state.open_shards[stream.key] = shard.number
    return shard.number


_ttl: Any = None


def _ttl_module() -> Any:
    """`keeldb.engine.ttl`, which imports the catalog, which imports this module: imported
    at the first use, then kept (an import statement costs microseconds per write)."""
    global _ttl
    if _ttl is None:
        import keeldb.engine.ttl

        _ttl = keeldb.engine.ttl
    return _ttl


def _wake(state: StreamsState) -> None:
    # The waiters run after the apply in progress returns, so after its store write.
    waiters, state.waiters = state.waiters, []
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(True)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One stored stream record, as read back."""

    position: int
    event_name: str
    keys: Item
    new_image: Item | None
    old_image: Item | None
    size_bytes: int
    created_ms: int
    user_identity: dict[str, str] | None


def decode_record(position: int, data: bytes) -> StreamRecord:
    event, keys, new_image, old_image, size, created_ms, identity = msgpack.unpackb(data, raw=False)
    return StreamRecord(
        position, _EVENT_CODES[event], keys, new_image, old_image, size, created_ms, identity
    )


def event_id(stream: Stream, shard: Shard, position: int) -> str:
    """A record's eventID: 32 hexadecimal digits, the same on every replica."""
    return hashlib.blake2b(
        stream.key + shard.number.to_bytes(SHARD_NUMBER_BYTES, "big") + position.to_bytes(8, "big"),
        digest_size=EVENT_ID_HEX_DIGITS // 2,
    ).hexdigest()


def read_records(
    db: Database, stream: Stream, shard: Shard, after: int, records_max: int
) -> list[StreamRecord]:
    """Up to `records_max` records of a shard with positions above `after`, in order."""
    assert records_max > 0, records_max
    prefix = shard_prefix(stream.key, shard.number)
    start = record_key(stream.key, shard.number, after + 1) if after >= 0 else prefix
    out: list[StreamRecord] = []
    for key, data in db.store.scan(start, prefix_end(prefix)):
        out.append(decode_record(int.from_bytes(key[len(prefix) :], "big"), data))
        if len(out) >= records_max:
            break
    return out


def last_position(db: Database, stream: Stream, shard: Shard) -> int | None:
    """The position of the newest record of a shard, or None if it holds none."""
    prefix = shard_prefix(stream.key, shard.number)
    for key, _ in db.store.scan(prefix, prefix_end(prefix), reverse=True):
        return int.from_bytes(key[len(prefix) :], "big")
    return None


def applied_position(db: Database) -> int:
    """The last position any record applied so far can hold: LATEST starts after it."""
    return entry_position(db.store.applied_lsn() + 1) - 1


async def wait_for_records(db: Database, timeout_seconds: float) -> bool:
    """Wait until a stream record is written (True) or `timeout_seconds` pass (False).

    A record counts once its entry is applied: the caller is woken after the store write
    that holds it. A caller that reads the streams after this returns sees the record.
    """
    assert timeout_seconds >= 0, timeout_seconds
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()
    state = streams_state(db)
    state.waiters.append(waiter)
    timer = loop.call_later(timeout_seconds, _time_out, waiter)
    try:
        return await waiter
    finally:
        timer.cancel()
        if not waiter.done():
            waiter.cancel()
        try:
            state.waiters.remove(waiter)
        except ValueError:
            pass


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


# --- Trimming -------------------------------------------------------------------------------

# Records one "stream_trim" record removes at most: its store write stays small.
TRIM_RECORDS_PER_ENTRY_MAX = 1000


def plan_trim(
    db: Database, before_ms: int, records_max: int = TRIM_RECORDS_PER_ENTRY_MAX
) -> dict[str, Any] | None:
    """The "stream_trim" redo record that removes the records created before `before_ms`
    (at most `records_max` of them, oldest first in each shard), forgets the closed shards
    and the disabled streams that outlived `before_ms` once their records are gone; None if
    there is nothing to do.

    The proposer decides from its own view (record times are read from its clock), and the
    record names positions, shards and streams: its applier does not look at any time, so
    every replica trims exactly the same records."""
    assert 0 < records_max <= TRIM_RECORDS_PER_ENTRY_MAX, records_max
    budget = records_max
    cuts: list[list[Any]] = []
    forget_shards: list[list[Any]] = []
    forget_streams: list[list[Any]] = []
    for stream in list_streams(db):
        stream_empty = True
        remaining = len(stream.shards)
        for shard in stream.shards:
            upto = None
            shard_empty = True
            for record in _records_after(db, stream, shard, shard.trimmed):
                if record.created_ms >= before_ms or budget <= 0:
                    shard_empty = False
                    break
                upto = record.position
                budget -= 1
            if upto is not None:
                cuts.append([stream.table_id, stream.label, shard.number, upto])
            stream_empty = stream_empty and shard_empty
            expired = shard.closed_ms is not None and shard.closed_ms < before_ms
            if shard_empty and expired and remaining > 1:
                # A closed shard whose records are all gone is forgotten, as DynamoDB drops
                # shards older than the retention period from DescribeStream.
                forget_shards.append([stream.table_id, stream.label, shard.number])
                remaining -= 1
        disabled = stream.status == STATUS_DISABLED
        if disabled and stream_empty and (stream.disabled_ms or 0) < before_ms:
            forget_streams.append([stream.table_id, stream.label])
        if budget <= 0:
            break
    if not cuts and not forget_shards and not forget_streams:
        return None
    return {
        "kind": "stream_trim",
        "cuts": cuts,
        "forget_shards": forget_shards,
        "forget_streams": forget_streams,
    }


def trim_pending(db: Database, before_ms: int) -> bool:
    """True if a trim at `before_ms` would change anything (read-only, for the trimmer)."""
    return plan_trim(db, before_ms) is not None


def _records_after(db: Database, stream: Stream, shard: Shard, after: int) -> Any:
    prefix = shard_prefix(stream.key, shard.number)
    start = record_key(stream.key, shard.number, after + 1) if after >= 0 else prefix
    for key, data in db.store.scan(start, prefix_end(prefix)):
        yield decode_record(int.from_bytes(key[len(prefix) :], "big"), data)


@redo_kind("stream_trim")
def apply_stream_trim(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Remove the records up to each cut, move the shards' trim points, forget the shards and
    streams the record names. Streams or shards gone since it was planned are skipped."""
    if lsn <= db.store.applied_lsn():
        return  # Replayed at recovery, and already in the store.
    streams: dict[bytes, Stream] = {}

    def stream_of(table_id: str, label: str) -> Stream | None:
        key = stream_key(table_id, label)
        if key not in streams:
            found = find_stream(db, table_id, label)
            if found is None:
                return None
            streams[key] = found
        return streams[key]

    deletes: list[bytes] = []
    for table_id, label, number, upto in record["cuts"]:
        stream = stream_of(table_id, label)
        shard = None if stream is None else stream.shard(number)
        if stream is None or shard is None or upto <= shard.trimmed:
            continue
        start = record_key(stream.key, number, shard.trimmed + 1)
        end = record_key(stream.key, number, upto + 1)
        deletes.extend(key for key, _ in db.store.scan(start, end))
        shard.trimmed = upto
    for table_id, label, number in record["forget_shards"]:
        stream = stream_of(table_id, label)
        shard = None if stream is None else stream.shard(number)
        if stream is not None and shard is not None and shard.closed is not None:
            stream.shards.remove(shard)
    forgotten = set()
    for table_id, label in record["forget_streams"]:
        stream = stream_of(table_id, label)
        if stream is not None and stream.status == STATUS_DISABLED:
            deletes.append(descriptor_key(stream.key))
            forgotten.add(stream.key)
            prefix = STREAM_PREFIX + RECORD_TAG + stream.key
            deletes.extend(key for key, _ in db.store.scan(prefix, prefix_end(prefix)))
    puts = [_descriptor_entry(s) for key, s in streams.items() if key not in forgotten]
    db.store.write(puts, deletes, applied_lsn=lsn)


# --- Shard rollover -------------------------------------------------------------------------


def roll_record(table_id: str, label: str, now_ms: int) -> dict[str, Any]:
    """The redo record that closes a stream's open shard and opens its child, at `now_ms`
    (decided by the proposer, so that every replica records the same times)."""
    return {"kind": "stream_roll", "table_id": table_id, "label": label, "now_ms": now_ms}


def roll_pending(db: Database, now_ms: int, shard_ms: int) -> list[tuple[str, str]]:
    """(TableId, label) of every enabled stream whose open shard is `shard_ms` old."""
    assert shard_ms > 0, shard_ms
    due = []
    for stream in list_streams(db):
        shard = stream.open_shard()
        live = stream.status == STATUS_ENABLED and shard is not None
        if live and shard is not None and now_ms - shard.created_ms >= shard_ms:
            due.append((stream.table_id, stream.label))
    return due


@redo_kind("stream_roll")
def apply_stream_roll(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Close the open shard at this entry's position and open a child after it. A stream
    disabled (or a table deleted) since the roll was proposed only moves the LSN."""
    if lsn <= db.store.applied_lsn():
        return  # Replayed at recovery, and already in the store.
    stream = find_stream(db, record["table_id"], record["label"])
    parent = None if stream is None else stream.open_shard()
    if stream is None or parent is None or stream.status != STATUS_ENABLED:
        db.store.write([], [], applied_lsn=lsn)
        return
    position = entry_position(lsn)
    parent.closed = position
    parent.closed_ms = record["now_ms"]
    number = max(s.number for s in stream.shards) + 1
    assert number < 1 << (8 * SHARD_NUMBER_BYTES), number
    child = Shard(
        number,
        parent.number,
        position,
        None,
        position - 1,
        record["now_ms"],
        None,
        stream.shard_id(parent),
    )
    stream.shards.append(child)
    db.store.write([_descriptor_entry(stream)], [], applied_lsn=lsn)
    streams_state(db).open_shards[stream.key] = number
