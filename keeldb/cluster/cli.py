"""`keeldb cluster up | down | status`, and `keeldb serve` as a cluster node.

Owns the local-cluster workflow on one machine: `up` chooses free loopback ports, writes the
cluster file and a fresh cluster secret under the data directory, starts one `keeldb serve
--cluster-config FILE --node-id N` process per node (each in its own session, logs under
DIR/nodes/nN/), records their PIDs under DIR/pids/, waits until each serves and the
metadata group answers, and prints the client endpoints. `down` stops exactly the recorded
PIDs (SIGTERM, then SIGKILL after a grace period). `status` asks the nodes for their view
of the groups and shows nodes, zones, partitions, leaders, replica health and lag.

It never runs database code in the `keeldb` process itself: nodes are separate processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from keeldb.cluster import topology
from keeldb.cluster.placement import LOG_REPLICAS_KEY, META_GROUP, partition_group, place

DATA_DIR_DEFAULT = Path("keeldb-cluster")
START_SECONDS_MAX = 60.0  # for every node to serve and the metadata group to answer
STOP_SECONDS_MAX = 15.0  # SIGTERM grace before SIGKILL
STATUS_SECONDS_MAX = 3.0  # per HTTP status request
POLL_SECONDS = 0.1
ZONE_NAMES = "abcdefghijklmnopqrstuvwxyz"
RETIRE_SECONDS_MAX = 300.0  # for a retiring node's replicas to be full elsewhere
JOINED_FILE = "joined.json"  # nodes added with `add-node` (the cluster file lists the rest)


def register(commands: Any) -> None:
    """Add `keeldb cluster ...` to the `keeldb` parser's subcommands."""
    cluster = commands.add_parser("cluster", help="start, inspect and stop a local cluster")
    sub = cluster.add_subparsers(dest="cluster_command", required=True)

    up = sub.add_parser("up", help="start a local cluster on loopback")
    up.add_argument("--nodes", type=int, default=3, help="storage nodes (default 3)")
    up.add_argument("--zones", type=int, default=3, help="zones to spread them over (default 3)")
    up.add_argument("--profile", choices=topology.PROFILES, default="standard")
    up.add_argument("--partitions", type=int, default=topology.PARTITIONS_DEFAULT)
    up.add_argument("--data-dir", type=Path, default=DATA_DIR_DEFAULT)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--log-level", default="warning")
    up.add_argument("--credentials", type=Path, metavar="FILE", help="passed to every node's serve")
    up.add_argument(
        "--follower-reads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let a router answer eventually consistent reads from its own replica while it "
        "is up to date enough (they may miss the latest writes, as DynamoDB's may); "
        "--no-follower-reads sends them to the leader (default: on)",
    )
    up.add_argument(
        "--log-replicas",
        action="store_true",
        help="aurora: make the second replica of each zone a log replica (it votes and keeps "
        "the log, applies nothing, never leads or serves reads); see docs/cluster.md",
    )
    up.add_argument(
        "--replace-after",
        type=float,
        metavar="SECONDS",
        help="how long a node may stay down before its replicas are replaced on other nodes "
        "(default 30)",
    )
    up.add_argument(
        "--backup-dir",
        type=Path,
        metavar="DIR",
        help="the backup store every node shares (default: DATA_DIR/backups)",
    )
    up.add_argument(
        "--fault-endpoint",
        action="store_true",
        help="let tests drive each node's transport fault switch over HTTP (loopback only)",
    )
    up.set_defaults(run=run_up)

    down = sub.add_parser("down", help="stop the local cluster started with `up`")
    down.add_argument("--data-dir", type=Path, default=DATA_DIR_DEFAULT)
    down.add_argument("--log-level", default="warning")
    down.set_defaults(run=run_down)

    add = sub.add_parser("add-node", help="start one more node that joins the running cluster")
    add.add_argument("--zone", help="its zone (default: the zone with the fewest nodes)")
    add.add_argument("--role", choices=topology.ROLES, default="both")
    add.add_argument("--data-dir", type=Path, default=DATA_DIR_DEFAULT)
    add.add_argument("--log-level", default="warning")
    add.set_defaults(run=run_add_node)

    retire = sub.add_parser(
        "retire", help="move a live node's replicas to other nodes, then stop it"
    )
    retire.add_argument("--node", type=int, required=True, metavar="N")
    retire.add_argument("--data-dir", type=Path, default=DATA_DIR_DEFAULT)
    retire.add_argument(
        "--timeout", type=float, default=RETIRE_SECONDS_MAX, help="seconds to wait for the moves"
    )
    retire.add_argument("--log-level", default="warning")
    retire.set_defaults(run=run_retire)

    status = sub.add_parser("status", help="nodes, partitions, leaders, replica health and lag")
    status.add_argument("--data-dir", type=Path, default=DATA_DIR_DEFAULT)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--log-level", default="warning")
    status.set_defaults(run=run_status)


# --- up ---------------------------------------------------------------------------------


def _free_ports(host: str, count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def pid_file(data_dir: Path, node_id: int) -> Path:
    return data_dir / "pids" / f"n{node_id}.pid"


def node_dir(data_dir: Path, node_id: int) -> Path:
    return data_dir / "nodes" / f"n{node_id}"


def build_spec(
    nodes: int, zones: int, profile: str, partitions: int, host: str
) -> topology.ClusterSpec:
    if zones < 1 or zones > len(ZONE_NAMES):
        raise topology.TopologyError(f"zones must be within 1..{len(ZONE_NAMES)}")
    ports = _free_ports(host, 2 * nodes)
    specs = tuple(
        topology.NodeSpec(
            node_id=i + 1,
            zone=f"zone-{ZONE_NAMES[i % zones]}",
            host=host,
            api_port=ports[2 * i],
            peer_port=ports[2 * i + 1],
        )
        for i in range(nodes)
    )
    spec = topology.ClusterSpec(nodes=specs, profile=profile, partitions=partitions)
    spec.validate()
    return spec


def start_node(
    data_dir: Path, node_id: int, extra_args: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Start (or restart) one node of the cluster under `data_dir`; records its PID."""
    directory = node_dir(data_dir, node_id)
    directory.mkdir(parents=True, exist_ok=True)
    settings = _settings(data_dir)
    args = [
        sys.executable,
        "-m",
        "keeldb",
        "serve",
        "--cluster-config",
        str(data_dir / topology.CLUSTER_FILE_NAME),
        "--node-id",
        str(node_id),
        "--data-dir",
        str(directory / "data"),
        "--log-level",
        settings.get("log_level", "warning"),
        *settings.get("serve_args", []),
        *(extra_args or []),
    ]
    with (directory / "stdout.txt").open("ab") as out, (directory / "stderr.txt").open("ab") as err:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
    pid_path = pid_file(data_dir, node_id)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.write_text(f"{process.pid}\n")
    return process


def _settings(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "settings.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def wait_serving(
    spec: topology.ClusterSpec,
    node_ids: list[int] | None = None,
    timeout: float = START_SECONDS_MAX,
) -> None:
    """Until every node answers the health check and one reports a metadata leader."""
    deadline = time.monotonic() + timeout
    wanted = [n for n in spec.nodes if node_ids is None or n.node_id in node_ids]
    for node in wanted:
        while True:
            try:
                with urllib.request.urlopen(node.endpoint + "/", timeout=1.0) as response:
                    response.read()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.node_id} does not serve at {node.endpoint}")
                time.sleep(POLL_SECONDS)
    while True:
        try:
            _post(wanted[0].endpoint, "ListTables", {}, timeout=2.0)
            return
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError("the metadata group has no leader") from None
            time.sleep(POLL_SECONDS)


def _post(endpoint: str, operation: str, body: dict[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(
        endpoint + "/",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=keeldb/20260101/us-east-1/"
            "dynamodb/aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def run_up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    if any(_alive(pid) for pid in _recorded_pids(data_dir).values()):
        print(f"keeldb: a cluster is already running under {data_dir}", file=sys.stderr)
        return 1
    try:
        spec = build_spec(args.nodes, args.zones, args.profile, args.partitions, args.host)
    except topology.TopologyError as error:
        print(f"keeldb: {error}", file=sys.stderr)
        return 2
    if not args.follower_reads:
        spec.extra["follower_reads"] = False
    if args.log_replicas:
        if spec.profile != "aurora":
            print("keeldb: --log-replicas needs the aurora profile", file=sys.stderr)
            return 2
        spec.extra[LOG_REPLICAS_KEY] = True
    if args.replace_after is not None:
        if args.replace_after <= 0:
            print("keeldb: --replace-after must be positive", file=sys.stderr)
            return 2
        spec.extra["replace_after_seconds"] = args.replace_after
    if args.backup_dir is not None:
        spec.extra["backup_dir"] = str(args.backup_dir.resolve())
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / JOINED_FILE).unlink(missing_ok=True)  # nodes added to an earlier cluster
    topology.write_secret(data_dir / "secret")
    topology.save(spec, data_dir / topology.CLUSTER_FILE_NAME)
    serve_args: list[str] = []
    if args.credentials is not None:
        serve_args += ["--credentials", str(args.credentials.resolve())]
    if args.fault_endpoint:
        serve_args.append("--fault-endpoint")
    (data_dir / "settings.json").write_text(
        json.dumps({"log_level": args.log_level, "serve_args": serve_args})
    )
    for node in spec.nodes:
        start_node(data_dir, node.node_id)
    try:
        wait_serving(spec)
    except TimeoutError as error:
        print(f"keeldb: the cluster did not start: {error}", file=sys.stderr)
        print(f"keeldb: logs are under {data_dir / 'nodes'}", file=sys.stderr)
        _stop_all(data_dir)
        return 1
    print(
        f"KeelDB cluster up: {len(spec.nodes)} nodes in {args.zones} zones, "
        f"profile {spec.profile}, {spec.partitions} partitions (data: {data_dir})"
    )
    for node in spec.nodes:
        print(f"  node {node.node_id} ({node.zone}): {node.endpoint}")
    print("endpoints: " + " ".join(n.endpoint for n in spec.nodes if n.routes))
    return 0


# --- down -------------------------------------------------------------------------------


def _recorded_pids(data_dir: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    directory = data_dir / "pids"
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("n*.pid")):
        try:
            out[int(path.stem[1:])] = int(path.read_text().strip())
        except ValueError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child not yet reaped) counts as stopped.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_node(pid: int, data_dir: Path) -> bool:
    """Whether `pid` still runs a node of this cluster (a recycled PID must not be killed):
    a `serve` of its cluster file, or a `serve --join` with its secret."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            args = cmdline.read().split(b"\0")
    except OSError:
        return False
    wanted = str(data_dir / topology.CLUSTER_FILE_NAME).encode()
    joined = b"--join" in args and str(data_dir / "secret").encode() in args
    return b"serve" in args and (wanted in args or joined)


def stop_node(data_dir: Path, node_id: int, sig: int = signal.SIGTERM) -> None:
    pids = _recorded_pids(data_dir)
    pid = pids.get(node_id)
    if pid is None or not _alive(pid) or not _is_our_node(pid, data_dir):
        return
    os.kill(pid, sig)


def _stop_all(data_dir: Path) -> list[int]:
    pids = {
        n: p for n, p in _recorded_pids(data_dir).items() if _alive(p) and _is_our_node(p, data_dir)
    }
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped node must run to see its SIGTERM
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_SECONDS_MAX
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(POLL_SECONDS)
    for pid in pids.values():
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for node_id in pids:
        pid_file(data_dir, node_id).unlink(missing_ok=True)
    return sorted(pids)


def run_down(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    stopped = _stop_all(data_dir)
    if not stopped:
        print(f"no cluster nodes running under {data_dir}")
        return 0
    print(f"stopped {len(stopped)} nodes: " + " ".join(f"n{n}" for n in stopped))
    return 0


# --- status -----------------------------------------------------------------------------


def collect_status(data_dir: Path) -> dict[str, Any]:
    """The status object of `keeldb cluster status --json`."""
    from keeldb.cluster import membership

    spec = topology.load(data_dir / topology.CLUSTER_FILE_NAME)
    pids = _recorded_pids(data_dir)
    placements = place(spec)
    members: dict[str, list[int]] = {g: list(p.node_ids) for g, p in placements.items()}
    doc_states: dict[str, dict[int, str]] = {}
    all_nodes = {n.node_id: n for n in (*spec.nodes, *joined_nodes(data_dir))}
    # The live membership, as a node that answers knows it (nodes that joined, replicas
    # moved by repair or retirement).
    for node in list(all_nodes.values()):
        pid = pids.get(node.node_id)
        if pid is None or not _alive(pid):
            continue
        try:
            with urllib.request.urlopen(
                node.endpoint + "/keeldb/cluster/status", timeout=STATUS_SECONDS_MAX
            ) as response:
                report = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            continue
        for data in report.get("nodes", []):
            try:
                all_nodes.setdefault(int(data["id"]), _node_spec(data))
            except (KeyError, TypeError, ValueError):
                continue
        members = {g: [int(n) for n in ids] for g, ids in report.get("groups", {}).items()}
        for group_id, entry in report.get("membership", {}).get("groups", {}).items():
            doc_states[group_id] = {int(m[0]): str(m[2]) for m in entry["members"]}
        break
    nodes = []
    views: dict[int, dict[str, Any]] = {}
    for node in sorted(all_nodes.values(), key=lambda n: n.node_id):
        pid = pids.get(node.node_id)
        up = pid is not None and _alive(pid)
        view: dict[str, Any] | None = None
        if up:
            try:
                with urllib.request.urlopen(
                    node.endpoint + "/keeldb/cluster/status", timeout=STATUS_SECONDS_MAX
                ) as response:
                    report = json.loads(response.read())
                view = report["views"].get(str(node.node_id))
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                up = False
        if view is not None and "groups" in view:
            views[node.node_id] = view["groups"]
        nodes.append(
            {
                "id": node.node_id,
                "zone": node.zone,
                "pid": pid,
                "endpoint": node.endpoint,
                "peer": f"{node.host}:{node.peer_port}",
                "role": node.role,
                "up": up,
            }
        )
    groups = []
    for group_id, placement in placements.items():
        replicas = []
        leader = None
        # The state each member is meant to stay in: `log` for a log replica placed as one
        # (the document's `log-kept`, or placement's when the document has no entry).
        intended = {
            int(m.node_id): "log" if m.log_only else "full" for m in placement.config.members
        }
        for node_id, doc_state in doc_states.get(group_id, {}).items():
            intended[node_id] = "log" if doc_state == membership.LOG_KEPT else "full"
        for member in members.get(group_id, list(placement.node_ids)):
            mine = views.get(member, {}).get(group_id)
            healthy = mine is not None
            if mine is not None and mine.get("is_leader") and mine.get("lease"):
                leader = member
            # The replica's own report; the membership document's when it does not answer.
            state = (mine or {}).get("state") or doc_states.get(group_id, {}).get(
                member, "log-kept" if intended.get(member) == "log" else "full"
            )
            if state == membership.LOG_KEPT:
                state = "log"
            replicas.append(
                {
                    "node": member,
                    "healthy": healthy,
                    "leader": bool(mine and mine.get("is_leader")),
                    "applied_lsn": None if mine is None else mine.get("applied_lsn"),
                    "lag": None if mine is None else mine.get("lag"),
                    "state": state,
                    "intended": intended.get(member, "full"),
                }
            )
        groups.append(
            {
                "group": group_id,
                "leader": leader,
                "preferred_leader": placement.preferred_leader,
                "replicas": replicas,
            }
        )
    # Partitions: every table has one partition per ring range; those of all tables with
    # the same range share that range's replica group.
    tables = _tables(spec, nodes)
    partitions = []
    by_group = {g["group"]: g for g in groups}
    for table in tables or [None]:
        for index in range(spec.partitions):
            group = by_group[partition_group(index)]
            partitions.append(
                {
                    "table": table,
                    "partition": index,
                    "group": group["group"],
                    "leader": group["leader"],
                    "replicas": [r["node"] for r in group["replicas"]],
                    "replica_states": {str(r["node"]): r["state"] for r in group["replicas"]},
                    "healthy_replicas": sum(1 for r in group["replicas"] if r["healthy"]),
                    "max_lag": max((r["lag"] or 0 for r in group["replicas"]), default=0),
                }
            )
    return {
        "profile": spec.profile,
        "data_dir": str(data_dir),
        "nodes": nodes,
        "groups": groups,
        "metadata": by_group[META_GROUP],
        "partitions": partitions,
    }


def _tables(spec: topology.ClusterSpec, nodes: list[dict[str, Any]]) -> list[str]:
    for node in nodes:
        if not node["up"]:
            continue
        try:
            return list(_post(node["endpoint"], "ListTables", {}, timeout=2.0)["TableNames"])
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            continue
    return []


def run_status(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    try:
        status = collect_status(data_dir)
    except topology.TopologyError as error:
        print(f"keeldb: no cluster under {data_dir}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    _print_status(status)
    return 0


def _print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    nodes = Table(title=f"KeelDB cluster ({status['profile']}) — {status['data_dir']}")
    for column in ("node", "zone", "pid", "endpoint", "peer", "role", "up"):
        nodes.add_column(column)
    for node in status["nodes"]:
        nodes.add_row(
            f"n{node['id']}",
            node["zone"],
            str(node["pid"]),
            node["endpoint"],
            node["peer"],
            node["role"],
            "[green]up[/green]" if node["up"] else "[red]down[/red]",
        )
    console.print(nodes)
    groups = Table(title="replica groups")
    for column in ("group", "leader", "replicas (lag, state if not full)", "healthy"):
        groups.add_column(column)
    for group in status["groups"]:
        cells = []
        for replica in group["replicas"]:
            mark = "*" if replica["leader"] else ""
            lag = "down" if not replica["healthy"] else str(replica["lag"])
            state = replica.get("state", "full")
            wanted = replica.get("intended", "full")
            state = "" if state == wanted == "full" else f", {state}"
            if replica.get("state", "full") != wanted:
                state += f" -> {wanted}"
            cells.append(f"n{replica['node']}{mark} ({lag}{state})")
        healthy = sum(1 for r in group["replicas"] if r["healthy"])
        leader = "none" if group["leader"] is None else f"n{group['leader']}"
        groups.add_row(group["group"], leader, " ".join(cells), f"{healthy}/{len(cells)}")
    console.print(groups)
    tables = sorted({p["table"] for p in status["partitions"] if p["table"] is not None})
    console.print(
        f"tables: {', '.join(tables) if tables else '(none)'}; each has "
        f"{len({p['partition'] for p in status['partitions']})} partitions, "
        "partition i of every table in group p<i>"
    )


# --- add-node and retire ----------------------------------------------------------------


def _node_spec(data: dict[str, Any]) -> topology.NodeSpec:
    return topology.NodeSpec(
        node_id=int(data["id"]),
        zone=str(data["zone"]),
        host=str(data.get("host", "127.0.0.1")),
        api_port=int(data["api_port"]),
        peer_port=int(data["peer_port"]),
        role=str(data.get("role", "both")),
    )


def joined_nodes(data_dir: Path) -> list[topology.NodeSpec]:
    """The nodes `add-node` started under `data_dir`."""
    path = data_dir / JOINED_FILE
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for data in entries if isinstance(entries, list) else []:
        try:
            out.append(_node_spec(data))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _live_endpoint(data_dir: Path, nodes: list[topology.NodeSpec], avoid: int = 0) -> str | None:
    pids = _recorded_pids(data_dir)
    for node in nodes:
        pid = pids.get(node.node_id)
        if node.node_id != avoid and pid is not None and _alive(pid):
            return node.endpoint
    return None


def join_args(data_dir: Path, node: topology.NodeSpec, target: str) -> list[str]:
    """The `keeldb serve` arguments of a node that joins through `target` (host:port)."""
    return [
        "--join",
        target,
        "--zone",
        node.zone,
        "--role",
        node.role,
        "--host",
        node.host,
        "--port",
        str(node.api_port),
        "--listen",
        f"{node.host}:{node.peer_port}",
        "--cluster-secret-file",
        str(data_dir / "secret"),
    ]


def run_add_node(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    try:
        spec = topology.load(data_dir / topology.CLUSTER_FILE_NAME)
    except topology.TopologyError as error:
        print(f"keeldb: no cluster under {data_dir}: {error}", file=sys.stderr)
        return 1
    known = [*spec.nodes, *joined_nodes(data_dir)]
    target = _live_endpoint(data_dir, list(spec.nodes)) or _live_endpoint(data_dir, known)
    if target is None:
        print(f"keeldb: no running node under {data_dir} to join", file=sys.stderr)
        return 1
    zones: dict[str, int] = {}
    for node in known:
        if node.stores:
            zones[node.zone] = zones.get(node.zone, 0) + 1
    zone = args.zone or min(sorted(zones), key=lambda z: zones[z])
    node_id = max(n.node_id for n in known) + 1
    host = spec.nodes[0].host
    api_port, peer_port = _free_ports(host, 2)
    node = topology.NodeSpec(node_id, zone, host, api_port, peer_port, args.role)
    directory = node_dir(data_dir, node_id)
    directory.mkdir(parents=True, exist_ok=True)
    address = target.removeprefix("http://")
    _start_joining(data_dir, node, address)
    entries = [n.to_json() for n in joined_nodes(data_dir)] + [node.to_json()]
    tmp = data_dir / (JOINED_FILE + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.replace(data_dir / JOINED_FILE)
    deadline = time.monotonic() + START_SECONDS_MAX
    while True:
        try:
            with urllib.request.urlopen(node.endpoint + "/", timeout=1.0) as response:
                response.read()
            break
        except (urllib.error.URLError, OSError):
            pid = _recorded_pids(data_dir).get(node_id)
            if time.monotonic() > deadline or pid is None or not _alive(pid):
                print(
                    f"keeldb: node {node_id} did not start; see {directory / 'stderr.txt'}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(POLL_SECONDS)
    print(f"node {node_id} ({zone}) joined: {node.endpoint}")
    return 0


def _start_joining(data_dir: Path, node: topology.NodeSpec, target: str) -> None:
    directory = node_dir(data_dir, node.node_id)
    settings = _settings(data_dir)
    args = [
        sys.executable,
        "-m",
        "keeldb",
        "serve",
        "--node-id",
        str(node.node_id),
        "--data-dir",
        str(directory / "data"),
        "--log-level",
        settings.get("log_level", "warning"),
        *join_args(data_dir, node, target),
        *settings.get("serve_args", []),
    ]
    with (directory / "stdout.txt").open("ab") as out, (directory / "stderr.txt").open("ab") as err:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
    pid_path = pid_file(data_dir, node.node_id)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.write_text(f"{process.pid}\n")


def run_retire(args: argparse.Namespace) -> int:
    from keeldb.cluster.membership_service import RETIRE_PATH, MembershipError, post_signed

    data_dir: Path = args.data_dir.resolve()
    try:
        spec = topology.load(data_dir / topology.CLUSTER_FILE_NAME)
        secret = topology.read_secret(data_dir / "secret")
    except topology.TopologyError as error:
        print(f"keeldb: no cluster under {data_dir}: {error}", file=sys.stderr)
        return 1
    known = [*spec.nodes, *joined_nodes(data_dir)]
    endpoint = _live_endpoint(data_dir, known, avoid=args.node)
    if endpoint is None:
        print(f"keeldb: no other running node under {data_dir}", file=sys.stderr)
        return 1
    try:
        post_signed(endpoint, RETIRE_PATH, secret, {"node": args.node})
    except (MembershipError, OSError) as error:
        print(f"keeldb: cannot retire node {args.node}: {error}", file=sys.stderr)
        return 1
    print(f"node {args.node} is retiring: its replicas move to other nodes")
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            status = collect_status(data_dir)
        except (topology.TopologyError, OSError, ValueError):
            status = None
        if status is not None:
            holding = [
                g["group"]
                for g in status["groups"]
                if any(r["node"] == args.node for r in g["replicas"])
            ]
            moving = [
                g["group"]
                for g in status["groups"]
                if any(r.get("state") != r.get("intended", "full") for r in g["replicas"])
            ]
            if not holding and not moving:
                break
        if time.monotonic() > deadline:
            print(
                f"keeldb: node {args.node}'s replicas did not move within {args.timeout:g} s; "
                "it keeps running",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.5)
    stop_node(data_dir, args.node)
    pid = _recorded_pids(data_dir).get(args.node)
    stop_deadline = time.monotonic() + STOP_SECONDS_MAX
    while pid is not None and _alive(pid) and time.monotonic() < stop_deadline:
        time.sleep(POLL_SECONDS)
    if pid is not None and _alive(pid) and _is_our_node(pid, data_dir):
        os.kill(pid, signal.SIGKILL)
    pid_file(data_dir, args.node).unlink(missing_ok=True)
    print(f"node {args.node} retired and stopped")
    return 0


# --- keeldb serve --node-id ... ---------------------------------------------------------


def serve_cluster(args: argparse.Namespace, credentials: Any) -> int:
    """`keeldb serve` with --cluster-config / --node-id: run one cluster node until signalled."""
    from keeldb.cluster.node import ClusterNodeConfig

    if args.join is not None:
        return _serve_joining(args, credentials)
    if args.cluster_config is None or args.node_id is None:
        print("keeldb: a cluster node needs --cluster-config FILE and --node-id N", file=sys.stderr)
        return 2
    try:
        spec = topology.load(args.cluster_config)
        me = spec.node(args.node_id)
    except topology.TopologyError as error:
        print(f"keeldb: {error}", file=sys.stderr)
        return 2
    for flag, given, expected in (
        ("--zone", args.zone, me.zone),
        ("--role", args.role, me.role),
        ("--listen", args.listen, f"{me.host}:{me.peer_port}"),
    ):
        if given is not None and given != expected:
            print(
                f"keeldb: {flag} {given} disagrees with the cluster file ({expected})",
                file=sys.stderr,
            )
            return 2
    if args.profile is not None and args.profile != spec.profile:
        print(
            f"keeldb: --profile {args.profile} disagrees with the cluster file ({spec.profile})",
            file=sys.stderr,
        )
        return 2
    config = ClusterNodeConfig(
        cluster_file=args.cluster_config.resolve(),
        node_id=args.node_id,
        data_dir=args.data_dir.resolve(),
        credentials=credentials,
        region=args.region,
        ttl_interval_seconds=args.ttl_interval,
        fault_endpoint=args.fault_endpoint,
        secret_file=None
        if args.cluster_secret_file is None
        else args.cluster_secret_file.resolve(),
        stream_retention_seconds=args.stream_retention,
        functions=not args.no_functions,
    )

    return _run_node(config)


def _run_node(config: Any) -> int:
    import asyncio

    import uvloop

    from keeldb.cluster.membership_service import MembershipError
    from keeldb.cluster.node import ClusterNode

    async def run() -> None:
        node = await ClusterNode.start(config)
        print(node.describe(), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await node.close()
        print("KeelDB stopped", flush=True)

    try:
        uvloop.run(run())
    except (OSError, topology.TopologyError, MembershipError) as error:
        print(f"keeldb: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _serve_joining(args: argparse.Namespace, credentials: Any) -> int:
    """`keeldb serve --join HOST:PORT`: a new node asks a running one to add it."""
    from keeldb.cluster.node import ClusterNodeConfig

    missing = [
        flag
        for flag, value in (
            ("--node-id N", args.node_id),
            ("--zone Z", args.zone),
            ("--listen HOST:PORT", args.listen),
            ("--cluster-secret-file FILE", args.cluster_secret_file),
        )
        if value is None
    ]
    if missing:
        print(f"keeldb: --join needs {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.cluster_config is not None:
        print(
            "keeldb: --join learns the cluster from the node it joins; drop --cluster-config",
            file=sys.stderr,
        )
        return 2
    peer_host, _, peer_port = args.listen.rpartition(":")
    try:
        me = topology.NodeSpec(
            node_id=args.node_id,
            zone=args.zone,
            host=peer_host.strip("[]") or args.host,
            api_port=args.port,
            peer_port=int(peer_port),
            role=args.role or "both",
        )
    except ValueError:
        print(f"keeldb: --listen takes HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return 2
    if me.node_id <= 0 or me.api_port <= 0 or me.peer_port <= 0:
        print("keeldb: --node-id, --port and the --listen port must be positive", file=sys.stderr)
        return 2
    config = ClusterNodeConfig(
        cluster_file=args.data_dir.resolve() / topology.CLUSTER_FILE_NAME,
        node_id=args.node_id,
        data_dir=args.data_dir.resolve(),
        credentials=credentials,
        region=args.region,
        ttl_interval_seconds=args.ttl_interval,
        fault_endpoint=args.fault_endpoint,
        secret_file=args.cluster_secret_file.resolve(),
        join=args.join,
        join_node=me,
        stream_retention_seconds=args.stream_retention,
        functions=not args.no_functions,
    )
    return _run_node(config)
