"""The router's side of transactions that span partitions: what it checks before it
coordinates, ClientRequestToken idempotency through the coordinator ledger, and the answer it
builds from the partitions' shares (docs/transactions.md, "Across partitions").

It owns:

- `transact_write_across`: a TransactWriteItems whose items lie in several partitions. The
  request is checked as a whole against the router's catalog (tables, keys, expressions, the
  4 MB aggregate size, two actions on one item) before anything is prepared, so the client
  gets the error a single node gives, and no partition is touched by a request that cannot
  run. With a ClientRequestToken the transaction runs under the id the token names
  (`transactions_partition.token_txid`): the metadata group's ledger refuses to start it
  while a transaction with this token is in the ledger or committed in the last ten minutes,
  and the router then asks which: committed (the retry answers without writing), still in
  flight (TransactionInProgressException) or made with other parameters
  (IdempotentParameterMismatchException). The ledger keeps the token once the transaction
  commits, also when another router finishes it. A transaction refused only by timestamp
  order runs again with a new timestamp. Its answer sums the shares' capacity (ConsumedCapacity TOTAL or INDEXES, at
  twice the units of plain writes) and item collection sizes, in request order, as one
  partition's answer has them;
- `transact_get_across`: a TransactGetItems over several partitions, read at one timestamp,
  with ConsumedCapacity (twice the units of strongly consistent reads of the whole items;
  when capacity is asked for, the partitions return whole items and the router projects
  them).

It never touches a store and never decides a transaction's outcome itself: that is the
coordinator's (`keeldb.engine.transactions_coordinator`) and the ledger's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keeldb.cluster.placement import partition_group
from keeldb.engine import transactions, transactions_coordinator
from keeldb.engine.transactions_partition import token_txid
from keeldb.model.capacity import read_units
from keeldb.model.errors import ResourceNotFoundException, TransactionInProgressException
from keeldb.model.values import item_size

if TYPE_CHECKING:
    from keeldb.cluster.router import Router, _RoutedLedger, _RoutedPartitions

Body = dict[str, Any]
Shares = dict[str, list[tuple[int, Body]]]


# A transaction some item refused by timestamp order (the item was written or read at a
# later timestamp, or a partition leader that just took over refuses timestamps older than
# its clock) changed nothing, and a later timestamp is what timestamp ordering needs to let
# it through: the coordinator runs it again with a new timestamp, a few times, pausing a
# little longer each time (a new leader's floor is its clock plus the clock skew bound). The
# client sees the conflicts only when they outlast these attempts. This holds too when
# another item's condition failed: the transaction is cancelled either way, but the reasons
# must say what each item's check found, as a single node says, not that the timestamp came
# too early.
CONFLICT_RETRIES_MAX = 3
CONFLICT_PAUSE_SECONDS = 0.06  # times the attempt number
CONFLICT_RETRY_MARGIN_SECONDS = 2.0  # of the request's budget left, to start another attempt


async def _retry_conflict(reasons: list[Body | None] | None, attempt: int, deadline: float) -> bool:
    """Whether to run a cancelled transaction again (after a pause): some reason is
    TransactionConflict, attempts and budget remain."""
    if reasons is None or attempt >= CONFLICT_RETRIES_MAX:
        return False
    if not any(r is not None and r.get("Code") == "TransactionConflict" for r in reasons):
        return False
    pause = CONFLICT_PAUSE_SECONDS * (attempt + 1)
    loop = asyncio.get_running_loop()
    if deadline - loop.time() < pause + CONFLICT_RETRY_MARGIN_SECONDS:
        return False
    await asyncio.sleep(pause)
    return True


# A partition may learn of a table a little after the router does (the metadata leader
# sends every partition the catalog, and sends it again every 0.5 s until each has it): a
# share refused as ResourceNotFoundException for a table the router's fresh catalog holds
# is sent again after a pause, a few times.
CATALOG_RETRIES_MAX = 4
CATALOG_PAUSE_SECONDS = 0.15  # times the attempt number: 1.5 s in all, three resends


async def _catalog_lags(
    router: Router, attempt: int, deadline: float, recheck: Callable[[], object]
) -> bool:
    """Whether a transaction a partition refused for a missing table should run again: the
    router's catalog, refreshed, still has every table (`recheck` raises otherwise), and
    attempts and budget remain. Pauses before answering yes."""
    if attempt >= CATALOG_RETRIES_MAX:
        return False
    pause = CATALOG_PAUSE_SECONDS * (attempt + 1)
    loop = asyncio.get_running_loop()
    if deadline - loop.time() < pause + CONFLICT_RETRY_MARGIN_SECONDS:
        return False
    await router.refresh(deadline)
    recheck()
    await asyncio.sleep(pause)
    return True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _timestamp() -> int:
    """A transaction's timestamp: microseconds of this router's clock (docs/transactions.md:
    clocks need only be roughly synchronised; a late timestamp conflicts and is retried)."""
    return time.time_ns() // 1000


def _shares(entries: list[Body], partitions: list[int | None]) -> Shares:
    shares: Shares = {}
    for position, (entry, partition) in enumerate(zip(entries, partitions, strict=True)):
        assert partition is not None
        shares.setdefault(partition_group(partition), []).append((position, entry))
    return shares


def _plan(router: Router, actions: list[Body]) -> list[transactions.Action]:
    """Every action checked against the router's catalog in DynamoDB's order
    (`transactions.plan_actions`): the errors a single node raises before it reads
    anything."""
    return transactions.plan_actions(router.cache, actions)


async def transact_write_across(
    router: Router,
    body: Body,
    partitions: list[int | None],
    deadline: float,
    ledger: _RoutedLedger,
    view: _RoutedPartitions,
) -> Body:
    """Coordinate a TransactWriteItems over several partitions (`view` collects the shares'
    commit answers); its answer, or its error."""
    request, actions = transactions.read_transact_write(body)
    assert len(actions) == len(partitions)
    planned = _plan(router, actions)
    shares = _shares(actions, partitions)
    token = request.get("ClientRequestToken")
    digest = transactions.request_digest(body) if token is not None else None
    # A token is not looked up before the transaction starts: the ledger refuses the start
    # of a token that is in it or committed in the last ten minutes, and only then is it
    # asked which (one round trip to the metadata group fewer for every first attempt).
    conflicts = lags = 0
    try:
        while True:
            # A token names its transaction (the ledger refuses a second start of it while
            # the first is in it); without one, every attempt is a new transaction.
            txid = token_txid(token) if token is not None else uuid.uuid4().hex
            try:
                reasons = await transactions_coordinator.coordinate(
                    ledger, view, txid, _timestamp(), shares, _now_ms(), token=token, digest=digest
                )
            except ResourceNotFoundException:
                # Cancelled everywhere by the coordinator before it raised.
                if not await _catalog_lags(router, lags, deadline, lambda: _plan(router, actions)):
                    raise
                lags += 1
                continue
            if not await _retry_conflict(reasons, conflicts, deadline):
                break
            conflicts += 1
    except TransactionInProgressException:
        if token is None:
            raise
        assert digest is not None
        # The ledger refused the start: a transaction with this token is in it (in flight,
        # perhaps with other parameters), or one committed in the last ten minutes.
        if await ledger.token_committed(token, digest, _now_ms()):
            return await _replay_answer(router, request, planned, deadline)
        raise
    if reasons is not None:
        raise transactions.cancelled_error([r or {"Code": "None"} for r in reasons])
    return _write_answer(request, planned, shares, view.answers)


def _write_answer(
    request: Body,
    planned: list[transactions.Action],
    shares: Shares,
    answers: dict[str, Body | None],
) -> Body:
    """The answer of a committed transaction: each share's figures put back at their
    actions' places in the request, then summed per table as one partition sums them."""
    # position in the request -> (write units, index units, collection key, collection GB)
    figures: dict[int, tuple[float, list[Any], Any, float | None]] = {}
    for group, share in shares.items():
        answer = answers.get(group)
        if answer is None:
            continue  # finished by another coordinator: its figures are not known here
        writes = iter(zip(answer["writes"], answer["collections"], strict=True))
        checks = iter(answer["checks"])
        for position, entry in share:
            if "ConditionCheck" in entry:
                figures[position] = (float(next(checks)), [], None, None)
            else:
                (units, indexes, collection), size = next(writes)
                figures[position] = (float(units), indexes, collection, size)
    response: Body = {}
    mode = request.get("ReturnConsumedCapacity", "NONE")
    if mode != "NONE":
        capacities: dict[str, transactions._Capacity] = {}
        for position, action in enumerate(planned):
            capacity = capacities.setdefault(action.spec["TableName"], transactions._Capacity())
            found = figures.get(position)
            if found is None:
                continue
            units, indexes, _, _ = found
            capacity.table_units += units
            for is_global, name, index_units in indexes:
                key = (bool(is_global), str(name))
                capacity.index_units[key] = capacity.index_units.get(key, 0.0) + index_units
        response["ConsumedCapacity"] = transactions._consumed(
            mode, capacities, "WriteCapacityUnits"
        )
    if request.get("ReturnItemCollectionMetrics") == "SIZE":
        metrics: dict[str, list[Body]] = {}
        for position, action in enumerate(planned):
            found = figures.get(position)
            if found is None:
                continue
            _, _, collection, low = found
            if collection is None or low is None:
                continue
            metrics.setdefault(action.spec["TableName"], []).append(
                {
                    "ItemCollectionKey": {action.table.hash_key.name: collection},
                    "SizeEstimateRangeGB": [low, low + 1.0],
                }
            )
        if metrics:
            response["ItemCollectionMetrics"] = metrics
    return response


async def _replay_answer(
    router: Router, request: Body, planned: list[transactions.Action], deadline: float
) -> Body:
    """The answer of a retry whose token committed already: nothing is written; its
    ConsumedCapacity is that of reading the items, as one partition answers a retry
    (twice a strongly consistent read of each item's current size)."""
    mode = request.get("ReturnConsumedCapacity", "NONE")
    if mode == "NONE":
        return {}
    sizes = await asyncio.gather(*(_item_bytes(router, action, deadline) for action in planned))
    capacities: dict[str, transactions._Capacity] = {}
    for action, size in zip(planned, sizes, strict=True):
        capacity = capacities.setdefault(action.spec["TableName"], transactions._Capacity())
        capacity.table_units += read_units(size, consistent=True, transactional=True)
    return {"ConsumedCapacity": transactions._consumed(mode, capacities, "ReadCapacityUnits")}


async def _item_bytes(router: Router, action: transactions.Action, deadline: float) -> int:
    """The size of an item now (0: none), by a strongly consistent read at its leader."""
    from keeldb.cluster import keyroute
    from keeldb.cluster.protocol import MODE_STRONG

    name = action.spec["TableName"]
    body = {"TableName": name, "Key": action.key, "ConsistentRead": True}
    partition = keyroute.item_partition(router.cache, router.ring, "GetItem", body)
    answer = await router._partition_op(
        0 if partition is None else partition,
        "GetItem",
        body,
        MODE_STRONG,
        deadline,
        tables=router._expect(name),
    )
    found = answer.get("Item")
    return 0 if found is None else item_size(found)


async def transact_get_across(
    router: Router,
    body: Body,
    partitions: list[int | None],
    deadline: float,
    view: _RoutedPartitions,
) -> Body:
    """A TransactGetItems over several partitions: every partition reads its share at one
    timestamp (`transactions_coordinator.coordinate_read`). With ReturnConsumedCapacity the
    partitions are asked for whole items, which are metered and projected here."""
    request, gets = transactions._read_transact_get(body)
    assert len(gets) == len(partitions)
    mode = request.get("ReturnConsumedCapacity", "NONE")
    # The request's own errors first, in the order a single node finds them (a duplicate
    # item before a later Get's empty key, say), not whichever partition answers first; a
    # key that does not fit its table is a cancellation reason, left to its partition.
    checked = transactions.plan_gets(router.cache, gets, {})
    planned = checked if mode != "NONE" else None
    sent = gets
    if planned is not None:
        sent = [
            {k: v for k, v in get.items() if k not in ("ProjectionExpression",)} for get in gets
        ]
        for get in sent:
            get.pop("ExpressionAttributeNames", None)
    shares = _shares(sent, partitions)
    conflicts = lags = 0
    while True:
        try:
            reasons, responses = await transactions_coordinator.coordinate_read(
                view, _timestamp(), shares
            )
        except ResourceNotFoundException:
            if not await _catalog_lags(
                router, lags, deadline, lambda: transactions.plan_gets(router.cache, gets)
            ):
                raise
            lags += 1
            continue
        if not await _retry_conflict(reasons, conflicts, deadline):
            break
        conflicts += 1
    if reasons is not None:
        raise transactions.cancelled_error([r or {"Code": "None"} for r in reasons])
    if planned is None:
        return {"Responses": responses}
    capacities: dict[str, transactions._Capacity] = {}
    projected: list[Body] = []
    for (spec, _table, _skey, projection), response in zip(planned, responses, strict=True):
        found = response.get("Item")
        size = 0 if found is None else item_size(found)
        capacity = capacities.setdefault(spec["TableName"], transactions._Capacity())
        capacity.table_units += read_units(size, consistent=True, transactional=True)
        projected.append(transactions.projected(found, projection))
    return {
        "Responses": projected,
        "ConsumedCapacity": transactions._consumed(mode, capacities, "ReadCapacityUnits"),
    }
