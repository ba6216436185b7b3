"""The DynamoDB Streams operations (`keeldb.streams.api`) over an in-memory database: request
checks and their messages, paging, shard filters, iterator positions, and that a damaged or
invented iterator is refused with a ValidationException and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine import streams
from keeldb.model.errors import (
    ClientError,
    ResourceNotFoundException,
    SerializationException,
    ValidationException,
)
from keeldb.streams import api


def s(text: str) -> dict[str, str]:
    return {"S": text}


def check(error: ClientError, kind: type[ClientError], message: str | None = None) -> None:
    assert type(error) is kind, (type(error), error.message)
    if message is not None:
        assert error.message == message


def test_the_dispatcher_refuses_an_unknown_operation(h: Any) -> None:
    error = h.api_error("PutRecord", {})
    assert error.wire_type.endswith("#UnknownOperationException")


def test_missing_members_are_listed_together_as_dynamodb_does(h: Any) -> None:
    check(
        h.api_error("GetShardIterator", {}),
        ValidationException,
        "3 validation errors detected: "
        "Value null at 'streamArn' failed to satisfy constraint: Member must not be null; "
        "Value null at 'shardId' failed to satisfy constraint: Member must not be null; "
        "Value null at 'shardIteratorType' failed to satisfy constraint: Member must not be null",
    )
    check(
        h.api_error("DescribeStream", {}),
        ValidationException,
        "1 validation error detected: "
        "Value null at 'streamArn' failed to satisfy constraint: Member must not be null",
    )
    check(
        h.api_error("GetRecords", {}),
        ValidationException,
        "1 validation error detected: "
        "Value null at 'shardIterator' failed to satisfy constraint: Member must not be null",
    )


def test_an_unknown_iterator_type_names_the_allowed_ones(h: Any) -> None:
    arn = h.create()
    error = h.api_error(
        "GetShardIterator",
        {"StreamArn": arn, "ShardId": h.shard_id(arn), "ShardIteratorType": "OLDEST"},
    )
    check(
        error,
        ValidationException,
        "1 validation error detected: Value 'OLDEST' at 'shardIteratorType' failed to satisfy "
        "constraint: Member must satisfy enum value set: "
        "[TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER]",
    )


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("ListStreams", {"Limit": "ten"}),
        ("DescribeStream", {"StreamArn": 5}),
        ("GetRecords", {"ShardIterator": ["x"]}),
    ],
)
def test_members_of_the_wrong_json_type_are_serialization_errors(
    h: Any, operation: str, body: dict[str, Any]
) -> None:
    check(h.api_error(operation, body), SerializationException)


def test_limits_below_one_are_validation_errors(h: Any) -> None:
    check(
        h.api_error("ListStreams", {"Limit": 0}),
        ValidationException,
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
    )


def test_list_streams_pages_in_order_from_any_stream_arn(h: Any) -> None:
    arns = sorted(h.create(name) for name in ("tbl-a", "tbl-b", "tbl-c"))
    seen = []
    body: dict[str, Any] = {"Limit": 2}
    while True:
        page = h.api("ListStreams", body)
        seen += [x["StreamArn"] for x in page["Streams"]]
        if "LastEvaluatedStreamArn" not in page:
            break
        body["ExclusiveStartStreamArn"] = page["LastEvaluatedStreamArn"]
    assert seen == arns
    # A start that no longer exists still places the page.
    gone = arns[0][:-3] + "999"
    page = h.api("ListStreams", {"ExclusiveStartStreamArn": gone})
    assert [x["StreamArn"] for x in page["Streams"]] == arns[1:]
    not_a_stream = "arn:aws:dynamodb:us-east-1:000000000000:table/tbl-a/index/byg-and-more"
    check(
        h.api_error("ListStreams", {"ExclusiveStartStreamArn": not_a_stream}),
        ResourceNotFoundException,
    )


def test_a_table_that_exists_without_streams_lists_none(h: Any) -> None:
    h.create("plain", view=None)
    assert h.api("ListStreams", {"TableName": "plain"}) == {"Streams": []}


def test_child_shard_filter_of_the_only_shard_finds_no_children(h: Any) -> None:
    arn = h.create()
    body = {"StreamArn": arn, "ShardFilter": {"Type": "CHILD_SHARDS", "ShardId": h.shard_id(arn)}}
    assert h.api("DescribeStream", body)["StreamDescription"]["Shards"] == []


def test_describe_stream_pages_shards_after_the_exclusive_start(h: Any) -> None:
    arn = h.create()
    answer = h.api("DescribeStream", {"StreamArn": arn, "ExclusiveStartShardId": h.shard_id(arn)})
    assert answer["StreamDescription"]["Shards"] == []
    assert "LastEvaluatedShardId" not in answer["StreamDescription"]


def test_a_sequence_number_that_is_not_ours_is_a_validation_error(h: Any) -> None:
    arn = h.create()
    body = {
        "StreamArn": arn,
        "ShardId": h.shard_id(arn),
        "ShardIteratorType": "AT_SEQUENCE_NUMBER",
        "SequenceNumber": "x" * 21,
    }
    check(h.api_error("GetShardIterator", body), ValidationException)
    body["SequenceNumber"] = "9" * 30  # beyond every position
    check(h.api_error("GetShardIterator", body), ValidationException)


def test_a_closed_shard_refuses_sequence_numbers_after_its_end(h: Any) -> None:
    arn = h.create()
    h.put({"pk": s("a")})
    h("UpdateTable", {"TableName": "tbl", "StreamSpecification": {"StreamEnabled": False}})
    (stream,) = streams.list_streams(h.db)
    closed = stream.shards[0].closed
    assert closed is not None
    body = {
        "StreamArn": arn,
        "ShardId": h.shard_id(arn),
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "SequenceNumber": streams.sequence_number(closed + 5),
    }
    check(h.api_error("GetShardIterator", body), ValidationException)


def test_latest_on_a_closed_shard_reads_nothing_and_ends(h: Any) -> None:
    arn = h.create()
    h.put({"pk": s("a")})
    h("UpdateTable", {"TableName": "tbl", "StreamSpecification": {"StreamEnabled": False}})
    page = h.api("GetRecords", {"ShardIterator": h.iterator(arn, "LATEST")})
    assert page == {"Records": []}


def test_an_iterator_moved_to_another_stream_is_refused(h: Any) -> None:
    first = h.create("tbl-a")
    second = h.create("tbl-b")
    text = h.iterator(first)
    moved = second + text[len(first) :]
    check(
        h.api_error("GetRecords", {"ShardIterator": moved}),
        ValidationException,
        "Invalid ShardIterator",
    )


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_garbage_iterators_are_validation_errors(text: str) -> None:
    try:
        api.decode_iterator(text)
    except ValidationException as error:
        assert error.message == "Invalid ShardIterator"
    else:
        pytest.fail(f"decoded garbage {text!r}")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=200))
def test_damaged_iterators_never_decode_to_another_position(blob: bytes, cut: int) -> None:
    import base64

    arn = "arn:aws:dynamodb:us-east-1:000000000000:table/tbl/stream/2027-01-15T08:00:00.000"
    for text in (
        f"{arn}|1|{base64.b64encode(blob).decode()}",
        f"{arn}|1|{base64.b64encode(blob).decode()}"[:cut],
    ):
        try:
            decoded = api.decode_iterator(text)
        except ValidationException:
            continue
        # Only a blob that happens to carry a valid checksum decodes, and then whole.
        assert decoded[0] == arn
