"""The coordinator of a transaction that spans partitions: stateless, so that any router can
run it, with every decision in the replicated coordinator ledger, so that any other router
can finish a transaction whose coordinator died (docs/transactions.md, "Across partitions").

    ledger: started -> prepare every share (in parallel) -> all prepared?
        yes: ledger: committing -> commit every share -> ledger: done
        no:  ledger: cancelling -> cancel every share -> ledger: done

The outcome is decided by the one ledger step that moves the transaction out of "started"
(`transactions_partition.apply_ledger` applies a step only from the state it names), so a
coordinator that stalls and a recovering one can never decide differently. `recover_stale`
is what a router runs periodically: every ledger entry older than `STALE_TRANSACTION_MS` is
finished (committed if "committing", cancelled otherwise), so no item stays held after a
crash of its coordinator.

The partitions and the ledger are reached through the `Partitions` and `Ledger` protocols;
the cluster router implements them over its transport, and the tests over in-process
databases. This module never does IO itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, Protocol

from keeldb.engine.transactions import IN_PROGRESS_MESSAGE
from keeldb.engine.transactions_partition import (
    LEDGER_CANCELLING,
    LEDGER_COMMITTING,
    LEDGER_DONE,
    LEDGER_STARTED,
    ledger_record,
)
from keeldb.model.errors import TransactionInProgressException

Body = dict[str, Any]

# A ledger entry not done after this long has lost its coordinator: another finishes it.
STALE_TRANSACTION_MS = 5_000
BUGGIFY_COMMIT_EARLY_ENV = "KEELDB_BUGGIFY_COMMIT_EARLY"
# A deliberately broken variant, for the test that proves the bank checks catch it: each
# share is committed as soon as it is prepared, before the coordinator knows whether the
# others prepared, so a transaction refused by one partition is applied by another. Read
# once at import; never set outside such a test.
BUGGIFY_COMMIT_EARLY = os.environ.get(BUGGIFY_COMMIT_EARLY_ENV) == "1"


class Partitions(Protocol):
    """The partition leaders a coordinator talks to (`transactions_partition` on each)."""

    async def prepare(
        self, partition: str, txid: str, ts: int, items: list[Body]
    ) -> list[Body | None]: ...

    async def commit(self, partition: str, txid: str) -> None: ...

    async def cancel(self, partition: str, txid: str) -> None: ...

    async def read(
        self, partition: str, ts: int, gets: list[Body]
    ) -> tuple[list[Body | None], list[Body]]: ...


class Ledger(Protocol):
    """The coordinator ledger group (`transactions_partition.ledger_step` on its leader)."""

    async def step(self, record: dict[str, Any]) -> bool: ...

    async def entries(self) -> list[dict[str, Any]]: ...


async def coordinate(
    ledger: Ledger,
    partitions: Partitions,
    txid: str,
    ts: int,
    shares: dict[str, list[tuple[int, Body]]],
    now_ms: int,
    *,
    token: str | None = None,
    digest: str | None = None,
) -> list[Body | None] | None:
    """Run one transaction: `shares` maps each partition to its (position in the request,
    TransactItems entry) pairs. Returns None if it committed, else the cancellation reasons
    in request order.

    With a ClientRequestToken, `txid` must be `transactions_partition.token_txid(token)` and
    `digest` the request's (`transactions.request_digest`), and the caller asks the ledger
    group first (`ledger_token_committed`) whether a transaction with this token committed
    already; the ledger then refuses a second start of the same token while the first is in
    it (TransactionInProgressException), and keeps the token ten minutes once committed."""
    items = {p: [item for _, item in share] for p, share in shares.items()}
    started = ledger_record(
        txid, ts, LEDGER_STARTED, None, items, now_ms, token=token, digest=digest
    )
    if not await ledger.step(started):
        if token is not None:
            raise TransactionInProgressException(IN_PROGRESS_MESSAGE)
        raise AssertionError(f"transaction id {txid} reused")
    names = list(shares)
    prepare = _prepare_and_commit if BUGGIFY_COMMIT_EARLY else _prepare
    try:
        answers = await asyncio.gather(*(prepare(partitions, p, txid, ts, items[p]) for p in names))
    except Exception:
        await _finish(ledger, partitions, started, LEDGER_STARTED, now_ms, commit=False)
        raise
    count = sum(len(share) for share in shares.values())
    reasons: list[Body | None] = [None] * count
    for partition, answer in zip(names, answers, strict=True):
        for (position, _), reason in zip(shares[partition], answer, strict=True):
            reasons[position] = reason
    prepared = all(reason is None for reason in reasons)
    decided = await _finish(ledger, partitions, started, LEDGER_STARTED, now_ms, commit=prepared)
    if decided is None:
        # Another coordinator took the transaction over (this one was too slow): it can only
        # have cancelled it, since it commits only what a coordinator recorded "committing".
        conflict = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
        return (
            [reason or {"Code": "None"} for reason in reasons]
            if not prepared
            else [conflict] * count
        )
    return None if prepared else reasons


async def _prepare(
    partitions: Partitions, partition: str, txid: str, ts: int, items: list[Body]
) -> list[Body | None]:
    return await partitions.prepare(partition, txid, ts, items)


async def _prepare_and_commit(
    partitions: Partitions, partition: str, txid: str, ts: int, items: list[Body]
) -> list[Body | None]:
    """The broken variant (`BUGGIFY_COMMIT_EARLY`): a prepared share commits at once."""
    reasons = await partitions.prepare(partition, txid, ts, items)
    if all(reason is None for reason in reasons):
        await partitions.commit(partition, txid)
    return reasons


async def _finish(
    ledger: Ledger,
    partitions: Partitions,
    entry: dict[str, Any],
    previous: str,
    now_ms: int,
    *,
    commit: bool,
) -> bool | None:
    """Decide (if `previous` is "started") and apply the outcome of the transaction `entry`
    (a ledger record or entry) everywhere; returns whether it committed, or None if another
    coordinator decided it first (and finishes it: the ledger's step then names its
    decision, which this one never wrote)."""
    txid, ts, items = entry["txid"], entry["ts"], entry["shares"]
    extra: dict[str, Any] = {}
    if entry.get("token") is not None:
        extra = {"token": entry["token"], "digest": entry["digest"]}
    status = LEDGER_COMMITTING if commit else LEDGER_CANCELLING
    if previous == LEDGER_STARTED:
        step = ledger_record(txid, ts, status, previous, items, now_ms, **extra)
        if not await ledger.step(step):
            return None
    else:
        status = previous
        commit = previous == LEDGER_COMMITTING
    action = partitions.commit if commit else partitions.cancel
    await asyncio.gather(*(action(p, txid) for p in items))
    await ledger.step(ledger_record(txid, ts, LEDGER_DONE, status, items, now_ms, **extra))
    return commit


async def coordinate_read(
    partitions: Partitions, ts: int, shares: dict[str, list[tuple[int, Body]]]
) -> tuple[list[Body | None] | None, list[Body]]:
    """Run one TransactGetItems across partitions at timestamp `ts` (no ledger: a read
    changes nothing, so a coordinator that dies leaves nothing to finish). Returns (None, the
    Responses in request order) or (the cancellation reasons, []) if some share conflicted."""
    names = list(shares)
    answers = await asyncio.gather(
        *(partitions.read(p, ts, [get for _, get in shares[p]]) for p in names)
    )
    count = sum(len(share) for share in shares.values())
    reasons: list[Body | None] = [None] * count
    responses: list[Body] = [{}] * count
    for partition, (share_reasons, share_items) in zip(names, answers, strict=True):
        for index, (position, _) in enumerate(shares[partition]):
            reasons[position] = share_reasons[index]
            if share_items:
                responses[position] = share_items[index]
    if any(reason is not None for reason in reasons):
        return reasons, []
    return None, responses


async def recover_stale(
    ledger: Ledger, partitions: Partitions, now_ms: int, stale_ms: int = STALE_TRANSACTION_MS
) -> list[str]:
    """Finish every transaction whose coordinator has been silent for `stale_ms`: commit those
    that were decided to commit, cancel the rest. Returns their ids."""
    finished: list[str] = []
    entries: Sequence[dict[str, Any]] = await ledger.entries()
    for entry in entries:
        if now_ms - entry["time_ms"] < stale_ms:
            continue
        await _finish(ledger, partitions, entry, entry["status"], now_ms, commit=False)
        finished.append(entry["txid"])
    return finished
