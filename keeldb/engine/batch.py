"""BatchGetItem and BatchWriteItem: many independent item reads, or puts and deletes, in one
request, across tables.

This module owns the batch requests' limits (`BATCH_GET_KEYS_MAX`, `BATCH_WRITE_ITEMS_MAX`,
`BATCH_GET_BYTES_MAX`), their checks in DynamoDB's order, and their answers (Responses and
UnprocessedKeys, UnprocessedItems, ConsumedCapacity per table, ItemCollectionMetrics).

BatchGetItem reads committed state, key by key, and stops adding items to the response
before it would pass 16 MB: the keys not read are returned in UnprocessedKeys with the
table's parameters as the client gave them (ProjectionExpression or AttributesToGet,
ExpressionAttributeNames, ConsistentRead), ready to resend.

BatchWriteItem validates every request of the batch (attribute values, item sizes, tables,
keys, duplicates, the item collection limit) before it writes anything, so that a bad
request changes nothing. It then writes all its puts and deletes as ONE redo record
("batch_write": the fields of a "put" or "delete" record per item, in request order),
applied as one atomic store write in which each item's changes (the item, its index
entries, statistics, stream record) are built over the state the items before it left,
exactly as PutItem's and DeleteItem's appliers build them. One record rather than one per
item is a matter of cost: one log record, one encoding, one proposal and one store write
for up to 25 items. It is stricter than DynamoDB needs (a BatchWriteItem is not atomic
there, and each write may come back in UnprocessedItems on its own), never weaker: the
writes of one batch are applied all or none. In a cluster each partition's share of a
batch is its own request (`keeldb.cluster.router`), so a record never spans replica groups.
The keys of one batch are distinct (duplicates are refused), every after-image joins the
pending overlay before the proposal's first await, and an item held by a prepared
transaction refuses the batch before anything is proposed. Only a failure of the log
itself (an operating error, not a client one) fails the batch; the client retries it, and
its writes are idempotent.

It never touches the store's bytes (that is `item_store`) and never does IO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from keeldb.engine import paging
from keeldb.engine.database import Database, operation, redo_kind
from keeldb.engine.indexes import (
    IndexUnits,
    check_collection_size,
    collection_bytes,
    write_capacity,
)
from keeldb.engine.item_store import (
    Item,
    apply_items_write,
    committed_item,
    encode_item,
    items_state,
    latest_item,
    propose_writes,
    storage_key,
)
from keeldb.engine.items import check_item_key, check_key, find_table
from keeldb.engine.paging import Body, Member
from keeldb.engine.schema import Table
from keeldb.expressions import Projection, compile_request
from keeldb.model.capacity import read_units, write_units
from keeldb.model.errors import SerializationException, ValidationException
from keeldb.model.limits import (
    BATCH_GET_BYTES_MAX,
    BATCH_GET_KEYS_MAX,
    BATCH_WRITE_ITEMS_MAX,
    ITEM_BYTES_MAX,
    TABLE_NAME_LENGTH_MAX,
    TABLE_NAME_LENGTH_MIN,
    TABLE_NAME_PATTERN,
    TABLE_NAME_RE,
)
from keeldb.model.request_shapes import TABLE_ARN_LENGTH_MAX
from keeldb.model.values import validate_item, validate_item_sized

# The redo record of one BatchWriteItem: all its puts and deletes, applied as one store write.
ITEMS_RECORD_KIND = "batch_write"
DUPLICATES_MESSAGE = "Provided list of item keys contains duplicates"
TOO_MANY_GETS_MESSAGE = "Too many items requested for the BatchGetItem call"
TOO_MANY_WRITES_MESSAGE = "Too many items requested for the BatchWriteItem call"
KEY_SCHEMA_MESSAGE = "The provided key element does not match the schema"
ITEM_TOO_BIG_MESSAGE = "Item size has exceeded the maximum allowed size"
# DynamoDB's answer to a WriteRequest holding neither or both of PutRequest and DeleteRequest.
WRITE_REQUEST_SHAPE_MESSAGE = (
    "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the "
    "supported datatypes"
)
GIGABYTE_BYTES = 1024**3  # SizeEstimateRangeGB is in GB.
RETURN_ITEM_COLLECTION_METRICS = ("SIZE", "NONE")


def _violation(path: str, value: str, constraint: str) -> str:
    return f"Value {value} at '{path}' failed to satisfy constraint: {constraint}"


def _check_enum(request: Body, name: str, allowed: Sequence[str], errors: list[str]) -> None:
    """A violation in `errors` if the request's member `name` is not one of `allowed`."""
    value = request.get(name)
    if value is not None and value not in allowed:
        errors.append(
            _violation(
                name[0].lower() + name[1:],
                f"'{value}'",
                f"Member must satisfy enum value set: [{', '.join(allowed)}]",
            )
        )


def _render(value: Any) -> str:
    """A member's value as DynamoDB's constraint messages show it (Java's toString shape)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


def _table_name_constraints(name: str) -> list[str]:
    if name.startswith("arn:"):
        # A table may be named by its ARN (API reference, "RequestItems"), up to 1024 chars.
        if len(name) > TABLE_ARN_LENGTH_MAX:
            limit = TABLE_ARN_LENGTH_MAX
            return [f"Member must have length less than or equal to {limit}"]
        return []
    problems = []
    if len(name) > TABLE_NAME_LENGTH_MAX:
        problems.append(f"Member must have length less than or equal to {TABLE_NAME_LENGTH_MAX}")
    if len(name) < TABLE_NAME_LENGTH_MIN:
        problems.append(f"Member must have length greater than or equal to {TABLE_NAME_LENGTH_MIN}")
    if not TABLE_NAME_RE.fullmatch(name):
        problems.append(f"Member must satisfy regular expression pattern: {TABLE_NAME_PATTERN}")
    return problems


def _request_items(body: Any, reader: Any) -> Body:
    """RequestItems: a map of table name to what the batch asks of that table."""
    value = body.get("RequestItems")
    if value is None:
        return {}
    return {name: reader(v) for name, v in paging.as_map(value).items() if v is not None}


def _check_request_items(
    request_items: dict[str, Any] | None, length_of: Any, length_max: int, errors: list[str]
) -> None:
    if request_items is None:
        errors.append(
            "Value null at 'requestItems' failed to satisfy constraint: Member must not be null"
        )
        return
    if not request_items:
        errors.append(
            _violation("requestItems", "'{}'", "Member must have length greater than or equal to 1")
        )
        return
    for name in request_items:
        if _table_name_constraints(name):
            # DynamoDB lists every constraint on the map's keys, not only the broken ones.
            constraints = (
                f"Member must have length less than or equal to {TABLE_NAME_LENGTH_MAX}",
                f"Member must have length greater than or equal to {TABLE_NAME_LENGTH_MIN}",
                f"Member must satisfy regular expression pattern: {TABLE_NAME_PATTERN}",
            )
            errors.append(
                _violation(
                    "requestItems",
                    f"'{_render(request_items)}'",
                    "Map keys must satisfy constraint: [" + ", ".join(constraints) + "]",
                )
            )
            break
    for name, value in request_items.items():
        length = length_of(name, value)
        if length is None:
            continue
        if length > length_max or length < 1:
            errors.append(
                _violation(
                    "requestItems",
                    f"'{_render(request_items)}'",
                    "Map value must satisfy constraint: [Member must have length less than or "
                    f"equal to {length_max}, Member must have length greater than or equal to 1]",
                )
            )
            break


def _key_identity(key: Item) -> bytes:
    """The same bytes for equal keys (canonical values, attribute order ignored)."""
    return msgpack.packb(sorted(key.items()), use_bin_type=True)


@dataclass(slots=True)
class _Capacity:
    """The units one table consumed in a batch: its own and, for writes, each index's."""

    table_units: float = 0.0
    index_units: dict[tuple[bool, str], float] = field(default_factory=dict)

    def add_indexes(self, units: Sequence[IndexUnits]) -> None:
        for entry in units:
            key = (entry.is_global, entry.name)
            self.index_units[key] = self.index_units.get(key, 0.0) + entry.units

    @property
    def total(self) -> float:
        return self.table_units + sum(self.index_units.values())


def _consumed(request: Body, capacities: dict[str, _Capacity]) -> list[Body] | None:
    """ConsumedCapacity, one entry per table: TOTAL sums the table's and its indexes' units;
    INDEXES breaks them down as a single write's ConsumedCapacity does."""
    mode = request.get("ReturnConsumedCapacity", "NONE")
    if mode == "NONE":
        return None
    consumed = []
    for name, capacity in capacities.items():
        entry: Body = {"TableName": name, "CapacityUnits": capacity.total}
        if mode == "INDEXES":
            entry["Table"] = {"CapacityUnits": capacity.table_units}
            for group, is_global in (
                ("LocalSecondaryIndexes", False),
                ("GlobalSecondaryIndexes", True),
            ):
                touched = {
                    index: {"CapacityUnits": units}
                    for (global_, index), units in capacity.index_units.items()
                    if global_ == is_global
                }
                if touched:
                    entry[group] = touched
        consumed.append(entry)
    return consumed


# --- BatchGetItem -----------------------------------------------------------------------------

_KEYS_AND_ATTRIBUTES = (
    Member("Keys", paging.as_list),
    Member("AttributesToGet", paging.string_list),
    Member("ConsistentRead", paging.as_boolean),
    Member("ProjectionExpression", paging.as_string),
    Member("ExpressionAttributeNames", paging.string_map),
)


def _keys_and_attributes(value: Any) -> Body:
    structure = paging.as_structure(value)
    read: Body = {}
    for member in _KEYS_AND_ATTRIBUTES:
        member_value = structure.get(member.name)
        if member_value is not None:
            read[member.name] = member.reader(member_value)
    if "Keys" in read:
        read["Keys"] = [paging.attribute_map(key) for key in read["Keys"] if key is not None]
    return read


@dataclass(slots=True)
class _GetTable:
    name: str
    spec: Body  # the table's KeysAndAttributes as the client gave it (for UnprocessedKeys)
    keys: list[Item]
    projection: Projection | None
    table: Table | None = None


def _read_batch_get(body: Any) -> tuple[Body, list[_GetTable]]:
    if not isinstance(body, dict):
        raise SerializationException("Start of list found where not expected")
    request: Body = {}
    if body.get("ReturnConsumedCapacity") is not None:
        request["ReturnConsumedCapacity"] = paging.as_string(body["ReturnConsumedCapacity"])
    request_items = (
        _request_items(body, _keys_and_attributes) if body.get("RequestItems") is not None else None
    )
    errors: list[str] = []
    _check_enum(request, "ReturnConsumedCapacity", paging.RETURN_CONSUMED_CAPACITY, errors)
    _check_request_items(request_items, lambda name, spec: None, 0, errors)
    for name, spec in (request_items or {}).items():
        given_keys = spec.get("Keys")
        path = f"requestItems.{name}.member.keys"
        if given_keys is None:
            errors.append(_violation(path, "null", "Member must not be null"))
        elif len(given_keys) > BATCH_GET_KEYS_MAX:
            errors.append(
                _violation(
                    path,
                    f"'{_render(given_keys)}'",
                    f"Member must have length less than or equal to {BATCH_GET_KEYS_MAX}",
                )
            )
        elif not given_keys:
            errors.append(
                _violation(path, "'[]'", "Member must have length greater than or equal to 1")
            )
    if errors:
        raise paging.constraint_error(errors[: paging.CONSTRAINT_ERRORS_MAX])
    assert request_items is not None
    request["RequestItems"] = request_items

    tables: list[_GetTable] = []
    requested = 0
    for name, given in request_items.items():
        # A table's AttributesToGet is translated as GetItem's is.
        spec = paging.translate_legacy("GetItem", given)
        seen: set[bytes] = set()
        keys: list[Item] = []
        for raw in spec["Keys"]:
            key = validate_item(raw)
            identity = _key_identity(key)
            if identity in seen:
                raise ValidationException(DUPLICATES_MESSAGE)
            seen.add(identity)
            keys.append(key)
            requested += 1
            if requested > BATCH_GET_KEYS_MAX:
                raise ValidationException(TOO_MANY_GETS_MESSAGE)
        compiled = compile_request(spec, ("ProjectionExpression",), ("AttributesToGet",))
        tables.append(_GetTable(name, given, keys, compiled.projection))
    return request, tables


def _unprocessed_spec(spec: Body) -> Body:
    kept = {k: v for k, v in spec.items() if k != "Keys"}
    return {"Keys": [], **kept}


@operation("BatchGetItem")
async def batch_get_item(db: Database, body: Body) -> Body:
    request, tables = _read_batch_get(body)
    for entry in tables:
        entry.table = find_table(db, entry.name)
        for key in entry.keys:
            check_key(entry.table, key)
        paging.check_scalar_key_paths(entry.table, entry.projection)

    responses: dict[str, list[Item]] = {}
    unprocessed: dict[str, Body] = {}
    capacities: dict[str, _Capacity] = {}
    response_bytes = 0
    meter = items_state(db).read_units
    for entry in tables:
        table = entry.table
        assert table is not None
        consistent = bool(entry.spec.get("ConsistentRead", False))
        found = responses.setdefault(entry.name, [])
        table_units = 0.0
        for key in entry.keys:
            if entry.name in unprocessed:
                unprocessed[entry.name]["Keys"].append(key)
                continue
            item, size = committed_item(db, storage_key(table, key))
            if item is not None and response_bytes + size > BATCH_GET_BYTES_MAX:
                # The response would pass 16 MB: this key and the rest come back unprocessed.
                unprocessed[entry.name] = _unprocessed_spec(entry.spec)
                unprocessed[entry.name]["Keys"].append(key)
                continue
            table_units += read_units(size, consistent=consistent)
            if item is not None:
                response_bytes += size
                found.append(item if entry.projection is None else entry.projection.apply(item))
        capacities[entry.name] = _Capacity(table_units)
        meter[table.name] = meter.get(table.name, 0.0) + table_units

    response: Body = {"Responses": responses, "UnprocessedKeys": unprocessed}
    consumed = _consumed(request, capacities)
    if consumed is not None:
        response["ConsumedCapacity"] = consumed
    return response


# --- BatchWriteItem ---------------------------------------------------------------------------


def _write_request(value: Any) -> Body:
    structure = paging.as_structure(value)
    read: Body = {}
    put = structure.get("PutRequest")
    if put is not None:
        put = paging.as_structure(put)
        item = put.get("Item")
        read["PutRequest"] = {"Item": None if item is None else paging.attribute_map(item)}
    delete = structure.get("DeleteRequest")
    if delete is not None:
        delete = paging.as_structure(delete)
        key = delete.get("Key")
        read["DeleteRequest"] = {"Key": None if key is None else paging.attribute_map(key)}
    return read


def _write_requests(value: Any) -> list[Body]:
    return [_write_request(v) for v in paging.as_list(value) if v is not None]


@dataclass(slots=True)
class _Write:
    table_name: str
    image: Item | None  # None: a delete
    key: Item  # the raw Key of a delete, or the key of the put's item once the table is known
    size: int = 0


def _read_batch_write(body: Any) -> tuple[Body, list[_Write]]:
    if not isinstance(body, dict):
        raise SerializationException("Start of list found where not expected")
    request: Body = {}
    for name in ("ReturnConsumedCapacity", "ReturnItemCollectionMetrics"):
        if body.get(name) is not None:
            request[name] = paging.as_string(body[name])
    request_items = (
        _request_items(body, _write_requests) if body.get("RequestItems") is not None else None
    )
    errors: list[str] = []
    _check_enum(request, "ReturnConsumedCapacity", paging.RETURN_CONSUMED_CAPACITY, errors)
    _check_enum(request, "ReturnItemCollectionMetrics", RETURN_ITEM_COLLECTION_METRICS, errors)
    _check_request_items(
        request_items, lambda name, writes: len(writes), BATCH_WRITE_ITEMS_MAX, errors
    )
    for name, table_writes in (request_items or {}).items():
        for number, write in enumerate(table_writes, start=1):
            for kind, member in (("PutRequest", "Item"), ("DeleteRequest", "Key")):
                if kind in write and write[kind][member] is None:
                    path = f"requestItems.{name}.member.{number}.member.{kind[0].lower()}"
                    path += f"{kind[1:]}.{member.lower()}"
                    errors.append(_violation(path, "null", "Member must not be null"))
    if errors:
        raise paging.constraint_error(errors[: paging.CONSTRAINT_ERRORS_MAX])
    assert request_items is not None

    writes: list[_Write] = []
    for name, requests in request_items.items():
        for write in requests:
            if ("PutRequest" in write) == ("DeleteRequest" in write):
                raise ValidationException(WRITE_REQUEST_SHAPE_MESSAGE)
            if "PutRequest" in write:
                item, size = validate_item_sized(write["PutRequest"]["Item"])
                if size > ITEM_BYTES_MAX:
                    raise ValidationException(ITEM_TOO_BIG_MESSAGE)
                writes.append(_Write(name, item, {}, size))
            else:
                writes.append(_Write(name, None, validate_item(write["DeleteRequest"]["Key"])))
    if len(writes) > BATCH_WRITE_ITEMS_MAX:
        raise ValidationException(TOO_MANY_WRITES_MESSAGE)
    return request, writes


def _check_write_key(table: Table, write: _Write) -> bytes:
    """Check one write's key against its table; return its store key."""
    if write.image is None:
        check_key(table, write.key)
    else:
        try:
            write.key = check_item_key(table, write.image)
        except ValidationException as error:
            # A put whose item lacks a key attribute, or has one of the wrong type, is
            # reported as a key that does not match the schema, as DynamoDB does in batches.
            if "Missing the key" in error.message or "Type mismatch for key" in error.message:
                raise ValidationException(KEY_SCHEMA_MESSAGE) from None
            raise
    return storage_key(table, write.key)


def _collection_metrics(db: Database, table: Table, key: Item) -> Body:
    """ItemCollectionMetrics of one written item's collection (tables with local indexes)."""
    hash_value = key[table.hash_key.name]
    low = float(collection_bytes(db, table, hash_value) // GIGABYTE_BYTES)
    return {
        "ItemCollectionKey": {table.hash_key.name: hash_value},
        "SizeEstimateRangeGB": [low, low + 1.0],
    }


@operation("BatchWriteItem")
async def batch_write_item(db: Database, body: Body) -> Body:
    request, writes = _read_batch_write(body)
    tables: dict[str, Table] = {}
    seen: dict[str, set[bytes]] = {}
    store_keys: list[bytes] = []
    for write in writes:
        table = tables.get(write.table_name)
        if table is None:
            table = tables[write.table_name] = find_table(db, write.table_name)
        skey = _check_write_key(table, write)
        table_seen = seen.setdefault(write.table_name, set())
        if skey in table_seen:
            raise ValidationException(DUPLICATES_MESSAGE)
        table_seen.add(skey)
        store_keys.append(skey)

    # Everything is valid: plan each write on the latest view of its item (the item
    # collection limit of tables with local indexes is checked here, still before anything
    # is written), then propose them all. No await between reading and proposing.
    capacities = {name: _Capacity() for name in tables}
    records: list[dict[str, Any]] = []
    images: list[tuple[bytes, Item | None, int]] = []
    for write, skey in zip(writes, store_keys, strict=True):
        table = tables[write.table_name]
        old, old_size = latest_item(db, skey)
        if write.image is not None:
            check_collection_size(db, table, old, old_size, write.image, write.size)
        base_units = write_units(max(write.size, old_size))
        index_units = write_capacity(table, old, write.image)
        capacity = capacities[write.table_name]
        capacity.table_units += base_units
        capacity.add_indexes(index_units)
        record: dict[str, Any] = {"table": table.table_id, "name": table.name, "key": skey}
        if write.image is not None:
            record["value"] = encode_item(write.image, write.size)
        records.append(record)
        images.append((skey, write.image, write.size))
    await propose_writes(db, images, {"kind": ITEMS_RECORD_KIND, "writes": records})
    meter = items_state(db).write_units
    for name, capacity in capacities.items():
        table_name = tables[name].name
        meter[table_name] = meter.get(table_name, 0.0) + capacity.total

    response: Body = {"UnprocessedItems": {}}
    consumed = _consumed(request, capacities)
    if consumed is not None:
        response["ConsumedCapacity"] = consumed
    if request.get("ReturnItemCollectionMetrics") == "SIZE":
        metrics: dict[str, list[Body]] = {}
        for write in writes:
            table = tables[write.table_name]
            if table.local_indexes:
                metrics.setdefault(write.table_name, []).append(
                    _collection_metrics(db, table, write.key)
                )
        if metrics:
            response["ItemCollectionMetrics"] = metrics
    return response


@redo_kind(ITEMS_RECORD_KIND)
def apply_items(db: Database, lsn: int, record: dict[str, Any]) -> None:
    apply_items_write(db, lsn, record)
