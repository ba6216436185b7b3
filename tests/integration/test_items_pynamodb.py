"""PynamoDB models against the real server: save, get, update actions, conditional writes and
delete, as an application written for DynamoDB would use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pynamodb.attributes import (
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    NumberSetAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.models import Model


def _model(endpoint: str, table: str) -> Any:
    class Thing(Model):
        class Meta:
            table_name = table
            host = endpoint
            region = "us-east-1"
            aws_access_key_id = "AKIDKEELDBTEST"
            aws_secret_access_key = "keeldb-test-secret"
            max_retry_attempts = 0

        pk = UnicodeAttribute(hash_key=True)
        sk = NumberAttribute(range_key=True)
        name = UnicodeAttribute(null=True)
        count = NumberAttribute(default=0)
        tags = NumberSetAttribute(null=True)
        notes = ListAttribute(null=True)
        extra = MapAttribute(null=True)

    return Thing


@pytest.fixture
def thing(endpoint: str, table_factory: Callable[..., str]) -> Any:
    return _model(endpoint, table_factory(range_key="sk", range_type="N"))


def test_save_and_get_round_trip(thing: Any) -> None:
    thing(pk="a", sk=1, name="first", tags={1, 2}, notes=["x"], extra={"k": "v"}).save()
    got = thing.get("a", 1, consistent_read=True)
    assert (got.name, got.count, got.tags, got.notes) == ("first", 0, {1, 2}, ["x"])
    assert got.extra.as_dict() == {"k": "v"}


def test_update_actions(thing: Any) -> None:
    item = thing(pk="a", sk=2, name="n")
    item.save()
    item.update(actions=[thing.count.add(5), thing.name.set("renamed"), thing.tags.add({7})])
    assert (item.count, item.name, item.tags) == (5, "renamed", {7})
    item.update(actions=[thing.name.remove(), thing.tags.delete({7})])
    fresh = thing.get("a", 2, consistent_read=True)
    assert (fresh.name, fresh.tags, fresh.count) == (None, None, 5)


def test_conditional_writes_fail_with_conditional_check_failed(thing: Any) -> None:
    thing(pk="a", sk=3).save(condition=thing.pk.does_not_exist())
    with pytest.raises(PutError) as put:
        thing(pk="a", sk=3).save(condition=thing.pk.does_not_exist())
    assert put.value.cause_response_code == "ConditionalCheckFailedException"
    item = thing.get("a", 3)
    with pytest.raises(UpdateError) as update:
        item.update(actions=[thing.count.add(1)], condition=thing.count > 10)
    assert update.value.cause_response_code == "ConditionalCheckFailedException"
    with pytest.raises(DeleteError) as delete:
        item.delete(condition=thing.name.exists())
    assert delete.value.cause_response_code == "ConditionalCheckFailedException"
    item.delete(condition=thing.count == 0)
    with pytest.raises(thing.DoesNotExist):
        thing.get("a", 3)
