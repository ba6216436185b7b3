"""Which partition a request's keys belong to, read from a catalog.

Routers use it (with their cached catalog) to send a request where its items live; storage
nodes use it (with their own catalog) to refuse a request that reached the wrong partition,
so that a router with a stale map can never write an item where reads will not find it.

Everything here is best effort on malformed requests: a key that cannot be read (no such
table, a missing or mistyped key attribute) has no partition, and the request then goes to
one partition whose database answers with DynamoDB's exact validation error.

It never does IO and never raises a client error itself.
"""

from __future__ import annotations

from typing import Any

from keeldb.cluster.ring import Ring
from keeldb.engine import catalog, paging
from keeldb.engine.database import Database
from keeldb.engine.schema import Table
from keeldb.expressions import compile_request
from keeldb.model.errors import ClientError
from keeldb.model.keys import partition_hash

ITEM_OPERATIONS = ("GetItem", "PutItem", "UpdateItem", "DeleteItem")
QUERY_EXPRESSIONS = ("ProjectionExpression", "FilterExpression", "KeyConditionExpression")
QUERY_LEGACY = ("AttributesToGet", "QueryFilter", "ConditionalOperator", "KeyConditions")


def table_of(db: Database, name: Any) -> Table | None:
    if not isinstance(name, str):
        return None
    return catalog.find_table(db, name)


def hash_value_partition(ring: Ring, value: Any, type_: str) -> int | None:
    if not isinstance(value, dict) or len(value) != 1 or type_ not in value:
        return None
    if not isinstance(value[type_], str):
        return None
    try:
        return ring.partition_of_hash_bytes(partition_hash(value))
    except (ValueError, TypeError, KeyError):
        return None


def key_partition(ring: Ring, table: Table, key: Any) -> int | None:
    """The partition of an item key (or whole item) of `table`; None if it has no valid
    partition key."""
    if not isinstance(key, dict):
        return None
    return hash_value_partition(ring, key.get(table.hash_key.name), table.hash_key.type)


def item_partition(db: Database, ring: Ring, op: str, body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    table = table_of(db, body.get("TableName"))
    if table is None:
        return None
    return table_item_partition(ring, table, op, body)


def table_item_partition(ring: Ring, table: Table, op: str, body: dict[str, Any]) -> int | None:
    """The partition of the item an item operation on `table` names (its Item for PutItem,
    its Key otherwise)."""
    key = body.get("Item") if op == "PutItem" else body.get("Key")
    return key_partition(ring, table, key)


def query_partition(db: Database, ring: Ring, body: Any) -> tuple[paging.Source, int | None] | None:
    """(what a Query reads, the partition of its partition key value, or None when the
    source is a global index, whose entries lie in every partition); None when the request
    cannot be read (its database will say why)."""
    try:
        given = paging.read_members(body, _query_members())
        request = paging.translate_legacy("Query", given)
        if "KeyConditionExpression" not in request:
            return None
        compiled = compile_request(request, QUERY_EXPRESSIONS, QUERY_LEGACY)
        table = table_of(db, request["TableName"])
        if table is None or compiled.key_condition is None:
            return None
        source = paging.source_for(table, request.get("IndexName"))
        key_types = {source.hash_key.name: source.hash_key.type}
        if source.range_key is not None:
            key_types[source.range_key.name] = source.range_key.type
        hash_value, _sort = compiled.key_condition.for_schema(
            source.hash_key.name,
            None if source.range_key is None else source.range_key.name,
            key_types,
        )
    except ClientError:
        return None
    if source.is_global:
        return source, None
    partition = hash_value_partition(ring, hash_value, source.hash_key.type)
    return (source, partition) if partition is not None else None


def _query_members() -> Any:
    from keeldb.engine import query

    return query.MEMBERS


def batch_partitions(db: Database, ring: Ring, op: str, body: Any) -> list[int | None]:
    """The partition of every key of a BatchGetItem or BatchWriteItem (None: unreadable)."""
    out: list[int | None] = []
    if not isinstance(body, dict) or not isinstance(body.get("RequestItems"), dict):
        return out
    for name, spec in body["RequestItems"].items():
        table = table_of(db, name)
        if op == "BatchGetItem":
            keys = spec.get("Keys") if isinstance(spec, dict) else None
            for key in keys if isinstance(keys, list) else []:
                out.append(None if table is None else key_partition(ring, table, key))
        else:
            for request in spec if isinstance(spec, list) else []:
                key = None
                if isinstance(request, dict):
                    if isinstance(request.get("PutRequest"), dict):
                        key = request["PutRequest"].get("Item")
                    elif isinstance(request.get("DeleteRequest"), dict):
                        key = request["DeleteRequest"].get("Key")
                out.append(None if table is None else key_partition(ring, table, key))
    return out


TRANSACT_OPERATIONS = ("TransactWriteItems", "TransactGetItems")
_ACTION_KEYS = {
    "Put": "Item",
    "Update": "Key",
    "Delete": "Key",
    "ConditionCheck": "Key",
    "Get": "Key",
}


def transact_partitions(db: Database, ring: Ring, body: Any) -> list[int | None]:
    """The partition of every action of a TransactWriteItems or TransactGetItems."""
    out: list[int | None] = []
    actions = body.get("TransactItems") if isinstance(body, dict) else None
    for action in actions if isinstance(actions, list) else []:
        partition = None
        if isinstance(action, dict) and len(action) == 1:
            ((kind, spec),) = action.items()
            if kind in _ACTION_KEYS and isinstance(spec, dict):
                table = table_of(db, spec.get("TableName"))
                if table is not None:
                    partition = key_partition(ring, table, spec.get(_ACTION_KEYS[kind]))
        out.append(partition)
    return out


def place_unkeyed_actions(
    db: Database, body: Any, partitions: list[int | None]
) -> list[int] | None:
    """`partitions` (from `transact_partitions`) with every action whose key cannot be
    placed put with the first placed action (partition 0 if none is), when each such action
    is well formed and names a known table: only its key is wrong, which whichever partition
    reads it refuses as that action's ValidationError cancellation reason, the others being
    checked where their items are. None when some action is malformed otherwise, or names
    no known table (the request as a whole is then refused, by any one partition)."""
    actions = body.get("TransactItems") if isinstance(body, dict) else None
    if not isinstance(actions, list) or len(actions) != len(partitions) or not partitions:
        return None
    for action, partition in zip(actions, partitions, strict=True):
        if partition is not None:
            continue
        if not isinstance(action, dict) or len(action) != 1:
            return None
        ((kind, spec),) = action.items()
        if kind not in _ACTION_KEYS or not isinstance(spec, dict):
            return None
        if table_of(db, spec.get("TableName")) is None:
            return None
    first = next((p for p in partitions if p is not None), 0)
    return [first if p is None else p for p in partitions]


def transact_tables(body: Any) -> list[Any]:
    actions = body.get("TransactItems") if isinstance(body, dict) else None
    names = []
    for action in actions if isinstance(actions, list) else []:
        if isinstance(action, dict):
            for spec in action.values():
                if isinstance(spec, dict):
                    names.append(spec.get("TableName"))
    return names


def partitions_of_request(db: Database, ring: Ring, op: str, body: Any) -> list[int]:
    """The partitions a request's keys name (for the storage side's check); empty when the
    operation reads ranges (Scan, a global index) or its keys cannot be read."""
    if op in ITEM_OPERATIONS:
        partition = item_partition(db, ring, op, body)
        return [] if partition is None else [partition]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return sorted({p for p in batch_partitions(db, ring, op, body) if p is not None})
    if op in TRANSACT_OPERATIONS:
        return sorted({p for p in transact_partitions(db, ring, body) if p is not None})
    if op == "Query":
        found = query_partition(db, ring, body)
        if found is None or found[1] is None:
            return []
        return [found[1]]
    return []
