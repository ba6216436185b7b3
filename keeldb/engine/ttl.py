"""Time to Live: UpdateTimeToLive, DescribeTimeToLive, and the sweeper that deletes expired items.

This module owns:

- a table's TTL setting, kept in the catalog record as `Table.extra["ttl"]`
  (`{"enabled": bool, "attribute": str | None, "changed_at": seconds}`), and its redo record
  "update_time_to_live", whose applier merges the setting into the table's catalog entry at
  its place in the log (through the catalog's own applier: one atomic store write);
- the two operations, with DynamoDB's checks in DynamoDB's order: member types, constraint
  violations ("N validation errors detected: ..."), the table, the state checks ("TimeToLive is
  already enabled" ...), and only then the one-change-per-interval rule;
- the expiry rule (`expiry_seconds`, `is_expired`): an item expires when its TTL attribute is
  a top-level Number holding epoch seconds before now, and not more than five years before
  now (the Time to Live page of the DynamoDB Developer Guide); any other value is ignored;
- the sweep (`sweep`): one bounded pass over the tables whose TTL is enabled, which proposes a
  normal "delete" redo record, marked `"ttl": True`, for each expired item. Each delete is
  decided on the item's LATEST view (pending after-image, else committed) and proposed with
  no await in between, so a write that a client made before the delete is ordered before it
  and keeps the item alive; a write after it simply follows it in the log;
- `TtlSweeper`, the background task that runs `sweep` every `interval_seconds` in the node's
  event loop, and stops cleanly (it finishes the batch in flight, then returns).

Streams report a deletion made here with the service identity: `user_identity(record)` gives
the `userIdentity` of a redo record, or None for a client's write.

Decisions where DynamoDB's behaviour is not observable: DescribeTimeToLive never reports
ENABLING or DISABLING. DynamoDB documents those states, yet reports the settled status within
a second of the change (and the change takes effect here at once: the sweeper reads the
setting at each pass). A disabled table forgets its attribute, as DynamoDB's does.

The appliers never read a clock; only the operations and the sweeper do (through the
catalog's clock hook, so that tests can move time). This module never opens files or sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from keeldb.engine import catalog
from keeldb.engine.catalog import current_time, existing_table
from keeldb.engine.database import Body, Database, operation, redo_kind
from keeldb.engine.item_store import Item, decode_stored, items_state, latest_item, propose_write
from keeldb.engine.schema import STATUS_CREATING, STATUS_DELETING, Table
from keeldb.model.errors import ResourceInUseException, ValidationException
from keeldb.model.keys import index_bounds, key_after
from keeldb.model.request_shapes import Violations, check_table_reference, check_types

log = logging.getLogger("keeldb.ttl")

STATE_KEY = "ttl"  # this module's entry in `Database.state`
EXTRA_KEY = "ttl"  # the TTL setting's entry in `Table.extra`
TTL_RECORD_FLAG = "ttl"  # a "delete" redo record with this flag set is a TTL deletion

# --- Limits (names carry their unit last; each says where it comes from) --------------------

ATTRIBUTE_NAME_LENGTH_MIN = 1  # TimeToLiveSpecification.AttributeName (API reference)
ATTRIBUTE_NAME_LENGTH_MAX = 255
# "It can take up to one hour for the change to fully process. Any additional
# UpdateTimeToLive calls for the same table during this one hour duration result in a
# ValidationException" (UpdateTimeToLive, API reference).
TTL_UPDATE_INTERVAL_SECONDS = 3600
# Items whose expiry is more than five years in the past are never deleted (Developer Guide,
# Time to Live); a year here is 365 days.
TTL_PAST_WINDOW_SECONDS = 5 * 365 * 86400
# How often the sweeper looks for expired items. DynamoDB deletes them "typically within a
# few days"; a minute keeps a local node tidy, and `keeldb serve --ttl-interval` changes it.
TTL_SWEEP_INTERVAL_SECONDS = 60.0
# One batch reads at most this many items of one table, then yields to the event loop ...
TTL_SCAN_ITEMS_PER_BATCH = 1000
# ... and proposes at most this many deletes, concurrently, before it reads further.
TTL_DELETES_PER_BATCH = 100
# One pass reads at most this many items in all; the next pass resumes where it stopped.
TTL_SCAN_ITEMS_PER_PASS = 100_000
# How long `TtlSweeper.stop` lets the batch in flight finish before cancelling it.
TTL_STOP_SECONDS_MAX = 5.0

# DynamoDB Streams' userIdentity of a TTL deletion (Developer Guide, "Time to Live and
# DynamoDB Streams").
SERVICE_USER_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}

INVALID_TABLE_STATES = (STATUS_CREATING, STATUS_DELETING)

UPDATE_TTL_SHAPE: Any = {
    "TableName": "S",
    "TimeToLiveSpecification": {"Enabled": "Z", "AttributeName": "S"},
}
DESCRIBE_TTL_SHAPE: Any = {"TableName": "S"}

# --- The setting ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TtlSetting:
    """A table's TTL setting; a table never configured is disabled, changed at no time."""

    enabled: bool = False
    attribute: str | None = None
    changed_at: float | None = None

    def to_record(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "attribute": self.attribute, "changed_at": self.changed_at}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TtlSetting:
        return cls(record["enabled"], record["attribute"], record["changed_at"])


def ttl_setting(table: Table) -> TtlSetting:
    record = table.extra.get(EXTRA_KEY)
    return TtlSetting() if record is None else TtlSetting.from_record(record)


@redo_kind("update_time_to_live")
def apply_update_time_to_live(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Merge the new setting into the table's `extra` as it stands at this point of the log,
    so that other entries of `extra` written before it are kept."""
    current = catalog.get_table_by_id(db, record["table_id"])
    changes: dict[str, Any] = {}
    if current is not None and current.name == record["name"]:
        extra = dict(current.extra)
        extra[EXTRA_KEY] = record["setting"]
        changes["extra"] = extra
    # The catalog's applier skips a replayed record, and for a table deleted meanwhile only
    # moves the LSN.
    catalog.apply_update_table(
        db,
        lsn,
        {
            "kind": "update_table",
            "name": record["name"],
            "table_id": record["table_id"],
            "changes": changes,
        },
    )


# --- The operations -------------------------------------------------------------------------


def _serving_table(db: Database, name: str, action: str) -> Table:
    table = existing_table(db, name)
    if table.status == STATUS_CREATING and action == "update":
        raise ResourceInUseException(
            "Attempt to change a resource which is still in use: Table "
            f"{table.name} is being created"
        )
    if table.status in INVALID_TABLE_STATES and action == "describe":
        raise ValidationException(
            f"Cannot describe time to live while table is in {table.status} state: "
            f"Current table state is {table.status}"
        )
    return table


@operation("UpdateTimeToLive")
async def update_time_to_live(db: Database, body: Body) -> Body:
    body = check_types(body, UPDATE_TTL_SHAPE)
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    spec = body.get("TimeToLiveSpecification")
    if v.not_null(spec, "timeToLiveSpecification"):
        assert spec is not None
        v.not_null(spec.get("Enabled"), "timeToLiveSpecification.enabled")
        attribute = spec.get("AttributeName")
        if v.not_null(attribute, "timeToLiveSpecification.attributeName"):
            v.length(
                attribute,
                "timeToLiveSpecification.attributeName",
                ATTRIBUTE_NAME_LENGTH_MIN,
                ATTRIBUTE_NAME_LENGTH_MAX,
            )
    v.raise_if_any()
    assert spec is not None
    enabled: bool = spec["Enabled"]
    attribute_name: str = spec["AttributeName"]
    state = catalog.catalog_state(db)
    async with state.lock:
        table = _serving_table(db, body["TableName"], "update")
        current = ttl_setting(table)
        # The state checks come before the interval check, as DynamoDB's do.
        if enabled and current.enabled:
            if current.attribute == attribute_name:
                raise ValidationException("TimeToLive is already enabled")
            raise ValidationException(
                "TimeToLive is active on a different AttributeName: current AttributeName is "
                f"{current.attribute}"
            )
        if not enabled and not current.enabled:
            raise ValidationException("TimeToLive is already disabled")
        if not enabled and current.attribute != attribute_name:
            raise ValidationException(
                "TimeToLive is active on a different AttributeName: current AttributeName is "
                f"{current.attribute}"
            )
        now = current_time(db)
        if current.changed_at is not None and now - current.changed_at < (
            TTL_UPDATE_INTERVAL_SECONDS
        ):
            raise ValidationException(
                "Time to live has been modified multiple times within a fixed interval"
            )
        setting = TtlSetting(enabled, attribute_name if enabled else None, now)
        await db.propose(
            {
                "kind": "update_time_to_live",
                "name": table.name,
                "table_id": table.table_id,
                "setting": setting.to_record(),
            }
        )
    return {"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attribute_name}}


@operation("DescribeTimeToLive")
async def describe_time_to_live(db: Database, body: Body) -> Body:
    body = check_types(body, DESCRIBE_TTL_SHAPE)
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    v.raise_if_any()
    table = _serving_table(db, body["TableName"], "describe")
    setting = ttl_setting(table)
    if not setting.enabled:
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}
    return {
        "TimeToLiveDescription": {
            "TimeToLiveStatus": "ENABLED",
            "AttributeName": setting.attribute,
        }
    }


# --- Expiry ---------------------------------------------------------------------------------


def expiry_seconds(item: Item, attribute: str) -> Decimal | None:
    """The expiry time an item's TTL attribute holds, or None if it holds none: only a
    top-level Number counts (a string, a set or a list of numbers is ignored)."""
    value = item.get(attribute)
    if value is None or "N" not in value:
        return None
    try:
        return Decimal(value["N"])
    except InvalidOperation:
        return None  # Stored numbers are validated; this is only belt and braces.


def is_expired(item: Item, attribute: str, now: float) -> bool:
    """True if the item has expired at `now` and is young enough for TTL to delete it."""
    expiry = expiry_seconds(item, attribute)
    if expiry is None:
        return False
    instant = Decimal(now)
    return instant - TTL_PAST_WINDOW_SECONDS <= expiry < instant


def user_identity(record: dict[str, Any]) -> dict[str, str] | None:
    """The DynamoDB Streams userIdentity of a redo record: the service's for a TTL deletion,
    None for a client's write."""
    if record.get("kind") == "delete" and record.get(TTL_RECORD_FLAG):
        return dict(SERVICE_USER_IDENTITY)
    return None


# --- The sweep ------------------------------------------------------------------------------


@dataclass(slots=True)
class SweepState:
    # TableId -> store key where that table's next batch starts (absent: from the start).
    cursors: dict[str, bytes] = field(default_factory=dict)
    # The table the next pass starts with: the one after the table where the last pass ran
    # out of budget, so that one big table cannot keep the others waiting.
    first_table_id: str | None = None
    # What the sweeper has done since the process started.
    deleted_items: int = 0
    scanned_items: int = 0
    passes: int = 0


def sweep_state(db: Database) -> SweepState:
    state = db.state.get(STATE_KEY)
    if state is None:
        state = db.state[STATE_KEY] = SweepState()
    assert isinstance(state, SweepState)
    return state


@dataclass(frozen=True, slots=True)
class SweepResult:
    scanned_items: int
    deleted_items: int
    finished: bool  # every table with TTL enabled was read to its end in this pass


def _tables_with_ttl(db: Database) -> list[tuple[Table, str]]:
    tables = []
    for table in catalog.list_tables(db):
        setting = ttl_setting(table)
        if setting.enabled and table.status not in INVALID_TABLE_STATES:
            assert setting.attribute is not None
            tables.append((table, setting.attribute))
    return tables


def _read_batch(
    db: Database, table: Table, attribute: str, start: bytes, now: float
) -> tuple[list[bytes], int, bytes | None]:
    """Read one batch of committed items from `start`: (keys of expired items, items read,
    where the next batch starts or None at the end of the table). No await: the store is not
    changed while it is read."""
    _, end = index_bounds(table.table_id, 0)
    expired: list[bytes] = []
    scanned = 0
    for key, data in db.store.scan(start, end):
        scanned += 1
        item, _ = decode_stored(data)
        if is_expired(item, attribute, now):
            expired.append(key)
        if scanned >= TTL_SCAN_ITEMS_PER_BATCH or len(expired) >= TTL_DELETES_PER_BATCH:
            return expired, scanned, key_after(key)
    return expired, scanned, None


async def _expire(db: Database, table_id: str, key: bytes, attribute: str, now: float) -> bool:
    """Delete the item at `key` if it is still expired on its latest view; True if proposed.

    Everything before `propose_write` appends to the overlay is synchronous, so no client
    write can slip between this check and the delete's place in the log.
    """
    table = catalog.get_table_by_id(db, table_id)
    if table is None:
        return False  # Deleted since the batch was read.
    setting = ttl_setting(table)
    if not setting.enabled or setting.attribute != attribute:
        return False  # TTL disabled (or set to another attribute) since the batch was read.
    if key in items_state(db).held:
        return False  # Held by a prepared transaction: a later pass looks at it again.
    item, _ = latest_item(db, key)
    if item is None or not is_expired(item, attribute, now):
        return False  # Deleted or rewritten by a client since it was read: leave it.
    record = {
        "kind": "delete",
        "table": table.table_id,
        "name": table.name,
        "key": key,
        TTL_RECORD_FLAG: True,
    }
    # TTL deletions consume no write capacity (Developer Guide), so nothing is metered.
    await propose_write(db, key, None, 0, record)
    return True


async def sweep(db: Database, *, scan_items_max: int = TTL_SCAN_ITEMS_PER_PASS) -> SweepResult:
    """One pass: for each table with TTL enabled, read from its cursor in bounded batches and
    delete the expired items, until every table is read to its end or `scan_items_max` items
    were read. The clock is read once per batch."""
    assert scan_items_max > 0, scan_items_max
    state = sweep_state(db)
    scanned = deleted = 0
    finished = True
    tables = _tables_with_ttl(db)
    live_ids = [table.table_id for table, _ in tables]
    if state.first_table_id in live_ids:
        first = live_ids.index(state.first_table_id)
        tables = tables[first:] + tables[:first]
    state.first_table_id = None
    for position, (table, attribute) in enumerate(tables):
        if scanned >= scan_items_max:
            finished = False
            state.first_table_id = table.table_id  # not reached: the next pass starts here
            break
        start_of_table, _ = index_bounds(table.table_id, 0)
        while True:
            if scanned >= scan_items_max:
                finished = False
                # This table was read in part: the next pass starts with the next table,
                # and comes back to this one (from its cursor) after the others.
                state.first_table_id = tables[(position + 1) % len(tables)][0].table_id
                break
            start = state.cursors.get(table.table_id, start_of_table)
            now = current_time(db)
            keys, count, next_start = _read_batch(db, table, attribute, start, now)
            scanned += count
            if keys:
                outcomes = await asyncio.gather(
                    *(_expire(db, table.table_id, key, attribute, now) for key in keys),
                    return_exceptions=True,
                )
                deleted += sum(1 for outcome in outcomes if outcome is True)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
            else:
                await asyncio.sleep(0)  # Let requests run between batches.
            if next_start is None:
                state.cursors.pop(table.table_id, None)
                break
            state.cursors[table.table_id] = next_start
    # Forget the cursors of tables that were deleted or whose TTL was disabled.
    for table_id in [t for t in state.cursors if t not in live_ids]:
        del state.cursors[table_id]
    state.scanned_items += scanned
    state.deleted_items += deleted
    state.passes += 1
    return SweepResult(scanned, deleted, finished)


class TtlSweeper:
    """Runs `sweep` every `interval_seconds` on the running event loop until stopped.

    A failed pass (the log refusing a proposal, say) is logged and retried at the next
    interval: TTL deletion is best effort, as in DynamoDB.
    """

    def __init__(
        self,
        db: Database,
        interval_seconds: float = TTL_SWEEP_INTERVAL_SECONDS,
        *,
        on_pass: Callable[[SweepResult], None] | None = None,
    ) -> None:
        assert interval_seconds > 0, interval_seconds
        self.db = db
        self.interval_seconds = interval_seconds
        self._on_pass = on_pass
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        assert self._task is None, "started twice"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="keeldb-ttl")

    async def stop(self) -> None:
        """Let the batch in flight finish (up to TTL_STOP_SECONDS_MAX), then return."""
        task = self._task
        if task is None or task.done():
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=TTL_STOP_SECONDS_MAX)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pause(self) -> None:
        """Sleep for one interval, or until `stop` wakes us. A timer sets the event (rather
        than `asyncio.wait_for`, which can swallow a cancellation on Python 3.11)."""
        wake = self._wake = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(self.interval_seconds, wake.set)
        try:
            await wake.wait()
        finally:
            timer.cancel()

    async def _run(self) -> None:
        while not self._stopping:
            await self._pause()
            if self._stopping:
                return
            try:
                result = await sweep(self.db)
            except Exception:
                log.exception("time to live sweep failed; retrying in %s s", self.interval_seconds)
                continue
            if result.deleted_items:
                log.info(
                    "time to live: %d expired items deleted (%d read)",
                    result.deleted_items,
                    result.scanned_items,
                )
            if self._on_pass is not None:
                self._on_pass(result)
