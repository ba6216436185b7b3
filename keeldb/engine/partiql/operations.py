"""ExecuteStatement and BatchExecuteStatement: PartiQL run as DynamoDB item requests.

It owns what each PartiQL statement means in terms of the existing operations, as DynamoDB
documents it (Developer Guide, "PartiQL - a SQL-compatible query language for Amazon
DynamoDB"):

- INSERT is a PutItem on condition that the key is new (else DuplicateItemException);
- UPDATE is an UpdateItem of the item the WHERE clause's key equalities name, on condition
  that it exists and that the rest of the WHERE clause holds (else
  ConditionalCheckFailedException);
- DELETE is a DeleteItem of that item; a missing item is no error, an existing one that
  fails the rest of the WHERE clause is a ConditionalCheckFailedException;
- SELECT is one Query per partition key value when the WHERE clause pins the partition key
  of the table or index to a few values (`=`, IN, and AND / OR of them), with the first
  sort-key term as part of the key condition, and a full Scan otherwise; the whole WHERE
  clause then filters what was read and the select list projects it. A page ends as the
  Query's or Scan's does, or when Limit items have been read; NextToken holds where the
  next page starts and a digest of the statement, so that it can only continue the same
  statement.

BatchExecuteStatement runs up to 25 statements, all reads (each a single item by its full
key) or all writes, one after the other, each answered with its item or its own Error.
ExecuteTransaction runs the same translations as one transaction
(`keeldb.engine.transactions_partiql`).

It never reads or writes the store itself and never parses an expression: the item, query
and scan handlers do that.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from typing import Any

import orjson

from keeldb.engine import paging
from keeldb.engine.database import Database, operation
from keeldb.engine.items import find_table
from keeldb.engine.paging import Body, Member
from keeldb.engine.partiql.parser import (
    STATEMENT_CHARS_MAX,
    Delete,
    Insert,
    Select,
    Statement,
    Update,
    parse,
    result_name,
)
from keeldb.engine.partiql.translate import (
    Placeholders,
    condition_text,
    conjuncts,
    join_and,
    parenthesised,
    partition_values,
    sort_key_term,
    split_key,
    update_text,
)
from keeldb.expressions import ExpressionContext
from keeldb.model.errors import (
    ClientError,
    ConditionalCheckFailedException,
    DuplicateItemException,
    ValidationException,
)
from keeldb.model.values import compare_values, validate_value

NEXT_TOKEN_CHARS_MAX = 32768  # ExecuteStatement API reference: NextToken length 1..32768
BATCH_STATEMENTS_MAX = 25  # BatchExecuteStatement API reference: 1..25 statements
DIGEST_BYTES = 16

KEY_TYPE_MESSAGE = "Key attribute's data type should match its data type in table's schema: Key "
KEY_ABSENT_MESSAGE = "Key attribute should be present in the item: Key "
INCOMPLETE_KEY_MESSAGE = "Where clause does not contain a mandatory equality on all key attributes"
DUPLICATE_MESSAGE = "Duplicate primary key exists in table"
INVALID_TOKEN_MESSAGE = "Invalid NextToken"
TOKEN_MISMATCH_MESSAGE = "NextToken does not match request"
BATCH_SELECT_KEY_MESSAGE = (
    "Select statements within BatchExecuteStatement must specify the primary key in the where "
    "clause."
)
BATCH_MIXED_MESSAGE = "Batch must consist of either read statements or write statements, not both."
GSI_CONSISTENT_MESSAGE = "Strongly consistent read is not supported on Global Secondary Indexes"
ORDER_BY_WHERE_MESSAGE = "Must have WHERE clause in the statement when using ORDER BY clause."
ORDER_BY_MULTIPLE_HASH_MESSAGE = (
    "Must have hash key in ORDER BY clause when more than one hash key condition specified in "
    "WHERE clause."
)
ORDER_BY_HASH_MESSAGE = (
    "Must have at least one non-optional hash key condition in WHERE clause when using ORDER BY "
    "clause."
)
RETURN_VALUES_ON_FAILURE = ("ALL_OLD", "NONE")

EXECUTE_MEMBERS = (
    Member("Statement", paging.as_string, required=True),
    Member("Parameters", paging.as_list),
    Member("ConsistentRead", paging.as_boolean),
    Member("NextToken", paging.as_string),
    Member("ReturnConsumedCapacity", paging.as_string, enum=paging.RETURN_CONSUMED_CAPACITY),
    Member("Limit", paging.as_integer, minimum=1),
    Member("ReturnValuesOnConditionCheckFailure", paging.as_string, enum=RETURN_VALUES_ON_FAILURE),
)
BATCH_MEMBERS = (
    Member("Statements", paging.as_list, required=True),
    Member("ReturnConsumedCapacity", paging.as_string, enum=paging.RETURN_CONSUMED_CAPACITY),
)
BATCH_STATEMENT_MEMBERS = (
    Member("Statement", paging.as_string, required=True),
    Member("Parameters", paging.as_list),
    Member("ConsistentRead", paging.as_boolean),
    Member("ReturnValuesOnConditionCheckFailure", paging.as_string, enum=RETURN_VALUES_ON_FAILURE),
)


# --- Requests -------------------------------------------------------------------------------


def _render(value: Any) -> str:
    """A member's value as DynamoDB's constraint messages show it (Java's toString shape)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


def _length_violations(name: str, value: Any, low: int, high: int) -> list[str]:
    """DynamoDB's model constraints on a string's or a list's length."""
    errors = []
    shown = f"'{value}'" if isinstance(value, str) else f"'{_render(value)}'"
    if len(value) < low:
        errors.append(
            f"Value {shown} at '{name}' failed to satisfy constraint: Member must have length "
            f"greater than or equal to {low}"
        )
    if len(value) > high:
        errors.append(
            f"Value {shown} at '{name}' failed to satisfy constraint: Member must have length "
            f"less than or equal to {high}"
        )
    return errors


def _parameters(request: Body) -> list[dict[str, Any]]:
    return [validate_value(value) for value in request.get("Parameters") or []]


def _read_execute(body: Body) -> Body:
    request = paging.read_members(body, EXECUTE_MEMBERS)
    errors = _length_violations("statement", request["Statement"], 1, STATEMENT_CHARS_MAX)
    if "Parameters" in request and not request["Parameters"]:
        errors += _length_violations("parameters", request["Parameters"], 1, 1)
    if "NextToken" in request:
        errors += _length_violations("nextToken", request["NextToken"], 1, NEXT_TOKEN_CHARS_MAX)
    if errors:
        raise paging.constraint_error(errors)
    return request


# --- NextToken ------------------------------------------------------------------------------


def _digest(request: Body) -> str:
    """What a NextToken is bound to: the statement and its parameters."""
    material = orjson.dumps(
        [request["Statement"], request.get("Parameters") or []], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(material).hexdigest()[: DIGEST_BYTES * 2]


def _encode_token(request: Body, partition: int, last_key: dict[str, Any] | None) -> str:
    """NextToken: where the next page starts (the index of the partition key value being
    read, and the last key read in it) and the digest of the statement it continues."""
    payload = orjson.dumps({"d": _digest(request), "p": partition, "k": last_key})
    return base64.urlsafe_b64encode(payload).decode("ascii")


def _decode_token(request: Body, token: str) -> tuple[int, dict[str, Any] | None]:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValidationException(INVALID_TOKEN_MESSAGE) from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("p"), int)
        or payload["p"] < 0
        or not isinstance(payload.get("k"), (dict, type(None)))
    ):
        raise ValidationException(INVALID_TOKEN_MESSAGE)
    if payload.get("d") != _digest(request):
        raise ValidationException(TOKEN_MISMATCH_MESSAGE)
    return payload["p"], payload["k"]


# --- Statements -----------------------------------------------------------------------------


def _common(request: Body) -> Body:
    out: Body = {}
    if "ReturnConsumedCapacity" in request:
        out["ReturnConsumedCapacity"] = request["ReturnConsumedCapacity"]
    return out


def _full_key(db: Database, table_name: str, where: Any) -> tuple[Any, dict[str, Any], list[Any]]:
    table = find_table(db, table_name)
    key, rest = split_key(where, table.key_names)
    if len(key) != len(table.key_names):
        raise ValidationException(INCOMPLETE_KEY_MESSAGE)
    _check_key_types(table, key)
    return table, key, rest


def _key_schema(table: Any) -> list[Any]:
    return [table.hash_key] + ([table.range_key] if table.range_key is not None else [])


def _check_key_types(table: Any, values: dict[str, Any]) -> None:
    """Key values named in a statement must have the types of the table's key schema."""
    for attribute in _key_schema(table):
        value = values.get(attribute.name)
        if value is not None and attribute.type not in value:
            raise ValidationException(KEY_TYPE_MESSAGE + attribute.name)


async def _insert(db: Database, statement: Insert, request: Body) -> Body:
    table = find_table(db, statement.table)
    for attribute in _key_schema(table):
        if attribute.name not in statement.item:
            raise ValidationException(KEY_ABSENT_MESSAGE + attribute.name)
    _check_key_types(table, statement.item)
    ph = Placeholders()
    body: Body = {
        "TableName": statement.table,
        "Item": statement.item,
        "ConditionExpression": f"attribute_not_exists({ph.name(table.hash_key.name)})",
        **ph.request_members(),
        **_common(request),
    }
    try:
        response = await db.dispatch("PutItem", body)
    except ConditionalCheckFailedException:
        raise DuplicateItemException(DUPLICATE_MESSAGE) from None
    return _write_answer(response, None)


async def _update(db: Database, statement: Update, request: Body) -> Body:
    table, key, rest = _full_key(db, statement.table, statement.where)
    ph = Placeholders()
    update = update_text(statement.actions, ph)
    condition = f"attribute_exists({ph.name(table.hash_key.name)})"
    remaining = join_and(rest)
    if remaining is not None:
        condition += f" AND {parenthesised(remaining, ph)}"
    body: Body = {
        "TableName": statement.table,
        "Key": key,
        "UpdateExpression": update,
        "ConditionExpression": condition,
        **ph.request_members(),
        **_common(request),
    }
    if statement.returning is not None:
        body["ReturnValues"] = statement.returning
    if "ReturnValuesOnConditionCheckFailure" in request:
        body["ReturnValuesOnConditionCheckFailure"] = request["ReturnValuesOnConditionCheckFailure"]
    response = await db.dispatch("UpdateItem", body)
    return _write_answer(response, statement.returning)


async def _delete(db: Database, statement: Delete, request: Body) -> Body:
    table, key, rest = _full_key(db, statement.table, statement.where)
    ph = Placeholders()
    body: Body = {"TableName": statement.table, "Key": key, **_common(request)}
    remaining = join_and(rest)
    if remaining is not None:
        # A missing item is deleted without error; an existing one must meet the condition.
        missing = f"attribute_not_exists({ph.name(table.hash_key.name)})"
        body["ConditionExpression"] = f"{missing} OR {parenthesised(remaining, ph)}"
        body.update(ph.request_members())
    if statement.returning is not None:
        body["ReturnValues"] = statement.returning
    if "ReturnValuesOnConditionCheckFailure" in request:
        body["ReturnValuesOnConditionCheckFailure"] = request["ReturnValuesOnConditionCheckFailure"]
    response = await db.dispatch("DeleteItem", body)
    return _write_answer(response, statement.returning)


def _write_answer(response: Body, returning: str | None) -> Body:
    answer: Body = {"Items": []}
    if returning is not None and response.get("Attributes"):
        answer["Items"] = [response["Attributes"]]
    if "ConsumedCapacity" in response:
        answer["ConsumedCapacity"] = response["ConsumedCapacity"]
    return answer


def _value_at(item: dict[str, Any], parts: tuple[str | int, ...]) -> dict[str, Any] | None:
    """The value at a document path of an item, or None where the path leads nowhere."""
    value: dict[str, Any] | None = item.get(str(parts[0]))
    for part in parts[1:]:
        if value is None:
            return None
        if isinstance(part, int):
            members = value.get("L")
            value = members[part] if members is not None and part < len(members) else None
        else:
            value = value.get("M", {}).get(part) if "M" in value else None
    return value


class _Reader:
    """The WHERE filter (compiled as a DynamoDB condition) and the select list of a SELECT."""

    def __init__(self, statement: Select) -> None:
        self.filter = None
        self.projection = statement.projection
        if statement.where is not None:
            ph = Placeholders()
            text = condition_text(statement.where, ph)
            self.filter = ExpressionContext(ph.names or None, ph.values or None).condition(text)

    def answer(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            if self.filter is not None and not self.filter.evaluate(item):
                continue
            out.append(item if self.projection is None else self.project(item))
        return out

    def project(self, item: dict[str, Any]) -> dict[str, Any]:
        """Each selected path that the item has, under its name in the answer (a nested path
        under its last part: `m.z` is answered as `z`)."""
        assert self.projection is not None
        projected = {}
        for path in self.projection:
            value = _value_at(item, path.parts)
            if value is not None:
                projected[result_name(path)] = value
        return projected


def _key_attributes(table: Any, index_name: str | None) -> tuple[Any, Any, bool]:
    """The hash and range KeyAttribute of the table or of its index, and whether the index
    is global. An unknown index is left for the Query or Scan to refuse."""
    if index_name is None:
        return table.hash_key, table.range_key, False
    for index in table.global_indexes + table.local_indexes:
        if index.name == index_name:
            return index.hash_key, index.range_key, index.is_global
    return None, None, False


def _merge_capacity(total: Body | None, more: Body | None) -> Body | None:
    """The ConsumedCapacity of several reads of one statement, added up field by field."""
    if more is None:
        return total
    if total is None:
        return dict(more)
    merged: Body = dict(total)
    for name, value in more.items():
        if isinstance(value, (int, float)) and name in merged:
            merged[name] = merged[name] + value
        elif isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merge_capacity(merged[name], value)
        else:
            merged.setdefault(name, value)
    return merged


def _check_order_by(
    statement: Select, hash_key: Any, range_key: Any, partitions: list[Any] | None
) -> tuple[bool, bool]:
    """Refuse an ORDER BY DynamoDB refuses; answer (partitions descending, sort key
    descending)."""
    if not statement.order_by:
        return False, False
    if statement.where is None:
        raise ValidationException(ORDER_BY_WHERE_MESSAGE)
    if hash_key is None or partitions is None:
        raise ValidationException(ORDER_BY_HASH_MESSAGE)
    key_paths: dict[tuple[str | int, ...], str] = {(hash_key.name,): "hash"}
    if range_key is not None:
        key_paths[(range_key.name,)] = "range"
    order: dict[str, bool] = {}
    for path, descending in statement.order_by:
        role = key_paths.get(path.parts)
        if role is None:
            raise ValidationException(
                f"Variable reference {path} in ORDER BY clause must be part of the primary key"
            )
        order.setdefault(role, descending)
    if len(partitions) > 1 and "hash" not in order:
        raise ValidationException(ORDER_BY_MULTIPLE_HASH_MESSAGE)
    return order.get("hash", False), order.get("range", False)


async def _select(db: Database, statement: Select, request: Body) -> Body:
    table = find_table(db, statement.table)
    hash_key, range_key, is_global = _key_attributes(table, statement.index)
    if is_global and request.get("ConsistentRead"):
        raise ValidationException(GSI_CONSISTENT_MESSAGE)
    reader = _Reader(statement)
    body: Body = {"TableName": statement.table, **_common(request)}
    if statement.index is not None:
        body["IndexName"] = statement.index
    if "ConsistentRead" in request:
        body["ConsistentRead"] = request["ConsistentRead"]
    start: tuple[int, dict[str, Any] | None] = (0, None)
    if "NextToken" in request:
        start = _decode_token(request, request["NextToken"])

    partitions = None if hash_key is None else partition_values(statement.where, hash_key.name)
    hash_descending, range_descending = _check_order_by(statement, hash_key, range_key, partitions)
    if partitions is None:
        # No partition key fixed by the WHERE clause: DynamoDB scans the whole table.
        if "Limit" in request:
            body["Limit"] = request["Limit"]
        if start[1] is not None:
            body["ExclusiveStartKey"] = start[1]
        response = await db.dispatch("Scan", body)
        answer: Body = {"Items": reader.answer(response.get("Items", []))}
        if "LastEvaluatedKey" in response:
            answer["NextToken"] = _encode_token(request, 0, response["LastEvaluatedKey"])
            answer["LastEvaluatedKey"] = response["LastEvaluatedKey"]
        if "ConsumedCapacity" in response:
            answer["ConsumedCapacity"] = response["ConsumedCapacity"]
        return answer

    # One Query per partition key value, in key order when ORDER BY names the partition key;
    # values of another type than the key's can match no item.
    for value in partitions:
        if hash_key.type not in value:
            raise ValidationException(KEY_TYPE_MESSAGE + hash_key.name)
    values = list(partitions)
    if any(path.parts == (hash_key.name,) for path, _ in statement.order_by):
        values.sort(key=functools.cmp_to_key(lambda a, b: compare_values(a, b) or 0))
        if hash_descending:
            values.reverse()
    if range_descending:
        body["ScanIndexForward"] = False
    rest = conjuncts(statement.where)
    remaining: int | None = request.get("Limit")
    items: list[dict[str, Any]] = []
    consumed: Body | None = None
    answer = {}
    index, start_key = start
    while index < len(values):
        ph = Placeholders()
        key_condition = f"{ph.name(hash_key.name)} = {ph.value(values[index])}"
        if range_key is not None:
            term = sort_key_term(rest, range_key.name, range_key.type, ph)
            if term is not None:
                key_condition += f" AND {term}"
        query: Body = {**body, "KeyConditionExpression": key_condition, **ph.request_members()}
        if start_key is not None:
            query["ExclusiveStartKey"] = start_key
            start_key = None
        if remaining is not None:
            query["Limit"] = remaining
        response = await db.dispatch("Query", query)
        items += response.get("Items", [])
        consumed = _merge_capacity(consumed, response.get("ConsumedCapacity"))
        if remaining is not None:
            remaining -= response.get("ScannedCount", 0)
        if "LastEvaluatedKey" in response:
            answer["NextToken"] = _encode_token(request, index, response["LastEvaluatedKey"])
            answer["LastEvaluatedKey"] = response["LastEvaluatedKey"]
            break
        index += 1
        if remaining is not None and remaining <= 0 and index < len(values):
            answer["NextToken"] = _encode_token(request, index, None)
            break
    answer = {"Items": reader.answer(items), **answer}
    if consumed is not None:
        answer["ConsumedCapacity"] = consumed
    return answer


async def _run(db: Database, statement: Statement, request: Body) -> Body:
    if isinstance(statement, Select):
        return await _select(db, statement, request)
    if isinstance(statement, Insert):
        return await _insert(db, statement, request)
    if isinstance(statement, Update):
        return await _update(db, statement, request)
    assert isinstance(statement, Delete)
    return await _delete(db, statement, request)


@operation("ExecuteStatement")
async def execute_statement(db: Database, body: Body) -> Body:
    request = _read_execute(body)
    statement = parse(request["Statement"], _parameters(request))
    if not isinstance(statement, Select) and "NextToken" in request:
        raise ValidationException(INVALID_TOKEN_MESSAGE)
    return await _run(db, statement, request)


# --- BatchExecuteStatement ------------------------------------------------------------------

# The Code of a statement's Error, by the exception type the statement raised
# (BatchStatementError in the API reference).
BATCH_ERROR_CODES = {
    "ConditionalCheckFailedException": "ConditionalCheckFailed",
    "DuplicateItemException": "DuplicateItem",
    "ValidationException": "ValidationError",
    "ResourceNotFoundException": "ResourceNotFound",
    "ItemCollectionSizeLimitExceededException": "ItemCollectionSizeLimitExceeded",
    "ProvisionedThroughputExceededException": "ProvisionedThroughputExceeded",
    "RequestLimitExceeded": "RequestLimitExceeded",
    "AccessDeniedException": "AccessDenied",
    "InternalServerError": "InternalServerError",
}


def _error_entry(error: ClientError) -> Body:
    entry: Body = {
        "Code": BATCH_ERROR_CODES.get(error.type_name, "ValidationError"),
        "Message": error.message,
    }
    if isinstance(error, ConditionalCheckFailedException) and error.item is not None:
        entry["Item"] = error.item
    return {"Error": entry}


async def _batch_read(db: Database, statement: Select, request: Body) -> Body:
    if statement.index is not None:
        raise ValidationException(BATCH_SELECT_KEY_MESSAGE)
    table = find_table(db, statement.table)
    key, _ = split_key(statement.where, table.key_names)
    if len(key) != len(table.key_names):
        raise ValidationException(BATCH_SELECT_KEY_MESSAGE)
    _check_key_types(table, key)
    reader = _Reader(statement)
    body: Body = {"TableName": statement.table, "Key": key, **_common(request)}
    if "ConsistentRead" in request:
        body["ConsistentRead"] = request["ConsistentRead"]
    response = await db.dispatch("GetItem", body)
    answer: Body = {"TableName": statement.table}
    found = reader.answer([response["Item"]] if "Item" in response else [])
    if found:
        answer["Item"] = found[0]
    if "ConsumedCapacity" in response:
        answer["ConsumedCapacity"] = response["ConsumedCapacity"]
    return answer


def _add_capacity(totals: dict[str, float], answer: Body) -> None:
    consumed = answer.pop("ConsumedCapacity", None)
    if consumed is not None:
        name = consumed["TableName"]
        totals[name] = totals.get(name, 0.0) + consumed["CapacityUnits"]


@operation("BatchExecuteStatement")
async def batch_execute_statement(db: Database, body: Body) -> Body:
    request = paging.read_members(body, BATCH_MEMBERS)
    entries = [paging.as_structure(s) for s in request["Statements"] if s is not None]
    errors = _length_violations("statements", entries, 1, BATCH_STATEMENTS_MAX)
    for number, entry in enumerate(entries, start=1):
        # Members of a list element are named by their place in DynamoDB's messages.
        statement = entry.get("Statement")
        where = f"statements.{number}.member.statement"
        if statement is None:
            errors.append(
                f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
            )
        elif isinstance(statement, str):
            errors += _length_violations(where, statement, 1, STATEMENT_CHARS_MAX)
        parameters = entry.get("Parameters")
        if isinstance(parameters, list) and not parameters:
            errors += _length_violations(f"statements.{number}.member.parameters", [], 1, 1)
    if errors:
        raise paging.constraint_error(errors[: paging.CONSTRAINT_ERRORS_MAX])
    subrequests = [paging.read_members(entry, BATCH_STATEMENT_MEMBERS) for entry in entries]

    parsed: list[Statement | ClientError] = []
    for sub in subrequests:
        try:
            parsed.append(parse(sub["Statement"], _parameters(sub)))
        except ValidationException as error:
            parsed.append(error)
    kinds = {isinstance(p, Select) for p in parsed if not isinstance(p, ClientError)}
    if len(kinds) > 1:
        raise ValidationException(BATCH_MIXED_MESSAGE)

    responses: list[Body] = []
    totals: dict[str, float] = {}
    for sub, statement in zip(subrequests, parsed, strict=True):
        if isinstance(statement, ClientError):
            responses.append(_error_entry(statement))
            continue
        sub = {**sub, **_common(request)}
        try:
            if isinstance(statement, Select):
                answer = await _batch_read(db, statement, sub)
            else:
                answer = await _run(db, statement, sub)
                answer = {"TableName": statement.table, **answer}
                answer.pop("Items", None)
        except ClientError as error:
            responses.append(_error_entry(error))
            continue
        _add_capacity(totals, answer)
        responses.append(answer)
    out: Body = {"Responses": responses}
    if request.get("ReturnConsumedCapacity", "NONE") != "NONE":
        out["ConsumedCapacity"] = [
            {"TableName": name, "CapacityUnits": units} for name, units in sorted(totals.items())
        ]
    return out
