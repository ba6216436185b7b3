"""A transaction's one store write equals the writes of its items applied one by one.

Two databases start from the same random table contents (a table with a global and a local
secondary index and a stream). One runs a random TransactWriteItems; the other applies the
same after-images as individual "put" / "delete" redo records, in the same order. Every key
of the two stores must then hold the same bytes (items, index entries, statistics and
stream records), but for the transaction's token and the LSN."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis.strategies as st
import msgpack
from hypothesis import HealthCheck, given, settings

from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.engine.item_store import _item_write, storage_key
from keeldb.engine.streams import RECORD_TAG, STREAM_PREFIX
from keeldb.engine.transactions import TXN_PREFIX
from keeldb.model.values import item_size
from keeldb.storage.memory import MemoryLog, MemoryStore

TABLE = "things"
STREAM_RECORD_TIME_INDEX = 5  # [event, keys, new, old, size, time ms, identity]
pks = st.sampled_from(["a", "b", "c", "d", "e"])
sks = st.sampled_from(["1", "2"])
gvalues = st.one_of(st.none(), st.sampled_from(["x", "y"]))
lvalues = st.one_of(st.none(), st.sampled_from(["p", "q"]))
payloads = st.text(alphabet="mn", max_size=30)


def item(pk: str, sk: str, g: str | None, lv: str | None, payload: str) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": {"S": pk}, "sk": {"S": sk}, "v": {"S": payload or "-"}}
    if g is not None:
        out["g"] = {"S": g}
    if lv is not None:
        out["l"] = {"S": lv}
    return out


items = st.builds(item, pks, sks, gvalues, lvalues, payloads)
actions = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "update"]), items), min_size=1, max_size=8
)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def database(store: MemoryStore) -> Database:
    db = Database(store)
    db.attach_log(MemoryLog(db.apply, start_lsn=store.applied_lsn()))
    return db


CREATE = {
    "TableName": TABLE,
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
        {"AttributeName": "g", "AttributeType": "S"},
        {"AttributeName": "l", "AttributeType": "S"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "by-g",
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
    "LocalSecondaryIndexes": [
        {
            "IndexName": "by-l",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "l", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    "BillingMode": "PAY_PER_REQUEST",
}


def contents(store: MemoryStore) -> dict[bytes, Any]:
    """The store's pairs, the transaction records left out and the time a stream record
    was made (milliseconds of the wall clock) blanked."""
    out: dict[bytes, Any] = {}
    for key, value in store.scan(b"", None):
        if key.startswith(TXN_PREFIX):
            continue
        if key.startswith(STREAM_PREFIX + RECORD_TAG):
            record = msgpack.unpackb(value, raw=False)
            record[STREAM_RECORD_TIME_INDEX] = 0
            out[key] = record
        else:
            out[key] = value
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(items, max_size=6), actions)
def test_a_transaction_writes_what_its_items_written_one_by_one_would(
    initial: list[dict[str, Any]], planned: list[tuple[str, dict[str, Any]]]
) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        db = await database(store)
        await db.dispatch("CreateTable", CREATE)
        for entry in initial:
            await db.dispatch("PutItem", {"TableName": TABLE, "Item": entry})
        # The same starting point for both: a copy of the store.
        twin_store = MemoryStore()
        twin_store.write(list(store.scan(b"", None)), [], applied_lsn=store.applied_lsn())
        twin = await database(twin_store)

        seen: set[tuple[str, str]] = set()
        transact_items = []
        for kind, entry in planned:
            identity = (entry["pk"]["S"], entry["sk"]["S"])
            if identity in seen:
                continue
            seen.add(identity)
            key = {"pk": entry["pk"], "sk": entry["sk"]}
            if kind == "put":
                transact_items.append({"Put": {"TableName": TABLE, "Item": entry}})
            elif kind == "delete":
                transact_items.append({"Delete": {"TableName": TABLE, "Key": key}})
            else:
                transact_items.append(
                    {
                        "Update": {
                            "TableName": TABLE,
                            "Key": key,
                            "UpdateExpression": "SET v = :v REMOVE l",
                            "ExpressionAttributeValues": {":v": entry["v"]},
                        }
                    }
                )
        await db.dispatch(
            "TransactWriteItems", {"TransactItems": transact_items, "ClientRequestToken": "t"}
        )

        # The twin: the transaction's after-images written one by one by the item store's
        # builder, each its own store write, all at the LSN before the transaction's (so the
        # stream positions are those of one log entry, as the transaction's).
        table = catalog.find_table(twin, TABLE)
        assert table is not None
        before = twin_store.applied_lsn()
        for action in transact_items:
            ((kind, spec),) = action.items()
            given = spec["Item"] if kind == "Put" else spec["Key"]
            key = {"pk": given["pk"], "sk": given["sk"]}
            skey = storage_key(table, key)
            image: dict[str, Any] | None
            if kind == "Put":
                image = spec["Item"]
            elif kind == "Delete":
                image = None
            else:
                found = twin_store.get(skey)
                base = key if found is None else msgpack.unpackb(found, raw=False)[1]
                image = {k: v for k, v in base.items() if k != "l"}
                image["v"] = spec["ExpressionAttributeValues"][":v"]
            record: dict[str, Any] = {"table": table.table_id, "name": TABLE, "key": skey}
            if image is not None:
                record.update(item=image, size=item_size(image))
            twin_store.write(*_item_write(twin, table, skey, record), applied_lsn=before)
        mine, theirs = contents(store), contents(twin_store)
        assert mine.keys() == theirs.keys()
        for k in mine:
            assert mine[k] == theirs[k], k

    run(scenario())
