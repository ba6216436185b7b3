"""The item operations: PutItem, GetItem, UpdateItem and DeleteItem.

This module owns what each of the four requests means and in which order its checks run.
A write goes:

    check the request (`item_requests`: member types, member constraints) -> translate the
    legacy parameters (Expected, ConditionalOperator, AttributeUpdates, AttributesToGet) into
    expressions (`keeldb.expressions.legacy`) -> check which parameters may be combined ->
    check the attribute values (`keeldb.model.values`), ReturnValues and the item size ->
    parse the expressions (`keeldb.expressions`) -> find the table (the catalog) -> check
    the key against the table's key schema -> read the item's LATEST view
    (`item_store`: the newest proposed after-image, else the committed item) -> evaluate the
    condition, then the update -> build a redo record ("put" with the after-image, or
    "delete"; never an operation to re-run) -> `db.propose(record)`, which returns once the
    record is committed and applied -> answer.

The order of the checks is DynamoDB's, and so is the form of each message (the write
operations envelope request-validation errors, `item_requests.enveloped`), so that a request
with several faults gets the same error from us as from DynamoDB: everything that needs no table comes before the table lookup
(a malformed request for a missing table is a ValidationException, a well-formed one a
ResourceNotFoundException), and key checks come after it. Between reading the latest view and
appending the record there is no await, so the condition of a write is evaluated against
exactly the state that precedes it in the log. GetItem reads committed state only.

The other data-plane operations build on this module and on `item_store`: `find_table`,
`check_key` / `check_item_key` / `check_index_keys` (the key rules), `write_item` (one validated
write as one redo record), and `item_store.storage_key`, `committed_item`, `latest_item`,
`decode_stored` and `table_stats`. Index maintenance lives in the appliers
(`keeldb.engine.indexes`): from the old and new images and the table's indexes they derive the
index entries, inside the same atomic store write as the item, so that base and indexes can
never disagree; a write here adds what each index costs (`indexes.write_capacity`) to its
consumed capacity and refuses to grow an item collection past 10 GB.

It never touches the store's bytes directly (that is `item_store`), never parses an
expression itself, and never does IO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keeldb.engine import catalog
from keeldb.engine.database import Database, operation, redo_kind
from keeldb.engine.indexes import (
    IndexUnits,
    changes_capacity,
    check_changes_collection_size,
    collection_bytes,
    plan,
)
from keeldb.engine.item_requests import check_expression_parameters, enveloped, read_request
from keeldb.engine.item_store import (
    Item,
    apply_item_write,
    committed_item,
    encode_item,
    items_state,
    latest_item,
    propose_write,
    storage_key,
    table_stats,
)
from keeldb.expressions import (
    Condition,
    ExpressionContext,
    Projection,
    Update,
    UpdateEffect,
    legacy,
)
from keeldb.model.capacity import read_units, write_units
from keeldb.model.errors import (
    ConditionalCheckFailedException,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.model.limits import ITEM_BYTES_MAX, PARTITION_KEY_BYTES_MAX, SORT_KEY_BYTES_MAX
from keeldb.model.values import (
    attribute_size,
    decode_binary,
    item_size,
    validate_item,
    validate_item_sized,
    value_type,
)

if TYPE_CHECKING:
    from keeldb.engine.schema import KeyAttribute, SecondaryIndex, Table

# What the other data-plane operations (Query, Scan, the batches) build on.
__all__ = [
    "check_index_keys",
    "check_item_key",
    "check_key",
    "find_table",
    "table_stats",
    "write_item",
]

Body = dict[str, Any]

INVALID = "One or more parameter values were invalid: "
NOT_VALID = "One or more parameter values are not valid. "
KEY_SCHEMA_MESSAGE = "The provided key element does not match the schema"
TABLE_NOT_FOUND_MESSAGE = "Requested resource not found"
ITEM_TOO_BIG_MESSAGE = "Item size has exceeded the maximum allowed size"
UPDATED_ITEM_TOO_BIG_MESSAGE = "Item size to update has exceeded the maximum allowed size"
PUT_DELETE_RETURN_VALUES_MESSAGE = "ReturnValues can only be ALL_OLD or NONE"
HASH_KEY_TOO_BIG_MESSAGE = (
    INVALID
    + f"Size of hashkey has exceeded the maximum size limit of{PARTITION_KEY_BYTES_MAX} bytes"
)
RANGE_KEY_TOO_BIG_MESSAGE = (
    INVALID
    + f"Aggregated size of all range keys has exceeded the size limit of {SORT_KEY_BYTES_MAX} bytes"
)
GIGABYTE_BYTES = 1024**3  # SizeEstimateRangeGB is in GB

# Tables in these states answer item operations; CREATING and DELETING ones do not exist yet,
# or no more, for the data plane (DynamoDB answers "Requested resource not found").
SERVING_STATUSES = frozenset({"ACTIVE", "UPDATING"})


# --- Tables and keys ------------------------------------------------------------------------


def find_table(db: Database, name: str) -> Table:
    """The table an item operation addresses, or DynamoDB's ResourceNotFoundException."""
    table = catalog.find_table(db, name)
    if table is None or table.status not in SERVING_STATUSES:
        raise ResourceNotFoundException(TABLE_NOT_FOUND_MESSAGE)
    return table


def _key_attributes(table: Table) -> list[tuple[KeyAttribute, bool]]:
    """The table's key attributes with whether each is the partition (hash) key."""
    attributes = [(table.hash_key, True)]
    if table.range_key is not None:
        attributes.append((table.range_key, False))
    return attributes


def _raw_length(value: dict[str, Any], type_: str) -> int | None:
    """Bytes of an S or B value; None for a number (numbers have no key size limit)."""
    if type_ == "S":
        return len(value["S"].encode("utf-8"))
    if type_ == "B":
        return len(decode_binary(value["B"]))
    return None


def _check_key_value(attribute: KeyAttribute, value: dict[str, Any], is_hash: bool) -> None:
    length = _raw_length(value, attribute.type)
    if length is None:
        return
    if length == 0:
        kind = "string" if attribute.type == "S" else "binary"
        raise ValidationException(
            NOT_VALID + "The AttributeValue for a key attribute cannot contain an empty "
            f"{kind} value. Key: {attribute.name}"
        )
    if is_hash and length > PARTITION_KEY_BYTES_MAX:
        raise ValidationException(HASH_KEY_TOO_BIG_MESSAGE)
    if not is_hash and length > SORT_KEY_BYTES_MAX:
        raise ValidationException(RANGE_KEY_TOO_BIG_MESSAGE)


def check_key(table: Table, key: Item) -> Item:
    """A Key parameter must name exactly the table's key attributes, with their types."""
    attributes = _key_attributes(table)
    if len(key) != len(attributes):
        raise ValidationException(KEY_SCHEMA_MESSAGE)
    for attribute, is_hash in attributes:
        value = key.get(attribute.name)
        if value is None or attribute.type not in value:
            raise ValidationException(KEY_SCHEMA_MESSAGE)
    for attribute, is_hash in attributes:
        _check_key_value(attribute, key[attribute.name], is_hash)
    return key


def _indexes(table: Table) -> tuple[SecondaryIndex, ...]:
    return table.global_indexes + table.local_indexes


def check_item_key(table: Table, item: Item) -> Item:
    """A PutItem's Item must hold the key attributes with their types; index key attributes,
    when present, must have the types of their definitions. Returns the item's key."""
    key: Item = {}
    for attribute, is_hash in _key_attributes(table):
        value = item.get(attribute.name)
        if value is None:
            raise ValidationException(INVALID + f"Missing the key {attribute.name} in the item")
        if attribute.type not in value:
            raise ValidationException(
                INVALID + f"Type mismatch for key {attribute.name} expected: {attribute.type} "
                f"actual: {value_type(value)}"
            )
        _check_key_value(attribute, value, is_hash)
        key[attribute.name] = value
    check_index_keys(table, item, by_update=False)
    return key


def check_index_keys(
    table: Table, item: Item, *, by_update: bool, names: frozenset[str] | None = None
) -> None:
    """Attributes that key a secondary index must have the type the index was defined with,
    and must not be empty (items without them are simply absent from the index). An update
    checks only the attributes it writes (`names`)."""
    for index in _indexes(table):
        for attribute in (index.hash_key, index.range_key):
            if attribute is None or attribute.name in table.key_names:
                continue
            if names is not None and attribute.name not in names:
                continue
            value = item.get(attribute.name)
            if value is None:
                continue
            expected = attribute.type
            if expected not in value:
                raise ValidationException(
                    INVALID + f"Type mismatch for Index Key {attribute.name} Expected: "
                    f"{expected} Actual: {value_type(value)} IndexName: {index.name}"
                )
            length = _raw_length(value, expected)
            # Index keys have the table's key size limits (Developer Guide, "Quotas": the
            # partition key of an index is at most 2048 bytes, its sort key 1024 bytes).
            if (
                length is not None
                and attribute is index.hash_key
                and length > PARTITION_KEY_BYTES_MAX
            ):
                raise ValidationException(HASH_KEY_TOO_BIG_MESSAGE)
            if length is not None and attribute is index.range_key and length > SORT_KEY_BYTES_MAX:
                raise ValidationException(RANGE_KEY_TOO_BIG_MESSAGE)
            if length == 0:
                kind = "string" if expected == "S" else "binary"
                if by_update:
                    raise ValidationException(
                        NOT_VALID + "The update expression attempted to update a secondary "
                        "index key to a value that is not supported. The AttributeValue for a "
                        f"key attribute cannot contain an empty {kind} value."
                    )
                raise ValidationException(
                    NOT_VALID + "A value specified for a secondary index key is not supported. "
                    f"The AttributeValue for a key attribute cannot contain an empty {kind} "
                    f"value. IndexName: {index.name}, IndexKey: {attribute.name}"
                )


def check_scalar_key_paths(
    table: Table,
    paths: Sequence[tuple[str | int, ...]],
    indexes: Sequence[SecondaryIndex],
) -> None:
    """Key attributes, of the table and of its indexes, are scalars: a document path that
    goes into one (`pk.a`, `gk[0]`) is refused before any item is read. The table's key is
    checked first, then `indexes` in the order given; the first key found is the one named."""
    nested = {path[0] for path in paths if len(path) > 1}
    if not nested:
        return
    for name in table.key_names:
        if name in nested:
            raise ValidationException(
                "Key attributes must be scalars; list random access '[]' and map lookup '.' "
                f"are not allowed: Key: {name}"
            )
    for index in indexes:
        for name in index.key_names:
            if name in nested:
                raise ValidationException(
                    "Key attributes must be scalars; list random access '[]' and map lookup "
                    f"'.' are not allowed: IndexKey: {name}"
                )


# --- Expressions ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Parsed:
    """The compiled expressions of one request; None where the request has none."""

    condition: Condition | None = None
    update: Update | None = None
    projection: Projection | None = None


def _parse_expressions(request: Body) -> _Parsed:
    """Parse the request's expressions in DynamoDB's order (update, condition, projection),
    then refuse unused names and values."""
    parsed = _Parsed()
    names = request.get("ExpressionAttributeNames")
    values = request.get("ExpressionAttributeValues")
    if (
        names is None
        and values is None
        and "UpdateExpression" not in request
        and "ConditionExpression" not in request
        and "ProjectionExpression" not in request
    ):
        return parsed
    context = ExpressionContext(names, values)
    if "UpdateExpression" in request:
        parsed.update = context.update(request["UpdateExpression"])
    if "ConditionExpression" in request:
        parsed.condition = context.condition(request["ConditionExpression"])
    if "ProjectionExpression" in request:
        parsed.projection = context.projection(request["ProjectionExpression"])
    context.check_unused()
    return parsed


# --- Answers --------------------------------------------------------------------------------


def _consumed(
    request: Body, table: Table, units: float, index_units: Sequence[IndexUnits] = ()
) -> dict[str, Any] | None:
    """ConsumedCapacity: TOTAL is the table's units plus every index's; INDEXES breaks the
    total down into the table and each index the write touched (Developer Guide, "Capacity
    unit consumption for writes to secondary indexes")."""
    mode = request.get("ReturnConsumedCapacity", "NONE")
    if mode == "NONE":
        return None
    total = units + sum(i.units for i in index_units)
    # TableName as the request gave it: the name, or the ARN (API reference, ConsumedCapacity).
    consumed: dict[str, Any] = {"TableName": request["TableName"], "CapacityUnits": total}
    if mode == "INDEXES":
        consumed["Table"] = {"CapacityUnits": units}
        for group, is_global in (
            ("LocalSecondaryIndexes", False),
            ("GlobalSecondaryIndexes", True),
        ):
            touched = {
                i.name: {"CapacityUnits": i.units} for i in index_units if i.is_global == is_global
            }
            if touched:
                consumed[group] = touched
    return consumed


def _collection_metrics(
    db: Database, request: Body, table: Table, key: Item
) -> dict[str, Any] | None:
    """ItemCollectionMetrics: only asked for with SIZE, and only reported for a table with
    local secondary indexes (the item collection limit exists only there). The size counts
    the collection's items and their local index entries (`indexes.collection_bytes`)."""
    if request.get("ReturnItemCollectionMetrics", "NONE") != "SIZE" or not table.local_indexes:
        return None
    hash_value = key[table.hash_key.name]
    size = collection_bytes(db, table, hash_value)
    low = float(size // GIGABYTE_BYTES)
    return {
        "ItemCollectionKey": {table.hash_key.name: hash_value},
        "SizeEstimateRangeGB": [low, low + 1.0],
    }


def _meter_write(db: Database, table: Table, units: float) -> None:
    meter = items_state(db).write_units
    meter[table.name] = meter.get(table.name, 0.0) + units


def _meter_read(db: Database, table: Table, units: float) -> None:
    meter = items_state(db).read_units
    meter[table.name] = meter.get(table.name, 0.0) + units


def _write_response(
    db: Database,
    request: Body,
    table: Table,
    key: Item,
    units: float,
    attributes: Item | None,
    index_units: Sequence[IndexUnits] = (),
) -> Body:
    response: Body = {}
    if attributes:
        response["Attributes"] = attributes
    consumed = _consumed(request, table, units, index_units)
    if consumed is not None:
        response["ConsumedCapacity"] = consumed
    metrics = _collection_metrics(db, request, table, key)
    if metrics is not None:
        response["ItemCollectionMetrics"] = metrics
    return response


def _check_condition(
    db: Database, request: Body, table: Table, parsed: _Parsed, old: Item | None, units: float
) -> None:
    """Raise ConditionalCheckFailedException if the condition is false on the latest view. The
    failed write still consumes write capacity, as in DynamoDB."""
    if parsed.condition is None or parsed.condition.evaluate(old):
        return
    _meter_write(db, table, units)
    item = None
    if request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and old is not None:
        item = old
    raise ConditionalCheckFailedException(item=item)


async def write_item(
    db: Database, table: Table, key: bytes, image: Item | None, size: int, units: float
) -> None:
    """Write the validated after-image `image` (`size` bytes; None: delete) at store key `key`
    and charge `units` write units: one redo record, proposed, committed and applied. Its
    applier derives the secondary index entries from the old and new images.

    The record holds the after-image itself, never the request that produced it. The caller
    has read the latest view of the item and decided on it without awaiting since (and has
    added the index write units, `indexes.write_capacity`, to `units`).
    """
    record: dict[str, Any] = {"table": table.table_id, "name": table.name, "key": key}
    if image is None:
        record["kind"] = "delete"
    else:
        # The after-image as the store will hold it: encoded once here, copied by the applier.
        record.update(kind="put", value=encode_item(image, size))
    # Flat: str and bytes values only, so it decodes to an equal record (`Database.propose`).
    await propose_write(db, key, image, size, record, round_trips=True)
    _meter_write(db, table, units)


# --- Operations -----------------------------------------------------------------------------


@operation("PutItem")
async def put_item(db: Database, body: Body) -> Body:
    given = read_request("PutItem", body)
    try:
        request = legacy.translate("PutItem", given)
        check_expression_parameters(request, ("ConditionExpression",))
        item, size = validate_item_sized(request["Item"])
        if request.get("ReturnValues", "NONE") not in ("ALL_OLD", "NONE"):
            raise ValidationException(PUT_DELETE_RETURN_VALUES_MESSAGE)
    except ValidationException as error:
        raise enveloped(error) from None
    if size > ITEM_BYTES_MAX:
        raise ValidationException(ITEM_TOO_BIG_MESSAGE)
    try:
        parsed = _parse_expressions(request)
    except ValidationException as error:
        raise enveloped(error) from None
    table = find_table(db, request["TableName"])
    key = check_item_key(table, item)
    skey = storage_key(table, key)

    old, old_size = latest_item(db, skey)
    units = write_units(max(size, old_size))
    _check_condition(db, request, table, parsed, old, units)
    changes = plan(table, old, old_size, item, size)
    check_changes_collection_size(db, table, changes, item, size - old_size)
    index_units = changes_capacity(changes)
    await write_item(db, table, skey, item, size, units + sum(i.units for i in index_units))
    attributes = old if request.get("ReturnValues") == "ALL_OLD" else None
    return _write_response(db, request, table, key, units, attributes, index_units)


@operation("GetItem")
async def get_item(db: Database, body: Body) -> Body:
    request = legacy.translate("GetItem", read_request("GetItem", body))
    check_expression_parameters(request, ("ProjectionExpression",))
    key = validate_item(request["Key"])
    parsed = _parse_expressions(request)
    table = find_table(db, request["TableName"])
    check_key(table, key)
    if parsed.projection is not None:
        check_scalar_key_paths(table, parsed.projection.paths, _indexes(table))

    item, size = committed_item(db, storage_key(table, key))
    consistent = bool(request.get("ConsistentRead", False))
    units = read_units(size, consistent=consistent)
    _meter_read(db, table, units)
    response: Body = {}
    if item is not None:
        response["Item"] = item if parsed.projection is None else parsed.projection.apply(item)
    consumed = _consumed(request, table, units)
    if consumed is not None:
        response["ConsumedCapacity"] = consumed
    return response


@operation("UpdateItem")
async def update_item(db: Database, body: Body) -> Body:
    given = read_request("UpdateItem", body)
    try:
        request = legacy.translate("UpdateItem", given)
        check_expression_parameters(request, ("UpdateExpression", "ConditionExpression"))
        key = validate_item(request["Key"])
        parsed = _parse_expressions(request)
    except ValidationException as error:
        raise enveloped(error) from None
    table = find_table(db, request["TableName"])
    check_key(table, key)
    updated: frozenset[str] = frozenset()
    if parsed.update is not None:
        updated = frozenset(parsed.update.top_level_attributes())
        for name in table.key_names:
            if name in updated:
                raise ValidationException(
                    INVALID + f"Cannot update attribute {name}. This attribute is part of the key"
                )
        check_scalar_key_paths(table, parsed.update.paths, _indexes(table))
    skey = storage_key(table, key)

    old, old_size = latest_item(db, skey)
    _check_condition(db, request, table, parsed, old, write_units(old_size))
    # The update builds a new item and never changes `base` (which may be a pending image).
    base: Item = old if old is not None else dict(key)
    effect: UpdateEffect | None = None
    if parsed.update is None:
        new = base
    else:
        try:
            new, effect = parsed.update.apply(base)
        except ValidationException as error:
            # A type fault of a translated AttributeUpdates action has its legacy wording.
            raise legacy.update_error(given, error) from None
    size = _updated_size(old, old_size, new, updated)
    if size > ITEM_BYTES_MAX:
        raise ValidationException(UPDATED_ITEM_TOO_BIG_MESSAGE)
    check_index_keys(table, new, by_update=True, names=updated)
    units = write_units(max(size, old_size))
    changes = plan(table, old, old_size, new, size)
    check_changes_collection_size(db, table, changes, new, size - old_size)
    index_units = changes_capacity(changes)
    await write_item(db, table, skey, new, size, units + sum(i.units for i in index_units))
    attributes = _update_return_values(request.get("ReturnValues", "NONE"), old, new, effect)
    return _write_response(db, request, table, key, units, attributes, index_units)


def _updated_size(old: Item | None, old_size: int, new: Item, updated: frozenset[str]) -> int:
    """The size of the updated item: the old size, less the old form of every top-level
    attribute the update wrote or removed, plus its new form; the others are the old item's,
    unchanged (sizes are additive over top-level attributes). Measured whole when there was
    no old item, or no update."""
    if old is None or not updated:
        return item_size(new)
    size = old_size
    for name in updated:
        before = old.get(name)
        if before is not None:
            size -= attribute_size(name, before)
        after = new.get(name)
        if after is not None:
            size += attribute_size(name, after)
    return size


def _update_return_values(
    mode: str, old: Item | None, new: Item, effect: UpdateEffect | None
) -> Item | None:
    if mode == "ALL_OLD":
        return old
    if mode == "ALL_NEW":
        return new
    if mode == "UPDATED_OLD":
        return None if old is None or effect is None else effect.updated_old()
    if mode == "UPDATED_NEW":
        return None if effect is None else effect.updated_new()
    return None


@operation("DeleteItem")
async def delete_item(db: Database, body: Body) -> Body:
    given = read_request("DeleteItem", body)
    try:
        request = legacy.translate("DeleteItem", given)
        check_expression_parameters(request, ("ConditionExpression",), name_null_expressions=False)
        key = validate_item(request["Key"])
        if request.get("ReturnValues", "NONE") not in ("ALL_OLD", "NONE"):
            raise ValidationException(PUT_DELETE_RETURN_VALUES_MESSAGE)
        parsed = _parse_expressions(request)
    except ValidationException as error:
        raise enveloped(error) from None
    table = find_table(db, request["TableName"])
    check_key(table, key)
    skey = storage_key(table, key)

    old, old_size = latest_item(db, skey)
    units = write_units(old_size)
    _check_condition(db, request, table, parsed, old, units)
    # A delete of a missing item is still a write: it is logged, ordered and charged.
    index_units = changes_capacity(plan(table, old, old_size, None, 0))
    await write_item(db, table, skey, None, 0, units + sum(i.units for i in index_units))
    attributes = old if request.get("ReturnValues") == "ALL_OLD" else None
    return _write_response(db, request, table, key, units, attributes, index_units)


# --- Appliers -------------------------------------------------------------------------------


@redo_kind("put")
def apply_put(db: Database, lsn: int, record: dict[str, Any]) -> None:
    apply_item_write(db, lsn, record)


@redo_kind("delete")
def apply_delete(db: Database, lsn: int, record: dict[str, Any]) -> None:
    apply_item_write(db, lsn, record)
