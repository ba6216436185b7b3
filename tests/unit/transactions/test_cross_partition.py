"""The partition side of transactions across partitions and their coordinator, over three
in-process databases (two partitions and the coordinator ledger group): commit, cancel,
timestamp ordering, plain writes against prepared items, a coordinator that dies at each
step and is finished by another, and prepared transactions surviving a restart."""

from __future__ import annotations

from typing import Any

import pytest

from keeldb.engine import transactions_partition as tp
from keeldb.engine.item_store import items_state
from keeldb.engine.transactions_coordinator import coordinate, coordinate_read, recover_stale
from keeldb.model.errors import (
    IdempotentParameterMismatchException,
    TransactionCanceledException,
    TransactionConflictException,
    TransactionInProgressException,
    ValidationException,
)


def put(pk: str, n: int) -> dict[str, Any]:
    return {"Put": {"TableName": "ttt", "Item": {"pk": {"S": pk}, "n": {"N": str(n)}}}}


def check(pk: str, condition: str) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": "ttt",
            "Key": {"pk": {"S": pk}},
            "ConditionExpression": condition,
        }
    }


class Died(Exception):
    """The coordinator process died at this point."""


class Cluster:
    """Partitions "p1" and "p2" and a ledger group, each its own database."""

    def __init__(self, make_harness: Any) -> None:
        self.parts = {"p1": make_harness(), "p2": make_harness()}
        self.ledger_db = make_harness()
        for part in self.parts.values():
            part.create("ttt")
        self.die_at: str | None = None  # "prepared", "decided": the coordinator dies there
        self.decisions = 0

    # Partitions
    async def prepare(self, partition: str, txid: str, ts: int, items: list[Any]) -> Any:
        return await tp.prepare(self.parts[partition].db, txid, ts, items)

    async def commit(self, partition: str, txid: str) -> None:
        await tp.commit(self.parts[partition].db, txid)

    async def cancel(self, partition: str, txid: str) -> None:
        await tp.cancel(self.parts[partition].db, txid)

    async def read(self, partition: str, ts: int, gets: list[Any]) -> Any:
        return tp.read_share(self.parts[partition].db, ts, gets)

    # Ledger
    async def step(self, record: dict[str, Any]) -> bool:
        if self.die_at == "prepared" and record["status"] != tp.LEDGER_STARTED:
            raise Died
        result = await tp.ledger_step(self.ledger_db.db, record)
        if self.die_at == "decided" and record["status"] == tp.LEDGER_COMMITTING:
            raise Died
        return result

    async def entries(self) -> list[dict[str, Any]]:
        return tp.ledger_entries(self.ledger_db.db)

    def run(self, txid: str, ts: int, shares: dict[str, list[Any]], now_ms: int = 0) -> Any:
        numbered = {}
        position = 0
        for partition, items in shares.items():
            numbered[partition] = []
            for entry in items:
                numbered[partition].append((position, entry))
                position += 1
        return self.ledger_db.run(coordinate(self, self, txid, ts, numbered, now_ms))

    def value(self, partition: str, pk: str) -> Any:
        found = self.parts[partition].get("ttt", pk)
        return None if found is None else int(found["n"]["N"])

    def held(self) -> dict[str, dict[bytes, str]]:
        return {p: dict(items_state(h.db).held) for p, h in self.parts.items()}


@pytest.fixture
def cluster(make_harness: Any) -> Cluster:
    return Cluster(make_harness)


def test_a_transaction_commits_on_every_partition(cluster: Cluster) -> None:
    assert cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 2)]}) is None
    assert cluster.value("p1", "a") == 1
    assert cluster.value("p2", "b") == 2
    assert cluster.held() == {"p1": {}, "p2": {}}
    assert tp.ledger_entries(cluster.ledger_db.db) == []


def test_a_refused_share_cancels_the_others_with_reasons_in_order(cluster: Cluster) -> None:
    reasons = cluster.run(
        "t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 2), check("c", "attribute_exists(pk)")]}
    )
    assert reasons is not None
    assert [r and r["Code"] for r in reasons] == [None, None, "ConditionalCheckFailed"]
    assert cluster.value("p1", "a") is None
    assert cluster.value("p2", "b") is None
    assert cluster.held() == {"p1": {}, "p2": {}}


def test_an_older_timestamp_conflicts_with_a_newer_write(cluster: Cluster) -> None:
    assert cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 1)]}) is None
    reasons = cluster.run("t2", 5, {"p1": [put("a", 2)], "p2": [put("b", 2)]})
    assert reasons is not None
    assert [r and r["Code"] for r in reasons] == ["TransactionConflict", "TransactionConflict"]
    assert cluster.value("p1", "a") == 1


def test_skipping_the_timestamp_check_lets_an_older_transaction_overwrite(
    cluster: Cluster,
) -> None:
    # The deliberately broken variant: the same history now commits out of timestamp order.
    for part in cluster.parts.values():
        tp.partition_state(part.db).skip_timestamp_check = True
    assert cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 1)]}) is None
    assert cluster.run("t2", 5, {"p1": [put("a", 2)], "p2": [put("b", 2)]}) is None
    assert cluster.value("p1", "a") == 2


def test_a_transactional_read_at_an_older_timestamp_conflicts(cluster: Cluster) -> None:
    assert cluster.run("t1", 10, {"p1": [put("a", 1)]}) is None
    part = cluster.parts["p1"]
    skey = _skey(part, "a")
    assert tp.read_at(part.db, 5, [skey])[0]["Code"] == "TransactionConflict"
    assert tp.read_at(part.db, 20, [skey]) == [None]
    # A write older than that read now comes too late.
    reasons = cluster.run("t2", 15, {"p1": [put("a", 3)]})
    assert reasons is not None and reasons[0]["Code"] == "TransactionConflict"


def _skey(harness: Any, pk: str) -> bytes:
    from keeldb.engine import catalog
    from keeldb.engine.item_store import storage_key

    table = catalog.find_table(harness.db, "ttt")
    assert table is not None
    return storage_key(table, {"pk": {"S": pk}})


def test_a_prepared_item_refuses_plain_writes_and_transactions(cluster: Cluster) -> None:
    cluster.die_at = "prepared"
    with pytest.raises(Died):
        cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 2)]})
    part = cluster.parts["p1"]
    with pytest.raises(TransactionConflictException) as caught:
        part.put("ttt", "a", n=7)
    assert caught.value.message == "Transaction is ongoing for the item"
    error = part.error("TransactWriteItems", {"TransactItems": [put("a", 5), put("z", 1)]})
    assert isinstance(error, TransactionCanceledException)
    assert [r["Code"] for r in error.reasons] == ["TransactionConflict", "None"]
    error = part.error(
        "TransactGetItems",
        {"TransactItems": [{"Get": {"TableName": "ttt", "Key": {"pk": {"S": "a"}}}}]},
    )
    assert isinstance(error, TransactionCanceledException)
    # Another coordinator finds the silent transaction and cancels it: nothing stays held.
    cluster.die_at = None
    assert cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=10_000)) == ["t1"]
    assert cluster.held() == {"p1": {}, "p2": {}}
    assert cluster.value("p1", "a") is None
    part.put("ttt", "a", n=7)
    assert cluster.value("p1", "a") == 7


def test_a_transaction_decided_to_commit_is_committed_by_recovery(cluster: Cluster) -> None:
    cluster.die_at = "decided"
    with pytest.raises(Died):
        cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 2)]})
    assert cluster.value("p1", "a") is None
    cluster.die_at = None
    # Not stale yet: left alone.
    assert cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=1_000)) == []
    assert cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=10_000)) == ["t1"]
    assert cluster.value("p1", "a") == 1
    assert cluster.value("p2", "b") == 2
    assert cluster.held() == {"p1": {}, "p2": {}}


def test_a_slow_coordinator_loses_to_recovery_and_commits_nothing(cluster: Cluster) -> None:
    cluster.die_at = "prepared"
    with pytest.raises(Died):
        cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 2)]})
    cluster.die_at = None
    cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=10_000))
    # The first coordinator wakes up and tries to record its decision: the ledger refuses.
    record = tp.ledger_record("t1", 10, tp.LEDGER_COMMITTING, tp.LEDGER_STARTED, {}, 0)
    assert cluster.ledger_db.run(tp.ledger_step(cluster.ledger_db.db, record)) is False
    assert cluster.value("p1", "a") is None


def test_prepared_transactions_survive_a_restart(cluster: Cluster, make_harness: Any) -> None:
    cluster.die_at = "prepared"
    with pytest.raises(Died):
        cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 2)]})
    restarted = make_harness(cluster.parts["p1"].store)
    tp.recover(restarted.db)
    assert set(items_state(restarted.db).held.values()) == {"t1"}
    with pytest.raises(TransactionConflictException):
        restarted.put("ttt", "a", n=7)
    cluster.parts["p1"] = restarted
    cluster.die_at = None
    cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=10_000))
    assert items_state(restarted.db).held == {}
    restarted.put("ttt", "a", n=7)


def test_the_timestamp_floor_survives_a_restart(cluster: Cluster, make_harness: Any) -> None:
    assert cluster.run("t1", 10, {"p1": [put("a", 1)]}) is None
    restarted = make_harness(cluster.parts["p1"].store)
    tp.recover(restarted.db)
    assert tp.partition_state(restarted.db).floor == 10
    cluster.parts["p1"] = restarted
    reasons = cluster.run("t2", 9, {"p1": [put("q", 1)]})
    assert reasons is not None and reasons[0]["Code"] == "TransactionConflict"
    assert cluster.run("t3", 11, {"p1": [put("q", 1)]}) is None


def get(pk: str) -> dict[str, Any]:
    return {"Get": {"TableName": "ttt", "Key": {"pk": {"S": pk}}, "ProjectionExpression": "n"}}


def test_a_read_across_partitions_sees_a_transaction_whole_or_conflicts(
    cluster: Cluster,
) -> None:
    assert cluster.run("t1", 10, {"p1": [put("a", 1)], "p2": [put("b", 1)]}) is None
    shares = {"p1": [(0, get("a")["Get"])], "p2": [(1, get("b")["Get"]), (2, get("c")["Get"])]}
    reasons, responses = cluster.ledger_db.run(coordinate_read(cluster, 20, shares))
    assert reasons is None
    assert responses == [{"Item": {"n": {"N": "1"}}}, {"Item": {"n": {"N": "1"}}}, {}]
    # A transaction prepared on both partitions and not finished: the read conflicts rather
    # than see one side of it.
    cluster.die_at = "prepared"
    with pytest.raises(Died):
        cluster.run("t2", 30, {"p1": [put("a", 2)], "p2": [put("b", 2)]})
    reasons, responses = cluster.ledger_db.run(coordinate_read(cluster, 40, shares))
    assert reasons is not None
    assert [r and r["Code"] for r in reasons] == [
        "TransactionConflict",
        "TransactionConflict",
        None,
    ]
    assert responses == []
    # And a read at a timestamp older than a committed write conflicts too.
    cluster.die_at = None
    cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=10_000))
    reasons, _ = cluster.ledger_db.run(coordinate_read(cluster, 5, shares))
    assert reasons is not None and reasons[0]["Code"] == "TransactionConflict"


def test_two_actions_on_one_item_are_refused_by_its_partition(cluster: Cluster) -> None:
    with pytest.raises(ValidationException) as caught:
        cluster.run("t1", 10, {"p1": [put("a", 1), check("a", "attribute_exists(pk)")]})
    assert caught.value.message == (
        "Transaction request cannot include multiple operations on one item"
    )
    assert cluster.held() == {"p1": {}, "p2": {}}


def run_with_token(cluster: Cluster, token: str, ts: int, shares: dict[str, list[Any]]) -> Any:
    """A coordinator's handling of a request with a ClientRequestToken."""
    from keeldb.engine.transactions import request_digest

    digest = request_digest({"TransactItems": [i for items in shares.values() for i in items]})
    if tp.ledger_token_committed(cluster.ledger_db.db, token, digest, now_ms=0):
        return "replayed"
    numbered = {}
    position = 0
    for partition, items in shares.items():
        numbered[partition] = []
        for entry in items:
            numbered[partition].append((position, entry))
            position += 1
    txid = tp.token_txid(token)
    return cluster.ledger_db.run(
        coordinate(cluster, cluster, txid, ts, numbered, 0, token=token, digest=digest)
    )


def test_a_token_makes_a_transaction_across_partitions_apply_once(cluster: Cluster) -> None:
    shares = {"p1": [put("a", 1)], "p2": [put("b", 2)]}
    assert run_with_token(cluster, "tok", 10, shares) is None
    assert run_with_token(cluster, "tok", 11, shares) == "replayed"
    with pytest.raises(IdempotentParameterMismatchException):
        run_with_token(cluster, "tok", 12, {"p1": [put("a", 5)], "p2": [put("b", 2)]})
    assert (cluster.value("p1", "a"), cluster.value("p2", "b")) == (1, 2)


def test_a_token_in_the_ledger_is_in_progress_and_recovery_remembers_it(
    cluster: Cluster,
) -> None:
    shares = {"p1": [put("a", 1)], "p2": [put("b", 2)]}
    cluster.die_at = "decided"
    with pytest.raises(Died):
        run_with_token(cluster, "tok", 10, shares)
    cluster.die_at = None
    with pytest.raises(TransactionInProgressException):
        run_with_token(cluster, "tok", 11, shares)
    # Another coordinator finishes it (committed, as decided): the token is remembered.
    assert cluster.ledger_db.run(recover_stale(cluster, cluster, now_ms=10_000)) == [
        tp.token_txid("tok")
    ]
    assert run_with_token(cluster, "tok", 12, shares) == "replayed"
    assert (cluster.value("p1", "a"), cluster.value("p2", "b")) == (1, 2)


def test_a_cancelled_transaction_leaves_no_token(cluster: Cluster) -> None:
    shares = {"p1": [put("a", 1)], "p2": [check("zz", "attribute_exists(pk)")]}
    reasons = run_with_token(cluster, "tok", 10, shares)
    assert reasons is not None and reasons[1]["Code"] == "ConditionalCheckFailed"
    cluster.parts["p2"].put("ttt", "zz", n=0)
    assert run_with_token(cluster, "tok", 11, shares) is None  # a new attempt, not a replay
    assert cluster.value("p1", "a") == 1
