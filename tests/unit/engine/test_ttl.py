"""Time to Live through `Database.dispatch` over the in-memory store and log: UpdateTimeToLive
and DescribeTimeToLive with DynamoDB's rules and messages, and the durability of the setting.
The expiry rule and the sweeper have their own file (test_ttl_sweep.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from keeldb.engine import catalog, ttl
from keeldb.engine.database import Database
from keeldb.model.errors import (
    ClientError,
    ResourceNotFoundException,
    SerializationException,
    ValidationException,
)
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.storage.protocols import Entry

NOW = 1_800_000_000.0  # a fixed instant for the fake clock (2027-01-15T08:00:00Z)
HOUR = 3600.0
ARN_PREFIX = "arn:aws:dynamodb:us-east-1:000000000000:table/"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Node:
    """A database over a memory store whose log remembers every committed entry."""

    def __init__(self) -> None:
        self.store = MemoryStore()
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

    def create(self, name: str = "things") -> None:
        self.call(
            "CreateTable",
            {
                "TableName": name,
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

    def update(self, enabled: bool, attribute: str = "expires", name: str = "things") -> Any:
        return self.call(
            "UpdateTimeToLive",
            {
                "TableName": name,
                "TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attribute},
            },
        )

    def update_error(self, enabled: bool, attribute: str = "expires") -> ClientError:
        with pytest.raises(ClientError) as info:
            self.update(enabled, attribute)
        return info.value

    def describe(self, name: str = "things") -> dict[str, Any]:
        answer: dict[str, Any] = self.call("DescribeTimeToLive", {"TableName": name})
        return answer["TimeToLiveDescription"]


@pytest.fixture
def node() -> Node:
    n = Node()
    n.create()
    return n


def _assert_error(error: ClientError, kind: type[ClientError], message: str) -> None:
    assert type(error) is kind
    assert error.message == message


# --- DescribeTimeToLive ---------------------------------------------------------------------


def test_a_new_table_reports_ttl_disabled_without_an_attribute(node: Node) -> None:
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}


def test_describe_accepts_the_table_arn(node: Node) -> None:
    node.update(True)
    assert node.describe(ARN_PREFIX + "things") == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires",
    }


def test_describe_of_a_missing_table_is_resource_not_found(node: Node) -> None:
    error = node.error("DescribeTimeToLive", {"TableName": "nope"})
    _assert_error(
        error, ResourceNotFoundException, "Requested resource not found: Table: nope not found"
    )


def test_describe_without_a_table_name_is_a_validation_error(node: Node) -> None:
    error = node.error("DescribeTimeToLive", {})
    _assert_error(
        error,
        ValidationException,
        "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: "
        "Member must not be null",
    )


def test_describe_checks_the_table_name_pattern_and_length_together(node: Node) -> None:
    error = node.error("DescribeTimeToLive", {"TableName": "a!"})
    _assert_error(
        error,
        ValidationException,
        "2 validation errors detected: Value 'a!' at 'tableName' failed to satisfy constraint: "
        "Member must have length greater than or equal to 3; Value 'a!' at 'tableName' failed "
        "to satisfy constraint: Member must satisfy regular expression pattern: "
        "[a-zA-Z0-9_.-]+",
    )


# --- UpdateTimeToLive: success ---------------------------------------------------------------


def test_enabling_answers_with_the_specification_it_was_given(node: Node) -> None:
    answer = node.update(True, "expires")
    assert answer == {"TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expires"}}
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}


def test_disabling_after_the_interval_forgets_the_attribute(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR
    answer = node.update(False, "expires")
    assert answer == {"TimeToLiveSpecification": {"Enabled": False, "AttributeName": "expires"}}
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}


def test_ttl_may_use_the_partition_key_attribute(node: Node) -> None:
    node.update(True, "pk")
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "pk"}


def test_update_accepts_the_table_arn(node: Node) -> None:
    node.update(True, "expires", name=ARN_PREFIX + "things")
    assert node.describe()["TimeToLiveStatus"] == "ENABLED"


def test_the_attribute_changes_by_disabling_then_enabling_an_hour_apart(node: Node) -> None:
    node.update(True, "a")
    node.clock.now += HOUR
    node.update(False, "a")
    node.clock.now += HOUR
    node.update(True, "b")
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "b"}


def test_ttl_settings_of_two_tables_are_independent(node: Node) -> None:
    node.create("others")
    node.update(True, "expires")
    assert node.describe("others") == {"TimeToLiveStatus": "DISABLED"}
    node.update(True, "gone", name="others")
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}


def test_describe_table_is_unchanged_by_ttl(node: Node) -> None:
    before = node.call("DescribeTable", {"TableName": "things"})
    node.update(True)
    assert node.call("DescribeTable", {"TableName": "things"}) == before


# --- UpdateTimeToLive: refused changes --------------------------------------------------------


def test_enabling_twice_is_refused_as_already_enabled(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR
    _assert_error(
        node.update_error(True, "expires"), ValidationException, "TimeToLive is already enabled"
    )


def test_enabling_another_attribute_names_the_current_one(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR
    _assert_error(
        node.update_error(True, "other"),
        ValidationException,
        "TimeToLive is active on a different AttributeName: current AttributeName is expires",
    )
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}


def test_disabling_another_attribute_names_the_current_one(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR
    _assert_error(
        node.update_error(False, "other"),
        ValidationException,
        "TimeToLive is active on a different AttributeName: current AttributeName is expires",
    )


def test_disabling_a_table_that_never_had_ttl_is_refused(node: Node) -> None:
    _assert_error(
        node.update_error(False, "x"), ValidationException, "TimeToLive is already disabled"
    )


def test_disabling_twice_is_refused_as_already_disabled(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR
    node.update(False, "expires")
    node.clock.now += HOUR
    _assert_error(
        node.update_error(False, "expires"), ValidationException, "TimeToLive is already disabled"
    )


def test_a_second_change_within_the_hour_is_refused(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR - 1
    _assert_error(
        node.update_error(False, "expires"),
        ValidationException,
        "Time to live has been modified multiple times within a fixed interval",
    )
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    node.clock.now += 1
    node.update(False, "expires")
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}


def test_a_refused_change_does_not_extend_the_interval(node: Node) -> None:
    node.update(True, "expires")
    node.clock.now += HOUR / 2
    node.update_error(False, "expires")
    node.clock.now += HOUR / 2
    node.update(False, "expires")
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}


def test_state_checks_come_before_the_interval_check(node: Node) -> None:
    node.update(True, "expires")
    _assert_error(
        node.update_error(True, "expires"), ValidationException, "TimeToLive is already enabled"
    )
    _assert_error(
        node.update_error(False, "other"),
        ValidationException,
        "TimeToLive is active on a different AttributeName: current AttributeName is expires",
    )


def test_a_refused_change_writes_no_record(node: Node) -> None:
    node.update(True, "expires")
    count = len(node.entries)
    node.update_error(True, "expires")
    node.update_error(False, "expires")
    assert len(node.entries) == count


def test_update_of_a_missing_table_is_resource_not_found(node: Node) -> None:
    error = node.error(
        "UpdateTimeToLive",
        {"TableName": "nope", "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "e"}},
    )
    _assert_error(
        error, ResourceNotFoundException, "Requested resource not found: Table: nope not found"
    )


# --- UpdateTimeToLive: request validation -------------------------------------------------------


def _null(path: str) -> str:
    return f"Value null at '{path}' failed to satisfy constraint: Member must not be null"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"TableName": "things"},
            "1 validation error detected: " + _null("timeToLiveSpecification"),
        ),
        (
            {"TableName": "things", "TimeToLiveSpecification": {"AttributeName": "e"}},
            "1 validation error detected: " + _null("timeToLiveSpecification.enabled"),
        ),
        (
            {"TableName": "things", "TimeToLiveSpecification": {"Enabled": True}},
            "1 validation error detected: " + _null("timeToLiveSpecification.attributeName"),
        ),
        (
            {"TableName": "things", "TimeToLiveSpecification": {}},
            "2 validation errors detected: "
            + _null("timeToLiveSpecification.enabled")
            + "; "
            + _null("timeToLiveSpecification.attributeName"),
        ),
        (
            {"TimeToLiveSpecification": {"Enabled": False, "AttributeName": ""}},
            "2 validation errors detected: "
            + _null("tableName")
            + "; Value '' at 'timeToLiveSpecification.attributeName' failed to satisfy "
            "constraint: Member must have length greater than or equal to 1",
        ),
        (
            {
                "TableName": "things",
                "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "a" * 256},
            },
            "1 validation error detected: Value '"
            + "a" * 256
            + "' at 'timeToLiveSpecification.attributeName' failed to satisfy constraint: "
            "Member must have length less than or equal to 255",
        ),
    ],
)
def test_update_reports_every_constraint_violation_at_once(
    node: Node, body: dict[str, Any], message: str
) -> None:
    _assert_error(node.error("UpdateTimeToLive", body), ValidationException, message)
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}


def test_an_attribute_name_of_255_characters_is_accepted(node: Node) -> None:
    node.update(True, "a" * 255)
    assert node.describe()["AttributeName"] == "a" * 255


def test_a_malformed_request_for_a_missing_table_is_a_validation_error(node: Node) -> None:
    error = node.error(
        "UpdateTimeToLive", {"TableName": "nope", "TimeToLiveSpecification": {"Enabled": True}}
    )
    assert type(error) is ValidationException


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"Enabled": "yes", "AttributeName": "e"},
            "STRING_VALUE can not be converted to a Boolean",
        ),
        ({"Enabled": True, "AttributeName": 5}, "NUMBER_VALUE can not be converted to a String"),
        ("on", "STRING_VALUE can not be converted to a Structure"),
    ],
)
def test_members_of_the_wrong_type_are_serialization_errors(
    node: Node, spec: Any, message: str
) -> None:
    error = node.error("UpdateTimeToLive", {"TableName": "things", "TimeToLiveSpecification": spec})
    _assert_error(error, SerializationException, message)


# --- Durability -------------------------------------------------------------------------------


def test_the_setting_is_rebuilt_by_replaying_the_log(node: Node) -> None:
    node.update(True, "expires")
    replica = Database(MemoryStore())
    replica.apply(node.entries)
    answer = asyncio.run(replica.dispatch("DescribeTimeToLive", {"TableName": "things"}))
    assert answer["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires",
    }


def test_the_setting_survives_reloading_the_catalog_from_the_store(node: Node) -> None:
    node.update(True, "expires")
    reopened = Database(node.store)
    answer = asyncio.run(reopened.dispatch("DescribeTimeToLive", {"TableName": "things"}))
    assert answer["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"


def test_a_replayed_record_is_skipped(node: Node) -> None:
    node.update(True, "expires")
    lsn = node.store.applied_lsn()
    node.db.apply(node.entries[-1:])  # the same record again, as recovery may hand it over
    assert node.store.applied_lsn() == lsn
    assert node.describe() == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}


def test_a_recreated_table_starts_with_ttl_disabled(node: Node) -> None:
    node.update(True, "expires")
    node.call("DeleteTable", {"TableName": "things"})
    node.create()
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}
    node.update(True, "other")  # no interval carried over from the old table
    assert node.describe()["AttributeName"] == "other"


def test_a_record_for_a_table_deleted_meanwhile_only_moves_the_lsn(node: Node) -> None:
    table = catalog.get_table(node.db, "things")
    node.call("DeleteTable", {"TableName": "things"})
    node.create()
    lsn = node.store.applied_lsn()
    stale = {
        "kind": "update_time_to_live",
        "name": "things",
        "table_id": table.table_id,
        "setting": ttl.TtlSetting(True, "expires", NOW).to_record(),
    }
    asyncio.run(node.db.propose(stale))
    assert node.store.applied_lsn() == lsn + 1
    assert node.describe() == {"TimeToLiveStatus": "DISABLED"}


def test_the_setting_keeps_other_entries_of_the_table_extra(node: Node) -> None:
    table = catalog.get_table(node.db, "things")
    asyncio.run(
        node.db.propose(
            {
                "kind": "update_table",
                "name": "things",
                "table_id": table.table_id,
                "changes": {"extra": {"replicas": ["eu-west-1"]}},
            }
        )
    )
    node.update(True, "expires")
    extra = catalog.get_table(node.db, "things").extra
    assert extra["replicas"] == ["eu-west-1"]
    assert extra[ttl.EXTRA_KEY]["attribute"] == "expires"


def test_the_record_carries_the_decided_time_not_a_clock_read_at_apply(node: Node) -> None:
    node.update(True, "expires")
    replica = Database(MemoryStore())
    replica.state[catalog.CLOCK_STATE_KEY] = FakeClock(NOW + 10 * HOUR)
    replica.apply(node.entries)
    setting = ttl.ttl_setting(catalog.get_table(replica, "things"))
    assert setting.changed_at == NOW
