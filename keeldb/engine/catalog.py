"""The control plane: the catalog of tables and the DynamoDB operations that read and change it.

This module owns:

- the catalog's durable form: one store entry per table, under `CATALOG_PREFIX`, holding the
  table's `Table.to_record()` packed with msgpack;
- the catalog's redo records ("create_table", "update_table", "delete_table") and their
  appliers: each makes its record's effect one atomic store write, except "delete_table",
  whose range delete of the table's items and removal of its entry are two writes made
  crash-safe by their LSNs (see `apply_delete_table`);
- the in-memory cache of tables (`Database.state["catalog"]`), loaded from the store the
  first time a database touches its catalog and then kept in step by the appliers;
- CreateTable, DescribeTable, ListTables, DeleteTable, UpdateTable, TagResource,
  UntagResource, ListTagsOfResource, DescribeEndpoints and DescribeLimits, with DynamoDB's
  validation order and messages: first the request-model layer (member types, then every
  constraint violation reported at once as "N validation errors detected: ..."), then the
  service layer (one "One or more parameter values were invalid: ..." message at a time);
- `find_table` / `get_table` / `get_table_by_arn` / `get_table_by_id`, through which item
  operations find their table (by name or ARN when serving, by TableId when applying).

Every value a record carries (creation time, TableId, stream label ...) is decided while the
request is validated; an applier never reads a clock, never draws a UUID and never fails on
client input. This module never opens files or sockets and never answers for items.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from keeldb.engine import streams
from keeldb.engine.database import Body, Database, operation, redo_kind
from keeldb.engine.schema import (
    BILLING_PAY_PER_REQUEST,
    BILLING_PROVISIONED,
    STATUS_ACTIVE,
    STATUS_CREATING,
    STATUS_DELETING,
    STATUS_UPDATING,
    KeyAttribute,
    SecondaryIndex,
    Table,
)
from keeldb.model.errors import (
    AccessDeniedException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.model.keys import table_bounds, table_prefix
from keeldb.model.limits import (
    GLOBAL_SECONDARY_INDEXES_MAX,
    INDEX_NAME_LENGTH_MAX,
    INDEX_NAME_LENGTH_MIN,
    LIST_TABLES_LIMIT_MAX,
    LOCAL_SECONDARY_INDEXES_MAX,
    PROJECTED_ATTRIBUTES_MAX,
    TABLE_NAME_LENGTH_MAX,
    TABLE_NAME_LENGTH_MIN,
    TABLES_PER_REGION_MAX,
    TAG_KEY_LENGTH_MAX,
    TAG_VALUE_LENGTH_MAX,
    TAGS_PER_RESOURCE_MAX,
)
from keeldb.model.request_shapes import (
    Shape,
    Violations,
    check_table_reference,
    check_types,
)

STATE_KEY = "catalog"  # this module's entry in `Database.state`
# Optional entries of `Database.state` that the embedding process may set:
CLOCK_STATE_KEY = "clock"  # a zero-argument callable returning seconds since the epoch
ENDPOINT_STATE_KEY = "endpoint_address"  # "host:port" that DescribeEndpoints reports

# The catalog's entries start with the byte "c"; every item key starts with
# `keeldb.model.keys.table_prefix`, whose first byte is "t". The two ranges can never meet,
# and the assertion below keeps it so if either side changes.
CATALOG_PREFIX = b"c"
assert not table_prefix("00000000-0000-0000-0000-000000000000").startswith(CATALOG_PREFIX)

# --- Limits (names carry their unit last; each says where it comes from) --------------------

RESOURCE_ARN_LENGTH_MAX = 1283  # ResourceArn of TagResource and friends.
ATTRIBUTE_NAME_LENGTH_MIN = 1  # KeySchemaElement / AttributeDefinition AttributeName.
ATTRIBUTE_NAME_LENGTH_MAX = 255
KEY_SCHEMA_ELEMENTS_MAX = 2  # one HASH and at most one RANGE element (tables and local indexes)
NON_KEY_ATTRIBUTES_PER_INDEX_MAX = 20  # Projection.NonKeyAttributes list length (model)
CAPACITY_UNITS_MAX = 1_000_000_000_000  # Above this DynamoDB answers "... is out of bounds".
DECREASES_PER_DAY_FREE = 4  # Provisioned-throughput decreases allowed any time in a UTC day,
DECREASE_INTERVAL_SECONDS = 3600  # then one more per hour after the last decrease.
SECONDS_PER_DAY = 86400
# Tags per ListTagsOfResource page. DynamoDB answers a table's whole tag set (up to 50) in one
# page, and clients rely on it: most never pass NextToken back.
TAGS_PAGE_SIZE = 50
ENDPOINT_CACHE_MINUTES = 1440  # DescribeEndpoints' CachePeriodInMinutes, as DynamoDB's.
# DescribeLimits: DynamoDB's default quotas for provisioned capacity.
ACCOUNT_READ_CAPACITY_UNITS_MAX = 80000
ACCOUNT_WRITE_CAPACITY_UNITS_MAX = 80000
TABLE_READ_CAPACITY_UNITS_MAX = 40000
TABLE_WRITE_CAPACITY_UNITS_MAX = 40000
# The throughput an on-demand table is ready for from the start, which DescribeTable reports
# as its WarmThroughput (DynamoDB's initial on-demand throughput).
WARM_READ_UNITS_ON_DEMAND = 12000
WARM_WRITE_UNITS_ON_DEMAND = 4000
TABLE_CLASS_UPDATES_MAX = 2  # TableClass changes allowed per table ...
TABLE_CLASS_UPDATE_WINDOW_SECONDS = 30 * 86400  # ... in any 30 days.
REFER_TO_GUIDE = (
    "Refer to the Amazon DynamoDB Developer Guide for current limits and how to request higher "
    "limits."
)

INVALID = "One or more parameter values were invalid: "
BILLING_MODES = [BILLING_PROVISIONED, BILLING_PAY_PER_REQUEST]
KEY_TYPES = ["HASH", "RANGE"]
KEY_ATTRIBUTE_TYPES = ["B", "N", "S"]
PROJECTION_TYPES = ["ALL", "INCLUDE", "KEYS_ONLY"]
STREAM_VIEW_TYPES = ["NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY"]
SSE_TYPES = ["AES256", "KMS"]
TABLE_CLASSES = ["STANDARD", "STANDARD_INFREQUENT_ACCESS"]
# Tag keys and values: letters, white space and numbers, plus + - = . _ : / @ (Tagging
# restrictions in DynamoDB).
TAG_TEXT_RE = re.compile(r"[\w\s+\-=._:/@]*\Z")
UPDATE_TABLE_MEMBERS = (
    "ProvisionedThroughput, BillingMode, UpdateStreamEnabled, GlobalSecondaryIndexUpdates, "
    "SSESpecification, ReplicaUpdates, MultiAccountReplicaReady, ReplicaTransitRoleArn, "
    "MultiRegionConsistency, DeletionProtectionEnabled, OnDemandThroughput, WarmThroughput "
    "or TableClass"
)

# --- The catalog: cache, durable form, public lookups ---------------------------------------


@dataclass(slots=True)
class CatalogState:
    tables: dict[str, Table]  # by table name
    # The same tables by TableId: every applied item write looks its table up here.
    by_id: dict[str, Table] = field(default_factory=dict)
    # Catalog changes are validated against the latest view and proposed one at a time, so
    # that two concurrent changes of one table can never both pass validation.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def catalog_key(name: str) -> bytes:
    return CATALOG_PREFIX + name.encode("utf-8")


def catalog_state(db: Database) -> CatalogState:
    state: CatalogState | None = db.state.get(STATE_KEY)
    if state is None:
        tables: dict[str, Table] = {}
        end = CATALOG_PREFIX[:-1] + bytes([CATALOG_PREFIX[-1] + 1])
        for _key, value in db.store.scan(CATALOG_PREFIX, end):
            table = Table.from_record(msgpack.unpackb(value, raw=False))
            tables[table.name] = table
        state = CatalogState(tables, {t.table_id: t for t in tables.values()})
        db.state[STATE_KEY] = state
    return state


def table_arn(db: Database, name: str) -> str:
    return f"arn:aws:dynamodb:{db.region}:{db.account_id}:table/{name}"


def find_table(db: Database, name: str) -> Table | None:
    """The table called `name` (or whose ARN is `name`), or None."""
    if name.startswith("arn:"):
        parsed = _parse_table_arn(db, name)
        if parsed is None:
            return None
        name = parsed
    return catalog_state(db).tables.get(name)


def find_index(
    db: Database, table_name: str, index_name: str
) -> tuple[Table, SecondaryIndex] | None:
    """The table called `table_name` and its secondary index `index_name`, unless either is
    missing or the index is being dropped."""
    table = find_table(db, table_name)
    index = None if table is None else table.index(index_name)
    if table is None or index is None or index.status == STATUS_DELETING:
        return None
    return table, index


def get_table(db: Database, name: str) -> Table:
    """The table item operations act on; DynamoDB's error when it does not exist."""
    table = find_table(db, name)
    if table is None:
        raise ResourceNotFoundException("Requested resource not found")
    return table


def get_table_by_arn(db: Database, arn: str) -> Table:
    table = find_table(db, arn) if arn.startswith("arn:") else None
    if table is None:
        raise ResourceNotFoundException("Requested resource not found")
    return table


def get_table_by_id(db: Database, table_id: str) -> Table | None:
    """The live table with this TableId (a deleted and re-created table has a new one)."""
    return catalog_state(db).by_id.get(table_id)


def catalog_lock(db: Database) -> asyncio.Lock:
    """The lock under which catalog changes are validated and proposed. Background work that
    changes a table (the index backfill and drop) proposes under it too, so that no change is
    ever validated against a view that a record already in flight is about to change."""
    return catalog_state(db).lock


def table_entry(table: Table) -> tuple[bytes, bytes]:
    """The store entry (key, value) of a table, for appliers of other modules (the index
    backfill) that change a table in the same store write as their own keys."""
    return catalog_key(table.name), msgpack.packb(table.to_record())


def remember(db: Database, table: Table) -> None:
    """Update the cache after an applier outside this module wrote `table_entry(table)`."""
    state = catalog_state(db)
    current = state.tables.get(table.name)
    assert current is not None and current.table_id == table.table_id, table.name
    state.tables[table.name] = table
    state.by_id[table.table_id] = table


def list_tables(db: Database) -> list[Table]:
    """Every table, sorted by name."""
    tables = catalog_state(db).tables
    return [tables[name] for name in sorted(tables)]


def _parse_table_arn(db: Database, arn: str) -> str | None:
    """The table name of one of this node's table ARNs, or None."""
    prefix = f"arn:aws:dynamodb:{db.region}:{db.account_id}:table/"
    if not arn.startswith(prefix):
        return None
    name = arn[len(prefix) :]
    if "/" in name or not name:
        return None
    return name


def current_time(db: Database) -> float:
    clock: Callable[[], float] | None = db.state.get(CLOCK_STATE_KEY)
    return clock() if clock is not None else time.time()


def _table_stats(db: Database, table: Table) -> tuple[int, int]:
    """(ItemCount, TableSizeBytes), kept by the item store."""
    from keeldb.engine import item_store

    stats: Callable[[Database, Table], tuple[int, int]] | None = getattr(
        item_store, "table_stats", None
    )
    if stats is None:
        return 0, 0
    return stats(db, table)


def _index_stats(db: Database, table: Table, index: SecondaryIndex) -> tuple[int, int]:
    """(ItemCount, IndexSizeBytes) of a secondary index, once the item store keeps them."""
    from keeldb.engine import item_store

    stats: Callable[[Database, Table, SecondaryIndex], tuple[int, int]] | None = getattr(
        item_store, "index_stats", None
    )
    if stats is None:
        return 0, 0
    return stats(db, table, index)


# --- Redo records and their appliers --------------------------------------------------------


def _already_applied(db: Database, lsn: int) -> bool:
    # Recovery may hand an applier a record the store already reflects; applying it twice
    # would be wrong for a create, so such a record is skipped.
    return lsn <= db.store.applied_lsn()


def _record_table(db: Database, lsn: int, record: dict[str, Any]) -> Table | None:
    """The table an update or delete record names; None when the record is to be skipped:
    already applied, or its table was deleted (and maybe re-created) after the change was
    validated, so that it belongs to a table that no longer exists. Only the LSN moves then."""
    if _already_applied(db, lsn):
        return None
    current = catalog_state(db).tables.get(record["name"])
    if current is None or current.table_id != record["table_id"]:
        db.store.write([], [], lsn)
        return None
    return current


@redo_kind("create_table")
def apply_create_table(db: Database, lsn: int, record: dict[str, Any]) -> None:
    if _already_applied(db, lsn):
        return
    table = Table.from_record(record["table"])
    state = catalog_state(db)
    assert table.name not in state.tables, table.name
    assert table.table_id not in state.by_id, table.table_id
    puts = [(catalog_key(table.name), msgpack.packb(record["table"]))]
    db.store.write(puts + streams.table_changed(db, lsn, None, table), [], lsn)
    state.tables[table.name] = table
    state.by_id[table.table_id] = table


@redo_kind("update_table")
def apply_update_table(db: Database, lsn: int, record: dict[str, Any]) -> None:
    current = _record_table(db, lsn, record)
    if current is None:
        return
    state = catalog_state(db)
    merged = current.to_record()
    merged.update(record["changes"])
    table = Table.from_record(merged)
    assert table.table_id == current.table_id
    puts = [(catalog_key(table.name), msgpack.packb(merged))]
    db.store.write(puts + streams.table_changed(db, lsn, current, table), [], lsn)
    state.tables[table.name] = table
    state.by_id[table.table_id] = table


@redo_kind("delete_table")
def apply_delete_table(db: Database, lsn: int, record: dict[str, Any]) -> None:
    current = _record_table(db, lsn, record)
    if current is None:
        return
    state = catalog_state(db)
    start, end = table_bounds(current.table_id)
    # Two store calls, made crash-safe by their LSNs: the range delete records lsn - 1 (every
    # earlier record is applied, this one not yet), so a crash between the calls replays this
    # record, whose range delete is idempotent; the catalog entry goes with the record's LSN.
    db.store.delete_range(start, end, lsn - 1)
    db.store.write(streams.table_changed(db, lsn, current, None), [catalog_key(current.name)], lsn)
    del state.tables[current.name]
    del state.by_id[current.table_id]


async def _propose(db: Database, record: dict[str, Any]) -> None:
    await db.propose(record)


# --- The request-model layer ----------------------------------------------------------------


KEY_SCHEMA_SHAPE: Shape = [{"AttributeName": "S", "KeyType": "S"}]
THROUGHPUT_SHAPE: Shape = {"ReadCapacityUnits": "L", "WriteCapacityUnits": "L"}
PROJECTION_SHAPE: Shape = {"ProjectionType": "S", "NonKeyAttributes": ["S"]}
TAGS_SHAPE: Shape = [{"Key": "S", "Value": "S"}]
STREAM_SHAPE: Shape = {"StreamEnabled": "Z", "StreamViewType": "S"}
SSE_SHAPE: Shape = {"Enabled": "Z", "SSEType": "S", "KMSMasterKeyId": "S"}
ON_DEMAND_SHAPE: Shape = {"MaxReadRequestUnits": "L", "MaxWriteRequestUnits": "L"}
WARM_SHAPE: Shape = {"ReadUnitsPerSecond": "L", "WriteUnitsPerSecond": "L"}
ATTRIBUTE_DEFINITIONS_SHAPE: Shape = [{"AttributeName": "S", "AttributeType": "S"}]
INDEX_SHAPE: Shape = {
    "IndexName": "S",
    "KeySchema": KEY_SCHEMA_SHAPE,
    "Projection": PROJECTION_SHAPE,
    "ProvisionedThroughput": THROUGHPUT_SHAPE,
}
CREATE_TABLE_SHAPE: Shape = {
    "AttributeDefinitions": ATTRIBUTE_DEFINITIONS_SHAPE,
    "TableName": "S",
    "KeySchema": KEY_SCHEMA_SHAPE,
    "LocalSecondaryIndexes": [INDEX_SHAPE],
    "GlobalSecondaryIndexes": [INDEX_SHAPE],
    "BillingMode": "S",
    "ProvisionedThroughput": THROUGHPUT_SHAPE,
    "StreamSpecification": STREAM_SHAPE,
    "SSESpecification": SSE_SHAPE,
    "Tags": TAGS_SHAPE,
    "TableClass": "S",
    "DeletionProtectionEnabled": "Z",
    "OnDemandThroughput": ON_DEMAND_SHAPE,
    "WarmThroughput": WARM_SHAPE,
}
UPDATE_TABLE_SHAPE: Shape = {
    "TableName": "S",
    "AttributeDefinitions": ATTRIBUTE_DEFINITIONS_SHAPE,
    "BillingMode": "S",
    "ProvisionedThroughput": THROUGHPUT_SHAPE,
    "GlobalSecondaryIndexUpdates": [
        {
            "Create": INDEX_SHAPE,
            "Update": {
                "IndexName": "S",
                "ProvisionedThroughput": THROUGHPUT_SHAPE,
                "OnDemandThroughput": ON_DEMAND_SHAPE,
                "WarmThroughput": WARM_SHAPE,
            },
            "Delete": {"IndexName": "S"},
        }
    ],
    "StreamSpecification": STREAM_SHAPE,
    "SSESpecification": SSE_SHAPE,
    "TableClass": "S",
    "DeletionProtectionEnabled": "Z",
    "OnDemandThroughput": ON_DEMAND_SHAPE,
    "WarmThroughput": WARM_SHAPE,
}
TABLE_NAME_SHAPE: Shape = {"TableName": "S"}
LIST_TABLES_SHAPE: Shape = {"ExclusiveStartTableName": "S", "Limit": "L"}
TAG_RESOURCE_SHAPE: Shape = {"ResourceArn": "S", "Tags": TAGS_SHAPE}
UNTAG_RESOURCE_SHAPE: Shape = {"ResourceArn": "S", "TagKeys": ["S"]}
LIST_TAGS_SHAPE: Shape = {"ResourceArn": "S", "NextToken": "S"}


def _member(path: str, index: int) -> str:
    return f"{path}.{index + 1}.member"


def _members(v: Violations, items: list[Any], path: str) -> Iterator[tuple[str, Any]]:
    """(member path, element) of a request list; a null element is a violation."""
    for i, item in enumerate(items):
        member = _member(path, i)
        if v.not_null(item, member):
            yield member, item


def _check_table_name(v: Violations, name: str | None) -> None:
    """A table name as CreateTable takes it: 3-255 characters of [a-zA-Z0-9_.-]."""
    if v.not_null(name, "tableName"):
        v.length(name, "tableName", TABLE_NAME_LENGTH_MIN, TABLE_NAME_LENGTH_MAX)
        v.pattern(name, "tableName")


def _check_throughput(v: Violations, throughput: dict[str, Any] | None, path: str) -> None:
    if throughput is None:
        return
    for member in ("WriteCapacityUnits", "ReadCapacityUnits"):
        sub = f"{path}.{member[:1].lower()}{member[1:]}"
        value = throughput.get(member)
        if v.not_null(value, sub):
            v.at_least(value, sub, 1)


def _key_schema_text(elements: Sequence[dict[str, Any] | None]) -> list[str]:
    def text(value: str | None) -> str:
        return "null" if value is None else value  # as Java prints a missing member

    return [
        "null"
        if e is None
        else f"KeySchemaElement(attributeName={text(e.get('AttributeName'))}, "
        f"keyType={text(e.get('KeyType'))})"
        for e in elements
    ]


def _check_key_schema(
    v: Violations, schema: list[dict[str, Any]] | None, path: str, *, elements_max: int | None = 2
) -> None:
    if not v.not_null(schema, path):
        return
    assert schema is not None
    if len(schema) < 1:
        v.add([], path, "Member must have length greater than or equal to 1")
    if elements_max is not None and len(schema) > elements_max:
        v.add(
            _key_schema_text(schema),
            path,
            f"Member must have length less than or equal to {elements_max}",
        )
    for member, element in _members(v, schema, path):
        _check_attribute_name(v, element, member)
        key_type = element.get("KeyType")
        if v.not_null(key_type, f"{member}.keyType"):
            v.enum(key_type, f"{member}.keyType", KEY_TYPES)


def _check_attribute_name(v: Violations, element: dict[str, Any], member: str) -> None:
    """The AttributeName member of a key schema element or an attribute definition."""
    name = element.get("AttributeName")
    if v.not_null(name, f"{member}.attributeName"):
        v.length(
            name, f"{member}.attributeName", ATTRIBUTE_NAME_LENGTH_MIN, ATTRIBUTE_NAME_LENGTH_MAX
        )


def _check_attribute_definitions(
    v: Violations, definitions: list[dict[str, Any]] | None, *, required: bool
) -> None:
    if definitions is None:
        if required:
            v.not_null(None, "attributeDefinitions")
        return
    for member, definition in _members(v, definitions, "attributeDefinitions"):
        _check_attribute_name(v, definition, member)
        attribute_type = definition.get("AttributeType")
        if v.not_null(attribute_type, f"{member}.attributeType"):
            v.enum(attribute_type, f"{member}.attributeType", KEY_ATTRIBUTE_TYPES)


def _check_index_model(v: Violations, index: dict[str, Any], path: str, *, is_global: bool) -> None:
    name = index.get("IndexName")
    if v.not_null(name, f"{path}.indexName"):
        v.pattern(name, f"{path}.indexName")
        v.length(name, f"{path}.indexName", INDEX_NAME_LENGTH_MIN, INDEX_NAME_LENGTH_MAX)
    # A global index's key may have several partition and sort key attributes (DynamoDB's
    # multi-attribute keys), so its length is left to the service layer.
    _check_key_schema(
        v,
        index.get("KeySchema"),
        f"{path}.keySchema",
        elements_max=None if is_global else KEY_SCHEMA_ELEMENTS_MAX,
    )
    projection = index.get("Projection")
    if v.not_null(projection, f"{path}.projection"):
        assert projection is not None
        v.enum(
            projection.get("ProjectionType"), f"{path}.projection.projectionType", PROJECTION_TYPES
        )
        non_key = projection.get("NonKeyAttributes")
        v.length(
            non_key, f"{path}.projection.nonKeyAttributes", 1, NON_KEY_ATTRIBUTES_PER_INDEX_MAX
        )
        for i, name in enumerate(non_key or []):
            v.not_null(name, f"{path}.projection.nonKeyAttributes.{i + 1}.member")
    if is_global:
        _check_throughput(v, index.get("ProvisionedThroughput"), f"{path}.provisionedThroughput")


def _check_stream_model(v: Violations, spec: dict[str, Any] | None) -> None:
    if spec is None:
        return
    v.not_null(spec.get("StreamEnabled"), "streamSpecification.streamEnabled")
    v.enum(spec.get("StreamViewType"), "streamSpecification.streamViewType", STREAM_VIEW_TYPES)


def _check_units_model(
    v: Violations, spec: dict[str, Any] | None, path: str, members: Sequence[str], low: int
) -> None:
    if spec is None:
        return
    for member in members:
        v.at_least(spec.get(member), f"{path}.{member[:1].lower()}{member[1:]}", low)


def _check_sse_model(v: Violations, spec: dict[str, Any] | None) -> None:
    if spec is not None:
        v.enum(spec.get("SSEType"), "sSESpecification.sSEType", SSE_TYPES)


def _check_tags_model(v: Violations, tags: list[dict[str, Any]] | None, path: str) -> None:
    if tags is None:
        return
    for member, tag in _members(v, tags, path):
        # Lengths are checked with the characters, by the service (`_check_tags`): DynamoDB
        # answers a 129-character key with "The Tag Key provided is invalid".
        v.not_null(tag.get("Key"), f"{member}.key")
        v.not_null(tag.get("Value"), f"{member}.value")


# --- The service layer: rules shared by several operations ---------------------------------


def _check_capacity_bounds(throughput: dict[str, Any]) -> None:
    for member in ("ReadCapacityUnits", "WriteCapacityUnits"):
        value = throughput[member]
        if value > CAPACITY_UNITS_MAX:
            raise ValidationException(f"Given value {value} for {member} is out of bounds")


def _check_capacity_quota(
    db: Database, throughput: dict[str, Any], index: str | None = None
) -> None:
    """The per-table (and per-index) provisioned capacity quota that DescribeLimits reports."""
    for member, limit in (
        ("ReadCapacityUnits", TABLE_READ_CAPACITY_UNITS_MAX),
        ("WriteCapacityUnits", TABLE_WRITE_CAPACITY_UNITS_MAX),
    ):
        value = throughput[member]
        if value <= limit:
            continue
        if index is None:
            raise LimitExceededException(
                f"The requested {member}, {value}, is above the per table maximum for the "
                f"account in {db.region}. Per table maximum: {limit}. {REFER_TO_GUIDE}"
            )
        raise LimitExceededException(
            f"The requested {member} for index {index}, {value}, is above the per index maximum "
            f"for the account in {db.region}. Per index maximum: {limit}. {REFER_TO_GUIDE}"
        )


def _reserved_capacity(tables: dict[str, Table]) -> tuple[int, int]:
    """Read and write units the account's provisioned tables and their indexes reserve."""
    read = write = 0
    for table in tables.values():
        if table.billing_mode != BILLING_PROVISIONED:
            continue
        read += table.read_capacity_units
        write += table.write_capacity_units
        for index in table.global_indexes:
            read += index.read_capacity_units
            write += index.write_capacity_units
    return read, write


def _check_account_capacity(db: Database, table: Table) -> None:
    if table.billing_mode != BILLING_PROVISIONED:
        return
    reserved_read, reserved_write = _reserved_capacity(catalog_state(db).tables)
    wanted_read, wanted_write = _reserved_capacity({table.name: table})
    for member, reserved, wanted, limit in (
        ("ReadCapacityUnits", reserved_read, wanted_read, ACCOUNT_READ_CAPACITY_UNITS_MAX),
        ("WriteCapacityUnits", reserved_write, wanted_write, ACCOUNT_WRITE_CAPACITY_UNITS_MAX),
    ):
        if reserved + wanted > limit:
            raise LimitExceededException(
                f"This request would have caused the {member} limit to be exceeded for the "
                f"account in {db.region}. Current {member} reserved by the account: {reserved}. "
                f"Limit: {limit}. Requested: {wanted}. {REFER_TO_GUIDE}"
            )


ON_DEMAND_MEMBERS = (
    ("MaxReadRequestUnits", "on_demand_read_units", TABLE_READ_CAPACITY_UNITS_MAX, "Read"),
    ("MaxWriteRequestUnits", "on_demand_write_units", TABLE_WRITE_CAPACITY_UNITS_MAX, "Write"),
)
ON_DEMAND_CLEAR = -1  # UpdateTable's value that removes a MaxRead/WriteRequestUnits setting


def _on_demand_changes(
    db: Database, spec: dict[str, Any], billing_mode: str, *, updating: bool
) -> dict[str, Any]:
    """The record fields an OnDemandThroughput sets, merged member by member."""
    changes: dict[str, Any] = {}
    for member, field_name, limit, kind in ON_DEMAND_MEMBERS:
        value = spec.get(member)
        if value is None:
            continue
        if billing_mode == BILLING_PROVISIONED:
            raise ValidationException(
                INVALID + f"{member} for OnDemandThroughput cannot be specified when the table "
                "BillingMode is PROVISIONED"
            )
        if updating and value == ON_DEMAND_CLEAR:
            changes[field_name] = None
            continue
        if value < 1:
            raise ValidationException(
                INVALID + f"Requested {member} for OnDemandThroughput for table is outside of "
                "valid range"
            )
        if value > limit:
            raise LimitExceededException(
                f"Subscriber limit exceeded: Requested {member} for OnDemandThroughput for table "
                f"exceeds TableMax{kind}CapacityUnits of the account in region {db.region}"
            )
        changes[field_name] = value
    return changes


WARM_MEMBERS = (
    ("ReadUnitsPerSecond", "warm_read_units", "ReadCapacityUnits"),
    ("WriteUnitsPerSecond", "warm_write_units", "WriteCapacityUnits"),
)


def _warm_at_create(spec: dict[str, Any] | None, billing_mode: str, body: Body) -> dict[str, int]:
    """The WarmThroughput a new table starts with: what its capacity mode gives, or more."""
    throughput = body.get("ProvisionedThroughput") or {}
    warm = {
        "warm_read_units": throughput.get("ReadCapacityUnits", WARM_READ_UNITS_ON_DEMAND),
        "warm_write_units": throughput.get("WriteCapacityUnits", WARM_WRITE_UNITS_ON_DEMAND),
    }
    for member, field_name, capacity_member in WARM_MEMBERS:
        value = (spec or {}).get(member)
        if value is None:
            continue
        if value < warm[field_name]:
            if billing_mode == BILLING_PAY_PER_REQUEST:
                raise ValidationException(
                    INVALID + f"Requested {member} for WarmThroughput for table is lower than "
                    "initial throughput for OnDemand. See: https://docs.aws.amazon.com/"
                    "amazondynamodb/latest/developerguide/warm-throughput.html"
                )
            raise ValidationException(
                INVALID + f"Requested {member} for WarmThroughput for table is lower than "
                f"{capacity_member} of ProvisionedThroughput"
            )
        warm[field_name] = value
    return warm


def _warm_changes(spec: dict[str, Any], table: Table) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for member, field_name, _capacity in WARM_MEMBERS:
        value = spec.get(member)
        if value is None:
            continue
        if value < getattr(table, field_name):
            raise ValidationException(
                INVALID + f"Requested {member} for WarmThroughput for table is lower than current "
                "WarmThroughput, decreasing WarmThroughput is not supported"
            )
        changes[field_name] = value
    return changes


def _check_tags(tags: list[dict[str, Any]], existing: dict[str, str]) -> dict[str, str]:
    """The resource's tags after adding `tags` to `existing`; DynamoDB's rules on both."""
    seen: set[str] = set()
    for tag in tags:
        key, value = tag["Key"], tag["Value"]
        if not key or len(key) > TAG_KEY_LENGTH_MAX or not TAG_TEXT_RE.match(key):
            raise ValidationException(f"The Tag Key provided is invalid, Key: {key}")
        if key.lower().startswith("aws:"):
            raise ValidationException(f"Tag Key cannot be prefixed with aws:, Key: {key}")
        if len(value) > TAG_VALUE_LENGTH_MAX or not TAG_TEXT_RE.match(value):
            raise ValidationException(f"The Tag Value provided is invalid, Value: {value}")
        if key in seen:
            raise ValidationException(
                f"Duplicate Tag Keys provided as input: Duplicate Tag Key found {key}"
            )
        seen.add(key)
    merged = dict(existing)
    for tag in tags:
        merged[tag["Key"]] = tag["Value"]
    if len(merged) > TAGS_PER_RESOURCE_MAX:
        raise ValidationException(
            "Number of Tags exceed the current limit for the provided ResourceArn"
        )
    return merged


def _stream_label(now: float, previous: str | None) -> str:
    """A new LatestStreamLabel: the creation time in ISO 8601 with milliseconds, as
    DynamoDB's; moved on by a millisecond if it would repeat the previous label."""
    millis = int(now * 1000)
    while True:
        stamp = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
        label = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}"
        if previous is None or label > previous:
            return label
        millis += 1


def _utc_day(now: float) -> int:
    return int(now // SECONDS_PER_DAY)


def _decreases_today(table: Table, now: float) -> int:
    return table.decreases_count if table.decreases_day == _utc_day(now) else 0


# --- Descriptions ---------------------------------------------------------------------------


def _key_schema(hash_key: KeyAttribute, range_key: KeyAttribute | None) -> list[Body]:
    schema: list[Body] = [{"AttributeName": hash_key.name, "KeyType": "HASH"}]
    if range_key is not None:
        schema.append({"AttributeName": range_key.name, "KeyType": "RANGE"})
    return schema


def _projection(index: SecondaryIndex) -> Body:
    projection: Body = {"ProjectionType": index.projection_type}
    if index.non_key_attributes:
        projection["NonKeyAttributes"] = list(index.non_key_attributes)
    return projection


def _throughput(table: Table, now: float) -> Body:
    throughput: Body = {}
    if table.last_increase_at is not None:
        throughput["LastIncreaseDateTime"] = table.last_increase_at
    if table.last_decrease_at is not None:
        throughput["LastDecreaseDateTime"] = table.last_decrease_at
    throughput["NumberOfDecreasesToday"] = _decreases_today(table, now)
    throughput["ReadCapacityUnits"] = table.read_capacity_units
    throughput["WriteCapacityUnits"] = table.write_capacity_units
    return throughput


def _billing_summary(table: Table, *, with_date: bool = True) -> Body | None:
    if table.pay_per_request_since is None:
        return None
    summary: Body = {"BillingMode": table.billing_mode}
    if with_date:
        summary["LastUpdateToPayPerRequestDateTime"] = table.pay_per_request_since
    return summary


def describe(
    db: Database,
    table: Table,
    *,
    status: str | None = None,
    throughput_of: Table | None = None,
    creating: bool = False,
) -> Body:
    """The TableDescription DynamoDB returns for `table`.

    `status` overrides TableStatus (CreateTable answers CREATING, UpdateTable UPDATING);
    `throughput_of` names the table whose ProvisionedThroughput and WarmThroughput to report
    (UpdateTable answers with the capacity in force before the change, as DynamoDB does);
    `creating` leaves out what CreateTable's answer lacks (the billing-mode date and the warm
    throughput).
    """
    now = current_time(db)
    item_count, size_bytes = _table_stats(db, table)
    desc: Body = {
        "AttributeDefinitions": [
            {"AttributeName": a.name, "AttributeType": a.type} for a in table.attribute_definitions
        ],
        "TableName": table.name,
        "KeySchema": _key_schema(table.hash_key, table.range_key),
        "TableStatus": status or table.status,
        "CreationDateTime": table.created_at,
        "ProvisionedThroughput": _throughput(throughput_of or table, now),
        "TableSizeBytes": size_bytes,
        "ItemCount": item_count,
        "TableArn": table.arn,
        "TableId": table.table_id,
    }
    summary = _billing_summary(table, with_date=not creating)
    if summary is not None:
        desc["BillingModeSummary"] = summary
    if table.local_indexes:
        desc["LocalSecondaryIndexes"] = []
        for index in table.local_indexes:
            count, size = _index_stats(db, table, index)
            desc["LocalSecondaryIndexes"].append(
                {
                    "IndexName": index.name,
                    "KeySchema": _key_schema(index.hash_key, index.range_key),
                    "Projection": _projection(index),
                    "IndexSizeBytes": size,
                    "ItemCount": count,
                    "IndexArn": index.arn,
                }
            )
    if table.global_indexes:
        desc["GlobalSecondaryIndexes"] = []
        for index in table.global_indexes:
            count, size = _index_stats(db, table, index)
            desc["GlobalSecondaryIndexes"].append(
                {
                    "IndexName": index.name,
                    "KeySchema": _key_schema(index.hash_key, index.range_key),
                    "Projection": _projection(index),
                    "IndexStatus": status if status == STATUS_CREATING else index.status,
                    "ProvisionedThroughput": {
                        "NumberOfDecreasesToday": 0,
                        "ReadCapacityUnits": index.read_capacity_units,
                        "WriteCapacityUnits": index.write_capacity_units,
                    },
                    "IndexSizeBytes": size,
                    "ItemCount": count,
                    "IndexArn": index.arn,
                }
            )
            if index.status == STATUS_CREATING and not creating:
                # A global index added by UpdateTable is backfilled from the table's items.
                desc["GlobalSecondaryIndexes"][-1]["Backfilling"] = True
            if not creating:
                index_on_demand = table.billing_mode == BILLING_PAY_PER_REQUEST
                desc["GlobalSecondaryIndexes"][-1]["WarmThroughput"] = {
                    "ReadUnitsPerSecond": WARM_READ_UNITS_ON_DEMAND
                    if index_on_demand
                    else index.read_capacity_units,
                    "WriteUnitsPerSecond": WARM_WRITE_UNITS_ON_DEMAND
                    if index_on_demand
                    else index.write_capacity_units,
                    "Status": "ACTIVE",
                }
    if table.stream_enabled:
        desc["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": table.stream_view_type,
        }
    if table.stream_label is not None:
        desc["LatestStreamLabel"] = table.stream_label
        desc["LatestStreamArn"] = table.stream_arn
    on_demand: Body = {}
    if table.on_demand_read_units is not None:
        on_demand["MaxReadRequestUnits"] = table.on_demand_read_units
    if table.on_demand_write_units is not None:
        on_demand["MaxWriteRequestUnits"] = table.on_demand_write_units
    if on_demand:
        desc["OnDemandThroughput"] = on_demand
    if table.sse_enabled:
        desc["SSEDescription"] = {
            "Status": "ENABLED",
            "SSEType": table.sse_type,
            "KMSMasterKeyArn": table.kms_master_key_id,
        }
    if table.table_class is not None:
        desc["TableClassSummary"] = {"TableClass": table.table_class}
    desc["DeletionProtectionEnabled"] = table.deletion_protection
    if "restore_summary" in table.extra:
        # A table restored from a backup or a point in time (keeldb.engine.backups).
        desc["RestoreSummary"] = table.extra["restore_summary"]
    if not creating:
        warm = throughput_of or table
        desc["WarmThroughput"] = {
            "ReadUnitsPerSecond": warm.warm_read_units,
            "WriteUnitsPerSecond": warm.warm_write_units,
            "Status": "ACTIVE",
        }
    return desc


# --- CreateTable ----------------------------------------------------------------------------


def _check_create_model(body: Body) -> None:
    v = Violations()
    _check_attribute_definitions(v, body.get("AttributeDefinitions"), required=True)
    _check_table_name(v, body.get("TableName"))
    _check_throughput(v, body.get("ProvisionedThroughput"), "provisionedThroughput")
    _check_key_schema(v, body.get("KeySchema"), "keySchema")
    for member, path, is_global in (
        ("LocalSecondaryIndexes", "localSecondaryIndexes", False),
        ("GlobalSecondaryIndexes", "globalSecondaryIndexes", True),
    ):
        for index_path, index in _members(v, body.get(member) or [], path):
            _check_index_model(v, index, index_path, is_global=is_global)
    v.enum(body.get("BillingMode"), "billingMode", BILLING_MODES)
    _check_stream_model(v, body.get("StreamSpecification"))
    _check_sse_model(v, body.get("SSESpecification"))
    _check_tags_model(v, body.get("Tags"), "tags")
    v.enum(body.get("TableClass"), "tableClass", TABLE_CLASSES)
    _check_units_model(
        v,
        body.get("WarmThroughput"),
        "warmThroughput",
        ("ReadUnitsPerSecond", "WriteUnitsPerSecond"),
        1,
    )
    v.raise_if_any()


def _check_billing_at_create(body: Body) -> str:
    """The table's billing mode; DynamoDB's rules on BillingMode and ProvisionedThroughput."""
    mode = body.get("BillingMode")
    throughput = body.get("ProvisionedThroughput")
    if mode == BILLING_PAY_PER_REQUEST:
        if throughput is not None:
            raise ValidationException(
                INVALID + "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified "
                "when BillingMode is PAY_PER_REQUEST"
            )
        return BILLING_PAY_PER_REQUEST
    if throughput is None:
        if mode is None:
            # An omitted BillingMode means PROVISIONED, DynamoDB's original (and default) mode.
            raise ValidationException("No provisioned throughput specified for the table")
        raise ValidationException(
            INVALID + "ReadCapacityUnits and WriteCapacityUnits must both be specified when "
            "BillingMode is PROVISIONED"
        )
    _check_capacity_bounds(throughput)
    return BILLING_PROVISIONED


def _key_names(schema: list[dict[str, Any]]) -> list[str]:
    return [element["AttributeName"] for element in schema]


def _check_table_keys(body: Body, defined: dict[str, str]) -> None:
    schema = body["KeySchema"]
    keys = _key_names(schema)
    names = list(defined)
    if len(keys) == 2:
        if any(k not in defined for k in keys) or (keys[0] == keys[1] and len(defined) == 1):
            raise ValidationException(
                "Invalid KeySchema: Some index key attribute have no definition"
            )
    elif keys[0] not in defined:
        raise ValidationException(
            INVALID + "Some index key attributes are not defined in AttributeDefinitions. "
            f"Keys: [{', '.join(keys)}], AttributeDefinitions: [{', '.join(names)}]"
        )
    _check_key_order(schema, keys)


def _check_key_order(schema: list[dict[str, Any]], keys: list[str]) -> None:
    """The rules a key schema obeys whether it is a table's or an index's: two distinct
    attributes, HASH first, RANGE second."""
    if len(keys) == 2 and keys[0] == keys[1]:
        raise ValidationException(
            "Both the Hash Key and the Range Key element in the KeySchema have the same name"
        )
    if schema[0]["KeyType"] != "HASH":
        raise ValidationException(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type"
        )
    if len(schema) == 2 and schema[1]["KeyType"] != "RANGE":
        raise ValidationException(
            "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type"
        )


def _check_index_keys(index: dict[str, Any], defined: dict[str, str]) -> None:
    """The key-schema rules an index shares with its table."""
    schema = index["KeySchema"]
    keys = _key_names(schema)
    if any(k not in defined for k in keys):
        raise ValidationException(
            INVALID + "Some index key attributes are not defined in AttributeDefinitions. "
            f"Keys: [{', '.join(keys)}], AttributeDefinitions: [{', '.join(defined)}]"
        )
    _check_key_order(schema, keys)


def _check_projection(index: dict[str, Any]) -> None:
    projection = index["Projection"]
    projection_type = projection.get("ProjectionType")
    if projection_type is None:
        raise ValidationException(INVALID + "Unknown ProjectionType: null")
    non_key = projection.get("NonKeyAttributes")
    if non_key is not None and projection_type != "INCLUDE":
        raise ValidationException(
            INVALID + f"ProjectionType is {projection_type}, but NonKeyAttributes is specified"
        )
    if non_key is None and projection_type == "INCLUDE":
        raise ValidationException(
            INVALID + "ProjectionType is INCLUDE, but NonKeyAttributes is not specified"
        )
    seen: set[str] = set()
    for name in non_key or []:
        if name in seen:
            raise ValidationException(INVALID + f"Duplicate element in NonKeyAttributes: {name}")
        seen.add(name)


def _build_index(
    db: Database,
    table_name: str,
    index: dict[str, Any],
    defined: dict[str, str],
    *,
    is_global: bool,
    billing_mode: str,
) -> SecondaryIndex:
    schema = index["KeySchema"]
    hash_name = schema[0]["AttributeName"]
    range_key = None
    if len(schema) == 2:
        range_name = schema[1]["AttributeName"]
        range_key = KeyAttribute(range_name, defined[range_name])
    throughput = index.get("ProvisionedThroughput") or {}
    projection = index["Projection"]
    return SecondaryIndex(
        name=index["IndexName"],
        hash_key=KeyAttribute(hash_name, defined[hash_name]),
        range_key=range_key,
        projection_type=projection["ProjectionType"],
        non_key_attributes=tuple(projection.get("NonKeyAttributes") or ()),
        arn=f"{table_arn(db, table_name)}/index/{index['IndexName']}",
        is_global=is_global,
        status=STATUS_ACTIVE,
        read_capacity_units=throughput.get("ReadCapacityUnits", 0)
        if billing_mode == BILLING_PROVISIONED
        else 0,
        write_capacity_units=throughput.get("WriteCapacityUnits", 0)
        if billing_mode == BILLING_PROVISIONED
        else 0,
    )


def _check_indexes(
    db: Database, body: Body, defined: dict[str, str], billing_mode: str
) -> tuple[tuple[SecondaryIndex, ...], tuple[SecondaryIndex, ...]]:
    table_name = body["TableName"]
    table_keys = _key_names(body["KeySchema"])
    local = body.get("LocalSecondaryIndexes")
    global_ = body.get("GlobalSecondaryIndexes")
    seen_names: set[str] = set()
    local_out: list[SecondaryIndex] = []
    global_out: list[SecondaryIndex] = []
    projected = 0
    if local is not None:
        if not local:
            raise ValidationException(INVALID + "List of LocalSecondaryIndexes is empty")
        if len(table_keys) != 2:
            raise ValidationException(
                INVALID + "Table KeySchema does not have a range key, which is required when "
                "specifying a LocalSecondaryIndex"
            )
        for index in local:
            name = index["IndexName"]
            _check_index_keys(index, defined)
            if len(index["KeySchema"]) != 2:
                raise ValidationException(
                    INVALID + f"Index KeySchema does not have a range key for index: {name}"
                )
            index_hash = index["KeySchema"][0]["AttributeName"]
            if index_hash != table_keys[0]:
                raise ValidationException(
                    INVALID + "Index KeySchema does not have the same leading hash key as table "
                    f"KeySchema for index: {name}. index hash key: {index_hash}, "
                    f"table hash key: {table_keys[0]}"
                )
            _check_projection(index)
            if name in seen_names:
                raise ValidationException(INVALID + f"Duplicate index name: {name}")
            seen_names.add(name)
            projected += len(index["Projection"].get("NonKeyAttributes") or ())
            local_out.append(
                _build_index(
                    db, table_name, index, defined, is_global=False, billing_mode=billing_mode
                )
            )
        if len(local) > LOCAL_SECONDARY_INDEXES_MAX:
            raise ValidationException(
                INVALID + "Number of LocalSecondaryIndexes exceeds per-table limit of "
                f"{LOCAL_SECONDARY_INDEXES_MAX}"
            )
    if global_ is not None:
        if not global_:
            raise ValidationException(INVALID + "List of GlobalSecondaryIndexes is empty")
        for index in global_:
            name = index["IndexName"]
            if len(index["KeySchema"]) > KEY_SCHEMA_ELEMENTS_MAX:
                raise ValidationException(
                    INVALID + "Global secondary indexes whose key has more than one partition "
                    f"key or sort key attribute are not supported by this server; index: {name}"
                )
            _check_index_keys(index, defined)
            _check_projection(index)
            if name in seen_names:
                raise ValidationException(INVALID + f"Duplicate index name: {name}")
            seen_names.add(name)
            throughput = index.get("ProvisionedThroughput")
            if billing_mode == BILLING_PAY_PER_REQUEST and throughput is not None:
                raise ValidationException(
                    INVALID + f"ProvisionedThroughput should not be specified for index: {name} "
                    "when BillingMode is PAY_PER_REQUEST"
                )
            if billing_mode == BILLING_PROVISIONED:
                if throughput is None:
                    raise ValidationException(
                        INVALID + f"ProvisionedThroughput is not specified for index: {name}"
                    )
                _check_capacity_bounds(throughput)
                _check_capacity_quota(db, throughput, name)
            projected += len(index["Projection"].get("NonKeyAttributes") or ())
            global_out.append(
                _build_index(
                    db, table_name, index, defined, is_global=True, billing_mode=billing_mode
                )
            )
        if len(global_) > GLOBAL_SECONDARY_INDEXES_MAX:
            raise ValidationException(
                INVALID + "GlobalSecondaryIndex count exceeds the per-table limit of "
                f"{GLOBAL_SECONDARY_INDEXES_MAX}"
            )
    if projected > PROJECTED_ATTRIBUTES_MAX:
        raise ValidationException(
            INVALID + "Number of projected attributes in all indexes exceeds the per-table "
            f"limit of {PROJECTED_ATTRIBUTES_MAX}"
        )
    used = set(table_keys)
    for index in local_out + global_out:
        used.update(index.key_names)
    if (local is not None or global_ is not None) and used != set(defined):
        raise ValidationException(
            INVALID + "Some AttributeDefinitions are not used. "
            f"AttributeDefinitions: [{', '.join(defined)}], "
            f"keys used: [{', '.join(k for k in defined if k in used)}]"
        )
    # Each index's entries live under an id of their own, recorded now so that deleting
    # a global index later never moves another: local indexes first, counting from 1.
    ids = iter(range(1, len(local_out) + len(global_out) + 1))
    local_ids = tuple(replace(index, index_id=next(ids)) for index in local_out)
    global_ids = tuple(replace(index, index_id=next(ids)) for index in global_out)
    return local_ids, global_ids


def _check_stream_at_create(spec: dict[str, Any] | None) -> tuple[bool, str | None]:
    if spec is None:
        return False, None
    enabled = spec["StreamEnabled"]
    view_type = spec.get("StreamViewType")
    if enabled and view_type is None:
        raise ValidationException(
            INVALID + "Table is being created with a stream enabled, UpdateViewType is required"
        )
    if not enabled and view_type is not None:
        raise ValidationException(
            INVALID + "Table is being created with a stream disabled, UpdateViewType should not be "
            "specified"
        )
    return enabled, view_type


def _check_sse(db: Database, spec: dict[str, Any] | None) -> tuple[bool, str | None, str | None]:
    """(enabled, SSEType, KMSMasterKeyArn) from an SSESpecification."""
    if spec is None or not spec.get("Enabled", False):
        if spec is not None and spec.get("SSEType") is not None:
            raise ValidationException(INVALID + "SSEType can not be specified if Enabled is false")
        if spec is not None and spec.get("KMSMasterKeyId") is not None:
            raise ValidationException(
                INVALID + "KMSMasterKeyId can not be specified if Enabled is false"
            )
        return False, None, None
    sse_type = spec.get("SSEType", "KMS")
    if sse_type == "AES256":
        raise ValidationException(INVALID + "SSEType AES256 is not supported")
    key = spec.get("KMSMasterKeyId")
    if key is None:
        # The AWS managed key of DynamoDB (alias/aws/dynamodb): one per account and region,
        # shared by every table that asks for it, so its id is derived from the two.
        managed = uuid.uuid5(uuid.NAMESPACE_URL, f"kms:{db.region}:{db.account_id}:aws/dynamodb")
        key = f"arn:aws:kms:{db.region}:{db.account_id}:key/{managed}"
    elif not key.startswith("arn:"):
        # A key id or an alias name: report it as the ARN it stands for in this account.
        kind = "" if key.startswith("alias/") else "key/"
        key = f"arn:aws:kms:{db.region}:{db.account_id}:{kind}{key}"
    return True, "KMS", key


@operation("CreateTable")
async def create_table(db: Database, body: Body) -> Body:
    body = check_types(body, CREATE_TABLE_SHAPE)
    _check_create_model(body)
    billing_mode = _check_billing_at_create(body)
    defined: dict[str, str] = {}
    for definition in body["AttributeDefinitions"]:
        name = definition["AttributeName"]
        if name in defined:
            raise ValidationException(f"Attribute Name is duplicated: {name}")
        defined[name] = definition["AttributeType"]
    _check_table_keys(body, defined)
    has_indexes = "LocalSecondaryIndexes" in body or "GlobalSecondaryIndexes" in body
    if not has_indexes and len(body["KeySchema"]) != len(defined):
        raise ValidationException(
            INVALID + "Number of attributes in KeySchema does not exactly match number of "
            "attributes defined in AttributeDefinitions"
        )
    if billing_mode == BILLING_PROVISIONED:
        _check_capacity_quota(db, body["ProvisionedThroughput"])
    local, global_ = _check_indexes(db, body, defined, billing_mode)
    stream_enabled, view_type = _check_stream_at_create(body.get("StreamSpecification"))
    sse_enabled, sse_type, kms_key = _check_sse(db, body.get("SSESpecification"))
    on_demand = _on_demand_changes(
        db, body.get("OnDemandThroughput") or {}, billing_mode, updating=False
    )
    warm = _warm_at_create(body.get("WarmThroughput"), billing_mode, body)
    tags = _check_tags(body.get("Tags") or [], {})

    name = body["TableName"]
    catalog = catalog_state(db)
    async with catalog.lock:
        if name in catalog.tables:
            raise ResourceInUseException(f"Table already exists: {name}")
        if len(catalog.tables) >= TABLES_PER_REGION_MAX:
            raise LimitExceededException(
                "Subscriber limit exceeded: Number of tables in this account and region "
                f"exceeds the limit of {TABLES_PER_REGION_MAX}"
            )
        now = current_time(db)
        keys = body["KeySchema"]
        throughput = body.get("ProvisionedThroughput") or {}
        table = Table(
            name=name,
            table_id=str(uuid.uuid4()),
            hash_key=KeyAttribute(keys[0]["AttributeName"], defined[keys[0]["AttributeName"]]),
            range_key=KeyAttribute(keys[1]["AttributeName"], defined[keys[1]["AttributeName"]])
            if len(keys) == 2
            else None,
            status=STATUS_ACTIVE,
            created_at=now,
            arn=table_arn(db, name),
            attribute_definitions=tuple(KeyAttribute(n, t) for n, t in defined.items()),
            billing_mode=billing_mode,
            read_capacity_units=throughput.get("ReadCapacityUnits", 0),
            write_capacity_units=throughput.get("WriteCapacityUnits", 0),
            warm_read_units=warm["warm_read_units"],
            warm_write_units=warm["warm_write_units"],
            on_demand_read_units=on_demand.get("on_demand_read_units"),
            on_demand_write_units=on_demand.get("on_demand_write_units"),
            decreases_day=_utc_day(now),
            pay_per_request_since=now if billing_mode == BILLING_PAY_PER_REQUEST else None,
            stream_enabled=stream_enabled,
            stream_view_type=view_type,
            stream_label=_stream_label(now, None) if stream_enabled else None,
            deletion_protection=body.get("DeletionProtectionEnabled", False),
            table_class=body.get("TableClass"),
            sse_enabled=sse_enabled,
            sse_type=sse_type,
            kms_master_key_id=kms_key,
            tags=tuple(tags.items()),
            local_indexes=local,
            global_indexes=global_,
        )
        _check_account_capacity(db, table)
        await _propose(db, {"kind": "create_table", "table": table.to_record()})
    # DynamoDB answers CREATING; this node's table is usable as soon as its record commits.
    return {"TableDescription": describe(db, table, status=STATUS_CREATING, creating=True)}


# --- DescribeTable, ListTables, DeleteTable -------------------------------------------------


def _check_table_reference_body(body: Body) -> str:
    body = check_types(body, TABLE_NAME_SHAPE)
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    v.raise_if_any()
    name: str = body["TableName"]
    return name


def _checked_arn_name(db: Database, arn: str) -> str:
    """The table name of a table ARN given as TableName; DynamoDB's errors for other ARNs."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[1] != "aws":
        raise ValidationException(f"1 validation error detected: Invalid AWS partition in '{arn}'")
    if parts[3] != db.region:
        raise ValidationException(f"1 validation error detected: Invalid AWS region in '{arn}'")
    if parts[4] != db.account_id:
        raise AccessDeniedException("Access is denied")
    resource = parts[5]
    if parts[2] != "dynamodb" or not resource.startswith("table/") or "/" in resource[6:]:
        raise ValidationException(f"1 validation error detected: Invalid resource type in '{arn}'")
    return resource[len("table/") :]


def existing_table(db: Database, name: str) -> Table:
    """The table DescribeTable, UpdateTable or DeleteTable names, by name or by ARN."""
    key = _checked_arn_name(db, name) if name.startswith("arn:") else name
    table = catalog_state(db).tables.get(key)
    if table is None:
        raise ResourceNotFoundException(f"Requested resource not found: Table: {name} not found")
    return table


@operation("DescribeTable")
async def describe_table(db: Database, body: Body) -> Body:
    name = _check_table_reference_body(body)
    return {"Table": describe(db, existing_table(db, name))}


@operation("ListTables")
async def list_tables_operation(db: Database, body: Body) -> Body:
    body = check_types(body, LIST_TABLES_SHAPE)
    v = Violations()
    start = body.get("ExclusiveStartTableName")
    v.length(start, "exclusiveStartTableName", TABLE_NAME_LENGTH_MIN, TABLE_NAME_LENGTH_MAX)
    v.pattern(start, "exclusiveStartTableName")
    limit = body.get("Limit")
    v.at_least(limit, "limit", 1)
    v.at_most(limit, "limit", LIST_TABLES_LIMIT_MAX)
    v.raise_if_any()
    limit = limit or LIST_TABLES_LIMIT_MAX
    names = [t.name for t in list_tables(db)]
    if start is not None:
        names = [n for n in names if n > start]
    page = names[:limit]
    out: Body = {"TableNames": page}
    if len(names) > limit:
        out["LastEvaluatedTableName"] = page[-1]
    return out


@operation("DeleteTable")
async def delete_table(db: Database, body: Body) -> Body:
    name = _check_table_reference_body(body)
    catalog = catalog_state(db)
    async with catalog.lock:
        table = existing_table(db, name)
        if table.deletion_protection:
            raise ValidationException(
                "Resource cannot be deleted as it is currently protected against deletion. "
                "Disable deletion protection first."
            )
        if any(i.status != STATUS_ACTIVE for i in table.global_indexes):
            raise ResourceInUseException(
                IN_USE + "Cannot delete table while indexes are being created, updated, or deleted."
            )
        item_count, size_bytes = _table_stats(db, table)
        await _propose(db, {"kind": "delete_table", "name": table.name, "table_id": table.table_id})
    # DynamoDB's DeleteTable answer leaves out the schema, the indexes and the creation time.
    out: Body = {
        "TableName": table.name,
        "TableStatus": STATUS_DELETING,
        "ProvisionedThroughput": _throughput(table, current_time(db)),
        "TableSizeBytes": size_bytes,
        "ItemCount": item_count,
        "TableArn": table.arn,
        "TableId": table.table_id,
    }
    summary = _billing_summary(table)
    if summary is not None:
        out["BillingModeSummary"] = summary
    if table.stream_enabled:
        out["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": table.stream_view_type,
        }
    if table.stream_label is not None:
        out["LatestStreamLabel"] = table.stream_label
        out["LatestStreamArn"] = table.stream_arn
    out["DeletionProtectionEnabled"] = False
    return {"TableDescription": out}


# --- UpdateTable ----------------------------------------------------------------------------


def _check_update_model(body: Body) -> None:
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    _check_attribute_definitions(v, body.get("AttributeDefinitions"), required=False)
    v.enum(body.get("BillingMode"), "billingMode", BILLING_MODES)
    _check_throughput(v, body.get("ProvisionedThroughput"), "provisionedThroughput")
    updates = body.get("GlobalSecondaryIndexUpdates") or []
    for member, update in _members(v, updates, "globalSecondaryIndexUpdates"):
        if "Create" in update:
            _check_index_model(v, update["Create"], f"{member}.create", is_global=True)
        if "Update" in update:
            sub = update["Update"]
            name = sub.get("IndexName")
            if v.not_null(name, f"{member}.update.indexName"):
                v.length(
                    name, f"{member}.update.indexName", INDEX_NAME_LENGTH_MIN, INDEX_NAME_LENGTH_MAX
                )
                v.pattern(name, f"{member}.update.indexName")
            _check_throughput(
                v, sub.get("ProvisionedThroughput"), f"{member}.update.provisionedThroughput"
            )
        if "Delete" in update:
            name = update["Delete"].get("IndexName")
            if v.not_null(name, f"{member}.delete.indexName"):
                v.length(
                    name, f"{member}.delete.indexName", INDEX_NAME_LENGTH_MIN, INDEX_NAME_LENGTH_MAX
                )
                v.pattern(name, f"{member}.delete.indexName")
    _check_stream_model(v, body.get("StreamSpecification"))
    _check_sse_model(v, body.get("SSESpecification"))
    v.enum(body.get("TableClass"), "tableClass", TABLE_CLASSES)
    _check_units_model(
        v,
        body.get("WarmThroughput"),
        "warmThroughput",
        ("ReadUnitsPerSecond", "WriteUnitsPerSecond"),
        1,
    )
    v.raise_if_any()


def _check_update_request(body: Body) -> None:
    """UpdateTable's rules on the request alone, before the table is looked up."""
    asked = [
        m
        for m in (
            "ProvisionedThroughput",
            "BillingMode",
            "StreamSpecification",
            "GlobalSecondaryIndexUpdates",
            "SSESpecification",
            "DeletionProtectionEnabled",
            "TableClass",
            "OnDemandThroughput",
            "WarmThroughput",
        )
        if m in body
    ]
    if not asked or asked == ["GlobalSecondaryIndexUpdates"] and not body[asked[0]]:
        raise ValidationException(f"At least one of {UPDATE_TABLE_MEMBERS} is required")
    if body.get("GlobalSecondaryIndexUpdates") == []:
        # Alone it counts as absent (above); beside another change it is refused first.
        raise ValidationException(INVALID + "List of GlobalSecondaryIndexUpdates is empty")
    others = [m for m in asked if m != "SSESpecification"]
    if "SSESpecification" in asked and others:
        raise ValidationException(
            INVALID + "Server-Side Encryption modification must be the only operation in the "
            "request"
        )
    if "TableClass" in asked and len(asked) > 1:
        raise ValidationException(
            INVALID + "TableClass modification must be the only operation in the request"
        )
    if "DeletionProtectionEnabled" in asked and len(asked) > 1:
        raise ValidationException(
            INVALID + "DeletionProtection modification must be the only operation in the request"
        )
    if "WarmThroughput" in asked and len(asked) > 1:
        raise ValidationException(
            INVALID + "WarmThroughput must be the only operation in the request"
        )
    if "OnDemandThroughput" in asked and set(asked) - {"OnDemandThroughput", "BillingMode"}:
        raise ValidationException(
            INVALID + "OnDemandThroughput can only be combined with BillingMode in an "
            "UpdateTable request"
        )
    changes_iops = "ProvisionedThroughput" in body or body.get("BillingMode") == (
        BILLING_PROVISIONED
    )
    if "StreamSpecification" in body and changes_iops:
        raise ValidationException(
            INVALID + "You cannot modify stream status while updating table IOPS"
        )
    updates = body.get("GlobalSecondaryIndexUpdates")
    if updates:
        structural = any("Create" in u or "Delete" in u for u in updates)
        if structural and "ProvisionedThroughput" in body:
            raise ValidationException(
                INVALID + "You cannot create or delete index while updating table IOPS"
            )
        if structural and "StreamSpecification" in body:
            raise ValidationException(
                INVALID + "You cannot create or delete index while changing stream status"
            )
        for update in updates:
            actions = [a for a in ("Create", "Update", "Delete") if a in update]
            if not actions:
                raise ValidationException(
                    INVALID + "One of GlobalSecondaryIndexUpdate.Update, "
                    "GlobalSecondaryIndexUpdate.Create, GlobalSecondaryIndexUpdate.Delete must "
                    "not be null"
                )
            if len(actions) > 1:
                raise ValidationException(
                    INVALID + "Only one global secondary index action is allowed per "
                    "GlobalSecondaryIndexUpdate object"
                )


def _throughput_changes(db: Database, body: Body, table: Table, now: float) -> dict[str, Any]:
    """The record fields an UpdateTable of BillingMode / ProvisionedThroughput changes."""
    mode = body.get("BillingMode")
    throughput = body.get("ProvisionedThroughput")
    target = mode or table.billing_mode
    if target == BILLING_PAY_PER_REQUEST:
        if throughput is not None:
            raise ValidationException(
                INVALID + "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified "
                "when BillingMode is PAY_PER_REQUEST"
            )
        if table.billing_mode == BILLING_PAY_PER_REQUEST:
            return {}  # DynamoDB accepts the same mode again, and changes nothing.
        # On demand, the global secondary indexes lose their provisioned capacity too.
        on_demand_indexes = [
            replace(index, read_capacity_units=0, write_capacity_units=0).to_record()
            for index in table.global_indexes
        ]
        return {
            "billing_mode": BILLING_PAY_PER_REQUEST,
            "read_capacity_units": 0,
            "write_capacity_units": 0,
            "global_indexes": on_demand_indexes,
            "pay_per_request_since": now,
            "warm_read_units": max(table.warm_read_units, WARM_READ_UNITS_ON_DEMAND),
            "warm_write_units": max(table.warm_write_units, WARM_WRITE_UNITS_ON_DEMAND),
        }
    if throughput is None:
        if mode is None:
            return {}
        raise ValidationException(
            INVALID + "ProvisionedThroughput must be specified when BillingMode is PROVISIONED"
        )
    if table.billing_mode == BILLING_PAY_PER_REQUEST and table.global_indexes:
        # A provisioned table's global indexes need capacity of their own, which comes with
        # GlobalSecondaryIndexUpdates: DynamoDB's answer when the request lacks it.
        given = {
            update["Update"]["IndexName"]
            for update in body.get("GlobalSecondaryIndexUpdates") or []
            if "Update" in update and update["Update"].get("ProvisionedThroughput") is not None
        }
        missing = [index.name for index in table.global_indexes if index.name not in given]
        if missing:
            raise ValidationException(
                INVALID + f"ProvisionedThroughput must be specified for index: {missing[0]}"
            )
    _check_capacity_bounds(throughput)
    _check_capacity_quota(db, throughput)
    read = throughput["ReadCapacityUnits"]
    write = throughput["WriteCapacityUnits"]
    warm = {
        "warm_read_units": max(table.warm_read_units, read),
        "warm_write_units": max(table.warm_write_units, write),
    }
    if table.billing_mode == BILLING_PAY_PER_REQUEST:
        # A switch to PROVISIONED sets the capacity; it is neither an increase nor a decrease.
        return {
            "billing_mode": BILLING_PROVISIONED,
            "read_capacity_units": read,
            "write_capacity_units": write,
            "on_demand_read_units": None,
            "on_demand_write_units": None,
            **warm,
        }
    current_read, current_write = table.read_capacity_units, table.write_capacity_units
    if read == current_read and write == current_write:
        raise ValidationException(
            "The provisioned throughput for the table will not change. The requested value "
            f"equals the current value. Current ReadCapacityUnits provisioned for the table: "
            f"{current_read}. Requested ReadCapacityUnits: {read}. Current WriteCapacityUnits "
            f"provisioned for the table: {current_write}. Requested WriteCapacityUnits: {write}. "
            "Refer to the Amazon DynamoDB Developer Guide for current limits and how to request "
            "higher limits."
        )
    changes: dict[str, Any] = {"read_capacity_units": read, "write_capacity_units": write, **warm}
    if read > current_read or write > current_write:
        changes["last_increase_at"] = now
    if read < current_read or write < current_write:
        done_today = _decreases_today(table, now)
        last = table.last_decrease_at
        next_allowed = 0.0 if last is None else last + DECREASE_INTERVAL_SECONDS
        # A new UTC day starts a new allowance, whichever comes first.
        next_allowed = min(next_allowed, (_utc_day(now) + 1) * SECONDS_PER_DAY)
        if done_today >= DECREASES_PER_DAY_FREE and now < next_allowed:
            assert last is not None  # decreases were counted, so the last one has a time
            raise LimitExceededException(
                "Subscriber limit exceeded: Provisioned throughput decreases are limited within a "
                f"given UTC day. After the first {DECREASES_PER_DAY_FREE} decreases, each "
                "subsequent decrease in the same UTC day can be performed at most once every "
                f"{DECREASE_INTERVAL_SECONDS} seconds. Number of decreases today: {done_today}. "
                f"Last decrease at {_human_time(last)}. Next decrease can be made at "
                f"{_human_time(next_allowed)}"
            )
        changes["last_decrease_at"] = now
        changes["decreases_day"] = _utc_day(now)
        changes["decreases_count"] = done_today + 1
    return changes


def _human_time(seconds: float) -> str:
    """A time as DynamoDB's limit messages write it: "Thursday, October 8, 2026 at 11:20:48
    PM Coordinated Universal Time"."""
    t = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    hour = t.hour % 12 or 12
    noon = "AM" if t.hour < 12 else "PM"
    return f"{t:%A}, {t:%B} {t.day}, {t.year} at {hour}:{t:%M:%S} {noon} Coordinated Universal Time"


def _stream_changes(spec: dict[str, Any], table: Table, now: float) -> dict[str, Any]:
    enabled = spec["StreamEnabled"]
    view_type = spec.get("StreamViewType")
    if enabled and view_type is None:
        raise ValidationException(
            INVALID + "If stream is being enabled then UpdateViewType is required"
        )
    if not enabled and view_type is not None:
        raise ValidationException(
            INVALID + "If stream is being disabled, then UpdateViewType must not be specified"
        )
    if enabled and table.stream_enabled:
        raise ValidationException(f"Table already has an enabled stream: TableName: {table.name}")
    if not enabled and not table.stream_enabled:
        raise ValidationException(f"Table has no stream to disable: TableName: {table.name}")
    if not enabled:
        return {"stream_enabled": False, "stream_view_type": None}
    return {
        "stream_enabled": True,
        "stream_view_type": view_type,
        "stream_label": _stream_label(now, table.stream_label),
    }


def _sse_changes(db: Database, spec: dict[str, Any], table: Table) -> dict[str, Any]:
    if not spec.get("Enabled", False) and not table.sse_enabled:
        raise ValidationException(INVALID + "Table is already encrypted by default")
    enabled, sse_type, key = _check_sse(db, spec)
    if (
        enabled
        and table.sse_enabled
        and spec.get("KMSMasterKeyId")
        in (
            None,
            table.kms_master_key_id,
        )
    ):
        raise ValidationException(
            INVALID + "Table is already encrypted with given KMSMasterKeyId. Use "
            "KMSMasterKeyId parameter if you want to change Master Key"
        )
    return {"sse_enabled": enabled, "sse_type": sse_type, "kms_master_key_id": key}


IN_USE = "Attempt to change a resource which is still in use: "
ONLINE_INDEX_LIMIT_MESSAGE = (
    "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously "
    "per table"
)


def _check_indexes_in_use(body: Body, table: Table) -> None:
    """While a global index is being deleted, neither it nor the table's capacity may change
    (ResourceInUseException, as DynamoDB answers until the index is gone)."""
    deleting = [i.name for i in table.global_indexes if i.status == STATUS_DELETING]
    if not deleting:
        return
    for update in body.get("GlobalSecondaryIndexUpdates") or []:
        name = update.get("Update", {}).get("IndexName")
        if name in deleting:
            raise ResourceInUseException(
                IN_USE + f"Index is being deleted. Table: {table.name} Index: {name}"
            )
    mode = body.get("BillingMode")
    if "ProvisionedThroughput" in body or (mode is not None and mode != table.billing_mode):
        raise ResourceInUseException(
            IN_USE + "Can't change table IOPS when an index is being deleted. Table: "
            f"{table.name} Indexes: [{', '.join(deleting)}]"
        )


def _index_changes(db: Database, body: Body, table: Table, changes: dict[str, Any]) -> None:
    """Apply GlobalSecondaryIndexUpdates to `changes` (the record fields UpdateTable changes):
    Create adds a CREATING index (backfilled in the background, `keeldb.engine.indexes`),
    Delete marks one DELETING (removed in the background), Update sets its throughput. One
    index is created or deleted at a time per table, as in DynamoDB."""
    from keeldb.engine import indexes as index_work

    updates: list[dict[str, Any]] = body["GlobalSecondaryIndexUpdates"]
    billing_mode = changes.get("billing_mode", table.billing_mode)
    current = [SecondaryIndex.from_record(r) for r in changes.get("global_indexes", [])] or list(
        table.global_indexes
    )
    structural = [u for u in updates if "Create" in u or "Delete" in u]
    busy = [i for i in current if i.status in (STATUS_CREATING, STATUS_DELETING)]
    # Deleting the very index that is being created is allowed (it stops its backfill).
    cancels = (
        len(structural) == 1
        and "Delete" in structural[0]
        and [i.name for i in busy] == [structural[0]["Delete"]["IndexName"]]
        and busy[0].status == STATUS_CREATING
    )
    if len(structural) > 1 or (structural and busy and not cancels):
        raise LimitExceededException(ONLINE_INDEX_LIMIT_MESSAGE)
    definitions = list(table.attribute_definitions)
    seen: set[str] = set()
    for update in updates:
        action = next(a for a in ("Create", "Update", "Delete") if a in update)
        spec: dict[str, Any] = update[action]
        name: str = spec["IndexName"]
        if name in seen:
            raise ValidationException(
                INVALID + "Only one global secondary index update per index is allowed "
                f"simultaneously. Index: {name}"
            )
        seen.add(name)
        position = next((n for n, i in enumerate(current) if i.name == name), None)
        is_local = any(i.name == name for i in table.local_indexes)
        if action == "Create":
            if position is not None or is_local:
                raise ValidationException("Attempting to create an index which already exists")
            index = _new_global_index(db, body, table, spec, billing_mode, current, definitions)
            index = replace(index, index_id=index_work.next_index_id(table))
            current.append(index)
            continue
        if position is None:
            if is_local:
                verb = "delete" if action == "Delete" else "update"
                raise ValidationException(
                    f"Cannot {verb} an index that is not a GlobalSecondaryIndex: {name}"
                )
            raise ResourceNotFoundException(
                f"Requested resource not found: Index {name} for table {table.name}"
            )
        if action == "Delete":
            current[position] = replace(current[position], status=STATUS_DELETING)
            continue
        throughput = spec.get("ProvisionedThroughput")
        if throughput is None and ("OnDemandThroughput" in spec or "WarmThroughput" in spec):
            # Accepted as DynamoDB accepts them; this server keeps no per-index on-demand or
            # warm throughput of its own (an index reports its table's), so nothing changes.
            continue
        if billing_mode == BILLING_PAY_PER_REQUEST:
            raise ValidationException(
                INVALID + f"The only Updates for index: {name} when TableThroughputMode is "
                "PAY_PER_REQUEST can be to OnDemandThroughput, WarmThroughput"
            )
        if throughput is None:
            raise ValidationException(
                INVALID + "Both ReadCapacityUnits and WriteCapacityUnits must be specified for "
                f"index: {name}"
            )
        _check_capacity_bounds(throughput)
        _check_capacity_quota(db, throughput, name)
        index = current[position]
        read, write = throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]
        if (read, write) == (index.read_capacity_units, index.write_capacity_units):
            raise ValidationException(
                f"The provisioned throughput for the index {name} will not change. The requested "
                "value equals the current value. Current ReadCapacityUnits provisioned for index "
                f"{name}: {index.read_capacity_units}. Requested ReadCapacityUnits: {read}. "
                f"Current WriteCapacityUnits provisioned for index {name}: "
                f"{index.write_capacity_units}. Requested WriteCapacityUnits: {write}. "
                + REFER_TO_GUIDE
            )
        current[position] = replace(
            current[position],
            read_capacity_units=throughput["ReadCapacityUnits"],
            write_capacity_units=throughput["WriteCapacityUnits"],
        )
    changes["global_indexes"] = [i.to_record() for i in current]
    changes["attribute_definitions"] = [[a.name, a.type] for a in definitions]


def _new_global_index(
    db: Database,
    body: Body,
    table: Table,
    spec: dict[str, Any],
    billing_mode: str,
    current: list[SecondaryIndex],
    definitions: list[KeyAttribute],
) -> SecondaryIndex:
    """The index a GlobalSecondaryIndexUpdates Create adds, checked as DynamoDB checks it;
    its key attributes join `definitions`."""
    name = spec["IndexName"]
    given = body.get("AttributeDefinitions")
    if not given:
        raise ValidationException(
            INVALID + f"AttributeDefinitions is not specified for index: {name}"
        )
    defined: dict[str, str] = {}
    for definition in given:
        attribute = definition["AttributeName"]
        if attribute in defined:
            raise ValidationException(f"Attribute Name is duplicated: {attribute}")
        defined[attribute] = definition["AttributeType"]
    if len(spec["KeySchema"]) > KEY_SCHEMA_ELEMENTS_MAX:
        raise ValidationException(
            INVALID + "Global secondary indexes whose key has more than one partition "
            f"key or sort key attribute are not supported by this server; index: {name}"
        )
    _check_index_keys(spec, defined)
    existing = {a.name: a.type for a in definitions}
    for element in spec["KeySchema"]:
        attribute = element["AttributeName"]
        old_type = existing.get(attribute)
        if old_type is not None and old_type != defined[attribute]:
            raise ValidationException(
                INVALID + "Attributes cannot be redefined. Please check that your attribute has "
                "the same type as previously defined. Existing schema: Schema:[SchemaElement: "
                f"key{{{attribute}:{old_type}:{_key_role(table, attribute)}}}] New schema: "
                f"Schema:[SchemaElement: key{{{attribute}:{defined[attribute]}:"
                f"{element['KeyType']}}}]"
            )
    _check_projection(spec)
    throughput = spec.get("ProvisionedThroughput")
    if billing_mode == BILLING_PAY_PER_REQUEST and throughput is not None:
        raise ValidationException(
            INVALID + f"ProvisionedThroughput should not be specified for index: {name} "
            "when BillingMode is PAY_PER_REQUEST"
        )
    if billing_mode == BILLING_PROVISIONED:
        if throughput is None:
            raise ValidationException(
                INVALID + "Both ReadCapacityUnits and WriteCapacityUnits must be specified for "
                f"index: {name}"
            )
        _check_capacity_bounds(throughput)
        _check_capacity_quota(db, throughput, name)
    if len(current) >= GLOBAL_SECONDARY_INDEXES_MAX:
        raise LimitExceededException(
            "Subscriber limit exceeded: Number of global secondary indexes exceeds per-table "
            f"limit of {GLOBAL_SECONDARY_INDEXES_MAX}"
        )
    projected = len(spec["Projection"].get("NonKeyAttributes") or ())
    for index in (*table.local_indexes, *current):
        projected += len(index.non_key_attributes)
    if projected > PROJECTED_ATTRIBUTES_MAX:
        raise ValidationException(
            INVALID + "Number of projected attributes in all indexes exceeds the per-table "
            f"limit of {PROJECTED_ATTRIBUTES_MAX}"
        )
    for element in spec["KeySchema"]:
        attribute = element["AttributeName"]
        if attribute not in existing:
            definitions.append(KeyAttribute(attribute, defined[attribute]))
            existing[attribute] = defined[attribute]
    index = _build_index(db, table.name, spec, existing, is_global=True, billing_mode=billing_mode)
    return replace(index, status=STATUS_CREATING)


def _key_role(table: Table, attribute: str) -> str:
    """HASH or RANGE: the role `attribute` plays in the first key (table's, then indexes')
    that uses it, as DynamoDB's "Attributes cannot be redefined" message shows it."""
    for hash_key, range_key in [(table.hash_key, table.range_key)] + [
        (i.hash_key, i.range_key) for i in table.local_indexes + table.global_indexes
    ]:
        if hash_key.name == attribute:
            return "HASH"
        if range_key is not None and range_key.name == attribute:
            return "RANGE"
    return "HASH"


@operation("UpdateTable")
async def update_table(db: Database, body: Body) -> Body:
    body = check_types(body, UPDATE_TABLE_SHAPE)
    _check_update_model(body)
    _check_update_request(body)
    name = body["TableName"]
    catalog = catalog_state(db)
    async with catalog.lock:
        table = existing_table(db, name)
        now = current_time(db)
        changes: dict[str, Any] = {}
        _check_indexes_in_use(body, table)
        if "BillingMode" in body or "ProvisionedThroughput" in body:
            changes.update(_throughput_changes(db, body, table, now))
        if "StreamSpecification" in body:
            changes.update(_stream_changes(body["StreamSpecification"], table, now))
        if "SSESpecification" in body:
            changes.update(_sse_changes(db, body["SSESpecification"], table))
        if "OnDemandThroughput" in body:
            billing_mode = body.get("BillingMode", table.billing_mode)
            changes.update(
                _on_demand_changes(db, body["OnDemandThroughput"], billing_mode, updating=True)
            )
        if body.get("GlobalSecondaryIndexUpdates"):
            _index_changes(db, body, table, changes)
        if "WarmThroughput" in body:
            changes.update(_warm_changes(body["WarmThroughput"], table))
        if "DeletionProtectionEnabled" in body:
            changes["deletion_protection"] = body["DeletionProtectionEnabled"]
        if "TableClass" in body:
            recent = [
                t for t in table.table_class_updates if now - t < TABLE_CLASS_UPDATE_WINDOW_SECONDS
            ]
            if len(recent) >= TABLE_CLASS_UPDATES_MAX:
                raise LimitExceededException(
                    "Subscriber limit exceeded: Updates to TableClass are limited to "
                    f"{TABLE_CLASS_UPDATES_MAX} times in "
                    f"{TABLE_CLASS_UPDATE_WINDOW_SECONDS // SECONDS_PER_DAY} day(s)."
                )
            changes["table_class"] = body["TableClass"]
            changes["table_class_updates"] = [*recent, now]
        if changes:
            await _propose(
                db,
                {
                    "kind": "update_table",
                    "name": table.name,
                    "table_id": table.table_id,
                    "changes": changes,
                },
            )
        merged = table.to_record()
        merged.update(changes)
        updated = Table.from_record(merged)
    # The answer reports UPDATING with the capacity in force before the change, except that a
    # switch to PAY_PER_REQUEST already shows the on-demand zeros, as DynamoDB's answer does.
    to_on_demand = table.billing_mode != updated.billing_mode == BILLING_PAY_PER_REQUEST
    shown = updated if to_on_demand else table
    description = describe(db, updated, status=STATUS_UPDATING, throughput_of=shown)
    if body.get("GlobalSecondaryIndexUpdates"):
        from keeldb.engine import indexes

        _answer_index_updates(description, body["GlobalSecondaryIndexUpdates"], table)
        indexes.ensure_background(db)
    return {"TableDescription": description}


def _answer_index_updates(description: Body, updates: list[dict[str, Any]], before: Table) -> None:
    """UpdateTable's answer shows a created index before its backfill starts (Backfilling
    false) and an updated one UPDATING with the throughput it had before, as DynamoDB's does."""
    shown = {i["IndexName"]: i for i in description.get("GlobalSecondaryIndexes", [])}
    for update in updates:
        if "Create" in update:
            shown[update["Create"]["IndexName"]]["Backfilling"] = False
        elif "Update" in update:
            name = update["Update"]["IndexName"]
            old = before.index(name)
            assert old is not None, name
            shown[name]["IndexStatus"] = STATUS_UPDATING
            shown[name]["ProvisionedThroughput"]["ReadCapacityUnits"] = old.read_capacity_units
            shown[name]["ProvisionedThroughput"]["WriteCapacityUnits"] = old.write_capacity_units


# --- Tags -----------------------------------------------------------------------------------


def _tagged_table(db: Database, arn: str) -> Table:
    """The table an ARN of TagResource and friends names; DynamoDB's errors otherwise."""
    if not arn.startswith("arn:"):
        raise ValidationException(INVALID + f"ARNs must start with 'arn:': {arn}")
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[2] != "dynamodb":
        raise ValidationException(INVALID + f"Provided Arn is not a DynamoDB resource arn: {arn}")
    resource = parts[5]
    if not resource.startswith("table/") or "/index/" in resource:
        raise ValidationException(
            INVALID + "Invalid resource arn provided, only table or stream is accepted. "
            f"Provided resource arn: {arn}"
        )
    if parts[4] != db.account_id:
        raise AccessDeniedException("Access is denied")
    if parts[3] != db.region:
        raise ValidationException(f"Invalid TableArn: Invalid ResourceArn provided as input {arn}")
    name = resource[len("table/") :].split("/", 1)[0]
    table = catalog_state(db).tables.get(name)
    if table is None:
        raise ResourceNotFoundException(
            f"Requested resource not found: ResourceArn: {arn} not found"
        )
    return table


def _check_resource_arn(v: Violations, arn: str | None) -> None:
    if v.not_null(arn, "resourceArn"):
        v.length(arn, "resourceArn", 1, RESOURCE_ARN_LENGTH_MAX)


async def _set_tags(db: Database, table: Table, tags: dict[str, str]) -> None:
    await _propose(
        db,
        {
            "kind": "update_table",
            "name": table.name,
            "table_id": table.table_id,
            "changes": {"tags": [[k, v] for k, v in tags.items()]},
        },
    )


@operation("TagResource")
async def tag_resource(db: Database, body: Body) -> Body:
    body = check_types(body, TAG_RESOURCE_SHAPE)
    v = Violations()
    _check_resource_arn(v, body.get("ResourceArn"))
    v.not_null(body.get("Tags"), "tags")
    _check_tags_model(v, body.get("Tags"), "tags")
    v.raise_if_any()
    if not body["Tags"]:
        raise ValidationException("Atleast one Tag needs to be provided as Input.")
    catalog = catalog_state(db)
    async with catalog.lock:
        table = _tagged_table(db, body["ResourceArn"])
        tags = _check_tags(body["Tags"], dict(table.tags))
        await _set_tags(db, table, tags)
    return {}


@operation("UntagResource")
async def untag_resource(db: Database, body: Body) -> Body:
    body = check_types(body, UNTAG_RESOURCE_SHAPE)
    v = Violations()
    _check_resource_arn(v, body.get("ResourceArn"))
    keys = body.get("TagKeys")
    if v.not_null(keys, "tagKeys"):
        assert keys is not None
        for i, key in enumerate(keys):
            if v.not_null(key, f"tagKeys.{i + 1}.member"):
                v.length(key, f"tagKeys.{i + 1}.member", 1, TAG_KEY_LENGTH_MAX)
    v.raise_if_any()
    assert keys is not None
    if not keys:
        raise ValidationException("Atleast one Tag Key needs to be provided as Input.")
    catalog = catalog_state(db)
    async with catalog.lock:
        table = _tagged_table(db, body["ResourceArn"])
        for key in keys:
            if not TAG_TEXT_RE.match(key):
                raise ValidationException(f"The Tag Key provided is invalid, Key: {key}")
        remaining = {k: val for k, val in table.tags if k not in set(keys)}
        if len(remaining) != len(table.tags):
            await _set_tags(db, table, remaining)
    return {}


@operation("ListTagsOfResource")
async def list_tags_of_resource(db: Database, body: Body) -> Body:
    body = check_types(body, LIST_TAGS_SHAPE)
    v = Violations()
    _check_resource_arn(v, body.get("ResourceArn"))
    v.raise_if_any()
    table = _tagged_table(db, body["ResourceArn"])
    start = 0
    token = body.get("NextToken")
    if token is not None:
        if not token.isdigit() or int(token) > len(table.tags):
            raise ValidationException(f"Invalid NextToken: {token}")
        start = int(token)
    page = table.tags[start : start + TAGS_PAGE_SIZE]
    out: Body = {"Tags": [{"Key": k, "Value": val} for k, val in page]}
    if start + TAGS_PAGE_SIZE < len(table.tags):
        out["NextToken"] = str(start + TAGS_PAGE_SIZE)
    return out


# --- DescribeEndpoints, DescribeLimits ------------------------------------------------------


@operation("DescribeEndpoints")
async def describe_endpoints(db: Database, body: Body) -> Body:
    address = db.state.get(ENDPOINT_STATE_KEY) or f"dynamodb.{db.region}.amazonaws.com"
    return {"Endpoints": [{"Address": address, "CachePeriodInMinutes": ENDPOINT_CACHE_MINUTES}]}


@operation("DescribeLimits")
async def describe_limits(db: Database, body: Body) -> Body:
    return {
        "AccountMaxReadCapacityUnits": ACCOUNT_READ_CAPACITY_UNITS_MAX,
        "AccountMaxWriteCapacityUnits": ACCOUNT_WRITE_CAPACITY_UNITS_MAX,
        "TableMaxReadCapacityUnits": TABLE_READ_CAPACITY_UNITS_MAX,
        "TableMaxWriteCapacityUnits": TABLE_WRITE_CAPACITY_UNITS_MAX,
    }
