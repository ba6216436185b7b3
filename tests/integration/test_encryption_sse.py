"""SSESpecification and SSEDescription through boto3, as DynamoDB shows and checks them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

INVALID = "One or more parameter values were invalid: "
KEY_ARN = re.compile(r"^arn:aws:kms:us-east-1:\d{12}:key/[0-9a-f-]{36}$")
CUSTOMER_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def create_args(name: str, **more: Any) -> dict[str, Any]:
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
        **more,
    }


def test_an_aws_managed_key_is_described_as_enabled_kms_with_its_arn(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    first = table_factory(SSESpecification={"Enabled": True})
    second = table_factory(SSESpecification={"Enabled": True, "SSEType": "KMS"})
    described = ddb.describe_table(TableName=first)["Table"]["SSEDescription"]
    assert set(described) == {"Status", "SSEType", "KMSMasterKeyArn"}
    assert described["Status"] == "ENABLED"
    assert described["SSEType"] == "KMS"
    assert KEY_ARN.match(described["KMSMasterKeyArn"])
    # One AWS managed key (alias/aws/dynamodb) per account and region serves every table.
    other = ddb.describe_table(TableName=second)["Table"]["SSEDescription"]
    assert other == described


def test_create_table_answers_with_the_sse_description(ddb: Any) -> None:
    name = "sse-create-answer"
    try:
        created = ddb.create_table(**create_args(name, SSESpecification={"Enabled": True}))
        assert created["TableDescription"]["SSEDescription"]["Status"] == "ENABLED"
        assert created["TableDescription"]["SSEDescription"]["SSEType"] == "KMS"
    finally:
        ddb.delete_table(TableName=name)


@pytest.mark.parametrize("spec", [None, {"Enabled": False}])
def test_the_aws_owned_key_has_no_sse_description(
    ddb: Any, table_factory: Callable[..., str], spec: dict[str, Any] | None
) -> None:
    name = table_factory() if spec is None else table_factory(SSESpecification=spec)
    assert "SSEDescription" not in ddb.describe_table(TableName=name)["Table"]


def test_a_customer_key_is_described_by_its_arn(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    by_arn = table_factory(
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": CUSTOMER_KEY}
    )
    described = ddb.describe_table(TableName=by_arn)["Table"]["SSEDescription"]
    assert described == {"Status": "ENABLED", "SSEType": "KMS", "KMSMasterKeyArn": CUSTOMER_KEY}
    key_id = "0f6e1c2d-3b4a-5968-7a8b-9c0d1e2f3a4b"
    by_id = table_factory(SSESpecification={"Enabled": True, "KMSMasterKeyId": key_id})
    arn = ddb.describe_table(TableName=by_id)["Table"]["SSEDescription"]["KMSMasterKeyArn"]
    assert arn.startswith("arn:aws:kms:us-east-1:")
    assert arn.endswith(f":key/{key_id}")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"Enabled": True, "SSEType": "AES256"}, INVALID + "SSEType AES256 is not supported"),
        (
            {"Enabled": True, "SSEType": "XTS"},
            (
                "1 validation error detected: Value 'XTS' at 'sSESpecification.sSEType' failed "
                "to satisfy constraint: Member must satisfy enum value set: [AES256, KMS]"
            ),
        ),
        (
            {"Enabled": False, "SSEType": "KMS"},
            INVALID + "SSEType can not be specified if Enabled is false",
        ),
        (
            {"Enabled": False, "KMSMasterKeyId": CUSTOMER_KEY},
            INVALID + "KMSMasterKeyId can not be specified if Enabled is false",
        ),
    ],
)
def test_create_table_refuses_an_invalid_sse_specification(
    ddb: Any, spec: dict[str, Any], message: str
) -> None:
    name = "sse-invalid"
    code, text = error_of(lambda: ddb.create_table(**create_args(name, SSESpecification=spec)))
    assert (code, text) == ("ValidationException", message)
    assert name not in ddb.list_tables()["TableNames"]


def test_update_table_switches_between_the_owned_managed_and_customer_keys(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    name = table_factory()
    ddb.update_table(TableName=name, SSESpecification={"Enabled": True})
    managed = ddb.describe_table(TableName=name)["Table"]["SSEDescription"]
    assert managed["Status"] == "ENABLED"
    assert KEY_ARN.match(managed["KMSMasterKeyArn"])
    ddb.update_table(
        TableName=name, SSESpecification={"Enabled": True, "KMSMasterKeyId": CUSTOMER_KEY}
    )
    customer = ddb.describe_table(TableName=name)["Table"]["SSEDescription"]
    assert customer["KMSMasterKeyArn"] == CUSTOMER_KEY
    ddb.update_table(TableName=name, SSESpecification={"Enabled": False})
    assert "SSEDescription" not in ddb.describe_table(TableName=name)["Table"]


def test_update_table_refuses_sse_changes_that_change_nothing_or_come_with_others(
    ddb: Any, table_factory: Callable[..., str]
) -> None:
    plain = table_factory()
    assert error_of(
        lambda: ddb.update_table(TableName=plain, SSESpecification={"Enabled": False})
    ) == ("ValidationException", INVALID + "Table is already encrypted by default")
    encrypted = table_factory(SSESpecification={"Enabled": True})
    assert error_of(
        lambda: ddb.update_table(TableName=encrypted, SSESpecification={"Enabled": True})
    ) == (
        "ValidationException",
        INVALID + "Table is already encrypted with given KMSMasterKeyId. Use KMSMasterKeyId "
        "parameter if you want to change Master Key",
    )
    assert error_of(
        lambda: ddb.update_table(
            TableName=plain,
            SSESpecification={"Enabled": True},
            DeletionProtectionEnabled=True,
        )
    ) == (
        "ValidationException",
        INVALID + "Server-Side Encryption modification must be the only operation in the request",
    )
