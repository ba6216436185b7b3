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


def _update_add(table: str, pk: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": "ADD n :a",
            "ExpressionAttributeValues": {":a": {"N": str(amount)}},
            **extra,
        }
    }


def test_an_update_that_cannot_apply_is_a_validation_error_reason(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"S": "text"}})
    with pytest.raises(ClientError) as excinfo:
        ddb.transact_write_items(TransactItems=[_update_add(table, "a", 1), _put(table, "b")])
    response = _error(excinfo)
    assert response["Error"]["Code"] == "TransactionCanceledException"
    codes = [r["Code"] for r in response["CancellationReasons"]]
    assert codes == ["ValidationError", "None"]
    assert "incorrect data type" in response["CancellationReasons"][0]["Message"]


def test_two_actions_on_one_item_are_a_validation_exception(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    with pytest.raises(ClientError) as excinfo:
        ddb.transact_write_items(TransactItems=[_put(table, "a"), _update_add(table, "a", 1)])
    error = _error(excinfo)["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == "Transaction request cannot include multiple operations on one item"


def test_more_than_100_actions_are_refused(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    with pytest.raises(ClientError) as excinfo:
        ddb.transact_write_items(TransactItems=[_put(table, str(i)) for i in range(101)])
    error = _error(excinfo)["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith("1 validation error detected: Value '[")
    assert error["Message"].endswith(
        "at 'transactItems' failed to satisfy constraint: Member must have length less than "
        "or equal to 100"
    )
    # 100 is allowed, and they all land.
    ddb.transact_write_items(TransactItems=[_put(table, str(i)) for i in range(100)])
    assert ddb.describe_table(TableName=table)["Table"]["ItemCount"] == 100


def test_a_missing_table_is_resource_not_found(ddb: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ddb.transact_write_items(TransactItems=[_put("no-such-table", "a")])
    assert _error(excinfo)["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as excinfo:
        ddb.transact_get_items(
            TransactItems=[{"Get": {"TableName": "no-such-table", "Key": {"pk": {"S": "a"}}}}]
        )
    assert _error(excinfo)["Error"]["Code"] == "ResourceNotFoundException"


def test_a_token_makes_retries_idempotent(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    request = {"TransactItems": [_update_add(table, "a", 1)], "ClientRequestToken": table[-30:]}
    ddb.transact_write_items(**request)
    again = ddb.transact_write_items(**request, ReturnConsumedCapacity="TOTAL")
    assert again["ConsumedCapacity"][0]["ReadCapacityUnits"] > 0  # read, not written again
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"]
    assert item["n"] == {"N": "1"}
    with pytest.raises(ClientError) as excinfo:
        ddb.transact_write_items(
            TransactItems=[_update_add(table, "a", 2)], ClientRequestToken=table[-30:]
        )
    assert _error(excinfo)["Error"]["Code"] == "IdempotentParameterMismatchException"


def test_capacity_is_doubled_and_broken_down_by_index(ddb: Any, table_factory: Any) -> None:
    table = table_factory(
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    answer = ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "a"}, "g": {"S": "x"}}}},
            {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}}}},
        ],
        ReturnConsumedCapacity="INDEXES",
    )
    (consumed,) = answer["ConsumedCapacity"]
    assert consumed["TableName"] == table
    assert consumed["Table"]["CapacityUnits"] == 4.0
    assert consumed["GlobalSecondaryIndexes"]["by-g"]["CapacityUnits"] == 2.0
    assert consumed["CapacityUnits"] == 6.0
    found = ddb.query(
        TableName=table,
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "x"}},
    )
    assert [i["pk"]["S"] for i in found["Items"]] == ["a"]


def test_item_collection_metrics_for_a_table_with_a_local_index(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory(
        range_key="sk",
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
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    answer = ddb.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": table,
                    "Item": {"pk": {"S": "h"}, "sk": {"S": "1"}, "l": {"S": "z"}},
                }
            }
        ],
        ReturnItemCollectionMetrics="SIZE",
    )
    (metrics,) = answer["ItemCollectionMetrics"][table]
    assert metrics["ItemCollectionKey"] == {"pk": {"S": "h"}}
    assert metrics["SizeEstimateRangeGB"] == [0.0, 1.0]


def test_transact_get_projects_and_doubles_read_capacity(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "x": {"N": "1"}, "y": {"N": "2"}})
    answer = ddb.transact_get_items(
        TransactItems=[
            {
                "Get": {
                    "TableName": table,
                    "Key": {"pk": {"S": "a"}},
                    "ProjectionExpression": "#y",
                    "ExpressionAttributeNames": {"#y": "y"},
                }
            }
        ],
        ReturnConsumedCapacity="TOTAL",
    )
    assert answer["Responses"] == [{"Item": {"y": {"N": "2"}}}]
    assert answer["ConsumedCapacity"][0]["CapacityUnits"] == 2.0


def test_execute_transaction_runs_partiql_as_one_transaction(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.execute_transaction(
        TransactStatements=[
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'a', 'n': 1}}"},
            {
                "Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': ?, 'n': 2}}",
                "Parameters": [{"S": "b"}],
            },
        ],
        ClientRequestToken="p-" + table[-30:],
    )
    with pytest.raises(ClientError) as excinfo:
        ddb.execute_transaction(
            TransactStatements=[
                {"Statement": f"UPDATE \"{table}\" SET n = 5 WHERE pk = 'b'"},
                {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'a'}}"},
            ]
        )
    response = _error(excinfo)
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in response["CancellationReasons"]] == ["None", "DuplicateItem"]
    answer = ddb.execute_transaction(
        TransactStatements=[
            {"Statement": f"SELECT n FROM \"{table}\" WHERE pk = 'a'"},
            {"Statement": f"SELECT n FROM \"{table}\" WHERE pk = 'b'"},
        ]
    )
    assert answer["Responses"] == [{"Item": {"n": {"N": "1"}}}, {"Item": {"n": {"N": "2"}}}]
