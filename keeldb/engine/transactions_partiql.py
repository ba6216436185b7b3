"""ExecuteTransaction: PartiQL statements run as one TransactWriteItems or TransactGetItems.

It owns the translation of a PartiQL transaction (Developer Guide, "Performing transactions
with PartiQL for DynamoDB"): every statement becomes the action ExecuteStatement would run
for it, as part of one transaction, so the two share their checks, their evaluation and their
single redo record (`keeldb.engine.transactions`):

- INSERT -> Put on condition that the key is new (a failure is the DuplicateItem reason);
- UPDATE -> Update of the item the WHERE clause's key names, on condition it exists and the
  rest of the WHERE clause holds;
- DELETE -> Delete on condition the item is missing or meets the rest of the WHERE clause;
- EXISTS(SELECT ... full key ...) -> ConditionCheck that the item exists and meets the rest;
- SELECT with a full key -> Get (a transaction is all reads or all writes; EXISTS counts as
  a write).

It never evaluates anything itself and never does IO.
"""

from __future__ import annotations

import re
from typing import Any

from keeldb.engine import paging
from keeldb.engine.database import Database, operation
from keeldb.engine.paging import Body, Member
from keeldb.engine.partiql.operations import (
    DUPLICATE_MESSAGE,
    _full_key,
    _key_schema,
    _length_violations,
    _parameters,
    _Reader,
)
from keeldb.engine.partiql.parser import (
    STATEMENT_CHARS_MAX,
    Delete,
    Insert,
    Select,
    Update,
    parse,
)
from keeldb.engine.partiql.translate import (
    Placeholders,
    join_and,
    parenthesised,
    update_text,
)
from keeldb.engine.transactions import (
    TOKEN_LENGTH_MAX,
    TRANSACT_ACTIONS_MAX,
    cancelled_error,
)
from keeldb.model.errors import TransactionCanceledException, ValidationException

MIXED_MESSAGE = "The entire transaction must consist of either read statements or write statements"
SELECT_KEY_MESSAGE = (
    "Select statements within ExecuteTransaction must specify the primary key in the where clause."
)
_EXISTS_RE = re.compile(r"\s*EXISTS\s*\((.*)\)\s*", re.IGNORECASE | re.DOTALL)

MEMBERS = (
    Member("TransactStatements", paging.as_list, required=True),
    Member("ClientRequestToken", paging.as_string),
    Member("ReturnConsumedCapacity", paging.as_string, enum=paging.RETURN_CONSUMED_CAPACITY),
)
STATEMENT_MEMBERS = (
    Member("Statement", paging.as_string, required=True),
    Member("Parameters", paging.as_list),
)


def _read(body: Body) -> tuple[Body, list[Body]]:
    request = paging.read_members(body, MEMBERS)
    entries = [paging.as_structure(s) for s in request["TransactStatements"] if s is not None]
    errors = _length_violations("transactStatements", entries, 1, TRANSACT_ACTIONS_MAX)
    for number, entry in enumerate(entries, start=1):
        statement = entry.get("Statement")
        where = f"transactStatements.{number}.member.statement"
        if statement is None:
            errors.append(
                f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
            )
        elif isinstance(statement, str):
            errors += _length_violations(where, statement, 1, STATEMENT_CHARS_MAX)
        parameters = entry.get("Parameters")
        if isinstance(parameters, list) and not parameters:
            errors += _length_violations(f"transactStatements.{number}.member.parameters", [], 1, 1)
    token = request.get("ClientRequestToken")
    if token is not None:
        errors += _length_violations("clientRequestToken", token, 1, TOKEN_LENGTH_MAX)
    if errors:
        raise paging.constraint_error(errors[: paging.CONSTRAINT_ERRORS_MAX])
    return request, [paging.read_members(entry, STATEMENT_MEMBERS) for entry in entries]


def _condition_on_rest(hash_name: str, rest: list[Any], ph: Placeholders, *, missing: bool) -> str:
    remaining = join_and(rest)
    if missing:
        base = f"attribute_not_exists({ph.name(hash_name)})"
        return base if remaining is None else f"{base} OR {parenthesised(remaining, ph)}"
    base = f"attribute_exists({ph.name(hash_name)})"
    return base if remaining is None else f"{base} AND {parenthesised(remaining, ph)}"


def _write_action(db: Database, statement: Any, exists: bool) -> Body:
    ph = Placeholders()
    if exists:
        table, key, rest = _full_key(db, statement.table, statement.where)
        condition = _condition_on_rest(table.hash_key.name, rest, ph, missing=False)
        return {
            "ConditionCheck": {
                "TableName": statement.table,
                "Key": key,
                "ConditionExpression": condition,
                **ph.request_members(),
            }
        }
    if isinstance(statement, Insert):
        from keeldb.engine.items import find_table
        from keeldb.engine.partiql.operations import KEY_ABSENT_MESSAGE, _check_key_types

        table = find_table(db, statement.table)
        for attribute in _key_schema(table):
            if attribute.name not in statement.item:
                raise ValidationException(KEY_ABSENT_MESSAGE + attribute.name)
        _check_key_types(table, statement.item)
        return {
            "Put": {
                "TableName": statement.table,
                "Item": statement.item,
                "ConditionExpression": f"attribute_not_exists({ph.name(table.hash_key.name)})",
                **ph.request_members(),
            }
        }
    if isinstance(statement, Update):
        table, key, rest = _full_key(db, statement.table, statement.where)
        update = update_text(statement.actions, ph)
        condition = _condition_on_rest(table.hash_key.name, rest, ph, missing=False)
        return {
            "Update": {
                "TableName": statement.table,
                "Key": key,
                "UpdateExpression": update,
                "ConditionExpression": condition,
                **ph.request_members(),
            }
        }
    assert isinstance(statement, Delete)
    table, key, rest = _full_key(db, statement.table, statement.where)
    action: Body = {"TableName": statement.table, "Key": key}
    if rest:
        action["ConditionExpression"] = _condition_on_rest(
            table.hash_key.name, rest, ph, missing=True
        )
        action.update(ph.request_members())
    return {"Delete": action}


@operation("ExecuteTransaction")
async def execute_transaction(db: Database, body: Body) -> Body:
    request, subrequests = _read(body)
    parsed: list[tuple[Any, bool]] = []  # (statement, is an EXISTS)
    for sub in subrequests:
        text = sub["Statement"]
        match = _EXISTS_RE.fullmatch(text)
        if match is not None:
            inner = parse(match.group(1), _parameters(sub))
            if not isinstance(inner, Select):
                raise ValidationException("EXISTS requires a SELECT statement")
            parsed.append((inner, True))
        else:
            parsed.append((parse(text, _parameters(sub)), False))
    reads = [isinstance(s, Select) and not exists for s, exists in parsed]
    if any(reads) and not all(reads):
        raise ValidationException(MIXED_MESSAGE)
    common: Body = {}
    if "ReturnConsumedCapacity" in request:
        common["ReturnConsumedCapacity"] = request["ReturnConsumedCapacity"]
    if all(reads):
        return await _read_transaction(db, [s for s, _ in parsed], common)
    items = [_write_action(db, statement, exists) for statement, exists in parsed]
    write_body: Body = {"TransactItems": items, **common}
    if "ClientRequestToken" in request:
        write_body["ClientRequestToken"] = request["ClientRequestToken"]
    try:
        response = await db.dispatch("TransactWriteItems", write_body)
    except TransactionCanceledException as error:
        reasons = []
        for (statement, _), reason in zip(parsed, error.reasons, strict=True):
            if isinstance(statement, Insert) and reason["Code"] == "ConditionalCheckFailed":
                reason = {"Code": "DuplicateItem", "Message": DUPLICATE_MESSAGE}
            reasons.append(reason)
        raise cancelled_error(reasons) from None
    answer: Body = {}
    if "ConsumedCapacity" in response:
        answer["ConsumedCapacity"] = response["ConsumedCapacity"]
    return answer


async def _read_transaction(db: Database, statements: list[Select], common: Body) -> Body:
    gets = []
    readers = []
    for statement in statements:
        if statement.index is not None:
            raise ValidationException(SELECT_KEY_MESSAGE)
        table, key, _ = _full_key(db, statement.table, statement.where)
        del table
        gets.append({"Get": {"TableName": statement.table, "Key": key}})
        readers.append(_Reader(statement))
    response = await db.dispatch("TransactGetItems", {"TransactItems": gets, **common})
    responses = []
    for reader, entry in zip(readers, response["Responses"], strict=True):
        found = reader.answer([entry["Item"]] if "Item" in entry else [])
        responses.append({"Item": found[0]} if found else {})
    answer: Body = {"Responses": responses}
    if "ConsumedCapacity" in response:
        answer["ConsumedCapacity"] = response["ConsumedCapacity"]
    return answer
