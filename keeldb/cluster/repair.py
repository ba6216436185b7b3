"""Replica repair: the metadata leader replaces the replicas of nodes that stay down, and
moves the replicas of nodes being retired.

Owns failure detection (the metadata leader pings every storage node; one not answering
for `replace_after_seconds` is down) and the move of one replica of one group from node
`old` to node `new`, in the steps DynamoDB uses for a failed storage replica:

1. the membership document names `new` a log replica of the group in place of `old`; the
   group's leader changes the configuration to match (`GroupLog.change_config`: a
   configuration entry in the group's own log, docs/consensus.md "Reconfiguration"). From
   the slot it governs, `new` votes in both phases and keeps the log: the write quorum is
   whole again within seconds, with no state copied;
2. the document marks `new` rebuilding and the leader makes it a full member of the
   configuration; `new` loads a full member's state and applies the log since
   (`GroupLog.restore_state`), and only then may lead or serve reads;
3. once `new` reports a full replica, the document marks it full. `old`, if it comes back,
   sees that it is no longer a member and drops its data (`keeldb.cluster.node`).

In a cluster placed with log replicas (`aurora` with `log_replicas`), a new member that
replaced a zone's log replica stays one: after step 1 the document marks it `log-kept`
(`membership.stays_log`) and the move ends there; one that replaced a zone's full replica
goes on through steps 2 and 3. Replicas placed as log replicas are never "repaired" into
full ones.

Each step is idempotent and re-read from the document, so a new metadata leader resumes a
move where the old one left it. One move per group at a time.

It never changes a group's configuration itself (the group's leader does, through its log)
and never touches a replica's data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from keeldb.cluster import membership
from keeldb.cluster.placement import META_GROUP, place
from keeldb.cluster.protocol import CHANNEL_STATUS, OK, REDIRECT
from keeldb.net.transport import TransportError

log = logging.getLogger("keeldb.cluster.repair")

REPAIR_SECONDS = 0.5  # how often the metadata leader looks for dead nodes and moves
PING_SECONDS = 1.0  # one liveness call
RECONFIG_CALL_SECONDS = 20.0  # one configuration change on a group leader
STEP_PAUSE_SECONDS = 0.5  # between attempts of a step that did not succeed yet
MOVE_SECONDS_MAX = 600.0  # a move that takes longer is abandoned and started again
REPLACE_AFTER_SECONDS_DEFAULT = 30.0
# A new member counts as caught up (and may be promoted, or the move be done) when its log
# is at most this many entries behind the leader's commit point.
CAUGHT_UP_LAG_ENTRIES_MAX = 64


class LostLeadership(Exception):
    """This node stopped leading the metadata group during a move."""


class TargetDown(Exception):
    """The node a replica is moving to went down itself; the move is chosen again."""


class Repair:
    """The repair loop of one node; it acts only while the node leads the metadata group."""

    def __init__(self, node: Any, replace_after_seconds: float) -> None:
        self.node = node  # keeldb.cluster.node.ClusterNode
        self.replace_after_seconds = replace_after_seconds
        self.last_seen: dict[int, float] = {}
        self.moves: dict[str, asyncio.Task[None]] = {}
        self._leading = False
        self._warned: set[tuple[str, int]] = set()  # (group, node) without a target, said once

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_SECONDS)
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replica repair failed; retrying")

    def _meta(self) -> Any:
        storage = self.node.storage
        if storage is None:
            return None
        meta = storage.replicas.get(META_GROUP)
        # Leading is enough (no lease needed): every change is proposed through the
        # metadata log and applied only if newer, so a deposed leader's proposal changes
        # nothing. A lease would come and go on a loaded machine and stop moves midway.
        if meta is None or not meta.log.is_leader:
            return None
        return meta

    async def pass_once(self) -> None:
        meta = self._meta()
        loop = asyncio.get_running_loop()
        now = loop.time()
        if meta is None:
            if self._leading:
                self._leading = False
                for task in self.moves.values():
                    task.cancel()
                self.moves.clear()
            return
        doc = membership.load(meta.database)
        storage_nodes = [n for n in membership.nodes(self.node.spec, doc) if n.stores]
        if not self._leading:
            # A new leader gives every node a whole timeout before calling it down.
            self._leading = True
            self.last_seen = {n.node_id: now for n in storage_nodes}
        await self._ping(storage_nodes, now)
        live = {n for n, seen in self.last_seen.items() if now - seen < self.replace_after_seconds}
        self.moves = {g: t for g, t in self.moves.items() if not t.done()}
        base = place(self.node.spec)
        gone = membership.retired(doc)
        load_by_node: dict[int, int] = {}
        for group_id in base:
            for n, _z, _s in membership.group_members(doc, base, group_id):
                load_by_node[int(n)] = load_by_node.get(int(n), 0) + 1
        for group_id in base:
            if group_id in self.moves:
                continue
            members = membership.group_members(doc, base, group_id)
            leaving = [int(n) for n, _z, _s in members if int(n) not in live or int(n) in gone]
            if leaving:
                # The first leaving member some node can take over (one move per group).
                old, new = leaving[0], None
                for candidate in leaving:
                    new = membership.choose_target(
                        self.node.spec, doc, members, candidate, live, load_by_node
                    )
                    if new is not None:
                        old = candidate
                        break
                    if (group_id, candidate) not in self._warned:
                        self._warned.add((group_id, candidate))
                        log.warning(
                            "group %s: no node can take the replica of node %d without "
                            "breaking the zone rule; the group runs without it",
                            group_id,
                            candidate,
                        )
                if new is None:
                    continue
                load_by_node[new] = load_by_node.get(new, 0) + 1
                log.warning(
                    "group %s: moving the replica of node %d (%s) to node %d",
                    group_id,
                    old,
                    "retiring" if old in gone else "down",
                    new,
                )
                self._start(group_id, old, new)
            elif not membership.settled(members):
                self._start(group_id, None, None)  # resume a move a former leader began

    def _start(self, group_id: str, old: int | None, new: int | None) -> None:
        task = asyncio.get_running_loop().create_task(self._move(group_id, old, new))
        self.moves[group_id] = task

    async def _ping(self, storage_nodes: list[Any], now: float) -> None:
        async def one(node_id: int) -> None:
            try:
                answer = await self.node.call(node_id, membership.CHANNEL_PING, {}, PING_SECONDS)
            except TransportError:
                return
            if answer and answer[0] == OK:
                self.last_seen[node_id] = asyncio.get_running_loop().time()

        for n in storage_nodes:
            self.last_seen.setdefault(n.node_id, now)
        await asyncio.gather(*(one(n.node_id) for n in storage_nodes))

    # --- one move --------------------------------------------------------------------------

    async def _move(self, group_id: str, old: int | None, new: int | None) -> None:
        try:
            await asyncio.wait_for(self._move_steps(group_id, old, new), MOVE_SECONDS_MAX)
        except LostLeadership:
            log.info("group %s: the move stops here; the next metadata leader resumes it", group_id)
        except TargetDown as error:
            log.warning(
                "group %s: node %s went down during the move; moving again", group_id, error
            )
        except TimeoutError:
            log.warning("group %s: the move did not finish in time; it will be retried", group_id)

    async def _propose(self, doc: dict[str, Any]) -> bool:
        """Propose `doc` if the document is still the one it was made from."""
        meta = self._meta()
        if meta is None:
            raise LostLeadership
        version = int(doc["version"])

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            return doc if int(current["version"]) == version - 1 else None

        result = await self.node.members.propose(meta, change)
        return result is doc

    def _doc(self) -> dict[str, Any] | None:
        meta = self._meta()
        return None if meta is None else membership.load(meta.database)

    async def _move_steps(self, group_id: str, old: int | None, new: int | None) -> None:
        base = place(self.node.spec)
        q1, q2 = base[group_id].config.q1, base[group_id].config.q2
        # Step 1: the document names `new` a log replica instead of `old`.
        if old is not None and new is not None:
            while True:
                doc = self._doc()
                if doc is None:
                    raise LostLeadership
                members = membership.group_members(doc, base, group_id)
                if any(int(n) == new for n, _z, _s in members):
                    break
                if not any(int(n) == old for n, _z, _s in members):
                    log.info("group %s: node %d was moved already", group_id, old)
                    return
                zone = membership_zone(self.node.spec, doc, new)
                changed = [m for m in members if int(m[0]) != old] + [[new, zone, membership.LOG]]
                if await self._propose(membership.with_group(doc, group_id, changed, q1, q2)):
                    break
                await asyncio.sleep(STEP_PAUSE_SECONDS)
        while True:
            doc = self._doc()
            if doc is None:
                raise LostLeadership
            members = membership.group_members(doc, base, group_id)
            pending = [m for m in members if m[2] not in membership.SETTLED_STATES]
            if not pending:
                log.warning(
                    "group %s: every member is in the state it is meant to stay in again: %s",
                    group_id,
                    [int(m[0]) for m in members],
                )
                return
            target = pending[0]
            if target[2] == membership.LOG:
                # The target runs its (empty) log replica first: once the configuration
                # counts on it, the group may need its votes to choose anything, the
                # metadata group's new leader included.
                await self._wait_state(group_id, int(target[0]), membership.LOG, caught_up=False)
                # The group's configuration makes it a log replica (the write quorum is
                # whole again once this is chosen), then a full member to be rebuilt.
                await self._reconfigure(group_id, doc, members, q1, q2)
                # Promote only a log replica that is running and caught up: then the write
                # quorum is whole and the log it keeps is the group's.
                await self._wait_state(group_id, int(target[0]), membership.LOG)
                # A replica that took a log replica's place stays one (its zone has a full
                # replica); any other becomes a full member to be rebuilt.
                state = (
                    membership.LOG_KEPT
                    if membership.stays_log(self.node.spec, members, int(target[0]))
                    else membership.REBUILDING
                )
                promoted = [[n, z, state if int(n) == int(target[0]) else s] for n, z, s in members]
                await self._propose(membership.with_group(doc, group_id, promoted, q1, q2))
                continue
            # Rebuilding: a full member of the configuration, loading a full member's state.
            await self._reconfigure(group_id, doc, members, q1, q2)
            await self._wait_state(group_id, int(target[0]), membership.FULL)
            done = [
                [n, z, membership.FULL if int(n) == int(target[0]) else s] for n, z, s in members
            ]
            await self._propose(membership.with_group(doc, group_id, done, q1, q2))

    async def _reconfigure(
        self, group_id: str, doc: dict[str, Any], members: list[list[Any]], q1: int, q2: int
    ) -> None:
        """Until the group's leader reports its configuration equal to `members`."""
        peers = {
            str(n.node_id): [n.host, n.peer_port] for n in membership.nodes(self.node.spec, doc)
        }
        payload = {"g": group_id, "members": members, "q1": q1, "q2": q2, "peers": peers}
        # Members that may lead, the ones known down last (a call to a dead node may wait
        # out its whole timeout), the router's idea of the leader first.
        candidates = [int(n) for n, _z, s in members if s not in membership.LOG_STATES]
        candidates.sort(key=lambda n: (self._unreachable(n), n))
        router = self.node.router
        believed = None if router is None else router.leaders.get(group_id)
        if believed in candidates and not self._unreachable(believed):
            candidates.remove(believed)
            candidates.insert(0, believed)
        node: int | None = None
        attempt = 0
        while True:
            if self._meta() is None:
                raise LostLeadership
            if node is None:
                live = [n for n in candidates if not self._unreachable(n)] or candidates
                node = live[attempt % len(live)]
            attempt += 1
            try:
                answer = await self.node.call(
                    node, membership.CHANNEL_RECONFIG, payload, RECONFIG_CALL_SECONDS
                )
            except TransportError as error:
                log.info("group %s: reconfiguration via %s failed: %r", group_id, node, error)
                node = None
                await asyncio.sleep(STEP_PAUSE_SECONDS)
                continue
            if answer[0] == OK:
                log.info("group %s: configuration %s", group_id, answer[1])
                return
            if attempt % 10 == 1:
                log.info("group %s: reconfiguration via %s: %s", group_id, node, answer)
            hint = answer[1] if answer[0] == REDIRECT else None
            # The leader may be the member being moved away (a retiring node still leads
            # until the configuration without it takes effect): follow the hint anywhere.
            node = int(hint) if isinstance(hint, int) and str(hint) in peers else None
            await asyncio.sleep(STEP_PAUSE_SECONDS)

    def _unreachable(self, node_id: int) -> bool:
        """Down, or not connected now (a call to it would wait for a reconnection)."""
        if node_id == self.node.me.node_id:
            return False
        return self._down(node_id) or not self.node.transport.is_connected(f"node{node_id}")

    def _down(self, node_id: int) -> bool:
        seen = self.last_seen.get(node_id)
        now = asyncio.get_running_loop().time()
        return seen is not None and now - seen >= self.replace_after_seconds

    async def _wait_state(
        self, group_id: str, node_id: int, state: str, *, caught_up: bool = True
    ) -> None:
        """Until `node_id` reports its replica of the group in `state` (and caught up with
        the leader, unless `caught_up` is False)."""
        while True:
            if self._meta() is None:
                raise LostLeadership
            if self._down(node_id):
                raise TargetDown(node_id)
            try:
                answer = await self.node.call(node_id, CHANNEL_STATUS, {}, PING_SECONDS)
                mine = answer[1]["groups"].get(group_id) if answer[0] == OK else None
            except (TransportError, KeyError, TypeError):
                mine = None
            if mine is not None and mine.get("state") == state:
                if not caught_up:
                    return
                heard = int(mine.get("commit", 0)) > 0  # it has heard from the leader
                if heard and int(mine.get("lag", 0)) <= CAUGHT_UP_LAG_ENTRIES_MAX:
                    return
            await asyncio.sleep(STEP_PAUSE_SECONDS)


def membership_zone(spec: Any, doc: dict[str, Any], node_id: int) -> str:
    for node in membership.nodes(spec, doc):
        if node.node_id == node_id:
            return node.zone
    raise KeyError(node_id)
