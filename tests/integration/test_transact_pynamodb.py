"""PynamoDB's TransactWrite and TransactGet against the real server, as an application
written for DynamoDB uses them: a transfer that commits, one that is cancelled with its
reasons, and a consistent read of both accounts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactGet, TransactWrite


def _model(endpoint: str, table: str) -> Any:
    class Account(Model):
        class Meta:
            table_name = table
            host = endpoint
            region = "us-east-1"
            aws_access_key_id = "AKIDKEELDBTEST"
            aws_secret_access_key = "keeldb-test-secret"
            max_retry_attempts = 0

        pk = UnicodeAttribute(hash_key=True)
        balance = NumberAttribute(default=0)

    return Account


@pytest.fixture
def account(endpoint: str, table_factory: Callable[..., str]) -> Any:
    return _model(endpoint, table_factory())


def _connection(endpoint: str) -> Connection:
    return Connection(
        host=endpoint,
        region="us-east-1",
        max_retry_attempts=0,
        aws_access_key_id="AKIDKEELDBTEST",
        aws_secret_access_key="keeldb-test-secret",
    )


def test_a_transfer_commits_and_an_overdraft_is_cancelled(endpoint: str, account: Any) -> None:
    account(pk="alice", balance=100).save()
    account(pk="bob", balance=0).save()
    connection = _connection(endpoint)

    def transfer(amount: int) -> None:
        with TransactWrite(connection=connection, client_request_token=None) as txn:
            txn.update(
                account(pk="alice"),
                actions=[account.balance.add(-amount)],
                condition=account.balance >= amount,
            )
            txn.update(account(pk="bob"), actions=[account.balance.add(amount)])

    transfer(60)
    with pytest.raises(TransactWriteError) as caught:
        transfer(60)
    assert caught.value.cause_response_code == "TransactionCanceledException"
    reasons = caught.value.cancellation_reasons
    assert reasons[0] is not None and reasons[0].code == "ConditionalCheckFailed"
    assert reasons[1] is None

    with TransactGet(connection=connection) as get:
        alice = get.get(account, "alice")
        bob = get.get(account, "bob")
    assert (alice.get().balance, bob.get().balance) == (40, 60)
