"""The control plane through boto3's low-level client against a real `keeldb serve`:
CreateTable, DescribeTable, ListTables, DeleteTable, UpdateTable, tags, DescribeEndpoints and
DescribeLimits, with DynamoDB's error codes and messages as the client sees them."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

WAIT_FAST = {"Delay": 1, "MaxAttempts": 10}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def unique(prefix: str = "ctl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def names(ddb: Any) -> Iterator[Callable[[str], str]]:
    """Unique table names; whatever exists under them at the end is deleted."""
    made: list[str] = []

    def make(prefix: str = "ctl") -> str:
        name = unique(prefix)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            ddb.update_table(TableName=name, DeletionProtectionEnabled=False)
        except ClientError:
            pass
        try:
            ddb.delete_table(TableName=name)
        except ClientError:
            pass


def error_of(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    error = info.value.response["Error"]
    status = info.value.response["ResponseMetadata"]["HTTPStatusCode"]
    return error["Code"], error["Message"], status


def hash_table(name: str, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    args.update(extra)
    return args


def test_create_describe_and_delete_with_waiters(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("life")
    created = ddb.create_table(**hash_table(name))["TableDescription"]
    assert created["TableStatus"] == "CREATING"
    assert created["TableName"] == name
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig=WAIT_FAST)
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["TableArn"] == f"arn:aws:dynamodb:us-east-1:000000000000:table/{name}"
    assert UUID_RE.match(table["TableId"])
    assert isinstance(table["CreationDateTime"], datetime.datetime)
    age = datetime.datetime.now(datetime.UTC) - table["CreationDateTime"]
    assert datetime.timedelta(seconds=-5) < age < datetime.timedelta(seconds=60)
    assert table["ItemCount"] == 0
    assert table["TableSizeBytes"] == 0
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 0
    deleted = ddb.delete_table(TableName=name)["TableDescription"]
    assert deleted["TableStatus"] == "DELETING"
    assert "KeySchema" not in deleted
    ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig=WAIT_FAST)
    code, message, status = error_of(ddb.describe_table, TableName=name)
    assert (code, status) == ("ResourceNotFoundException", 400)
    assert message == f"Requested resource not found: Table: {name} not found"


def test_items_can_be_written_as_soon_as_create_table_returns(
    ddb: Any, names: Callable[[str], str]
) -> None:
    name = names("fast")
    ddb.create_table(**hash_table(name))
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    got = ddb.get_item(TableName=name, Key={"pk": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"] == {"pk": {"S": "a"}, "n": {"N": "1"}}


def test_item_count_and_size_follow_the_items(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("stats")
    ddb.create_table(**hash_table(name))
    for i in range(3):
        ddb.put_item(TableName=name, Item={"pk": {"S": f"k{i}"}, "v": {"S": "x" * 10}})
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["ItemCount"] == 3
    assert table["TableSizeBytes"] > 30


def test_deleting_a_table_deletes_its_items(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("gone")
    ddb.create_table(**hash_table(name))
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}})
    ddb.delete_table(TableName=name)
    ddb.create_table(**hash_table(name))
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": {"S": "a"}}, ConsistentRead=True)
    assert ddb.describe_table(TableName=name)["Table"]["ItemCount"] == 0


def test_item_operation_on_a_missing_table(ddb: Any) -> None:
    code, message, _ = error_of(ddb.get_item, TableName=unique("ghost"), Key={"pk": {"S": "a"}})
    assert (code, message) == ("ResourceNotFoundException", "Requested resource not found")


def test_create_existing_table_is_resource_in_use(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("twice")
    ddb.create_table(**hash_table(name))
    code, message, _ = error_of(ddb.create_table, **hash_table(name))
    assert (code, message) == ("ResourceInUseException", f"Table already exists: {name}")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"TableName": "ab"},
            (
                "1 validation error detected: Value 'ab' at 'tableName' failed to satisfy constraint: "
                "Member must have length greater than or equal to 3"
            ),
        ),
        (
            {"TableName": "nyh@test"},
            (
                "1 validation error detected: Value 'nyh@test' at 'tableName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            ),
        ),
        (
            {
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "extra", "AttributeType": "S"},
                ]
            },
            (
                "One or more parameter values were invalid: Number of attributes in KeySchema does "
                "not exactly match number of attributes defined in AttributeDefinitions"
            ),
        ),
        (
            {"AttributeDefinitions": [{"AttributeName": "other", "AttributeType": "S"}]},
            (
                "One or more parameter values were invalid: Some index key attributes are not "
                "defined in AttributeDefinitions. Keys: [pk], AttributeDefinitions: [other]"
            ),
        ),
        (
            {"AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "BOOL"}]},
            (
                "1 validation error detected: Value 'BOOL' at "
                "'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member "
                "must satisfy enum value set: [B, N, S]"
            ),
        ),
        (
            {"ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}},
            (
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor "
                "WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST"
            ),
        ),
        (
            {"BillingMode": "PROVISIONED"},
            (
                "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits "
                "must both be specified when BillingMode is PROVISIONED"
            ),
        ),
        (
            {"StreamSpecification": {"StreamEnabled": True}},
            (
                "One or more parameter values were invalid: Table is being created with a stream "
                "enabled, UpdateViewType is required"
            ),
        ),
        (
            {
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "pk", "KeyType": "HASH"},
                ]
            },
            "Invalid KeySchema: Some index key attribute have no definition",
        ),
    ],
)
def test_create_table_validation_errors(
    ddb: Any, names: Callable[[str], str], changes: dict[str, Any], message: str
) -> None:
    args = hash_table(names("bad"))
    args.update(changes)
    code, got, status = error_of(ddb.create_table, **args)
    assert (code, status) == ("ValidationException", 400)
    assert got == message
    code, _, _ = error_of(ddb.describe_table, TableName=args["TableName"])
    assert code in ("ResourceNotFoundException", "ValidationException")


def test_missing_throughput_without_billing_mode(ddb: Any, names: Callable[[str], str]) -> None:
    args = hash_table(names("nobill"))
    del args["BillingMode"]
    code, message, _ = error_of(ddb.create_table, **args)
    assert (code, message) == (
        "ValidationException",
        "No provisioned throughput specified for the table",
    )


def test_list_tables_paginates_in_name_order(ddb: Any, names: Callable[[str], str]) -> None:
    prefix = unique("list")
    mine = [f"{prefix}-{i}" for i in range(5)]
    for name in reversed(mine):
        ddb.create_table(**hash_table(name))
    pages = list(ddb.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 2}))
    listed = [n for page in pages for n in page["TableNames"]]
    assert listed == sorted(listed)
    assert [n for n in listed if n.startswith(prefix)] == mine
    assert all("LastEvaluatedTableName" in page for page in pages[:-1])
    assert "LastEvaluatedTableName" not in pages[-1]
    page = ddb.list_tables(ExclusiveStartTableName=mine[1], Limit=2)
    assert page["TableNames"] == mine[2:4]
    for name in mine:
        ddb.delete_table(TableName=name)


def test_list_tables_limit_above_one_hundred(ddb: Any) -> None:
    code, message, _ = error_of(ddb.list_tables, Limit=101)
    assert code == "ValidationException"
    assert message == (
        "1 validation error detected: Value '101' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 100"
    )


def test_provisioned_table_throughput_updates(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("prov")
    args = hash_table(name, ProvisionedThroughput={"ReadCapacityUnits": 2, "WriteCapacityUnits": 3})
    del args["BillingMode"]
    ddb.create_table(**args)
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 2
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 3
    assert "BillingModeSummary" not in table
    answer = ddb.update_table(
        TableName=name, ProvisionedThroughput={"ReadCapacityUnits": 4, "WriteCapacityUnits": 3}
    )["TableDescription"]
    assert answer["TableStatus"] == "UPDATING"
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig=WAIT_FAST)
    throughput = ddb.describe_table(TableName=name)["Table"]["ProvisionedThroughput"]
    assert throughput["ReadCapacityUnits"] == 4
    assert "LastIncreaseDateTime" in throughput
    code, message, _ = error_of(
        ddb.update_table,
        TableName=name,
        ProvisionedThroughput={"ReadCapacityUnits": 4, "WriteCapacityUnits": 3},
    )
    assert code == "ValidationException"
    assert message.startswith(
        "The provisioned throughput for the table will not change. The requested value equals "
        "the current value. Current ReadCapacityUnits provisioned for the table: 4."
    )
    ddb.update_table(
        TableName=name, ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}
    )
    throughput = ddb.describe_table(TableName=name)["Table"]["ProvisionedThroughput"]
    assert throughput["NumberOfDecreasesToday"] == 1
    ddb.update_table(TableName=name, BillingMode="PAY_PER_REQUEST")
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 0


def test_update_table_errors(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("upd")
    ddb.create_table(**hash_table(name))
    code, message, _ = error_of(ddb.update_table, TableName=name, BillingMode="PROVISIONED")
    assert (code, message) == (
        "ValidationException",
        (
            "One or more parameter values were invalid: ProvisionedThroughput must be specified "
            "when BillingMode is PROVISIONED"
        ),
    )
    code, message, _ = error_of(
        ddb.update_table, TableName=unique("ghost"), BillingMode="PAY_PER_REQUEST"
    )
    assert code == "ResourceNotFoundException"
    code, message, _ = error_of(
        ddb.update_table,
        TableName=name,
        GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "abc"}}],
    )
    assert (code, message) == (
        "ResourceNotFoundException",
        f"Requested resource not found: Index abc for table {name}",
    )


def test_streams_are_described_and_toggled(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("stream")
    ddb.create_table(
        **hash_table(
            name,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
    )
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert table["LatestStreamArn"] == f"{table['TableArn']}/stream/{table['LatestStreamLabel']}"
    ddb.update_table(TableName=name, StreamSpecification={"StreamEnabled": False})
    table = ddb.describe_table(TableName=name)["Table"]
    assert "StreamSpecification" not in table
    code, message, _ = error_of(
        ddb.update_table, TableName=name, StreamSpecification={"StreamEnabled": False}
    )
    assert (code, message) == (
        "ValidationException",
        f"Table has no stream to disable: TableName: {name}",
    )


def test_deletion_protection(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("keep")
    ddb.create_table(**hash_table(name, DeletionProtectionEnabled=True))
    code, message, _ = error_of(ddb.delete_table, TableName=name)
    assert (code, message) == (
        "ValidationException",
        (
            "Resource cannot be deleted as it is currently protected against deletion. Disable "
            "deletion protection first."
        ),
    )
    ddb.update_table(TableName=name, DeletionProtectionEnabled=False)
    assert ddb.describe_table(TableName=name)["Table"]["DeletionProtectionEnabled"] is False
    ddb.delete_table(TableName=name)
    ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig=WAIT_FAST)


def test_tags_round_trip_and_paginate(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("tags")
    arn = ddb.create_table(**hash_table(name, Tags=[{"Key": "created", "Value": "yes"}]))[
        "TableDescription"
    ]["TableArn"]
    tags = [{"Key": f"k{i:02d}", "Value": f"v{i}"} for i in range(24)]
    ddb.tag_resource(ResourceArn=arn, Tags=tags)
    listed = [
        tag
        for page in ddb.get_paginator("list_tags_of_resource").paginate(ResourceArn=arn)
        for tag in page["Tags"]
    ]
    assert listed == [{"Key": "created", "Value": "yes"}, *tags]
    ddb.untag_resource(ResourceArn=arn, TagKeys=[f"k{i:02d}" for i in range(24)])
    assert ddb.list_tags_of_resource(ResourceArn=arn)["Tags"] == [
        {"Key": "created", "Value": "yes"}
    ]
    code, message, _ = error_of(
        ddb.tag_resource, ResourceArn=arn, Tags=[{"Key": "aws:x", "Value": "y"}]
    )
    assert (code, message) == (
        "ValidationException",
        "Tag Key cannot be prefixed with aws:, Key: aws:x",
    )
    code, message, _ = error_of(ddb.list_tags_of_resource, ResourceArn=arn + "x")
    assert (code, message) == (
        "ResourceNotFoundException",
        f"Requested resource not found: ResourceArn: {arn}x not found",
    )


def test_describe_endpoints_and_limits(ddb: Any, endpoint: str) -> None:
    endpoints = ddb.describe_endpoints()["Endpoints"]
    assert len(endpoints) == 1
    assert endpoints[0]["CachePeriodInMinutes"] == 1440
    # The server names itself, so endpoint discovery keeps clients on it.
    assert endpoints[0]["Address"] == endpoint.removeprefix("http://")
    limits = ddb.describe_limits()
    assert limits["AccountMaxReadCapacityUnits"] == 80000
    assert limits["TableMaxWriteCapacityUnits"] == 40000


def test_secondary_indexes_are_described(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("idx")
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "alt", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by_alt",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "alt", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "alt_first",
                "KeySchema": [{"AttributeName": "alt", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["note"]},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    table = ddb.describe_table(TableName=name)["Table"]
    (lsi,) = table["LocalSecondaryIndexes"]
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert lsi["IndexArn"] == f"{table['TableArn']}/index/by_alt"
    assert gsi["IndexStatus"] == "ACTIVE"
    assert gsi["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["note"]}
    deleted = ddb.delete_table(TableName=name)["TableDescription"]
    assert "GlobalSecondaryIndexes" not in deleted


def test_on_demand_and_warm_throughput(ddb: Any, names: Callable[[str], str]) -> None:
    name = names("ondemand")
    ddb.create_table(
        **hash_table(
            name,
            OnDemandThroughput={"MaxReadRequestUnits": 200},
            WarmThroughput={"ReadUnitsPerSecond": 15000, "WriteUnitsPerSecond": 4000},
        )
    )
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["OnDemandThroughput"] == {"MaxReadRequestUnits": 200}
    assert table["WarmThroughput"]["ReadUnitsPerSecond"] == 15000
    ddb.update_table(TableName=name, OnDemandThroughput={"MaxReadRequestUnits": -1})
    assert "OnDemandThroughput" not in ddb.describe_table(TableName=name)["Table"]
    code, message, _ = error_of(
        ddb.update_table, TableName=name, WarmThroughput={"ReadUnitsPerSecond": 12000}
    )
    assert code == "ValidationException"
    assert "decreasing WarmThroughput is not supported" in message
