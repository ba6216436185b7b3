"""PartiQL through boto3 against a real server: execute_statement and
batch_execute_statement, with DynamoDB's error types and messages on the wire."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    err = caught.value.response["Error"]
    return err["Code"], err["Message"]


def test_insert_select_update_delete_round_trip(ddb: Any, table_factory: Any) -> None:
    table = table_factory(hash_key="Artist", range_key="SongTitle")
    insert = f"INSERT INTO \"{table}\" VALUE {{'Artist': ?, 'SongTitle': ?, 'Awards': 1}}"
    assert (
        ddb.execute_statement(Statement=insert, Parameters=[s("Acme"), s("Rocks")])["Items"] == []
    )

    selected = ddb.execute_statement(Statement=f"SELECT * FROM \"{table}\" WHERE Artist = 'Acme'")[
        "Items"
    ]
    assert selected == [{"Artist": s("Acme"), "SongTitle": s("Rocks"), "Awards": n("1")}]

    updated = ddb.execute_statement(
        Statement=f"UPDATE \"{table}\" SET Awards = Awards + 1 SET Genre = 'rock' "
        "WHERE Artist = 'Acme' AND SongTitle = 'Rocks' RETURNING MODIFIED NEW *"
    )["Items"]
    assert updated == [{"Awards": n("2"), "Genre": s("rock")}]

    deleted = ddb.execute_statement(
        Statement=f"DELETE FROM \"{table}\" WHERE Artist = 'Acme' AND SongTitle = 'Rocks' "
        "RETURNING ALL OLD *"
    )["Items"]
    assert deleted == [
        {"Artist": s("Acme"), "SongTitle": s("Rocks"), "Awards": n("2"), "Genre": s("rock")}
    ]
    assert "Item" not in ddb.get_item(
        TableName=table, Key={"Artist": s("Acme"), "SongTitle": s("Rocks")}
    )


def test_insert_of_an_existing_key_is_a_duplicate_item_exception(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    statement = f"INSERT INTO \"{table}\" VALUE {{'pk': 'a'}}"
    ddb.execute_statement(Statement=statement)
    assert error_of(ddb.execute_statement, Statement=statement) == (
        "DuplicateItemException",
        "Duplicate primary key exists in table",
    )


def test_update_of_a_missing_item_is_a_conditional_check_failure(
    ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    assert error_of(
        ddb.execute_statement, Statement=f"UPDATE \"{table}\" SET a = 1 WHERE pk = 'none'"
    ) == ("ConditionalCheckFailedException", "The conditional request failed")


def test_statement_errors_have_dynamodb_types_and_messages(ddb: Any, table_factory: Any) -> None:
    table = table_factory(hash_key="pk", range_key="sk")
    assert error_of(
        ddb.execute_statement, Statement=f"UPDATE \"{table}\" SET a = 1 WHERE pk = 'x'"
    ) == (
        "ValidationException",
        "Where clause does not contain a mandatory equality on all key attributes",
    )
    assert error_of(ddb.execute_statement, Statement=f'SELECT * FROM "{table}" WHERE pk = ?') == (
        "ValidationException",
        "Number of parameters in request and statement don't match.",
    )
    code, message = error_of(ddb.execute_statement, Statement=f'SELEKT * FROM "{table}"')
    assert code == "ValidationException"
    assert message.startswith("Statement wasn't well formed, can't be processed: ")
    assert error_of(ddb.execute_statement, Statement='SELECT * FROM "no-such-table"')[0] == (
        "ResourceNotFoundException"
    )


def test_select_pages_with_limit_and_next_token(ddb: Any, table_factory: Any) -> None:
    table = table_factory(hash_key="pk", range_key="sk", range_type="N")
    for i in range(7):
        ddb.put_item(TableName=table, Item={"pk": s("p"), "sk": n(str(i)), "v": n(str(i * 10))})
    statement = f"SELECT sk FROM \"{table}\" WHERE pk = 'p' AND sk >= 2"
    seen: list[str] = []
    kwargs: dict[str, Any] = {"Statement": statement, "Limit": 2}
    for _ in range(10):
        answer = ddb.execute_statement(**kwargs)
        seen += [item["sk"]["N"] for item in answer["Items"]]
        if "NextToken" not in answer:
            break
        kwargs["NextToken"] = answer["NextToken"]
    assert seen == ["2", "3", "4", "5", "6"]

    first = ddb.execute_statement(Statement=statement, Limit=1)
    assert error_of(
        ddb.execute_statement,
        Statement=f'SELECT * FROM "{table}"',
        NextToken=first["NextToken"],
    ) == ("ValidationException", "NextToken does not match request")


def test_select_scan_with_filter_and_consumed_capacity(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    for i in range(6):
        ddb.put_item(TableName=table, Item={"pk": s(f"k{i}"), "n": n(str(i))})
    answer = ddb.execute_statement(
        Statement=f'SELECT pk FROM "{table}" WHERE n IN [1, 4] OR n > 4',
        ReturnConsumedCapacity="TOTAL",
    )
    assert sorted(item["pk"]["S"] for item in answer["Items"]) == ["k1", "k4", "k5"]
    assert answer["ConsumedCapacity"]["TableName"] == table
    assert answer["ConsumedCapacity"]["CapacityUnits"] > 0


def test_select_from_a_global_index(ddb: Any, table_factory: Any) -> None:
    table = table_factory(
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byG",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for i in range(4):
        ddb.put_item(TableName=table, Item={"pk": s(f"p{i}"), "g": s("odd" if i % 2 else "even")})
    answer = ddb.execute_statement(Statement=f'SELECT pk FROM "{table}"."byG" WHERE g = \'odd\'')
    assert sorted(item["pk"]["S"] for item in answer["Items"]) == ["p1", "p3"]


def test_batch_execute_statement_answers_each_statement(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": s("dup")})
    writes = ddb.batch_execute_statement(
        Statements=[
            {
                "Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': ?, 'v': 1}}",
                "Parameters": [s("a")],
            },
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'dup'}}"},
            {"Statement": f"UPDATE \"{table}\" SET v = 2 WHERE pk = 'missing'"},
        ]
    )["Responses"]
    assert writes[0] == {"TableName": table}
    assert writes[1]["Error"] == {
        "Code": "DuplicateItem",
        "Message": "Duplicate primary key exists in table",
    }
    assert writes[2]["Error"]["Code"] == "ConditionalCheckFailed"

    reads = ddb.batch_execute_statement(
        Statements=[
            {"Statement": f"SELECT v FROM \"{table}\" WHERE pk = 'a'"},
            {"Statement": f"SELECT * FROM \"{table}\" WHERE pk = 'nobody'"},
            {"Statement": f'SELECT * FROM "{table}" WHERE v = 1'},
        ]
    )["Responses"]
    assert reads[0] == {"TableName": table, "Item": {"v": n("1")}}
    assert reads[1] == {"TableName": table}
    assert reads[2]["Error"] == {
        "Code": "ValidationError",
        "Message": "Select statements within BatchExecuteStatement must specify the primary key "
        "in the where clause.",
    }


def test_batch_of_reads_and_writes_is_a_validation_exception(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    code, _ = error_of(
        ddb.batch_execute_statement,
        Statements=[
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'x'}}"},
            {"Statement": f"SELECT * FROM \"{table}\" WHERE pk = 'x'"},
        ],
    )
    assert code == "ValidationException"
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": s("x")})


def test_execute_transaction_writes_all_statements_or_none(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": s("taken")})
    code, _ = error_of(
        ddb.execute_transaction,
        TransactStatements=[
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'new'}}"},
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'taken'}}"},
        ],
    )
    assert code == "TransactionCanceledException"
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": s("new")})
    ddb.execute_transaction(
        TransactStatements=[
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': 'new'}}"},
            {"Statement": f"DELETE FROM \"{table}\" WHERE pk = 'taken'"},
        ],
    )
    assert "Item" in ddb.get_item(TableName=table, Key={"pk": s("new")})
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": s("taken")})


def test_failed_condition_returns_the_old_item_when_asked(ddb: Any, table_factory: Any) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": s("k"), "v": n("1")})
    with pytest.raises(ClientError) as caught:
        ddb.execute_statement(
            Statement=f"UPDATE \"{table}\" SET v = 2 WHERE pk = 'k' AND v = 5",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert caught.value.response["Item"] == {"pk": s("k"), "v": n("1")}


def test_select_on_several_partition_keys_pages_across_them(ddb: Any, table_factory: Any) -> None:
    table = table_factory(hash_key="pk", range_key="sk", range_type="N")
    for pk in ("a", "b", "c"):
        for sk in range(3):
            ddb.put_item(TableName=table, Item={"pk": s(pk), "sk": n(str(sk))})
    statement = f"SELECT pk, sk FROM \"{table}\" WHERE pk IN ['c', 'a'] ORDER BY pk"
    kwargs: dict[str, Any] = {"Statement": statement, "Limit": 2}
    seen: list[tuple[str, str]] = []
    for _ in range(10):
        answer = ddb.execute_statement(**kwargs)
        seen += [(item["pk"]["S"], item["sk"]["N"]) for item in answer["Items"]]
        if "NextToken" not in answer:
            break
        kwargs["NextToken"] = answer["NextToken"]
    assert seen == [("a", "0"), ("a", "1"), ("a", "2"), ("c", "0"), ("c", "1"), ("c", "2")]
