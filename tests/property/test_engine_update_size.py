"""UpdateItem sizes the new item from the old size and the attributes it changed: after any
sequence of updates the recorded size is the item measured whole, and so are the table's
statistics. Also: the stored size is read from a stored value's head without decoding it."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine.database import Database
from keeldb.engine.item_store import (
    committed_item,
    decode_stored,
    encode_item,
    storage_key,
    stored_size,
    table_stats,
)
from keeldb.engine.items import find_table
from keeldb.model.errors import ClientError
from keeldb.model.values import item_size
from keeldb.storage.memory import MemoryLog, MemoryStore

NAMES = ["a", "b", "é", "long_attribute_name", "m"]
scalars = st.one_of(
    st.text(max_size=5).map(lambda s: {"S": s or "x"}),
    st.sampled_from(["1", "-1.5", "12345678901234567890", "0.001"]).map(lambda n: {"N": n}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=3, unique=True).map(
        lambda xs: {"SS": xs}
    ),
)
documents = st.one_of(
    scalars,
    st.dictionaries(st.sampled_from(["x", "y", "ü"]), scalars, max_size=3).map(lambda m: {"M": m}),
    st.lists(scalars, max_size=3).map(lambda xs: {"L": xs}),
)
actions = st.one_of(
    st.tuples(st.just("SET"), st.sampled_from(NAMES), documents),
    st.tuples(st.just("SET_NESTED"), st.sampled_from(NAMES), scalars),
    st.tuples(st.just("REMOVE"), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("ADD"), st.sampled_from(NAMES), st.just({"N": "7"})),
)


def run(db: Database, operation: str, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return asyncio.run(db.dispatch(operation, body))
    except ClientError:
        return None  # a type fault of a random update: nothing is written


def request(action: tuple[str, str, Any]) -> dict[str, Any]:
    kind, name, value = action
    body: dict[str, Any] = {
        "TableName": "tbl",
        "Key": {"pk": {"S": "k"}},
        "ExpressionAttributeNames": {"#n": name},
    }
    if kind == "SET":
        body["UpdateExpression"] = "SET #n = :v"
    elif kind == "SET_NESTED":
        body["UpdateExpression"] = "SET #n.x = :v"
    elif kind == "REMOVE":
        body["UpdateExpression"] = "REMOVE #n"
    else:
        body["UpdateExpression"] = "ADD #n :v"
    if value is not None:
        body["ExpressionAttributeValues"] = {":v": value}
    return body


@settings(max_examples=60, deadline=None)
@given(st.lists(actions, min_size=1, max_size=8))
def test_updated_sizes_match_the_item_measured_whole(steps: list[Any]) -> None:
    store = MemoryStore()
    db = Database(store)
    db.attach_log(MemoryLog(db.apply))
    run(
        db,
        "CreateTable",
        {
            "TableName": "tbl",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    table = find_table(db, "tbl")
    key = storage_key(table, {"pk": {"S": "k"}})
    for step in steps:
        run(db, "UpdateItem", request(step))
        item, size = committed_item(db, key)
        if item is None:
            continue  # the first updates all failed: there is no item yet
        assert size == item_size(item)
        assert table_stats(db, table) == (1, size)


@given(st.integers(0, 2**64 - 1))
def test_the_stored_size_is_read_from_the_value_head(size: int) -> None:
    data = encode_item({"a": {"S": "x"}}, size)
    assert stored_size(data) == size == decode_stored(data)[1]
