"""The primary's side of `--workers N`: the shared port, and the worker processes on it.

Owns: the node's listening sockets (an SO_REUSEPORT group on one address, all made and held
by the primary, so that a restarted worker takes over its predecessor's socket and its
backlog, and no connection is refused meanwhile), starting each worker with its socket and
one end of a Unix socket pair, the HELLO that tells it what to serve, waiting until every
worker serves, restarting a worker that dies, and stopping them all (SIGTERM, by PID) before
the node closes anything else.

The port is checked free with an ordinary bind first: another server on it (a second
`keeldb serve`, with workers or not) is refused as without workers, instead of silently
sharing the port through SO_REUSEPORT.

Which process serves HTTP: `--workers N` means N processes serve HTTP: by default the primary
and N - 1 worker processes (the primary answers its own connections' writes without a hop, and
two processes share two cores better than three: measured in docs/performance.md, "Worker
processes"). KEELDB_WORKERS_PRIMARY_HTTP=0 leaves HTTP to N worker processes, so that the
primary's core time goes only to what it alone can do.

It never handles a request itself (`channel.PrimaryChannel` runs them against the node's
server) and never kills a process it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keeldb.api.server import ApiServer
from keeldb.workers.channel import PrimaryChannel

if TYPE_CHECKING:
    from keeldb.node import Node, NodeConfig

log = logging.getLogger("keeldb.workers")

WORKERS_MAX = 64  # HTTP-serving processes of one node, at most (far above any core count)
LISTEN_BACKLOG = 1024  # as the single-process server's
WORKER_START_SECONDS_MAX = 60.0  # a worker imports the engine and opens LMDB: about a second
WORKER_STOP_SECONDS_MAX = 15.0  # its HTTP server drains for at most 10 s (SHUTDOWN_SECONDS_MAX)
# A worker that dies is restarted after a pause that doubles while it keeps dying young, so
# that a worker that cannot start does not spin a core.
RESTART_DELAY_SECONDS_MIN = 0.05
RESTART_DELAY_SECONDS_MAX = 5.0
HEALTHY_RUN_SECONDS = 10.0  # a worker that ran this long resets the pause
PRIMARY_HTTP_ENVIRONMENT = "KEELDB_WORKERS_PRIMARY_HTTP"


class WorkersUnsupportedError(ValueError):
    """`--workers` was combined with a mode that one process must own."""


def check_config(config: NodeConfig) -> None:
    """Refuse the combinations worker processes cannot serve, with the reason."""
    if not 1 <= config.workers <= WORKERS_MAX:
        raise WorkersUnsupportedError(f"--workers must be between 1 and {WORKERS_MAX}")
    if config.workers > 1 and config.data_dir is None:
        raise WorkersUnsupportedError(
            "--workers N > 1 needs a data directory: an in-memory node's data lives in one "
            "process's memory, which other processes cannot read (use --workers 1)"
        )


def primary_serves_http() -> bool:
    return os.environ.get(PRIMARY_HTTP_ENVIRONMENT, "1") != "0"


def listening_sockets(host: str, port: int, count: int) -> tuple[int, list[socket.socket]]:
    """`count` listening sockets of one SO_REUSEPORT group on host:port (0: a free port)."""
    assert count >= 1
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # An ordinary bind (SO_REUSEADDR only, as the single-process server's) fails if anything
    # listens there, SO_REUSEPORT or not; while it stays bound (not listening) the group can
    # still bind, and nobody else can take the port from under us.
    probe = socket.socket(family, kind, proto)
    sockets: list[socket.socket] = []
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        bound = probe.getsockname()
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(bound)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    finally:
        probe.close()
    return int(bound[1]), sockets


@dataclass(eq=False)
class WorkerProcess:
    """One worker slot: its listening socket (kept across restarts) and current process."""

    index: int
    listen_socket: socket.socket
    process: asyncio.subprocess.Process | None = None
    channel: PrimaryChannel | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: asyncio.Future[int] | None = None
    watcher: asyncio.Task[None] | None = None
    history: list[int] = field(default_factory=list)  # PIDs it has had, oldest first

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class WorkerPool:
    """The worker processes of one primary; `bind`, then `start(node)`, then `close()`."""

    def __init__(self, port: int, primary_socket: socket.socket | None, slots: list[WorkerProcess]):
        self.port = port
        self.primary_socket = primary_socket
        self.slots = slots
        self._node: Node | None = None
        self._closing = False

    @classmethod
    def bind(cls, config: NodeConfig) -> WorkerPool:
        check_config(config)
        primary = primary_serves_http()
        worker_count = config.workers - 1 if primary else config.workers
        port, sockets = listening_sockets(config.host, config.port, config.workers)
        primary_socket = sockets.pop() if primary else None
        slots = [WorkerProcess(i, sock) for i, sock in enumerate(sockets[:worker_count])]
        return cls(port, primary_socket, slots)

    async def start_primary_server(self, server: ApiServer, host: str) -> int:
        """Start the primary's own HTTP server on its socket, if it serves HTTP."""
        if self.primary_socket is not None:
            await server.start(host, self.port, sock=self.primary_socket)
        return self.port

    @property
    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots if slot.pid is not None]

    async def start(self, node: Node) -> None:
        """Start every worker and wait until each serves."""
        self._node = node
        await asyncio.gather(*(self._spawn(slot) for slot in self.slots))
        for slot in self.slots:
            slot.watcher = asyncio.create_task(
                self._watch(slot), name=f"keeldb-worker-{slot.index}"
            )

    def _settings(self, node: Node) -> dict[str, Any]:
        config = node.config
        server = node.server
        credentials = None
        if config.credentials is not None:
            credentials = [
                [c.access_key_id, c.secret_access_key, c.session_token]
                for c in config.credentials.values()
            ]
        return {
            "data_dir": str(config.data_dir),
            "region": config.region,
            "endpoint": node.url.removeprefix("http://"),
            "credentials": credentials,
            # Encrypted values need the keyring, which only the primary holds: its workers
            # still parse, verify and encode, and forward the reads too.
            "local_reads": config.master_key_file is None,
            "operations": sorted(server.operations),  # type: ignore[call-overload]
            "json_services": [
                [prefix, sorted(operations)]  # type: ignore[call-overload]
                for prefix, (_, operations) in server.json_services.items()
            ],
            "mounts": [prefix.decode("ascii") for prefix, _ in server.mounts],
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        }

    async def _spawn(self, slot: WorkerProcess) -> None:
        node = self._node
        assert node is not None
        loop = asyncio.get_running_loop()
        primary_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listen_fd = slot.listen_socket.fileno()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keeldb.workers.worker",
                "--listen-fd",
                str(listen_fd),
                "--channel-fd",
                str(worker_end.fileno()),
                pass_fds=(listen_fd, worker_end.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            primary_end.close()
            raise
        finally:
            worker_end.close()
        slot.process = process
        slot.history.append(process.pid)
        slot.started_at = time.monotonic()
        ready: asyncio.Future[int] = loop.create_future()
        slot.ready = ready

        def on_ready(pid: int) -> None:
            if not ready.done():
                ready.set_result(pid)

        _, channel = await loop.create_unix_connection(
            lambda: PrimaryChannel(node.server, on_ready), sock=primary_end
        )
        slot.channel = channel
        channel.send_hello(self._settings(node))
        exited = asyncio.ensure_future(process.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, exited},
                timeout=WORKER_START_SECONDS_MAX,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not exited.done():
                exited.cancel()
        if ready not in done:
            self._kill(slot)
            raise RuntimeError(f"worker {slot.index} (pid {process.pid}) did not start")

    async def _watch(self, slot: WorkerProcess) -> None:
        """Restart the slot's worker whenever it exits, until the pool closes."""
        delay = RESTART_DELAY_SECONDS_MIN
        while not self._closing:
            process = slot.process
            assert process is not None
            status = await process.wait()
            if slot.channel is not None:
                slot.channel.close()
            if self._closing:
                return
            lived = time.monotonic() - slot.started_at
            log.warning(
                "worker %d (pid %d) exited with status %s after %.1f s; restarting",
                slot.index,
                process.pid,
                status,
                lived,
            )
            delay = RESTART_DELAY_SECONDS_MIN if lived >= HEALTHY_RUN_SECONDS else delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_SECONDS_MAX)
            if self._closing:
                return
            try:
                await self._spawn(slot)
                slot.restarts += 1
            except Exception:
                log.exception("worker %d could not be restarted; trying again", slot.index)

    def _kill(self, slot: WorkerProcess) -> None:
        process = slot.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Stop every worker (they finish their requests in flight), then close the sockets."""
        if self._closing:
            return
        self._closing = True
        for slot in self.slots:
            if slot.watcher is not None:
                slot.watcher.cancel()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), WORKER_STOP_SECONDS_MAX)
            except TimeoutError:
                log.warning("worker %d did not stop in time; killing it", slot.index)
                self._kill(slot)
                await process.wait()
            if slot.channel is not None:
                slot.channel.close()
        for slot in self.slots:
            slot.listen_socket.close()
        if self.primary_socket is not None and self._node is None:
            self.primary_socket.close()
