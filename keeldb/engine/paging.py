"""What Query and Scan share: reading their requests, choosing what they read (the base table
or one of its secondary indexes), walking one page of a key range, and answering with
DynamoDB's Count, ScannedCount, LastEvaluatedKey and ConsumedCapacity.

A read is described by a `Source`: the store key range of the base table or of one index,
and that index's key schema. Reading an index is then only a matter of choosing the range and
the schema: the walk, the filter, the projection, the page limits and the capacity arithmetic
are the same. Index entries are expected at `keeldb.model.keys.index_item_key(table_id,
index_id, index hash, index range, table hash, table range)` with the stored form of
`item_store.encode_item` (size, projected item), which is how index maintenance
(`keeldb.engine.indexes`) writes them, under the id `indexes.index_id` gives.

A page stops when `Limit` items have been read or when the items read reach 1 MB
(`PAGE_BYTES_MAX`); both count items read, before the filter, as DynamoDB does. A stopped page
carries a LastEvaluatedKey made of the last item read: its table key and, for an index, its
index key. Every read sees committed state only (the store), so a strongly consistent read
and an eventually consistent one return the same items on a single node; they differ only
in the capacity they consume.

This module never writes to the store, never proposes a record and never does IO.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keeldb.engine import indexes
from keeldb.engine.item_store import decode_stored, items_state, storage_key
from keeldb.engine.items import check_key
from keeldb.engine.items import check_scalar_key_paths as check_key_paths
from keeldb.engine.schema import STATUS_CREATING, STATUS_DELETING
from keeldb.expressions import legacy
from keeldb.model.errors import ValidationException
from keeldb.model.keys import index_item_key
from keeldb.model.limits import PAGE_BYTES_MAX, READ_UNIT_BYTES

# The member readers and constants are re-exported: Query, Scan and the batch and PartiQL
# operations name them through this module in their member tables.
from keeldb.model.request_shapes import (  # noqa: F401
    CONDITIONAL_OPERATOR,
    CONSTRAINT_ERRORS_MAX,
    RETURN_CONSUMED_CAPACITY,
    TABLE_ARN_LENGTH_MAX,
    Member,
    Reader,
    as_boolean,
    as_integer,
    as_list,
    as_map,
    as_string,
    as_structure,
    attribute_map,
    constraint_error,
    constraint_violations,
    legacy_map,
    serialization,
    string_list,
    string_map,
)
from keeldb.model.values import validate_value

if TYPE_CHECKING:
    from keeldb.engine.database import Database
    from keeldb.engine.schema import KeyAttribute, SecondaryIndex, Table
    from keeldb.expressions import Condition, Projection

Body = dict[str, Any]
Item = dict[str, dict[str, Any]]

# --- Request members ----------------------------------------------------------------------

LIMIT_MIN = 1  # Query and Scan Limit: at least one item (API reference, "Limit").
SEGMENT_MAX = 999_999  # Segment is zero-based and below TotalSegments' maximum.
TOTAL_SEGMENTS_MAX = 1_000_000  # API reference, Scan "TotalSegments".

SELECT_VALUES = ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "COUNT")


def read_members(body: Any, members: Sequence[Member]) -> Body:
    """The request with typed members (unknown and null members dropped), or the
    SerializationException / ValidationException DynamoDB answers: member types first, then
    every constraint violation at once."""
    if not isinstance(body, dict):
        raise serialization("Start of list found where not expected")
    request: Body = {}
    for member in members:
        value = body.get(member.name)
        if value is not None:
            request[member.name] = member.reader(value)
    errors = constraint_violations(members, request)
    if errors:
        raise constraint_error(errors)
    return request


# --- Legacy parameters ----------------------------------------------------------------------


def translate_legacy(operation: str, request: Body) -> Body:
    """The request with its legacy parameters (KeyConditions, QueryFilter, ScanFilter,
    ConditionalOperator, AttributesToGet) translated into the expression parameters that
    mean the same, with DynamoDB's refusal to mix the two; from here on the request is
    handled as if the client had written expressions."""
    return legacy.translate(operation, request)


def check_start_key_values(request: Body) -> Item | None:
    """ExclusiveStartKey's attribute values, checked before the table is looked up."""
    start = request.get("ExclusiveStartKey")
    if start is None:
        return None
    checked: Item = {}
    for name, value in start.items():
        try:
            checked[name] = validate_value(value)
        except ValidationException as error:
            raise ValidationException(
                f"The provided starting key is invalid: {error.message}"
            ) from None
    return checked


# --- Select ---------------------------------------------------------------------------------


def check_select(select: str | None, projection_parameter: str | None, has_index: bool) -> None:
    """DynamoDB's rules on combining Select with a projection and IndexName.

    `projection_parameter` names the parameter the client gave the projection in
    (ProjectionExpression, or AttributesToGet before its translation); None without one.
    """
    if projection_parameter is not None:
        if select == "ALL_ATTRIBUTES":
            raise ValidationException(
                f"Cannot specify the {projection_parameter} when choosing to get ALL_ATTRIBUTES"
            )
        if select == "ALL_PROJECTED_ATTRIBUTES":
            raise ValidationException(
                f"Cannot specify the {projection_parameter} when choosing to get "
                "ALL_PROJECTED_ATTRIBUTES"
            )
        if select == "COUNT":
            raise ValidationException(
                f"Cannot specify the {projection_parameter} when choosing to get only the Count"
            )
    elif select == "SPECIFIC_ATTRIBUTES":
        raise ValidationException(
            "Must specify the AttributesToGet or ProjectionExpression when choosing to get "
            "SPECIFIC_ATTRIBUTES"
        )
    if select == "ALL_PROJECTED_ATTRIBUTES" and not has_index:
        raise ValidationException(
            "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"
        )


def projection_parameter(operation: str, given: Body, projection: Projection | None) -> str | None:
    """The request parameter the projection came from, as the client wrote it."""
    if projection is None:
        return None
    return legacy.source_parameter(operation, given, "ProjectionExpression")


# --- Sources --------------------------------------------------------------------------------


# The store id of an index: one rule, kept with index maintenance (part of this module's
# interface too, for readers of index entries).
index_id = indexes.index_id


@dataclass(frozen=True, slots=True)
class Source:
    """What a Query or Scan reads: the base table, or one of its secondary indexes."""

    table: Table
    index: SecondaryIndex | None
    index_id: int
    hash_key: KeyAttribute
    range_key: KeyAttribute | None

    @property
    def key_names(self) -> tuple[str, ...]:
        if self.range_key is None:
            return (self.hash_key.name,)
        return (self.hash_key.name, self.range_key.name)

    @property
    def start_key_names(self) -> tuple[str, ...]:
        """The attributes of a LastEvaluatedKey: the table's key, then the index's."""
        names = list(self.table.key_names)
        names.extend(name for name in self.key_names if name not in names)
        return tuple(names)

    @property
    def is_global(self) -> bool:
        return self.index is not None and self.index.is_global

    @property
    def projects_all(self) -> bool:
        return self.index is None or self.index.projection_type == "ALL"

    def projected_names(self) -> frozenset[str] | None:
        """The attributes an index entry holds; None when it holds the whole item."""
        if self.projects_all:
            return None
        assert self.index is not None
        names = set(self.start_key_names)
        if self.index.projection_type == "INCLUDE":
            names.update(self.index.non_key_attributes)
        return frozenset(names)

    def store_key(self, key: Item) -> bytes:
        """The store key of the entry whose key attributes (`start_key_names`) are in `key`."""
        if self.index is None:
            return storage_key(self.table, key)
        table = self.table
        return index_item_key(
            table.table_id,
            self.index_id,
            key[self.hash_key.name],
            None if self.range_key is None else key[self.range_key.name],
            key[table.hash_key.name],
            None if table.range_key is None else key[table.range_key.name],
        )


def source_for(table: Table, index_name: str | None) -> Source:
    """The base table, or the named index ("The table does not have the specified index")."""
    if index_name is None:
        return Source(table, None, 0, table.hash_key, table.range_key)
    index = table.index(index_name)
    if index is None or index.status == STATUS_DELETING:
        raise ValidationException(f"The table does not have the specified index: {index_name}")
    return Source(table, index, index_id(table, index), index.hash_key, index.range_key)


def check_index_read(source: Source, request: Body) -> None:
    """A global index is read eventually consistently only (its entries are propagated
    asynchronously in DynamoDB), so a ConsistentRead on one is refused; and an index still
    being backfilled cannot be read at all."""
    if source.is_global and request.get("ConsistentRead"):
        raise ValidationException("Consistent reads are not supported on global secondary indexes")
    if source.index is not None and source.index.status == STATUS_CREATING:
        # A global index added by UpdateTable answers only once its backfill is done.
        raise ValidationException(
            f"Cannot read from backfilling global secondary index: {source.index.name}"
        )


def fetch_from_table(source: Source, select: str | None, projection: Projection | None) -> bool:
    """Whether a read of a local index must fetch each item from the base table: when the
    request wants attributes the index does not hold. A global index never fetches: asking
    it for everything is refused instead."""
    projected = source.projected_names()
    if projected is None:
        return False
    assert source.index is not None
    if select == "ALL_ATTRIBUTES":
        if source.is_global:
            raise ValidationException(
                "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not "
                f"supported for global secondary index {source.index.name} because its "
                "projection type is not ALL"
            )
        return True
    if projection is not None and not source.is_global:
        return not projection.top_level_attributes() <= projected
    return False


def check_start_key_schema(source: Source, start: Item, *, scan: bool) -> Item:
    """ExclusiveStartKey against the schema, with DynamoDB's messages: exactly the table's
    key attributes (and, for an index, the index's), each of its defined type."""
    names = source.start_key_names
    if len(start) != len(names):
        if scan and source.index is None:
            raise ValidationException(
                "The provided starting key is invalid: "
                "The provided key element does not match the schema"
            )
        raise ValidationException("The provided starting key is invalid")
    if source.index is not None or not scan:
        for attribute in (source.hash_key, source.range_key):
            if attribute is None:
                continue
            value = start.get(attribute.name)
            if value is None:
                raise ValidationException("The provided starting key is invalid")
            if attribute.type not in value:
                raise ValidationException("The provided key element does not match the schema")
    table = source.table
    table_key = {name: start[name] for name in table.key_names if name in start}
    try:
        check_key(table, table_key)
    except ValidationException as error:
        raise ValidationException(
            f"The provided starting key is invalid: {error.message}"
        ) from None
    return start


def check_scalar_key_paths(table: Table, projection: Projection | None) -> None:
    """Key attributes are scalars: a projection path into one (`pk.a`, `sk[0]`) is refused;
    the local indexes' keys are checked before the global ones'."""
    if projection is None:
        return
    check_key_paths(table, projection.paths, table.local_indexes + table.global_indexes)


# --- Pages ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Page:
    """One page of a Query or Scan, before it is rendered as a response."""

    items: list[Item]  # matched (filtered) items, projected; empty for Select COUNT
    count: int  # items that matched the filter
    scanned_count: int  # items read
    last_key: Item | None  # LastEvaluatedKey: set when the page stopped early
    source_bytes: int  # sizes of the entries read from the source (table or index)
    fetched_bytes: int  # sizes of the items fetched from the base table for a local index


def read_page(
    db: Database,
    source: Source,
    entries: Iterator[tuple[bytes, bytes]],
    *,
    limit: int | None,
    filter_: Condition | None,
    projection: Projection | None,
    count_only: bool,
    fetch: bool,
) -> Page:
    """Walk `entries` (a store range of `source`, in the order to return them) until `limit`
    items or `PAGE_BYTES_MAX` bytes have been read, filtering and projecting each."""
    assert limit is None or limit >= LIMIT_MIN, limit
    page = Page([], 0, 0, None, 0, 0)
    last: Item | None = None
    for _key, data in entries:
        item, size = decode_stored(data)
        page.scanned_count += 1
        page.source_bytes += size
        last = item
        if fetch:
            base_key = {name: item[name] for name in source.table.key_names}
            stored = db.store.get(storage_key(source.table, base_key))
            if stored is not None:
                item, base_size = decode_stored(stored)
                page.fetched_bytes += base_size
        if filter_ is None or filter_.evaluate(item):
            page.count += 1
            if not count_only:
                page.items.append(item if projection is None else projection.apply(item))
        full = limit is not None and page.scanned_count >= limit
        if full or page.source_bytes >= PAGE_BYTES_MAX:
            page.last_key = {name: last[name] for name in source.start_key_names}
            break
    return page


def _read_units(size_bytes: int, consistent: bool, *, minimum: bool) -> float:
    # Query and Scan round the summed size of the page up to 4 KB once, not item by item
    # (Developer Guide, "Read consumption for Query/Scan"); a page that reads nothing still
    # consumes one unit's worth. Eventually consistent reads cost half.
    units = -(-size_bytes // READ_UNIT_BYTES)
    if minimum:
        units = max(1, units)
    return units if consistent else units / 2.0


def respond(db: Database, request: Body, source: Source, page: Page) -> Body:
    """The response of one page, with capacity metered and reported as asked."""
    consistent = bool(request.get("ConsistentRead", False))
    source_units = _read_units(page.source_bytes, consistent, minimum=True)
    fetched_units = _read_units(page.fetched_bytes, consistent, minimum=False)
    total = source_units + fetched_units
    meter = items_state(db).read_units
    meter[source.table.name] = meter.get(source.table.name, 0.0) + total

    response: Body = {}
    if request.get("Select") != "COUNT":
        response["Items"] = page.items
    response["Count"] = page.count
    response["ScannedCount"] = page.scanned_count
    if page.last_key is not None:
        response["LastEvaluatedKey"] = page.last_key
    mode = request.get("ReturnConsumedCapacity", "NONE")
    if mode != "NONE":
        consumed: Body = {"TableName": request["TableName"], "CapacityUnits": total}
        if mode == "INDEXES":
            if source.index is None:
                consumed["Table"] = {"CapacityUnits": total}
            else:
                consumed["Table"] = {"CapacityUnits": fetched_units}
                group = "GlobalSecondaryIndexes" if source.is_global else "LocalSecondaryIndexes"
                consumed[group] = {source.index.name: {"CapacityUnits": source_units}}
        response["ConsumedCapacity"] = consumed
    return response
