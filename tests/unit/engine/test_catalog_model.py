"""A rule-based state machine drives the control plane with random operation sequences and
checks it against a plain model (a dict of table name -> settings); after every step, a fresh
database that replays the committed log from an empty store must describe the same catalog,
and one restarted over the same store must too."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import settings
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
