"""Scan: every item of a table or of a secondary index, in the store's physical order, which
is partition-key hash order as in DynamoDB; and parallel Scan with Segment / TotalSegments.

This module owns what a Scan means and the order of its checks, which is DynamoDB's:

    member types and constraints -> legacy parameters translated into expressions (and not
    mixed with them, `keeldb.expressions.legacy`) -> ExclusiveStartKey's attribute values ->
    Segment and TotalSegments given together, Segment below TotalSegments -> the expressions
    compiled -> Select against ProjectionExpression and IndexName -> the table -> the index (and no consistent read on a
    global one) -> ExclusiveStartKey against the key schema -> Select ALL_ATTRIBUTES on a
    global index that does not hold every attribute -> ExclusiveStartKey inside the segment
    -> projection paths into keys.

A segment is an equal share of the partition-key hash ring (`keys.scan_segment_bounds`):
segments are disjoint, their union is the whole table, and each is read in hash order, so a
parallel scan returns every item exactly once. Paging, filters, projection and capacity are
`paging`'s, shared with Query.

It never writes, never proposes a record and never does IO.
"""

from __future__ import annotations

from keeldb.engine import paging
from keeldb.engine.database import Database, operation
from keeldb.engine.items import find_table
from keeldb.engine.paging import Body, Member
from keeldb.expressions import compile_request
from keeldb.model.errors import ValidationException
from keeldb.model.keys import index_bounds, key_after, scan_segment_bounds

EXPRESSIONS = ("ProjectionExpression", "FilterExpression")
LEGACY = ("AttributesToGet", "ScanFilter", "ConditionalOperator")

MEMBERS = (
    Member("TableName", paging.as_string, required=True, table_name=True),
    Member("IndexName", paging.as_string, index_name=True),
    Member("AttributesToGet", paging.string_list),
    Member("Limit", paging.as_integer, minimum=paging.LIMIT_MIN),
    Member("Select", paging.as_string, enum=paging.SELECT_VALUES),
    Member("ScanFilter", paging.legacy_map),
    Member("ConditionalOperator", paging.as_string, enum=paging.CONDITIONAL_OPERATOR),
    Member("ExclusiveStartKey", paging.attribute_map),
    Member("ReturnConsumedCapacity", paging.as_string, enum=paging.RETURN_CONSUMED_CAPACITY),
    Member(
        "TotalSegments",
        paging.as_integer,
        minimum=1,
        maximum=paging.TOTAL_SEGMENTS_MAX,
    ),
    Member("Segment", paging.as_integer, minimum=0, maximum=paging.SEGMENT_MAX),
    Member("ProjectionExpression", paging.as_string),
    Member("FilterExpression", paging.as_string),
    Member("ExpressionAttributeNames", paging.string_map),
    Member("ExpressionAttributeValues", paging.attribute_map),
    Member("ConsistentRead", paging.as_boolean),
)


def _check_segments(request: Body) -> tuple[int, int]:
    """(Segment, TotalSegments), both given or neither, with DynamoDB's messages."""
    segment = request.get("Segment")
    total = request.get("TotalSegments")
    if segment is not None and total is None:
        raise ValidationException(
            "The TotalSegments parameter is required but was not present in the request when "
            "Segment parameter is present"
        )
    if total is not None and segment is None:
        raise ValidationException(
            "The Segment parameter is required but was not present in the request when "
            "parameter TotalSegments is present"
        )
    if total is None or segment is None:
        return 0, 1
    if segment >= total:
        raise ValidationException(
            "The Segment parameter is zero-based and must be less than parameter "
            f"TotalSegments: Segment: {segment} is not less than TotalSegments: {total}"
        )
    return segment, total


@operation("Scan")
async def scan(db: Database, body: Body) -> Body:
    given = paging.read_members(body, MEMBERS)
    request = paging.translate_legacy("Scan", given)
    start = paging.check_start_key_values(request)
    segment, total = _check_segments(request)
    compiled = compile_request(request, EXPRESSIONS, LEGACY)
    select = request.get("Select")
    projected_by = paging.projection_parameter("Scan", given, compiled.projection)
    paging.check_select(select, projected_by, "IndexName" in request)

    table = find_table(db, request["TableName"])
    if "IndexName" in request and start is not None and table.index(request["IndexName"]) is None:
        raise ValidationException("The provided starting key is invalid")
    source = paging.source_for(table, request.get("IndexName"))
    paging.check_index_read(source, request)
    if start is not None:
        paging.check_start_key_schema(source, start, scan=True)
    fetch = paging.fetch_from_table(source, select, compiled.projection)

    if total == 1:
        low, high = index_bounds(table.table_id, source.index_id)
    else:
        low, high = scan_segment_bounds(table.table_id, source.index_id, segment, total)
    if start is not None:
        at = source.store_key(start)
        if total > 1 and not low <= at < high:
            raise ValidationException(
                "The provided starting key is invalid: Invalid ExclusiveStartKey. Please use "
                f"ExclusiveStartKey with correct Segment. TotalSegments: {total} "
                f"Segment: {segment}"
            )
        low = max(low, key_after(at))
    paging.check_scalar_key_paths(table, compiled.projection)

    entries = iter(()) if low >= high else db.store.scan(low, high)
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
