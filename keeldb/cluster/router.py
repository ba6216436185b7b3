"""The router: a DynamoDB front end that sends each operation where its data lives.

Owns the `dispatch(operation, body)` a cluster node's HTTP front end calls: item operations
go to the leader of the partition that holds their partition key (eventually consistent
reads to any up-to-date replica, preferring this node's own), catalog operations to the
metadata group's leader, a Query on a partition key to its partition, a Scan walks the
partitions in ring order with single-node paging, Query and Scan of a global secondary index
gather every partition and merge in the index's order, BatchGetItem and BatchWriteItem are
split per partition and merged (a partition that cannot answer leaves its keys unprocessed),
and DescribeTable sums the partitions' counts.

Routers cache the leaders and the catalog. A storage node that is not the leader, or does
not hold the key, or does not know the table the router names, refuses before running
anything; the router then refreshes what it knows and retries, a bounded number of times
within the request's budget. A request it cannot serve in that budget gets a 500
InternalServerError, never a wrong answer. A write whose outcome is unknown (the call timed
out after it was sent) is never retried: the client hears InternalServerError, as DynamoDB
answers when it cannot tell.

It never touches a store: every answer comes from a storage node.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from mypy_extensions import mypyc_attr

from keeldb.cluster import catalog_sync, keyroute
from keeldb.cluster.placement import META_GROUP, GroupPlacement, partition_group
from keeldb.cluster.protocol import (
    CHANNEL_CATALOG,
    CHANNEL_OP,
    CHANNEL_TABLES,
    CHANNEL_TXN,
    ERROR,
    MODE_EVENTUAL,
    MODE_STRONG,
    MODE_WRITE,
    OK,
    REDIRECT,
    STALE_CATALOG,
    UNAVAILABLE,
    WRONG_PARTITION,
    raise_error,
)
from keeldb.cluster.ring import Ring
from keeldb.consensus.types import NodeId
from keeldb.engine import catalog, paging
from keeldb.engine import database as database_module
from keeldb.engine.database import Database
from keeldb.engine.items import SERVING_STATUSES, TABLE_NOT_FOUND_MESSAGE
from keeldb.model.errors import (
    ClientError,
    InternalServerError,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.model.keys import HASH_SPACE
from keeldb.model.limits import PAGE_BYTES_MAX
from keeldb.model.values import item_size
from keeldb.storage.memory import MemoryLog, MemoryStore

log = logging.getLogger("keeldb.cluster.router")

REQUEST_SECONDS_MAX = 10.0  # a request's whole budget, retries included
CALL_SECONDS_MAX = 5.0  # one call to a storage node
# Calls per request to one group (redirects, failovers). While no node knows a leader (an
# election, longer on a loaded machine), the pause before the next call doubles from
# RETRY_PAUSE_SECONDS up to RETRY_PAUSE_SECONDS_MAX: so the calls span most of the request's
# budget (about 9 s) instead of giving up within a second, and an idle router asks a
# leaderless group only a few times a second.
ATTEMPTS_MAX = 24
RETRY_PAUSE_SECONDS = 0.05
RETRY_PAUSE_SECONDS_MAX = 0.5
# Catalog refreshes per request after "wrong partition" / "stale catalog", with the same
# growing pauses: a partition that does not know a table the metadata group has (its catalog
# sync waits for its new leader) is asked again until the sync reaches it, within the budget.
REROUTES_MAX = 16
INTERNAL_MESSAGE = "Internal server error"
BUGGIFY_STALE_READS_ENV = "KEELDB_BUGGIFY_STALE_READS"
# A deliberately broken variant, for the tests that prove the fault tests' checks catch
# stale reads: strongly consistent reads served like eventual ones by the router's own
# replica. Read once at import; never set outside such a test.
BUGGIFY_STALE_READS = os.environ.get(BUGGIFY_STALE_READS_ENV) == "1"
# A deliberately broken variant, for the test that proves its check catches reads from log
# replicas: this router takes its own replica for readable even where it is a log replica,
# and the storage service serves eventually consistent reads from it (`storage`). Read once
# at import; never set outside that test.
BUGGIFY_LOG_REPLICA_READS_ENV = "KEELDB_BUGGIFY_LOG_REPLICA_READS"
BUGGIFY_LOG_REPLICA_READS = os.environ.get(BUGGIFY_LOG_REPLICA_READS_ENV) == "1"
BATCH_GET_KEYS_MAX = 100  # DynamoDB's BatchGetItem limit (its database says so exactly)
BATCH_WRITE_REQUESTS_MAX = 25  # DynamoDB's BatchWriteItem limit

CATALOG_READS = ("ListTables", "DescribeTimeToLive", "ListTagsOfResource", "DescribeLimits")
CATALOG_WRITES = (
    "CreateTable",
    "UpdateTable",
    "DeleteTable",
    "UpdateTimeToLive",
    "TagResource",
    "UntagResource",
)
ITEM_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
# Operations made of other operations (PartiQL statements become item requests, queries and
# scans): their engine handler runs here, against the cached catalog, and each request it
# makes is routed like a client's.
COMPOSITE = ("ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction")
UNSUPPORTED: tuple[str, ...] = ()

Call = Callable[[int, str, Any, float], Awaitable[Any]]
# This node's own storage service, called without the transport: (sender, "kv.op" payload,
# check the keys' partition) -> answer (`StorageService.serve_op`).
LocalOp = Callable[[str, dict[str, Any], bool], Awaitable[list[Any]]]


class LocalStorage(Protocol):
    """What the router uses of its node's `StorageService` (`Router.attach_local`)."""

    def serve_op(
        self, sender: str, payload: dict[str, Any], check: bool, *, local: bool
    ) -> Awaitable[list[Any]]: ...

    def admit(self, sender: str, payload: dict[str, Any], check: bool) -> Any: ...

    def refusal(self, replica: Any, op: str, error: Exception) -> list[Any]: ...


_ITEM_OPERATIONS = frozenset(keyroute.ITEM_OPERATIONS)
_ITEM_WRITES = frozenset(ITEM_WRITES)


class _Unsent(Exception):
    """A call that surely did not reach its node (it was not connected): safe to retry."""


class Reroute(Exception):
    """The partition refused the request as not its own, or does not know the table: the
    catalog is refreshed and the request routed again."""


class Router:
    def __init__(
        self,
        node_id: int,
        ring: Ring,
        placements: dict[str, GroupPlacement],
        call: Call,
        *,
        is_connected: Callable[[int], bool],
        region: str,
        endpoint_address: str,
        follower_reads: bool = True,
    ) -> None:
        self.node_id = node_id
        self.ring = ring
        self.placements = placements
        self._call = call
        self._is_connected = is_connected
        self.endpoint_address = endpoint_address
        # Whether eventually consistent reads prefer this node's own replica, as DynamoDB's
        # may be served by any of a partition's copies: no network hop, and the leader's
        # work is left to writes. The replica answers only while it is up to date enough
        # (`StorageService.may_read_eventually`: within 64 entries of the commit point it
        # knows, heard from its group within a second) and otherwise sends the router on
        # to the leader. Off, the leader serves them when it can, so that clients read
        # their writes as on a single node, and a follower only when the leader cannot be
        # reached.
        self.follower_reads = follower_reads
        if BUGGIFY_STALE_READS:
            log.warning("%s is set: strong reads may be stale", BUGGIFY_STALE_READS_ENV)
            self.follower_reads = True
        self.leaders: dict[str, int] = {g: p.preferred_leader for g, p in placements.items()}
        # Per group, the highest log position a leader's answer to this router was at (its
        # applied LSN after a write or a strong read). An eventually consistent read carries
        # it, and a replica that has not applied that far sends it to the leader: so the
        # clients of one router read their own writes and never see time go backwards, as on
        # a single node, while reads of data written elsewhere stay local.
        self.seen: dict[str, int] = {}
        # The catalog as last read from the metadata group, in a database of its own.
        self.cache = Database(MemoryStore(), region=region)
        self._cache_lsn = itertools.count(1)
        self._refresh_lock = asyncio.Lock()
        self.stats = {"redirects": 0, "reroutes": 0, "refreshes": 0, "failures": 0}
        # This node's storage service, called directly (set by the node when it holds
        # replicas and routes with the same ring object as its storage service, so that
        # the keys need not be checked again there); None: every call goes through `call`.
        self.local_op: LocalOp | None = None
        # The same storage service itself (`attach_local`): an item request to one of this
        # node's replicas that it admits without waiting runs on that replica's database
        # from here (`_item`), so the operation is the only coroutine under the request.
        self.local_storage: LocalStorage | None = None
        self._me_name = f"node{node_id}"
        # Per group: the placement its members were read from, its members, and those that
        # may lead or serve reads (full members first, log replicas after them).
        self._members: dict[str, tuple[GroupPlacement, tuple[int, ...], tuple[int, ...], bool]] = {}

    def attach_local(self, storage: LocalStorage) -> None:
        """Call this node's own storage service directly (`local_op`, `local_storage`): the
        router must route keys with the very ring object the storage service checks them
        with, so that they need not be checked again there."""
        self.local_op = functools.partial(storage.serve_op, local=True)
        self.local_storage = storage

    # --- calls to groups ------------------------------------------------------------------

    def _group_members(
        self, group_id: str
    ) -> tuple[GroupPlacement, tuple[int, ...], tuple[int, ...], bool]:
        """The group's placement, its members, the members in the order they are asked
        (full members, which may lead and serve reads, before log replicas, which only know
        where the leader is), and whether this node holds a full replica. Read again
        whenever the membership replaces the placement."""
        placement = self.placements[group_id]
        cached = self._members.get(group_id)
        if cached is None or cached[0] is not placement:
            config = placement.config
            ids = placement.node_ids
            ordered = tuple(sorted(ids, key=lambda n: config.can_lead(NodeId(n)) is False))
            # Whether this node holds a full replica of the group (one that may serve reads).
            readable = self.node_id in ordered and (
                BUGGIFY_LOG_REPLICA_READS or config.can_lead(NodeId(self.node_id))
            )
            cached = self._members[group_id] = (placement, ids, ordered, readable)
        return cached

    def _asked_first(self, group_id: str, mode: str) -> int:
        """The member `_candidates` puts first, without building the list."""
        placement, _ids, _ordered, readable = self._group_members(group_id)
        if mode == MODE_EVENTUAL and self.follower_reads and readable:
            return self.node_id
        return self.leaders.get(group_id, placement.preferred_leader)

    def _candidates(self, group_id: str, mode: str) -> list[int]:
        placement, _ids, ordered, readable = self._group_members(group_id)
        leader = self.leaders.get(group_id, placement.preferred_leader)
        others = [n for n in ordered if n != leader]
        if mode == MODE_EVENTUAL and self.follower_reads and readable:
            return [self.node_id] + [n for n in [leader, *others] if n != self.node_id]
        return [leader, *others]

    async def _group_call(
        self,
        group_id: str,
        channel: str,
        payload: dict[str, Any],
        mode: str,
        deadline: float,
        *,
        candidates: list[int] | None = None,
        answer: list[Any] | None = None,
    ) -> Any:
        """The body of an "ok" answer; raises the DynamoDB error of an "error" answer,
        Reroute, or InternalServerError when the budget runs out. `candidates` and `answer`:
        the first member was asked already (`_item`), with `payload` as it is, and gave
        this answer."""
        loop = asyncio.get_running_loop()
        if candidates is None:
            candidates = self._candidates(group_id, mode)
            if mode == MODE_EVENTUAL:
                payload["seen"] = self.seen.get(group_id, 0)
        node = candidates[0]
        position = 0
        waits = 0  # pauses so far: each one is longer (`_pause`)
        unreachable: set[int] = set()  # nodes this request could not reach (a dead leader)
        first = answer
        for _attempt in range(ATTEMPTS_MAX):
            if first is not None:
                answer, first = first, None  # the first attempt's, made by the caller
            elif (remaining := deadline - loop.time()) <= 0:
                break
            elif node == self.node_id and channel == CHANNEL_OP and self.local_op is not None:
                answer = await self._call_local(group_id, payload, mode)
            else:
                unsent = False
                sent: Any = None
                try:
                    sent = await self._call_node(
                        node, channel, payload, min(remaining, CALL_SECONDS_MAX), mode
                    )
                except _Unsent:
                    unsent = True
                except InternalServerError:
                    # The outcome is unknown (a write that timed out, or whose connection broke
                    # after it was sent): not retried, but the node is no longer taken for the
                    # leader, so the next request asks another member first and is sent on to
                    # the group's leader of now. Otherwise, with a leader cut off or paused, every
                    # write would wait out the whole call timeout on it and fail, while only a
                    # strong read could teach the router where the new leader is.
                    if self.leaders.get(group_id) == node:
                        self._forget_leader(group_id, node)
                    raise
                if unsent:  # paused outside the `except` block, as everywhere in this module
                    unreachable.add(node)
                    position += 1
                    node = candidates[position % len(candidates)]
                    await _pause(waits, deadline)
                    waits += 1
                    continue
                answer = sent
            kind = answer[0]
            if kind == OK:
                if mode != MODE_EVENTUAL:
                    self.leaders[group_id] = node
                    self._note_seen(group_id, answer)
                return answer[1]
            if kind == ERROR:
                if mode != MODE_EVENTUAL:
                    self.leaders[group_id] = node
                raise_error(answer)
            if kind in (WRONG_PARTITION, STALE_CATALOG):
                raise Reroute(kind)
            self.stats["redirects"] += 1
            hint = answer[1] if kind == REDIRECT else None
            if (
                hint is not None
                and hint in self.placements[group_id].node_ids
                and hint != node
                and hint not in unreachable  # a follower that has not noticed its death
            ):
                node = hint
                self.leaders[group_id] = hint
                continue
            await _pause(waits, deadline)
            waits += 1
            if kind == UNAVAILABLE and node == self.leaders.get(group_id):
                continue  # the leader has no lease yet: ask it again
            position += 1
            node = candidates[position % len(candidates)]
        self.stats["failures"] += 1
        raise InternalServerError(INTERNAL_MESSAGE)

    async def _call_local(self, group_id: str, payload: dict[str, Any], mode: str) -> Any:
        """The answer of this node's own storage service. A client error the operation
        raised there is raised here as it is (an "error" answer from another node is raised
        as the same error): this node leads, or simply answered an eventual read."""
        assert self.local_op is not None
        try:
            return await self.local_op(self._me_name, payload, False)
        except ClientError:
            if mode != MODE_EVENTUAL:
                self.leaders[group_id] = self.node_id
            raise

    def _forget_leader(self, group_id: str, node: int) -> None:
        """Stop taking `node` for the group's leader: ask this node's own replica next (it
        knows whom it follows) or else another member."""
        others = [n for n in self.placements[group_id].node_ids if n != node]
        if others:
            self.leaders[group_id] = self.node_id if self.node_id in others else others[0]

    def _note_seen(self, group_id: str, answer: list[Any]) -> None:
        if len(answer) > 2 and answer[2] > self.seen.get(group_id, 0):
            self.seen[group_id] = answer[2]

    async def _call_node(
        self, node: int, channel: str, payload: dict[str, Any], timeout: float, mode: str
    ) -> Any:
        from keeldb.net.transport import CallTimeout, PeerUnavailable, RemoteError

        connected = node == self.node_id or self._is_connected(node)
        try:
            return await self._call(node, channel, payload, timeout)
        except PeerUnavailable:
            if connected and mode == MODE_WRITE:
                # The connection broke while the request may have been on its way.
                raise InternalServerError(INTERNAL_MESSAGE) from None
            raise _Unsent() from None
        except CallTimeout:
            if mode == MODE_WRITE:
                raise InternalServerError(INTERNAL_MESSAGE) from None
            raise _Unsent() from None
        except RemoteError:
            log.exception("storage node %s failed on %s", node, channel)
            raise InternalServerError(INTERNAL_MESSAGE) from None

    # --- the catalog cache ---------------------------------------------------------------

    async def refresh(self, deadline: float) -> None:
        async with self._refresh_lock:
            answer = await self._group_call(META_GROUP, CHANNEL_TABLES, {}, MODE_STRONG, deadline)
            record = catalog_sync.sync_record(int(answer["lsn"]), answer["tables"])
            # Applied even when the metadata position did not move, so a table refused as
            # stale is re-read; the cache's own LSNs only count refreshes.
            record["meta_lsn"] = next(self._cache_lsn)
            catalog_sync.apply_catalog_sync(self.cache, record["meta_lsn"], record)
            self.stats["refreshes"] += 1

    def _expect(self, *names: Any) -> dict[str, str | None]:
        """The TableId the router believes each named table has (None: no such table)."""
        out: dict[str, str | None] = {}
        for name in names:
            if isinstance(name, str):
                table = catalog.find_table(self.cache, name)
                out[name] = None if table is None else table.table_id
        return out

    def _known_index(self, table_name: Any, index_name: str) -> list[str] | None:
        """[table, index] when the cached catalog has the index and it is not being dropped:
        a partition whose copy of the catalog does not have it yet refuses the request
        (`StorageService._admit_table`) rather than answer that there is no such index.
        Otherwise None, and the partition's database answers as it would. (Whether the
        index is built is the partitions' to say: each builds its own entries.)"""
        if type(table_name) is not str:
            return None
        found = catalog.find_index(self.cache, table_name, index_name)
        return None if found is None else [found[0].name, index_name]

    async def _known(self, name: Any, deadline: float) -> None:
        """Refresh the cache when it does not know a table a request names, or knows it only
        as not serving yet (a table being restored may have turned ACTIVE since, and a batch
        is checked against the cache here).

        A table the newest catalog still has as not serving (CREATING while it is restored
        or imported, DELETING) is answered ResourceNotFoundException here, as a single node
        answers, without asking its partitions: they serve a loaded table a moment before
        the metadata group says ACTIVE (`backup_route`), and a request served then would be
        served while DescribeTable says CREATING. So a table is served through every router
        exactly when DescribeTable says ACTIVE (or UPDATING)."""
        if isinstance(name, str):
            table = catalog.find_table(self.cache, name)
            if table is None or table.status not in SERVING_STATUSES:
                await self.refresh(deadline)
                table = catalog.find_table(self.cache, name)
                if table is not None and table.status not in SERVING_STATUSES:
                    raise ResourceNotFoundException(TABLE_NOT_FOUND_MESSAGE)

    # --- dispatch ------------------------------------------------------------------------

    async def dispatch(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + REQUEST_SECONDS_MAX
        if op == "DescribeEndpoints":
            return {"Endpoints": [{"Address": self.endpoint_address, "CachePeriodInMinutes": 1440}]}
        if op in CATALOG_READS or op in CATALOG_WRITES:
            return await self._catalog(op, body, deadline)
        if op == "DescribeTable":
            return await self._describe_table(body, deadline)
        if op in UNSUPPORTED:
            raise ValidationException(f"{op} is not supported by a KeelDB cluster yet")
        if op in COMPOSITE:
            # The statement names its tables in its text: read the newest catalog first.
            await self.refresh(deadline)
            handler = database_module.OPERATIONS[op]
            return await handler(_RoutedView(self), body)
        item = op in _ITEM_OPERATIONS
        for attempt in range(REROUTES_MAX + 1):
            try:
                if item:
                    return await self._item(op, body, deadline)
                return await self._route(op, body, deadline)
            except Reroute:
                self.stats["reroutes"] += 1
                if attempt == REROUTES_MAX:
                    break
            # Rerouted (waited for outside the `except` block, as everywhere in this module).
            # The first reroute goes at once (the cache was stale); later ones wait for a
            # partition's catalog sync.
            if attempt > 0:
                await _pause(attempt - 1, deadline)
            await self.refresh(deadline)
        self.stats["failures"] += 1
        raise InternalServerError(INTERNAL_MESSAGE)

    async def _catalog(self, op: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        changes = op in CATALOG_WRITES
        answer: dict[str, Any] = await self._group_call(
            META_GROUP,
            CHANNEL_CATALOG,
            {"op": op, "body": body, "changes": changes},
            MODE_WRITE if changes else MODE_STRONG,
            deadline,
        )
        if changes:
            try:
                await self.refresh(deadline)
            except Exception:
                log.debug("catalog refresh after %s failed", op, exc_info=True)
        return answer

    async def _partition_op(
        self,
        partition: int,
        op: str,
        body: dict[str, Any],
        mode: str,
        deadline: float,
        *,
        check: bool = True,
        tables: dict[str, str | None] | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "g": partition_group(partition),
            "op": op,
            "body": body,
            "mode": mode,
        }
        if tables:
            payload["tables"] = tables
            index_name = body.get("IndexName")
            if type(index_name) is str:
                known = self._known_index(body.get("TableName"), index_name)
                if known is not None:
                    payload["index"] = known
        if not check:
            payload["check"] = False
        result: dict[str, Any] = await self._group_call(
            partition_group(partition), CHANNEL_OP, payload, mode, deadline
        )
        return result

    async def _item(self, op: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        """An item request (GetItem, PutItem, UpdateItem, DeleteItem), sent to the group of
        its partition as `_partition_op` sends it. When this node is the member asked first
        and its storage service admits the request without waiting (`StorageService.admit`),
        the operation runs on that replica's database from here: the result, the error and
        what the router learns (the leader, the position seen) are those of a call through
        `local_op`, without the coroutines between. Anything else (a refusal, a lease to
        wait for, a failure of the group) goes on through `_group_call` as it would."""
        name = body.get("TableName")
        # One look at the cached catalog serves the routing and the table the partition is
        # told to expect (`_known` only when it does not serve the table yet).
        table = catalog.find_table(self.cache, name) if isinstance(name, str) else None
        if table is None or table.status not in SERVING_STATUSES:
            await self._known(name, deadline)
            table = keyroute.table_of(self.cache, name)
        partition = None
        if table is not None:
            partition = keyroute.table_item_partition(self.ring, table, op, body)
        mode = MODE_WRITE if op in _ITEM_WRITES else _read_mode(body)
        group_id = partition_group(0 if partition is None else partition)
        payload: dict[str, Any] = {"g": group_id, "op": op, "body": body, "mode": mode}
        if isinstance(name, str):
            payload["tables"] = {name: None if table is None else table.table_id}
        if mode == MODE_EVENTUAL:
            payload["seen"] = self.seen.get(group_id, 0)
        storage = self.local_storage
        answer: list[Any] | None = None
        if (
            storage is not None
            and self._asked_first(group_id, mode) == self.node_id
            and asyncio.get_running_loop().time() < deadline
        ):
            admitted = storage.admit(self._me_name, payload, False)
            if type(admitted) is list:
                answer = admitted
            elif admitted is not None:
                try:
                    result: dict[str, Any] = await admitted.database.dispatch(op, body)
                except ClientError:
                    if mode != MODE_EVENTUAL:
                        self.leaders[group_id] = self.node_id
                    raise
                except Exception as error:
                    answer = storage.refusal(admitted, op, error)
                else:
                    if mode != MODE_EVENTUAL:
                        self.leaders[group_id] = self.node_id
                        lsn = admitted.store.applied_lsn()
                        if lsn > self.seen.get(group_id, 0):
                            self.seen[group_id] = lsn
                    return result
        # The members to ask, as the router knows them now (this request changed nothing
        # of what it knows so far).
        done: dict[str, Any] = await self._group_call(
            group_id,
            CHANNEL_OP,
            payload,
            mode,
            deadline,
            candidates=self._candidates(group_id, mode),
            answer=answer,
        )
        return done

    async def _route(self, op: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        name = body.get("TableName") if isinstance(body, dict) else None
        if op == "Query":
            return await self._query(body, deadline)
        if op == "Scan":
            return await self._scan(body, deadline)
        if op in ("BatchGetItem", "BatchWriteItem"):
            return await self._batch(op, body, deadline)
        if op in keyroute.TRANSACT_OPERATIONS:
            return await self._transact(op, body, deadline)
        # Any other operation of the engine: run it on the first partition, which answers
        # with its validation error or its (partition-local) result.
        return await self._partition_op(0, op, body, MODE_WRITE, deadline, check=False)

    async def _transact(self, op: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        """A transaction whose items all lie in one partition runs there, atomically, as on
        a single node; a malformed one goes to one partition for its exact error."""
        names = keyroute.transact_tables(body)
        for name in {n for n in names if isinstance(n, str)}:
            await self._known(name, deadline)
        tables = self._expect(*names)
        mode = MODE_WRITE if op == "TransactWriteItems" else MODE_STRONG
        partitions = keyroute.transact_partitions(self.cache, self.ring, body)
        if not partitions or any(p is None for p in partitions):
            placed = keyroute.place_unkeyed_actions(self.cache, body, partitions)
            if placed is None or op != "TransactWriteItems":
                return await self._partition_op(
                    0, op, body, mode, deadline, check=False, tables=tables
                )
            partitions = [*placed]
        distinct = set(partitions)
        if len(distinct) > 1:
            if op == "TransactGetItems":
                return await self._read_across(body, partitions, deadline)
            return await self._transact_across(body, partitions, deadline)
        (partition,) = distinct
        assert partition is not None
        return await self._partition_op(partition, op, body, mode, deadline, tables=tables)

    async def _transact_across(
        self, body: dict[str, Any], partitions: list[int | None], deadline: float
    ) -> dict[str, Any]:
        """A TransactWriteItems over several partitions, run by this router as the
        coordinator of `keeldb.engine.transactions_coordinator` (`txn_route`): the request is
        checked as a whole here, each partition prepares its share, the metadata group keeps
        the ledger and the ClientRequestToken."""
        from keeldb.cluster import txn_route

        view = _RoutedPartitions(self, deadline, collect=True)
        return await txn_route.transact_write_across(
            self, body, partitions, deadline, _RoutedLedger(self, deadline), view
        )

    async def _read_across(
        self, body: dict[str, Any], partitions: list[int | None], deadline: float
    ) -> dict[str, Any]:
        """A TransactGetItems over several partitions: every partition reads its share at
        one timestamp, refusing items a transaction holds or wrote later
        (`transactions_coordinator.coordinate_read`, through `txn_route`)."""
        from keeldb.cluster import txn_route

        return await txn_route.transact_get_across(
            self, body, partitions, deadline, self.partitions_view(deadline)
        )

    def partitions_view(self, deadline: float | None = None) -> _RoutedPartitions:
        """The partition leaders as `transactions_coordinator.Partitions`."""
        return _RoutedPartitions(self, deadline)

    # --- Query and Scan ------------------------------------------------------------------

    async def _query(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        name = body.get("TableName")
        await self._known(name, deadline)
        found = keyroute.query_partition(self.cache, self.ring, body)
        if found is None:
            # An index the cache does not know yet, or a request the database will refuse.
            await self.refresh(deadline)
            found = keyroute.query_partition(self.cache, self.ring, body)
        tables = self._expect(name)
        if found is None:
            return await self._partition_op(
                0, "Query", body, _read_mode(body), deadline, tables=tables
            )
        source, partition = found
        if partition is not None:
            return await self._partition_op(
                partition, "Query", body, _read_mode(body), deadline, tables=tables
            )
        return await self._gather("Query", body, source, deadline)

    async def _scan(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        name = body.get("TableName")
        await self._known(name, deadline)
        tables = self._expect(name)
        table = keyroute.table_of(self.cache, name)
        mode = _read_mode(body)
        if table is None or not _valid_scan_shape(body):
            return await self._partition_op(0, "Scan", body, mode, deadline, tables=tables)
        try:
            source: paging.Source | None = paging.source_for(table, body.get("IndexName"))
        except ValidationException:
            source = None
        if source is None:  # one partition answers with the validation error
            return await self._partition_op(0, "Scan", body, mode, deadline, tables=tables)
        if source.is_global:
            return await self._gather("Scan", body, source, deadline)
        partitions = list(range(len(self.ring)))
        segment, total = body.get("Segment"), body.get("TotalSegments")
        if isinstance(segment, int) and isinstance(total, int) and 0 <= segment < total:
            low = segment * HASH_SPACE // total
            high = (segment + 1) * HASH_SPACE // total
            partitions = list(self.ring.overlapping(low, high))
        start = body.get("ExclusiveStartKey")
        if start is not None:
            first = keyroute.key_partition(self.ring, table, start)
            if first is None:
                return await self._partition_op(0, "Scan", body, mode, deadline, tables=tables)
            partitions = [p for p in partitions if p >= first] or [first]
        return await self._walk(body, partitions, mode, deadline, tables)

    async def _walk(
        self,
        body: dict[str, Any],
        partitions: list[int],
        mode: str,
        deadline: float,
        tables: dict[str, str | None],
    ) -> dict[str, Any]:
        """A Scan over partitions in ring order: each continues where the previous ended,
        until the page is full as a single node's would be: `Limit` entries read, or 1 MB of
        entries read before the filter (`PAGE_BYTES_MAX`, counted over every partition the
        page spans), and its LastEvaluatedKey is the last entry read.

        A partition reads at most its own 1 MB, so the bytes already read are carried on:
        when a page goes on into another partition, the sizes of that partition's next
        entries are read first (its answer's own items when the request neither filters nor
        projects, else a probe of the entries unfiltered), and the partition evaluates only
        the entries up to the one that fills the page."""
        limit = body.get("Limit")
        merged: dict[str, Any] = {"Count": 0, "ScannedCount": 0}
        items: list[Any] = []
        units = 0.0
        consumed: dict[str, Any] | None = None
        page_bytes = 0  # entries read by the page so far, in bytes, before the filter
        whole = _reads_whole_items(body)  # the answer's items are the entries it read
        names = self._scan_key_names(body)
        for position, partition in enumerate(partitions):
            sub = dict(body)
            if position > 0:
                sub.pop("ExclusiveStartKey", None)
            if isinstance(limit, int):
                sub["Limit"] = limit - merged["ScannedCount"]
            sizes: list[int] | None = None
            if page_bytes > 0 and not whole:
                sizes = await self._entry_sizes(partition, sub, mode, deadline, tables)
                fill = _filling(sizes, PAGE_BYTES_MAX - page_bytes)
                if fill is not None:
                    sub["Limit"] = fill
            answer = await self._partition_op(partition, "Scan", sub, mode, deadline, tables=tables)
            got = list(answer.get("Items", ()))
            last_key = answer.get("LastEvaluatedKey")
            count = int(answer.get("Count", 0))
            scanned = int(answer.get("ScannedCount", 0))
            if whole:
                sizes = [item_size(item) for item in got]
                fill = _filling(sizes, PAGE_BYTES_MAX - page_bytes)
                if fill is not None and names is not None and (fill < len(got) or position > 0):
                    # The page fills inside this partition's answer: it ends at that entry.
                    got = got[:fill]
                    count = scanned = fill
                    last_key = {n: got[-1][n] for n in names}
            items.extend(got)
            merged["Count"] += count
            merged["ScannedCount"] += scanned
            if "ConsumedCapacity" in answer:
                consumed = answer["ConsumedCapacity"]
                units += float(consumed.get("CapacityUnits", 0))
            if last_key is not None:
                merged["LastEvaluatedKey"] = last_key
                break
            if isinstance(limit, int) and merged["ScannedCount"] >= limit:
                break
            if position + 1 == len(partitions) or scanned == 0:
                continue
            if sizes is None:
                probe = dict(sub, Limit=scanned)
                sizes = await self._entry_sizes(partition, probe, mode, deadline, tables)
            page_bytes += sum(sizes[:scanned])
            if page_bytes >= PAGE_BYTES_MAX and names is not None and got:
                # The page filled exactly at this partition's last entry.
                merged["LastEvaluatedKey"] = {n: got[-1][n] for n in names}
                break
        out: dict[str, Any] = {}
        if body.get("Select") != "COUNT":
            out["Items"] = items
        out.update(merged)
        if consumed is not None:
            out["ConsumedCapacity"] = _scaled(consumed, units)
        return out

    def _scan_key_names(self, body: dict[str, Any]) -> tuple[str, ...] | None:
        """The attributes of a Scan's LastEvaluatedKey (None if the cache cannot say)."""
        table = keyroute.table_of(self.cache, body.get("TableName"))
        if table is None:
            return None
        try:
            return paging.source_for(table, body.get("IndexName")).start_key_names
        except ValidationException:
            return None

    async def _entry_sizes(
        self,
        partition: int,
        sub: dict[str, Any],
        mode: str,
        deadline: float,
        tables: dict[str, str | None],
    ) -> list[int]:
        """The sizes of the entries a Scan request would read on one partition, in order:
        the same request, unfiltered and unprojected (what DynamoDB's 1 MB counts)."""
        probe = {k: v for k, v in sub.items() if k not in _PROBE_DROPPED}
        answer = await self._partition_op(partition, "Scan", probe, mode, deadline, tables=tables)
        return [item_size(item) for item in answer.get("Items", ())]

    async def _gather(
        self, op: str, body: dict[str, Any], source: paging.Source, deadline: float
    ) -> dict[str, Any]:
        """A Query or Scan of a global secondary index: every partition holds entries of
        the index, so all are read and their pages merged in the index's key order, up to
        the first place where some partition stopped early."""
        mode = _read_mode(body)
        tables = self._expect(body.get("TableName"))
        limit = body.get("Limit")
        if _filtered(body) or not _reads_whole_entries(body):
            # What the page returns does not show what it read: two rounds.
            counted = limit if isinstance(limit, int) and limit >= 1 else None
            return await self._gather_in_rounds(op, body, source, deadline, counted)
        answers = await asyncio.gather(
            *(
                self._partition_op(p, op, body, mode, deadline, check=False, tables=tables)
                for p in range(len(self.ring))
            )
        )
        forward = body.get("ScanIndexForward", True) is not False
        names = source.start_key_names

        def position(item: Any) -> bytes | None:
            if not isinstance(item, dict) or any(n not in item for n in names):
                return None
            return source.store_key(item)

        cut: bytes | None = None
        cut_key: Any = None
        for answer in answers:
            last = answer.get("LastEvaluatedKey")
            if last is None:
                continue
            at = position(last)
            if at is None:
                continue
            if cut is None or (at < cut if forward else at > cut):
                cut, cut_key = at, last
        entries: list[tuple[bytes, Any]] = []
        ordered = True
        for answer in answers:
            for item in answer.get("Items", ()):
                at = position(item)
                if at is None:
                    ordered = False
                    at = b""
                if cut is not None and ordered and (at > cut if forward else at < cut):
                    continue
                entries.append((at, item))
        if ordered:
            entries.sort(key=lambda e: e[0], reverse=not forward)
        items = [item for _at, item in entries]
        limit = body.get("Limit")
        filtered = "FilterExpression" in body or "QueryFilter" in body or "ScanFilter" in body
        last_key = cut_key
        if isinstance(limit, int) and 1 <= limit <= len(items) and ordered and not filtered:
            # The page ends at its Limit-th entry, with that entry's key as LastEvaluatedKey
            # even when no entry follows it: one node stops reading there and cannot know.
            items = items[:limit]
            last_key = {n: items[-1][n] for n in names}
        fill = _filling([item_size(item) for item in items], PAGE_BYTES_MAX)
        if ordered and fill is not None and (fill < len(items) or last_key is None):
            # One node stops reading the index after 1 MB of entries: so does the merged page.
            items = items[:fill]
            last_key = {n: items[-1][n] for n in names}
        out: dict[str, Any] = {}
        if body.get("Select") != "COUNT":
            out["Items"] = items
            out["Count"] = len(items)
            out["ScannedCount"] = (
                len(items) if not filtered else sum(int(a.get("ScannedCount", 0)) for a in answers)
            )
        else:
            out["Count"] = sum(int(a.get("Count", 0)) for a in answers)
            out["ScannedCount"] = sum(int(a.get("ScannedCount", 0)) for a in answers)
        if last_key is not None:
            out["LastEvaluatedKey"] = last_key
        consumed = [a["ConsumedCapacity"] for a in answers if "ConsumedCapacity" in a]
        if consumed:
            units = sum(float(c.get("CapacityUnits", 0)) for c in consumed)
            out["ConsumedCapacity"] = _scaled(consumed[0], units)
        return out

    async def _gather_in_rounds(
        self,
        op: str,
        body: dict[str, Any],
        source: paging.Source,
        deadline: float,
        limit: int | None,
    ) -> dict[str, Any]:
        """A global-index Query or Scan whose answer does not show the entries it read (a
        filter, a projection, Select COUNT) reads exactly what one node would: `Limit`
        entries or 1 MB of them, in the index's order. First every partition returns its
        next entries, whole and unfiltered (up to `Limit`, or its own 1 MB); merged, they
        say where the page ends and how many entries each partition evaluates; then each
        evaluates that many with the request's own filter and projection."""
        mode = _read_mode(body)
        tables = self._expect(body.get("TableName"))
        names = source.start_key_names
        forward = body.get("ScanIndexForward", True) is not False
        probe = _positions_request(body, limit)
        partitions = range(len(self.ring))
        probes = await asyncio.gather(
            *(
                self._partition_op(p, op, probe, mode, deadline, check=False, tables=tables)
                for p in partitions
            )
        )
        cut: bytes | None = None
        cut_key: Any = None
        for answer in probes:
            last = answer.get("LastEvaluatedKey")
            if last is None or (limit is not None and len(answer.get("Items", ())) >= limit):
                continue  # stopped at Limit: not a bound on the merged page
            at = source.store_key(last)
            if cut is None or (at < cut if forward else at > cut):
                cut, cut_key = at, last
        positions: list[tuple[bytes, int, Any]] = []
        for partition, answer in zip(partitions, probes, strict=True):
            for item in answer.get("Items", ()):
                at = source.store_key(item)
                if cut is not None and (at > cut if forward else at < cut):
                    continue
                positions.append((at, partition, item))
        positions.sort(key=lambda e: e[0], reverse=not forward)
        taken = positions if limit is None else positions[:limit]
        full = limit is not None and len(taken) == limit
        fill = _filling([item_size(item) for _at, _p, item in taken], PAGE_BYTES_MAX)
        if fill is not None:
            taken, full = taken[:fill], True
        shares: dict[int, int] = {}
        for _at, partition, _item in taken:
            shares[partition] = shares.get(partition, 0) + 1
        if not shares:
            # Nothing to evaluate: the request still goes to one partition, which answers
            # with its validation error or an empty page.
            shares[0] = limit or 1
        parts = sorted(shares.items())
        # The entries' keys come back too (and are taken off again), so that the pages of
        # several partitions merge in the index's order whatever the projection.
        keyed, added = _with_keys(body, names)
        refused: ClientError | None = None
        try:
            answers = await asyncio.gather(
                *(
                    self._partition_op(
                        p, op, dict(keyed, Limit=count), mode, deadline, check=False, tables=tables
                    )
                    for p, count in parts
                )
            )
        except ClientError as error:
            if not added:
                raise
            refused = error
        if refused is not None:
            # The request itself is refused: its own error, as the client wrote it (asked
            # outside the `except` block, as everywhere in this module).
            partition, count = parts[0]
            await self._partition_op(
                partition, op, dict(body, Limit=count), mode, deadline, check=False, tables=tables
            )
            raise refused
        entries: list[tuple[bytes, Any]] = []
        for answer in answers:
            for item in answer.get("Items", ()):
                at = source.store_key(item) if all(n in item for n in names) else b""
                for name in added:
                    item.pop(name, None)
                entries.append((at, item))
        entries.sort(key=lambda e: e[0], reverse=not forward)
        out: dict[str, Any] = {}
        if body.get("Select") != "COUNT":
            out["Items"] = [item for _at, item in entries]
        out["Count"] = sum(int(a.get("Count", 0)) for a in answers)
        out["ScannedCount"] = sum(int(a.get("ScannedCount", 0)) for a in answers)
        if full and taken:
            out["LastEvaluatedKey"] = {n: taken[-1][2][n] for n in names}
        elif cut_key is not None:
            out["LastEvaluatedKey"] = cut_key
        consumed = [a["ConsumedCapacity"] for a in answers if "ConsumedCapacity" in a]
        if consumed:
            units = sum(float(c.get("CapacityUnits", 0)) for c in consumed)
            out["ConsumedCapacity"] = _scaled(consumed[0], units)
        return out

    # --- batches -------------------------------------------------------------------------

    async def _batch(self, op: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        request_items = body.get("RequestItems")
        names = list(request_items) if isinstance(request_items, dict) else []
        for name in names:
            await self._known(name, deadline)
        tables = self._expect(*names)
        mode = MODE_WRITE if op == "BatchWriteItem" else _batch_read_mode(body)
        split = self._split_batch(op, body)
        if split is None:
            # Malformed, over a limit, or with repeated keys: one partition's database
            # answers with DynamoDB's exact error (and runs nothing, as the request is bad).
            return await self._partition_op(0, op, body, mode, deadline, check=False, tables=tables)
        parts = sorted(split.items())
        if op == "BatchWriteItem" and len(parts) > 1:
            # Every part is checked before any is sent: a part one partition refuses (an item
            # too large, a key of the wrong type ...) must not leave the others applied, as
            # a single node refuses the whole batch.
            await self._check_batch(op, body)
        results = await asyncio.gather(
            *(self._partition_op(p, op, sub, mode, deadline, tables=tables) for p, sub in parts),
            return_exceptions=True,
        )
        return self._merge_batch(op, parts, results)

    async def _check_batch(self, op: str, body: dict[str, Any]) -> None:
        """Run a batch against an empty scratch database holding the cached catalog: it
        raises exactly the client error a partition would, and applies nothing anywhere."""
        scratch = Database(
            MemoryStore(), region=self.cache.region, account_id=self.cache.account_id
        )
        record = catalog_sync.sync_record(1, catalog_sync.catalog_snapshot(self.cache))
        catalog_sync.apply_catalog_sync(scratch, 1, record)
        scratch.attach_log(MemoryLog(scratch.apply, start_lsn=scratch.store.applied_lsn()))
        await scratch.dispatch(op, body)

    def _split_batch(self, op: str, body: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
        request_items = body.get("RequestItems")
        if not isinstance(request_items, dict) or not request_items:
            return None
        partitions = keyroute.batch_partitions(self.cache, self.ring, op, body)
        limit = BATCH_GET_KEYS_MAX if op == "BatchGetItem" else BATCH_WRITE_REQUESTS_MAX
        if not partitions or len(partitions) > limit or any(p is None for p in partitions):
            return None
        out: dict[int, dict[str, Any]] = {}
        seen: set[bytes] = set()
        index = 0
        for name, spec in request_items.items():
            table = catalog.find_table(self.cache, name)
            assert table is not None
            entries = spec["Keys"] if op == "BatchGetItem" else spec
            for entry in entries:
                partition = partitions[index]
                index += 1
                assert partition is not None
                if op == "BatchGetItem":
                    key = entry
                else:
                    key = entry.get("PutRequest", {}).get("Item") or entry["DeleteRequest"]["Key"]
                identity = orjson.dumps(
                    [name, [key.get(n) for n in table.key_names]], option=orjson.OPT_SORT_KEYS
                )
                if identity in seen:
                    return None
                seen.add(identity)
                sub = out.setdefault(partition, dict(body, RequestItems={}))
                if op == "BatchGetItem":
                    table_spec = sub["RequestItems"].setdefault(name, dict(spec, Keys=[]))
                    table_spec["Keys"].append(entry)
                else:
                    sub["RequestItems"].setdefault(name, []).append(entry)
        return out

    def _merge_batch(
        self, op: str, parts: list[tuple[int, dict[str, Any]]], results: list[Any]
    ) -> dict[str, Any]:
        unprocessed_name = "UnprocessedKeys" if op == "BatchGetItem" else "UnprocessedItems"
        out: dict[str, Any] = {}
        if op == "BatchGetItem":
            out["Responses"] = {name: [] for _p, sub in parts for name in sub["RequestItems"]}
        unprocessed: dict[str, Any] = {}
        capacity: dict[str, float] = {}
        metrics: dict[str, list[Any]] = {}
        failures = 0
        for (_partition, sub), result in zip(parts, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, InternalServerError):
                    raise result
                failures += 1
                # The partition could not answer: its part is left for the client to retry.
                for name, spec in sub["RequestItems"].items():
                    if op == "BatchGetItem":
                        target = unprocessed.setdefault(name, dict(spec, Keys=[]))
                        target["Keys"].extend(spec["Keys"])
                    else:
                        unprocessed.setdefault(name, []).extend(spec)
                continue
            for name, items in result.get("Responses", {}).items():
                out["Responses"].setdefault(name, []).extend(items)
            for name, spec in result.get(unprocessed_name, {}).items():
                if op == "BatchGetItem":
                    target = unprocessed.setdefault(name, dict(spec, Keys=[]))
                    target["Keys"].extend(spec["Keys"])
                else:
                    unprocessed.setdefault(name, []).extend(spec)
            for consumed in result.get("ConsumedCapacity", ()):
                name = consumed["TableName"]
                capacity[name] = capacity.get(name, 0.0) + float(consumed.get("CapacityUnits", 0))
            for name, entries in result.get("ItemCollectionMetrics", {}).items():
                metrics.setdefault(name, []).extend(entries)
        if failures == len(parts):
            raise InternalServerError(INTERNAL_MESSAGE)
        out[unprocessed_name] = unprocessed
        if capacity:
            out["ConsumedCapacity"] = [
                {"TableName": name, "CapacityUnits": units} for name, units in capacity.items()
            ]
        if metrics:
            out["ItemCollectionMetrics"] = metrics
        return out

    # --- DescribeTable -------------------------------------------------------------------

    async def _describe_table(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        answer: dict[str, Any] = await self._group_call(
            META_GROUP,
            CHANNEL_CATALOG,
            {"op": "DescribeTable", "body": body},
            MODE_STRONG,
            deadline,
        )
        description = answer["Table"]
        parts = await asyncio.gather(
            *(
                self._partition_op(p, "DescribeTable", body, MODE_STRONG, deadline, check=False)
                for p in range(len(self.ring))
            ),
            return_exceptions=True,
        )
        items = size = 0
        index_counts: dict[str, list[int]] = {}
        building: set[str] = set()
        for part in parts:
            if isinstance(part, BaseException):
                continue  # counts are approximate in DynamoDB too (refreshed every 6 hours)
            table = part.get("Table", {})
            if table.get("TableId") != description.get("TableId"):
                continue
            items += int(table.get("ItemCount", 0))
            size += int(table.get("TableSizeBytes", 0))
            held: set[str] = set()
            for group in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
                for index in table.get(group, ()):
                    held.add(index["IndexName"])
                    counts = index_counts.setdefault(index["IndexName"], [0, 0])
                    counts[0] += int(index.get("ItemCount", 0))
                    counts[1] += int(index.get("IndexSizeBytes", 0))
                    if index.get("IndexStatus") == "CREATING":
                        building.add(index["IndexName"])
            # An index the catalog lists that this partition has not taken up yet is still
            # being built there: its items are not counted, so it is not ACTIVE yet.
            for index in description.get("GlobalSecondaryIndexes", ()):
                if index["IndexName"] not in held:
                    building.add(index["IndexName"])
        description["ItemCount"] = items
        description["TableSizeBytes"] = size
        for group in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            for index in description.get(group, ()):
                summed = index_counts.get(index["IndexName"])
                if summed is not None:
                    index["ItemCount"], index["IndexSizeBytes"] = summed
                if index["IndexName"] in building and index.get("IndexStatus") == "ACTIVE":
                    index["IndexStatus"] = "CREATING"
                    index["Backfilling"] = True
        return answer


async def _pause(waits: int, deadline: float) -> None:
    """The pause before asking again after `waits` earlier pauses: RETRY_PAUSE_SECONDS,
    doubling up to RETRY_PAUSE_SECONDS_MAX, never past the request's deadline."""
    seconds = min(RETRY_PAUSE_SECONDS * 2 ** min(waits, 16), RETRY_PAUSE_SECONDS_MAX)
    remaining = deadline - asyncio.get_running_loop().time()
    await asyncio.sleep(max(0.0, min(seconds, remaining)))


def _read_mode(body: Any) -> str:
    consistent = isinstance(body, dict) and body.get("ConsistentRead") is True
    if consistent and BUGGIFY_STALE_READS:
        return MODE_EVENTUAL
    return MODE_STRONG if consistent else MODE_EVENTUAL


def _batch_read_mode(body: dict[str, Any]) -> str:
    items = body.get("RequestItems")
    if isinstance(items, dict):
        for spec in items.values():
            if isinstance(spec, dict) and spec.get("ConsistentRead") is True:
                return MODE_STRONG
    return MODE_EVENTUAL


_FILTER_MEMBERS = ("FilterExpression", "QueryFilter", "ScanFilter")
# Members a positions probe leaves out: it reads keys only, unfiltered, with no capacity report.
_PROBE_DROPPED = (
    *_FILTER_MEMBERS,
    "ConditionalOperator",
    "ProjectionExpression",
    "AttributesToGet",
    "Select",
    "ReturnConsumedCapacity",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
)
_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")


def _reads_whole_items(body: dict[str, Any]) -> bool:
    """Whether a table Scan's answer holds exactly the entries it read, whole."""
    projected = ("ProjectionExpression", "AttributesToGet", "IndexName")
    return (
        not _filtered(body)
        and not any(member in body for member in projected)
        and body.get("Select", "ALL_ATTRIBUTES") == "ALL_ATTRIBUTES"
    )


def _filling(sizes: list[int], room_bytes: int) -> int | None:
    """How many of these entries a page with `room_bytes` left reads before it is full
    (the entry that reaches the limit is read too); None if they all fit with room left."""
    total = 0
    for number, size in enumerate(sizes, start=1):
        total += size
        if total >= room_bytes:
            return number
    return None


def _filtered(body: dict[str, Any]) -> bool:
    return any(member in body for member in _FILTER_MEMBERS)


def _positions_request(body: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The request that reads an index's next entries whole and unfiltered (up to `limit`):
    the original's table, index, start, order, consistency and key condition (with only the
    names and values it uses)."""
    probe = {k: v for k, v in body.items() if k not in _PROBE_DROPPED}
    if limit is not None:
        probe["Limit"] = limit
    condition = body.get("KeyConditionExpression")
    used = set(_PLACEHOLDER.findall(condition)) if isinstance(condition, str) else set()
    for member in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
        given = body.get(member)
        kept = {k: v for k, v in given.items() if k in used} if isinstance(given, dict) else {}
        if kept:
            probe[member] = kept
    return probe


def _with_keys(body: dict[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The request with the attributes `names` added to its projection if it lacks them,
    and the names it added (to take off the answer's items)."""
    if "ProjectionExpression" in body and isinstance(body["ProjectionExpression"], str):
        given = body.get("ExpressionAttributeNames")
        attribute_names = dict(given) if isinstance(given, dict) else {}
        projected = set()
        for path in body["ProjectionExpression"].split(","):
            top = path.strip().split(".", 1)[0].split("[", 1)[0]
            projected.add(attribute_names.get(top, top))
        missing = [n for n in names if n not in projected]
        if not missing:
            return body, []
        placeholders = {f"#keeldbk{number}": name for number, name in enumerate(missing)}
        attribute_names.update(placeholders)
        expression = ", ".join([body["ProjectionExpression"], *placeholders])
        keyed = dict(
            body, ProjectionExpression=expression, ExpressionAttributeNames=attribute_names
        )
        return keyed, missing
    if "AttributesToGet" in body and isinstance(body["AttributesToGet"], list):
        missing = [n for n in names if n not in body["AttributesToGet"]]
        return dict(body, AttributesToGet=[*body["AttributesToGet"], *missing]), missing
    return body, []


def _reads_whole_entries(body: dict[str, Any]) -> bool:
    """Whether an index Query's or Scan's answer holds exactly the entries it read, whole."""
    return (
        not _filtered(body)
        and "ProjectionExpression" not in body
        and "AttributesToGet" not in body
        and body.get("Select", "ALL_PROJECTED_ATTRIBUTES")
        in ("ALL_PROJECTED_ATTRIBUTES", "ALL_ATTRIBUTES")
    )


def _valid_scan_shape(body: Any) -> bool:
    limit = body.get("Limit")
    return limit is None or (isinstance(limit, int) and limit >= 1)


def _scaled(consumed: dict[str, Any], units: float) -> dict[str, Any]:
    """One ConsumedCapacity with its total replaced by the sum over partitions."""
    out = dict(consumed)
    out["CapacityUnits"] = units
    if (
        "Table" in out
        and "GlobalSecondaryIndexes" not in out
        and "LocalSecondaryIndexes" not in out
    ):
        out["Table"] = {"CapacityUnits": units}
    return out


class _RoutedView(Database):
    """The router's cached catalog as a `Database` whose operations are routed: what a
    composite operation's handler reads (tables) comes from the cache, and what it asks
    (`dispatch`) goes to the partitions."""

    def __init__(self, router: Router) -> None:  # no super().__init__: it shares the cache's
        cache = router.cache
        self.store = cache.store
        self.region = cache.region
        self.account_id = cache.account_id
        self.state = cache.state
        self._log = None
        self._router = router

    async def dispatch(self, operation_name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._router.dispatch(operation_name, body)


# Tests make a partition answer late through a subclass, compiled or not.
@mypyc_attr(allow_interpreted_subclasses=True)
class _RoutedPartitions:
    """`transactions_coordinator.Partitions` over the transport: each step goes to the
    leader of the partition's group (a group id, "p<i>"). With `collect`, the commit answers
    (each share's capacity and item collection sizes) are kept in `answers` by group."""

    def __init__(self, router: Router, deadline: float | None, *, collect: bool = False) -> None:
        self.router = router
        self.deadline = deadline
        self.collect = collect
        self.answers: dict[str, dict[str, Any] | None] = {}

    def _deadline(self) -> float:
        if self.deadline is not None:
            return self.deadline
        return asyncio.get_running_loop().time() + REQUEST_SECONDS_MAX

    async def _step(self, group: str, payload: dict[str, Any], mode: str = MODE_WRITE) -> Any:
        return await self.router._group_call(
            group, CHANNEL_TXN, {"g": group, **payload}, mode, self._deadline()
        )

    async def prepare(
        self, partition: str, txid: str, ts: int, items: list[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        # Never sent twice: a prepare whose outcome is unknown cancels the transaction.
        result: list[dict[str, Any] | None] = await self._step(
            partition, {"do": "prepare", "txid": txid, "ts": ts, "items": items}
        )
        return result

    async def read(
        self, partition: str, ts: int, gets: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]:
        reasons, responses = await self._step(
            partition, {"do": "read", "ts": ts, "gets": gets}, MODE_STRONG
        )
        return list(reasons), list(responses)

    # Commit and cancel are idempotent (a second one only moves the partition's LSN), so a
    # call whose outcome is unknown (a timeout, a leader that failed over) is sent again,
    # to the new leader, instead of failing the transaction's answer.

    async def commit(self, partition: str, txid: str) -> None:
        answer = await self._step(partition, {"do": "commit", "txid": txid}, MODE_STRONG)
        if self.collect and (answer is not None or partition not in self.answers):
            self.answers[partition] = answer

    async def cancel(self, partition: str, txid: str) -> None:
        await self._step(partition, {"do": "cancel", "txid": txid}, MODE_STRONG)


class _RoutedLedger:
    """`transactions_coordinator.Ledger` kept by the metadata group, reached through its
    leader."""

    def __init__(self, router: Router, deadline: float) -> None:
        self.router = router
        self.deadline = deadline

    async def step(self, record: dict[str, Any]) -> bool:
        result: bool = await self.router._group_call(
            META_GROUP,
            CHANNEL_TXN,
            {"g": META_GROUP, "do": "ledger_step", "record": record},
            MODE_WRITE,
            self.deadline,
        )
        return result

    async def entries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.router._group_call(
            META_GROUP,
            CHANNEL_TXN,
            {"g": META_GROUP, "do": "ledger_entries"},
            MODE_STRONG,
            self.deadline,
        )
        return result

    async def token_committed(self, token: str, digest: str, now_ms: int) -> bool:
        """`transactions_partition.ledger_token_committed` on the metadata leader: whether a
        transaction with this token committed in the last ten minutes; raises
        TransactionInProgressException or IdempotentParameterMismatchException."""
        result: bool = await self.router._group_call(
            META_GROUP,
            CHANNEL_TXN,
            {
                "g": META_GROUP,
                "do": "ledger_token",
                "token": token,
                "digest": digest,
                "now_ms": now_ms,
            },
            MODE_STRONG,
            self.deadline,
        )
        return result
