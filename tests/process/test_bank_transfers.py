"""Bank transfers as transactions on a real `keeldb serve` process killed with SIGKILL and
restarted: the total balance is the same in every TransactGetItems that reads all accounts
and at the end, and the recorded history (every transfer appends its id to both accounts'
lists; every audit reads all lists) is serializable, in real-time order, by the checker.

A transfer that was in flight at a kill is retried after the restart with the same
ClientRequestToken: it applies at most once whether or not the first attempt committed.
KEELDB_BANK_SEED replays a run's choice of transfers and kill moments.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from keeldb.txn.checker import FAIL, OK, Txn, append, check, read

pytestmark = [pytest.mark.process, pytest.mark.slow]

ACCOUNTS = 8
OPENING_BALANCE = 100
TRANSFER_THREADS = 4
KILL_CYCLES = 3
CYCLE_SECONDS_MIN = 0.4
CYCLE_SECONDS_MAX = 1.2
START_SECONDS_MAX = 30.0
REQUEST_SECONDS_MAX = 20.0
RETRY_SECONDS_MAX = 60.0  # a transfer still unanswered after this long fails the test
TABLE = "bank"
TARGET = "DynamoDB_20120810."


class Server:
    """One `keeldb serve` process on a free port of 127.0.0.1, restartable on its directory."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.up = threading.Event()

    def start(self) -> None:
        assert self.process is None
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "keeldb",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS_MAX
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", seen)
                if match:
                    self.port = int(match.group(1))
                    self.up.set()
                    return
            elif self.process.poll() is not None:
                break
        self.kill()
        raise AssertionError(f"server did not start: {seen!r}")

    def kill(self) -> None:
        self.up.clear()
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=START_SECONDS_MAX)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None


def call(port: int, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection; raises OSError / HTTPException if the server dies."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_SECONDS_MAX)
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


def call_until_answered(
    server: Server, operation: str, body: dict[str, Any], stop_at: float
) -> tuple[int, dict[str, Any]]:
    """Send (and resend, across restarts) until the server answers."""
    while True:
        assert time.monotonic() < stop_at, f"{operation} never answered"
        if not server.up.wait(timeout=1.0):
            continue
        try:
            status, answer = call(server.port, operation, body)
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
            continue
        if status >= 500:
            time.sleep(0.05)
            continue
        return status, answer


def account(number: int) -> dict[str, Any]:
    return {"pk": {"S": f"a{number}"}}


def transfer_request(source: int, target: int, amount: int, tid: str) -> dict[str, Any]:
    values = {":a": {"N": str(amount)}, ":id": {"L": [{"S": tid}]}}
    return {
        "ClientRequestToken": tid,
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
        ],
    }


AUDIT_REQUEST = {
    "TransactItems": [{"Get": {"TableName": TABLE, "Key": account(i)}} for i in range(ACCOUNTS)]
}


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.history: list[Txn] = []
        self.totals: list[int] = []
        self.errors: list[BaseException] = []

    def add(self, txn: Txn) -> None:
        with self.lock:
            self.history.append(txn)


def audit(server: Server, recorder: Recorder, name: str, stop_at: float) -> None:
    invoke = time.monotonic()
    status, answer = call_until_answered(server, "TransactGetItems", AUDIT_REQUEST, stop_at)
    if status != 200:
        assert answer.get("__type", "").endswith("TransactionCanceledException"), answer
        return
    total = 0
    ops = []
    for number, response in enumerate(answer["Responses"]):
        found = response["Item"]
        total += int(found["bal"]["N"])
        ops.append(read(f"a{number}", [e["S"] for e in found["hist"]["L"]]))
    with recorder.lock:
        recorder.totals.append(total)
    recorder.add(Txn(name, tuple(ops), OK, invoke, time.monotonic()))


def transfers(
    server: Server, recorder: Recorder, seed: int, stop: threading.Event, stop_at: float
) -> None:
    rng = random.Random(seed)
    try:
        while not stop.is_set():
            source, target = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 40)
            tid = uuid.UUID(int=rng.getrandbits(128)).hex
            invoke = time.monotonic()
            body = transfer_request(source, target, amount, tid)
            status, answer = call_until_answered(server, "TransactWriteItems", body, stop_at)
            if status == 200:
                outcome = OK
            else:
                kind = answer.get("__type", "")
                assert kind.endswith("TransactionCanceledException"), answer
                outcome = FAIL
            ops = (append(f"a{source}", tid), append(f"a{target}", tid))
            recorder.add(Txn(tid, ops, outcome, invoke, time.monotonic()))
    except BaseException as error:  # noqa: BLE001 - reported by the test thread
        recorder.errors.append(error)


def auditor(server: Server, recorder: Recorder, stop: threading.Event, stop_at: float) -> None:
    number = 0
    try:
        while not stop.is_set():
            audit(server, recorder, f"audit{number}", stop_at)
            number += 1
    except BaseException as error:  # noqa: BLE001 - reported by the test thread
        recorder.errors.append(error)


def test_the_total_is_invariant_and_the_history_serializable_under_kill_9(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("KEELDB_BANK_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    server = Server(tmp_path / "data", tmp_path / "server.log")
    server.start()
    stop_at = time.monotonic() + RETRY_SECONDS_MAX + KILL_CYCLES * (CYCLE_SECONDS_MAX + 10)
    try:
        status, answer = call(
            server.port,
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        assert status == 200, answer
        for number in range(ACCOUNTS):
            item = {**account(number), "bal": {"N": str(OPENING_BALANCE)}, "hist": {"L": []}}
            status, answer = call(server.port, "PutItem", {"TableName": TABLE, "Item": item})
            assert status == 200, answer

        recorder = Recorder()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=transfers, args=(server, recorder, rng.getrandbits(32), stop, stop_at)
            )
            for _ in range(TRANSFER_THREADS)
        ]
        threads.append(threading.Thread(target=auditor, args=(server, recorder, stop, stop_at)))
        for thread in threads:
            thread.start()
        try:
            for _ in range(KILL_CYCLES):
                time.sleep(rng.uniform(CYCLE_SECONDS_MIN, CYCLE_SECONDS_MAX))
                server.kill()
                server.start()
            time.sleep(CYCLE_SECONDS_MIN)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=RETRY_SECONDS_MAX + 30)
        assert not any(thread.is_alive() for thread in threads)
        assert recorder.errors == [], f"seed {seed}: {recorder.errors[0]!r}"
        audit(server, recorder, "final", stop_at)
    finally:
        server.kill()

    expected = ACCOUNTS * OPENING_BALANCE
    assert recorder.totals, f"seed {seed}: no audit answered"
    assert set(recorder.totals) == {expected}, f"seed {seed}: totals {set(recorder.totals)}"
    committed = [t for t in recorder.history if t.status == OK and not str(t.id).startswith("a")]
    assert len(committed) >= 10, f"seed {seed}: only {len(committed)} transfers committed"
    result = check(recorder.history, realtime=True)
    assert result.valid, f"seed {seed}: {result.anomalies[:3]}"


def test_a_token_survives_kill_9_so_a_retry_applies_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", tmp_path / "server.log")
    server.start()
    try:
        status, answer = call(
            server.port,
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        assert status == 200, answer
        for number in (0, 1):
            item = {**account(number), "bal": {"N": "10"}, "hist": {"L": []}}
            assert call(server.port, "PutItem", {"TableName": TABLE, "Item": item})[0] == 200
        request = transfer_request(0, 1, 10, "once")
        status, answer = call(server.port, "TransactWriteItems", request)
        assert status == 200, answer
        server.kill()  # acknowledged, then the process dies at once
        server.start()
        # The client never saw the answer and retries: the token is known, nothing applies
        # again (without the token the retry would fail its condition, bal >= 10).
        status, answer = call(server.port, "TransactWriteItems", request)
        assert status == 200, answer
        status, answer = call(server.port, "TransactGetItems", AUDIT_REQUEST_OF_TWO)
        assert status == 200, answer
        balances = [int(r["Item"]["bal"]["N"]) for r in answer["Responses"]]
        lists = [[e["S"] for e in r["Item"]["hist"]["L"]] for r in answer["Responses"]]
        assert balances == [0, 20]
        assert lists == [["once"], ["once"]]
        # Another request under the same token is refused.
        status, answer = call(server.port, "TransactWriteItems", transfer_request(1, 0, 5, "once"))
        assert status == 400
        assert answer["__type"].endswith("IdempotentParameterMismatchException")
    finally:
        server.kill()


AUDIT_REQUEST_OF_TWO = {
    "TransactItems": [{"Get": {"TableName": TABLE, "Key": account(i)}} for i in range(2)]
}
