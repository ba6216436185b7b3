"""Local and global secondary indexes against the real server through boto3's client and
resource: Query and Scan on indexes (sparse, KEYS_ONLY / INCLUDE / ALL projections,
ALL_PROJECTED_ATTRIBUTES), index capacity and statistics, global indexes added, backfilled and
deleted by UpdateTable, and DynamoDB's error codes and messages on the wire."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

INDEX_WAIT_SECONDS_MAX = 20.0  # a backfill of a few hundred items takes well under a second


def error(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    answer = caught.value.response["Error"]
    return answer["Code"], answer["Message"]


def definitions(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"AttributeName": name, "AttributeType": type_} for name, type_ in pairs]


def index_status(ddb: Any, table: str, index: str) -> str | None:
    described = ddb.describe_table(TableName=table)["Table"]
    for candidate in described.get("GlobalSecondaryIndexes", []):
        if candidate["IndexName"] == index:
            status: str = candidate["IndexStatus"]
            return status
    return None


def wait_index(ddb: Any, table: str, index: str, status: str | None) -> None:
    deadline = time.monotonic() + INDEX_WAIT_SECONDS_MAX
    while index_status(ddb, table, index) != status:
        if time.monotonic() > deadline:
            raise TimeoutError(f"index {index} of {table} not {status}")
        time.sleep(0.02)


@pytest.fixture
def indexed(ddb: Any, table_factory: Callable[..., str]) -> str:
    """pk/sk table; LSI by_n (n: N, KEYS_ONLY); GSI by_g (g: S, INCLUDE [inc]); GSI by_gn
    (g hash, n range, ALL). Items p/0..9: g on the even ones, n on all but 9."""
    name = table_factory(
        range_key="sk",
        range_type="N",
        AttributeDefinitions=definitions(("pk", "S"), ("sk", "N"), ("n", "N"), ("g", "S")),
        LocalSecondaryIndexes=[
            {
                "IndexName": "by_n",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "n", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["inc"]},
            },
            {
                "IndexName": "by_gn",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "n", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    for i in range(10):
        item: dict[str, Any] = {
            "pk": {"S": "p"},
            "sk": {"N": str(i)},
            "inc": {"S": f"inc{i}"},
            "other": {"S": f"o{i}"},
        }
        if i != 9:
            item["n"] = {"N": str(100 - i)}
        if i % 2 == 0:
            item["g"] = {"S": "even"}
        ddb.put_item(TableName=name, Item=item)
    return name


def test_query_on_a_local_index_returns_keys_in_index_order(ddb: Any, indexed: str) -> None:
    answer = ddb.query(
        TableName=indexed,
        IndexName="by_n",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
    )
    # Item 9 has no n: the index is sparse. KEYS_ONLY: the table's and the index's keys.
    assert answer["Count"] == 9
    assert [item["n"]["N"] for item in answer["Items"]] == [str(100 - i) for i in range(8, -1, -1)]
    assert answer["Items"][0] == {"pk": {"S": "p"}, "sk": {"N": "8"}, "n": {"N": "92"}}


def test_query_on_a_local_index_fetches_attributes_outside_its_projection(
    ddb: Any, indexed: str
) -> None:
    answer = ddb.query(
        TableName=indexed,
        IndexName="by_n",
        KeyConditionExpression="pk = :p AND n > :n",
        ExpressionAttributeValues={":p": {"S": "p"}, ":n": {"N": "98"}},
        Select="ALL_ATTRIBUTES",
    )
    assert [item["other"]["S"] for item in answer["Items"]] == ["o1", "o0"]


def test_query_on_a_global_index_is_sparse_and_projected(ddb: Any, indexed: str) -> None:
    answer = ddb.query(
        TableName=indexed,
        IndexName="by_g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "even"}},
    )
    assert answer["Count"] == 5
    assert sorted(int(item["sk"]["N"]) for item in answer["Items"]) == [0, 2, 4, 6, 8]
    for item in answer["Items"]:
        assert set(item) == {"pk", "sk", "g", "inc"}


def test_all_projected_attributes_of_an_all_index_are_the_whole_items(
    ddb: Any, indexed: str
) -> None:
    answer = ddb.query(
        TableName=indexed,
        IndexName="by_gn",
        KeyConditionExpression="g = :g AND n BETWEEN :a AND :b",
        ExpressionAttributeValues={":g": {"S": "even"}, ":a": {"N": "94"}, ":b": {"N": "98"}},
        Select="ALL_PROJECTED_ATTRIBUTES",
        ScanIndexForward=False,
    )
    assert [item["sk"]["N"] for item in answer["Items"]] == ["2", "4", "6"]
    assert (
        answer["Items"][0]
        == ddb.get_item(TableName=indexed, Key={"pk": {"S": "p"}, "sk": {"N": "2"}})["Item"]
    )


def test_scan_of_a_global_index_returns_its_entries_only(ddb: Any, indexed: str) -> None:
    answer = ddb.scan(TableName=indexed, IndexName="by_gn")
    assert answer["Count"] == 5  # the even items (all have n; only item 9 lacks it)
    answer = ddb.scan(TableName=indexed, IndexName="by_n", Select="COUNT")
    assert answer["Count"] == 9


def test_consistent_read_on_a_global_index_is_refused(ddb: Any, indexed: str) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.query(
            TableName=indexed,
            IndexName="by_g",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "even"}},
            ConsistentRead=True,
        )
    assert error(caught) == (
        "ValidationException",
        "Consistent reads are not supported on global secondary indexes",
    )


def test_an_update_moves_and_removes_index_entries(ddb: Any, indexed: str) -> None:
    ddb.update_item(
        TableName=indexed,
        Key={"pk": {"S": "p"}, "sk": {"N": "0"}},
        UpdateExpression="SET g = :g",
        ExpressionAttributeValues={":g": {"S": "moved"}},
    )
    ddb.update_item(
        TableName=indexed, Key={"pk": {"S": "p"}, "sk": {"N": "2"}}, UpdateExpression="REMOVE g"
    )
    ddb.delete_item(TableName=indexed, Key={"pk": {"S": "p"}, "sk": {"N": "4"}})

    def sks(value: str) -> list[int]:
        answer = ddb.query(
            TableName=indexed,
            IndexName="by_g",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": value}},
        )
        return sorted(int(item["sk"]["N"]) for item in answer["Items"])

    assert sks("even") == [6, 8]
    assert sks("moved") == [0]


def test_describe_table_counts_index_entries(ddb: Any, indexed: str) -> None:
    described = ddb.describe_table(TableName=indexed)["Table"]
    counts = {
        i["IndexName"]: i["ItemCount"]
        for i in described["LocalSecondaryIndexes"] + described["GlobalSecondaryIndexes"]
    }
    assert counts == {"by_n": 9, "by_g": 5, "by_gn": 5}
    for index in described["LocalSecondaryIndexes"] + described["GlobalSecondaryIndexes"]:
        # Each entry is charged 100 bytes of overhead on top of its projected attributes.
        assert index["IndexSizeBytes"] > 100 * index["ItemCount"]


def test_a_write_reports_its_index_capacity(ddb: Any, indexed: str) -> None:
    answer = ddb.put_item(
        TableName=indexed,
        Item={"pk": {"S": "q"}, "sk": {"N": "1"}, "g": {"S": "x"}, "n": {"N": "1"}},
        ReturnConsumedCapacity="INDEXES",
        ReturnItemCollectionMetrics="SIZE",
    )
    assert answer["ConsumedCapacity"] == {
        "TableName": indexed,
        "CapacityUnits": 4.0,
        "Table": {"CapacityUnits": 1.0},
        "LocalSecondaryIndexes": {"by_n": {"CapacityUnits": 1.0}},
        "GlobalSecondaryIndexes": {
            "by_g": {"CapacityUnits": 1.0},
            "by_gn": {"CapacityUnits": 1.0},
        },
    }
    assert answer["ItemCollectionMetrics"] == {
        "ItemCollectionKey": {"pk": {"S": "q"}},
        "SizeEstimateRangeGB": [0.0, 1.0],
    }


def test_a_wrongly_typed_index_key_is_refused(ddb: Any, indexed: str) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.put_item(TableName=indexed, Item={"pk": {"S": "p"}, "sk": {"N": "1"}, "g": {"N": "1"}})
    assert error(caught) == (
        "ValidationException",
        (
            "One or more parameter values were invalid: Type mismatch for Index Key g Expected: S "
            "Actual: N IndexName: by_g"
        ),
    )


def test_resource_query_and_batch_writer_on_indexes(
    ddb_resource: Any, table_factory: Callable[..., str]
) -> None:
    name = table_factory(
        AttributeDefinitions=definitions(("pk", "S"), ("city", "S"), ("age", "N")),
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_city_age",
                "KeySchema": [
                    {"AttributeName": "city", "KeyType": "HASH"},
                    {"AttributeName": "age", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["nick"]},
            }
        ],
    )
    table = ddb_resource.Table(name)
    with table.batch_writer() as batch:
        for i in range(40):
            item: dict[str, Any] = {"pk": f"u{i}", "age": i, "nick": f"n{i}", "bio": "x" * 10}
            if i % 4:
                item["city"] = "oslo" if i % 2 else "rome"
            batch.put_item(Item=item)
    answer = table.query(
        IndexName="by_city_age",
        KeyConditionExpression=Key("city").eq("oslo") & Key("age").lt(20),
    )
    ages = [item["age"] for item in answer["Items"]]
    assert ages == [Decimal(i) for i in range(1, 20, 2)]
    assert set(answer["Items"][0]) == {"pk", "city", "age", "nick"}
    # Paging through the index with Limit returns every entry once, in order.
    seen: list[Decimal] = []
    start: dict[str, Any] | None = None
    while True:
        args: dict[str, Any] = {
            "IndexName": "by_city_age",
            "KeyConditionExpression": Key("city").eq("rome"),
            "Limit": 3,
        }
        if start is not None:
            args["ExclusiveStartKey"] = start
        page = table.query(**args)
        seen.extend(item["age"] for item in page["Items"])
        start = page.get("LastEvaluatedKey")
        if start is None:
            break
    assert seen == [Decimal(i) for i in range(2, 40, 4)]


def test_a_global_index_added_later_is_backfilled_then_deleted(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    name = table_factory()
    for start in range(0, 300, 25):
        ddb.batch_write_item(
            RequestItems={
                name: [
                    {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "color": {"S": f"c{i % 3}"}}}}
                    for i in range(start, start + 25)
                ]
            }
        )
    ddb.put_item(TableName=name, Item={"pk": {"S": "numeric"}, "color": {"N": "7"}})
    answer = ddb.update_table(
        TableName=name,
        AttributeDefinitions=definitions(("color", "S")),
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "by_color",
                    "KeySchema": [{"AttributeName": "color", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            }
        ],
    )
    created = answer["TableDescription"]["GlobalSecondaryIndexes"][0]
    assert created["IndexStatus"] == "CREATING"
    assert created["Backfilling"] is False  # the answer comes before the backfill starts
    wait_index(ddb, name, "by_color", "ACTIVE")
    query = ddb.query(
        TableName=name,
        IndexName="by_color",
        KeyConditionExpression="color = :c",
        ExpressionAttributeValues={":c": {"S": "c1"}},
    )
    assert query["Count"] == 100
    described = ddb.describe_table(TableName=name)["Table"]
    assert described["GlobalSecondaryIndexes"][0]["ItemCount"] == 300  # the numeric one is out
    # The new index now checks the type of what is written.
    with pytest.raises(ClientError) as caught:
        ddb.put_item(TableName=name, Item={"pk": {"S": "again"}, "color": {"N": "7"}})
    assert error(caught)[0] == "ValidationException"

    answer = ddb.update_table(
        TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by_color"}}]
    )
    assert answer["TableDescription"]["GlobalSecondaryIndexes"][0]["IndexStatus"] == "DELETING"
    wait_index(ddb, name, "by_color", None)
    with pytest.raises(ClientError) as caught:
        ddb.query(
            TableName=name,
            IndexName="by_color",
            KeyConditionExpression="color = :c",
            ExpressionAttributeValues={":c": {"S": "c1"}},
        )
    assert error(caught) == (
        "ValidationException",
        "The table does not have the specified index: by_color",
    )


def test_global_index_update_errors_on_the_wire(ddb: Any, indexed: str) -> None:
    create = {
        "Create": {
            "IndexName": "by_other",
            "KeySchema": [{"AttributeName": "other", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }
    }
    with pytest.raises(ClientError) as caught:
        ddb.update_table(
            TableName=indexed,
            AttributeDefinitions=definitions(("other", "S")),
            GlobalSecondaryIndexUpdates=[create, {"Delete": {"IndexName": "by_g"}}],
        )
    assert error(caught) == (
        "LimitExceededException",
        (
            "Subscriber limit exceeded: Only 1 online index can be created or deleted "
            "simultaneously per table"
        ),
    )
    with pytest.raises(ClientError) as caught:
        ddb.update_table(
            TableName=indexed,
            AttributeDefinitions=definitions(("g", "S")),
            GlobalSecondaryIndexUpdates=[{"Create": dict(create["Create"], IndexName="by_g")}],
        )
    assert error(caught) == (
        "ValidationException",
        "Attempting to create an index which already exists",
    )
    with pytest.raises(ClientError) as caught:
        ddb.update_table(
            TableName=indexed, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by_n"}}]
        )
    assert error(caught) == (
        "ValidationException",
        "Cannot delete an index that is not a GlobalSecondaryIndex: by_n",
    )


def test_updates_and_deletes_report_index_capacity_and_collection_metrics(
    ddb_resource: Any, indexed: str
) -> None:
    table = ddb_resource.Table(indexed)
    answer = table.update_item(
        Key={"pk": "p", "sk": 1},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": 5},
        ReturnConsumedCapacity="INDEXES",
        ReturnItemCollectionMetrics="SIZE",
    )
    # Item 1 had n = 99: its local index entry moves (a delete and a put); it is in no
    # global index (odd items have no g).
    assert answer["ConsumedCapacity"] == {
        "TableName": indexed,
        "CapacityUnits": 3.0,
        "Table": {"CapacityUnits": 1.0},
        "LocalSecondaryIndexes": {"by_n": {"CapacityUnits": 2.0}},
    }
    assert answer["ItemCollectionMetrics"]["ItemCollectionKey"] == {"pk": "p"}
    answer = table.delete_item(
        Key={"pk": "p", "sk": 2},
        ReturnConsumedCapacity="TOTAL",
        ReturnItemCollectionMetrics="SIZE",
    )
    # Item 2 leaves the local index and both global ones.
    assert answer["ConsumedCapacity"] == {"TableName": indexed, "CapacityUnits": 4.0}
    assert answer["ItemCollectionMetrics"]["SizeEstimateRangeGB"] == [Decimal(0), Decimal(1)]
