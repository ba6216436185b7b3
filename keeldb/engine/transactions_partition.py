"""The partition side of a transaction that spans partitions, and the coordinator ledger's
records (docs/transactions.md, "Across partitions").

A coordinator (any router) gives a transaction an id and a timestamp, records it in the
ledger, asks every partition leader it touches to `prepare` its share, then records the
outcome and tells every partition to `commit` or `cancel`. This module is what a partition
and the ledger group do with those requests; the coordinator is
`keeldb.engine.transactions_coordinator`.

It owns:

- `prepare(db, txid, ts, items)`: the partition's share of the TransactItems, checked and
  evaluated exactly as a single-partition transaction's are (on the latest view), plus the
  timestamp checks: an item a prepared transaction holds, or one written or read by a
  transaction with a later timestamp, cancels the share with TransactionConflict. A share
  that passes is one "txn-prepare" redo record holding the after-images; its items are held
  (`item_store.ItemsState.held`) from before the first await until the commit or cancel is
  applied, so no plain write and no other transaction overtakes them;
- `commit(db, txid)` / `cancel(db, txid)`: one "txn-commit" record (the prepared writes as one
  atomic store write, as a "transact" record's) or one "txn-cancel" record (nothing written);
  both are idempotent, so a recovering coordinator may send them again. A cancel of a share
  never prepared here marks it (`cancelled_key`), so a prepare that arrives after its
  cancel is refused rather than holding items no ledger entry will finish;
- `read_share(db, ts, gets)` / `read_at(db, ts, keys)`: a transactional read of several items
  at a timestamp (the partition's share of a TransactGetItems): refused for an item a transaction holds or one
  written by a transaction with a later timestamp, otherwise it raises the items' read
  timestamps;
- the "txn-ledger" record and its applier: one entry per transaction in the coordinator
  ledger group's store (`LEDGER_PREFIX` + id: its timestamp, state, partitions and shares),
  removed when the transaction is done; `ledger_entries` lists them for recovery;
- `recover(db)`: rebuilds the held items and the timestamp floor from the store when a
  partition's database opens (prepared transactions survive restarts in the store);
- `PartitionState.stamp`: the place in timestamp order of what runs in one partition alone
  (plain writes, single-partition transactions), called by the item store and the
  single-partition transaction code (docs/transactions.md, "Plain writes and timestamps").

Timestamps live in memory per item; after a restart every item takes the largest timestamp
any committed transaction had (the floor, stored with each commit), and a member that
begins to lead raises its floor to its clock (the read timestamps its predecessor gave out
are not later), which is safe (it only refuses more) and costs one retry with a new
timestamp.

It never does IO (beyond reading the clock, for a new leader's floor and a cancel's mark)
and never answers a client.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from keeldb.engine.database import Database, redo_kind
from keeldb.engine.item_store import committed_item, items_state
from keeldb.engine.transactions import (
    ACTION_SHAPE_MESSAGE,
    CONFLICT_MESSAGE,
    DUPLICATE_ITEM_MESSAGE,
    IN_PROGRESS_MESSAGE,
    LEDGER_PREFIX,
    MISMATCH_MESSAGE,
    PREPARED_PREFIX,
    TXN_PREFIX,
    Action,
    StagedStore,
    evaluate_action,
    known_token,
    plan_action,
    plan_gets,
    projected,
    read_action,
    share_answer,
    share_meter,
    stage_token,
    staged_writes,
    token_recorded,
    write_entry,
)
from keeldb.model.errors import (
    IdempotentParameterMismatchException,
    TransactionInProgressException,
    ValidationException,
)
from keeldb.model.keys import prefix_end

Body = dict[str, Any]

STATE_KEY = "transactions_partition"  # this module's entry in `Database.state`
FLOOR_KEY = TXN_PREFIX + b"floor"  # the largest timestamp of a committed transaction

# Ledger states of a transaction, in the order a coordinator moves through them.
LEDGER_STARTED = "started"  # prepares sent; the outcome is not decided
LEDGER_COMMITTING = "committing"  # every share prepared: the transaction WILL commit
LEDGER_CANCELLING = "cancelling"  # some share refused or timed out: it will be cancelled
LEDGER_DONE = "done"  # every partition has applied the outcome: the entry is removed
LEDGER_STATES = (LEDGER_STARTED, LEDGER_COMMITTING, LEDGER_CANCELLING, LEDGER_DONE)
# How far a coordinator's clock may run ahead of a partition leader's (timestamps are
# microseconds of the coordinators' clocks): a new leader's floor is its clock plus this.
CLOCK_SKEW_US_MAX = 100_000
# A share cancelled before it was prepared here leaves a mark (`cancelled_key`), so that
# its prepare, if it arrives after all (held back behind a new leader's lease while the
# coordinator gave up on it), is refused instead of holding its items with no ledger entry
# left to finish them. Routers give up on a request after 10 s, so a minute is ample.
CANCELLED_PREFIX = TXN_PREFIX + b"cancelled/"  # + id -> the cancel's time (microseconds)
CANCELLED_TIME_PREFIX = TXN_PREFIX + b"cancelled-time/"  # + time (8 bytes) + id -> b""
CANCELLED_LIFETIME_US = 60_000_000
CANCELLED_PURGE_MAX = 4  # expired marks removed by each cancel that leaves one


@dataclass(slots=True)
class PartitionState:
    # store key -> the latest timestamp of a transaction (or of a single-partition write,
    # `stamp`) that wrote the item here
    write_ts: dict[bytes, int] = field(default_factory=dict)
    # store key -> the latest timestamp of a transaction that read the item here
    read_ts: dict[bytes, int] = field(default_factory=dict)
    # Every item has at least this timestamp: the largest committed one after a restart,
    # the clock when this member began to lead (`_note_leadership`).
    floor: int = 0
    # The ballot this member led at when it last served a transaction step (None: not yet).
    leading_ballot: Any = None
    # Test-only: skip the timestamp checks (a broken variant the checker must catch).
    skip_timestamp_check: bool = False

    def written(self, skey: bytes) -> int:
        return max(self.write_ts.get(skey, 0), self.floor)

    def read(self, skey: bytes) -> int:
        return max(self.read_ts.get(skey, 0), self.floor)

    def stamp(self, writes: Sequence[bytes], reads: Sequence[bytes] = ()) -> None:
        """Give an operation that runs in this partition alone (a plain write, a
        single-partition transaction or TransactGetItems) its place in timestamp order: the
        latest timestamp of what it saw (the transactions that wrote its items and read the
        items it writes). Its writes then count as written at that timestamp and its reads
        as read at it, so a transaction across partitions with an earlier timestamp, which
        the timestamp order puts before this operation, cannot be applied after it on these
        items (docs/transactions.md, "Plain writes and timestamps")."""
        if len(writes) == 1 and not reads:
            # A plain write (the common case, kept cheap): it takes the item's read
            # timestamp when that is the later one.
            (skey,) = writes
            read_ts = self.read_ts.get(skey, 0)
            if read_ts > self.floor and read_ts > self.write_ts.get(skey, 0):
                self.write_ts[skey] = read_ts
            return
        ts = max(
            max((self.written(k) for k in (*writes, *reads)), default=0),
            max((self.read(k) for k in writes), default=0),
        )
        if ts <= self.floor:
            return  # nothing here is later than the floor: nothing to remember
        for skey in writes:
            if ts > self.write_ts.get(skey, 0):
                self.write_ts[skey] = ts
        for skey in reads:
            if ts > self.read_ts.get(skey, 0):
                self.read_ts[skey] = ts


def partition_state(db: Database) -> PartitionState:
    state = db.state.get(STATE_KEY)
    if state is None:
        state = db.state[STATE_KEY] = PartitionState()
    assert isinstance(state, PartitionState)
    return state


def prepared_key(txid: str) -> bytes:
    return PREPARED_PREFIX + txid.encode("utf-8")


def ledger_key(txid: str) -> bytes:
    return LEDGER_PREFIX + txid.encode("utf-8")


def cancelled_key(txid: str) -> bytes:
    return CANCELLED_PREFIX + txid.encode("utf-8")


def cancelled_time_key(time_us: int, txid: str) -> bytes:
    return CANCELLED_TIME_PREFIX + time_us.to_bytes(8, "big") + txid.encode("utf-8")


def _cancelled_before(db: Database, txid: str, ts: int) -> bool:
    """Whether a share of `txid` at timestamp `ts` was cancelled here before it was
    prepared: the cancel came after the transaction began (a retry with the same id and a
    later timestamp is a new attempt, and is not refused). A prepare can only come late
    when its call timed out or its connection broke, so the cancel's clock is later than
    the transaction's timestamp by at least that wait, far more than clocks disagree."""
    data = db.store.get(cancelled_key(txid))
    return data is not None and ts <= int(msgpack.unpackb(data))


def recover(db: Database) -> None:
    """Rebuild the held items and the timestamp floor from the store (call once, when the
    partition's database has replayed its log and before it serves)."""
    held = items_state(db).held
    for key, data in db.store.scan(PREPARED_PREFIX, prefix_end(PREPARED_PREFIX)):
        record = msgpack.unpackb(data, raw=False)
        txid = key[len(PREPARED_PREFIX) :].decode("utf-8")
        for skey in _held_keys(record):
            held[skey] = txid
    floor = db.store.get(FLOOR_KEY)
    if floor is not None:
        partition_state(db).floor = int(msgpack.unpackb(floor))


def _held_keys(record: dict[str, Any]) -> list[bytes]:
    return [w["key"] for w in record["writes"]] + list(record["checks"])


# --- Prepare --------------------------------------------------------------------------------


def _too_late(state: PartitionState, skey: bytes, ts: int, *, writes: bool) -> bool:
    """Whether a transaction at `ts` comes too late for an item: a transaction with a later
    (or equal) timestamp already wrote it, or (for a write) already read it."""
    if state.skip_timestamp_check:
        return False
    if state.written(skey) >= ts:
        return True
    return writes and state.read(skey) > ts


def _note_leadership(db: Database, state: PartitionState) -> None:
    """Read timestamps (and the stamps of single-partition writes) live only in the memory
    of the leader that granted them. A member that begins to lead cannot know them, but it
    knows they are not later than the clock (give or take `CLOCK_SKEW_US_MAX`): so its floor
    rises to that, and a transaction with an earlier timestamp conflicts and is retried with
    a new one. Only a replicated log that has leaders (the cluster's) needs this: a log
    without them never hands its timestamps over."""
    ballot = _leading_ballot(db)
    if ballot is None or ballot == state.leading_ballot:
        return
    state.leading_ballot = ballot
    state.floor = max(state.floor, time.time_ns() // 1000 + CLOCK_SKEW_US_MAX)
    for stamps in (state.write_ts, state.read_ts):
        for skey in [k for k, v in stamps.items() if v <= state.floor]:
            del stamps[skey]


def _leading_ballot(db: Database) -> Any:
    """The ballot this member leads its group at, or None (not leading, or a log without
    ballots)."""
    log = db.log
    if not getattr(log, "is_leader", False):
        return None
    replica = getattr(log, "replica", None)
    return getattr(replica, "ballot", None)


async def prepare(db: Database, txid: str, ts: int, items: list[Body]) -> list[Body | None]:
    """Prepare this partition's share of a transaction: `items` are TransactItems entries
    (the coordinator checked the request as a whole). Returns one cancellation reason per
    item (None: fine); the share is prepared iff every one is None.

    Raises the request's own errors (ValidationException, ResourceNotFoundException) as a
    single-partition transaction does; the coordinator forwards them to the client."""
    held = items_state(db).held
    if txid in held.values():
        return [None] * len(items)  # Sent again by a recovering coordinator: prepared already.
    tables: dict[str, Any] = {}
    actions: list[Action] = []
    for raw in items:
        entry = read_action(raw)
        if len(entry) != 1:
            raise ValidationException(ACTION_SHAPE_MESSAGE)
        ((kind, spec),) = entry.items()
        actions.append(plan_action(db, kind, spec, tables))
    # Two actions on one item always fall in one partition's share: refused here, as on one
    # partition (before anything is held).
    if len({(a.table.table_id, a.skey) for a in actions}) != len(actions):
        raise ValidationException(DUPLICATE_ITEM_MESSAGE)
    state = partition_state(db)
    _note_leadership(db, state)
    conflict: Body = {"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE}
    if _cancelled_before(db, txid, ts):
        return [dict(conflict) for _ in actions]
    reasons: list[Body | None] = []
    for action in actions:
        writes = action.kind != "ConditionCheck"
        if action.skey in held or _too_late(state, action.skey, ts, writes=writes):
            reasons.append({"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE})
            continue
        reasons.append(evaluate_action(db, action, on_committed=False))
    if any(reason is not None for reason in reasons):
        return reasons
    record: dict[str, Any] = {
        "kind": "txn-prepare",
        "txid": txid,
        "ts": ts,
        "writes": [write_entry(a) for a in actions if a.kind != "ConditionCheck"],
        "checks": [a.skey for a in actions if a.kind == "ConditionCheck"],
    }
    # The items are held from now: no plain write evaluated after this point overtakes them.
    keys = _held_keys(record)
    for skey in keys:
        held[skey] = txid
    try:
        await db.propose(record)
    except Exception:
        for skey in keys:
            if held.get(skey) == txid:
                del held[skey]
        raise
    if db.store.get(prepared_key(txid)) is None:
        # Its cancel was proposed first (`apply_prepare` refused it), or a recovering
        # coordinator finished the transaction already: it is not prepared here.
        _release(db, txid)
        return [dict(conflict) for _ in actions]
    return reasons


@redo_kind("txn-prepare")
def apply_prepare(db: Database, lsn: int, record: dict[str, Any]) -> None:
    held = items_state(db).held
    txid = record["txid"]
    if lsn <= db.store.applied_lsn():
        # Replayed at recovery: held if the store still has it prepared (a later commit or
        # cancel, replayed too, would release it anyway; a refused one never was prepared).
        data = db.store.get(prepared_key(txid))
        if data is not None and msgpack.unpackb(data, raw=False)["ts"] == record["ts"]:
            for skey in _held_keys(record):
                held[skey] = txid
        return
    if _cancelled_before(db, txid, record["ts"]):
        db.store.write([], [], lsn)  # cancelled before it came: it never holds anything
        return
    for skey in _held_keys(record):
        held[skey] = txid  # on replicas as on the proposer
    kept = {k: v for k, v in record.items() if k != "kind"}
    db.store.write([(prepared_key(txid), msgpack.packb(kept, use_bin_type=True))], [], lsn)


# --- Commit and cancel ----------------------------------------------------------------------


async def commit(db: Database, txid: str) -> Body | None:
    """Apply a prepared share's writes (nothing if it was finished already). Returns the
    share's capacity and item collection sizes (`transactions.share_answer`) for the
    coordinator's answer; None when the share was finished already."""
    data = db.store.get(prepared_key(txid))
    prepared = None if data is None else msgpack.unpackb(data, raw=False)
    meter = None if prepared is None else share_meter(db, prepared)
    await db.propose({"kind": "txn-commit", "txid": txid})
    return None if prepared is None or meter is None else share_answer(db, prepared, meter)


async def cancel(db: Database, txid: str) -> None:
    """Drop a prepared share (nothing if it was finished already). On a log with leaders
    (the cluster's, whose timestamps are the coordinators' clocks), a share never prepared
    here is marked cancelled at this leader's clock, so its prepare is refused if it comes
    after all."""
    record: dict[str, Any] = {"kind": "txn-cancel", "txid": txid}
    if _leading_ballot(db) is not None:
        record["time_us"] = time.time_ns() // 1000
    await db.propose(record)


def _release(db: Database, txid: str) -> None:
    """The items `txid` held are free (also when its prepare and outcome are both replayed)."""
    held = items_state(db).held
    for skey in [k for k, v in held.items() if v == txid]:
        del held[skey]


@redo_kind("txn-commit")
def apply_commit(db: Database, lsn: int, record: dict[str, Any]) -> None:
    txid = record["txid"]
    data = db.store.get(prepared_key(txid))
    if lsn <= db.store.applied_lsn():
        _release(db, txid)
        return
    if data is None:
        db.store.write([], [], lsn)  # finished already: only the LSN moves
        _release(db, txid)
        return
    prepared = msgpack.unpackb(data, raw=False)
    staged, _, _ = staged_writes(db, prepared["writes"])
    state = partition_state(db)
    ts = prepared["ts"]
    for write in prepared["writes"]:
        state.write_ts[write["key"]] = max(ts, state.written(write["key"]))
    for skey in prepared["checks"]:
        state.read_ts[skey] = max(ts, state.read(skey))
    floor = db.store.get(FLOOR_KEY)
    stored_floor = 0 if floor is None else int(msgpack.unpackb(floor))
    staged.stage([(FLOOR_KEY, msgpack.packb(max(stored_floor, ts)))], [prepared_key(txid)])
    db.store.write(*staged.changes(), applied_lsn=lsn)
    _release(db, txid)


@redo_kind("txn-cancel")
def apply_cancel(db: Database, lsn: int, record: dict[str, Any]) -> None:
    txid = record["txid"]
    _release(db, txid)
    if lsn <= db.store.applied_lsn():
        return
    if db.store.get(prepared_key(txid)) is not None:
        db.store.write([], [prepared_key(txid)], lsn)
        return
    time_us = record.get("time_us")
    if time_us is None:
        db.store.write([], [], lsn)
        return
    db.store.write(*_cancelled_mark(db, txid, int(time_us)), lsn)


def _cancelled_mark(
    db: Database, txid: str, time_us: int
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """The store changes that mark `txid` cancelled at `time_us` and remove up to
    CANCELLED_PURGE_MAX marks older than CANCELLED_LIFETIME_US (by the record's time,
    chosen by its proposer, so every replica removes the same)."""
    deletes: list[bytes] = []
    old = db.store.get(cancelled_key(txid))
    if old is not None:
        deletes.append(cancelled_time_key(int(msgpack.unpackb(old)), txid))
    horizon = CANCELLED_TIME_PREFIX + max(0, time_us - CANCELLED_LIFETIME_US).to_bytes(8, "big")
    for number, (key, _) in enumerate(db.store.scan(CANCELLED_TIME_PREFIX, horizon)):
        if number >= CANCELLED_PURGE_MAX:
            break
        expired = key[len(CANCELLED_TIME_PREFIX) + 8 :].decode("utf-8")
        if key not in deletes:
            deletes.append(key)
        if expired != txid:
            deletes.append(cancelled_key(expired))
    puts = [
        (cancelled_key(txid), msgpack.packb(time_us)),
        (cancelled_time_key(time_us, txid), b""),
    ]
    return puts, deletes


# --- Transactional reads --------------------------------------------------------------------


def read_share(db: Database, ts: int, gets: list[Body]) -> tuple[list[Body | None], list[Body]]:
    """A partition's share of a TransactGetItems across partitions, at timestamp `ts`: one
    cancellation reason per Get (all None: read) and, when read, one Responses entry per Get,
    all from the committed state of one moment (no await here)."""
    planned = plan_gets(db, gets)
    reasons = read_at(db, ts, [skey for _, _, skey, _ in planned])
    if any(reason is not None for reason in reasons):
        return reasons, []
    return reasons, [
        projected(committed_item(db, skey)[0], projection) for _, _, skey, projection in planned
    ]


def read_at(db: Database, ts: int, keys: list[bytes]) -> list[Body | None]:
    """Check a transactional read of `keys` at timestamp `ts`: one cancellation reason per key
    (None: readable). When all are readable, the items' read timestamps rise to `ts`; the
    caller reads the committed items in the same synchronous step."""
    held = items_state(db).held
    state = partition_state(db)
    _note_leadership(db, state)
    reasons: list[Body | None] = []
    for skey in keys:
        if skey in held or _too_late(state, skey, ts, writes=False):
            reasons.append({"Code": "TransactionConflict", "Message": CONFLICT_MESSAGE})
        else:
            reasons.append(None)
    if all(reason is None for reason in reasons):
        for skey in keys:
            state.read_ts[skey] = max(ts, state.read(skey))
    return reasons


# --- The coordinator ledger -----------------------------------------------------------------


def ledger_record(
    txid: str,
    ts: int,
    status: str,
    previous: str | None,
    shares: dict[str, list[Body]],
    time_ms: int,
    *,
    token: str | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """The "txn-ledger" record of one step of a transaction: its id, timestamp, the state it
    moves from (`previous`, None for a new transaction) to (`status`), the TransactItems of
    each partition it touches (so another coordinator can finish it) and when the step was
    recorded (milliseconds since the epoch, chosen by the proposer); with the request's
    ClientRequestToken and digest when it has one (`token_txid`)."""
    assert status in LEDGER_STATES, status
    record: dict[str, Any] = {
        "kind": "txn-ledger",
        "txid": txid,
        "ts": ts,
        "status": status,
        "previous": previous,
        "shares": shares,
        "time_ms": time_ms,
    }
    if token is not None:
        assert digest is not None
        record["token"] = token
        record["digest"] = digest
    return record


def token_txid(token: str) -> str:
    """The transaction id of a request with a ClientRequestToken: one per token, so that a
    retry finds the first attempt's ledger entry (the ledger refuses a second "started")."""
    return "token-" + hashlib.sha256(token.encode("utf-8")).hexdigest()


@redo_kind("txn-ledger")
def apply_ledger(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """A step applies only from the state it names, so that of two coordinators (the first,
    and one recovering a transaction it believes dead) exactly one decides the outcome. A
    transaction with a token that commits leaves the token in the ledger group's store for
    its lifetime, as a single-partition transaction leaves it in its partition's."""
    if lsn <= db.store.applied_lsn():
        return
    key = ledger_key(record["txid"])
    data = db.store.get(key)
    current = None if data is None else msgpack.unpackb(data, raw=False)["status"]
    if current != record["previous"] or (
        current is None
        and record.get("token") is not None
        and token_recorded(db, record["token"], record["time_ms"])
    ):
        # Another coordinator moved it first, or (a token's start) a transaction with this
        # token committed in the last ten minutes: nothing changes.
        db.store.write([], [], lsn)
        return
    if record["status"] == LEDGER_DONE:
        staged = StagedStore(db.store)
        staged.stage([], [key])
        if record.get("token") is not None and current == LEDGER_COMMITTING:
            stage_token(db, staged, record)
        db.store.write(*staged.changes(), applied_lsn=lsn)
        return
    kept = {k: v for k, v in record.items() if k not in ("kind", "previous")}
    db.store.write([(key, msgpack.packb(kept, use_bin_type=True))], [], lsn)


def ledger_token_committed(db: Database, token: str, digest: str, now_ms: int) -> bool:
    """Whether a transaction with this token committed in the last ten minutes (its retry
    answers without doing anything). Raises TransactionInProgressException if it is still
    in the ledger, IdempotentParameterMismatchException if it was made with other actions."""
    data = db.store.get(ledger_key(token_txid(token)))
    if data is not None:
        entry = msgpack.unpackb(data, raw=False)
        if entry.get("digest") != digest:
            raise IdempotentParameterMismatchException(MISMATCH_MESSAGE)
        raise TransactionInProgressException(IN_PROGRESS_MESSAGE)
    return known_token(db, token, digest, now_ms)


def ledger_status(db: Database, txid: str) -> str | None:
    """The state the ledger holds for a transaction (None: unknown, or done)."""
    data = db.store.get(ledger_key(txid))
    if data is None:
        return None
    status: str = msgpack.unpackb(data, raw=False)["status"]
    return status


async def ledger_step(db: Database, record: dict[str, Any]) -> bool:
    """Propose one ledger step; whether it took effect (False: another coordinator moved the
    transaction first)."""
    await db.propose(record)
    status = ledger_status(db, record["txid"])
    if record["status"] == LEDGER_DONE:
        return status is None
    return status == record["status"]


def ledger_entries(db: Database) -> list[dict[str, Any]]:
    """The transactions the ledger holds (not done), oldest id first."""
    return [
        msgpack.unpackb(data, raw=False)
        for _, data in db.store.scan(LEDGER_PREFIX, prefix_end(LEDGER_PREFIX))
    ]
