"""Time to Live against real `keeldb serve` processes, with boto3 and PynamoDB: the two
operations with DynamoDB's answers and errors, expired items deleted by the background sweeper
(started with a short `--ttl-interval`), expired items still read until then, and the setting
kept across a restart."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from pynamodb.attributes import TTLAttribute, UnicodeAttribute
from pynamodb.models import Model

from keeldb.cli import build_parser

# The sweeper of the fast server runs every FAST_INTERVAL_SECONDS; a test waits at most
# DELETION_WAIT_SECONDS_MAX for a deletion, so a broken sweeper fails instead of hanging.
FAST_INTERVAL_SECONDS = "0.2"
DELETION_WAIT_SECONDS_MAX = 10.0
CLI_SECONDS_MAX = 30.0


@pytest.fixture(scope="module")
def fast(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., Any]
) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("ttl-fast")
    args = ["--host", "127.0.0.1", "--port", "0", "--data-dir", str(base / "data")]
    process = launch_server([*args, "--ttl-interval", FAST_INTERVAL_SECONDS], base / "logs")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def slow(
    tmp_path_factory: pytest.TempPathFactory, launch_server: Callable[..., Any]
) -> Iterator[Any]:
    """A server whose sweeper does not run during the tests (one pass an hour)."""
    base = tmp_path_factory.mktemp("ttl-slow")
    args = ["--host", "127.0.0.1", "--port", "0", "--in-memory", "--ttl-interval", "3600"]
    process = launch_server(args, base / "logs")
    try:
        yield process
    finally:
        process.stop()


def _create(ddb: Any, name: str | None = None) -> str:
    name = name or f"ttl-{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _enable(ddb: Any, name: str, attribute: str = "expires") -> Any:
    return ddb.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )


def _error(call: Callable[[], Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def _exists(ddb: Any, name: str, pk: str) -> bool:
    answer = ddb.get_item(TableName=name, Key={"pk": {"S": pk}}, ConsistentRead=True)
    return "Item" in answer


def _wait_gone(ddb: Any, name: str, pks: list[str]) -> float:
    """Seconds until every item in `pks` is deleted; fails after DELETION_WAIT_SECONDS_MAX."""
    started = time.monotonic()
    while any(_exists(ddb, name, pk) for pk in pks):
        elapsed = time.monotonic() - started
        assert elapsed < DELETION_WAIT_SECONDS_MAX, f"{pks} still present after {elapsed:.1f} s"
        time.sleep(0.05)
    return time.monotonic() - started


# --- The operations ---------------------------------------------------------------------------


def test_enable_then_describe_with_boto3(slow: Any, client_factory: Callable[..., Any]) -> None:
    ddb = client_factory(slow.url)
    name = _create(ddb)
    described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "DISABLED"}
    answer = _enable(ddb, name)
    assert answer["TimeToLiveSpecification"] == {"Enabled": True, "AttributeName": "expires"}
    described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}


def test_refused_changes_carry_dynamodbs_errors(
    slow: Any, client_factory: Callable[..., Any]
) -> None:
    ddb = client_factory(slow.url)
    name = _create(ddb)
    disable = {"Enabled": False, "AttributeName": "expires"}
    assert _error(
        lambda: ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=disable)
    ) == ("ValidationException", "TimeToLive is already disabled", 400)
    _enable(ddb, name)
    assert _error(lambda: _enable(ddb, name)) == (
        "ValidationException",
        "TimeToLive is already enabled",
        400,
    )
    assert _error(lambda: _enable(ddb, name, "other")) == (
        "ValidationException",
        "TimeToLive is active on a different AttributeName: current AttributeName is expires",
        400,
    )
    assert _error(
        lambda: ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=disable)
    ) == (
        "ValidationException",
        "Time to live has been modified multiple times within a fixed interval",
        400,
    )


def test_a_missing_table_is_resource_not_found(
    slow: Any, client_factory: Callable[..., Any]
) -> None:
    ddb = client_factory(slow.url)
    expected = (
        "ResourceNotFoundException",
        "Requested resource not found: Table: no-such-table not found",
        400,
    )
    assert _error(lambda: ddb.describe_time_to_live(TableName="no-such-table")) == expected
    assert _error(lambda: _enable(ddb, "no-such-table")) == expected


def test_a_request_without_attribute_name_is_refused_by_the_server(
    slow: Any, client_factory: Callable[..., Any]
) -> None:
    # boto3 would refuse this request itself; with its validation off, the server answers.
    ddb = client_factory(
        slow.url, config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    name = _create(ddb)
    code, message, status = _error(
        lambda: ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True})
    )
    assert (code, status) == ("ValidationException", 400)
    assert message == (
        "1 validation error detected: Value null at 'timeToLiveSpecification.attributeName' "
        "failed to satisfy constraint: Member must not be null"
    )


# --- Expiry -------------------------------------------------------------------------------------


def test_the_sweeper_deletes_expired_items_and_only_those(
    fast: Any, client_factory: Callable[..., Any]
) -> None:
    ddb = client_factory(fast.url)
    name = _create(ddb)
    _enable(ddb, name)
    now = int(time.time())
    items = {
        "expired": {"N": str(now - 60)},
        "expired-fraction": {"N": f"{now - 1}.5"},
        "future": {"N": str(now + 3600)},
        "ancient": {"N": str(now - 6 * 365 * 86400)},
        "string": {"S": str(now - 60)},
        "set": {"NS": [str(now - 60)]},
    }
    for pk, value in items.items():
        ddb.put_item(TableName=name, Item={"pk": {"S": pk}, "expires": value})
    ddb.put_item(TableName=name, Item={"pk": {"S": "no-ttl"}})
    _wait_gone(ddb, name, ["expired", "expired-fraction"])
    # Several more passes go by; the other items stay.
    time.sleep(4 * float(FAST_INTERVAL_SECONDS))
    for pk in ["future", "ancient", "string", "set", "no-ttl"]:
        assert _exists(ddb, name, pk), pk
    assert ddb.describe_table(TableName=name)["Table"]["ItemCount"] == 5


def test_an_item_expires_when_its_time_comes(fast: Any, client_factory: Callable[..., Any]) -> None:
    ddb = client_factory(fast.url)
    name = _create(ddb)
    _enable(ddb, name)
    expires = int(time.time()) + 2
    ddb.put_item(TableName=name, Item={"pk": {"S": "soon"}, "expires": {"N": str(expires)}})
    assert _exists(ddb, name, "soon")
    _wait_gone(ddb, name, ["soon"])
    assert time.time() >= expires


def test_an_item_renewed_before_the_sweep_stays(
    fast: Any, client_factory: Callable[..., Any]
) -> None:
    ddb = client_factory(fast.url)
    name = _create(ddb)
    _enable(ddb, name)
    now = int(time.time())
    ddb.put_item(TableName=name, Item={"pk": {"S": "kept"}, "expires": {"N": str(now + 1)}})
    ddb.update_item(
        TableName=name,
        Key={"pk": {"S": "kept"}},
        UpdateExpression="SET expires = :later",
        ExpressionAttributeValues={":later": {"N": str(now + 3600)}},
    )
    time.sleep(2 + 4 * float(FAST_INTERVAL_SECONDS))
    assert _exists(ddb, name, "kept")


def test_expired_items_are_still_read_until_deleted(
    slow: Any, client_factory: Callable[..., Any]
) -> None:
    ddb = client_factory(slow.url)
    name = _create(ddb)
    _enable(ddb, name)
    past = str(int(time.time()) - 3600)
    ddb.put_item(TableName=name, Item={"pk": {"S": "stale"}, "expires": {"N": past}})
    item = ddb.get_item(TableName=name, Key={"pk": {"S": "stale"}})["Item"]
    assert item["expires"] == {"N": past}


def test_a_table_without_ttl_keeps_its_expired_items(
    fast: Any, client_factory: Callable[..., Any]
) -> None:
    ddb = client_factory(fast.url)
    name = _create(ddb)
    past = str(int(time.time()) - 60)
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "expires": {"N": past}})
    time.sleep(4 * float(FAST_INTERVAL_SECONDS))
    assert _exists(ddb, name, "a")


# --- PynamoDB ---------------------------------------------------------------------------------


def test_a_pynamodb_model_with_a_ttl_attribute(
    fast: Any, client_factory: Callable[..., Any]
) -> None:
    class Session(Model):
        class Meta:
            table_name = f"ttl-sessions-{uuid.uuid4().hex[:8]}"
            host = fast.url
            region = "us-east-1"
            aws_access_key_id = "AKIDKEELDBTEST"
            aws_secret_access_key = "keeldb-test-secret"
            max_retry_attempts = 0
            billing_mode = "PAY_PER_REQUEST"

        token = UnicodeAttribute(hash_key=True)
        expires = TTLAttribute(null=True)

    # create_table enables TTL on the model's TTLAttribute (UpdateTimeToLive).
    Session.create_table(wait=True)
    ddb = client_factory(fast.url)
    described = ddb.describe_time_to_live(TableName=Session.Meta.table_name)
    assert described["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires",
    }
    Session(token="old", expires=datetime.now(UTC) - timedelta(minutes=5)).save()
    Session(token="new", expires=timedelta(hours=1)).save()
    deadline = time.monotonic() + DELETION_WAIT_SECONDS_MAX
    while _pynamo_exists(Session, "old"):
        assert time.monotonic() < deadline, "expired session still present"
        time.sleep(0.05)
    assert _pynamo_exists(Session, "new")


def _pynamo_exists(model: Any, token: str) -> bool:
    try:
        model.get(token, consistent_read=True)
    except model.DoesNotExist:
        return False
    return True


# --- Restart and the command line ---------------------------------------------------------------


def test_the_setting_survives_a_restart_and_the_new_process_sweeps(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = server_factory("--ttl-interval", "3600", data_dir=data)
    ddb = client_factory(first.url)
    name = _create(ddb)
    _enable(ddb, name)
    past = str(int(time.time()) - 60)
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "expires": {"N": past}})
    assert first.stop() == 0
    second = server_factory("--ttl-interval", FAST_INTERVAL_SECONDS, data_dir=data)
    ddb = client_factory(second.url)
    described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    _wait_gone(ddb, name, ["a"])


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_serve_refuses_a_ttl_interval_that_is_not_a_positive_number(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--in-memory", "--ttl-interval", value])
    assert info.value.code == 2
    assert "--ttl-interval" in capsys.readouterr().err


def test_serve_takes_a_fractional_ttl_interval() -> None:
    args = build_parser().parse_args(["serve", "--ttl-interval", "0.25"])
    assert args.ttl_interval == 0.25


def test_the_command_line_refuses_a_bad_interval_before_starting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keeldb", "serve", "--in-memory", "--ttl-interval", "0"],
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS_MAX,
        check=False,
    )
    assert result.returncode == 2
    assert "must be a positive number of seconds" in result.stderr
