"""A local replica group of real `group_node` processes on loopback, a client for it, and
a recorded key-value workload for the linearizability checker: for process tests, fault
drills and the benchmark.

Owns starting, killing (SIGKILL), pausing (SIGSTOP/SIGCONT) and restarting those processes
with fixed ports and data directories, and the client side of the "kv" channel (a
`Transport` of its own that knows every node). Every process it starts is stopped by its
PID in `stop_all` (and gets SIGTERM from Linux if the starting process dies first). It never
touches processes it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keeldb.cluster.group_node import PROFILE_SIZES
from keeldb.consensus.sim.linearizability import HistoryResult, Operation, OpKind, check_history
from keeldb.net.transport import CallTimeout, PeerUnavailable, RemoteError, Transport

START_SECONDS_MAX = 30.0  # a node process prints its ready line well within this
STOP_SECONDS_MAX = 10.0
CALL_SECONDS = 2.0  # one kv request, at most
READY_PREFIX = "group_node ready "

_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _stop_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (bound then released; a race is possible but rare)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalGroup:
    """N `group_node` processes forming the group "kv" under `base_dir`."""

    def __init__(
        self,
        base_dir: Path,
        profile: str = "standard",
        *,
        tick_seconds: float = 0.05,
        compaction_entries: int = 4096,
        secret: bytes = b"local-group-secret-0123456789",
    ) -> None:
        self.base_dir = Path(base_dir)
        self.profile = profile
        self.tick_seconds = tick_seconds
        self.compaction_entries = compaction_entries
        self.secret = secret
        count = PROFILE_SIZES[profile]
        self.nodes = [f"node{i}" for i in range(1, count + 1)]
        self.ports = dict(zip(self.nodes, free_ports(count), strict=True))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.secret_file = self.base_dir / "secret"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.secret_file.write_bytes(secret)

    def _args(self, node: str) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "keeldb.cluster.group_node",
            "--node-id",
            node,
            "--listen",
            f"127.0.0.1:{self.ports[node]}",
            "--secret-file",
            str(self.secret_file),
            "--data-dir",
            str(self.base_dir / node),
            "--profile",
            self.profile,
            "--tick-seconds",
            str(self.tick_seconds),
            "--compaction-entries",
            str(self.compaction_entries),
        ]
        for other in self.nodes:
            if other != node:
                args += ["--peer", f"{other}=127.0.0.1:{self.ports[other]}"]
        return args

    def start(self, node: str) -> None:
        """Start `node` (again) and wait for its ready line."""
        self.start_many([node])

    def start_many(self, nodes: list[str]) -> None:
        """Start the nodes at once, then wait until each has printed its ready line."""
        offsets = {node: self._spawn(node) for node in nodes}
        deadline = time.monotonic() + START_SECONDS_MAX
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                out = self.base_dir / f"{node}.out"
                text = out.read_bytes()[offsets[node] :].decode(errors="replace")
                if READY_PREFIX in text:
                    waiting.remove(node)
                elif self.processes[node].poll() is not None or time.monotonic() > deadline:
                    failed = self.stderr(node)[-2000:]
                    for started in nodes:
                        if started in self.processes:
                            self.kill(started)
                    raise RuntimeError(f"{node} did not start: {failed}")
            if waiting:
                time.sleep(0.02)

    def _spawn(self, node: str) -> int:
        """Start the process; returns where its ready line will appear in its output."""
        assert node not in self.processes, f"{node} is running"
        out = self.base_dir / f"{node}.out"
        err = self.base_dir / f"{node}.err"
        with out.open("ab") as stdout, err.open("ab") as stderr:
            offset = out.stat().st_size
            self.processes[node] = subprocess.Popen(
                self._args(node),
                stdout=stdout,
                stderr=stderr,
                preexec_fn=_stop_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        return offset

    def start_all(self) -> None:
        self.start_many([node for node in self.nodes if node not in self.processes])

    def kill(self, node: str) -> None:
        """SIGKILL: the process ends without closing anything."""
        process = self.processes.pop(node)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait(STOP_SECONDS_MAX)

    def kill_all(self) -> None:
        for node in list(self.processes):
            self.kill(node)

    def pause(self, node: str) -> None:
        os.kill(self.processes[node].pid, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        os.kill(self.processes[node].pid, signal.SIGCONT)

    def stop(self, node: str) -> None:
        """SIGTERM and wait (SIGKILL if it does not stop in time)."""
        process = self.processes.pop(node)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        try:
            process.wait(STOP_SECONDS_MAX)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_SECONDS_MAX)

    def stop_all(self) -> None:
        for node in list(self.processes):
            self.stop(node)

    def stderr(self, node: str) -> str:
        path = self.base_dir / f"{node}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalGroup]:
        try:
            self.start_all()
            yield self
        finally:
            self.stop_all()

    async def client(self, name: str = "client") -> Transport:
        """A transport that knows every node (the caller closes it)."""
        transport = Transport(name, "127.0.0.1", 0, self.secret)
        await transport.start()
        for node in self.nodes:
            transport.add_peer(node, "127.0.0.1", self.ports[node])
        return transport


async def kv_call(
    client: Transport, node: str, request: dict[str, Any], timeout_seconds: float = CALL_SECONDS
) -> dict[str, Any]:
    """One request to a node's "kv" channel; transport failures become {"error": ...}."""
    try:
        reply: dict[str, Any] = await client.call(node, "kv", request, timeout_seconds)
        return reply
    except CallTimeout:
        return {"ok": False, "error": "Timeout"}
    except PeerUnavailable as error:
        # "Unreachable": the request never left, so it had no effect.
        kind = "Unavailable" if error.maybe_delivered else "Unreachable"
        return {"ok": False, "error": kind, "detail": str(error)}
    except RemoteError as error:
        return {"ok": False, "error": "Unavailable", "detail": str(error)}


async def find_leader(
    client: Transport, nodes: list[str], timeout_seconds: float, *, lease: bool = True
) -> str:
    """The node whose member leads (and, with `lease`, holds a read lease)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while loop.time() < deadline:
        replies = await asyncio.gather(
            *(kv_call(client, node, {"op": "status"}, 0.5) for node in nodes)
        )
        for node, reply in zip(nodes, replies, strict=True):
            status = reply.get("status") if reply.get("ok") else None
            if status and status["role"] == "leader" and (status["lease"] or not lease):
                return node
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no leader among {nodes} within {timeout_seconds} s")


# --- a recorded key-value workload, for the linearizability checker ----------------------

CallFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# Replies after which a request surely had no effect: refused before it was proposed, or
# its proposal lost its slot (NotLeader), or a read that was refused.
NO_EFFECT_ERRORS = frozenset({"NotLeader", "GroupBusy", "BadRequest", "Unreachable"})


@dataclass(slots=True)
class _Open:
    client: int
    kind: OpKind
    key: str
    call: int
    value: bytes | None
    expected: bytes | None


class History:
    """Operations as clients saw them, positioned on one counter of events (a call or a
    return each take the next number), for `consensus.sim.linearizability.check_history`."""

    def __init__(self) -> None:
        self._clock = 0
        self.operations: list[Operation] = []
        self.discarded = 0
        self.unknown = 0

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def begin(
        self,
        client: int,
        kind: OpKind,
        key: str,
        value: bytes | None = None,
        expected: bytes | None = None,
    ) -> _Open:
        return _Open(client, kind, key, self._tick(), value, expected)

    def end(self, op: _Open, output: bytes | bool | None) -> None:
        self.operations.append(
            Operation(
                op.client, op.kind, op.key, op.call, self._tick(), op.value, op.expected, output
            )
        )

    def unknown_outcome(self, op: _Open) -> None:
        """No answer: the operation may take effect at any later time, or never."""
        self.unknown += 1
        self.operations.append(
            Operation(op.client, op.kind, op.key, op.call, None, op.value, op.expected, None)
        )

    def discard(self, op: _Open) -> None:
        """The operation surely had no effect (it was refused)."""
        del op
        self.discarded += 1

    def acknowledged_writes(self) -> list[Operation]:
        return [op for op in self.operations if op.kind is not OpKind.GET and op.ret is not None]

    def check(self) -> HistoryResult:
        return check_history(self.operations)


@dataclass(slots=True)
class WorkloadStats:
    writes_ok: int = 0
    reads_ok: int = 0
    refused: int = 0
    unknown: int = 0
    # Successful writes as (sent, answered) on the loop's clock.
    write_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def write_times(self) -> list[float]:
        """When each successful write was answered, in order."""
        return sorted(end for _, end in self.write_spans)

    def longest_gap_seconds(self) -> float:
        """The longest time between two successful writes: the outage clients saw."""
        return max((b - a for a, b in itertools.pairwise(self.write_times)), default=0.0)

    def resumed_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the answer of the first successful write sent after it
        (a write sent before may have been answered by a member that died since)."""
        ends = [end for start, end in self.write_spans if start > moment]
        return min(ends) - moment if ends else None


async def kv_workload(
    call: CallFn,
    nodes: list[str],
    history: History,
    *,
    clients: int,
    keys: list[str],
    duration_seconds: float,
    seed: int = 1,
    pause_seconds: float = 0.0,
    stats: WorkloadStats | None = None,
    stop: asyncio.Event | None = None,
) -> WorkloadStats:
    """`clients` concurrent clients doing put / compare-and-set / lease-read on `keys`
    against the group for `duration_seconds` (or until `stop` is set), following leader
    hints; every operation is recorded in `history` (refused ones are discarded, unanswered
    ones left open). `stats`, when given, is filled as the workload runs."""
    stats = stats if stats is not None else WorkloadStats()
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_seconds
    stopped = stop if stop is not None else asyncio.Event()

    async def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        target = nodes[number % len(nodes)]
        seen: dict[str, bytes | None] = {}
        sequence = 0
        while loop.time() < end and not stopped.is_set():
            sequence += 1
            key = rng.choice(keys)
            value = f"c{number}-{sequence}".encode()
            roll = rng.random()
            if roll < 0.4:
                kind = OpKind.PUT
                request: dict[str, Any] = {"op": "put", "key": key, "value": value}
                op = history.begin(number, kind, key, value)
            elif roll < 0.6:
                kind = OpKind.CAS
                expected = seen.get(key)
                request = {"op": "cas", "key": key, "value": value, "expected": expected}
                op = history.begin(number, kind, key, value, expected)
            else:
                kind = OpKind.GET
                request = {"op": "get", "key": key}
                op = history.begin(number, kind, key)
            sent = loop.time()
            reply = await call(target, request)
            if reply.get("ok"):
                if kind is OpKind.GET:
                    seen[key] = reply["value"]
                    history.end(op, reply["value"])
                    stats.reads_ok += 1
                else:
                    history.end(op, reply["result"] if kind is OpKind.CAS else None)
                    stats.writes_ok += 1
                    stats.write_spans.append((sent, loop.time()))
                if pause_seconds:
                    await asyncio.sleep(pause_seconds)
                continue
            error = reply.get("error")
            if kind is OpKind.GET or error in NO_EFFECT_ERRORS:
                history.discard(op)
                stats.refused += 1
            else:
                history.unknown_outcome(op)
                stats.unknown += 1
            hint = reply.get("leader")
            if error == "NotLeader" and hint in nodes and hint != target:
                target = hint
            else:
                target = nodes[(nodes.index(target) + 1) % len(nodes)]
                await asyncio.sleep(0.02)  # nobody leads yet: do not spin

    await asyncio.gather(*(client(n) for n in range(clients)))
    return stats


async def final_reads(
    call: CallFn, nodes: list[str], history: History, keys: list[str], timeout_seconds: float
) -> dict[str, bytes | None]:
    """A lease read of every key, recorded in the history (client number -1), retried until
    some member answers; after the workload, so every acknowledged write must show."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    values: dict[str, bytes | None] = {}
    for key in keys:
        attempt = 0
        while True:
            if loop.time() > deadline:
                raise TimeoutError(f"no member answered a read of {key!r}")
            node = nodes[attempt % len(nodes)]
            attempt += 1
            op = history.begin(-1, OpKind.GET, key)
            reply = await call(node, {"op": "get", "key": key})
            if reply.get("ok"):
                history.end(op, reply["value"])
                values[key] = reply["value"]
                break
            history.discard(op)
            await asyncio.sleep(0.02)
    return values
