"""TransactWriteItems and TransactGetItems driven through `Database.dispatch` over an
in-memory store and log: atomicity, statistics and indexes kept exact by the one store write,
capacity, tokens, and the request errors."""

from __future__ import annotations

from typing import Any

import msgpack

from keeldb.engine import transactions
from keeldb.engine.item_store import items_state, stats_key
from keeldb.model.errors import (
    IdempotentParameterMismatchException,
    ResourceNotFoundException,
    TransactionCanceledException,
    TransactionInProgressException,
    ValidationException,
)
from keeldb.model.keys import prefix_end


def item(pk: str, **numbers: int) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": {"S": pk}}
    out.update({name: {"N": str(value)} for name, value in numbers.items()})
    return out


def put(table: str, pk: str, **numbers: int) -> dict[str, Any]:
    return {"Put": {"TableName": table, "Item": item(pk, **numbers)}}


def add(table: str, pk: str, amount: int, condition: str | None = None) -> dict[str, Any]:
    update: dict[str, Any] = {
        "TableName": table,
        "Key": {"pk": {"S": pk}},
        "UpdateExpression": "ADD n :a",
        "ExpressionAttributeValues": {":a": {"N": str(amount)}},
    }
    if condition is not None:
        update["ConditionExpression"] = condition
    return {"Update": update}


def test_two_items_of_one_table_are_counted_in_one_store_write(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    lsn = h.store.applied_lsn()
    h("TransactWriteItems", {"TransactItems": [put("ttt", "a", n=1), put("ttt", "b", n=2)]})
    assert h.store.applied_lsn() == lsn + 1  # one record, one store write
    count, size = msgpack.unpackb(h.store.get(stats_key(h.get_table_id("ttt"))))
    assert count == 2
    assert size == sum(h.size_of("ttt", pk) for pk in ("a", "b"))
    assert h("DescribeTable", {"TableName": "ttt"})["Table"]["ItemCount"] == 2
    h(
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Delete": {"TableName": "ttt", "Key": {"pk": {"S": "a"}}}},
                add("ttt", "b", 5),
            ]
        },
    )
    assert h.get("ttt", "a") is None
    assert h.get("ttt", "b") == item("b", n=7)
    count, _ = msgpack.unpackb(h.store.get(stats_key(h.get_table_id("ttt"))))
    assert count == 1
    assert not items_state(h.db).pending


def test_a_failed_condition_cancels_every_action_with_reasons_in_order(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    h.put("ttt", "a", n=1)
    request = {
        "TransactItems": [
            put("ttt", "x", n=9),
            add("ttt", "a", 5, "n >= :a"),
            {
                "ConditionCheck": {
                    "TableName": "ttt",
                    "Key": {"pk": {"S": "missing"}},
                    "ConditionExpression": "attribute_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
    }
    error = h.error("TransactWriteItems", request)
    assert isinstance(error, TransactionCanceledException)
    assert error.message == (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[None, ConditionalCheckFailed, ConditionalCheckFailed]"
    )
    assert error.reasons[0] == {"Code": "None"}
    assert error.reasons[1]["Code"] == "ConditionalCheckFailed"
    assert "Item" not in error.reasons[1]  # not asked for
    assert "Item" not in error.reasons[2]  # asked for, but there is no item
    assert h.get("ttt", "x") is None
    assert h.get("ttt", "a") == item("a", n=1)


def test_an_update_that_fails_on_the_item_is_a_validation_error_reason(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    h("PutItem", {"TableName": "ttt", "Item": {"pk": {"S": "a"}, "n": {"S": "text"}}})
    error = h.error("TransactWriteItems", {"TransactItems": [add("ttt", "a", 1), put("ttt", "b")]})
    assert isinstance(error, TransactionCanceledException)
    assert [r["Code"] for r in error.reasons] == ["ValidationError", "None"]
    assert "incorrect data type" in error.reasons[0]["Message"]


def test_two_actions_on_one_item_are_refused(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    error = h.error("TransactWriteItems", {"TransactItems": [put("ttt", "a"), add("ttt", "a", 1)]})
    assert isinstance(error, ValidationException)
    assert error.message == "Transaction request cannot include multiple operations on one item"


def test_request_constraints_are_reported_together(make_harness: Any) -> None:
    h = make_harness()
    error = h.error("TransactWriteItems", {"TransactItems": [], "ReturnConsumedCapacity": "X"})
    assert error.message == (
        "2 validation errors detected: Value 'X' at 'returnConsumedCapacity' failed to satisfy "
        "constraint: Member must satisfy enum value set: [INDEXES, TOTAL, NONE]; Value '[]' at "
        "'transactItems' failed to satisfy constraint: Member must have length greater than "
        "or equal to 1"
    )
    too_many = [put("ttt", str(i)) for i in range(101)]
    error = h.error("TransactWriteItems", {"TransactItems": too_many})
    assert error.message.startswith("1 validation error detected: Value '[")
    assert error.message.endswith("Member must have length less than or equal to 100")
    error = h.error("TransactWriteItems", {"TransactItems": [{}]})
    assert error.message == "TransactItems can only contain one of Check, Put, Update or Delete"
    error = h.error("TransactWriteItems", {"TransactItems": [{"Put": {"TableName": "ttt"}}]})
    assert error.message == (
        "1 validation error detected: Value null at 'transactItems.1.member.put.item' failed "
        "to satisfy constraint: Member must not be null"
    )


def test_a_missing_table_is_resource_not_found(make_harness: Any) -> None:
    h = make_harness()
    error = h.error("TransactWriteItems", {"TransactItems": [put("nope", "a")]})
    assert isinstance(error, ResourceNotFoundException)


def test_capacity_is_twice_a_plain_write_per_item_and_table(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    h.create("uuu")
    answer = h(
        "TransactWriteItems",
        {
            "TransactItems": [put("ttt", "a"), put("ttt", "b"), put("uuu", "c")],
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    consumed = {c["TableName"]: c["CapacityUnits"] for c in answer["ConsumedCapacity"]}
    assert consumed == {"ttt": 4.0, "uuu": 2.0}
    answer = h(
        "TransactGetItems",
        {
            "TransactItems": [{"Get": {"TableName": "ttt", "Key": {"pk": {"S": "a"}}}}],
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer["ConsumedCapacity"][0]["CapacityUnits"] == 2.0


def test_a_token_applies_a_transaction_once(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    request = {"TransactItems": [add("ttt", "a", 1)], "ClientRequestToken": "tok"}
    h("TransactWriteItems", request)
    lsn = h.store.applied_lsn()
    h("TransactWriteItems", request)
    assert h.store.applied_lsn() == lsn  # answered without writing
    assert h.get("ttt", "a") == item("a", n=1)
    error = h.error(
        "TransactWriteItems", {"TransactItems": [add("ttt", "a", 2)], "ClientRequestToken": "tok"}
    )
    assert isinstance(error, IdempotentParameterMismatchException)
    # A token is remembered in the store: a restarted database knows it.
    again = make_harness(h.store)
    again("TransactWriteItems", request)
    assert again.get("ttt", "a") == item("a", n=1)


def test_a_token_whose_transaction_is_in_flight_is_in_progress(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    digest = transactions.request_digest({"TransactItems": [add("ttt", "a", 1)]})
    transactions.transactions_state(h.db).in_flight["tok"] = digest
    error = h.error(
        "TransactWriteItems", {"TransactItems": [add("ttt", "a", 1)], "ClientRequestToken": "tok"}
    )
    assert isinstance(error, TransactionInProgressException)


def test_transact_get_projects_and_refuses_duplicates(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    h.put("ttt", "a", n=1, m=2)
    answer = h(
        "TransactGetItems",
        {
            "TransactItems": [
                {
                    "Get": {
                        "TableName": "ttt",
                        "Key": {"pk": {"S": "a"}},
                        "ProjectionExpression": "m",
                    }
                },
                {"Get": {"TableName": "ttt", "Key": {"pk": {"S": "b"}}}},
            ]
        },
    )
    assert answer["Responses"] == [{"Item": {"m": {"N": "2"}}}, {}]
    get = {"Get": {"TableName": "ttt", "Key": {"pk": {"S": "a"}}}}
    error = h.error("TransactGetItems", {"TransactItems": [get, get]})
    assert error.message == "Transaction request cannot include multiple operations on one item"


def test_a_token_expires_after_ten_minutes_and_is_removed(
    make_harness: Any, monkeypatch: Any
) -> None:
    h = make_harness()
    h.create("ttt")
    now = [1_000_000]
    monkeypatch.setattr(transactions, "_now_ms", lambda: now[0])
    first = {"TransactItems": [add("ttt", "a", 1)], "ClientRequestToken": "old"}
    h("TransactWriteItems", first)
    now[0] += transactions.TOKEN_LIFETIME_SECONDS * 1000 - 1
    h("TransactWriteItems", first)  # still remembered
    assert h.get("ttt", "a") == item("a", n=1)
    now[0] += 2
    # Expired: the same token is a new request, and another token's transaction removes
    # the expired record from the store.
    h("TransactWriteItems", {"TransactItems": [add("ttt", "b", 1)], "ClientRequestToken": "new"})
    assert h.store.get(transactions.token_key("old")) is None
    h("TransactWriteItems", first)
    assert h.get("ttt", "a") == item("a", n=2)
    start = transactions.TOKEN_TIME_PREFIX
    tokens = list(h.store.scan(start, prefix_end(start)))
    assert len(tokens) == 2  # "new" and the second "old"


def test_a_full_item_collection_is_its_own_cancellation_reason(
    make_harness: Any, monkeypatch: Any
) -> None:
    from keeldb.engine import indexes

    h = make_harness()
    h.create(
        "ttt",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "l", "AttributeType": "S"},
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by-l",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "l", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    monkeypatch.setattr(indexes, "ITEM_COLLECTION_BYTES_MAX", 200)
    big = {"pk": {"S": "h"}, "sk": {"S": "1"}, "l": {"S": "z"}, "v": {"S": "x" * 300}}
    small = {"pk": {"S": "other"}, "sk": {"S": "1"}}
    error = h.error(
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Put": {"TableName": "ttt", "Item": small}},
                {"Put": {"TableName": "ttt", "Item": big}},
            ]
        },
    )
    assert isinstance(error, TransactionCanceledException)
    assert [r["Code"] for r in error.reasons] == ["None", "ItemCollectionSizeLimitExceeded"]
    assert error.message.endswith("[None, ItemCollectionSizeLimitExceeded]")
