"""Bank transfers across partitions on a real 3-node cluster under faults, audited throughout.

Six accounts spread over two partitions. Transfer threads move money between two accounts
with one TransactWriteItems each (the source's update carries the condition `bal >= :a`,
both updates append the transfer's id to the account's `hist` list), sent to any live
router; a transfer whose outcome is unknown (a 5xx, a lost connection, a router killed
under it) is resent with the same ClientRequestToken until it is answered. Auditor threads
read every account with one TransactGetItems all the while. Meanwhile the cluster suffers,
one after another: kill -9 of the node leading the metadata group (the coordinator ledger),
kill -9 of a router with transfers in flight, kill -9 of a partition leader (each node
restarted), network partitions (the transport's fault switch) that cut off a partition
leader and then the metadata leader for a few seconds before healing, and a partition
leader paused (SIGSTOP) past its lease, then resumed, and a partition leader that loses a
third of its messages.

Checked: every successful audit totals the opening balance; once the faults stop, a plain
UpdateItem of every account succeeds within a bound (no item is left held by a prepared
transaction); the final total is the opening total; and the whole history (transfers as
list appends, audits and the final read as list reads, with their real-time intervals) is
strictly serializable by the checker of `keeldb.txn.checker`: no acknowledged transfer lost,
none applied twice, no refused one visible, no dependency cycle. A last test runs the same
harness against coordinators that commit each share as soon as it is prepared, before
knowing whether the others prepared, and expects the checks to catch it.

KEELDB_BANK_SEED replays a run's choices; KEELDB_BANK_SECONDS lengthens the time the workload
runs between faults (by hand: the default keeps the file within its CI budget).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from keeldb.cluster.keyroute import hash_value_partition
from keeldb.cluster.placement import META_GROUP
from keeldb.cluster.ring import Ring
from keeldb.engine.transactions_coordinator import BUGGIFY_COMMIT_EARLY_ENV
from keeldb.txn.checker import FAIL, INFO, OK, Result, Txn, append, check, read

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 2
ACCOUNTS = 6
OPENING_BALANCE = 100
AMOUNT_MAX = 40
TRANSFER_THREADS = 3
AUDIT_THREADS = 2
# How long the workload runs before, between and after the faults.
RUN_SECONDS = float(os.environ.get("KEELDB_BANK_SECONDS", "1.5"))
DOWN_SECONDS = 1.0  # a killed node stays down this long before its restart
CUT_SECONDS = 2.0  # a partition (or a pause, or losses) lasts longer than a failover (~1.5 s)
DROP_PROBABILITY = 0.3  # of each message to or from a lossy node
REQUEST_SECONDS_MAX = 15.0  # one HTTP request; above the router's own 10 s budget
RETRY_SECONDS_MAX = 60.0  # a transfer resent for this long without an answer stays unknown
RETRY_PAUSE_SECONDS = 0.2
SETUP_SECONDS_MAX = 60.0
UNBLOCK_SECONDS_MAX = 30.0  # after the faults, for a plain write of every account to succeed
PROGRESS_SECONDS_MAX = 30.0  # after the faults, for a few more transfers to commit
PROGRESS_TRANSFERS = 3
IN_FLIGHT_WAIT_SECONDS = 5.0  # for a router with a transfer in flight, to kill it then
BROKEN_REFUSALS = 20  # refused transfers the broken variant's run waits for
BROKEN_SECONDS_MAX = 30.0
TABLE = "bank"
TARGET = "DynamoDB_20120810."


def call(endpoint: str, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection; raises OSError / HTTPException when it is lost."""
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


def error_type(answer: dict[str, Any]) -> str:
    return str(answer.get("__type", "")).rsplit("#", 1)[-1]


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


@dataclass
class Report:
    """What a run recorded: the history for the checker, every audit's total, counts."""

    history: list[Txn] = field(default_factory=list)
    audit_totals: list[int] = field(default_factory=list)
    audits_refused: int = 0
    transfers_resent: int = 0
    errors: list[str] = field(default_factory=list)
    final_total: int | None = None
    result: Result | None = None

    def count(self, status: str, prefix: str = "t") -> int:
        return sum(1 for t in self.history if t.status == status and str(t.id).startswith(prefix))

    def summary(self) -> str:
        return (
            f"transfers: {self.count(OK)} committed, {self.count(FAIL)} cancelled, "
            f"{self.count(INFO)} unknown ({self.transfers_resent} resends); "
            f"audits: {len(self.audit_totals)} read, {self.audits_refused} refused"
        )

    def problems(self) -> list[str]:
        """Every way the run broke the bank's rules (empty: none)."""
        expected = ACCOUNTS * OPENING_BALANCE
        found = list(self.errors)
        wrong = [t for t in self.audit_totals if t != expected]
        if wrong:
            found.append(f"{len(wrong)} audits saw a total other than {expected}: {wrong[:5]}")
        if self.final_total is not None and self.final_total != expected:
            found.append(f"the final total is {self.final_total}, not {expected}")
        if self.result is not None and not self.result.valid:
            first = {}
            for anomaly in self.result.anomalies:
                first.setdefault(anomaly.kind, anomaly)
            found.append(f"the checker found {sorted(first)}: {list(first.values())}")
        return found


class Bank:
    """The workload against one cluster: transfer and audit threads over the live routers."""

    def __init__(self, cluster: Any, seed: int) -> None:
        self.cluster = cluster
        self.seed = seed
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.live: set[int] = set(cluster.node_ids)
        # Transfers each router is coordinating now (sent, not answered).
        self.in_flight: dict[int, int] = dict.fromkeys(cluster.node_ids, 0)
        self.report = Report()
        self.stop = threading.Event()

    # --- routers -------------------------------------------------------------------------

    def pick(self, rng: random.Random) -> int:
        with self.lock:
            return rng.choice(sorted(self.live))

    def send(self, node: int, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        counted = operation == "TransactWriteItems"
        if counted:
            with self.lock:
                self.in_flight[node] += 1
        try:
            return call(self.cluster.endpoint(node), operation, body)
        finally:
            if counted:
                with self.lock:
                    self.in_flight[node] -= 1

    def kill(self, node: int) -> None:
        with self.lock:
            self.live.discard(node)
        self.cluster.kill(node)

    def restart(self, node: int) -> None:
        self.cluster.restart(node)
        self.cluster.wait_serving([node])
        with self.lock:
            self.live.add(node)

    def progress(self, transfers: int) -> bool:
        """Wait (at most PROGRESS_SECONDS_MAX) until `transfers` more transfers commit: the
        cluster serves again once the faults are over."""
        target = self.report.count(OK) + transfers
        deadline = time.monotonic() + PROGRESS_SECONDS_MAX
        while time.monotonic() < deadline:
            if self.report.count(OK) >= target:
                return True
            time.sleep(0.05)
        self.fail(f"fewer than {transfers} transfers committed in {PROGRESS_SECONDS_MAX} s")
        return False

    def busy_router(self, rng: random.Random) -> int:
        """A live node with a transfer in flight through it (any live one after a while)."""
        deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
        while time.monotonic() < deadline:
            with self.lock:
                busy = sorted(n for n in self.live if self.in_flight[n] > 0)
            if busy:
                return rng.choice(busy)
            time.sleep(0.01)
        return self.pick(rng)

    # --- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        ring = Ring.even(PARTITIONS)
        spread = {hash_value_partition(ring, account(i)["pk"], "S") for i in range(ACCOUNTS)}
        assert spread == set(range(PARTITIONS)), spread
        self.until_ok(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
            accept="ResourceInUseException",
        )
        deadline = time.monotonic() + SETUP_SECONDS_MAX
        while self.until_ok("DescribeTable", {"TableName": TABLE})["Table"]["TableStatus"] != (
            "ACTIVE"
        ):
            assert time.monotonic() < deadline, "the table never became ACTIVE"
            time.sleep(0.2)
        for number in range(ACCOUNTS):
            item = {**account(number), "bal": {"N": str(OPENING_BALANCE)}, "hist": {"L": []}}
            self.until_ok("PutItem", {"TableName": TABLE, "Item": item})

    def until_ok(
        self, operation: str, body: dict[str, Any], *, accept: str | None = None
    ) -> dict[str, Any]:
        """Resent while the cluster settles (5xx, refused connections, TransactionConflict)."""
        deadline = time.monotonic() + SETUP_SECONDS_MAX
        while True:
            try:
                status, answer = self.send(self.pick(self.rng), operation, body)
            except (OSError, http.client.HTTPException):
                status, answer = 0, {}
            if status == 200 or (accept is not None and error_type(answer) == accept):
                return answer
            settling = (
                status == 0
                or status >= 500
                or error_type(answer)
                in (
                    "TransactionConflictException",
                    "TransactionCanceledException",
                )
            )
            assert settling, (operation, status, answer)
            assert time.monotonic() < deadline, (operation, status, answer)
            time.sleep(RETRY_PAUSE_SECONDS)

    # --- the workload --------------------------------------------------------------------

    def record(self, txn: Txn) -> None:
        with self.lock:
            self.report.history.append(txn)

    def fail(self, message: str) -> None:
        with self.lock:
            self.report.errors.append(f"{message}; cluster: {self.groups()}")

    def groups(self) -> dict[str, Any]:
        """Each live node's view of its groups (leader, lease, applied position, lag)."""
        views: dict[str, Any] = {}
        for node in sorted(self.live):
            try:
                view = self.cluster.status(node)["views"][str(node)]
            except (OSError, KeyError, ValueError) as error:
                views[str(node)] = repr(error)
                continue
            views[str(node)] = (
                {
                    g: (v.get("leader"), v.get("lease"), v.get("applied_lsn"), v.get("lag"))
                    for g, v in view.get("groups", {}).items()
                }
                if isinstance(view, dict)
                else view
            )
        return views

    def transfers(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            source, target = rng.sample(range(ACCOUNTS), 2)
            tid = "t" + rng.getrandbits(128).to_bytes(16, "big").hex()[:30]
            request = transfer_request(source, target, rng.randint(1, AMOUNT_MAX), tid)
            ops = (append(f"a{source}", tid), append(f"a{target}", tid))
            invoke = time.monotonic()
            outcome = self.transfer(rng, request)
            self.record(Txn(tid, ops, outcome, invoke, time.monotonic()))

    def transfer(self, rng: random.Random, request: dict[str, Any]) -> str:
        """Send one transfer until its outcome is known (resending with its token)."""
        deadline = time.monotonic() + RETRY_SECONDS_MAX
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            if attempts > 1:
                with self.lock:
                    self.report.transfers_resent += 1
            try:
                status, answer = self.send(self.pick(rng), "TransactWriteItems", request)
            except (OSError, http.client.HTTPException):
                status, answer = 0, {}
            kind = error_type(answer)
            if status == 200:
                return OK
            if status == 400 and kind == "TransactionCanceledException":
                return FAIL
            if status == 400 and kind != "TransactionInProgressException":
                self.fail(f"transfer {request['ClientRequestToken']}: {status} {answer}")
                return INFO
            time.sleep(RETRY_PAUSE_SECONDS)  # unknown, or the first attempt still runs
        return INFO

    def audits(self, seed: int) -> None:
        rng = random.Random(seed)
        number = 0
        while not self.stop.is_set():
            number += 1
            invoke = time.monotonic()
            try:
                status, answer = self.send(self.pick(rng), "TransactGetItems", AUDIT_REQUEST)
            except (OSError, http.client.HTTPException):
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            if status != 200:
                if status == 400 and error_type(answer) != "TransactionCanceledException":
                    self.fail(f"audit: {status} {answer}")
                with self.lock:
                    self.report.audits_refused += 1
                time.sleep(RETRY_PAUSE_SECONDS if status >= 500 else 0.02)
                continue
            total, ops = self.read_all(answer)
            with self.lock:
                self.report.audit_totals.append(total)
            self.record(Txn(f"audit-{seed}-{number}", ops, OK, invoke, time.monotonic()))

    @staticmethod
    def read_all(answer: dict[str, Any]) -> tuple[int, tuple[Any, ...]]:
        responses = answer["Responses"]
        assert len(responses) == ACCOUNTS, answer
        total = 0
        ops = []
        for number, response in enumerate(responses):
            item = response["Item"]
            total += int(item["bal"]["N"])
            ops.append(read(f"a{number}", [e["S"] for e in item["hist"]["L"]]))
        return total, tuple(ops)

    def run(self, faults: Callable[[Bank], None]) -> Report:
        """Run the workload while `faults` runs in this thread; then wait for every item to
        be writable again, read the final state and check everything."""
        threads = [
            threading.Thread(target=self.transfers, args=(self.rng.getrandbits(32),))
            for _ in range(TRANSFER_THREADS)
        ] + [
            threading.Thread(target=self.audits, args=(self.rng.getrandbits(32),))
            for _ in range(AUDIT_THREADS)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(RUN_SECONDS)
            faults(self)
            time.sleep(RUN_SECONDS)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=RETRY_SECONDS_MAX + REQUEST_SECONDS_MAX)
        assert not any(thread.is_alive() for thread in threads)
        self.unblock()
        self.finish()
        return self.report

    def unblock(self) -> None:
        """A plain UpdateItem of every account succeeds within UNBLOCK_SECONDS_MAX: no item
        stays held by a transaction its coordinator left behind."""
        deadline = time.monotonic() + UNBLOCK_SECONDS_MAX
        for number in range(ACCOUNTS):
            body = {
                "TableName": TABLE,
                "Key": account(number),
                "UpdateExpression": "SET touched = :t",
                "ExpressionAttributeValues": {":t": {"N": str(number)}},
            }
            while True:
                try:
                    status, answer = self.send(self.pick(self.rng), "UpdateItem", body)
                except (OSError, http.client.HTTPException):
                    status, answer = 0, {}
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    self.fail(f"account a{number} is still blocked: {status} {answer}")
                    return
                time.sleep(RETRY_PAUSE_SECONDS)

    def finish(self) -> None:
        deadline = time.monotonic() + UNBLOCK_SECONDS_MAX
        while True:
            invoke = time.monotonic()
            try:
                status, answer = self.send(self.pick(self.rng), "TransactGetItems", AUDIT_REQUEST)
            except (OSError, http.client.HTTPException):
                status, answer = 0, {}
            if status == 200:
                break
            if time.monotonic() > deadline:
                self.fail(f"the final read never succeeded: {status} {answer}")
                return
            time.sleep(RETRY_PAUSE_SECONDS)
        total, ops = self.read_all(answer)
        self.report.final_total = total
        self.record(Txn("final", ops, OK, invoke, time.monotonic()))
        self.report.result = check(self.report.history, realtime=True)


def seed_of() -> int:
    return int(os.environ.get("KEELDB_BANK_SEED", random.randrange(2**32)))


def start(cluster_factory: Any, env: dict[str, str] | None = None) -> tuple[Bank, int]:
    seed = seed_of()
    cluster = cluster_factory(nodes=3, profile="standard", partitions=PARTITIONS, env=env)
    bank = Bank(cluster, seed)
    bank.setup()
    return bank, seed


def isolate(bank: Bank, victim: int) -> None:
    """Cut `victim` off from both other nodes for CUT_SECONDS, then heal."""
    others = [f"node{n}" for n in bank.cluster.node_ids if n != victim]
    bank.cluster.fault(victim, {"op": "partition", "groups": [[f"node{victim}"], others]})
    try:
        time.sleep(CUT_SECONDS)
    finally:
        bank.cluster.fault(victim, {"op": "heal"})


def test_transfers_keep_the_total_when_ledger_routers_and_partition_leaders_are_killed(
    cluster_factory: Any,
) -> None:
    bank, seed = start(cluster_factory)
    cluster = bank.cluster

    def faults(bank: Bank) -> None:
        # The node leading the metadata group (the coordinator ledger).
        victim = cluster.leader_of(META_GROUP)
        bank.kill(victim)
        time.sleep(DOWN_SECONDS)
        bank.restart(victim)
        time.sleep(RUN_SECONDS)
        # A router with a transfer in flight: its coordinator dies mid-transaction.
        victim = bank.busy_router(bank.rng)
        bank.kill(victim)
        time.sleep(DOWN_SECONDS)
        bank.restart(victim)
        time.sleep(RUN_SECONDS)
        # A partition leader.
        victim = cluster.leader_of(f"p{bank.rng.randrange(PARTITIONS)}")
        bank.kill(victim)
        time.sleep(DOWN_SECONDS)
        bank.restart(victim)
        bank.progress(PROGRESS_TRANSFERS)

    report = bank.run(faults)
    print(f"seed {seed}: {report.summary()}")
    assert report.problems() == [], f"seed {seed}: {report.summary()}"
    assert report.count(OK) >= PROGRESS_TRANSFERS, f"seed {seed}: {report.summary()}"
    assert len(report.audit_totals) >= 5, f"seed {seed}: {report.summary()}"


def test_transfers_keep_the_total_when_leaders_are_cut_off_paused_or_lossy(
    cluster_factory: Any,
) -> None:
    bank, seed = start(cluster_factory)
    cluster = bank.cluster

    def faults(bank: Bank) -> None:
        isolate(bank, cluster.leader_of(f"p{bank.rng.randrange(PARTITIONS)}"))
        time.sleep(RUN_SECONDS)
        isolate(bank, cluster.leader_of(META_GROUP))
        time.sleep(RUN_SECONDS)
        # A partition leader paused past its lease: the requests it holds (prepares among
        # them) run when it resumes, after the others have moved on.
        victim = cluster.leader_of(f"p{bank.rng.randrange(PARTITIONS)}")
        cluster.signal(victim, signal.SIGSTOP)
        try:
            time.sleep(CUT_SECONDS)
        finally:
            cluster.signal(victim, signal.SIGCONT)
        time.sleep(RUN_SECONDS)
        # A lossy network at a partition leader: calls and their answers lost at random.
        victim = cluster.leader_of(f"p{bank.rng.randrange(PARTITIONS)}")
        cluster.fault(victim, {"op": "drop", "probability": DROP_PROBABILITY})
        try:
            time.sleep(CUT_SECONDS)
        finally:
            cluster.fault(victim, {"op": "heal"})
        bank.progress(PROGRESS_TRANSFERS)

    report = bank.run(faults)
    print(f"seed {seed}: {report.summary()}")
    assert report.problems() == [], f"seed {seed}: {report.summary()}"
    assert report.count(OK) >= PROGRESS_TRANSFERS, f"seed {seed}: {report.summary()}"
    assert len(report.audit_totals) >= 5, f"seed {seed}: {report.summary()}"


def test_the_checks_catch_coordinators_that_commit_a_share_before_all_are_prepared(
    cluster_factory: Any,
) -> None:
    """The same workload, no faults, against coordinators that commit each share as soon as
    it is prepared (`transactions_coordinator.BUGGIFY_COMMIT_EARLY`): a transfer refused by
    one account's partition (its condition fails, or it conflicts) is still applied by the
    other's, so money appears or vanishes and a refused transfer's id is read."""
    bank, seed = start(cluster_factory, env={BUGGIFY_COMMIT_EARLY_ENV: "1"})

    def until_refusals(bank: Bank) -> None:
        # Until a transfer refused by one partition was applied by the other (an audit sees
        # money appear or vanish), or long enough for many to be refused.
        deadline = time.monotonic() + BROKEN_SECONDS_MAX
        while bank.report.count(FAIL) < BROKEN_REFUSALS and time.monotonic() < deadline:
            expected = ACCOUNTS * OPENING_BALANCE
            if bank.report.count(FAIL) and any(t != expected for t in bank.report.audit_totals):
                return
            time.sleep(0.1)

    report = bank.run(until_refusals)
    print(f"seed {seed}: {report.summary()}; caught: {report.problems()}")
    assert report.result is not None
    assert not report.result.valid, f"seed {seed}: the checker missed it: {report.summary()}"
