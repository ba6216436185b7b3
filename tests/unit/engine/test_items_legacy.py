"""The item operations' legacy parameters against their translation: a request written with
Expected, ConditionalOperator, AttributeUpdates or AttributesToGet gets the same answer, and
leaves the same items, as the expression request `legacy.translate` turns it into. Two
databases replay the same random sequence of requests, one as written, one translated."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, example, given, settings

from keeldb.engine.database import Database
from keeldb.expressions import legacy
from keeldb.model.errors import ClientError, ValidationException
from keeldb.storage.memory import MemoryLog, MemoryStore

Body = dict[str, Any]
ENVELOPE = "1 validation error detected: "
WRITES = ("PutItem", "UpdateItem", "DeleteItem")


class Node:
    """A database over a MemoryStore and MemoryLog with one table, keyed by `pk` (S)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.log = MemoryLog(self.db.apply)
        self.db.attach_log(self.log)
        self("CreateTable", CREATE_TABLE)

    def __call__(self, operation: str, body: Body) -> Body:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    def outcome(self, operation: str, body: Body) -> tuple[str, Any]:
        try:
            return "ok", self(operation, body)
        except ClientError as error:
            return type(error).__name__, error.message

    def items(self) -> list[Body | None]:
        return [
            self(
                "GetItem", {"TableName": "legacy", "Key": {"pk": {"S": k}}, "ConsistentRead": True}
            ).get("Item")
            for k in KEYS
        ]


CREATE_TABLE = {
    "TableName": "legacy",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}

names = st.sampled_from(["a", "b", "pk"])
numbers = st.builds(lambda i: {"N": str(i)}, st.integers(0, 3))
sets = st.one_of(
    st.builds(lambda xs: {"SS": sorted(xs)}, st.sets(st.sampled_from("xyz"), min_size=1)),
    st.builds(lambda xs: {"NS": sorted(xs)}, st.sets(st.sampled_from("123"), min_size=1)),
)
lists = st.builds(lambda xs: {"L": xs}, st.lists(st.just({"S": "x"}), max_size=2))
values = st.one_of(
    numbers,
    st.builds(lambda t: {"S": t}, st.sampled_from(["x", "y", "xy"])),
    sets,
    lists,
    st.just({"BOOL": True}),
)
KEYS = ("k1", "k2")
keys = st.builds(lambda k: {"pk": {"S": k}}, st.sampled_from(KEYS))
operators = st.sampled_from(
    ["EQ", "NE", "LT", "GE", "BETWEEN", "IN", "NULL", "NOT_NULL", "CONTAINS", "BEGINS_WITH"]
)


@st.composite
def expected_entry(draw: Any) -> Body:
    form = draw(st.sampled_from(["exists", "value", "operator"]))
    if form == "exists":
        entry: Body = {"Exists": draw(st.booleans())}
        if entry["Exists"] or draw(st.booleans()):
            entry["Value"] = draw(values)
        return entry
    if form == "value":
        return {"Value": draw(values)}
    operator = draw(operators)
    count = {"NULL": 0, "NOT_NULL": 0, "BETWEEN": 2, "IN": draw(st.integers(1, 3))}.get(operator, 1)
    entry = {"ComparisonOperator": operator}
    if count:
        entry["AttributeValueList"] = draw(st.lists(values, min_size=count, max_size=count))
    return entry


update_entries = st.one_of(
    st.builds(lambda v: {"Action": "PUT", "Value": v}, values),
    st.builds(lambda v: {"Value": v}, values),
    # Mostly the types each action takes (so that updates reach the items), sometimes any.
    st.builds(lambda v: {"Action": "ADD", "Value": v}, numbers | sets | lists),
    st.builds(lambda v: {"Action": "DELETE", "Value": v}, sets),
    st.builds(lambda a, v: {"Action": a, "Value": v}, st.sampled_from(["ADD", "DELETE"]), values),
    st.just({"Action": "DELETE"}),
)


@st.composite
def conditions(draw: Any, body: Body) -> Body:
    if draw(st.booleans()):
        return body  # Most conditions fail: half of the writes have none.
    expected = draw(st.dictionaries(names, expected_entry(), max_size=3))
    if expected:
        body["Expected"] = expected
        if draw(st.booleans()):
            body["ConditionalOperator"] = draw(st.sampled_from(["AND", "OR"]))
    return body


@st.composite
def requests(draw: Any) -> tuple[str, Body]:
    operation = draw(st.sampled_from(["PutItem", "GetItem", "UpdateItem", "DeleteItem"]))
    key = draw(keys)
    body: Body = {"TableName": "legacy"}
    if operation == "PutItem":
        body["Item"] = {**key, **draw(st.dictionaries(st.sampled_from(["a", "b"]), values))}
        body["ReturnValues"] = draw(st.sampled_from(["NONE", "ALL_OLD"]))
        return operation, draw(conditions(body))
    body["Key"] = key
    if operation == "GetItem":
        body["ConsistentRead"] = True
        if draw(st.booleans()):
            body["AttributesToGet"] = draw(st.lists(names, min_size=1, max_size=3, unique=True))
        return operation, body
    if operation == "UpdateItem":
        # A key attribute only sometimes: its update is refused whatever else it holds.
        update_names = st.sampled_from(["a", "b", "a", "b", "pk"])
        updates = draw(st.dictionaries(update_names, update_entries, max_size=2))
        if updates or draw(st.booleans()):
            body["AttributeUpdates"] = updates
        body["ReturnValues"] = draw(
            st.sampled_from(["NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"])
        )
    return operation, draw(conditions(body))


_loop = asyncio.new_event_loop()


# An AttributeUpdates type fault, whose message differs from its translation's.
TYPE_FAULT = [
    ("PutItem", {"TableName": "legacy", "Item": {"pk": {"S": "k1"}, "a": {"S": "x"}}}),
    (
        "UpdateItem",
        {
            "TableName": "legacy",
            "Key": {"pk": {"S": "k1"}},
            "AttributeUpdates": {"a": {"Action": "ADD", "Value": {"N": "1"}}},
        },
    ),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(requests(), min_size=1, max_size=8))
@example(sequence=TYPE_FAULT)
def test_a_legacy_request_acts_as_its_translation(sequence: list[tuple[str, Body]]) -> None:
    as_written, translated = Node(_loop), Node(_loop)
    for operation, body in sequence:
        got = as_written.outcome(operation, body)
        try:
            expression_body = legacy.translate(operation, body)
        except ClientError as error:
            # The translation refuses the request: the operation refuses it with the same
            # message (a write inside DynamoDB's envelope) and writes nothing.
            message = ENVELOPE + error.message if operation in WRITES else error.message
            assert got == (type(error).__name__, message)
            continue
        want = translated.outcome(operation, expression_body)
        if want[0] == "ValidationException" and operation == "UpdateItem":
            # A type fault of an AttributeUpdates action has the legacy wording.
            want = (want[0], legacy.update_error(body, ValidationException(want[1])).message)
        assert got == want
        assert as_written.items() == translated.items()
