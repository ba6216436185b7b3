"""Validation, records and response shapes of functions and event source mappings."""

from __future__ import annotations

import pytest

from keeldb.functions import model
from keeldb.functions.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceNotFoundException,
    ValidationException,
)

ROLE = "arn:aws:iam::123456789012:role/test"
STREAM = "arn:aws:dynamodb:us-east-1:000000000000:table/src/stream/2026-01-01T00:00:00.000"


def body(**overrides):
    base = {"Runtime": "python3.12", "Handler": "app.handler", "Role": ROLE}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("reference", "name", "qualifier"),
    [
        ("f", "f", None),
        ("f:$LATEST", "f", "$LATEST"),
        ("000000000000:function:f", "f", None),
        ("arn:aws:lambda:us-east-1:000000000000:function:f", "f", None),
        ("arn:aws:lambda:us-east-1:000000000000:function:f:prod", "f", "prod"),
    ],
)
def test_function_references_name_the_function_and_qualifier(reference, name, qualifier):
    assert model.parse_function_reference(reference, "us-east-1", "000000000000") == (
        name,
        qualifier,
    )


def test_a_reference_to_another_region_names_no_function_here():
    with pytest.raises(ResourceNotFoundException):
        model.parse_function_reference(
            "arn:aws:lambda:eu-west-1:000000000000:function:f", "us-east-1", "000000000000"
        )


def test_a_function_name_longer_than_64_characters_is_refused():
    with pytest.raises(ValidationException, match="less than or equal to 64"):
        model.parse_function_reference("f" * 65, "us-east-1", "000000000000")


def test_only_latest_is_a_qualifier_that_exists():
    model.check_qualifier("$LATEST", "arn")
    with pytest.raises(ResourceNotFoundException, match="Function not found: arn:1"):
        model.check_qualifier("1", "arn")


def test_a_new_function_takes_lambdas_defaults():
    record = model.new_function(body(), "f", "ab" * 32, 10, 0.0)
    assert record["timeout"] == 3
    assert record["memory"] == 128
    assert record["environment"] is None
    config = model.configuration(record, "us-east-1", "000000000000")
    assert config["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:f"
    assert config["LastModified"] == "1970-01-01T00:00:00.000+0000"
    assert config["Version"] == "$LATEST"
    assert "Environment" not in config


@pytest.mark.parametrize(("timeout", "ok"), [(1, True), (900, True), (901, False), (0, False)])
def test_timeout_is_between_1_and_900_seconds(timeout, ok):
    if ok:
        assert model.new_function(body(Timeout=timeout), "f", "00", 1, 0)["timeout"] == timeout
    else:
        with pytest.raises(ValidationException, match="timeout"):
            model.new_function(body(Timeout=timeout), "f", "00", 1, 0)


def test_memory_above_10240_mb_is_refused_with_lambdas_message():
    with pytest.raises(InvalidParameterValueException) as caught:
        model.new_function(body(MemorySize=10241), "f", "00", 1, 0)
    assert caught.value.message == (
        "'MemorySize' value failed to satisfy constraint: Member must have value less than or "
        "equal to 10240"
    )
    assert model.new_function(body(MemorySize=10240), "f", "00", 1, 0)["memory"] == 10240


def test_memory_below_128_mb_is_refused():
    with pytest.raises(ValidationException, match="greater than or equal to 128"):
        model.new_function(body(MemorySize=127), "f", "00", 1, 0)


@pytest.mark.parametrize("runtime", ["nodejs20.x", "python2.7", "java21"])
def test_runtimes_other_than_python3_are_refused(runtime):
    with pytest.raises(InvalidParameterValueException, match=runtime):
        model.new_function(body(Runtime=runtime), "f", "00", 1, 0)


def test_reserved_environment_variables_are_refused():
    with pytest.raises(InvalidParameterValueException, match="AWS_REGION"):
        model.new_function(body(Environment={"Variables": {"AWS_REGION": "x"}}), "f", "00", 1, 0)


def test_environment_larger_than_4_kb_is_refused():
    variables = {"BIG": "x" * 4096}
    with pytest.raises(InvalidParameterValueException, match="4KB"):
        model.new_function(body(Environment={"Variables": variables}), "f", "00", 1, 0)


def test_a_stale_revision_id_is_refused():
    record = model.new_function(body(), "f", "00", 1, 0)
    with pytest.raises(PreconditionFailedException):
        model.updated_configuration(record, {"RevisionId": "other", "Timeout": 5}, 1)
    new = model.updated_configuration(
        record, {"RevisionId": record["revision_id"], "Timeout": 5}, 1
    )
    assert new["timeout"] == 5
    assert new["revision_id"] != record["revision_id"]
    assert new["handler"] == record["handler"]


def test_a_zip_that_is_not_base64_is_refused():
    with pytest.raises(InvalidParameterValueException, match="Could not unzip"):
        model.decode_zip({"ZipFile": "not base64!"})


def test_a_mapping_takes_lambdas_stream_defaults():
    record = model.new_mapping({"StartingPosition": "LATEST"}, "f", STREAM, 5.0)
    config = model.mapping_configuration(record, "us-east-1", "000000000000")
    assert config["BatchSize"] == 100
    assert config["MaximumBatchingWindowInSeconds"] == 0
    assert config["MaximumRetryAttempts"] == -1
    assert config["MaximumRecordAgeInSeconds"] == -1
    assert config["BisectBatchOnFunctionError"] is False
    assert config["State"] == "Creating"
    assert config["EventSourceArn"] == STREAM


@pytest.mark.parametrize(
    "change",
    [
        {"BatchSize": 0},
        {"BatchSize": 10001},
        {"MaximumBatchingWindowInSeconds": 301},
        {"MaximumRetryAttempts": 10001},
        {"MaximumRetryAttempts": -2},
        {"FunctionResponseTypes": ["Other"]},
    ],
)
def test_mapping_members_outside_their_range_are_refused(change):
    with pytest.raises(ValidationException):
        model.new_mapping({"StartingPosition": "LATEST", **change}, "f", STREAM, 0)


@pytest.mark.parametrize("age", [0, 59, 604801])
def test_record_age_is_minus_one_or_between_60_seconds_and_a_week(age):
    with pytest.raises(InvalidParameterValueException):
        model.new_mapping(
            {"StartingPosition": "LATEST", "MaximumRecordAgeInSeconds": age}, "f", STREAM, 0
        )


def test_a_mapping_needs_a_supported_starting_position():
    with pytest.raises(InvalidParameterValueException):
        model.new_mapping({"StartingPosition": "AT_TIMESTAMP"}, "f", STREAM, 0)
    with pytest.raises(InvalidParameterValueException):
        model.new_mapping({}, "f", STREAM, 0)


def test_on_failure_destinations_are_tables_or_log_groups():
    table = "arn:aws:dynamodb:us-east-1:000000000000:table/failures"
    logs = "arn:aws:logs:us-east-1:000000000000:log-group:/keeldb/failures"
    assert model.check_destination({"OnFailure": {"Destination": table}}) == table
    assert model.check_destination({"OnFailure": {"Destination": logs}}) == logs
    with pytest.raises(InvalidParameterValueException):
        model.check_destination({"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}})


def test_only_table_stream_arns_are_event_sources():
    assert model.parse_stream_arn(STREAM).group("table") == "src"
    with pytest.raises(InvalidParameterValueException, match="Unrecognized event source"):
        model.parse_stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/s")
