"""A rule-based state machine drives the control plane with random operation sequences and
checks it against a plain model (a dict of table name -> settings); after every step, a fresh
database that replays the committed log from an empty store must describe the same catalog,
and one restarted over the same store must too."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from keeldb.engine import catalog
from keeldb.engine.database import Database
from keeldb.model.errors import (
    ClientError,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.storage.protocols import Entry

NAMES = ["alpha", "bravo", "charlie", "delta"]
TAG_KEYS = ["k1", "k2", "k3"]
ARN_PREFIX = "arn:aws:dynamodb:us-east-1:000000000000:table/"
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def open_database(store: MemoryStore, clock: Clock, entries: list[Entry] | None) -> Database:
    db = Database(store)
    db.state[catalog.CLOCK_STATE_KEY] = clock

    def apply(batch: Sequence[Entry]) -> None:
        if entries is not None:
            entries.extend(batch)
        db.apply(batch)

    db.attach_log(MemoryLog(apply, start_lsn=store.applied_lsn()))
    return db


def call(db: Database, op: str, body: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(db.dispatch(op, body))


def snapshot(db: Database) -> dict[str, Any]:
    out = {}
    for name in call(db, "ListTables", {})["TableNames"]:
        table = call(db, "DescribeTable", {"TableName": name})["Table"]
        tags = call(db, "ListTagsOfResource", {"ResourceArn": ARN_PREFIX + name})["Tags"]
        out[name] = (table, tags)
    return out


class CatalogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = MemoryStore()
        self.entries: list[Entry] = []
        self.db = open_database(self.store, self.clock, self.entries)
        # name -> {"provisioned": (read, write) | None, "tags": dict, "protected": bool, "id"}
        self.model: dict[str, dict[str, Any]] = {}

    def expect_error(self, error: type[ClientError], op: str, body: dict[str, Any]) -> None:
        try:
            call(self.db, op, body)
        except error:
            return
        raise AssertionError(f"{op} {body} should have raised {error.__name__}")

    @rule(
        name=st.sampled_from(NAMES),
        capacity=st.none() | st.tuples(st.integers(1, 50), st.integers(1, 50)),
    )
    def create(self, name: str, capacity: tuple[int, int] | None) -> None:
        body: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        }
        if capacity is None:
            body["BillingMode"] = "PAY_PER_REQUEST"
        else:
            body["ProvisionedThroughput"] = {
                "ReadCapacityUnits": capacity[0],
                "WriteCapacityUnits": capacity[1],
            }
        if name in self.model:
            self.expect_error(ResourceInUseException, "CreateTable", body)
            return
        created = call(self.db, "CreateTable", body)["TableDescription"]
        assert created["TableStatus"] == "CREATING"
        self.model[name] = {
            "provisioned": capacity,
            "tags": {},
            "protected": False,
            "id": created["TableId"],
        }

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        body = {"TableName": name}
        if name not in self.model:
            self.expect_error(ResourceNotFoundException, "DeleteTable", body)
        elif self.model[name]["protected"]:
            self.expect_error(ValidationException, "DeleteTable", body)
        else:
            answer = call(self.db, "DeleteTable", body)["TableDescription"]
            assert answer["TableId"] == self.model.pop(name)["id"]

    @rule(name=st.sampled_from(NAMES), protect=st.booleans())
    def protect(self, name: str, protect: bool) -> None:
        body = {"TableName": name, "DeletionProtectionEnabled": protect}
        if name not in self.model:
            self.expect_error(ResourceNotFoundException, "UpdateTable", body)
            return
        call(self.db, "UpdateTable", body)
        self.model[name]["protected"] = protect

    @rule(
        name=st.sampled_from(NAMES),
        capacity=st.none() | st.tuples(st.integers(1, 50), st.integers(1, 50)),
    )
    def change_billing(self, name: str, capacity: tuple[int, int] | None) -> None:
        body: dict[str, Any] = {"TableName": name}
        if capacity is None:
            body["BillingMode"] = "PAY_PER_REQUEST"
        else:
            body["BillingMode"] = "PROVISIONED"
            body["ProvisionedThroughput"] = {
                "ReadCapacityUnits": capacity[0],
                "WriteCapacityUnits": capacity[1],
            }
        if name not in self.model:
            self.expect_error(ResourceNotFoundException, "UpdateTable", body)
            return
        if capacity is not None and self.model[name]["provisioned"] == capacity:
            self.expect_error(ValidationException, "UpdateTable", body)
            return
        try:
            call(self.db, "UpdateTable", body)
        except ClientError as error:
            # Only the daily decrease allowance may refuse a change here.
            assert error.message.startswith("Subscriber limit exceeded"), error.message
            return
        self.model[name]["provisioned"] = capacity

    @rule(
        name=st.sampled_from(NAMES),
        tags=st.dictionaries(
            st.sampled_from(TAG_KEYS), st.sampled_from(["", "x", "y"]), min_size=1
        ),
    )
    def tag(self, name: str, tags: dict[str, str]) -> None:
        body = {
            "ResourceArn": ARN_PREFIX + name,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if name not in self.model:
            self.expect_error(ResourceNotFoundException, "TagResource", body)
            return
        call(self.db, "TagResource", body)
        self.model[name]["tags"].update(tags)

    @rule(name=st.sampled_from(NAMES), keys=st.lists(st.sampled_from(TAG_KEYS), min_size=1))
    def untag(self, name: str, keys: list[str]) -> None:
        body = {"ResourceArn": ARN_PREFIX + name, "TagKeys": keys}
        if name not in self.model:
            self.expect_error(ResourceNotFoundException, "UntagResource", body)
            return
        call(self.db, "UntagResource", body)
        for key in keys:
            self.model[name]["tags"].pop(key, None)

    @rule(seconds=st.integers(1, 4000))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds

    @precondition(lambda self: bool(self.entries))
    @rule()
    def restart(self) -> None:
        before = snapshot(self.db)
        self.db = open_database(self.store, self.clock, self.entries)
        assert snapshot(self.db) == before

    @invariant()
    def catalog_matches_the_model(self) -> None:
        assert call(self.db, "ListTables", {})["TableNames"] == sorted(self.model)
        for name, expected in self.model.items():
            table = call(self.db, "DescribeTable", {"TableName": name})["Table"]
            assert table["TableStatus"] == "ACTIVE"
            assert table["TableId"] == expected["id"]
            assert table["DeletionProtectionEnabled"] is expected["protected"]
            throughput = table["ProvisionedThroughput"]
            if expected["provisioned"] is None:
                assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
                assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (0, 0)
            else:
                assert (
                    throughput["ReadCapacityUnits"],
                    throughput["WriteCapacityUnits"],
                ) == expected["provisioned"]
            tags = call(self.db, "ListTagsOfResource", {"ResourceArn": ARN_PREFIX + name})["Tags"]
            assert {t["Key"]: t["Value"] for t in tags} == expected["tags"]

    @invariant()
    def replaying_the_log_rebuilds_the_same_catalog(self) -> None:
        replica = open_database(MemoryStore(), self.clock, None)
        replica.apply(self.entries)
        assert snapshot(replica) == snapshot(self.db)


CatalogMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_catalog_follows_its_model = CatalogMachine.TestCase


# --- Garbage in: a client error or an answer, never a crash ---------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**13)
    | st.text(max_size=6)
    | st.sampled_from(
        [
            "S",
            "N",
            "B",
            "HASH",
            "RANGE",
            "pk",
            "ALL",
            "INCLUDE",
            "KEYS_ONLY",
            "PROVISIONED",
            "PAY_PER_REQUEST",
            "NEW_IMAGE",
            "KMS",
            ARN_PREFIX + "alpha",
            "alpha",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "AttributeName",
                    "AttributeType",
                    "KeyType",
                    "IndexName",
                    "KeySchema",
                    "Projection",
                    "ProjectionType",
                    "NonKeyAttributes",
                    "ReadCapacityUnits",
                    "WriteCapacityUnits",
                    "StreamEnabled",
                    "StreamViewType",
                    "Enabled",
                    "SSEType",
                    "Key",
                    "Value",
                    "Create",
                    "Update",
                    "Delete",
                    "ProvisionedThroughput",
                    "MaxReadRequestUnits",
                    "ReadUnitsPerSecond",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
MEMBERS = [
    "TableName",
    "AttributeDefinitions",
    "KeySchema",
    "LocalSecondaryIndexes",
    "GlobalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "StreamSpecification",
    "SSESpecification",
    "Tags",
    "TableClass",
    "DeletionProtectionEnabled",
    "Limit",
    "ExclusiveStartTableName",
    "ResourceArn",
    "TagKeys",
    "NextToken",
    "GlobalSecondaryIndexUpdates",
    "OnDemandThroughput",
    "WarmThroughput",
]
OPERATIONS = [
    "CreateTable",
    "DescribeTable",
    "ListTables",
    "DeleteTable",
    "UpdateTable",
    "TagResource",
    "UntagResource",
    "ListTagsOfResource",
    "DescribeEndpoints",
    "DescribeLimits",
]


@settings(max_examples=150, deadline=None)
@given(
    op=st.sampled_from(OPERATIONS),
    body=st.dictionaries(st.sampled_from(MEMBERS), JSON, max_size=6),
)
def test_any_request_gets_an_answer_or_a_client_error(op: str, body: dict[str, Any]) -> None:
    clock = Clock()
    db = open_database(MemoryStore(), clock, None)
    call(
        db,
        "CreateTable",
        {
            "TableName": "alpha",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    try:
        answer = call(db, op, body)
    except ClientError as error:
        assert error.message
        return
    assert isinstance(answer, dict)
    # Whatever was accepted left a catalog that still describes itself.
    snapshot(db)


FULL_CREATE: dict[str, Any] = {
    "TableName": "bravo",
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
        {"AttributeName": "g", "AttributeType": "B"},
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "LocalSecondaryIndexes": [
        {
            "IndexName": "by_g",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "g", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["x"]},
        }
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "g_first",
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        }
    ],
    "BillingMode": "PROVISIONED",
    "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    "SSESpecification": {"Enabled": True, "SSEType": "KMS"},
    "Tags": [{"Key": "team", "Value": "storage"}],
    "TableClass": "STANDARD",
    "DeletionProtectionEnabled": False,
    "WarmThroughput": {"ReadUnitsPerSecond": 5, "WriteUnitsPerSecond": 5},
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += paths(child, (*prefix, i))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    import copy

    out = copy.deepcopy(value)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return out


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(paths(FULL_CREATE)),
    new=JSON,
)
def test_a_valid_create_table_with_one_member_garbled_is_answered_cleanly(
    path: tuple[Any, ...], new: Any
) -> None:
    db = open_database(MemoryStore(), Clock(), None)
    body = replaced(FULL_CREATE, path, new)
    try:
        call(db, "CreateTable", body)
    except ClientError as error:
        assert error.message
        assert call(db, "ListTables", {})["TableNames"] == []
        return
    snapshot(db)
