"""A local replica group of real `group_node` processes on loopback, and a client for it:
for process tests, fault drills and the benchmark.

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
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keeldb.cluster.group_node import PROFILE_SIZES
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
        assert node not in self.processes, f"{node} is running"
        out = self.base_dir / f"{node}.out"
        err = self.base_dir / f"{node}.err"
        with out.open("ab") as stdout, err.open("ab") as stderr:
            offset = out.stat().st_size
            process = subprocess.Popen(
                self._args(node),
                stdout=stdout,
                stderr=stderr,
                preexec_fn=_stop_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        self.processes[node] = process
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            text = out.read_bytes()[offset:].decode(errors="replace")
            if READY_PREFIX in text:
                return
            if process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill(node)
        raise RuntimeError(f"{node} did not start: {err.read_text(errors='replace')[-2000:]}")

    def start_all(self) -> None:
        for node in self.nodes:
            if node not in self.processes:
                self.start(node)

    def kill(self, node: str) -> None:
        """SIGKILL: the process ends without closing anything."""
        process = self.processes.pop(node)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait(STOP_SECONDS_MAX)

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
    except (PeerUnavailable, RemoteError) as error:
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
