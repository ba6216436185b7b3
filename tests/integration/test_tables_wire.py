"""Control-plane errors on the wire, below boto3's own parameter checks: raw DynamoDB JSON 1.0
requests whose members have the wrong types or break constraints get DynamoDB's `__type`,
message and status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

HTTP_SECONDS_MAX = 10


def post(endpoint: str, operation: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        endpoint,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_SECONDS_MAX) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("operation", "body", "wire_type", "message"),
    [
        (
            "CreateTable",
            {"TableName": 5},
            "com.amazon.coral.service#SerializationException",
            "NUMBER_VALUE can not be converted to a String",
        ),
        (
            "ListTables",
            {"Limit": "ten"},
            "com.amazon.coral.service#SerializationException",
            "STRING_VALUE can not be converted to a Long",
        ),
        (
            "CreateTable",
            {"TableName": "abc;"},
            "com.amazon.coral.validate#ValidationException",
            (
                "3 validation errors detected: Value null at 'attributeDefinitions' failed to satisfy "
                "constraint: Member must not be null; Value 'abc;' at 'tableName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; Value "
                "null at 'keySchema' failed to satisfy constraint: Member must not be null"
            ),
        ),
        (
            "ListTables",
            {"Limit": 0},
            "com.amazon.coral.validate#ValidationException",
            (
                "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
                "Member must have value greater than or equal to 1"
            ),
        ),
        (
            "DescribeTable",
            {"TableName": "no-such-table-here"},
            "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
            "Requested resource not found: Table: no-such-table-here not found",
        ),
        (
            "TagResource",
            {"ResourceArn": "arn:aws:dynamodb:us-east-1:000000000000:table/x", "Tags": []},
            "com.amazon.coral.validate#ValidationException",
            "Atleast one Tag needs to be provided as Input.",
        ),
    ],
)
def test_control_plane_errors_have_dynamodb_wire_shapes(
    endpoint: str, operation: str, body: Any, wire_type: str, message: str
) -> None:
    status, answer = post(endpoint, operation, body)
    assert status == 400
    assert answer["__type"] == wire_type
    assert answer["message"] == message


def test_describe_table_answers_numbers_as_json_numbers(endpoint: str) -> None:
    name = f"wire-{uuid.uuid4().hex[:12]}"
    status, created = post(
        endpoint,
        "CreateTable",
        {
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    assert status == 200
    try:
        status, described = post(endpoint, "DescribeTable", {"TableName": name})
        assert status == 200
        table = described["Table"]
        assert isinstance(table["CreationDateTime"], float | int)
        assert isinstance(table["ItemCount"], int)
        assert table["CreationDateTime"] == created["TableDescription"]["CreationDateTime"]
    finally:
        post(endpoint, "DeleteTable", {"TableName": name})
