"""Query and Scan against the real server through boto3's client, resource
(`boto3.dynamodb.conditions`) and paginators, and through PynamoDB's `Model.query` / `scan`:
results, order, paging, and DynamoDB's error codes and messages on the wire."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

ITEMS = 30


@pytest.fixture
def filled(ddb: Any, table_factory: Callable[..., str]) -> str:
    name = table_factory(range_key="sk", range_type="N")
    for start in range(0, ITEMS, 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": "p" if i % 2 else "q"},
                        "sk": {"N": str(i)},
                        "v": {"N": str(i % 3)},
                    }
                }
            }
            for i in range(start, min(start + 25, ITEMS))
        ]
        ddb.batch_write_item(RequestItems={name: requests})
    return name


def error(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    answer = caught.value.response["Error"]
    return answer["Code"], answer["Message"]


def test_client_query_returns_the_partition_in_order(ddb: Any, filled: str) -> None:
    answer = ddb.query(
        TableName=filled,
        KeyConditionExpression="pk = :p AND sk >= :s",
        ExpressionAttributeValues={":p": {"S": "p"}, ":s": {"N": "11"}},
        ReturnConsumedCapacity="TOTAL",
    )
    assert [int(item["sk"]["N"]) for item in answer["Items"]] == list(range(11, ITEMS, 2))
    assert answer["Count"] == answer["ScannedCount"] == len(range(11, ITEMS, 2))
    assert answer["ConsumedCapacity"] == {"TableName": filled, "CapacityUnits": 0.5}


def test_client_query_pages_with_limit_and_exclusive_start_key(ddb: Any, filled: str) -> None:
    seen: list[int] = []
    kwargs: dict[str, Any] = {}
    while True:
        answer = ddb.query(
            TableName=filled,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "q"}},
            ScanIndexForward=False,
            Limit=4,
            **kwargs,
        )
        seen += [int(item["sk"]["N"]) for item in answer["Items"]]
        if "LastEvaluatedKey" not in answer:
            break
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
    assert seen == list(reversed(range(0, ITEMS, 2)))


def test_query_paginator_walks_every_page(ddb: Any, filled: str) -> None:
    paginator = ddb.get_paginator("query")
    pages = list(
        paginator.paginate(
            TableName=filled,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            PaginationConfig={"PageSize": 4},
        )
    )
    items = [int(item["sk"]["N"]) for page in pages for item in page["Items"]]
    assert items == list(range(1, ITEMS, 2))
    assert len(pages) >= 4


def test_scan_paginator_with_filter_counts_scanned_items(ddb: Any, filled: str) -> None:
    paginator = ddb.get_paginator("scan")
    pages = list(
        paginator.paginate(
            TableName=filled,
            FilterExpression="v = :z",
            ExpressionAttributeValues={":z": {"N": "0"}},
            PaginationConfig={"PageSize": 7},
        )
    )
    assert sum(page["ScannedCount"] for page in pages) == ITEMS
    found = sorted(int(item["sk"]["N"]) for page in pages for item in page["Items"])
    assert found == list(range(0, ITEMS, 3))


def test_parallel_scan_segments_cover_the_table_once(ddb: Any, filled: str) -> None:
    seen: list[int] = []
    for segment in range(4):
        answer = ddb.scan(TableName=filled, Segment=segment, TotalSegments=4)
        seen += [int(item["sk"]["N"]) for item in answer["Items"]]
    assert sorted(seen) == list(range(ITEMS))


def test_resource_query_and_scan_with_conditions(ddb_resource: Any, filled: str) -> None:
    table = ddb_resource.Table(filled)
    answer = table.query(
        KeyConditionExpression=Key("pk").eq("p") & Key("sk").between(3, 9),
        FilterExpression=Attr("v").eq(0),
        ProjectionExpression="sk",
    )
    assert answer["Items"] == [{"sk": Decimal(3)}, {"sk": Decimal(9)}]
    assert answer["ScannedCount"] == 4
    scanned = table.scan(FilterExpression=Attr("v").gt(1), Select="COUNT")
    assert scanned["Count"] == len([i for i in range(ITEMS) if i % 3 > 1])
    assert "Items" not in scanned


def test_resource_query_with_begins_with(ddb_resource: Any, table_factory: Any) -> None:
    table = ddb_resource.Table(table_factory(range_key="sk"))
    for word in ("apple", "apricot", "banana"):
        table.put_item(Item={"pk": "w", "sk": word})
    answer = table.query(KeyConditionExpression=Key("pk").eq("w") & Key("sk").begins_with("ap"))
    assert [item["sk"] for item in answer["Items"]] == ["apple", "apricot"]


def test_query_errors_reach_the_client_with_dynamodb_messages(ddb: Any, filled: str) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.query(
            TableName=filled,
            KeyConditionExpression="pk = :p",
            FilterExpression="sk > :s",
            ExpressionAttributeValues={":p": {"S": "p"}, ":s": {"N": "1"}},
        )
    assert error(caught) == (
        "ValidationException",
        "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk",
    )
    with pytest.raises(ClientError) as caught:
        ddb.query(
            TableName=filled,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            Select="COUNT",
            ProjectionExpression="v",
        )
    assert error(caught) == (
        "ValidationException",
        "Cannot specify the ProjectionExpression when choosing to get only the Count",
    )
    with pytest.raises(ClientError) as caught:
        ddb.query(
            TableName=filled,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            ExclusiveStartKey={"pk": {"S": "other"}, "sk": {"N": "1"}},
        )
    assert error(caught) == (
        "ValidationException",
        "The provided starting key is outside query boundaries based on provided conditions",
    )


def test_query_of_a_missing_table_is_resource_not_found(ddb: Any) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.query(
            TableName="no-such-table",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
        )
    assert error(caught) == ("ResourceNotFoundException", "Requested resource not found")


def test_scan_segment_errors_reach_the_client(ddb: Any, filled: str) -> None:
    with pytest.raises(ClientError) as caught:
        ddb.scan(TableName=filled, Segment=3, TotalSegments=3)
    assert error(caught) == (
        "ValidationException",
        (
            "The Segment parameter is zero-based and must be less than parameter TotalSegments: "
            "Segment: 3 is not less than TotalSegments: 3"
        ),
    )


def _model(endpoint: str, table: str) -> Any:
    class Reading(Model):
        class Meta:
            table_name = table
            host = endpoint
            region = "us-east-1"
            aws_access_key_id = "AKIDKEELDBTEST"
            aws_secret_access_key = "keeldb-test-secret"
            max_retry_attempts = 0

        pk = UnicodeAttribute(hash_key=True)
        sk = NumberAttribute(range_key=True)
        v = NumberAttribute(null=True)

    return Reading


def test_pynamodb_query_and_scan(endpoint: str, filled: str) -> None:
    reading = _model(endpoint, filled)
    found = list(reading.query("p", reading.sk > 20, filter_condition=reading.v == 1))
    assert [r.sk for r in found] == [i for i in range(21, ITEMS, 2) if i % 3 == 1]
    paged = list(reading.query("q", scan_index_forward=False, page_size=3))
    assert [r.sk for r in paged] == list(reversed(range(0, ITEMS, 2)))
    assert reading.count("p") == len(range(1, ITEMS, 2))
    everything = list(reading.scan(page_size=5))
    assert sorted(r.sk for r in everything) == list(range(ITEMS))
    segment = list(reading.scan(segment=0, total_segments=2)) + list(
        reading.scan(segment=1, total_segments=2)
    )
    assert sorted(r.sk for r in segment) == list(range(ITEMS))


def test_legacy_key_conditions_and_scan_filter_through_the_client(ddb: Any, filled: str) -> None:
    answer = ddb.query(
        TableName=filled,
        KeyConditions={
            "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "p"}]},
            "sk": {"ComparisonOperator": "LT", "AttributeValueList": [{"N": "9"}]},
        },
        QueryFilter={"v": {"ComparisonOperator": "NE", "AttributeValueList": [{"N": "0"}]}},
        AttributesToGet=["sk"],
    )
    assert [item["sk"]["N"] for item in answer["Items"]] == ["1", "5", "7"]
    scanned = ddb.scan(
        TableName=filled,
        ScanFilter={
            "sk": {"ComparisonOperator": "IN", "AttributeValueList": [{"N": "2"}, {"N": "3"}]}
        },
    )
    assert sorted(item["sk"]["N"] for item in scanned["Items"]) == ["2", "3"]


@pytest.fixture
def indexed(ddb: Any, table_factory: Callable[..., str]) -> str:
    name = table_factory(
        range_key="sk",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "rank", "AttributeType": "N"},
            {"AttributeName": "colour", "AttributeType": "S"},
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by_rank",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "rank", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_colour",
                "KeySchema": [
                    {"AttributeName": "colour", "KeyType": "HASH"},
                    {"AttributeName": "rank", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for i in range(12):
        item = {"pk": {"S": "p"}, "sk": {"S": f"s{i:02d}"}, "rank": {"N": str(100 - i)}}
        if i % 4:  # a sparse global index: every fourth item has no colour
            item["colour"] = {"S": "red" if i % 2 else "blue"}
        ddb.put_item(TableName=name, Item=item)
    return name


def test_query_of_a_local_index_in_index_order_and_fetching_all_attributes(
    ddb: Any, indexed: str
) -> None:
    answer = ddb.query(
        TableName=indexed,
        IndexName="by_rank",
        KeyConditionExpression="pk = :p AND #r <= :r",
        ExpressionAttributeNames={"#r": "rank"},
        ExpressionAttributeValues={":p": {"S": "p"}, ":r": {"N": "91"}},
        Limit=2,
        ConsistentRead=True,
    )
    assert [item["rank"]["N"] for item in answer["Items"]] == ["89", "90"]
    assert set(answer["Items"][0]) == {"pk", "sk", "rank"}
    assert answer["LastEvaluatedKey"] == {
        "pk": {"S": "p"},
        "sk": {"S": "s10"},
        "rank": {"N": "90"},
    }
    full = ddb.query(
        TableName=indexed,
        IndexName="by_rank",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
        Select="ALL_ATTRIBUTES",
        ReturnConsumedCapacity="INDEXES",
    )
    assert full["Count"] == 12
    assert "colour" in full["Items"][1]
    assert set(full["ConsumedCapacity"]) == {
        "TableName",
        "CapacityUnits",
        "Table",
        "LocalSecondaryIndexes",
    }


def test_query_and_scan_of_a_sparse_global_index(ddb_resource: Any, indexed: str) -> None:
    table = ddb_resource.Table(indexed)
    red = table.query(
        IndexName="by_colour",
        KeyConditionExpression=Key("colour").eq("red"),
        ScanIndexForward=False,
    )
    assert [item["rank"] for item in red["Items"]] == [Decimal(r) for r in (99, 97, 95, 93, 91, 89)]
    scanned = table.scan(IndexName="by_colour", Select="COUNT")
    assert scanned["Count"] == 9
    with pytest.raises(ClientError) as caught:
        table.query(
            IndexName="by_colour",
            KeyConditionExpression=Key("colour").eq("red"),
            ConsistentRead=True,
        )
    assert error(caught) == (
        "ValidationException",
        "Consistent reads are not supported on global secondary indexes",
    )
    with pytest.raises(ClientError) as caught:
        table.query(IndexName="nope", KeyConditionExpression=Key("pk").eq("p"))
    assert error(caught) == (
        "ValidationException",
        "The table does not have the specified index: nope",
    )
