"""Bank transfers across partitions on a real 3-node cluster (2 partitions) while nodes are
killed with SIGKILL and restarted: no money is created or lost, and the final lists of
transfer ids (every transfer appends its id to both accounts) form a serializable history
in which every acknowledged transfer is present and no refused one is.

Transfers are TransactWriteItems with a condition, sent to any live router; a transfer whose
answer is lost (its router died) has an unknown outcome and is not retried, so the checker
counts it only if the final lists show it. Audits during the run would need TransactGetItems
across partitions, which the cluster does not serve yet: the invariant and the history are
checked on the final state, read once the cluster has finished every transaction.
KEELDB_BANK_SEED replays a run's choice of transfers, victims and kill moments.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from keeldb.cluster import cli as cluster_cli
from keeldb.cluster import topology
from keeldb.txn.checker import FAIL, INFO, OK, Txn, append, check, read

pytestmark = [pytest.mark.process, pytest.mark.slow]

NODES = 3
PARTITIONS = 2
ACCOUNTS = 6
OPENING_BALANCE = 100
TRANSFER_THREADS = 3
KILL_CYCLES = 2
RUN_BEFORE_KILL_SECONDS = 1.5
DOWN_SECONDS = 1.0
START_SECONDS_MAX = 90.0
REQUEST_SECONDS_MAX = 15.0  # above the router's own request budget
SETTLE_SECONDS_MAX = 60.0  # for the cluster to finish every transaction after the faults
TABLE = "bank"
TARGET = "DynamoDB_20120810."


def call(endpoint: str, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    host, port = endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_SECONDS_MAX)
    try:
        connection.request(
            "POST",
            "/",
            body=json.dumps(body),
            headers={
                "X-Amz-Target": TARGET + operation,
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


def call_ok(
    endpoint: str, operation: str, body: dict[str, Any], *, accept: str | None = None
) -> dict[str, Any]:
    """`call`, resent while the cluster is still settling after its start (5xx, a refused
    connection) for at most START_SECONDS_MAX; `accept` names an error type that counts as
    done (a CreateTable resent after the first one succeeded)."""
    deadline = time.monotonic() + START_SECONDS_MAX
    while True:
        try:
            status, answer = call(endpoint, operation, body)
        except (OSError, http.client.HTTPException):
            status, answer = 0, {}
        if status == 200:
            return answer
        if accept is not None and answer.get("__type", "").endswith(accept):
            return answer
        assert status == 0 or status >= 500, (operation, status, answer)
        assert time.monotonic() < deadline, (operation, status, answer)
        time.sleep(0.2)


class Cluster:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.spec = cluster_cli.build_spec(NODES, 3, "standard", PARTITIONS, "127.0.0.1")
        topology.write_secret(data_dir / "secret")
        topology.save(self.spec, data_dir / topology.CLUSTER_FILE_NAME)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.live: set[int] = set()

    def start(self, node_id: int) -> None:
        self.processes[node_id] = cluster_cli.start_node(self.data_dir, node_id)

    def wait(self, node_ids: list[int] | None = None) -> None:
        cluster_cli.wait_serving(self.spec, node_ids, START_SECONDS_MAX)
        with self.lock:
            self.live |= set(node_ids or [n.node_id for n in self.spec.nodes])

    def kill(self, node_id: int) -> None:
        with self.lock:
            self.live.discard(node_id)
        process = self.processes[node_id]
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def endpoint(self, rng: random.Random) -> str:
        with self.lock:
            choices = sorted(self.live)
        return self.spec.node(rng.choice(choices)).endpoint

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def account(number: int) -> dict[str, Any]:
    return {"pk": {"S": f"a{number}"}}


def transfer_request(source: int, target: int, amount: int, tid: str) -> dict[str, Any]:
    values = {":a": {"N": str(amount)}, ":id": {"L": [{"S": tid}]}}
    return {
        "TransactItems": [
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": account(source),
                    "UpdateExpression": "SET bal = bal - :a, hist = list_append(hist, :id)",
                    "ConditionExpression": "bal >= :a",
                    "ExpressionAttributeValues": values,
                }
            },
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": account(target),
                    "UpdateExpression": "SET bal = bal + :a, hist = list_append(hist, :id)",
                    "ExpressionAttributeValues": values,
                }
            },
        ]
    }


def transfers(
    cluster: Cluster,
    seed: int,
    stop: threading.Event,
    history: list[Txn],
    lock: threading.Lock,
    errors: list[BaseException],
) -> None:
    rng = random.Random(seed)
    try:
        while not stop.is_set():
            source, target = rng.sample(range(ACCOUNTS), 2)
            tid = uuid.UUID(int=rng.getrandbits(128)).hex
            invoke = time.monotonic()
            try:
                status, answer = call(
                    cluster.endpoint(rng),
                    "TransactWriteItems",
                    transfer_request(source, target, rng.randint(1, 40), tid),
                )
            except (OSError, http.client.HTTPException):
                status, answer = 0, {}
            if status == 200:
                outcome = OK
            elif status == 400 and answer.get("__type", "").endswith(
                "TransactionCanceledException"
            ):
                outcome = FAIL
            else:
                outcome = INFO  # the router died or gave up: it may or may not have applied
                time.sleep(0.05)
            ops = (append(f"a{source}", tid), append(f"a{target}", tid))
            with lock:
                history.append(Txn(tid, ops, outcome, invoke, time.monotonic()))
    except BaseException as error:  # noqa: BLE001 - reported by the test thread
        errors.append(error)


def final_state(cluster: Cluster, rng: random.Random) -> tuple[int, list[list[str]]] | None:
    total = 0
    lists = []
    for number in range(ACCOUNTS):
        try:
            status, answer = call(
                cluster.endpoint(rng),
                "GetItem",
                {"TableName": TABLE, "Key": account(number), "ConsistentRead": True},
            )
        except (OSError, http.client.HTTPException):
            return None
        if status != 200:
            return None
        found = answer["Item"]
        total += int(found["bal"]["N"])
        lists.append([e["S"] for e in found["hist"]["L"]])
    return total, lists


def test_transfers_across_partitions_keep_the_total_under_kill_9(tmp_path: Path) -> None:
    seed = int(os.environ.get("KEELDB_BANK_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    cluster = Cluster(tmp_path)
    try:
        for node in cluster.spec.nodes:
            cluster.start(node.node_id)
        cluster.wait()
        endpoint = cluster.endpoint(rng)
        call_ok(
            endpoint,
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
            accept="ResourceInUseException",
        )
        deadline = time.monotonic() + START_SECONDS_MAX
        while (
            call_ok(endpoint, "DescribeTable", {"TableName": TABLE})["Table"]["TableStatus"]
            != "ACTIVE"
        ):
            assert time.monotonic() < deadline, "the table never became ACTIVE"
            time.sleep(0.2)
        for number in range(ACCOUNTS):
            item = {**account(number), "bal": {"N": str(OPENING_BALANCE)}, "hist": {"L": []}}
            call_ok(endpoint, "PutItem", {"TableName": TABLE, "Item": item})

        history: list[Txn] = []
        lock = threading.Lock()
        errors: list[BaseException] = []
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=transfers,
                args=(cluster, rng.getrandbits(32), stop, history, lock, errors),
            )
            for _ in range(TRANSFER_THREADS)
        ]
        for thread in threads:
            thread.start()
        try:
            for _ in range(KILL_CYCLES):
                time.sleep(RUN_BEFORE_KILL_SECONDS)
                victim = rng.choice([n.node_id for n in cluster.spec.nodes])
                cluster.kill(victim)
                time.sleep(DOWN_SECONDS)
                cluster.start(victim)
                cluster.wait([victim])
            time.sleep(RUN_BEFORE_KILL_SECONDS)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=REQUEST_SECONDS_MAX * 2)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == [], f"seed {seed}: {errors[0]!r}"

        # The cluster finishes what its dead routers left (the ledger's stale transactions);
        # until then a transfer may show on one account and not yet on the other.
        expected = ACCOUNTS * OPENING_BALANCE
        deadline = time.monotonic() + SETTLE_SECONDS_MAX
        state = final_state(cluster, rng)
        while state is None or state[0] != expected:
            assert time.monotonic() < deadline, f"seed {seed}: the total stays {state}"
            time.sleep(0.5)
            state = final_state(cluster, rng)
        invoke = time.monotonic()
        _, lists = state
    finally:
        cluster.close()

    committed = [t for t in history if t.status == OK]
    assert len(committed) >= 5, f"seed {seed}: only {len(committed)} transfers committed"
    final = Txn(
        "final", tuple(read(f"a{i}", lists[i]) for i in range(ACCOUNTS)), OK, invoke, invoke
    )
    result = check([*history, final], realtime=True)
    assert result.valid, f"seed {seed}: {result.anomalies[:3]}"
