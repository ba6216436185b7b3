"""The control plane through `Database.dispatch`, over the in-memory store and log: every
operation's answers, DynamoDB's validation rules and messages, and the catalog's durability."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import pytest

from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.model.errors import (
    AccessDeniedException,
    ClientError,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    ValidationException,
)
from keeldb.model.keys import table_bounds, table_prefix
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.storage.protocols import Entry, Store

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
ARN_PREFIX = "arn:aws:dynamodb:us-east-1:000000000000:table/"
NOW = 1_800_000_000.0  # a fixed instant for the fake clock (2027-01-15T08:00:00Z)


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Node:
    """A database over a memory store whose log remembers every committed entry."""

    def __init__(self, store: Store | None = None) -> None:
        self.store: Store = store if store is not None else MemoryStore()
        self.db = Database(self.store)
        self.clock = FakeClock()
        self.db.state[catalog.CLOCK_STATE_KEY] = self.clock
        self.entries: list[Entry] = []
        self.db.attach_log(MemoryLog(self._apply, start_lsn=self.store.applied_lsn()))

    def _apply(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)
        self.db.apply(entries)

    def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(self.db.dispatch(op, body))

    def error(self, op: str, body: dict[str, Any]) -> ClientError:
        with pytest.raises(ClientError) as info:
            self.call(op, body)
        return info.value

    def create(self, name: str = "things", **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        body.update(extra)
        return self.call("CreateTable", body)["TableDescription"]

    def create_provisioned(self, name: str = "things", read: int = 5, write: int = 5) -> None:
        self.call(
            "CreateTable",
            {
                "TableName": name,
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "N"},
                ],
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "ProvisionedThroughput": {"ReadCapacityUnits": read, "WriteCapacityUnits": write},
            },
        )

    def describe(self, name: str = "things") -> dict[str, Any]:
        return self.call("DescribeTable", {"TableName": name})["Table"]


@pytest.fixture
def node() -> Node:
    return Node()


def expect(
    node: Node, op: str, body: dict[str, Any], error: type[ClientError], message: str
) -> None:
    err = node.error(op, body)
    assert type(err) is error, (type(err), err.message)
    assert err.message == message


def table_body(**members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "TableName": "things",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    body.update(members)
    return {k: v for k, v in body.items() if v is not None}


TWO_KEYS = {
    "AttributeDefinitions": [
        {"AttributeName": "a", "AttributeType": "S"},
        {"AttributeName": "b", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "a", "KeyType": "HASH"},
        {"AttributeName": "b", "KeyType": "RANGE"},
    ],
}


# --- CreateTable ----------------------------------------------------------------------------


def test_create_table_answers_creating_then_the_table_is_active(node: Node) -> None:
    created = node.create()
    assert created["TableStatus"] == "CREATING"
    assert node.describe()["TableStatus"] == "ACTIVE"


def test_create_table_description_carries_identity_schema_and_capacity(node: Node) -> None:
    created = node.create()
    assert UUID_RE.match(created["TableId"])
    assert created["TableArn"] == ARN_PREFIX + "things"
    assert created["CreationDateTime"] == NOW
    assert created["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert created["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert created["ProvisionedThroughput"] == {
        "NumberOfDecreasesToday": 0,
        "ReadCapacityUnits": 0,
        "WriteCapacityUnits": 0,
    }
    assert created["ItemCount"] == 0
    assert created["TableSizeBytes"] == 0
    # CreateTable's answer has no LastUpdateToPayPerRequestDateTime; DescribeTable's has.
    assert created["BillingModeSummary"] == {"BillingMode": "PAY_PER_REQUEST"}
    described = node.describe()
    assert described["BillingModeSummary"] == {
        "BillingMode": "PAY_PER_REQUEST",
        "LastUpdateToPayPerRequestDateTime": NOW,
    }
    assert described["TableId"] == created["TableId"]
    assert described["DeletionProtectionEnabled"] is False
    assert "StreamSpecification" not in described
    assert "LatestStreamArn" not in described
    assert "SSEDescription" not in described


def test_provisioned_table_reports_its_capacity_and_no_billing_summary(node: Node) -> None:
    node.create_provisioned(read=3, write=7)
    described = node.describe()
    assert described["ProvisionedThroughput"] == {
        "NumberOfDecreasesToday": 0,
        "ReadCapacityUnits": 3,
        "WriteCapacityUnits": 7,
    }
    assert "BillingModeSummary" not in described
    assert described["KeySchema"][1] == {"AttributeName": "sk", "KeyType": "RANGE"}


def test_missing_members_are_reported_together_in_one_message(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        {"TableName": "abc;"},
        ValidationException,
        "3 validation errors detected: "
        "Value null at 'attributeDefinitions' failed to satisfy constraint: Member must not be "
        "null; Value 'abc;' at 'tableName' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: [a-zA-Z0-9_.-]+; Value null at 'keySchema' failed to "
        "satisfy constraint: Member must not be null",
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "ab",
            (
                "1 validation error detected: Value 'ab' at 'tableName' failed to satisfy "
                "constraint: Member must have length greater than or equal to 3"
            ),
        ),
        (
            "a" * 256,
            (
                f"1 validation error detected: Value '{'a' * 256}' at 'tableName' failed to "
                "satisfy constraint: Member must have length less than or equal to 255"
            ),
        ),
        (
            "x",
            (
                "1 validation error detected: Value 'x' at 'tableName' failed to satisfy "
                "constraint: Member must have length greater than or equal to 3"
            ),
        ),
        (
            "nyh@test",
            (
                "1 validation error detected: Value 'nyh@test' at 'tableName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            ),
        ),
        (
            "",
            (
                "2 validation errors detected: Value '' at 'tableName' failed to satisfy "
                "constraint: Member must have length greater than or equal to 3; Value '' at "
                "'tableName' failed to satisfy constraint: Member must satisfy regular expression "
                "pattern: [a-zA-Z0-9_.-]+"
            ),
        ),
    ],
)
def test_table_name_rules(node: Node, name: str, message: str) -> None:
    expect(node, "CreateTable", table_body(TableName=name), ValidationException, message)
    assert node.call("ListTables", {})["TableNames"] == []


def test_names_at_the_limits_are_accepted(node: Node) -> None:
    for name in ["abc", "a" * 255, ".alternator_test-1"]:
        node.create(name)
    assert len(node.call("ListTables", {})["TableNames"]) == 3


def test_throughput_below_one_is_reported_write_first(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(
            BillingMode=None,
            KeySchema=[],
            ProvisionedThroughput={"ReadCapacityUnits": -1, "WriteCapacityUnits": 0},
        ),
        ValidationException,
        "3 validation errors detected: "
        "Value '0' at 'provisionedThroughput.writeCapacityUnits' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1; "
        "Value '-1' at 'provisionedThroughput.readCapacityUnits' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1; "
        "Value '[]' at 'keySchema' failed to satisfy constraint: Member must have length "
        "greater than or equal to 1",
    )


def test_key_schema_members_are_checked(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(
            KeySchema=[
                {"KeyType": "HASH"},
                {"AttributeName": "a"},
                {"KeyType": "Woop", "AttributeName": "a"},
            ]
        ),
        ValidationException,
        "4 validation errors detected: "
        "Value '[KeySchemaElement(attributeName=null, keyType=HASH), "
        "KeySchemaElement(attributeName=a, keyType=null), "
        "KeySchemaElement(attributeName=a, keyType=Woop)]' at 'keySchema' failed to satisfy "
        "constraint: Member must have length less than or equal to 2; "
        "Value null at 'keySchema.1.member.attributeName' failed to satisfy constraint: Member "
        "must not be null; "
        "Value null at 'keySchema.2.member.keyType' failed to satisfy constraint: Member must "
        "not be null; "
        "Value 'Woop' at 'keySchema.3.member.keyType' failed to satisfy constraint: Member "
        "must satisfy enum value set: [HASH, RANGE]",
    )


@pytest.mark.parametrize("bad_type", ["SS", "BOOL", "M", "Q"])
def test_key_attribute_types_are_s_n_or_b(node: Node, bad_type: str) -> None:
    expect(
        node,
        "CreateTable",
        table_body(AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": bad_type}]),
        ValidationException,
        f"1 validation error detected: Value '{bad_type}' at "
        "'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member "
        "must satisfy enum value set: [B, N, S]",
    )


def test_ten_violations_at_most_are_listed(node: Node) -> None:
    err = node.error(
        "CreateTable",
        table_body(AttributeDefinitions=[{} for _ in range(8)], KeySchema=[{} for _ in range(2)]),
    )
    assert err.message.startswith("10 validation errors detected: ")
    assert err.message.count("failed to satisfy constraint") == 10


def test_undefined_hash_key_names_keys_and_definitions(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(AttributeDefinitions=[{"AttributeName": "b", "AttributeType": "S"}]),
        ValidationException,
        "One or more parameter values were invalid: Some index key attributes are not defined "
        "in AttributeDefinitions. Keys: [pk], AttributeDefinitions: [b]",
    )


@pytest.mark.parametrize(
    ("definitions", "keys", "message"),
    [
        (
            ["b"],
            [("a", "HASH"), ("b", "RANGE")],
            "Invalid KeySchema: Some index key attribute have no definition",
        ),
        (
            ["a"],
            [("a", "HASH"), ("a", "HASH")],
            "Invalid KeySchema: Some index key attribute have no definition",
        ),
        (
            ["a", "b"],
            [("a", "HASH"), ("a", "RANGE")],
            "Both the Hash Key and the Range Key element in the KeySchema have the same name",
        ),
        (
            ["a", "b"],
            [("a", "HASH"), ("b", "HASH")],
            "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type",
        ),
        (
            ["a", "b"],
            [("a", "RANGE"), ("b", "HASH")],
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        ),
        (
            ["a"],
            [("a", "RANGE")],
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        ),
        (
            ["a", "c", "b"],
            [("a", "HASH"), ("b", "RANGE")],
            (
                "One or more parameter values were invalid: Number of attributes in KeySchema does "
                "not exactly match number of attributes defined in AttributeDefinitions"
            ),
        ),
        (
            ["a", "b"],
            [("a", "HASH")],
            (
                "One or more parameter values were invalid: Number of attributes in KeySchema does "
                "not exactly match number of attributes defined in AttributeDefinitions"
            ),
        ),
    ],
)
def test_key_schema_must_match_attribute_definitions(
    node: Node, definitions: list[str], keys: list[tuple[str, str]], message: str
) -> None:
    body = table_body(
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in definitions],
        KeySchema=[{"AttributeName": n, "KeyType": t} for n, t in keys],
    )
    expect(node, "CreateTable", body, ValidationException, message)


def test_duplicate_attribute_definition_is_rejected(node: Node) -> None:
    body = table_body(
        AttributeDefinitions=[
            {"AttributeName": "xyz", "AttributeType": "S"},
            {"AttributeName": "xyz", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "xyz", "KeyType": "HASH"}],
    )
    expect(node, "CreateTable", body, ValidationException, "Attribute Name is duplicated: xyz")


def test_billing_mode_must_be_one_of_the_two_modes(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(BillingMode="pay_per_request"),
        ValidationException,
        "1 validation error detected: Value 'pay_per_request' at 'billingMode' failed to "
        "satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]",
    )


def test_pay_per_request_forbids_provisioned_throughput(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}),
        ValidationException,
        "One or more parameter values were invalid: Neither ReadCapacityUnits nor "
        "WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
    )


def test_provisioned_requires_throughput(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(BillingMode=None),
        ValidationException,
        "No provisioned throughput specified for the table",
    )
    expect(
        node,
        "CreateTable",
        table_body(BillingMode="PROVISIONED"),
        ValidationException,
        "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits "
        "must both be specified when BillingMode is PROVISIONED",
    )


def test_missing_capacity_member_is_reported(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(BillingMode="PROVISIONED", ProvisionedThroughput={"ReadCapacityUnits": 5}),
        ValidationException,
        "1 validation error detected: Value null at 'provisionedThroughput.writeCapacityUnits' "
        "failed to satisfy constraint: Member must not be null",
    )


def test_capacity_above_the_bound_is_out_of_bounds(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(
            BillingMode=None,
            ProvisionedThroughput={
                "ReadCapacityUnits": 1_000_000_000_000,
                "WriteCapacityUnits": 1_000_000_000_001,
            },
        ),
        ValidationException,
        "Given value 1000000000001 for WriteCapacityUnits is out of bounds",
    )


def test_existing_table_is_in_use(node: Node) -> None:
    node.create()
    expect(
        node, "CreateTable", table_body(), ResourceInUseException, "Table already exists: things"
    )


def test_member_of_the_wrong_type_is_a_serialization_error(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(TableName=5),
        SerializationException,
        "NUMBER_VALUE can not be converted to a String",
    )
    expect(
        node,
        "CreateTable",
        table_body(KeySchema="pk"),
        SerializationException,
        "STRING_VALUE can not be converted to a List",
    )
    expect(
        node,
        "DescribeTable",
        {"TableName": ["things"]},
        SerializationException,
        "Start of list found where not expected",
    )
    expect(
        node,
        "ListTables",
        {"Limit": "5"},
        SerializationException,
        "STRING_VALUE can not be converted to a Long",
    )


def test_stream_specification_is_stored_and_described(node: Node) -> None:
    node.create(StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    described = node.describe()
    assert described["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    label = described["LatestStreamLabel"]
    assert label == "2027-01-15T08:00:00.000"
    assert described["LatestStreamArn"] == f"{ARN_PREFIX}things/stream/{label}"


def test_disabled_stream_specification_is_accepted_and_absent(node: Node) -> None:
    node.create(StreamSpecification={"StreamEnabled": False})
    described = node.describe()
    assert "StreamSpecification" not in described
    assert "LatestStreamArn" not in described


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"StreamEnabled": True},
            (
                "One or more parameter values were invalid: Table is being created with a stream "
                "enabled, UpdateViewType is required"
            ),
        ),
        (
            {"StreamEnabled": False, "StreamViewType": "KEYS_ONLY"},
            (
                "One or more parameter values were invalid: Table is being created with a stream "
                "disabled, UpdateViewType should not be specified"
            ),
        ),
        (
            {"StreamEnabled": True, "StreamViewType": "Fisk"},
            (
                "1 validation error detected: Value 'Fisk' at 'streamSpecification.streamViewType' "
                "failed to satisfy constraint: Member must satisfy enum value set: [NEW_IMAGE, "
                "OLD_IMAGE, NEW_AND_OLD_IMAGES, KEYS_ONLY]"
            ),
        ),
        (
            {"StreamViewType": "KEYS_ONLY"},
            (
                "1 validation error detected: Value null at 'streamSpecification.streamEnabled' "
                "failed to satisfy constraint: Member must not be null"
            ),
        ),
    ],
)
def test_stream_specification_rules(node: Node, spec: dict[str, Any], message: str) -> None:
    expect(node, "CreateTable", table_body(StreamSpecification=spec), ValidationException, message)


def test_sse_specification_is_accepted(node: Node) -> None:
    node.create(SSESpecification={"Enabled": True})
    sse = node.describe()["SSEDescription"]
    assert sse["Status"] == "ENABLED"
    assert sse["SSEType"] == "KMS"
    assert sse["KMSMasterKeyArn"].startswith("arn:aws:kms:us-east-1:000000000000:key/")
    node.create("aliased", SSESpecification={"Enabled": True, "KMSMasterKeyId": "alias/mine"})
    assert node.describe("aliased")["SSEDescription"]["KMSMasterKeyArn"] == (
        "arn:aws:kms:us-east-1:000000000000:alias/mine"
    )
    node.create("other", SSESpecification={"Enabled": False})
    assert "SSEDescription" not in node.describe("other")


def test_table_class_and_deletion_protection_at_creation(node: Node) -> None:
    node.create(TableClass="STANDARD_INFREQUENT_ACCESS", DeletionProtectionEnabled=True)
    described = node.describe()
    assert described["TableClassSummary"] == {"TableClass": "STANDARD_INFREQUENT_ACCESS"}
    assert described["DeletionProtectionEnabled"] is True


def test_tags_given_at_creation_are_listed(node: Node) -> None:
    tags = [{"Key": "team", "Value": "storage"}, {"Key": "env", "Value": ""}]
    arn = node.create(Tags=tags)["TableArn"]
    assert node.call("ListTagsOfResource", {"ResourceArn": arn})["Tags"] == tags


def test_too_many_tags_at_creation_create_nothing(node: Node) -> None:
    tags = [{"Key": str(i), "Value": str(i)} for i in range(51)]
    expect(
        node,
        "CreateTable",
        table_body(Tags=tags),
        ValidationException,
        "Number of Tags exceed the current limit for the provided ResourceArn",
    )
    expect(
        node,
        "DescribeTable",
        {"TableName": "things"},
        ResourceNotFoundException,
        "Requested resource not found: Table: things not found",
    )


# --- Secondary indexes at CreateTable -------------------------------------------------------


def index(
    name: str, keys: list[tuple[str, str]], projection: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in keys],
        "Projection": {"ProjectionType": "ALL"} if projection is None else projection,
    }


def test_indexes_are_described_with_their_arns(node: Node) -> None:
    body = table_body(
        AttributeDefinitions=TWO_KEYS["AttributeDefinitions"]
        + [{"AttributeName": "c", "AttributeType": "N"}],
        KeySchema=TWO_KEYS["KeySchema"],
        LocalSecondaryIndexes=[index("by_c", [("a", "HASH"), ("c", "RANGE")])],
        GlobalSecondaryIndexes=[
            index(
                "c_first", [("c", "HASH")], {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["x"]}
            )
        ],
    )
    node.call("CreateTable", body)
    described = node.describe()
    (lsi,) = described["LocalSecondaryIndexes"]
    assert lsi["IndexName"] == "by_c"
    assert lsi["IndexArn"] == ARN_PREFIX + "things/index/by_c"
    assert lsi["KeySchema"] == [
        {"AttributeName": "a", "KeyType": "HASH"},
        {"AttributeName": "c", "KeyType": "RANGE"},
    ]
    (gsi,) = described["GlobalSecondaryIndexes"]
    assert gsi["IndexStatus"] == "ACTIVE"
    assert gsi["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["x"]}
    assert gsi["ProvisionedThroughput"]["ReadCapacityUnits"] == 0
    assert gsi["WarmThroughput"] == {
        "ReadUnitsPerSecond": 12000,
        "WriteUnitsPerSecond": 4000,
        "Status": "ACTIVE",
    }
    table = catalog.get_table(node.db, "things")
    assert table.index("c_first") is not None
    assert table.index("c_first").hash_key.type == "N"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            {
                "KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}],
                "LocalSecondaryIndexes": [index("abc", [("a", "HASH"), ("b", "RANGE")])],
            },
            (
                "One or more parameter values were invalid: Table KeySchema does not have a range "
                "key, which is required when specifying a LocalSecondaryIndex"
            ),
        ),
        (
            {"LocalSecondaryIndexes": []},
            "One or more parameter values were invalid: List of LocalSecondaryIndexes is empty",
        ),
        (
            {"GlobalSecondaryIndexes": []},
            "One or more parameter values were invalid: List of GlobalSecondaryIndexes is empty",
        ),
        (
            {"LocalSecondaryIndexes": [index("abc", [("a", "HASH"), ("c", "RANGE")])]},
            (
                "One or more parameter values were invalid: Some index key attributes are not "
                "defined in AttributeDefinitions. Keys: [a, c], AttributeDefinitions: [a, b]"
            ),
        ),
        (
            {"LocalSecondaryIndexes": [index("abc", [("b", "HASH"), ("a", "RANGE")])]},
            (
                "One or more parameter values were invalid: Index KeySchema does not have the same "
                "leading hash key as table KeySchema for index: abc. index hash key: b, table hash "
                "key: a"
            ),
        ),
        (
            {"LocalSecondaryIndexes": [index("abc", [("a", "HASH")])]},
            (
                "One or more parameter values were invalid: Index KeySchema does not have a range "
                "key for index: abc"
            ),
        ),
        (
            {"GlobalSecondaryIndexes": [index("abc", [("a", "HASH"), ("b", "RANGE")], {})]},
            "One or more parameter values were invalid: Unknown ProjectionType: null",
        ),
        (
            {
                "GlobalSecondaryIndexes": [
                    index(
                        "abc", [("b", "HASH")], {"ProjectionType": "ALL", "NonKeyAttributes": ["x"]}
                    )
                ]
            },
            (
                "One or more parameter values were invalid: ProjectionType is ALL, but "
                "NonKeyAttributes is specified"
            ),
        ),
        (
            {
                "GlobalSecondaryIndexes": [
                    index("abc", [("b", "HASH")]),
                    index("abc", [("b", "HASH")]),
                ]
            },
            "One or more parameter values were invalid: Duplicate index name: abc",
        ),
        (
            {
                "LocalSecondaryIndexes": [index("abc", [("a", "HASH"), ("b", "RANGE")])],
                "GlobalSecondaryIndexes": [index("abc", [("b", "HASH")])],
            },
            "One or more parameter values were invalid: Duplicate index name: abc",
        ),
        (
            {"GlobalSecondaryIndexes": [index(f"g{i:02d}", [("b", "HASH")]) for i in range(21)]},
            (
                "One or more parameter values were invalid: GlobalSecondaryIndex count exceeds the "
                "per-table limit of 20"
            ),
        ),
        (
            {
                "LocalSecondaryIndexes": [
                    index(f"l{i:02d}", [("a", "HASH"), ("b", "RANGE")]) for i in range(6)
                ]
            },
            (
                "One or more parameter values were invalid: Number of LocalSecondaryIndexes exceeds "
                "per-table limit of 5"
            ),
        ),
        (
            {
                "GlobalSecondaryIndexes": [
                    {
                        **index("abc", [("b", "HASH")]),
                        "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
                    }
                ]
            },
            (
                "One or more parameter values were invalid: ProvisionedThroughput should not be "
                "specified for index: abc when BillingMode is PAY_PER_REQUEST"
            ),
        ),
        (
            {
                "AttributeDefinitions": TWO_KEYS["AttributeDefinitions"]
                + [{"AttributeName": "z", "AttributeType": "S"}],
                "GlobalSecondaryIndexes": [index("abc", [("b", "HASH")])],
            },
            (
                "One or more parameter values were invalid: Some AttributeDefinitions are not used. "
                "AttributeDefinitions: [a, b, z], keys used: [a, b]"
            ),
        ),
        (
            {"GlobalSecondaryIndexes": [index("h;", [])]},
            (
                "3 validation errors detected: Value 'h;' at "
                "'globalSecondaryIndexes.1.member.indexName' failed to satisfy constraint: Member "
                "must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; Value 'h;' at "
                "'globalSecondaryIndexes.1.member.indexName' failed to satisfy constraint: Member "
                "must have length greater than or equal to 3; Value '[]' at "
                "'globalSecondaryIndexes.1.member.keySchema' failed to satisfy constraint: Member "
                "must have length greater than or equal to 1"
            ),
        ),
    ],
)
def test_secondary_index_rules(node: Node, members: dict[str, Any], message: str) -> None:
    body = {**table_body(**TWO_KEYS), **members}
    expect(node, "CreateTable", body, ValidationException, message)
    assert node.call("ListTables", {})["TableNames"] == []


def test_multi_attribute_global_index_keys_are_refused_clearly(node: Node) -> None:
    body = {
        **table_body(**TWO_KEYS),
        "GlobalSecondaryIndexes": [index("multi", [("a", "HASH"), ("b", "HASH"), ("a", "RANGE")])],
    }
    expect(
        node,
        "CreateTable",
        body,
        ValidationException,
        "One or more parameter values were invalid: Global secondary indexes whose key has more "
        "than one partition key or sort key attribute are not supported by this server; "
        "index: multi",
    )


def test_provisioned_table_requires_index_throughput(node: Node) -> None:
    body = {
        **table_body(**TWO_KEYS),
        "BillingMode": "PROVISIONED",
        "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        "GlobalSecondaryIndexes": [index("abc", [("b", "HASH")])],
    }
    expect(
        node,
        "CreateTable",
        body,
        ValidationException,
        "One or more parameter values were invalid: ProvisionedThroughput is not specified for "
        "index: abc",
    )


# --- DescribeTable, ListTables --------------------------------------------------------------


def test_describe_missing_table(node: Node) -> None:
    expect(
        node,
        "DescribeTable",
        {"TableName": "non_existent_table"},
        ResourceNotFoundException,
        "Requested resource not found: Table: non_existent_table not found",
    )


def test_describe_table_by_arn(node: Node) -> None:
    node.create()
    assert (
        node.call("DescribeTable", {"TableName": ARN_PREFIX + "things"})["Table"]["TableName"]
        == "things"
    )


@pytest.mark.parametrize(
    ("arn", "error", "message"),
    [
        (
            "arn:aws:dynamodb:eu-west-1:000000000000:table/things",
            ValidationException,
            (
                "1 validation error detected: Invalid AWS region in "
                "'arn:aws:dynamodb:eu-west-1:000000000000:table/things'"
            ),
        ),
        (
            "arn:aws:dynamodb:us-east-1:111122223333:table/things",
            AccessDeniedException,
            "Access is denied",
        ),
        (
            ARN_PREFIX + "things/index/abc",
            ValidationException,
            f"1 validation error detected: Invalid resource type in '{ARN_PREFIX}things/index/abc'",
        ),
        (
            ARN_PREFIX + "ghost",
            ResourceNotFoundException,
            f"Requested resource not found: Table: {ARN_PREFIX}ghost not found",
        ),
    ],
)
def test_table_arns_of_other_places_are_refused(
    node: Node, arn: str, error: type[ClientError], message: str
) -> None:
    node.create()
    for op, extra in [
        ("DescribeTable", {}),
        ("DeleteTable", {}),
        ("UpdateTable", {"DeletionProtectionEnabled": True}),
    ]:
        expect(node, op, {"TableName": arn, **extra}, error, message)
    assert node.describe()["DeletionProtectionEnabled"] is False


def test_update_and_delete_table_by_arn(node: Node) -> None:
    node.create()
    node.call(
        "UpdateTable", {"TableName": ARN_PREFIX + "things", "DeletionProtectionEnabled": True}
    )
    assert node.describe()["DeletionProtectionEnabled"] is True
    node.call("UpdateTable", {"TableName": "things", "DeletionProtectionEnabled": False})
    answer = node.call("DeleteTable", {"TableName": ARN_PREFIX + "things"})
    assert answer["TableDescription"]["TableName"] == "things"


def test_describe_table_requires_a_name(node: Node) -> None:
    expect(
        node,
        "DescribeTable",
        {},
        ValidationException,
        "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: "
        "Member must not be null",
    )


def test_list_tables_pages_in_name_order(node: Node) -> None:
    for name in ["delta", "alpha", "charlie", "bravo", "echo"]:
        node.create(name)
    first = node.call("ListTables", {"Limit": 2})
    assert first == {"TableNames": ["alpha", "bravo"], "LastEvaluatedTableName": "bravo"}
    second = node.call("ListTables", {"Limit": 2, "ExclusiveStartTableName": "bravo"})
    assert second == {"TableNames": ["charlie", "delta"], "LastEvaluatedTableName": "delta"}
    third = node.call("ListTables", {"Limit": 2, "ExclusiveStartTableName": "delta"})
    assert third == {"TableNames": ["echo"]}
    # A full last page says nothing more remains.
    exact = node.call("ListTables", {"Limit": 1, "ExclusiveStartTableName": "delta"})
    assert exact == {"TableNames": ["echo"]}
    # The start name need not exist.
    assert node.call("ListTables", {"ExclusiveStartTableName": "bzz"})["TableNames"] == [
        "charlie",
        "delta",
        "echo",
    ]


@pytest.mark.parametrize(
    ("limit", "constraint"),
    [
        (0, "Member must have value greater than or equal to 1"),
        (101, "Member must have value less than or equal to 100"),
    ],
)
def test_list_tables_limit_bounds(node: Node, limit: int, constraint: str) -> None:
    expect(
        node,
        "ListTables",
        {"Limit": limit},
        ValidationException,
        f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
        f"constraint: {constraint}",
    )


# --- DeleteTable ----------------------------------------------------------------------------


def test_delete_table_answers_deleting_without_the_schema(node: Node) -> None:
    created = node.create()
    deleted = node.call("DeleteTable", {"TableName": "things"})["TableDescription"]
    assert deleted["TableStatus"] == "DELETING"
    assert deleted["TableName"] == "things"
    assert deleted["TableId"] == created["TableId"]
    assert deleted["TableArn"] == created["TableArn"]
    assert deleted["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    for absent in ["KeySchema", "AttributeDefinitions", "CreationDateTime"]:
        assert absent not in deleted
    expect(
        node,
        "DescribeTable",
        {"TableName": "things"},
        ResourceNotFoundException,
        "Requested resource not found: Table: things not found",
    )


def test_delete_missing_table(node: Node) -> None:
    expect(
        node,
        "DeleteTable",
        {"TableName": "ghost"},
        ResourceNotFoundException,
        "Requested resource not found: Table: ghost not found",
    )


def test_delete_table_removes_its_items(node: Node) -> None:
    node.create()
    node.call("PutItem", {"TableName": "things", "Item": {"pk": {"S": "a"}, "v": {"N": "1"}}})
    table_id = catalog.get_table(node.db, "things").table_id
    prefix = table_prefix(table_id)
    assert list(node.store.scan(prefix, prefix + b"\xff" * 8))
    node.call("DeleteTable", {"TableName": "things"})
    assert list(node.store.scan(prefix, prefix + b"\xff" * 8)) == []
    # A new table of the same name starts empty and gets a new TableId.
    node.create()
    assert catalog.get_table(node.db, "things").table_id != table_id
    got = node.call("GetItem", {"TableName": "things", "Key": {"pk": {"S": "a"}}})
    assert "Item" not in got


def test_deletion_protection_blocks_delete(node: Node) -> None:
    node.create(DeletionProtectionEnabled=True)
    expect(
        node,
        "DeleteTable",
        {"TableName": "things"},
        ValidationException,
        "Resource cannot be deleted as it is currently protected against deletion. Disable "
        "deletion protection first.",
    )
    assert node.describe()["TableStatus"] == "ACTIVE"
    node.call("UpdateTable", {"TableName": "things", "DeletionProtectionEnabled": False})
    node.call("DeleteTable", {"TableName": "things"})
    assert node.call("ListTables", {})["TableNames"] == []


# --- UpdateTable ----------------------------------------------------------------------------


def test_update_table_needs_something_to_change(node: Node) -> None:
    node.create()
    expect(
        node,
        "UpdateTable",
        {"TableName": "things"},
        ValidationException,
        "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, "
        "GlobalSecondaryIndexUpdates, SSESpecification, ReplicaUpdates, "
        "MultiAccountReplicaReady, ReplicaTransitRoleArn, MultiRegionConsistency, "
        "DeletionProtectionEnabled, OnDemandThroughput, WarmThroughput or TableClass is required",
    )


def test_update_missing_table(node: Node) -> None:
    expect(
        node,
        "UpdateTable",
        {"TableName": "ghost", "BillingMode": "PAY_PER_REQUEST"},
        ResourceNotFoundException,
        "Requested resource not found: Table: ghost not found",
    )


def test_throughput_change_answers_updating_with_the_old_capacity(node: Node) -> None:
    node.create_provisioned(read=1, write=1)
    node.clock.now = NOW + 10
    answer = node.call(
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 3},
        },
    )["TableDescription"]
    assert answer["TableStatus"] == "UPDATING"
    assert answer["ProvisionedThroughput"]["ReadCapacityUnits"] == 1
    described = node.describe()
    assert described["TableStatus"] == "ACTIVE"
    assert described["ProvisionedThroughput"] == {
        "LastIncreaseDateTime": NOW + 10,
        "NumberOfDecreasesToday": 0,
        "ReadCapacityUnits": 2,
        "WriteCapacityUnits": 3,
    }


def test_same_throughput_will_not_change(node: Node) -> None:
    node.create_provisioned(read=1, write=2)
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 2},
        },
        ValidationException,
        "The provisioned throughput for the table will not change. The requested value equals "
        "the current value. Current ReadCapacityUnits provisioned for the table: 1. Requested "
        "ReadCapacityUnits: 1. Current WriteCapacityUnits provisioned for the table: 2. "
        "Requested WriteCapacityUnits: 2. Refer to the Amazon DynamoDB Developer Guide for "
        "current limits and how to request higher limits.",
    )


def test_decreases_are_counted_per_utc_day_and_limited(node: Node) -> None:
    node.create_provisioned(read=100, write=100)
    for n in range(1, 5):
        node.clock.now = NOW + n
        node.call(
            "UpdateTable",
            {
                "TableName": "things",
                "ProvisionedThroughput": {"ReadCapacityUnits": 100 - n, "WriteCapacityUnits": 100},
            },
        )
        assert node.describe()["ProvisionedThroughput"]["NumberOfDecreasesToday"] == n
    assert node.describe()["ProvisionedThroughput"]["LastDecreaseDateTime"] == NOW + 4
    node.clock.now = NOW + 60
    err = node.error(
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 50, "WriteCapacityUnits": 100},
        },
    )
    assert isinstance(err, LimitExceededException)
    assert err.message == (
        "Subscriber limit exceeded: Provisioned throughput decreases are limited within a given "
        "UTC day. After the first 4 decreases, each subsequent decrease in the same UTC day can "
        "be performed at most once every 3600 seconds. Number of decreases today: 4. Last "
        "decrease at Friday, January 15, 2027 at 8:00:04 AM Coordinated Universal Time. Next "
        "decrease can be made at Friday, January 15, 2027 at 9:00:04 AM Coordinated Universal "
        "Time"
    )
    assert node.describe()["ProvisionedThroughput"]["ReadCapacityUnits"] == 96
    # An hour after the last decrease one more is allowed; the next UTC day starts afresh.
    node.clock.now = NOW + 4 + 3600
    node.call(
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 50, "WriteCapacityUnits": 100},
        },
    )
    node.clock.now = NOW + 86400
    assert node.describe()["ProvisionedThroughput"]["NumberOfDecreasesToday"] == 0


def test_the_next_utc_day_comes_before_the_hourly_wait_ends(node: Node) -> None:
    node.create_provisioned(read=100, write=100)
    late = NOW + 15 * 3600 + 30 * 60  # 23:30 UTC
    for n in range(1, 5):
        node.clock.now = late + n
        node.call(
            "UpdateTable",
            {
                "TableName": "things",
                "ProvisionedThroughput": {"ReadCapacityUnits": 100, "WriteCapacityUnits": 100 - n},
            },
        )
    node.clock.now = late + 60
    err = node.error(
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 100, "WriteCapacityUnits": 10},
        },
    )
    assert err.message.endswith(
        "Next decrease can be made at Saturday, January 16, 2027 at 12:00:00 AM Coordinated "
        "Universal Time"
    )
    node.clock.now = NOW + 16 * 3600  # midnight
    node.call(
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 100, "WriteCapacityUnits": 10},
        },
    )
    assert node.describe()["ProvisionedThroughput"]["NumberOfDecreasesToday"] == 1


def test_warm_throughput_tracks_the_highest_capacity(node: Node) -> None:
    node.create()
    assert node.describe()["WarmThroughput"] == {
        "ReadUnitsPerSecond": 12000,
        "WriteUnitsPerSecond": 4000,
        "Status": "ACTIVE",
    }
    node.create_provisioned("prov", read=3, write=7)
    assert node.describe("prov")["WarmThroughput"]["ReadUnitsPerSecond"] == 3
    node.call(
        "UpdateTable",
        {
            "TableName": "prov",
            "ProvisionedThroughput": {"ReadCapacityUnits": 9, "WriteCapacityUnits": 1},
        },
    )
    warm = node.describe("prov")["WarmThroughput"]
    assert (warm["ReadUnitsPerSecond"], warm["WriteUnitsPerSecond"]) == (9, 7)
    node.call("UpdateTable", {"TableName": "prov", "BillingMode": "PAY_PER_REQUEST"})
    node.call(
        "UpdateTable",
        {
            "TableName": "prov",
            "BillingMode": "PROVISIONED",
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        },
    )
    warm = node.describe("prov")["WarmThroughput"]
    assert (warm["ReadUnitsPerSecond"], warm["WriteUnitsPerSecond"]) == (12000, 4000)


def test_on_demand_throughput_is_set_merged_and_cleared(node: Node) -> None:
    node.create(OnDemandThroughput={"MaxReadRequestUnits": 100})
    assert node.describe()["OnDemandThroughput"] == {"MaxReadRequestUnits": 100}
    node.call(
        "UpdateTable", {"TableName": "things", "OnDemandThroughput": {"MaxWriteRequestUnits": 50}}
    )
    assert node.describe()["OnDemandThroughput"] == {
        "MaxReadRequestUnits": 100,
        "MaxWriteRequestUnits": 50,
    }
    node.call(
        "UpdateTable", {"TableName": "things", "OnDemandThroughput": {"MaxReadRequestUnits": -1}}
    )
    assert node.describe()["OnDemandThroughput"] == {"MaxWriteRequestUnits": 50}
    node.call(
        "UpdateTable", {"TableName": "things", "OnDemandThroughput": {"MaxWriteRequestUnits": -1}}
    )
    assert "OnDemandThroughput" not in node.describe()


@pytest.mark.parametrize(
    ("op", "members", "error", "message"),
    [
        (
            "CreateTable",
            {
                "BillingMode": None,
                "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
                "OnDemandThroughput": {"MaxReadRequestUnits": 5},
            },
            ValidationException,
            (
                "One or more parameter values were invalid: MaxReadRequestUnits for OnDemandThroughput "
                "cannot be specified when the table BillingMode is PROVISIONED"
            ),
        ),
        (
            "CreateTable",
            {"OnDemandThroughput": {"MaxWriteRequestUnits": 0}},
            ValidationException,
            (
                "One or more parameter values were invalid: Requested MaxWriteRequestUnits for "
                "OnDemandThroughput for table is outside of valid range"
            ),
        ),
        (
            "CreateTable",
            {"OnDemandThroughput": {"MaxReadRequestUnits": -1}},
            ValidationException,
            (
                "One or more parameter values were invalid: Requested MaxReadRequestUnits for "
                "OnDemandThroughput for table is outside of valid range"
            ),
        ),
        (
            "CreateTable",
            {"OnDemandThroughput": {"MaxReadRequestUnits": 40001}},
            LimitExceededException,
            (
                "Subscriber limit exceeded: Requested MaxReadRequestUnits for OnDemandThroughput for "
                "table exceeds TableMaxReadCapacityUnits of the account in region us-east-1"
            ),
        ),
        (
            "CreateTable",
            {"WarmThroughput": {"ReadUnitsPerSecond": 11999}},
            ValidationException,
            (
                "One or more parameter values were invalid: Requested ReadUnitsPerSecond for "
                "WarmThroughput for table is lower than initial throughput for OnDemand. See: "
                "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/warm-throughput.html"
            ),
        ),
        (
            "CreateTable",
            {
                "BillingMode": None,
                "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
                "WarmThroughput": {"WriteUnitsPerSecond": 4},
            },
            ValidationException,
            (
                "One or more parameter values were invalid: Requested WriteUnitsPerSecond for "
                "WarmThroughput for table is lower than WriteCapacityUnits of ProvisionedThroughput"
            ),
        ),
    ],
)
def test_on_demand_and_warm_throughput_rules_at_creation(
    node: Node, op: str, members: dict[str, Any], error: type[ClientError], message: str
) -> None:
    expect(node, op, table_body(**members), error, message)
    assert node.call("ListTables", {})["TableNames"] == []


def test_warm_throughput_can_be_raised_but_never_lowered(node: Node) -> None:
    node.create(WarmThroughput={"ReadUnitsPerSecond": 13000})
    warm = node.describe()["WarmThroughput"]
    assert (warm["ReadUnitsPerSecond"], warm["WriteUnitsPerSecond"]) == (13000, 4000)
    answer = node.call(
        "UpdateTable", {"TableName": "things", "WarmThroughput": {"WriteUnitsPerSecond": 5000}}
    )
    # The answer still shows the warm throughput before the change, as DynamoDB's does.
    assert answer["TableDescription"]["WarmThroughput"]["WriteUnitsPerSecond"] == 4000
    assert node.describe()["WarmThroughput"]["WriteUnitsPerSecond"] == 5000
    expect(
        node,
        "UpdateTable",
        {"TableName": "things", "WarmThroughput": {"ReadUnitsPerSecond": 12000}},
        ValidationException,
        "One or more parameter values were invalid: Requested ReadUnitsPerSecond for "
        "WarmThroughput for table is lower than current WarmThroughput, decreasing "
        "WarmThroughput is not supported",
    )
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "WarmThroughput": {"ReadUnitsPerSecond": 14000},
            "DeletionProtectionEnabled": True,
        },
        ValidationException,
        "One or more parameter values were invalid: DeletionProtection modification must be the "
        "only operation in the request",
    )
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "WarmThroughput": {"ReadUnitsPerSecond": 14000},
            "BillingMode": "PAY_PER_REQUEST",
        },
        ValidationException,
        "One or more parameter values were invalid: WarmThroughput must be the only operation in "
        "the request",
    )
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "OnDemandThroughput": {"MaxReadRequestUnits": 5},
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        },
        ValidationException,
        "One or more parameter values were invalid: OnDemandThroughput can only be combined with "
        "BillingMode in an UpdateTable request",
    )


def test_capacity_above_the_per_table_quota_is_a_limit(node: Node) -> None:
    expect(
        node,
        "CreateTable",
        table_body(
            BillingMode=None,
            ProvisionedThroughput={"ReadCapacityUnits": 40001, "WriteCapacityUnits": 1},
        ),
        LimitExceededException,
        "The requested ReadCapacityUnits, 40001, is above the per table maximum for the account "
        "in us-east-1. Per table maximum: 40000. Refer to the Amazon DynamoDB Developer Guide "
        "for current limits and how to request higher limits.",
    )
    node.create_provisioned(read=1, write=1)
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 40001},
        },
        LimitExceededException,
        "The requested WriteCapacityUnits, 40001, is above the per table maximum for the account "
        "in us-east-1. Per table maximum: 40000. Refer to the Amazon DynamoDB Developer Guide "
        "for current limits and how to request higher limits.",
    )


def test_account_capacity_is_shared_by_all_provisioned_tables(node: Node) -> None:
    node.create_provisioned("one", read=40000, write=10)
    node.create_provisioned("two", read=40000, write=10)
    node.create("on-demand")  # on-demand tables reserve nothing
    err = node.error(
        "CreateTable",
        table_body(
            TableName="three",
            BillingMode=None,
            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        ),
    )
    assert isinstance(err, LimitExceededException)
    assert err.message == (
        "This request would have caused the ReadCapacityUnits limit to be exceeded for the "
        "account in us-east-1. Current ReadCapacityUnits reserved by the account: 80000. Limit: "
        "80000. Requested: 5. Refer to the Amazon DynamoDB Developer Guide for current limits "
        "and how to request higher limits."
    )
    node.call("DeleteTable", {"TableName": "two"})
    node.call(
        "CreateTable",
        table_body(
            TableName="three",
            BillingMode=None,
            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        ),
    )


def test_the_account_holds_at_most_2500_tables(node: Node) -> None:
    for i in range(2500):
        node.create(f"t{i:04d}")
    err = node.error("CreateTable", table_body(TableName="one-too-many"))
    assert isinstance(err, LimitExceededException)
    assert "2500" in err.message
    node.call("DeleteTable", {"TableName": "t0000"})
    node.create("one-too-many")
    assert len(catalog.list_tables(node.db)) == 2500


def test_table_class_changes_twice_in_thirty_days(node: Node) -> None:
    node.create()
    for table_class in ["STANDARD_INFREQUENT_ACCESS", "STANDARD"]:
        node.call("UpdateTable", {"TableName": "things", "TableClass": table_class})
    expect(
        node,
        "UpdateTable",
        {"TableName": "things", "TableClass": "STANDARD_INFREQUENT_ACCESS"},
        LimitExceededException,
        "Subscriber limit exceeded: Updates to TableClass are limited to 2 times in 30 day(s).",
    )
    node.clock.now = NOW + 30 * 86400
    node.call("UpdateTable", {"TableName": "things", "TableClass": "STANDARD_INFREQUENT_ACCESS"})
    assert node.describe()["TableClassSummary"]["TableClass"] == "STANDARD_INFREQUENT_ACCESS"


def test_switch_to_pay_per_request_and_back(node: Node) -> None:
    node.create_provisioned(read=4, write=4)
    node.clock.now = NOW + 5
    answer = node.call("UpdateTable", {"TableName": "things", "BillingMode": "PAY_PER_REQUEST"})
    assert answer["TableDescription"]["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert answer["TableDescription"]["ProvisionedThroughput"]["ReadCapacityUnits"] == 0
    described = node.describe()
    assert described["BillingModeSummary"] == {
        "BillingMode": "PAY_PER_REQUEST",
        "LastUpdateToPayPerRequestDateTime": NOW + 5,
    }
    assert described["ProvisionedThroughput"]["ReadCapacityUnits"] == 0
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        },
        ValidationException,
        "One or more parameter values were invalid: Neither ReadCapacityUnits nor "
        "WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
    )
    expect(
        node,
        "UpdateTable",
        {"TableName": "things", "BillingMode": "PROVISIONED"},
        ValidationException,
        "One or more parameter values were invalid: ProvisionedThroughput must be specified "
        "when BillingMode is PROVISIONED",
    )
    node.call(
        "UpdateTable",
        {
            "TableName": "things",
            "BillingMode": "PROVISIONED",
            "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 3},
        },
    )
    described = node.describe()
    assert described["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    assert described["ProvisionedThroughput"]["WriteCapacityUnits"] == 3


def test_billing_switches_carry_the_global_indexes_along(node: Node) -> None:
    body = {
        **table_body(**TWO_KEYS),
        "BillingMode": "PROVISIONED",
        "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 2},
        "GlobalSecondaryIndexes": [
            {
                **index("by_b", [("b", "HASH")]),
                "ProvisionedThroughput": {"ReadCapacityUnits": 3, "WriteCapacityUnits": 4},
            }
        ],
    }
    node.call("CreateTable", body)
    (gsi,) = node.describe()["GlobalSecondaryIndexes"]
    assert gsi["ProvisionedThroughput"]["WriteCapacityUnits"] == 4
    node.call("UpdateTable", {"TableName": "things", "BillingMode": "PAY_PER_REQUEST"})
    (gsi,) = node.describe()["GlobalSecondaryIndexes"]
    assert gsi["ProvisionedThroughput"]["WriteCapacityUnits"] == 0
    assert gsi["IndexStatus"] == "ACTIVE"
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "BillingMode": "PROVISIONED",
            "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 2},
        },
        ValidationException,
        "One or more parameter values were invalid: ProvisionedThroughput must be specified for "
        "index: by_b",
    )
    assert node.describe()["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_stream_can_be_enabled_disabled_and_enabled_again(node: Node) -> None:
    node.create()
    node.call(
        "UpdateTable",
        {
            "TableName": "things",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        },
    )
    first = node.describe()
    assert first["StreamSpecification"]["StreamViewType"] == "KEYS_ONLY"
    expect(
        node,
        "UpdateTable",
        {
            "TableName": "things",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        },
        ValidationException,
        "Table already has an enabled stream: TableName: things",
    )
    node.call(
        "UpdateTable", {"TableName": "things", "StreamSpecification": {"StreamEnabled": False}}
    )
    disabled = node.describe()
    assert "StreamSpecification" not in disabled
    assert disabled["LatestStreamArn"] == first["LatestStreamArn"]
    expect(
        node,
        "UpdateTable",
        {"TableName": "things", "StreamSpecification": {"StreamEnabled": False}},
        ValidationException,
        "Table has no stream to disable: TableName: things",
    )
    node.call(
        "UpdateTable",
        {
            "TableName": "things",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        },
    )
    again = node.describe()
    assert again["LatestStreamLabel"] > first["LatestStreamLabel"]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            {"StreamSpecification": {"StreamEnabled": True}},
            (
                "One or more parameter values were invalid: If stream is being enabled then "
                "UpdateViewType is required"
            ),
        ),
        (
            {"StreamSpecification": {"StreamEnabled": False, "StreamViewType": "KEYS_ONLY"}},
            (
                "One or more parameter values were invalid: If stream is being disabled, then "
                "UpdateViewType must not be specified"
            ),
        ),
        (
            {"DeletionProtectionEnabled": True, "BillingMode": "PAY_PER_REQUEST"},
            (
                "One or more parameter values were invalid: DeletionProtection modification must be "
                "the only operation in the request"
            ),
        ),
        (
            {"SSESpecification": {"Enabled": True}, "DeletionProtectionEnabled": True},
            (
                "One or more parameter values were invalid: Server-Side Encryption modification "
                "must be the only operation in the request"
            ),
        ),
        (
            {
                "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
                "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
            },
            (
                "One or more parameter values were invalid: You cannot modify stream status while "
                "updating table IOPS"
            ),
        ),
        (
            {"GlobalSecondaryIndexUpdates": [{}]},
            (
                "One or more parameter values were invalid: One of GlobalSecondaryIndexUpdate.Update, "
                "GlobalSecondaryIndexUpdate.Create, GlobalSecondaryIndexUpdate.Delete must not be null"
            ),
        ),
        (
            {"ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}},
            (
                "2 validation errors detected: Value '0' at 'provisionedThroughput.writeCapacityUnits' "
                "failed to satisfy constraint: Member must have value greater than or equal to 1; "
                "Value '0' at 'provisionedThroughput.readCapacityUnits' failed to satisfy constraint: "
                "Member must have value greater than or equal to 1"
            ),
        ),
    ],
)
def test_update_table_rules(node: Node, members: dict[str, Any], message: str) -> None:
    node.create()
    before = node.describe()
    expect(node, "UpdateTable", {"TableName": "things", **members}, ValidationException, message)
    assert node.describe() == before


def test_deleting_a_missing_global_index_is_resource_not_found(node: Node) -> None:
    node.create()
    before = node.describe()
    expect(
        node,
        "UpdateTable",
        {"TableName": "things", "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "abc"}}]},
        ResourceNotFoundException,
        "Requested resource not found: Index abc for table things",
    )
    assert node.describe() == before


def test_table_class_and_sse_can_be_changed(node: Node) -> None:
    node.create()
    node.call("UpdateTable", {"TableName": "things", "TableClass": "STANDARD_INFREQUENT_ACCESS"})
    assert node.describe()["TableClassSummary"] == {"TableClass": "STANDARD_INFREQUENT_ACCESS"}
    expect(
        node,
        "UpdateTable",
        {"TableName": "things", "SSESpecification": {"Enabled": False}},
        ValidationException,
        "One or more parameter values were invalid: Table is already encrypted by default",
    )
    node.call("UpdateTable", {"TableName": "things", "SSESpecification": {"Enabled": True}})
    assert node.describe()["SSEDescription"]["Status"] == "ENABLED"


# --- Tags -----------------------------------------------------------------------------------


def test_tag_untag_and_list(node: Node) -> None:
    arn = node.create()["TableArn"]
    assert node.call("ListTagsOfResource", {"ResourceArn": arn}) == {"Tags": []}
    tags = [
        {"Key": "string", "Value": "string"},
        {"Key": "string2", "Value": "string4"},
        {"Key": "7", "Value": " "},
        {"Key": " ", "Value": "9"},
    ]
    assert node.call("TagResource", {"ResourceArn": arn, "Tags": tags}) == {}
    assert node.call("ListTagsOfResource", {"ResourceArn": arn})["Tags"] == tags
    node.call("TagResource", {"ResourceArn": arn, "Tags": [{"Key": "string", "Value": "new"}]})
    node.call("UntagResource", {"ResourceArn": arn, "TagKeys": ["string2", "nonexistent"]})
    assert node.call("ListTagsOfResource", {"ResourceArn": arn})["Tags"] == [
        {"Key": "string", "Value": "new"},
        {"Key": "7", "Value": " "},
        {"Key": " ", "Value": "9"},
    ]


def test_list_tags_answers_the_whole_tag_set_in_one_page(node: Node) -> None:
    arn = node.create()["TableArn"]
    tags = [{"Key": f"k{i:02d}", "Value": str(i)} for i in range(50)]
    node.call("TagResource", {"ResourceArn": arn, "Tags": tags})
    page = node.call("ListTagsOfResource", {"ResourceArn": arn})
    assert page == {"Tags": tags}
    # A NextToken (from an earlier page) starts where that page ended.
    later = node.call("ListTagsOfResource", {"ResourceArn": arn, "NextToken": "40"})
    assert later == {"Tags": tags[40:]}
    expect(
        node,
        "ListTagsOfResource",
        {"ResourceArn": arn, "NextToken": "bogus"},
        ValidationException,
        "Invalid NextToken: bogus",
    )


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ([], "Atleast one Tag needs to be provided as Input."),
        ([{"Key": "ok", "Value": "#!%"}], "The Tag Value provided is invalid, Value: #!%"),
        ([{"Key": "->>;-)", "Value": "ok"}], "The Tag Key provided is invalid, Key: ->>;-)"),
        (
            [{"Key": "aws:owner", "Value": "x"}],
            "Tag Key cannot be prefixed with aws:, Key: aws:owner",
        ),
        (
            [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}],
            "Duplicate Tag Keys provided as input: Duplicate Tag Key found a",
        ),
        (
            [{"Key": "", "Value": "1"}],
            "The Tag Key provided is invalid, Key: ",
        ),
        (
            [{"Key": "k" * 129, "Value": "1"}],
            f"The Tag Key provided is invalid, Key: {'k' * 129}",
        ),
        (
            [{"Key": "k", "Value": "v" * 257}],
            f"The Tag Value provided is invalid, Value: {'v' * 257}",
        ),
        (
            [{"Key": "k"}],
            (
                "1 validation error detected: Value null at 'tags.1.member.value' failed to satisfy "
                "constraint: Member must not be null"
            ),
        ),
    ],
)
def test_tag_rules(node: Node, tags: list[dict[str, str]], message: str) -> None:
    arn = node.create()["TableArn"]
    expect(node, "TagResource", {"ResourceArn": arn, "Tags": tags}, ValidationException, message)
    assert node.call("ListTagsOfResource", {"ResourceArn": arn})["Tags"] == []


def test_fifty_tags_at_most(node: Node) -> None:
    arn = node.create()["TableArn"]
    node.call(
        "TagResource",
        {"ResourceArn": arn, "Tags": [{"Key": str(i), "Value": ""} for i in range(30)]},
    )
    node.call(
        "TagResource",
        {"ResourceArn": arn, "Tags": [{"Key": str(i), "Value": ""} for i in range(20, 50)]},
    )
    expect(
        node,
        "TagResource",
        {"ResourceArn": arn, "Tags": [{"Key": "one-more", "Value": ""}]},
        ValidationException,
        "Number of Tags exceed the current limit for the provided ResourceArn",
    )
    assert (
        len(node.call("ListTagsOfResource", {"ResourceArn": arn, "NextToken": "40"})["Tags"]) == 10
    )


@pytest.mark.parametrize(
    ("arn", "error", "message"),
    [
        (
            "I_do_not_exist",
            ValidationException,
            "One or more parameter values were invalid: ARNs must start with 'arn:': I_do_not_exist",
        ),
        (
            "arn:aws:s3:::bucket",
            ValidationException,
            (
                "One or more parameter values were invalid: Provided Arn is not a DynamoDB resource "
                "arn: arn:aws:s3:::bucket"
            ),
        ),
        (
            ARN_PREFIX + "things/index/abc",
            ValidationException,
            (
                "One or more parameter values were invalid: Invalid resource arn provided, only table "
                f"or stream is accepted. Provided resource arn: {ARN_PREFIX}things/index/abc"
            ),
        ),
        (
            "arn:aws:dynamodb:eu-west-1:000000000000:table/things",
            ValidationException,
            (
                "Invalid TableArn: Invalid ResourceArn provided as input "
                "arn:aws:dynamodb:eu-west-1:000000000000:table/things"
            ),
        ),
        (
            "arn:aws:dynamodb:us-east-1:111122223333:table/things",
            AccessDeniedException,
            "Access is denied",
        ),
        (
            ARN_PREFIX + "thingsx",
            ResourceNotFoundException,
            f"Requested resource not found: ResourceArn: {ARN_PREFIX}thingsx not found",
        ),
    ],
)
def test_tag_resource_arn_rules(
    node: Node, arn: str, error: type[ClientError], message: str
) -> None:
    node.create()
    expect(
        node,
        "TagResource",
        {"ResourceArn": arn, "Tags": [{"Key": "x", "Value": "y"}]},
        error,
        message,
    )
    expect(node, "ListTagsOfResource", {"ResourceArn": arn}, error, message)
    expect(node, "UntagResource", {"ResourceArn": arn, "TagKeys": ["x"]}, error, message)


def test_untag_needs_keys(node: Node) -> None:
    arn = node.create()["TableArn"]
    expect(
        node,
        "UntagResource",
        {"ResourceArn": arn, "TagKeys": []},
        ValidationException,
        "Atleast one Tag Key needs to be provided as Input.",
    )


# --- DescribeEndpoints, DescribeLimits ------------------------------------------------------


def test_describe_endpoints_reports_one_endpoint_cached_for_a_day(node: Node) -> None:
    assert node.call("DescribeEndpoints", {}) == {
        "Endpoints": [{"Address": "dynamodb.us-east-1.amazonaws.com", "CachePeriodInMinutes": 1440}]
    }
    node.db.state[catalog.ENDPOINT_STATE_KEY] = "127.0.0.1:8000"
    assert node.call("DescribeEndpoints", {})["Endpoints"][0]["Address"] == "127.0.0.1:8000"


def test_describe_limits_reports_default_quotas(node: Node) -> None:
    assert node.call("DescribeLimits", {}) == {
        "AccountMaxReadCapacityUnits": 80000,
        "AccountMaxWriteCapacityUnits": 80000,
        "TableMaxReadCapacityUnits": 40000,
        "TableMaxWriteCapacityUnits": 40000,
    }


# --- Lookups for item operations ------------------------------------------------------------


def test_get_table_uses_the_item_operations_message(node: Node) -> None:
    with pytest.raises(ResourceNotFoundException) as info:
        catalog.get_table(node.db, "ghost")
    assert info.value.message == "Requested resource not found"
    node.create()
    assert catalog.get_table(node.db, "things").key_names == ("pk",)
    assert catalog.get_table(node.db, ARN_PREFIX + "things").name == "things"
    assert catalog.get_table_by_arn(node.db, ARN_PREFIX + "things").name == "things"
    with pytest.raises(ResourceNotFoundException):
        catalog.get_table_by_arn(node.db, "arn:aws:dynamodb:eu-west-1:000000000000:table/things")


# --- Durability -----------------------------------------------------------------------------


def busy_history(node: Node) -> None:
    node.create("plain")
    node.create_provisioned("provisioned", read=3, write=4)
    node.create(
        "streamed",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        Tags=[{"Key": "a", "Value": "b"}],
    )
    node.clock.now = NOW + 100
    node.call("UpdateTable", {"TableName": "provisioned", "BillingMode": "PAY_PER_REQUEST"})
    node.call(
        "TagResource", {"ResourceArn": ARN_PREFIX + "plain", "Tags": [{"Key": "k", "Value": "v"}]}
    )
    node.create("doomed")
    node.call("DeleteTable", {"TableName": "doomed"})


def all_descriptions(node: Node) -> dict[str, Any]:
    names = node.call("ListTables", {})["TableNames"]
    return {
        name: (
            node.describe(name),
            node.call("ListTagsOfResource", {"ResourceArn": ARN_PREFIX + name})["Tags"],
        )
        for name in names
    }


def test_a_restarted_database_reads_the_catalog_back_from_its_store(node: Node) -> None:
    busy_history(node)
    before = all_descriptions(node)
    restarted = Node(store=node.store)
    restarted.clock.now = node.clock.now
    # Recovery hands the appliers records the store already holds: they change nothing.
    restarted.db.apply(node.entries)
    assert all_descriptions(restarted) == before
    assert sorted(before) == ["plain", "provisioned", "streamed"]


def test_replaying_the_log_on_an_empty_store_rebuilds_the_same_catalog(node: Node) -> None:
    busy_history(node)
    before = all_descriptions(node)
    replica = Node()
    replica.clock.now = node.clock.now
    replica.db.apply(node.entries)
    assert all_descriptions(replica) == before
    assert replica.store.applied_lsn() == node.store.applied_lsn()


def test_a_change_to_a_deleted_table_is_skipped(node: Node) -> None:
    node.create()
    table = catalog.get_table(node.db, "things")
    node.call("DeleteTable", {"TableName": "things"})
    node.create()
    stale = {
        "kind": "update_table",
        "name": "things",
        "table_id": table.table_id,
        "changes": {"deletion_protection": True},
    }
    asyncio.run(node.db.propose(stale))
    assert node.describe()["DeletionProtectionEnabled"] is False


def test_catalog_keys_never_fall_inside_a_table_range() -> None:
    import uuid

    for name in ["a", "things", "t", "\xff" * 3]:
        key = catalog.catalog_key(name)
        for _ in range(20):
            assert not key.startswith(table_prefix(str(uuid.uuid4()))[:1])


# --- Concurrency ----------------------------------------------------------------------------


class SlowLog:
    """A `ReplicatedLog` fake whose appends commit only after other tasks have run, as a
    replicated log's do: requests interleave between proposing and committing."""

    def __init__(self, apply: Any) -> None:
        self._apply = apply
        self._lsn = 0

    async def append(self, record: bytes) -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        self._lsn += 1
        self._apply([(self._lsn, record)])
        return self._lsn

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


def slow_database() -> Database:
    db = Database(MemoryStore())
    db.attach_log(SlowLog(db.apply))
    return db


def test_concurrent_creates_of_one_name_let_exactly_one_win() -> None:
    db = slow_database()

    async def race() -> list[Any]:
        bodies = [table_body() for _ in range(10)]
        return await asyncio.gather(
            *(db.dispatch("CreateTable", b) for b in bodies), return_exceptions=True
        )

    results = asyncio.run(race())
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, ResourceInUseException)]
    assert len(wins) == 1
    assert len(losses) == 9
    assert len(catalog.list_tables(db)) == 1


def test_concurrent_tag_changes_lose_no_tag() -> None:
    db = slow_database()

    async def run() -> list[dict[str, Any]]:
        created = await db.dispatch("CreateTable", table_body())
        arn = created["TableDescription"]["TableArn"]
        await asyncio.gather(
            *(
                db.dispatch(
                    "TagResource", {"ResourceArn": arn, "Tags": [{"Key": f"k{i}", "Value": "v"}]}
                )
                for i in range(20)
            ),
            db.dispatch("UpdateTable", {"TableName": "things", "DeletionProtectionEnabled": True}),
        )
        tags: list[dict[str, Any]] = []
        body: dict[str, Any] = {"ResourceArn": arn}
        while True:
            page = await db.dispatch("ListTagsOfResource", body)
            tags.extend(page["Tags"])
            if "NextToken" not in page:
                return tags
            body["NextToken"] = page["NextToken"]

    tags = asyncio.run(run())
    assert sorted(t["Key"] for t in tags) == sorted(f"k{i}" for i in range(20))
    assert catalog.get_table(db, "things").deletion_protection is True


def test_concurrent_delete_and_update_leave_no_table_behind() -> None:
    db = slow_database()

    async def run() -> list[Any]:
        await db.dispatch("CreateTable", table_body())
        return await asyncio.gather(
            db.dispatch("DeleteTable", {"TableName": "things"}),
            db.dispatch("UpdateTable", {"TableName": "things", "DeletionProtectionEnabled": True}),
            return_exceptions=True,
        )

    deleted, updated = asyncio.run(run())
    assert deleted["TableDescription"]["TableStatus"] == "DELETING"
    assert isinstance(updated, ResourceNotFoundException)
    assert catalog.list_tables(db) == []


def test_the_catalog_reads_back_from_an_lmdb_store(tmp_path: Any) -> None:
    from keeldb.storage.lmdb_store import LmdbStore

    store = LmdbStore(tmp_path / "store")
    first = Node(store=store)
    busy_history(first)
    first.call("PutItem", {"TableName": "plain", "Item": {"pk": {"S": "kept"}}})
    before = all_descriptions(first)
    store.close()

    reopened = LmdbStore(tmp_path / "store")
    try:
        second = Node(store=reopened)
        second.clock.now = first.clock.now
        assert all_descriptions(second) == before
        got = second.call("GetItem", {"TableName": "plain", "Key": {"pk": {"S": "kept"}}})
        assert got["Item"] == {"pk": {"S": "kept"}}
        # The deleted table's catalog entry and items are gone from the file, not just hidden.
        assert catalog.find_table(second.db, "doomed") is None
        assert [k for k, _ in reopened.scan(catalog.CATALOG_PREFIX, b"d")] == [
            catalog.catalog_key(n) for n in ["plain", "provisioned", "streamed"]
        ]
    finally:
        reopened.close()


class PowerCut(Exception):
    pass


class StoreThatDiesAfterRangeDeletes(MemoryStore):
    """A memory store that loses power right after its next range delete, before any other
    write reaches it: the state a crash between DeleteTable's two store calls leaves."""

    armed = False

    def delete_range(self, start: bytes, end: bytes, applied_lsn: int) -> None:
        super().delete_range(start, end, applied_lsn)
        if self.armed:
            raise PowerCut()


def test_a_crash_inside_delete_table_is_repaired_by_replaying_its_record() -> None:
    store = StoreThatDiesAfterRangeDeletes()
    node = Node(store=store)
    node.create()
    node.call("PutItem", {"TableName": "things", "Item": {"pk": {"S": "a"}}})
    table_id = catalog.get_table(node.db, "things").table_id
    store.armed = True
    with pytest.raises(PowerCut):
        node.call("DeleteTable", {"TableName": "things"})
    store.armed = False
    delete_entry = node.entries[-1]
    # The store holds the range delete but not the catalog change, and says so by its LSN.
    assert store.applied_lsn() == delete_entry[0] - 1
    assert store.get(catalog.catalog_key("things")) is not None
    # Recovery: a new database over the same store replays the record that did not finish.
    recovered = Node(store=store)
    recovered.db.apply([delete_entry])
    assert recovered.call("ListTables", {})["TableNames"] == []
    assert store.get(catalog.catalog_key("things")) is None
    start, end = table_bounds(table_id)
    assert list(store.scan(start, end)) == []
    assert store.applied_lsn() == delete_entry[0]
