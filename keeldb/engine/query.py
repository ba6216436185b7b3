"""Query: the items of one partition of a table or of a secondary index, in sort-key order.

This module owns what a Query means and the order of its checks, which is DynamoDB's:

    member types and constraints -> legacy parameters translated into expressions (and not
    mixed with them, `keeldb.expressions.legacy`) -> ExclusiveStartKey's attribute values ->
    a key condition is present -> the expressions compiled (key condition, filter,
    projection; unused names and values) -> Select against ProjectionExpression and IndexName -> the table -> the index (and no
    consistent read on a global one) -> ExclusiveStartKey against the key schema -> the key
    condition against the key schema -> ExclusiveStartKey inside the condition's bounds ->
    projection paths into keys -> a filter naming a key attribute -> Select ALL_ATTRIBUTES
    on a global index that does not hold every attribute.

The key condition becomes one contiguous store range (`keeldb.model.keys.sort_key_bounds`),
which is read forwards or backwards from ExclusiveStartKey: a Query reads exactly the items it
evaluates, plus nothing (the page stops at Limit or 1 MB without reading ahead). Paging,
filters, projection and capacity are `paging`'s, shared with Scan.

It never writes, never proposes a record and never does IO.
"""

from __future__ import annotations

from typing import Any

from keeldb.engine import paging
from keeldb.engine.database import Database, operation
from keeldb.engine.items import find_table
from keeldb.engine.paging import Body, Member, Source
from keeldb.expressions import KeyTerm, compile_request, legacy
from keeldb.model.errors import ValidationException
from keeldb.model.keys import item_key, key_after, sort_key_bounds

EXPRESSIONS = ("ProjectionExpression", "FilterExpression", "KeyConditionExpression")
LEGACY = ("AttributesToGet", "QueryFilter", "ConditionalOperator", "KeyConditions")

MEMBERS = (
    Member("TableName", paging.as_string, required=True, table_name=True),
    Member("IndexName", paging.as_string, index_name=True),
    Member("Select", paging.as_string, enum=paging.SELECT_VALUES),
    Member("AttributesToGet", paging.string_list),
    Member("Limit", paging.as_integer, minimum=paging.LIMIT_MIN),
    Member("ConsistentRead", paging.as_boolean),
    Member("KeyConditions", paging.legacy_map),
    Member("QueryFilter", paging.legacy_map),
    Member("ConditionalOperator", paging.as_string, enum=paging.CONDITIONAL_OPERATOR),
    Member("ScanIndexForward", paging.as_boolean),
    Member("ExclusiveStartKey", paging.attribute_map),
    Member("ReturnConsumedCapacity", paging.as_string, enum=paging.RETURN_CONSUMED_CAPACITY),
    Member("ProjectionExpression", paging.as_string),
    Member("FilterExpression", paging.as_string),
    Member("KeyConditionExpression", paging.as_string),
    Member("ExpressionAttributeNames", paging.string_map),
    Member("ExpressionAttributeValues", paging.attribute_map),
)

NO_KEY_CONDITION_MESSAGE = (
    "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request."
)


def _check_start_in_bounds(
    source: Source, start: dict[str, Any], hash_value: dict[str, Any], sort: KeyTerm | None
) -> None:
    """ExclusiveStartKey must lie inside the partition and sort-key range the condition
    names, with DynamoDB's messages for each way it can miss."""
    start_hash = start[source.hash_key.name]
    if sort is None or source.range_key is None:
        if start_hash != hash_value:
            raise ValidationException(
                "The provided starting key is outside query boundaries based on provided conditions"
            )
        return
    table_id = source.table.table_id
    low, high = sort_key_bounds(table_id, source.index_id, hash_value, sort.op, sort.values)
    at = item_key(table_id, source.index_id, hash_value, start[source.range_key.name])
    if not low <= at < high:
        raise ValidationException(
            "The provided starting key does not match the range key predicate"
        )
    if start_hash != hash_value:
        raise ValidationException("The query can return at most one row and cannot be restarted")


@operation("Query")
async def query(db: Database, body: Body) -> Body:
    given = paging.read_members(body, MEMBERS)
    request = paging.translate_legacy("Query", given)
    start = paging.check_start_key_values(request)
    if "KeyConditionExpression" not in request:
        raise ValidationException(NO_KEY_CONDITION_MESSAGE)
    compiled = compile_request(request, EXPRESSIONS, LEGACY)
    assert compiled.key_condition is not None
    select = request.get("Select")
    projected_by = paging.projection_parameter("Query", given, compiled.projection)
    paging.check_select(select, projected_by, "IndexName" in request)

    table = find_table(db, request["TableName"])
    source = paging.source_for(table, request.get("IndexName"))
    paging.check_index_read(source, request)
    if start is not None:
        paging.check_start_key_schema(source, start, scan=False)
    key_types = {source.hash_key.name: source.hash_key.type}
    if source.range_key is not None:
        key_types[source.range_key.name] = source.range_key.type
    hash_value, sort = compiled.key_condition.for_schema(
        source.hash_key.name,
        None if source.range_key is None else source.range_key.name,
        key_types,
    )
    if sort is not None and sort.op == "begins_with" and key_types[sort.name] == "N":
        raise ValidationException(
            "Invalid KeyConditionExpression: Incorrect operand type for operator or function; "
            "operator or function: begins_with, operand type: N"
        )
    if start is not None:
        _check_start_in_bounds(source, start, hash_value, sort)
    paging.check_scalar_key_paths(table, compiled.projection)
    if compiled.filter is not None:
        named = compiled.filter.top_level_attributes()
        for name in source.key_names:
            if name in named:
                # A QueryFilter is named as such; a FilterExpression as "Filter Expression".
                parameter = legacy.source_parameter("Query", given, "FilterExpression")
                if parameter == "FilterExpression":
                    parameter = "Filter Expression"
                raise ValidationException(
                    f"{parameter} can only contain non-primary key attributes: "
                    f"Primary key attribute: {name}"
                )
    fetch = paging.fetch_from_table(source, select, compiled.projection)

    if sort is None:
        low, high = sort_key_bounds(table.table_id, source.index_id, hash_value, "")
    else:
        low, high = sort_key_bounds(
            table.table_id, source.index_id, hash_value, sort.op, sort.values
        )
    forward = request.get("ScanIndexForward", True)
    if start is not None:
        at = source.store_key(start)
        if forward:
            low = max(low, key_after(at))
        else:
            high = min(high, at)
    entries = iter(()) if low >= high else db.store.scan(low, high, reverse=not forward)
    page = paging.read_page(
        db,
        source,
        entries,
        limit=request.get("Limit"),
        filter_=compiled.filter,
        projection=compiled.projection,
        count_only=select == "COUNT",
        fetch=fetch,
    )
    return paging.respond(db, request, source, page)
