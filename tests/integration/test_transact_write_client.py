"""TransactWriteItems and TransactGetItems through boto3 against a real server: the answers,
every error and every cancellation reason, as DynamoDB gives them."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> dict[str, Any]:
    return excinfo.value.response


def _put(table: str, pk: str, **attributes: Any) -> dict[str, Any]:
    item = {"pk": {"S": pk}}
    for name, value in attributes.items():
        item[name] = {"N": str(value)} if isinstance(value, int) else {"S": value}
    return {"Put": {"TableName": table, "Item": item}}


def test_a_transaction_writes_every_item_or_none(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.transact_write_items(TransactItems=[_put(table, "a", n=1), _put(table, "b", n=2)])
    got = ddb.transact_get_items(
        TransactItems=[
            {"Get": {"TableName": table, "Key": {"pk": {"S": "a"}}}},
            {"Get": {"TableName": table, "Key": {"pk": {"S": "b"}}}},
            {"Get": {"TableName": table, "Key": {"pk": {"S": "missing"}}}},
        ]
    )
    assert got["Responses"][0]["Item"]["n"] == {"N": "1"}
    assert got["Responses"][1]["Item"]["n"] == {"N": "2"}
    assert got["Responses"][2] == {}

    with pytest.raises(ClientError) as excinfo:
        ddb.transact_write_items(
            TransactItems=[
                _put(table, "c", n=3),
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"pk": {"S": "a"}},
                        "ConditionExpression": "n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
    response = _error(excinfo)
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert response["Error"]["Message"] == (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[None, ConditionalCheckFailed]"
    )
    reasons = response["CancellationReasons"]
    assert reasons[0] == {"Code": "None"}
    assert reasons[1]["Code"] == "ConditionalCheckFailed"
    assert reasons[1]["Message"] == "The conditional request failed"
    assert reasons[1]["Item"] == {"pk": {"S": "a"}, "n": {"N": "1"}}
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "c"}})
