"""The control plane through boto3's resource API and PynamoDB against a real `keeldb serve`:
what an application's table set-up and tear-down code does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_resource_creates_waits_updates_and_deletes_a_table(ddb_resource: Any) -> None:
    name = unique("res")
    table = ddb_resource.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "user", "KeyType": "HASH"},
            {"AttributeName": "ts", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "user", "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": "owner", "Value": "tests"}],
    )
    try:
        table.wait_until_exists()
        table.reload()
        assert table.table_status == "ACTIVE"
        assert table.key_schema == [
            {"AttributeName": "user", "KeyType": "HASH"},
            {"AttributeName": "ts", "KeyType": "RANGE"},
        ]
        assert table.billing_mode_summary["BillingMode"] == "PAY_PER_REQUEST"
        table.put_item(Item={"user": "ann", "ts": 1, "text": "hello"})
        table.put_item(Item={"user": "ann", "ts": 2, "text": "again"})
        table.reload()
        assert table.item_count == 2
        table.update(DeletionProtectionEnabled=True)
        table.reload()
        assert table.deletion_protection_enabled is True
        with pytest.raises(ClientError) as info:
            table.delete()
        assert info.value.response["Error"]["Code"] == "ValidationException"
        table.update(DeletionProtectionEnabled=False)
    finally:
        table.delete()
    table.wait_until_not_exists()
    assert name not in [t.name for t in ddb_resource.tables.all()]


def test_resource_lists_tables(ddb_resource: Any) -> None:
    made = [unique("all") for _ in range(3)]
    for name in made:
        ddb_resource.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "B"}],
            BillingMode="PAY_PER_REQUEST",
        )
    try:
        listed = [t.name for t in ddb_resource.tables.page_size(1).all()]
        assert set(made) <= set(listed)
        assert listed == sorted(listed)
    finally:
        for name in made:
            ddb_resource.Table(name).delete()


def test_pynamodb_model_creates_uses_and_deletes_its_table(endpoint: str) -> None:
    from pynamodb.attributes import NumberAttribute, UnicodeAttribute
    from pynamodb.models import Model

    name = unique("pynamo")

    class Thing(Model):
        class Meta:
            table_name = name
            region = "us-east-1"
            host = endpoint
            aws_access_key_id = "AKIDKEELDBTEST"
            aws_secret_access_key = "keeldb-test-secret"
            billing_mode = "PAY_PER_REQUEST"

        key = UnicodeAttribute(hash_key=True)
        count = NumberAttribute(default=0)

    assert not Thing.exists()
    Thing.create_table(wait=True)
    try:
        assert Thing.exists()
        Thing(key="a", count=3).save()
        assert Thing.get("a").count == 3
        description = Thing.describe_table()
        assert description["TableName"] == name
        assert description["TableStatus"] == "ACTIVE"
    finally:
        Thing.delete_table()
    assert not Thing.exists()
