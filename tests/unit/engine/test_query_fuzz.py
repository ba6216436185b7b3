"""Garbage requests to Query, Scan, BatchGetItem and BatchWriteItem: each either succeeds or
raises a client error with DynamoDB's type; nothing else escapes, and nothing is written by a
refused batch."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeldb.engine import batch, query, scan  # noqa: F401  (registers the operations)
from keeldb.engine.database import Database
from keeldb.model.errors import ClientError
from keeldb.storage.memory import MemoryLog, MemoryStore

EXAMPLES = 150

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 200)
    | st.sampled_from(
        ["", "pk", "sk", "v", ":p", "#n", "tab", "ALL_ATTRIBUTES", "COUNT", "TOTAL", "pk = :p", "1"]
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["S", "N", "B", "pk", "sk", ":p", "#n", "M", "L"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
attribute_values = st.sampled_from(
    [{"S": "a"}, {"N": "1"}, {"N": "x"}, {"S": ""}, {}, {"B": "AA=="}, {"SS": []}, "a", None]
)
keys = st.dictionaries(st.sampled_from(["pk", "sk", "v"]), attribute_values, max_size=3)

MEMBERS = [
    "TableName",
    "IndexName",
    "Select",
    "Limit",
    "ConsistentRead",
    "ScanIndexForward",
    "ExclusiveStartKey",
    "ReturnConsumedCapacity",
    "ProjectionExpression",
    "FilterExpression",
    "KeyConditionExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
    "Segment",
    "TotalSegments",
    "KeyConditions",
    "QueryFilter",
    "ScanFilter",
    "AttributesToGet",
    "ConditionalOperator",
]
member_values = {
    "TableName": st.sampled_from(["tab", "nothere", "ab", ""]) | values,
    "ExclusiveStartKey": keys | values,
    "ExpressionAttributeValues": st.dictionaries(
        st.sampled_from([":p", ":q", "p"]), attribute_values, max_size=2
    )
    | values,
    "KeyConditionExpression": st.sampled_from(
        ["pk = :p", "pk = :p AND sk > :q", "sk = :p", "pk < :p", "("]
    )
    | values,
}


def read_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={name: member_values.get(name, values) for name in MEMBERS},
    )


write_requests = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "PutRequest": st.fixed_dictionaries({}, optional={"Item": keys | values}) | values,
            "DeleteRequest": st.fixed_dictionaries({}, optional={"Key": keys | values}) | values,
        },
    )
    | values,
    max_size=4,
)
batch_bodies = st.fixed_dictionaries(
    {},
    optional={
        "RequestItems": st.dictionaries(
            st.sampled_from(["tab", "nothere", "a!"]),
            write_requests
            | st.fixed_dictionaries(
                {},
                optional={
                    "Keys": st.lists(keys | values, max_size=3) | values,
                    "ProjectionExpression": values,
                    "ConsistentRead": values,
                    "AttributesToGet": values,
                },
            )
            | values,
            max_size=2,
        )
        | values,
        "ReturnConsumedCapacity": values,
        "ReturnItemCollectionMetrics": values,
    },
)


def make_db() -> tuple[Database, MemoryLog, asyncio.AbstractEventLoop]:
    db = Database(MemoryStore())
    log = MemoryLog(db.apply)
    db.attach_log(log)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(
        db.dispatch(
            "CreateTable",
            {
                "TableName": "tab",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "N"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
    )
    loop.run_until_complete(
        db.dispatch("PutItem", {"TableName": "tab", "Item": {"pk": {"S": "a"}, "sk": {"N": "1"}}})
    )
    return db, log, loop


DB, LOG, LOOP = make_db()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operation=st.sampled_from(["Query", "Scan"]), body=read_bodies())
def test_garbage_reads_get_a_client_error_or_an_answer(
    operation: str, body: dict[str, Any]
) -> None:
    try:
        answer = LOOP.run_until_complete(DB.dispatch(operation, body))
    except ClientError:
        return
    assert answer["Count"] <= answer["ScannedCount"]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operation=st.sampled_from(["BatchGetItem", "BatchWriteItem"]), body=batch_bodies)
def test_garbage_batches_get_a_client_error_or_an_answer(
    operation: str, body: dict[str, Any]
) -> None:
    before = list(DB.store.scan(b"", None))
    lsn = LOG.committed_lsn()
    try:
        LOOP.run_until_complete(DB.dispatch(operation, body))
    except ClientError:
        assert list(DB.store.scan(b"", None)) == before
        assert LOG.committed_lsn() == lsn
