"""TransactWriteItems and TransactGetItems on one partition, and what transactions that span
partitions share with them.

This module owns:

- the two requests: their checks in DynamoDB's order (member constraints, the token's
  first; then every action's expressions and values, in request order, `parse_action`; then
  each action against its table, `bind_action`; then two actions on one item; then the
  aggregate size: `plan_actions`), their limits (`TRANSACT_ACTIONS_MAX`,
  `TRANSACT_REQUEST_BYTES_MAX`), their answers (ConsumedCapacity at twice the units of a
  plain read or write, ItemCollectionMetrics) and their errors (TransactionCanceledException
  with one cancellation reason per action, in order; a key of the wrong type or shape is
  such a reason, ValidationError, while an empty key value refuses the request);
- the "transact" redo record: every item a transaction writes, in ONE record, applied as ONE
  atomic store write. The applier builds each item's puts and deletes with the item store's
  per-item builder (`item_store._item_write`: the item, its index entries, the statistics,
  its stream record) over a staged view of the store, so that the second item of a table
  sees the statistics the first one left, and writes the union once;
- idempotency: a transaction with a ClientRequestToken records the token, with a digest of
  the request and the time, in the same store write (`TOKEN_PREFIX`, and by time under
  `TOKEN_TIME_PREFIX`, so that each such write also removes a few expired ones); a retry
  within `TOKEN_LIFETIME_SECONDS` answers without writing again, a retry with other parameters is
  IdempotentParameterMismatchException and a retry while the first is in flight
  TransactionInProgressException;
- the pieces the partition side of a transaction across partitions shares with it
  (`keeldb.engine.transactions_partition`, docs/transactions.md): `plan_action`,
  `plan_actions`, `evaluate_action`, `plan_gets`, `staged_writes`, the store prefixes under
  `TXN_PREFIX`, and a committed share's figures for its coordinator's answer
  (`share_meter`, `share_answer`).

Evaluation is that of the item operations: every action reads the LATEST view of its item
(`item_store.latest_item`), conditions and updates are evaluated on it, and the after-images
of all written items join the pending overlay before the first await, so that log order is
evaluation order and a transaction is serialised exactly where its record lies in the log.
TransactGetItems reads committed state, all items in one synchronous pass between two
applied records, so it sees every transaction whole or not at all.

It never touches the store's bytes itself beyond its own records, never parses an expression
itself (that is `keeldb.expressions`) and never does IO.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from keeldb.engine.database import Database, operation, redo_kind
from keeldb.engine.indexes import (
    IndexUnits,
    changes_capacity,
    check_changes_collection_size,
    collection_bytes,
    plan,
)
from keeldb.engine.item_requests import check_expression_parameters
from keeldb.engine.item_store import (
    Item,
    PendingWrite,
    _item_write,
    committed_item,
    items_state,
    latest_item,
    storage_key,
)
from keeldb.engine.items import (
    INVALID,
    KEY_SCHEMA_MESSAGE,
    NOT_VALID,
    check_index_keys,
    check_item_key,
    check_key,
    check_scalar_key_paths,
    find_table,
)
from keeldb.expressions import Condition, ExpressionContext, Projection, Update
from keeldb.model import request_shapes as shapes
from keeldb.model.capacity import read_units, write_units
from keeldb.model.errors import (
    IdempotentParameterMismatchException,
    ItemCollectionSizeLimitExceededException,
    SerializationException,
    TransactionCanceledException,
    TransactionInProgressException,
    ValidationException,
)
from keeldb.model.limits import ITEM_BYTES_MAX
from keeldb.model.values import item_size, validate_item

if TYPE_CHECKING:
    from keeldb.engine.schema import Table

Body = dict[str, Any]

STATE_KEY = "transactions"  # this module's entry in `Database.state`

TRANSACT_ACTIONS_MAX = 100  # actions of one TransactWriteItems or TransactGetItems
TRANSACT_REQUEST_BYTES_MAX = 4 * 1024 * 1024  # the items of one TransactWriteItems
TOKEN_LENGTH_MAX = 36  # ClientRequestToken
TOKEN_LIFETIME_SECONDS = 600  # a ClientRequestToken is remembered for 10 minutes

# Store keys of this module: "x" (outside the catalog's "c", tables' "t", streams' "s").
TXN_PREFIX = b"x"
TOKEN_PREFIX = TXN_PREFIX + b"token/"
# Tokens by the time they were recorded (8 bytes, big-endian milliseconds, then the token), so
# that expired ones are found oldest first and removed.
TOKEN_TIME_PREFIX = TXN_PREFIX + b"token-time/"
# Expired tokens removed by one transaction with a token: bounded, so that no record's
# applier does unbounded work; tokens arrive one per such record, so they cannot pile up.
TOKEN_PURGE_MAX = 4
LEDGER_PREFIX = TXN_PREFIX + b"ledger/"
PREPARED_PREFIX = TXN_PREFIX + b"prepared/"

DUPLICATE_ITEM_MESSAGE = "Transaction request cannot include multiple operations on one item"
ACTION_SHAPE_MESSAGE = "TransactItems can only contain one of Check, Put, Update or Delete"
CANCELLED_MESSAGE = (
    "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]"
)
CONDITION_FAILED_MESSAGE = "The conditional request failed"
# No AWS page states this message; it is the one the dynoxide emulator gives (docs/transactions.md,
# "Messages").
REQUEST_TOO_BIG_MESSAGE = (
    "Collection size of items exceeded, which can also be caused by the aggregate size of "
    "the items in the transaction exceeding the 4MB limit"
)
CONFLICT_MESSAGE = "Transaction is ongoing for the item"
IN_PROGRESS_MESSAGE = "Transaction is in progress"
MISMATCH_MESSAGE = (
    "Request with same client token has been made with different parameters in the last ten minutes"
)
GIGABYTE_BYTES = 1024**3
RETURN_ITEM_COLLECTION_METRICS = ("SIZE", "NONE")
RETURN_VALUES_ON_CONDITION_CHECK_FAILURE = ("ALL_OLD", "NONE")

# The four write actions, in DynamoDB's order, and their names in constraint messages.
ACTION_KINDS = ("ConditionCheck", "Put", "Delete", "Update")
_PATH_NAMES = {kind: kind[0].lower() + kind[1:] for kind in ACTION_KINDS}


@dataclass(slots=True)
class TransactionsState:
    # ClientRequestToken -> digest of the request, for transactions proposed and not applied.
    in_flight: dict[str, str] = field(default_factory=dict)
    # Test-only: evaluate conditions on committed state instead of the latest view (a broken
    # variant the isolation checker must catch). Never set outside tests.
    evaluate_on_committed: bool = False


def transactions_state(db: Database) -> TransactionsState:
    state = db.state.get(STATE_KEY)
    if state is None:
        state = db.state[STATE_KEY] = TransactionsState()
    assert isinstance(state, TransactionsState)
    return state


# --- Request reading ------------------------------------------------------------------------


def _violation(path: str, value: str, constraint: str) -> str:
    return f"Value {value} at '{path}' failed to satisfy constraint: {constraint}"


def _render(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    return str(value)


def _structure(value: Any) -> Body:
    return shapes.as_structure(value)


def _read_common(body: Any) -> Body:
    if not isinstance(body, dict):
        raise SerializationException("Start of list found where not expected")
    request: Body = {}
    for name in ("ReturnConsumedCapacity", "ReturnItemCollectionMetrics", "ClientRequestToken"):
        if body.get(name) is not None:
            request[name] = shapes.as_string(body[name])
    return request


def _check_enum(request: Body, name: str, allowed: Sequence[str], errors: list[str]) -> None:
    value = request.get(name)
    if value is not None and value not in allowed:
        wire = name[0].lower() + name[1:]
        errors.append(
            _violation(
                wire,
                f"'{value}'",
                f"Member must satisfy enum value set: [{', '.join(allowed)}]",
            )
        )


def _check_count(items: list[Any] | None, errors: list[str]) -> None:
    if items is None:
        errors.append(_violation("transactItems", "null", "Member must not be null"))
    elif len(items) > TRANSACT_ACTIONS_MAX:
        errors.append(
            _violation(
                "transactItems",
                f"'{_render(items)}'",
                f"Member must have length less than or equal to {TRANSACT_ACTIONS_MAX}",
            )
        )
    elif not items:
        errors.append(
            _violation(
                "transactItems", "'[]'", "Member must have length greater than or equal to 1"
            )
        )


def _check_table_name(name: Any, path: str, errors: list[str]) -> None:
    if name is None:
        errors.append(_violation(path, "null", "Member must not be null"))
        return
    from keeldb.model.limits import TABLE_NAME_LENGTH_MIN, TABLE_NAME_PATTERN, TABLE_NAME_RE

    if name.startswith("arn:"):
        return
    if len(name) < TABLE_NAME_LENGTH_MIN:
        errors.append(
            _violation(
                path,
                f"'{name}'",
                f"Member must have length greater than or equal to {TABLE_NAME_LENGTH_MIN}",
            )
        )
    if not TABLE_NAME_RE.fullmatch(name):
        errors.append(
            _violation(
                path,
                f"'{name}'",
                f"Member must satisfy regular expression pattern: {TABLE_NAME_PATTERN}",
            )
        )


_ACTION_MEMBERS: dict[str, tuple[str, ...]] = {
    "ConditionCheck": ("Key", "ConditionExpression"),
    "Put": ("Item",),
    "Delete": ("Key",),
    "Update": ("Key", "UpdateExpression"),
}


def read_action(value: Any) -> Body:
    structure = _structure(value)
    action: Body = {}
    for kind in ACTION_KINDS:
        given = structure.get(kind)
        if given is None:
            continue
        given = _structure(given)
        read: Body = {}
        for name in ("TableName", "ConditionExpression", "UpdateExpression"):
            if given.get(name) is not None:
                read[name] = shapes.as_string(given[name])
        for name in ("Key", "Item"):
            if given.get(name) is not None:
                read[name] = shapes.attribute_map(given[name])
        if given.get("ExpressionAttributeNames") is not None:
            read["ExpressionAttributeNames"] = shapes.string_map(given["ExpressionAttributeNames"])
        if given.get("ExpressionAttributeValues") is not None:
            read["ExpressionAttributeValues"] = shapes.attribute_map(
                given["ExpressionAttributeValues"]
            )
        if given.get("ReturnValuesOnConditionCheckFailure") is not None:
            read["ReturnValuesOnConditionCheckFailure"] = shapes.as_string(
                given["ReturnValuesOnConditionCheckFailure"]
            )
        action[kind] = read
    return action


def check_action(action: Body, number: int, errors: list[str]) -> None:
    for kind, spec in action.items():
        base = f"transactItems.{number}.member.{_PATH_NAMES[kind]}"
        for member in _ACTION_MEMBERS[kind]:
            if spec.get(member) is None:
                wire = member[0].lower() + member[1:]
                errors.append(_violation(f"{base}.{wire}", "null", "Member must not be null"))
        _check_table_name(spec.get("TableName"), f"{base}.tableName", errors)
        value = spec.get("ReturnValuesOnConditionCheckFailure")
        if value is not None and value not in RETURN_VALUES_ON_CONDITION_CHECK_FAILURE:
            errors.append(
                _violation(
                    f"{base}.returnValuesOnConditionCheckFailure",
                    f"'{value}'",
                    "Member must satisfy enum value set: ["
                    + ", ".join(RETURN_VALUES_ON_CONDITION_CHECK_FAILURE)
                    + "]",
                )
            )


def _read_transact_write(body: Any) -> tuple[Body, list[Body]]:
    request = _read_common(body)
    raw_items = body.get("TransactItems")
    items = None if raw_items is None else [read_action(v) for v in shapes.as_list(raw_items)]
    errors: list[str] = []
    # The token's length comes first (observed: "2 validation errors detected: Value '...' at
    # 'clientRequestToken' ...; Value 'BOGUS' at 'returnConsumedCapacity' ...", recorded by
    # paritysuite/dynamodb-conformance, validation-ordering/transactions.test.ts).
    token = request.get("ClientRequestToken")
    if token is not None and not 1 <= len(token) <= TOKEN_LENGTH_MAX:
        constraint = (
            f"Member must have length less than or equal to {TOKEN_LENGTH_MAX}"
            if token
            else "Member must have length greater than or equal to 1"
        )
        errors.append(_violation("clientRequestToken", f"'{token}'", constraint))
    _check_enum(request, "ReturnConsumedCapacity", shapes.RETURN_CONSUMED_CAPACITY, errors)
    _check_count(items, errors)
    for number, action in enumerate(items or (), start=1):
        check_action(action, number, errors)
    _check_enum(request, "ReturnItemCollectionMetrics", RETURN_ITEM_COLLECTION_METRICS, errors)
    if errors:
        raise shapes.constraint_error(errors[: shapes.CONSTRAINT_ERRORS_MAX])
    assert items is not None
    for action in items:
        if len(action) != 1:
            raise ValidationException(ACTION_SHAPE_MESSAGE)
    return request, items


# The request reading a coordinator on a router needs before it splits a transaction by
# partition (the checks that need no table: shape, limits, enumerations).
read_transact_write = _read_transact_write


# --- Planning one action --------------------------------------------------------------------


@dataclass(slots=True)
class Action:
    """One action of a TransactWriteItems, checked against its table and planned."""

    kind: str  # "ConditionCheck", "Put", "Delete" or "Update"
    spec: Body
    table: Table
    key: Item  # the item's primary key attributes
    skey: bytes  # its store key
    condition: Condition | None = None
    update: Update | None = None
    item: Item | None = None  # a Put's item
    item_size: int = 0
    # A key that does not fit the table's schema: the action's ValidationError reason (the
    # transaction is cancelled with it), and its `key` and `skey` are empty.
    refused: str | None = None
    # Filled in by evaluation:
    image: Item | None = None  # the after-image (None: deleted)
    size: int = 0
    old: Item | None = None
    old_size: int = 0
    index_units: list[IndexUnits] = field(default_factory=list)
    units: float = 0.0


def _compile(spec: Body, kind: str) -> tuple[Condition | None, Update | None]:
    members = {
        "ConditionCheck": ("ConditionExpression",),
        "Put": ("ConditionExpression",),
        "Delete": ("ConditionExpression",),
        "Update": ("UpdateExpression", "ConditionExpression"),
    }[kind]
    check_expression_parameters(spec, members)
    names = spec.get("ExpressionAttributeNames")
    values = spec.get("ExpressionAttributeValues")
    if names is None and values is None and not any(m in spec for m in members):
        return None, None
    context = ExpressionContext(names, values)
    update = None
    condition = None
    if "UpdateExpression" in spec:
        update = context.update(spec["UpdateExpression"])
    if "ConditionExpression" in spec:
        condition = context.condition(spec["ConditionExpression"])
    context.check_unused()
    return condition, update


@dataclass(slots=True)
class ParsedAction:
    """One action of a TransactWriteItems read without its table: expressions compiled and
    the item's or key's values validated (`parse_action`)."""

    kind: str
    spec: Body
    condition: Condition | None
    update: Update | None
    item: Item | None
    item_size: int
    key: Item | None  # the Key given (not a Put's)


def parse_action(kind: str, spec: Body) -> ParsedAction:
    """The checks of one action that need no table. DynamoDB makes them for every action,
    in request order, before it looks up any table: a malformed expression or an unused
    value in a later action is reported ahead of a missing table in an earlier one."""
    condition, update = _compile(spec, kind)
    item: Item | None = None
    size = 0
    key: Item | None = None
    if kind == "Put":
        item = validate_item(spec["Item"])
        size = item_size(item)
        if size > ITEM_BYTES_MAX:
            raise ValidationException("Item size has exceeded the maximum allowed size")
    else:
        key = validate_item(spec["Key"])
    return ParsedAction(kind, spec, condition, update, item, size, key)


# Key errors that cancel a transaction with a ValidationError reason instead of refusing the
# request: a key of the wrong type or shape is found while the transaction runs, whereas an
# empty key value is refused by DynamoDB's up-front input validation (observed behaviour,
# recorded by the public conformance suite paritysuite/dynamodb-conformance,
# tests/tier3/error-messages/transactWriteItems.test.ts).
_KEY_REASON_PREFIXES = (
    KEY_SCHEMA_MESSAGE,
    INVALID + "Type mismatch for key ",
    INVALID + "Type mismatch for Index Key ",
    INVALID + "Missing the key ",
)


def _key_reason(error: ValidationException) -> str | None:
    message: str = error.message
    return message if message.startswith(_KEY_REASON_PREFIXES) else None


def bind_action(db: Database, parsed: ParsedAction, tables: dict[str, Table]) -> Action:
    """Check a parsed action against its table (nothing read yet)."""
    kind, spec = parsed.kind, parsed.spec
    name = spec["TableName"]
    table = tables.get(name)
    if table is None:
        table = tables[name] = find_table(db, name)
    try:
        if parsed.item is not None:
            key = check_item_key(table, parsed.item)
        else:
            assert parsed.key is not None
            key = check_key(table, parsed.key)
    except ValidationException as error:
        reason = _key_reason(error)
        if reason is None:
            raise
        refused = Action(kind, spec, table, {}, b"", parsed.condition, parsed.update)
        refused.refused = reason
        return refused
    update = parsed.update
    if update is not None:
        updated = frozenset(update.top_level_attributes())
        for key_name in table.key_names:
            if key_name in updated:
                raise ValidationException(
                    "One or more parameter values were invalid: Cannot update attribute "
                    f"{key_name}. This attribute is part of the key"
                )
        check_scalar_key_paths(table, update.paths, table.global_indexes + table.local_indexes)
    return Action(
        kind,
        spec,
        table,
        key,
        storage_key(table, key),
        parsed.condition,
        update,
        parsed.item,
        parsed.item_size,
    )


def plan_action(db: Database, kind: str, spec: Body, tables: dict[str, Table]) -> Action:
    """Check one action against the request rules and its table (nothing read yet)."""
    return bind_action(db, parse_action(kind, spec), tables)


def plan_actions(db: Database, items: list[Body]) -> list[Action]:
    """Every action of a TransactWriteItems checked in DynamoDB's order: first what needs no
    table, for all actions in request order, then each action against its table; then two
    actions on one item, then the request's aggregate size."""
    parsed: list[ParsedAction] = []
    for raw in items:
        ((kind, spec),) = raw.items()
        parsed.append(parse_action(kind, spec))
    tables: dict[str, Table] = {}
    actions = [bind_action(db, p, tables) for p in parsed]
    seen: set[tuple[str, bytes]] = set()
    for action in actions:
        if action.refused is not None:
            continue
        identity = (action.table.table_id, action.skey)
        if identity in seen:
            raise ValidationException(DUPLICATE_ITEM_MESSAGE)
        seen.add(identity)
    if sum(a.item_size for a in actions) > TRANSACT_REQUEST_BYTES_MAX:
        raise ValidationException(REQUEST_TOO_BIG_MESSAGE)
    return actions


def _reason_failed(action: Action) -> Body:
    reason: Body = {"Code": "ConditionalCheckFailed", "Message": CONDITION_FAILED_MESSAGE}
    if action.spec.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and action.old:
        reason["Item"] = action.old
    return reason


def evaluate_action(db: Database, action: Action, on_committed: bool) -> Body | None:
    """Evaluate one action on the latest view of its item; None if it may proceed, else its
    cancellation reason. Fills in the after-image and the capacity."""
    if action.refused is not None:
        return {"Code": "ValidationError", "Message": action.refused}
    if on_committed:
        old, old_size = committed_item(db, action.skey)
    else:
        old, old_size = latest_item(db, action.skey)
    action.old, action.old_size = old, old_size
    if action.skey in items_state(db).held:
        return {"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE}
    if action.condition is not None and not action.condition.evaluate(old):
        action.units = write_units(old_size, transactional=True)
        return _reason_failed(action)
    try:
        if action.kind == "ConditionCheck":
            action.units = write_units(old_size, transactional=True)
            return None
        if action.kind == "Delete":
            new: Item | None = None
            size = 0
        elif action.kind == "Put":
            new, size = action.item, action.item_size
        else:
            base: Item = old if old is not None else dict(action.key)
            assert action.update is not None
            new, _ = action.update.apply(base)
            size = item_size(new)
            if size > ITEM_BYTES_MAX:
                raise ValidationException(
                    "Item size to update has exceeded the maximum allowed size"
                )
            check_index_keys(
                action.table,
                new,
                by_update=True,
                names=frozenset(action.update.top_level_attributes()),
            )
        changes = plan(action.table, old, old_size, new, size)
        if new is not None:
            check_changes_collection_size(db, action.table, changes, new, size - old_size)
    except ValidationException as error:
        if error.message.startswith(NOT_VALID):
            # An update that sets an index key to an empty value is refused up front by
            # DynamoDB, as a request error, not as a cancellation reason (observed behaviour,
            # paritysuite/dynamodb-conformance, transactIndexKeys.test.ts).
            raise
        return {"Code": "ValidationError", "Message": error.message}
    except ItemCollectionSizeLimitExceededException as error:
        return {"Code": "ItemCollectionSizeLimitExceeded", "Message": error.message}
    action.image, action.size = new, size
    action.index_units = [
        IndexUnits(i.name, i.is_global, 2.0 * i.units) for i in changes_capacity(changes)
    ]
    action.units = write_units(max(size, old_size), transactional=True)
    return None


def cancelled_error(reasons: list[Body]) -> TransactionCanceledException:
    codes = ", ".join(r["Code"] for r in reasons)
    return TransactionCanceledException(CANCELLED_MESSAGE.format(codes), reasons)


# --- Capacity and metrics -------------------------------------------------------------------


@dataclass(slots=True)
class _Capacity:
    table_units: float = 0.0
    index_units: dict[tuple[bool, str], float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.table_units + sum(self.index_units.values())


def _consumed(mode: str, capacities: dict[str, _Capacity], kind: str) -> list[Body] | None:
    if mode == "NONE":
        return None
    consumed = []
    for name, capacity in capacities.items():
        entry: Body = {"TableName": name, "CapacityUnits": capacity.total, kind: capacity.total}
        if mode == "INDEXES":
            entry["Table"] = {"CapacityUnits": capacity.table_units, kind: capacity.table_units}
            for group, is_global in (
                ("LocalSecondaryIndexes", False),
                ("GlobalSecondaryIndexes", True),
            ):
                touched = {
                    index: {"CapacityUnits": units, kind: units}
                    for (global_, index), units in capacity.index_units.items()
                    if global_ == is_global
                }
                if touched:
                    entry[group] = touched
        consumed.append(entry)
    return consumed


def _meter(meter: dict[str, float], name: str, units: float) -> None:
    meter[name] = meter.get(name, 0.0) + units


# --- Tokens ---------------------------------------------------------------------------------


# Members that change what a request answers but not what it does: a retry may differ in them.
_ANSWER_MEMBERS = ("ClientRequestToken", "ReturnConsumedCapacity", "ReturnItemCollectionMetrics")


def request_digest(body: Body) -> str:
    """A digest of what a request does (equal effects, equal digest): the token and the
    members that only shape the answer are left out."""
    kept = {k: v for k, v in body.items() if k not in _ANSWER_MEMBERS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def token_key(token: str) -> bytes:
    return TOKEN_PREFIX + token.encode("utf-8")


def token_time_key(time_ms: int, token: str) -> bytes:
    return TOKEN_TIME_PREFIX + time_ms.to_bytes(8, "big") + token.encode("utf-8")


def stage_token(db: Database, staged: StagedStore, record: dict[str, Any]) -> None:
    """Record a transaction's token, and remove up to TOKEN_PURGE_MAX expired ones (by the
    record's time, chosen by its proposer, so that every replica removes the same)."""
    token: str = record["token"]
    time_ms: int = record["time_ms"]
    old = staged.get(token_key(token))
    deletes: list[bytes] = []
    if old is not None:
        # The token was used before (and expired, or it would not be written again).
        deletes.append(token_time_key(msgpack.unpackb(old, raw=False)[1], token))
    horizon = token_time_key(max(0, time_ms - TOKEN_LIFETIME_SECONDS * 1000), "")
    for number, (key, _) in enumerate(db.store.scan(TOKEN_TIME_PREFIX, horizon)):
        if number >= TOKEN_PURGE_MAX:
            break
        expired = key[len(TOKEN_TIME_PREFIX) + 8 :].decode("utf-8")
        deletes.append(key)
        if expired != token:
            deletes.append(token_key(expired))
    staged.stage([], deletes)
    staged.stage(
        [
            (token_key(token), msgpack.packb([record["digest"], time_ms])),
            (token_time_key(time_ms, token), b""),
        ],
        [],
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def known_token(db: Database, token: str, digest: str, now_ms: int) -> bool:
    """Whether the store holds this token from a transaction applied in the last ten
    minutes; raises IdempotentParameterMismatchException if that one had other actions."""
    data = db.store.get(token_key(token))
    if data is None:
        return False
    stored_digest, applied_ms = msgpack.unpackb(data, raw=False)
    if now_ms - applied_ms > TOKEN_LIFETIME_SECONDS * 1000:
        return False
    if stored_digest != digest:
        raise IdempotentParameterMismatchException(MISMATCH_MESSAGE)
    return True


def _known_token(db: Database, token: str, digest: str) -> bool:
    """`known_token`, and first the transactions in flight here: the same one is
    TransactionInProgressException, another IdempotentParameterMismatchException."""
    state = transactions_state(db)
    flying = state.in_flight.get(token)
    if flying is not None:
        if flying != digest:
            raise IdempotentParameterMismatchException(MISMATCH_MESSAGE)
        raise TransactionInProgressException(IN_PROGRESS_MESSAGE)
    return known_token(db, token, digest, _now_ms())


# --- Proposing ------------------------------------------------------------------------------


async def propose_transaction(
    db: Database, writes: list[tuple[bytes, Item | None, int]], record: dict[str, Any]
) -> int:
    """Append one "transact" record writing `writes` ((store key, after-image, size) each) and
    wait until it is applied. Every after-image joins the pending overlay before the first
    await; if the proposal fails they all leave it at once."""
    pending = items_state(db).pending
    entries: list[tuple[bytes, PendingWrite]] = []
    for key, image, size in writes:
        write = PendingWrite(image, size)
        queue = pending.get(key)
        if queue is None:
            queue = pending[key] = deque()
        queue.append(write)
        entries.append((key, write))
    try:
        return await db.propose(record)
    except Exception:
        for key, write in entries:
            queue = pending.get(key)
            if queue is None:
                continue
            try:
                queue.remove(write)
            except ValueError:
                pass
            if not queue:
                del pending[key]
        raise


def _stamp(db: Database, writes: list[bytes], reads: list[bytes]) -> None:
    """Give a single-partition transaction its place in the timestamp order of the
    transactions across partitions (`transactions_partition.PartitionState.stamp`; nothing
    where none has run)."""
    stamps = db.state.get("transactions_partition")
    if stamps is not None:
        stamps.stamp(writes, reads)


@operation("TransactWriteItems")
async def transact_write_items(db: Database, body: Body) -> Body:
    request, items = _read_transact_write(body)
    actions = plan_actions(db, items)

    state = transactions_state(db)
    token = request.get("ClientRequestToken")
    digest = request_digest(body) if token is not None else ""
    if token is not None and _known_token(db, token, digest):
        return _write_answer(db, request, actions, replay=True)

    # Evaluate every action on the latest view, then propose; no await in between.
    reasons: list[Body | None] = [
        evaluate_action(db, action, state.evaluate_on_committed) for action in actions
    ]
    write_meter = items_state(db).write_units
    for action in actions:
        _meter(write_meter, action.table.name, action.units + _index_total(action))
    if any(reason is not None for reason in reasons):
        raise cancelled_error([reason or {"Code": "None"} for reason in reasons])

    writes = [a for a in actions if a.kind != "ConditionCheck"]
    _stamp(db, [a.skey for a in writes], [a.skey for a in actions if a.kind == "ConditionCheck"])
    record: dict[str, Any] = {
        "kind": "transact",
        "writes": [write_entry(a) for a in writes],
    }
    if token is not None:
        record["token"] = token
        record["digest"] = digest
        record["time_ms"] = _now_ms()
        state.in_flight[token] = digest
    try:
        await propose_transaction(db, [(a.skey, a.image, a.size) for a in writes], record)
    finally:
        if token is not None:
            state.in_flight.pop(token, None)
    return _write_answer(db, request, actions, replay=False)


def _index_total(action: Action) -> float:
    return sum(i.units for i in action.index_units)


def write_entry(action: Action) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "table": action.table.table_id,
        "name": action.table.name,
        "key": action.skey,
    }
    if action.image is not None:
        entry["item"] = action.image
        entry["size"] = action.size
    return entry


def _write_answer(db: Database, request: Body, actions: list[Action], *, replay: bool) -> Body:
    response: Body = {}
    mode = request.get("ReturnConsumedCapacity", "NONE")
    if mode != "NONE":
        capacities: dict[str, _Capacity] = {}
        for action in actions:
            capacity = capacities.setdefault(action.spec["TableName"], _Capacity())
            if replay:
                # A retried token reads the items instead of writing them.
                _, size = committed_item(db, action.skey)
                capacity.table_units += read_units(size, consistent=True, transactional=True)
                continue
            capacity.table_units += action.units
            for entry in action.index_units:
                key = (entry.is_global, entry.name)
                capacity.index_units[key] = capacity.index_units.get(key, 0.0) + entry.units
        kind = "ReadCapacityUnits" if replay else "WriteCapacityUnits"
        response["ConsumedCapacity"] = _consumed(mode, capacities, kind)
    if request.get("ReturnItemCollectionMetrics") == "SIZE":
        metrics: dict[str, list[Body]] = {}
        for action in actions:
            table = action.table
            if table.local_indexes and action.kind != "ConditionCheck":
                hash_value = action.key[table.hash_key.name]
                low = float(collection_bytes(db, table, hash_value) // GIGABYTE_BYTES)
                metrics.setdefault(action.spec["TableName"], []).append(
                    {
                        "ItemCollectionKey": {table.hash_key.name: hash_value},
                        "SizeEstimateRangeGB": [low, low + 1.0],
                    }
                )
        if metrics:
            response["ItemCollectionMetrics"] = metrics
    return response


# --- TransactGetItems -----------------------------------------------------------------------


def _read_transact_get(body: Any) -> tuple[Body, list[Body]]:
    request = _read_common(body)
    request.pop("ReturnItemCollectionMetrics", None)
    request.pop("ClientRequestToken", None)
    raw_items = body.get("TransactItems")
    items: list[Body] | None = None
    if raw_items is not None:
        items = []
        for value in shapes.as_list(raw_items):
            structure = _structure(value)
            get = structure.get("Get")
            read: Body = {}
            if get is not None:
                get = _structure(get)
                for name in ("TableName", "ProjectionExpression"):
                    if get.get(name) is not None:
                        read[name] = shapes.as_string(get[name])
                if get.get("Key") is not None:
                    read["Key"] = shapes.attribute_map(get["Key"])
                if get.get("ExpressionAttributeNames") is not None:
                    read["ExpressionAttributeNames"] = shapes.string_map(
                        get["ExpressionAttributeNames"]
                    )
            items.append({"Get": read} if get is not None else {})
    errors: list[str] = []
    _check_enum(request, "ReturnConsumedCapacity", shapes.RETURN_CONSUMED_CAPACITY, errors)
    _check_count(items, errors)
    for number, entry in enumerate(items or (), start=1):
        get = entry.get("Get")
        base = f"transactItems.{number}.member.get"
        if get is None:
            errors.append(_violation(base, "null", "Member must not be null"))
            continue
        if get.get("Key") is None:
            errors.append(_violation(f"{base}.key", "null", "Member must not be null"))
        _check_table_name(get.get("TableName"), f"{base}.tableName", errors)
    if errors:
        raise shapes.constraint_error(errors[: shapes.CONSTRAINT_ERRORS_MAX])
    assert items is not None
    return request, [entry["Get"] for entry in items]


PlannedGet = tuple[Body, "Table", bytes, Projection | None]  # (Get, table, store key, projection)


def plan_gets(
    db: Database, gets: list[Body], refusals: dict[int, str] | None = None
) -> list[PlannedGet]:
    """Check the Gets of a TransactGetItems against their tables (nothing read yet): first
    every projection, in request order, then each Get against its table. With `refusals`, a
    Get whose key does not fit its table's schema is recorded there by its position (its
    ValidationError reason; its store key is empty), as DynamoDB cancels the transaction
    with it; without, it is raised."""
    compiled: list[tuple[Body, Projection | None, Item]] = []
    for spec in gets:
        check_expression_parameters(spec, ("ProjectionExpression",))
        projection = None
        if "ProjectionExpression" in spec or "ExpressionAttributeNames" in spec:
            context = ExpressionContext(spec.get("ExpressionAttributeNames"), None)
            if "ProjectionExpression" in spec:
                projection = context.projection(spec["ProjectionExpression"])
            context.check_unused()
        compiled.append((spec, projection, validate_item(spec["Key"])))
    tables: dict[str, Table] = {}
    planned: list[PlannedGet] = []
    seen: set[tuple[str, bytes]] = set()
    for number, (spec, projection, key) in enumerate(compiled):
        name = spec["TableName"]
        table = tables.get(name)
        if table is None:
            table = tables[name] = find_table(db, name)
        try:
            check_key(table, key)
        except ValidationException as error:
            reason = _key_reason(error)
            if reason is None or refusals is None:
                raise
            refusals[number] = reason
            planned.append((spec, table, b"", projection))
            continue
        if projection is not None:
            check_scalar_key_paths(
                table, projection.paths, table.global_indexes + table.local_indexes
            )
        skey = storage_key(table, key)
        if (table.table_id, skey) in seen:
            raise ValidationException(DUPLICATE_ITEM_MESSAGE)
        seen.add((table.table_id, skey))
        planned.append((spec, table, skey, projection))
    return planned


def projected(item: Item | None, projection: Projection | None) -> Body:
    """One entry of TransactGetItems' Responses."""
    if item is None:
        return {}
    return {"Item": item if projection is None else projection.apply(item)}


@operation("TransactGetItems")
async def transact_get_items(db: Database, body: Body) -> Body:
    request, gets = _read_transact_get(body)
    refusals: dict[int, str] = {}
    planned = plan_gets(db, gets, refusals)

    # One synchronous pass over committed state: no applied record falls between two reads.
    prepared = items_state(db).held
    reasons: list[Body | None] = []
    found: list[tuple[Item | None, int]] = []
    for number, (_, _, skey, _) in enumerate(planned):
        if number in refusals:
            reasons.append({"Code": "ValidationError", "Message": refusals[number]})
            found.append((None, 0))
            continue
        if skey in prepared:
            reasons.append({"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE})
            found.append((None, 0))
            continue
        reasons.append(None)
        found.append(committed_item(db, skey))
    capacities: dict[str, _Capacity] = {}
    meter = items_state(db).read_units
    for (spec, table, _, _), (_, size) in zip(planned, found, strict=True):
        units = read_units(size, consistent=True, transactional=True)
        capacities.setdefault(spec["TableName"], _Capacity()).table_units += units
        _meter(meter, table.name, units)
    if any(reason is not None for reason in reasons):
        raise cancelled_error([reason or {"Code": "None"} for reason in reasons])
    _stamp(db, [], [skey for _, _, skey, _ in planned])

    responses = [
        projected(item, projection)
        for (_, _, _, projection), (item, _) in zip(planned, found, strict=True)
    ]
    response: Body = {"Responses": responses}
    consumed = _consumed(
        request.get("ReturnConsumedCapacity", "NONE"), capacities, "ReadCapacityUnits"
    )
    if consumed is not None:
        response["ConsumedCapacity"] = consumed
    return response


# --- Applying -------------------------------------------------------------------------------


class StagedStore:
    """A store seen through writes not made yet: `get` and `scan` answer as the store would
    after `stage`d puts and deletes; `changes` is their union, for one `store.write`."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._staged: dict[bytes, bytes | None] = {}

    def stage(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes]) -> None:
        for key in deletes:
            self._staged[key] = None
        for key, value in puts:
            self._staged[key] = value

    def get(self, key: bytes) -> bytes | None:
        if key in self._staged:
            return self._staged[key]
        data: bytes | None = self._store.get(key)
        return data

    def scan(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """The store's pairs merged with the staged ones, lazily (a caller that stops after
        the first pair reads one pair of the store)."""
        staged = sorted(
            (k for k in self._staged if k >= start and (end is None or k < end)),
            reverse=reverse,
        )
        base = self._store.scan(start, end, reverse=reverse)
        position = 0
        for key, value in base:
            while position < len(staged) and (
                staged[position] > key if reverse else staged[position] < key
            ):
                staged_value = self._staged[staged[position]]
                if staged_value is not None:
                    yield staged[position], staged_value
                position += 1
            if position < len(staged) and staged[position] == key:
                staged_value = self._staged[key]
                position += 1
                if staged_value is not None:
                    yield key, staged_value
                continue
            yield key, value
        for key in staged[position:]:
            staged_value = self._staged[key]
            if staged_value is not None:
                yield key, staged_value

    def applied_lsn(self) -> int:
        lsn: int = self._store.applied_lsn()
        return lsn

    def changes(self) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        puts = [(k, v) for k, v in self._staged.items() if v is not None]
        deletes = [k for k, v in self._staged.items() if v is None]
        return puts, deletes


def staged_writes(
    db: Database, writes: Sequence[dict[str, Any]]
) -> tuple[StagedStore, list[tuple[bytes, bytes]], list[bytes]]:
    """The puts and deletes of several item writes, as one store write: each item's writes
    come from the item store's builder over the store as the previous items left it."""
    from keeldb.engine import catalog

    staged = StagedStore(db.store)
    view = copy.copy(db)  # the same database (state, log), reading through `staged`
    view.store = staged  # type: ignore[assignment]
    for write in writes:
        table = catalog.find_table(db, write["name"])
        if table is None or table.table_id != write["table"]:
            continue  # The table was deleted after the transaction was validated.
        staged.stage(*_item_write(view, table, write["key"], write))
    puts, deletes = staged.changes()
    return staged, puts, deletes


def settle(db: Database, key: bytes) -> None:
    pending = items_state(db).pending
    queue = pending.get(key)
    if queue is None:
        return  # Replayed at recovery, or proposed by another member.
    queue.popleft()
    if not queue:
        del pending[key]


@redo_kind("transact")
def apply_transact(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Apply one transaction's writes, its token included, as one atomic store write."""
    writes: list[dict[str, Any]] = record["writes"]
    try:
        if lsn <= db.store.applied_lsn():
            return
        staged, _, _ = staged_writes(db, writes)
        if record.get("token") is not None:
            stage_token(db, staged, record)
        db.store.write(*staged.changes(), applied_lsn=lsn)
    finally:
        for write in writes:
            settle(db, write["key"])


# --- The answer of a share across partitions ------------------------------------------------


def share_meter(db: Database, prepared: dict[str, Any]) -> Body:
    """What a prepared share of a transaction across partitions costs, read on its partition
    just before its commit is proposed: its items are held since the prepare, so the
    committed items are the ones the prepare evaluated. In the share's order: for each write
    [units, [[is_global, index name, units], ...], collection] (collection: the partition key
    value when the table keeps item collections, else None) under "writes", and each
    ConditionCheck's units under "checks"; twice the units of plain writes, as a single
    partition's transaction counts them (`evaluate_action`)."""
    from keeldb.engine import catalog
    from keeldb.model.keys import decode_item_key

    writes: list[list[Any]] = []
    for write in prepared["writes"]:
        table = catalog.find_table(db, write["name"])
        if table is None or table.table_id != write["table"]:
            writes.append([0.0, [], None])  # deleted since: the commit writes nothing
            continue
        old, old_size = committed_item(db, write["key"])
        new, size = write.get("item"), int(write.get("size", 0))
        changes = plan(table, old, old_size, new, size)
        indexes = [[i.is_global, i.name, 2.0 * i.units] for i in changes_capacity(changes)]
        collection = None
        if table.local_indexes:
            hash_type = table.hash_key.type
            range_type = None if table.range_key is None else table.range_key.type
            collection, _, _ = decode_item_key(
                write["key"], table.table_id, 0, hash_type, range_type
            )
        units = write_units(max(size, old_size), transactional=True)
        writes.append([units, indexes, collection])
    checks = [
        write_units(committed_item(db, skey)[1], transactional=True) for skey in prepared["checks"]
    ]
    return {"writes": writes, "checks": checks}


def share_answer(db: Database, prepared: dict[str, Any], meter: Body) -> Body:
    """A committed share's answer to its coordinator: `share_meter`'s figures, and for each
    write on a table with item collections the collection's size after the commit, in whole
    gigabytes rounded down (the lower bound of SizeEstimateRangeGB), else None."""
    from keeldb.engine import catalog

    sizes: list[float | None] = []
    for write, (_, _, collection) in zip(prepared["writes"], meter["writes"], strict=True):
        table = catalog.find_table(db, write["name"])
        if collection is None or table is None:
            sizes.append(None)
            continue
        sizes.append(float(collection_bytes(db, table, collection) // GIGABYTE_BYTES))
    return {**meter, "collections": sizes}


def token_recorded(db: Database, token: str, now_ms: int) -> bool:
    """Whether a transaction recorded this token in the store in the ten minutes before
    `now_ms` (whatever its digest): a deterministic check an applier may make, with its
    record's time."""
    data = db.store.get(token_key(token))
    if data is None:
        return False
    _digest, applied_ms = msgpack.unpackb(data, raw=False)
    return bool(now_ms - applied_ms <= TOKEN_LIFETIME_SECONDS * 1000)
