"""Transactions on a real 3-node cluster: the single node's boto3 transaction tests pass
against a router, and a transaction retried with its ClientRequestToken is applied once,
also when the router that coordinated it was killed with SIGKILL mid-flight (another router
finishes it from the ledger), and when a partition's leader failed over between the first
attempt and the retry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from keeldb.cluster.keyroute import hash_value_partition
from keeldb.cluster.ring import Ring

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 2
ROOT = Path(__file__).resolve().parents[2]
# The single node's boto3 transaction tests that a cluster runs unchanged here; the AWS
# CLI's and PynamoDB's (slower, and the same requests) are run by hand: docs/transactions.md.
SUITE = (
    "test_transact_write_client.py",
    "test_transact_fidelity.py",
    "test_transact_streams.py",
)
SUITE_SECONDS_MAX = 150
TABLE = "tokens"
RETRY_SECONDS_MAX = 60.0  # a retried transaction must be answered within this
KILL_AFTER_SECONDS = 1.5
SENDERS = 3


def _keys(prefix: str) -> list[str]:
    """Four keys of which at least one lies in each partition."""
    ring = Ring.even(PARTITIONS)
    found: dict[int, list[str]] = {}
    number = 0
    while any(len(found.get(p, [])) < 2 for p in range(PARTITIONS)):
        key = f"{prefix}-{number}"
        number += 1
        partition = hash_value_partition(ring, {"S": key}, "S")
        assert partition is not None
        found.setdefault(partition, []).append(key)
    return [k for p in range(PARTITIONS) for k in found[p][:2]]


def _transaction(keys: list[str], token: str) -> dict[str, Any]:
    return {
        "TransactItems": [
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": key}},
                    "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            }
            for key in keys
        ],
        "ClientRequestToken": token,
    }


def _counts(client: Any, keys: list[str]) -> list[int]:
    """Each key's counter, by strongly consistent reads (sent again while a leader that has
    just taken over cannot answer yet)."""
    out = []
    for key in keys:
        deadline = time.monotonic() + RETRY_SECONDS_MAX
        while True:
            try:
                item = client.get_item(TableName=TABLE, Key={"pk": {"S": key}}, ConsistentRead=True)
                break
            except ClientError as error:
                if error.response["Error"]["Code"] != "InternalServerError":
                    raise
            except BotoCoreError:
                pass
            assert time.monotonic() < deadline, f"no strong read of {key} was answered"
            time.sleep(0.3)
        out.append(int(item["Item"]["n"]["N"]) if "Item" in item else 0)
    return out


def _retry_until_answered(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Send a tokened transaction until it is answered: an answer that may hide an unfinished
    first attempt (in progress, an internal error, no answer) is retried."""
    deadline = time.monotonic() + RETRY_SECONDS_MAX
    while True:
        try:
            answer: dict[str, Any] = client.transact_write_items(**request)
            return answer
        except ClientError as error:
            code = error.response["Error"]["Code"]
            reasons = {r["Code"] for r in error.response.get("CancellationReasons", ())}
            # A conflict is retried as DynamoDB advises: here only a leader that has just
            # taken over, refusing timestamps older than its clock, can cause one.
            conflict = code == "TransactionCanceledException" and reasons <= {
                "None",
                "TransactionConflict",
            }
            if code not in ("TransactionInProgressException", "InternalServerError") and not (
                conflict
            ):
                raise
        except BotoCoreError:
            pass
        assert time.monotonic() < deadline, "the retried transaction was never answered"
        time.sleep(0.3)


def _create_table(client: Any) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_a_retry_after_the_coordinating_router_was_killed_applies_once(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(nodes=3, profile="standard", partitions=PARTITIONS)
    victim, survivor = cluster.node_ids[0], cluster.node_ids[1]
    _create_table(cluster.client(survivor))
    sent: list[tuple[list[str], str]] = []
    unanswered: list[tuple[list[str], str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def sender(number: int) -> None:
        client = cluster.client(victim, read_timeout=4)
        for count in range(1000):
            if stop.is_set():
                return
            keys = _keys(f"s{number}-{count}")
            token = f"t{number}-{count}"
            with lock:
                sent.append((keys, token))
            try:
                client.transact_write_items(**_transaction(keys, token))
            except (ClientError, BotoCoreError):
                with lock:
                    unanswered.append((keys, token))
                return

    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(SENDERS)]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AFTER_SECONDS)
    cluster.kill(victim)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert sent, "no transaction was sent before the kill"
    other = cluster.client(survivor)
    # Every transaction is retried with its token through another router: those that
    # committed answer without applying again, the unfinished ones are finished (or
    # cancelled and then run) by the cluster.
    for keys, token in sent:
        assert _retry_until_answered(other, _transaction(keys, token)) is not None
    for keys, _token in sent:
        assert _counts(other, keys) == [1] * len(keys), keys
    print(f"{len(sent)} transactions sent, {len(unanswered)} unanswered at the kill")


def test_the_transaction_suite_passes_and_a_token_outlives_a_leader_failover(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(nodes=3, profile="standard", partitions=PARTITIONS)
    leader = cluster.leader_of("p0")
    router = next(n for n in cluster.node_ids if n != leader)
    # The boto3 transaction tests of the single node, against this cluster's router.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            *(str(ROOT / "tests" / "integration" / name) for name in SUITE),
        ],
        env=dict(os.environ, KEELDB_TEST_ENDPOINT=cluster.endpoint(router)),
        capture_output=True,
        text=True,
        timeout=SUITE_SECONDS_MAX,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", completed.stdout)
    # A transaction with a token, then the leader of a partition it wrote dies: the retry
    # through the same router answers as a retry (read units, nothing written again).
    client = cluster.client(router)
    _create_table(client)
    keys = _keys("failover")
    request = _transaction(keys, "failover-token")
    assert client.transact_write_items(**request)["ResponseMetadata"]["HTTPStatusCode"] == 200
    cluster.kill(leader)
    assert cluster.leader_of("p0") != leader
    again = _retry_until_answered(client, dict(request, ReturnConsumedCapacity="TOTAL"))
    (consumed,) = again["ConsumedCapacity"]
    assert consumed["ReadCapacityUnits"] == 2.0 * len(keys)  # a retry reads, never writes
    assert _counts(client, keys) == [1] * len(keys)
    with pytest.raises(ClientError) as caught:
        client.transact_write_items(**_transaction(keys[1:], "failover-token"))
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert _counts(client, keys) == [1] * len(keys)
