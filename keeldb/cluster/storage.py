"""The storage side of a cluster node: its replicas and the requests routers send them.

Owns, for each replica group this node is a member of (the metadata group and its
partitions), one replica: an LMDB store of its own (`DATA_DIR/groups/GROUP/store`), a
`Database` over it and the group's replicated log (`keeldb.cluster.group.GroupLog`). Every
single-node operation therefore runs unchanged inside a partition. It answers the
transport channels of `keeldb.cluster.protocol`:

- "kv.op": run one DynamoDB operation on one partition. Writes and strongly consistent
  reads run only on the leader while its lease is valid (lease reads, docs/consensus.md);
  eventually consistent reads on any replica whose log is close enough to the leader's.
  Before anything runs, the keys are checked to belong to the partition and the table to be
  the one the router means; otherwise nothing runs and the router is told why.
- "kv.catalog": a catalog operation on the metadata group, followed by a catalog sync of
  every partition (`keeldb.cluster.catalog_sync`), proposed through their leaders.
- "kv.sync": propose a catalog sync record on one partition (leader only).
- "kv.tables": the metadata group's catalog, for routers' caches.
- "kv.status": this node's view of its groups (role, leader, applied position, lag).

It never parses HTTP and never answers a client directly: routers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeldb.cluster import catalog_sync, keyroute
from keeldb.cluster.placement import META_GROUP, GroupPlacement, partition_group
from keeldb.cluster.protocol import (
    CHANNEL_CATALOG,
    CHANNEL_LEAD,
    CHANNEL_OP,
    CHANNEL_STATUS,
    CHANNEL_SYNC,
    CHANNEL_TABLES,
    CHANNEL_TXN,
    MODE_EVENTUAL,
    OK,
    REDIRECT,
    STALE_CATALOG,
    UNAVAILABLE,
    WRONG_PARTITION,
    error_answer,
)
from keeldb.cluster.ring import Ring
from keeldb.consensus.types import Config, Member, NodeId
from keeldb.engine import catalog, indexes, transactions_coordinator, transactions_partition
from keeldb.engine.database import Database
from keeldb.engine.schema import STATUS_CREATING
from keeldb.engine.ttl import TtlSweeper
from keeldb.model.errors import ClientError, InternalServerError
from keeldb.net.transport import TransportError
from keeldb.storage.lmdb_store import LmdbStore

log = logging.getLogger("keeldb.cluster.storage")

# How long a new leader's request waits for its lease (the lease wait after an election,
# docs/consensus.md "Leases") before the router is told to try again.
LEASE_WAIT_SECONDS_MAX = 3.0
# An eventually consistent read is served by a replica other than the leader only if its log
# is at most this many entries behind what it knows to be chosen ...
EVENTUAL_LAG_ENTRIES_MAX = 64
# ... and only if what it knows is this fresh: a follower heard from the leader, a leader
# from a phase-2 quorum of its group, within this long (`GroupLog.staleness_seconds`). So a
# replica cut off from its group stops answering eventually consistent reads within a second
# instead of serving ever older data; the leader heartbeats every 100 ms. DynamoDB says an
# eventually consistent read "might not reflect the results of a recently completed write"
# and that consistency across copies "is usually reached within a second".
EVENTUAL_STALENESS_SECONDS_MAX = 1.0
# Deliberately broken variants, for the tests that prove their checks catch stale reads:
# eventually consistent reads served by any replica however far behind (and the router's own
# stale-read variant, which needs its cut-off replica to answer). Read once at import.
BUGGIFY_LAGGING_READS_ENV = "KEELDB_BUGGIFY_LAGGING_READS"
BUGGIFY_LAGGING_READS = (
    os.environ.get(BUGGIFY_LAGGING_READS_ENV) == "1"
    or os.environ.get("KEELDB_BUGGIFY_STALE_READS") == "1"
)
# The router's broken variant that reads from log replicas (`router.BUGGIFY_LOG_REPLICA_READS`):
# a log replica then serves eventually consistent reads from its empty store.
BUGGIFY_LOG_REPLICA_READS = os.environ.get("KEELDB_BUGGIFY_LOG_REPLICA_READS") == "1"
# How often the metadata leader checks that every partition has the newest catalog, and
# each partition leader that its index builds run.
MAINTENANCE_SECONDS = 0.5
# Leaders follow the workload (as CockroachDB's load-based lease placement does): a group's
# leader counts which node's router sent the requests it served, and looks at the counts
# once per window. When one node sent at least LOAD_SHARE_MIN of at least LOAD_REQUESTS_MIN
# requests (counted over one or more windows), the leadership moves
# to that node's replica, so its router reaches the leader without the network. When the
# traffic is even (no node above EVEN_SHARE_MAX), or the group is idle and its leadership was
# not placed by load, it goes back to the node placement prefers, so leaders spread over the
# nodes again (also after a failover). A group moves at most once per MOVE_SECONDS_MIN, and
# each move costs its writes about one lease wait (the new leader waits out the old lease).
LOAD_WINDOW_SECONDS = 2.0
LOAD_REQUESTS_MIN = 40
# A sample of a group's traffic spans as many windows as it takes to count LOAD_REQUESTS_MIN
# requests, up to this long; a group that served fewer in that time is idle. (A slower
# machine serves a steady client more slowly: counted per window alone, a stream of 15
# requests a second from one router would look idle, and its leadership would be sent to
# the preferred node instead of following the traffic.)
LOAD_SAMPLE_SECONDS_MAX = 10.0
LOAD_SHARE_MIN = 0.7
EVEN_SHARE_MAX = 0.5
MOVE_SECONDS_MIN = 5.0
LEAD_CALL_SECONDS = 1.0  # one "take the leadership" request to another member
# A member asked to lead campaigns only if its log is at most this many entries behind the
# commit point it knows: under steady writes a follower may be a few entries behind at any
# moment (it learns a commit point a moment before it applies it), and a small gap costs the
# new leader only its own apply before it serves.
LEAD_LAG_ENTRIES_MAX = 64
SYNC_CALL_SECONDS = 2.0  # one catalog sync proposal on a partition leader
# A catalog change waits this long for every partition to have it before it answers, trying
# again (with growing pauses, from SYNC_PAUSE_SECONDS to SYNC_PAUSE_SECONDS_MAX) the
# partitions that have no leader yet (an election after a leader died, or a cluster just
# started). It stays below the router's call timeout (`router.CALL_SECONDS_MAX`, 5 s), so
# the answer of a change that was made always reaches the client: a CreateTable cannot be
# sent again safely. A partition still without the change is synced by the metadata
# leader's maintenance loop, and routers wait for it (`router.REROUTES_MAX`).
CATALOG_SYNC_SECONDS_MAX = 3.5
SYNC_PAUSE_SECONDS = 0.05
SYNC_PAUSE_SECONDS_MAX = 0.4
# Transaction steps a router may send again when their outcome is unknown (idempotent).
TXN_STEPS_RESENDABLE = frozenset({"commit", "cancel"})

Caller = Callable[[int, str, Any, float], Awaitable[Any]]


@dataclass(slots=True)
class Replica:
    group_id: str
    placement: GroupPlacement
    store: LmdbStore
    database: Database
    log: Any  # keeldb.cluster.group.GroupLog
    partition: int | None  # None for the metadata group
    ttl: TtlSweeper | None = None

    def leader(self) -> int | None:
        if self.log.is_leader:
            return None
        return node_number(self.log.leader_hint)


def campaign(group_log: Any) -> None:
    """Ask the group driver to start an election with this member as candidate."""
    group_log.campaign()


def transport_name_of(node_id: int) -> str:
    """A node's name on the transport ("node3")."""
    from keeldb.cluster.group import member_name

    return member_name(node_id)


def node_number(name: str | None) -> int | None:
    """The node id in a transport name ("node3" -> 3), or None."""
    if name is None:
        return None
    from keeldb.cluster.group import member_node_id

    try:
        return int(member_node_id(name))
    except ValueError:
        return None


class StorageService:
    def __init__(
        self,
        node_id: int,
        ring: Ring,
        placements: dict[str, GroupPlacement],
        transport: Any,
        call: Caller,
        *,
        ttl_interval_seconds: float,
    ) -> None:
        self.node_id = node_id
        self.ring = ring
        self.placements = placements
        self.transport = transport
        self.call = call
        self.ttl_interval_seconds = ttl_interval_seconds
        self.replicas: dict[str, Replica] = {}
        # The metadata applied position each partition was last synced to, by this node as
        # metadata leader (forgotten when leadership moves: a new leader syncs again).
        self._synced: dict[str, int] = {}
        self._maintenance: asyncio.Task[None] | None = None
        # Leadership placement (see LOAD_WINDOW_SECONDS): requests served as leader in the
        # current sample, per group and sending node; when each sample started; when the
        # last window was looked at; when this node last moved or took each group's
        # leadership; the groups it leads because their traffic came from here; the "take
        # the leadership" requests in flight.
        self._origins: dict[str, dict[str, int]] = {}
        self._window_started = -math.inf
        self._moved_at: dict[str, float] = {}
        self._sampled_since: dict[str, float] = {}
        self._load_placed: set[str] = set()
        self._moves: set[asyncio.Task[None]] = set()
        self.stats = {"leadership_moves": 0, "leadership_taken": 0}
        # What this service answers, by transport channel (calls to this node's own storage
        # service skip the network and go straight here).
        self.handlers: dict[str, Callable[[str, Any], Awaitable[list[Any]]]] = {
            CHANNEL_OP: self.on_op,
            CHANNEL_CATALOG: self.on_catalog,
            CHANNEL_SYNC: self.on_sync,
            CHANNEL_TABLES: self.on_tables,
            CHANNEL_STATUS: self.on_status,
            CHANNEL_TXN: self.on_txn,
            CHANNEL_LEAD: self.on_lead,
        }
        # The partition leaders as the transaction coordinator reaches them (set by the node,
        # which owns the router that implements them).
        self.partitions_view: Any = None
        self._sync_lock = asyncio.Lock()
        self._data_dir: Path | None = None
        self._open_log: Callable[..., Awaitable[Any]] | None = None
        # The groups whose membership, learned from the metadata leader since this node
        # started, has this node as a full replica: only those serve eventually consistent
        # reads (a node replaced while it was down must not answer from its stale data).
        self.serving_groups: set[str] = set()
        # Extra channel handlers (membership and repair) are added by the node.

    # --- life cycle ----------------------------------------------------------------------

    async def open(self, data_dir: Path, open_log: Callable[..., Awaitable[Any]]) -> None:
        self._data_dir = data_dir
        self._open_log = open_log
        for group_id, placement in self.placements.items():
            if self.node_id not in placement.node_ids:
                continue
            await self.open_group(group_id, placement)
        for channel, handler in self.handlers.items():
            self.transport.register(channel, handler)
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    def group_dir(self, group_id: str) -> Path:
        assert self._data_dir is not None
        return self._data_dir / "groups" / group_id

    async def open_group(self, group_id: str, placement: GroupPlacement) -> Replica:
        """Open (or create) this node's replica of a group: its store, database and log.
        A member that joins a running group starts with the configuration that adds it."""
        assert self._open_log is not None
        group_dir = self.group_dir(group_id)
        group_dir.mkdir(parents=True, exist_ok=True)
        # A replica restarts with the configuration it was first created with (its log and
        # snapshots supersede it, docs/consensus.md "Restart"), not with today's members.
        placement = GroupPlacement(
            group_id, first_config(group_dir, placement.config), placement.preferred_leader
        )
        store = LmdbStore(group_dir / "store")
        database = Database(store)
        try:
            group_log = await self._open_log(group_id, placement, group_dir, store, database.apply)
        except BaseException:
            store.close()
            raise
        database.attach_log(group_log)
        # Items held by transactions prepared before the store's applied position.
        transactions_partition.recover(database)
        partition = None if group_id == META_GROUP else int(group_id[1:])
        replica = Replica(group_id, placement, store, database, group_log, partition)
        self.replicas[group_id] = replica
        return replica

    async def close_group(self, group_id: str, *, drop: bool) -> None:
        """Stop this node's replica of a group; with `drop`, delete its data too (it is no
        longer a member and the group no longer needs it)."""
        replica = self.replicas.pop(group_id, None)
        if replica is not None:
            if replica.ttl is not None:
                await replica.ttl.stop()
            try:
                await replica.log.close()
            except Exception:
                log.exception("closing the log of %s failed", group_id)
            replica.store.close()
        if drop and self._data_dir is not None:
            import shutil

            directory = self.group_dir(group_id)
            if directory.exists():
                await asyncio.get_running_loop().run_in_executor(
                    None, shutil.rmtree, directory, True
                )
                log.info("dropped the data of %s: this node is no longer a member", group_id)

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        for task in list(self._moves):
            task.cancel()
        for replica in self.replicas.values():
            if replica.ttl is not None:
                await replica.ttl.stop()
        for replica in self.replicas.values():
            try:
                await replica.log.close()
            except Exception:
                log.exception("closing the log of %s failed", replica.group_id)
        for replica in self.replicas.values():
            replica.store.close()

    # --- leadership ----------------------------------------------------------------------

    async def _leased(self, replica: Replica) -> list[Any] | None:
        """None when this replica may serve leader work now; otherwise the answer to send."""
        group_log = replica.log
        if group_log.read_lease():
            return None
        if not group_log.is_leader:
            return [REDIRECT, replica.leader()]
        # A leader refuses lease work between learning that entries are chosen and the end
        # of the Ready that applies them (under steady writes, much of the time), and while
        # a new leader waits out the old lease: wait for the driver's next round rather
        # than poll, so the request goes on as soon as the lease holds.
        if await group_log.wait_read_lease(LEASE_WAIT_SECONDS_MAX):
            return None
        if not group_log.is_leader:
            return [REDIRECT, replica.leader()]
        return [UNAVAILABLE, "the leader has no lease yet"]

    async def leased(self, replica: Replica) -> list[Any] | None:
        """None when this replica may serve leader work now; otherwise the answer to send."""
        return await self._leased(replica)

    def _not_leader(self, replica: Replica, error: Exception) -> list[Any]:
        return [REDIRECT, node_number(getattr(error, "leader_hint", None))]

    # --- kv.op ---------------------------------------------------------------------------

    async def on_op(self, sender: str, payload: Any) -> list[Any]:
        return await self.serve_op(sender, payload, payload.get("check", True), local=False)

    async def serve_op(
        self, sender: str, payload: dict[str, Any], check: bool, *, local: bool
    ) -> list[Any]:
        """One "kv.op" request. The router of this node calls it directly (`local`): with
        `check` False when it routed the keys with the ring this service checks them
        against (the same object), and then a client error is raised as it is, not
        encoded into an answer the router would only decode into the same error again."""
        admitted = self.admit(sender, payload, check)
        if admitted is None:
            # A leader without a valid lease: wait for it (or refuse), then go on.
            replica = self.replicas[payload["g"]]
            refused = await self._leased(replica)
            if refused is not None:
                return refused
            admitted = self._admit_leased(replica, sender, payload, check)
        if type(admitted) is list:
            return admitted
        return await self._run(admitted, payload["op"], payload["body"], local=local)

    def admit(
        self, sender: str, payload: dict[str, Any], check: bool
    ) -> Replica | list[Any] | None:
        """The checks of a "kv.op" request before its operation runs, made without waiting:
        the replica to run it on, or the refusal to answer, or None when the replica leads
        without a valid lease just now (`serve_op` waits for it; nothing was counted). The
        router of this node runs an admitted item request on the replica itself
        (`Router._item`), so that the operation is the only coroutine under it."""
        replica = self.replicas.get(payload["g"])
        if replica is None:
            return [REDIRECT, None]
        if payload["mode"] == MODE_EVENTUAL:
            if not self.may_read_eventually(replica) or (
                replica.store.applied_lsn() < payload.get("seen", 0) and not replica.log.is_leader
            ):
                # Too far behind, or behind what the router's clients have seen already.
                return [REDIRECT, replica.leader()]
            return self._admit_table(replica, payload, check)
        if not replica.log.read_lease():
            return None
        return self._admit_leased(replica, sender, payload, check)

    def _admit_leased(
        self, replica: Replica, sender: str, payload: dict[str, Any], check: bool
    ) -> Replica | list[Any]:
        """`admit` of leader work, once the lease holds: counted for the sender's node."""
        origins = self._origins.get(replica.group_id)
        if origins is None:
            origins = self._origins[replica.group_id] = {}
        origins[sender] = origins.get(sender, 0) + 1
        return self._admit_table(replica, payload, check)

    def _admit_table(
        self, replica: Replica, payload: dict[str, Any], check: bool
    ) -> Replica | list[Any]:
        """The last of `admit`: the tables the router expects, the index it knows of, and
        the keys' partition."""
        db = replica.database
        expected: dict[str, str | None] | None = payload.get("tables")
        if expected:
            for name, table_id in expected.items():
                table = catalog.find_table(db, name)
                if (table.table_id if table is not None else None) != table_id:
                    return [STALE_CATALOG]
        known: list[str] | None = payload.get("index")
        if known is not None:
            leads = replica.log.is_leader
            if not _has_index(db, known[0], known[1], built=not leads):
                # The router's catalog has the index and this replica's copy does not yet:
                # a follower behind its group sends the read to the leader (a catalog change
                # answers once every partition's leader has it), and so does one still
                # applying the leader's build of its entries; a leader has the router read
                # the catalog again and retry.
                return [STALE_CATALOG] if leads else [REDIRECT, replica.leader()]
        if check and replica.partition is not None:
            for partition in keyroute.partitions_of_request(
                db, self.ring, payload["op"], payload["body"]
            ):
                if partition != replica.partition:
                    return [WRONG_PARTITION]
        return replica

    def may_read_eventually(self, replica: Replica) -> bool:
        """Whether this replica may answer an eventually consistent read now: its view of
        the group is fresh (EVENTUAL_STALENESS_SECONDS_MAX) and, unless it leads, it lags
        the commit point it knows by at most EVENTUAL_LAG_ENTRIES_MAX entries (the leader
        has applied everything it acknowledged). A log replica, one still being rebuilt, or
        one whose membership the metadata leader has not confirmed never answers."""
        group_log = replica.log
        if BUGGIFY_LAGGING_READS or BUGGIFY_LOG_REPLICA_READS:
            return True
        if not group_log.is_leader and (
            replica.group_id not in self.serving_groups or group_log.replica.log_only
        ):
            return False
        if group_log.lag() > EVENTUAL_LAG_ENTRIES_MAX:
            return False
        staleness = group_log.staleness_seconds()
        return staleness is not None and staleness <= EVENTUAL_STALENESS_SECONDS_MAX

    async def _run(
        self, replica: Replica, op: str, body: dict[str, Any], *, local: bool = False
    ) -> list[Any]:
        try:
            result = await replica.database.dispatch(op, body)
        except ClientError as error:
            if local:
                raise
            return error_answer(error)
        except Exception as error:
            return self.refusal(replica, op, error)
        # The log position the answer reflects (this replica applied its own write before
        # answering): routers keep the highest they saw (`Router.seen`).
        return [OK, result, replica.store.applied_lsn()]

    def refusal(self, replica: Replica, op: str, error: Exception) -> list[Any]:
        """The answer to an operation that failed on `replica` with an operating error of
        its group; any other error is raised again."""
        from keeldb.cluster.group import AppendTimeout, GroupBusy, GroupClosed, NotLeader

        if isinstance(error, NotLeader):
            # Refused before a slot was taken, or the slot went to another value: either
            # way the operation did not happen here.
            return self._not_leader(replica, error)
        if isinstance(error, GroupBusy):
            return [UNAVAILABLE, "the leader's proposal queue is full"]
        if isinstance(error, (AppendTimeout, GroupClosed)):
            # The record may still be chosen: the outcome is unknown, so it is not retried.
            log.warning("%s on %s: outcome unknown: %s", op, replica.group_id, error)
            return error_answer(InternalServerError("Internal server error"))
        raise error

    # --- metadata ------------------------------------------------------------------------

    async def on_tables(self, sender: str, payload: Any) -> list[Any]:
        del sender, payload
        replica = self.replicas.get(META_GROUP)
        if replica is None:
            return [REDIRECT, None]
        refused = await self._leased(replica)
        if refused is not None:
            return refused
        db = replica.database
        return [OK, {"lsn": db.store.applied_lsn(), "tables": catalog_sync.catalog_snapshot(db)}]

    async def on_catalog(self, sender: str, payload: Any) -> list[Any]:
        del sender
        replica = self.replicas.get(META_GROUP)
        if replica is None:
            return [REDIRECT, None]
        refused = await self._leased(replica)
        if refused is not None:
            return refused
        answer = await self._run(replica, payload["op"], payload["body"])
        # The client hears of a change once every partition knows it, so that its next item
        # request finds the table wherever it lands.
        if (
            answer[0] == OK
            and payload.get("changes", False)
            and not await self.sync_partitions_within(CATALOG_SYNC_SECONDS_MAX)
        ):
            log.warning("catalog sync of some partitions is late; it will be retried")
        return answer

    async def sync_partitions_within(self, seconds: float) -> bool:
        """`sync_partitions` until every partition has the catalog (True) or `seconds`
        pass (False): a partition that has no leader yet is tried again once it may."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        pause = SYNC_PAUSE_SECONDS
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                if await asyncio.wait_for(self.sync_partitions(), remaining):
                    return True
            except TimeoutError:
                return False
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(2 * pause, SYNC_PAUSE_SECONDS_MAX)

    async def sync_partitions(self) -> bool:
        """Propose the metadata group's catalog to every partition that may lack it; True
        when every partition has it."""
        replica = self.replicas[META_GROUP]
        async with self._sync_lock:
            db = replica.database
            lsn = db.store.applied_lsn()
            record = catalog_sync.sync_record(lsn, catalog_sync.catalog_snapshot(db))
            groups = [
                partition_group(i)
                for i in range(len(self.ring))
                if self._synced.get(partition_group(i), -1) < lsn
            ]
            results = await asyncio.gather(
                *(self._sync_one(g, record) for g in groups), return_exceptions=True
            )
            for group_id, result in zip(groups, results, strict=True):
                if result is True:
                    self._synced[group_id] = lsn
            return all(result is True for result in results)

    async def _sync_one(self, group_id: str, record: dict[str, Any]) -> bool:
        placement = self.placements[group_id]
        candidates = [placement.preferred_leader] + [
            n for n in placement.node_ids if n != placement.preferred_leader
        ]
        tried: set[int] = set()
        node: int | None = candidates[0]
        for _ in range(2 * len(candidates)):
            if node is None or node in tried:
                node = next((n for n in candidates if n not in tried), None)
                if node is None:
                    return False
            tried.add(node)
            try:
                answer = await self.call(
                    node, CHANNEL_SYNC, {"g": group_id, "record": record}, SYNC_CALL_SECONDS
                )
            except TransportError as error:  # an unreachable or slow node: try another
                log.debug("catalog sync of %s via %s failed: %r", group_id, node, error)
                node = None
                continue
            if answer[0] == OK:
                return True
            node = answer[1] if answer[0] == REDIRECT else None
        return False

    async def on_sync(self, sender: str, payload: Any) -> list[Any]:
        del sender
        replica = self.replicas.get(payload["g"])
        if replica is None:
            return [REDIRECT, None]
        refused = await self._leased(replica)
        if refused is not None:
            return refused
        from keeldb.cluster.group import NotLeader

        record: dict[str, Any] = payload["record"]
        if catalog_sync.applied_meta_lsn(replica.database) >= record["meta_lsn"]:
            return [OK, None]
        try:
            async with catalog.catalog_lock(replica.database):
                await replica.database.propose(record)
        except NotLeader as error:
            return self._not_leader(replica, error)
        indexes.ensure_background(replica.database)
        return [OK, None]

    # --- transactions across partitions ---------------------------------------------------

    async def on_txn(self, sender: str, payload: Any) -> list[Any]:
        """One step of `keeldb.engine.transactions_coordinator`: prepare, commit or cancel a
        partition's share (partition leader), or a step of the coordinator ledger, which the
        metadata group keeps (its leader)."""
        del sender
        from keeldb.cluster.group import AppendTimeout, GroupBusy, GroupClosed, NotLeader

        replica = self.replicas.get(payload["g"])
        if replica is None:
            return [REDIRECT, None]
        refused = await self._leased(replica)
        if refused is not None:
            return refused
        db = replica.database
        step = payload["do"]
        try:
            if step == "prepare":
                result: Any = await transactions_partition.prepare(
                    db, payload["txid"], payload["ts"], payload["items"]
                )
            elif step == "commit":
                result = await transactions_partition.commit(db, payload["txid"])
            elif step == "cancel":
                result = await transactions_partition.cancel(db, payload["txid"])
            elif step == "read":
                result = transactions_partition.read_share(db, payload["ts"], payload["gets"])
            elif step == "ledger_step":
                result = await transactions_partition.ledger_step(db, payload["record"])
            elif step == "ledger_entries":
                result = transactions_partition.ledger_entries(db)
            elif step == "ledger_token":
                result = transactions_partition.ledger_token_committed(
                    db, payload["token"], payload["digest"], payload["now_ms"]
                )
            else:
                raise AssertionError(f"unknown transaction step {step!r}")
        except ClientError as error:
            return error_answer(error)
        except NotLeader as error:
            return self._not_leader(replica, error)
        except GroupBusy:
            return [UNAVAILABLE, "the leader's proposal queue is full"]
        except (AppendTimeout, GroupClosed) as error:
            if step in TXN_STEPS_RESENDABLE:
                # Commit and cancel are idempotent: the router sends them again.
                return [UNAVAILABLE, f"{step} outcome unknown: {error}"]
            log.warning("transaction %s on %s: outcome unknown: %s", step, replica.group_id, error)
            return error_answer(InternalServerError("Internal server error"))
        return [OK, result, replica.store.applied_lsn()]

    # --- background ----------------------------------------------------------------------

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            try:
                await self._maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster maintenance failed; retrying")

    async def _maintain_once(self) -> None:
        meta = self.replicas.get(META_GROUP)
        if meta is not None:
            if meta.log.is_leader and meta.log.read_lease():
                await self.sync_partitions()
                if self.partitions_view is not None and transactions_partition.ledger_entries(
                    meta.database
                ):
                    # Finish the transactions whose coordinator went silent.
                    await transactions_coordinator.recover_stale(
                        LocalLedger(meta.database), self.partitions_view, _now_ms()
                    )
            else:
                self._synced.clear()
        self._place_leaders(asyncio.get_running_loop().time())
        for replica in self.replicas.values():
            if replica.partition is None:
                continue
            leading = replica.log.is_leader and replica.log.read_lease()
            if leading:
                indexes.ensure_background(replica.database)
            # Only the leader deletes expired items; followers apply its deletes. A sweeper
            # runs once: a new leadership starts a new one.
            if leading and replica.ttl is None:
                replica.ttl = TtlSweeper(replica.database, self.ttl_interval_seconds)
                replica.ttl.start()
            elif not leading and replica.ttl is not None:
                sweeper, replica.ttl = replica.ttl, None
                await sweeper.stop()

    # --- leadership placement -------------------------------------------------------------

    def _place_leaders(self, now: float) -> None:
        """Once per LOAD_WINDOW_SECONDS: for each group this node leads whose traffic sample
        is complete, ask the member the sample points to (or the preferred leader) to take
        the leadership."""
        if now - self._window_started < LOAD_WINDOW_SECONDS:
            return
        self._window_started = now
        me = transport_name_of(self.node_id)
        for group_id, replica in self.replicas.items():
            group_log = replica.log
            if not group_log.is_leader:
                self._load_placed.discard(group_id)
                self._moved_at.pop(group_id, None)
                self._origins.pop(group_id, None)
                self._sampled_since.pop(group_id, None)
                continue
            if group_id not in self._moved_at:
                self._moved_at[group_id] = now  # leading since about now
                self._restart_sample(group_id, now)
                continue
            if now - self._moved_at[group_id] < MOVE_SECONDS_MIN:
                continue  # the sample goes on: it covers the traffic since the last move
            counts = self._origins.get(group_id, {})
            started = self._sampled_since.setdefault(group_id, now)
            if sum(counts.values()) < LOAD_REQUESTS_MIN and now - started < LOAD_SAMPLE_SECONDS_MAX:
                continue  # too few requests yet to tell a slow stream from an idle group
            self._restart_sample(group_id, now)
            target = self._leader_wanted(group_id, counts, me)
            log.debug(
                "%s: %.1f s of requests by origin %s, wanted leader %s",
                group_id,
                now - started,
                counts,
                target,
            )
            if target is None or not group_log.config.can_lead(NodeId(target)):
                continue
            self._moved_at[group_id] = now
            task = asyncio.get_running_loop().create_task(self._ask_to_lead(target, group_id))
            self._moves.add(task)
            task.add_done_callback(self._moves.discard)

    def _restart_sample(self, group_id: str, now: float) -> None:
        self._origins.pop(group_id, None)
        self._sampled_since[group_id] = now

    def _leader_wanted(self, group_id: str, counts: dict[str, int], me: str) -> int | None:
        """The node that should lead `group_id` instead of this one, or None to stay."""
        total = sum(counts.values())
        top, top_count = max(counts.items(), key=lambda kv: (kv[1], kv[0]), default=(me, 0))
        preferred = self.placements[group_id].preferred_leader
        if total >= LOAD_REQUESTS_MIN and top_count >= LOAD_SHARE_MIN * total:
            if top == me:
                self._load_placed.add(group_id)
                return None
            if group_id == META_GROUP:
                return None  # catalog traffic is light: the metadata leader stays put
            return node_number(top)
        even = total >= LOAD_REQUESTS_MIN and top_count <= EVEN_SHARE_MAX * total
        idle = total < LOAD_REQUESTS_MIN and group_id not in self._load_placed
        if (even or idle) and preferred != self.node_id:
            return preferred
        return None

    async def _ask_to_lead(self, node: int, group_id: str) -> None:
        try:
            answer = await self.call(node, CHANNEL_LEAD, {"g": group_id}, LEAD_CALL_SECONDS)
        except TransportError as error:
            log.info("asking node %s to lead %s failed: %r", node, group_id, error)
            return
        if answer[0] == OK and answer[1]:
            self.stats["leadership_moves"] += 1
            log.info("node %s takes the leadership of %s", node, group_id)

    async def on_lead(self, sender: str, payload: Any) -> list[Any]:
        """The group's leader asks this member to lead: it campaigns if it is a full,
        caught-up member that hears the leader. The election is the group's usual one: the
        new leader serves nothing until the old leader's lease has surely expired
        (docs/consensus.md, "Leases"), and the old leader stops serving as soon as it sees
        the higher ballot."""
        replica = self.replicas.get(payload["g"])
        if replica is None:
            return [OK, False]
        group_log = replica.log
        if group_log.is_leader:
            return [OK, True]
        if (
            group_log.replica.log_only
            or group_log.lag() > LEAD_LAG_ENTRIES_MAX
            or group_log.leader_hint != sender
            or not group_log.config.can_lead(NodeId(self.node_id))
        ):
            log.info(
                "not taking the leadership of %s that %s asks for: lag %d, leader %s",
                replica.group_id,
                sender,
                group_log.lag(),
                group_log.leader_hint,
            )
            return [OK, False]
        started = bool(group_log.campaign())
        if started:
            self.stats["leadership_taken"] += 1
            self._load_placed.add(replica.group_id)
            log.info("taking the leadership of %s, as %s asks", replica.group_id, sender)
        return [OK, started]

    # --- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        groups = {}
        for group_id, replica in self.replicas.items():
            group_log = replica.log
            groups[group_id] = {
                "leader": self.node_id
                if group_log.is_leader
                else node_number(group_log.leader_hint),
                "is_leader": bool(group_log.is_leader),
                "lease": bool(group_log.is_leader and group_log.read_lease()),
                "applied_lsn": replica.store.applied_lsn(),
                "lag": int(group_log.lag()),
                "commit": int(group_log.committed_lsn()),
                "members": list(replica.placement.node_ids),
                "state": replica_state(group_log, self.node_id),
                "config": [
                    [int(m.node_id), m.zone, bool(m.log_only)] for m in group_log.config.members
                ],
            }
        return {"node": self.node_id, "groups": groups}

    async def on_status(self, sender: str, payload: Any) -> list[Any]:
        del sender, payload
        return [OK, self.status()]


FIRST_CONFIG_FILE = "first_config.json"


def first_config(group_dir: Path, config: Config) -> Config:
    """The configuration this replica was first created with: `config` the first time (and
    recorded), what was recorded ever after."""
    import json

    path = group_dir / FIRST_CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = None
    if data is not None:
        members = tuple(
            Member(NodeId(int(n)), str(zone), log_only=bool(log_only))
            for n, zone, log_only in data["members"]
        )
        recorded = Config(members, int(data["q1"]), int(data["q2"]), int(data["epoch"]))
        recorded.validate()
        return recorded
    plain = {
        "members": [[int(m.node_id), m.zone, bool(m.log_only)] for m in config.members],
        "q1": config.q1,
        "q2": config.q2,
        "epoch": config.epoch,
    }
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        out.write(json.dumps(plain))
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    return config


def replica_state(group_log: Any, node_id: int) -> str:
    """full, log (a log-only member) or rebuilding (a full member still without state)."""
    member = group_log.config.member(node_id)
    if member is None:
        return "removed"
    if member.log_only:
        return "log"
    return "rebuilding" if group_log.replica.log_only else "full"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalLedger:
    """The coordinator ledger as the metadata leader sees it (`transactions_coordinator.Ledger`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def step(self, record: dict[str, Any]) -> bool:
        return await transactions_partition.ledger_step(self.db, record)

    async def entries(self) -> list[dict[str, Any]]:
        return transactions_partition.ledger_entries(self.db)


def _has_index(db: Database, table_name: str, index_name: str, *, built: bool) -> bool:
    """Whether this replica's catalog has the index, not being dropped (and its entries all
    built here, when `built`)."""
    found = catalog.find_index(db, table_name, index_name)
    return found is not None and (not built or found[1].status != STATUS_CREATING)
