"""A node's part in cluster membership: learning the membership document, following it
(opening the replicas of groups the node joins, rebuilding promoted log replicas, retiring
replicas of groups it left), and answering the membership channels.

Owns, on every node:

- the membership poll: every `POLL_SECONDS` the document is read from the metadata leader
  (locally when this node leads the metadata group) and applied; the last one applied is
  kept in `DATA_DIR/membership.json` so that a restarted node that joined groups reopens
  them before the metadata group answers;
- the transport channels `kv.members`, `kv.join`, `kv.retire` (metadata leader),
  `kv.reconfig` (a group leader changes its configuration), `kv.ping`;
- the HTTP endpoints `/keeldb/cluster/join` and `/keeldb/cluster/retire`, authenticated by an
  HMAC of the body with the cluster secret (the same secret the transport uses);
- the repair loop (`keeldb.cluster.repair`), which acts only on the metadata leader.

A node removed from a group (its replica replaced while it was down, or moved away when it
retires) closes that replica as soon as it learns so, never serves eventually consistent
reads from it (only groups the leader's document names it a full member of do), and drops
its data once the group's new member is a full replica.

It never changes a group's configuration except through that group's leader
(`GroupLog.change_config`), and never edits the cluster file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

from keeldb.api.server import RestResponse
from keeldb.cluster import membership, repair
from keeldb.cluster.placement import META_GROUP
from keeldb.cluster.protocol import OK, REDIRECT, UNAVAILABLE
from keeldb.cluster.topology import ClusterSpec, NodeSpec, TopologyError
from keeldb.net.transport import TransportError

log = logging.getLogger("keeldb.cluster.membership")

POLL_SECONDS = 0.5
MEMBERS_CALL_SECONDS = 2.0
JOIN_CALL_SECONDS = 10.0
RECONFIG_SECONDS = 15.0  # one configuration change on a group leader
JOIN_PATH = "/keeldb/cluster/join"
RETIRE_PATH = "/keeldb/cluster/retire"
MAC_HEADER = "x-keeldb-mac"
# A signed request older than this is refused (replays of a captured request).
SIGNED_AGE_SECONDS_MAX = 300.0
DOC_FILE = "membership.json"
REPLACE_AFTER_ENV = "KEELDB_REPLACE_AFTER_SECONDS"


class MembershipError(Exception):
    """A join or retire request that cannot be done; the message says why."""


def sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed_body(secret: bytes, payload: dict[str, Any]) -> tuple[bytes, str]:
    body = json.dumps(dict(payload, at=time.time())).encode()
    return body, sign(secret, body)


def verify(secret: bytes, body: bytes, mac: str | None) -> dict[str, Any]:
    """The payload of a signed request; MembershipError when the signature or age is wrong."""
    if not mac or not hmac.compare_digest(sign(secret, body), mac):
        raise MembershipError("the request is not signed with the cluster secret")
    try:
        payload = json.loads(body)
    except ValueError:
        raise MembershipError("the request body is not JSON") from None
    if not isinstance(payload, dict) or abs(time.time() - float(payload.get("at", 0))) > (
        SIGNED_AGE_SECONDS_MAX
    ):
        raise MembershipError("the signed request is too old")
    return payload


def post_signed(endpoint: str, path: str, secret: bytes, payload: dict[str, Any]) -> Any:
    """A signed request to a node's HTTP endpoint (blocking; for the CLI and `--join`)."""
    import urllib.error
    import urllib.request

    body, mac = signed_body(secret, payload)
    request = urllib.request.Request(
        endpoint + path, data=body, method="POST", headers={MAC_HEADER: mac}
    )
    try:
        with urllib.request.urlopen(request, timeout=JOIN_CALL_SECONDS + 5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error", str(error))
        except ValueError:
            reason = str(error)
        raise MembershipError(reason) from None


class MembershipService:
    def __init__(self, node: Any, secret: bytes, doc: dict[str, Any]) -> None:
        self.node = node  # keeldb.cluster.node.ClusterNode
        self.secret = secret
        self.doc = doc
        self.lock = asyncio.Lock()  # one document proposal at a time (metadata leader)
        self._apply_lock = asyncio.Lock()
        self._rebuilds: dict[str, asyncio.Task[bool]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.repair = repair.Repair(node, replace_after_seconds(node.spec, node.config))
        self.confirmed = False

    # --- start and stop ----------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        return {
            membership.CHANNEL_MEMBERS: self.on_members,
            membership.CHANNEL_JOIN: self.on_join,
            membership.CHANNEL_RETIRE: self.on_retire,
            membership.CHANNEL_RECONFIG: self.on_reconfig,
            membership.CHANNEL_PING: self.on_ping,
        }

    def mount(self, server: Any) -> None:
        server.mount(JOIN_PATH, self._on_join_request)
        server.mount(RETIRE_PATH, self._on_retire_request)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll()))
        if self.node.storage is not None:
            self._tasks.append(loop.create_task(self.repair.run()))

    async def close(self) -> None:
        tasks = self._tasks + list(self._rebuilds.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- learning the document -----------------------------------------------------------

    def _meta_leader(self) -> Any:
        storage = self.node.storage
        meta = None if storage is None else storage.replicas.get(META_GROUP)
        if meta is not None and meta.log.is_leader and meta.log.read_lease():
            return meta
        return None

    async def fetch(self) -> dict[str, Any] | None:
        """The metadata leader's document, or None when no leader answers."""
        meta = self._meta_leader()
        if meta is not None:
            return membership.load(meta.database)
        answer = await self.call_meta(membership.CHANNEL_MEMBERS, {}, MEMBERS_CALL_SECONDS)
        return None if answer is None else answer

    async def call_meta(self, channel: str, payload: Any, timeout: float) -> Any:
        """The body of the metadata leader's "ok" answer; None when none answered."""
        # The metadata group's members as this node knows them, then every other storage
        # node (a node back from a long absence may know an old membership): any of them
        # names the leader.
        candidates = list(self.node.placements[META_GROUP].node_ids)
        candidates += [
            n.node_id
            for n in membership.nodes(self.node.spec, self.doc)
            if n.stores and n.node_id not in candidates
        ]
        node: int | None = self.node.router.leaders.get(META_GROUP) if self.node.router else None
        tried: set[int] = set()
        for _ in range(2 * len(candidates)):
            if node is None or node in tried or node not in candidates:
                node = next((n for n in candidates if n not in tried), None)
                if node is None:
                    return None
            tried.add(node)
            try:
                answer = await self.node.call(node, channel, payload, timeout)
            except TransportError:
                node = None
                continue
            if answer[0] == OK:
                return answer[1]
            if answer[0] not in (REDIRECT, UNAVAILABLE):
                raise MembershipError(str(answer[1]))
            node = answer[1] if answer[0] == REDIRECT else None
        return None

    async def _poll(self) -> None:
        while True:
            try:
                doc = await self.fetch()
                if doc is not None:
                    await self.apply(doc, confirmed=True)
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("membership poll failed; retrying")
            await asyncio.sleep(POLL_SECONDS)

    async def apply(self, doc: dict[str, Any], *, confirmed: bool) -> None:
        """Follow a document: peers, placements, replicas to open and to retire."""
        async with self._apply_lock:
            if int(doc["version"]) < int(self.doc["version"]):
                return
            if int(doc["version"]) > int(self.doc["version"]):
                self.doc = doc
                save_doc(self.node.config.data_dir, doc)
            self.confirmed = self.confirmed or confirmed
            node = self.node
            me = node.me.node_id
            for other in membership.nodes(node.spec, doc):
                if other.node_id != me:
                    node.transport.add_peer(f"node{other.node_id}", other.host, other.peer_port)
            placements = membership.placements(node.spec, doc)
            node.placements.clear()
            node.placements.update(placements)
            if node.router is not None:
                for group_id, placement in placements.items():
                    if node.router.leaders.get(group_id) not in placement.node_ids:
                        node.router.leaders[group_id] = placement.preferred_leader
            storage = node.storage
            if storage is None:
                return
            for group_id, placement in placements.items():
                replica = storage.replicas.get(group_id)
                if replica is not None:
                    replica.placement = placement
                elif me in placement.node_ids:
                    log.info("opening a replica of %s (%s)", group_id, placement.config)
                    await storage.open_group(group_id, placement)
            if self.confirmed:
                base = membership.placements(node.spec, membership.empty())
                storage.serving_groups = {
                    g
                    for g in placements
                    if any(
                        int(n) == me and s == membership.FULL
                        for n, _z, s in membership.group_members(self.doc, base, g)
                    )
                }

    async def _follow(self) -> None:
        """Retire the replicas of groups this node left; rebuild promoted log replicas."""
        storage = self.node.storage
        if storage is None or not self.confirmed:
            return
        from keeldb.cluster.placement import place

        me = self.node.me.node_id
        base = place(self.node.spec)
        for group_id in list(storage.replicas):
            members = membership.group_members(self.doc, base, group_id)
            if any(int(n) == me for n, _z, _s in members):
                continue
            # Not a member any more. Until the member that replaced it is full, the group's
            # new configuration may not have taken effect yet, so the replica keeps voting
            # (it serves no reads: `serving_groups` leaves it out); then it goes, with its data.
            if membership.settled(members):
                log.warning(
                    "this node is no longer a member of %s: its replica is retired and its "
                    "data dropped",
                    group_id,
                )
                await storage.close_group(group_id, drop=True)
        groups_dir = storage.group_dir(META_GROUP).parent
        if groups_dir.is_dir():
            for directory in sorted(groups_dir.iterdir()):
                group_id = directory.name
                if group_id in storage.replicas or group_id not in base:
                    continue
                members = membership.group_members(self.doc, base, group_id)
                if membership.settled(members) and not any(int(n) == me for n, _z, _s in members):
                    await storage.close_group(group_id, drop=True)
        from keeldb.cluster.storage import replica_state

        for group_id, replica in storage.replicas.items():
            task = self._rebuilds.get(group_id)
            if task is not None and not task.done():
                continue
            if replica_state(replica.log, me) == membership.REBUILDING:
                log.info("rebuilding the replica of %s from a full member", group_id)
                self._rebuilds[group_id] = asyncio.get_running_loop().create_task(
                    replica.log.restore_state()
                )

    # --- channels ---------------------------------------------------------------------------

    async def on_ping(self, sender: str, payload: Any) -> list[Any]:
        del sender, payload
        return [OK, self.node.me.node_id]

    async def on_members(self, sender: str, payload: Any) -> list[Any]:
        del sender, payload
        meta = await self._leased_meta()
        if isinstance(meta, list):
            return meta
        return [OK, membership.load(meta.database)]

    async def _leased_meta(self) -> Any:
        storage = self.node.storage
        replica = None if storage is None else storage.replicas.get(META_GROUP)
        if replica is None:
            return [REDIRECT, None]
        refused = await storage.leased(replica)
        return refused if refused is not None else replica

    async def propose(self, meta: Any, change: Any) -> dict[str, Any]:
        """Apply `change(doc) -> new doc | None` to the metadata leader's document."""
        async with self.lock:
            doc = membership.load(meta.database)
            new = change(doc)
            if new is not None:
                await meta.database.propose(membership.record(new))
                doc = new
        await self.apply(doc, confirmed=True)
        return doc

    async def on_join(self, sender: str, payload: Any) -> list[Any]:
        del sender
        meta = await self._leased_meta()
        if isinstance(meta, list):
            return meta
        try:
            node = membership.node_from_json(payload["node"])
            if node.role not in ("storage", "router", "both") or not node.zone:
                raise TopologyError("a node needs a zone and a role")
            doc = await self.propose(meta, lambda d: membership.add_node(d, self.node.spec, node))
        except (TopologyError, KeyError, TypeError) as error:
            return ["error", str(error)]
        log.warning("node %d (%s) joined the cluster", node.node_id, node.zone)
        return [OK, {"cluster": self.node.spec.to_json(), "membership": doc}]

    async def on_retire(self, sender: str, payload: Any) -> list[Any]:
        del sender
        meta = await self._leased_meta()
        if isinstance(meta, list):
            return meta
        node_id = int(payload["node"])
        known = {
            n.node_id for n in membership.nodes(self.node.spec, membership.load(meta.database))
        }
        if node_id not in known:
            return ["error", f"node {node_id} is not in the cluster"]

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if node_id in membership.retired(doc):
                return None
            out = membership.next_version(doc)
            out["retired"] = sorted({*out["retired"], node_id})
            return out

        doc = await self.propose(meta, change)
        base = membership.placements(self.node.spec, membership.empty())
        holding = [
            g
            for g in base
            if any(int(n) == node_id for n, _z, _s in membership.group_members(doc, base, g))
        ]
        unsettled = [
            g for g in base if not membership.settled(membership.group_members(doc, base, g))
        ]
        return [OK, {"holding": holding, "moving": unsettled}]

    async def on_reconfig(self, sender: str, payload: Any) -> list[Any]:
        """Make a group's configuration the one `payload` names (its leader only)."""
        del sender
        from keeldb.cluster.group import AppendTimeout, GroupBusy, NotLeader
        from keeldb.cluster.storage import node_number
        from keeldb.consensus.types import ConfigError

        storage = self.node.storage
        replica = None if storage is None else storage.replicas.get(payload["g"])
        if replica is None:
            return [REDIRECT, None]
        refused = await storage.leased(replica)
        if refused is not None:
            return refused
        for node_id, (host, port) in payload.get("peers", {}).items():
            if int(node_id) != self.node.me.node_id:
                self.node.transport.add_peer(f"node{int(node_id)}", str(host), int(port))
        target = membership.config_of(payload["members"], int(payload["q1"]), int(payload["q2"]))
        current = replica.log.config
        if _same(current, target):
            return [OK, str(current)]
        try:
            done = await replica.log.change_config(target, RECONFIG_SECONDS)
        except NotLeader as error:
            return [REDIRECT, node_number(error.leader_hint)]
        except (GroupBusy, AppendTimeout) as error:
            return [UNAVAILABLE, str(error)]
        except ConfigError as error:
            return ["error", str(error)]
        log.warning("group %s: configuration now %s", payload["g"], done)
        return [OK, str(done)]

    # --- HTTP ---------------------------------------------------------------------------------

    async def _on_join_request(self, request: Any) -> RestResponse:
        try:
            payload = verify(self.secret, request.body, request.headers.get(MAC_HEADER))
            answer = await self.call_meta(
                membership.CHANNEL_JOIN, {"node": payload["node"]}, JOIN_CALL_SECONDS
            )
        except (MembershipError, KeyError, TypeError) as error:
            return _json(400, {"error": str(error)})
        if answer is None:
            return _json(503, {"error": "the metadata group has no leader; try again"})
        return _json(200, answer)

    async def _on_retire_request(self, request: Any) -> RestResponse:
        try:
            payload = verify(self.secret, request.body, request.headers.get(MAC_HEADER))
            answer = await self.call_meta(
                membership.CHANNEL_RETIRE, {"node": int(payload["node"])}, JOIN_CALL_SECONDS
            )
        except (MembershipError, KeyError, TypeError, ValueError) as error:
            return _json(400, {"error": str(error)})
        if answer is None:
            return _json(503, {"error": "the metadata group has no leader; try again"})
        return _json(200, answer)

    def status(self) -> dict[str, Any]:
        return {
            "membership": self.doc,
            "nodes": [n.to_json() for n in membership.nodes(self.node.spec, self.doc)],
            "retired": sorted(membership.retired(self.doc)),
        }


def _same(a: Any, b: Any) -> bool:
    def key(config: Any) -> tuple[Any, ...]:
        members = tuple(sorted((int(m.node_id), m.zone, bool(m.log_only)) for m in config.members))
        return (members, config.q1, config.q2)

    return key(a) == key(b)


def _json(status: int, body: Any) -> RestResponse:
    return RestResponse(status, json.dumps(body).encode(), "application/json")


def replace_after_seconds(spec: ClusterSpec, config: Any) -> float:
    """How long a node may stay down before its replicas are replaced: the environment
    (tests), else the cluster file's `replace_after_seconds`, else the default."""
    import os

    for value in (os.environ.get(REPLACE_AFTER_ENV), spec.extra.get("replace_after_seconds")):
        if value is not None:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                continue
            if seconds > 0:
                return seconds
    del config
    return repair.REPLACE_AFTER_SECONDS_DEFAULT


def load_doc(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / DOC_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return membership.empty()
    return doc if isinstance(doc, dict) and "version" in doc else membership.empty()


def save_doc(data_dir: Path, doc: dict[str, Any]) -> None:
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (DOC_FILE + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path / DOC_FILE)


def join_cluster(endpoint: str, secret: bytes, me: NodeSpec) -> tuple[ClusterSpec, dict[str, Any]]:
    """Ask a running node to add `me` to the cluster; the cluster file and the document."""
    answer = post_signed(endpoint, JOIN_PATH, secret, {"node": me.to_json()})
    spec = ClusterSpec.from_json(answer["cluster"])
    return spec, answer["membership"]
