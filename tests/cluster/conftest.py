"""Fixtures for tests that run a real cluster of `keeldb serve` processes on loopback.

- `cluster_factory(nodes=3, profile="standard", partitions=2, env=None, roles=None,
  node_env=None, extra=None) -> LocalCluster`: a cluster started with the same code as
  `keeldb cluster up` (cluster file, secret, one process per node, PIDs recorded; `node_env`
  adds to the environment of single nodes; `extra` to the cluster file, e.g.
  `{"log_replicas": True}`), each node killed with the test process if it dies
  (PDEATHSIG), all stopped by PID at the end of the test.
- `LocalCluster`: endpoints, `status()`, `leader_of(group)`, `kill(node)` (SIGKILL),
  `stop(node)` / `cont(node)` (SIGSTOP / SIGCONT), `restart(node)`, `fault(node, command)`
  (the node's transport fault switch), `client(node)` (boto3, no retries, short timeouts).
- `History`: a recorder of single-key operations for the linearizability checker of
  `keeldb.consensus.sim.linearizability`, and `run_workload(...)`, client threads that
  write, compare-and-set and strongly read a few keys while a fault is injected, and also
  write keys of their own that must all be present at the end if acknowledged (`after=`
  continues an earlier run's history, e.g. through other routers).
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from keeldb.cluster import cli as cluster_cli
from keeldb.cluster import topology
from keeldb.consensus.sim.linearizability import Operation, OpKind, check_history

START_SECONDS_MAX = 60.0
CLIENT_CONNECT_SECONDS = 2.0
CLIENT_READ_SECONDS = 12.0  # above the router's request budget, so it answers first
# The nodes' log level (their logs are in DATA/nodes/nN/stderr.txt): quiet by default, raised
# to diagnose a failure (e.g. KEELDB_TEST_NODE_LOG_LEVEL=info shows leadership moves).
NODE_LOG_LEVEL = os.environ.get("KEELDB_TEST_NODE_LOG_LEVEL", "warning")

_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def make_client(endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDCLUSTERTEST",
        aws_secret_access_key="cluster-test-secret",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=config.pop("connect_timeout", CLIENT_CONNECT_SECONDS),
            read_timeout=config.pop("read_timeout", CLIENT_READ_SECONDS),
            **config,
        ),
    )


class LocalCluster:
    def __init__(
        self,
        data_dir: Path,
        spec: topology.ClusterSpec,
        env: dict[str, str] | None = None,
        node_env: dict[int, dict[str, str]] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.spec = spec
        self.env = env or {}
        self.node_env = node_env or {}  # extra environment of single nodes
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def node_ids(self) -> list[int]:
        return [n.node_id for n in self.spec.nodes]

    def endpoint(self, node_id: int) -> str:
        return self.spec.node(node_id).endpoint

    def zone(self, node_id: int) -> str:
        return self.spec.node(node_id).zone

    def start(self, node_id: int) -> None:
        env = {**self.env, **self.node_env.get(node_id, {})}
        self.processes[node_id] = _start_node(self.data_dir, node_id, env)

    def wait_serving(self, node_ids: list[int] | None = None) -> None:
        cluster_cli.wait_serving(self.spec, node_ids, START_SECONDS_MAX)

    def client(self, node_id: int, **config: Any) -> Any:
        return make_client(self.endpoint(node_id), **config)

    def status(self, via: int | None = None) -> dict[str, Any]:
        node = via if via is not None else self.live()[0]
        with urllib.request.urlopen(
            self.endpoint(node) + "/keeldb/cluster/status", timeout=5
        ) as response:
            report: dict[str, Any] = json.loads(response.read())
        return report

    def live(self) -> list[int]:
        return [n for n, p in self.processes.items() if p.poll() is None]

    def leader_of(self, group: str, timeout: float = 20.0) -> int:
        """The node whose replica of `group` leads with a valid lease."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.live():
                try:
                    view = self.status(node)["views"][str(node)]
                except (OSError, KeyError, ValueError):
                    continue
                mine = view.get("groups", {}).get(group)
                if mine and mine.get("is_leader") and mine.get("lease"):
                    return node
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader of {group}")
            time.sleep(0.1)

    def signal(self, node_id: int, signum: int) -> None:
        os.kill(self.processes[node_id].pid, signum)

    def kill(self, node_id: int) -> None:
        process = self.processes[node_id]
        process.kill()
        process.wait(timeout=10)

    def restart(self, node_id: int) -> None:
        assert self.processes[node_id].poll() is not None, "stop the node first"
        self.start(node_id)

    def fault(self, node_id: int, command: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.endpoint(node_id) + "/keeldb/cluster/fault",
            data=json.dumps(command).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGCONT)
                    process.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _start_node(data_dir: Path, node_id: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    directory = cluster_cli.node_dir(data_dir, node_id)
    directory.mkdir(parents=True, exist_ok=True)
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
        NODE_LOG_LEVEL,
        "--fault-endpoint",
    ]
    with (directory / "stdout.txt").open("ab") as out, (directory / "stderr.txt").open("ab") as err:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (only a system call runs there)
        )
    pid_path = cluster_cli.pid_file(data_dir, node_id)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.write_text(f"{process.pid}\n")
    return process


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    made: list[LocalCluster] = []

    def make(
        nodes: int = 3,
        profile: str = "standard",
        partitions: int = 2,
        env: dict[str, str] | None = None,
        roles: dict[int, str] | None = None,
        node_env: dict[int, dict[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> LocalCluster:
        data_dir = tmp_path / f"cluster{len(made)}"
        data_dir.mkdir()
        zones = 3
        spec = cluster_cli.build_spec(nodes, zones, profile, partitions, "127.0.0.1")
        if roles:
            spec = dataclasses.replace(
                spec,
                nodes=tuple(
                    dataclasses.replace(n, role=roles.get(n.node_id, n.role)) for n in spec.nodes
                ),
            )
            spec.validate()
        if extra:
            spec.extra.update(extra)
        topology.write_secret(data_dir / "secret")
        topology.save(spec, data_dir / topology.CLUSTER_FILE_NAME)
        cluster = LocalCluster(data_dir, spec, env, node_env)
        made.append(cluster)
        for node in spec.nodes:
            cluster.start(node.node_id)
        cluster.wait_serving()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


# --- workloads and histories ------------------------------------------------------------


@dataclass
class History:
    """Operations on a few registers, positions from one shared counter (real-time order)."""

    ops: list[Operation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def tick(self) -> int:
        with self.lock:
            return next(self.counter)

    def add(self, op: Operation) -> None:
        with self.lock:
            self.ops.append(op)

    def check(self) -> None:
        result = check_history(self.ops)
        assert result.ok, result.describe()


@dataclass
class WorkloadResult:
    history: History
    acknowledged: set[str]  # own keys whose PutItem succeeded
    attempted: set[str]
    write_times: list[float]  # monotonic times of acknowledged writes
    errors: int = 0

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time in [start, end] without an acknowledged write."""
        times = sorted(t for t in self.write_times if start <= t <= end)
        points = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(points))


TABLE = "chaos"
REGISTERS = 6


def create_table(client: Any, name: str = TABLE) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def run_workload(
    endpoints: list[str],
    seconds: float,
    *,
    clients: int = 4,
    during: Callable[[], None] | None = None,
    table: str = TABLE,
    readers: list[str] = (),  # type: ignore[assignment]
    after: WorkloadResult | None = None,
) -> WorkloadResult:
    """`clients` threads, spread over `endpoints`, each in a loop: a strong read, a put or a
    compare-and-set on one of a few registers, and a put of a key of its own; `during`
    runs in the calling thread meanwhile (the fault). With `after`, the workload continues
    that earlier one: the same history and own keys, new client numbers and values."""
    history = after.history if after is not None else History()
    result = after if after is not None else WorkloadResult(history, set(), set(), [])
    # Client numbers (they name values and own keys) never repeat across continued runs.
    first = 1 + max((op.client for op in history.ops), default=-1)
    stop = threading.Event()
    lock = threading.Lock()

    def reader_loop(number: int, endpoint: str) -> None:
        """Strong reads only, round the registers (they never wait behind a write)."""
        client = make_client(endpoint)
        sequence = 0
        while not stop.is_set():
            sequence += 1
            key = f"r{sequence % REGISTERS}"
            call = history.tick()
            try:
                answer = client.get_item(
                    TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True
                )
            except (ClientError, BotoCoreError):
                with lock:
                    result.errors += 1
                continue
            item = answer.get("Item")
            output = None if item is None else item["v"]["B"]
            history.add(Operation(number, OpKind.GET, key, call, history.tick(), output=output))

    def client_loop(number: int) -> None:
        client = make_client(endpoints[number % len(endpoints)])
        sequence = 0
        seen: dict[str, bytes] = {}  # the last value this client read or wrote per register
        while not stop.is_set():
            sequence += 1
            key = f"r{(sequence * 7 + number) % REGISTERS}"
            value = f"c{number}-{sequence}".encode()
            choice = (sequence + number) % 3
            if choice == 2 and key not in seen:
                choice = 0
            call = history.tick()
            try:
                if choice == 0:
                    answer = client.get_item(
                        TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True
                    )
                    item = answer.get("Item")
                    output = None if item is None else item["v"]["B"]
                    history.add(
                        Operation(number, OpKind.GET, key, call, history.tick(), output=output)
                    )
                    if output is not None:
                        seen[key] = output
                elif choice == 1:
                    client.put_item(TableName=table, Item={"pk": {"S": key}, "v": {"B": value}})
                    history.add(Operation(number, OpKind.PUT, key, call, history.tick(), value))
                    seen[key] = value
                    with lock:
                        result.write_times.append(time.monotonic())
                else:
                    expected = seen[key]
                    try:
                        client.put_item(
                            TableName=table,
                            Item={"pk": {"S": key}, "v": {"B": value}},
                            ConditionExpression="v = :e",
                            ExpressionAttributeValues={":e": {"B": expected}},
                        )
                        succeeded = True
                    except ClientError as error:
                        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                            raise
                        succeeded = False
                    history.add(
                        Operation(
                            number,
                            OpKind.CAS,
                            key,
                            call,
                            history.tick(),
                            value,
                            expected,
                            succeeded,
                        )
                    )
                    if succeeded:
                        seen[key] = value
            except (ClientError, BotoCoreError):
                # No answer: a write may or may not have happened; a read had no effect.
                with lock:
                    result.errors += 1
                if choice == 1:
                    history.add(Operation(number, OpKind.PUT, key, call, None, value))
                elif choice == 2:
                    history.add(Operation(number, OpKind.CAS, key, call, None, value, seen[key]))
            own = f"own-{number}-{sequence}"
            with lock:
                result.attempted.add(own)
            try:
                client.put_item(TableName=table, Item={"pk": {"S": own}})
            except (ClientError, BotoCoreError):
                continue
            with lock:
                result.acknowledged.add(own)
                result.write_times.append(time.monotonic())

    threads = [
        threading.Thread(target=client_loop, args=(first + n,), daemon=True) for n in range(clients)
    ]
    threads += [
        threading.Thread(target=reader_loop, args=(first + clients + i, endpoint), daemon=True)
        for i, endpoint in enumerate(readers)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    try:
        if during is not None:
            during()
        while time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_READ_SECONDS + 5)
    return result


def final_check(endpoint: str, result: WorkloadResult, table: str = TABLE) -> None:
    """Every acknowledged own key is present; strong reads of every register, added to the
    history after everything else, keep it linearizable (so no acknowledged write is lost)."""
    client = make_client(endpoint)
    history = result.history
    for key in (f"r{i}" for i in range(REGISTERS)):
        call = history.tick()
        item = client.get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True).get(
            "Item"
        )
        output = None if item is None else item["v"]["B"]
        history.add(Operation(-1, OpKind.GET, key, call, history.tick(), output=output))
    present: set[str] = set()
    keys = sorted(result.acknowledged)
    for start in range(0, len(keys), 100):
        chunk = [{"pk": {"S": k}} for k in keys[start : start + 100]]
        request: dict[str, Any] = {table: {"Keys": chunk, "ConsistentRead": True}}
        for _ in range(20):
            answer = client.batch_get_item(RequestItems=request)
            present.update(item["pk"]["S"] for item in answer["Responses"].get(table, []))
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.2)
        assert not request, "keys left unprocessed"
    lost = result.acknowledged - present
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:10]}"
    answered = sum(1 for op in history.ops if op.ret is not None)
    print(
        f"history: {len(history.ops)} operations ({answered} answered, "
        f"{len(history.ops) - answered} without an answer); "
        f"{len(result.acknowledged)} of {len(result.attempted)} own writes acknowledged"
    )
    history.check()


class Chaos:
    """The workload helpers, for test modules (which cannot import this conftest)."""

    create_table = staticmethod(create_table)
    run_workload = staticmethod(run_workload)
    final_check = staticmethod(final_check)
    History = History
    TABLE = TABLE


@pytest.fixture
def chaos() -> type[Chaos]:
    return Chaos
