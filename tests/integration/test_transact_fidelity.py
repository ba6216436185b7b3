"""TransactWriteItems and TransactGetItems through boto3: the order in which DynamoDB checks a
request, which key errors cancel a transaction and which refuse it, the exact messages, and
ClientRequestToken idempotency for a transaction over many items (across partitions when the
endpoint is a cluster). The expected answers are DynamoDB's as recorded by the public
conformance suite paritysuite/dynamodb-conformance (docs/transactions.md, "Messages")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

RCC_BOGUS = (
    "Value 'BOGUS' at 'returnConsumedCapacity' failed to satisfy constraint: "
    "Member must satisfy enum value set: [INDEXES, TOTAL, NONE]"
)
SYNTAX = 'Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "("'
UNUSED = "Value provided in ExpressionAttributeValues unused in expressions: keys: {:v}"
SCHEMA = "The provided key element does not match the schema"
EMPTY_KEY = (
    "One or more parameter values are not valid. The AttributeValue for a key attribute "
    "cannot contain an empty string value. Key: pk"
)
MISSING = "missing-table-of-fidelity"


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}}


def _refused(call: Any, **request: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(**request)
    return caught.value


def _message(error: ClientError) -> str:
    message: str = error.response["Error"]["Message"]
    return message


def _cancelled(error: ClientError) -> list[dict[str, Any]]:
    assert error.response["Error"]["Code"] == "TransactionCanceledException"
    reasons: list[dict[str, Any]] = error.response["CancellationReasons"]
    codes = ", ".join(r["Code"] for r in reasons)
    assert _message(error) == (
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    )
    return reasons


def test_a_token_too_long_is_reported_before_an_unknown_return_consumed_capacity(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    token = "x" * 37
    error = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Put": {"TableName": table, "Item": _key("a")}}],
        ClientRequestToken=token,
        ReturnConsumedCapacity="BOGUS",
    )
    assert _message(error) == (
        f"2 validation errors detected: Value '{token}' at 'clientRequestToken' failed to "
        "satisfy constraint: Member must have length less than or equal to 36; " + RCC_BOGUS
    )


def test_expressions_of_every_action_are_checked_before_any_table(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    check = {"TableName": table, "Key": _key("b")}
    syntax = _refused(
        ddb.transact_write_items,
        TransactItems=[
            {"Put": {"TableName": MISSING, "Item": _key("a")}},
            {"ConditionCheck": {**check, "ConditionExpression": "attribute_not_exists("}},
        ],
    )
    assert syntax.response["Error"]["Code"] == "ValidationException"
    assert _message(syntax) == SYNTAX
    unused = _refused(
        ddb.transact_write_items,
        TransactItems=[
            {"Put": {"TableName": MISSING, "Item": _key("a")}},
            {
                "ConditionCheck": {
                    **check,
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ExpressionAttributeValues": {":v": {"S": "x"}},
                }
            },
        ],
    )
    assert _message(unused) == UNUSED
    missing = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Put": {"TableName": MISSING, "Item": _key("a")}}],
    )
    assert missing.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_key_of_the_wrong_type_cancels_and_an_empty_key_refuses(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    put = _refused(
        ddb.transact_write_items,
        TransactItems=[
            {"Put": {"TableName": table, "Item": _key("fine")}},
            {"Put": {"TableName": table, "Item": {"pk": {"N": "5"}}}},
        ],
    )
    assert _cancelled(put) == [
        {"Code": "None"},
        {
            "Code": "ValidationError",
            "Message": "One or more parameter values were invalid: "
            "Type mismatch for key pk expected: S actual: N",
        },
    ]
    for action in (
        {"Delete": {"TableName": table, "Key": {"pk": {"L": [{"S": "x"}]}}}},
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": {"pk": {"N": "5"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": {"N": "5"}},
                "UpdateExpression": "SET a = :v",
                "ExpressionAttributeValues": {":v": {"S": "x"}},
            }
        },
    ):
        error = _refused(ddb.transact_write_items, TransactItems=[action])
        assert _cancelled(error) == [{"Code": "ValidationError", "Message": SCHEMA}]
    empty = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Delete": {"TableName": table, "Key": {"pk": {"S": ""}}}}],
    )
    assert empty.response["Error"]["Code"] == "ValidationException"
    assert _message(empty) == EMPTY_KEY
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("fine"))


def test_an_index_key_of_the_wrong_type_cancels_and_an_empty_one_refuses(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory(
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    put = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Put": {"TableName": table, "Item": {**_key("a"), "g": {"N": "5"}}}}],
    )
    (reason,) = _cancelled(put)
    assert reason["Code"] == "ValidationError"
    update = {
        "TableName": table,
        "Key": _key("b"),
        "UpdateExpression": "SET g = :v",
    }
    wrong = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Update": {**update, "ExpressionAttributeValues": {":v": {"N": "5"}}}}],
    )
    assert _cancelled(wrong)[0]["Code"] == "ValidationError"
    empty = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Update": {**update, "ExpressionAttributeValues": {":v": {"S": ""}}}}],
    )
    assert empty.response["Error"]["Code"] == "ValidationException"
    assert re.search("secondary index key", _message(empty), re.IGNORECASE)


def test_a_get_with_an_empty_key_cancels_with_a_validation_error(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    error = _refused(
        ddb.transact_get_items,
        TransactItems=[
            {"Get": {"TableName": table, "Key": _key("a")}},
            {"Get": {"TableName": table, "Key": {}}},
        ],
    )
    assert _cancelled(error) == [
        {"Code": "None"},
        {"Code": "ValidationError", "Message": SCHEMA},
    ]
    syntax = _refused(
        ddb.transact_get_items,
        TransactItems=[
            {"Get": {"TableName": MISSING, "Key": _key("a")}},
            {"Get": {"TableName": table, "Key": _key("b"), "ProjectionExpression": "!!!"}},
        ],
    )
    assert _message(syntax) == 'Invalid ProjectionExpression: Syntax error; token: "!", near: "!!"'


def test_limits_and_duplicates_have_dynamodbs_messages(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    many = _refused(
        ddb.transact_write_items,
        TransactItems=[{"Put": {"TableName": table, "Item": _key(f"k{i}")}} for i in range(101)],
    )
    assert re.fullmatch(
        r"1 validation error detected: Value '\[.+\]' at 'transactItems' failed to satisfy "
        r"constraint: Member must have length less than or equal to 100",
        _message(many),
        re.DOTALL,
    )
    duplicate = _refused(
        ddb.transact_write_items,
        TransactItems=[
            {"Put": {"TableName": table, "Item": _key("dup")}},
            {"Delete": {"TableName": table, "Key": _key("dup")}},
        ],
    )
    assert _message(duplicate) == (
        "Transaction request cannot include multiple operations on one item"
    )
    pad = "x" * (390 * 1024)
    big = _refused(
        ddb.transact_write_items,
        TransactItems=[
            {"Put": {"TableName": table, "Item": {**_key(f"big{i}"), "d": {"S": pad}}}}
            for i in range(11)
        ],
    )
    assert big.response["Error"]["Code"] == "ValidationException"
    assert _message(big) == (
        "Collection size of items exceeded, which can also be caused by the aggregate size "
        "of the items in the transaction exceeding the 4MB limit"
    )
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("big0"))


def _adds(table: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": table,
                "Key": _key(f"item{i}"),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
        for i in range(count)
    ]


def _counts(ddb: Any, table: str, count: int) -> list[int]:
    out = []
    for i in range(count):
        item = ddb.get_item(TableName=table, Key=_key(f"item{i}"), ConsistentRead=True)["Item"]
        out.append(int(item["n"]["N"]))
    return out


def test_a_retried_token_over_many_items_applies_once_and_reads_on_retry(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    token = table[-30:]  # its own token: the endpoint may be a long-lived cluster
    items = _adds(table, 12)
    first = ddb.transact_write_items(
        TransactItems=items, ClientRequestToken=token, ReturnConsumedCapacity="TOTAL"
    )
    assert first["ConsumedCapacity"] == [
        {"TableName": table, "CapacityUnits": 24.0, "WriteCapacityUnits": 24.0}
    ]
    again = ddb.transact_write_items(
        TransactItems=items, ClientRequestToken=token, ReturnConsumedCapacity="TOTAL"
    )
    assert again["ConsumedCapacity"] == [
        {"TableName": table, "CapacityUnits": 24.0, "ReadCapacityUnits": 24.0}
    ]
    assert _counts(ddb, table, 12) == [1] * 12
    mismatch = _refused(ddb.transact_write_items, TransactItems=items[1:], ClientRequestToken=token)
    assert mismatch.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert _counts(ddb, table, 12) == [1] * 12


def test_execute_transaction_refuses_reads_mixed_with_writes(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    error = _refused(
        ddb.execute_transaction,
        TransactStatements=[
            {"Statement": f"SELECT * FROM \"{table}\" WHERE pk = 'a'"},
            {"Statement": f"DELETE FROM \"{table}\" WHERE pk = 'b'"},
        ],
    )
    assert error.response["Error"]["Code"] == "ValidationException"
    assert _message(error) == (
        "The entire transaction must consist of either read statements or write statements"
    )
