"""A table reported ACTIVE through one router is served by every router of a real cluster.

DynamoDB serves every request to a table from the moment DescribeTable says ACTIVE. On a
cluster, the metadata group says so, while the partitions (every replica of each) and the
other routers' catalog caches learn of the table by a catalog sync a moment later: a
restored table must still never answer ResourceNotFoundException through another node once
it is ACTIVE, nor a table just created, and a table that does not exist must still answer it
at once, with DynamoDB's message.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from keeldb.cluster.backup_route import ACTIVE_FIRST_FAULT_ENV, ACTIVE_LATE_FAULT_ENV

pytestmark = [pytest.mark.process, pytest.mark.slow]

SOURCE = "source"
SOURCE_ITEMS = 12
ROUNDS = 6  # restores (and creations) per test, each checked through every other router
BROKEN_ROUNDS_MAX = 10  # the broken variant is restored until it fails, at most this often
CREATING_ROUNDS_MAX = 10  # restores until a request reaches one while it is CREATING
LATE_ROUNDS = 2  # restores whose ACTIVE the metadata group delays, each watched throughout
AFTER_ACTIVE_PROBES = 6  # probes through every router after one sees ACTIVE
READS_PER_ROUTER = 4  # requests of each kind sent to each other router after ACTIVE
ACTIVE_SECONDS_MAX = 90.0  # a restore of a dozen items takes a second or two, even loaded
ABSENT_SECONDS_MAX = 5.0  # a table that does not exist is answered without a long wait
NOT_FOUND_MESSAGE = "Requested resource not found"


def _wait_active(client: Any, name: str) -> None:
    """Poll DescribeTable, without pause, until it says ACTIVE (so the requests after it
    follow the status change as closely as a client can)."""
    deadline = time.monotonic() + ACTIVE_SECONDS_MAX
    while time.monotonic() < deadline:
        if client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE":
            return
    raise TimeoutError(f"table {name} not ACTIVE in {ACTIVE_SECONDS_MAX} s")


def _use_everywhere(clients: list[Any], name: str, errors: Counter[str]) -> None:
    """Scan, GetItem and PutItem the table through every router given, at once and a few
    times each (reads eventually consistent, as the SDKs send them by default, so that any
    replica may answer); every error is counted by request and code, and a scan that finds
    other than the restored items too."""
    for repeat in range(READS_PER_ROUTER):
        for client in clients:
            for request in ("scan", "get", "put"):
                try:
                    if request == "scan":
                        items = client.scan(TableName=name)["Items"]
                        restored = [i for i in items if i["pk"]["S"].startswith("k")]
                        if name.startswith("restored") and len(restored) != SOURCE_ITEMS:
                            errors[f"scan found {len(restored)} restored items"] += 1
                    elif request == "get":
                        client.get_item(TableName=name, Key={"pk": {"S": "k1"}})
                    else:
                        client.put_item(TableName=name, Item={"pk": {"S": f"new-{repeat}"}})
                except ClientError as error:
                    errors[f"{request}: {error.response['Error']['Code']}"] += 1


def _create_source(client: Any) -> None:
    client.create_table(
        TableName=SOURCE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    _wait_active(client, SOURCE)
    client.update_continuous_backups(
        TableName=SOURCE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    for number in range(SOURCE_ITEMS):
        client.put_item(TableName=SOURCE, Item={"pk": {"S": f"k{number}"}, "n": {"N": "1"}})
    time.sleep(1.1)  # the latest restorable time is a second behind


def _restore_and_use(cluster: Any, rounds: int, prefix: str = "restored") -> Counter[str]:
    """Restore the source table `rounds` times through the first node and create as many
    tables there; each is used through every other node as soon as DescribeTable says
    ACTIVE. The errors, by request and code (stops at the first round that has any)."""
    first, *others = cluster.node_ids
    client = cluster.client(first)
    other_clients = [cluster.client(n) for n in others]
    errors: Counter[str] = Counter()
    for number in range(rounds):
        restored = f"{prefix}-{number}"
        client.restore_table_to_point_in_time(
            SourceTableName=SOURCE, TargetTableName=restored, UseLatestRestorableTime=True
        )
        _wait_active(client, restored)
        _use_everywhere(other_clients, restored, errors)
        created = f"created-{prefix}-{number}"
        client.create_table(
            TableName=created,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        _wait_active(client, created)
        _use_everywhere(other_clients, created, errors)
        if errors:
            break
    return errors


def test_a_restored_or_created_table_is_served_by_every_router_once_active(
    cluster_factory: Callable[..., Any],
) -> None:
    cluster = cluster_factory(nodes=3, partitions=4)
    _create_source(cluster.client(cluster.node_ids[0]))
    errors = _restore_and_use(cluster, ROUNDS)
    assert not errors, dict(errors)


def test_the_check_catches_a_restored_table_made_active_before_its_replicas_serve_it(
    cluster_factory: Callable[..., Any],
) -> None:
    """The broken variant: the metadata group makes a restored table ACTIVE as soon as its
    items are loaded, and its partitions learn it from the catalog sync that follows."""
    cluster = cluster_factory(nodes=3, partitions=4, env={ACTIVE_FIRST_FAULT_ENV: "broken"})
    _create_source(cluster.client(cluster.node_ids[0]))
    errors = _restore_and_use(cluster, BROKEN_ROUNDS_MAX, prefix="broken")
    assert any("ResourceNotFoundException" in what for what in errors), dict(errors)


def test_a_router_that_saw_a_table_creating_serves_it_once_active(
    cluster_factory: Callable[..., Any],
) -> None:
    """A router whose catalog cache learned a restored table while it was CREATING (a
    request for it was answered ResourceNotFoundException then, as DynamoDB answers) serves
    it once ACTIVE, also where it checks a request against its cache itself: a
    BatchWriteItem over several partitions."""
    cluster = cluster_factory(nodes=3, partitions=4)
    first, second, _third = cluster.node_ids
    client, other = cluster.client(first), cluster.client(second)
    _create_source(client)
    batch = [{"PutRequest": {"Item": {"pk": {"S": f"b{n}"}}}} for n in range(20)]
    seen_creating = 0
    for number in range(CREATING_ROUNDS_MAX):
        restored = f"restored-{number}"
        client.restore_table_to_point_in_time(
            SourceTableName=SOURCE, TargetTableName=restored, UseLatestRestorableTime=True
        )
        try:
            other.get_item(TableName=restored, Key={"pk": {"S": "k1"}})
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ResourceNotFoundException"
            seen_creating += 1
        _wait_active(client, restored)
        answer = other.batch_write_item(RequestItems={restored: batch})
        assert answer["UnprocessedItems"] == {}
        if seen_creating:
            break
    assert seen_creating, "no request reached the table while it was CREATING"


def test_a_table_that_does_not_exist_is_not_found_at_once_through_every_router(
    cluster_factory: Callable[..., Any],
) -> None:
    cluster = cluster_factory(nodes=3, partitions=2)
    for node in cluster.node_ids:
        client = cluster.client(node)
        requests: list[Callable[[], Any]] = [
            lambda c=client: c.scan(TableName="absent"),
            lambda c=client: c.get_item(TableName="absent", Key={"pk": {"S": "k"}}),
            lambda c=client: c.put_item(TableName="absent", Item={"pk": {"S": "k"}}),
            lambda c=client: c.query(
                TableName="absent",
                KeyConditionExpression="pk = :k",
                ExpressionAttributeValues={":k": {"S": "k"}},
            ),
        ]
        for request in requests:
            started = time.monotonic()
            with pytest.raises(ClientError) as raised:
                request()
            assert time.monotonic() - started < ABSENT_SECONDS_MAX
            error = raised.value.response["Error"]
            assert error["Code"] == "ResourceNotFoundException"
            assert error["Message"] == NOT_FOUND_MESSAGE


def _probe(client: Any, name: str, consistent: bool) -> tuple[str, str, str]:
    """DescribeTable's status, then a GetItem of a restored item ("served", "not found" or
    another error's code), then DescribeTable's status again, through one router."""

    def status() -> str:
        return str(client.describe_table(TableName=name)["Table"]["TableStatus"])

    before = status()
    try:
        client.get_item(TableName=name, Key={"pk": {"S": "k1"}}, ConsistentRead=consistent)
        outcome = "served"
    except ClientError as error:
        code = error.response["Error"]["Code"]
        outcome = "not found" if code == "ResourceNotFoundException" else code
    return before, outcome, status()


def _disorders(probes: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Probes that contradict "served exactly when ACTIVE": a request served although a
    DescribeTable sent after it said CREATING, or refused although one sent before it said
    ACTIVE (the status never goes back from ACTIVE), or any other error."""
    return [
        (before, outcome, after)
        for before, outcome, after in probes
        if (outcome == "served" and after != "ACTIVE")
        or (outcome != "served" and before == "ACTIVE")
        or outcome not in ("served", "not found")
    ]


def test_a_restored_table_is_served_exactly_when_describe_table_says_active(
    cluster_factory: Callable[..., Any],
) -> None:
    """Every router is probed, in turn and without pause, from the moment a restore starts
    until some time after it is ACTIVE; the metadata group makes these tables ACTIVE two
    seconds after their partitions serve them (`ACTIVE_LATE_FAULT_ENV`, a slow but legal
    schedule), so many probes fall in between: each must see the table not found while
    DescribeTable says CREATING, and served once it says ACTIVE."""
    cluster = cluster_factory(nodes=3, partitions=4, env={ACTIVE_LATE_FAULT_ENV: "late"})
    clients = [cluster.client(n) for n in cluster.node_ids]
    _create_source(clients[0])
    for number in range(LATE_ROUNDS):
        name = f"late-{number}"
        clients[0].restore_table_to_point_in_time(
            SourceTableName=SOURCE, TargetTableName=name, UseLatestRestorableTime=True
        )
        probes: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + ACTIVE_SECONDS_MAX
        after_active = 0
        while after_active < AFTER_ACTIVE_PROBES:
            assert time.monotonic() < deadline, f"{name} not ACTIVE in {ACTIVE_SECONDS_MAX} s"
            for client in clients:
                probes.append(_probe(client, name, consistent=len(probes) % 2 == 0))
            if probes[-1][2] == "ACTIVE":
                after_active += 1
        assert not _disorders(probes), _disorders(probes)
        creating = sum(1 for probe in probes if probe[2] == "CREATING")
        served = sum(1 for probe in probes if probe[1] == "served")
        print(f"{name}: {creating} probes while CREATING, {served} served")
        assert creating and served, probes
