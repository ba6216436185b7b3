"""The load generator of `keeldb bench`: worker processes driving keep-alive connections.

Owns: one worker process's event loop (uvloop), its CONNECTIONS keep-alive HTTP/1.1
connections (httptools parses the answers), the SigV4 signature of every request, the closed
loop (each connection has exactly one request outstanding, so processes x connections
requests are in flight), latency recording, retries of failed loads and of BatchWriteItem's
UnprocessedItems, and the progress counts sent to the parent. Also `call`, the blocking
one-request client used for table set-up.

It must never decide what to send (that is `workloads`) nor compute figures (`report`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import socket
import time
import traceback
from array import array
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
import uvloop

from keeldb.api.sigv4 import signing_key
from keeldb.bench import workloads
from keeldb.bench.workloads import OPERATIONS, Shape

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
SIGNED_HEADERS = "content-type;host;x-amz-date;x-amz-target"
# A request that takes longer than this is counted as a timeout and its connection reopened.
REQUEST_SECONDS_MAX = 10.0
# How long a worker waits for the other workers to be ready.
START_SECONDS_MAX = 60.0
# Progress counts go to the parent this often.
PROGRESS_SECONDS = 0.5
# A failed load write is retried, at most this many times per record on average.
LOAD_RETRIES_PER_ITEM = 5
# The error type names that mean "slow down", retried with a short pause during loads.
_THROTTLED = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
_RETRY_PAUSE_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send requests and how to sign them."""

    url: str
    region: str = "us-east-1"
    access_key: str = "AKIDKEELDBBENCH"
    secret_key: str = "keeldb-bench-secret"

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http:// endpoints can be benchmarked: {self.url!r}")
        return parts.hostname, parts.port or 80

    @property
    def host_header(self) -> str:
        host, port = self.host_port
        return host if port == 80 else f"{host}:{port}"


class Signer:
    """SigV4 for `POST /` with a DynamoDB JSON body; the signing key is derived once a day
    and `X-Amz-Date` formatted once a second."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._host = target.host_header
        self._second = -1
        self._amz_date = ""
        self._day = ""
        self._key = b""
        self._scope = ""
        self._fixed = (
            f"Host: {self._host}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            "User-Agent: keeldb-bench\r\nAccept-Encoding: identity\r\n"
        )

    def request(self, operation: str, body: bytes) -> bytes:
        """The whole signed HTTP request."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            day = self._amz_date[:8]
            if day != self._day:
                self._day = day
                target = self._target
                self._key = signing_key(target.secret_key, day, target.region, "dynamodb")
                self._scope = f"{day}/{target.region}/dynamodb/aws4_request"
        amz_date = self._amz_date
        target_header = TARGET_PREFIX + operation
        canonical = (
            f"POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{self._host}\n"
            f"x-amz-date:{amz_date}\nx-amz-target:{target_header}\n\n{SIGNED_HEADERS}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{self._scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.digest(self._key, to_sign.encode(), "sha256").hex()
        head = (
            f"POST / HTTP/1.1\r\n{self._fixed}X-Amz-Target: {target_header}\r\n"
            f"X-Amz-Date: {amz_date}\r\nAuthorization: AWS4-HMAC-SHA256 "
            f"Credential={self._target.access_key}/{self._scope}, "
            f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


def call(target: Target, operation: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection: (HTTP status, decoded JSON answer)."""
    raw = Signer(target).request(operation, json.dumps(payload).encode())
    with socket.create_connection(target.host_port, timeout=REQUEST_SECONDS_MAX) as sock:
        sock.sendall(raw)
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection before answering")
            parser.feed_data(data)
        status = parser.get_status_code()
    body = b"".join(answer.parts)
    return status, (json.loads(body) if body else {})


class _Answer:
    """httptools callbacks collecting one response body."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


@dataclass(frozen=True, slots=True)
class Job:
    """What one worker does in one phase."""

    phase: str
    worker: int
    workers: int
    connections: int
    target: Target
    shape: Shape
    seed: int
    # Run phases: operations started in the first `warmup_seconds` are not recorded, and the
    # phase stops `duration_seconds` later. Load phases (duration None) run until their share
    # is written. Any phase stops after `time_max_seconds`.
    warmup_seconds: float
    duration_seconds: float | None
    time_max_seconds: float

    def window(self, start: float) -> tuple[float, float]:
        """(record from, stop at) in monotonic seconds, for a phase started at `start`."""
        if self.duration_seconds is None:
            return start, start + self.time_max_seconds
        record_from = start + self.warmup_seconds
        stop_at = min(record_from + self.duration_seconds, start + self.time_max_seconds)
        return record_from, stop_at


class _Connection(asyncio.Protocol):
    """One keep-alive connection with one request outstanding at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._parts: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.sent_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ConnectionError(f"bad response: {error}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request and wait for its answer; a watchdog (`overdue`) bounds the wait,
        as a timer per request would cost more than the request itself."""
        assert self._waiter is None
        assert self._transport is not None
        waiter = self._waiter = self._loop.create_future()
        self.sent_at = self._loop.time()
        self._transport.write(raw)
        return await waiter

    def overdue(self, now: float) -> bool:
        return self._waiter is not None and now - self.sent_at > REQUEST_SECONDS_MAX

    def time_out(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError("no answer in time"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _error_type(body: bytes) -> str:
    try:
        kind = json.loads(body).get("__type", "")
    except (ValueError, AttributeError):
        return "unparseable"
    return str(kind).rpartition("#")[2] or "unknown"


class _Worker:
    def __init__(self, job: Job, progress: Any) -> None:
        self.job = job
        self.progress = progress
        rng = random.Random(job.seed * 1_000_003 + job.worker * 7_919 + hash_phase(job.phase))
        self.rng = rng
        self.bodies = workloads.Bodies(job.shape, rng)
        self.signer = Signer(job.target)
        self.latencies = {name: array("d") for name in OPERATIONS}
        self.errors: Counter[str] = Counter()
        self.done = 0
        self.logical_bytes = 0
        self.items_written = 0
        self.reconnects = 0
        self.get_misses = 0
        self.connections: list[_Connection] = []
        self.record_from = 0.0
        self.stop_at = 0.0
        # Load phases: the work left, and what failed and waits for another try.
        self.todo: deque[Any] = deque()
        self.retries_left = 0
        self.mix: workloads.Mix | None = None
        shape = job.shape
        if job.phase == "load":
            self.todo.extend(workloads.load_keys(shape, job.worker, job.workers, job.seed))
            self.retries_left = LOAD_RETRIES_PER_ITEM * len(self.todo) + 10
        elif job.phase == "batchload":
            self.todo.extend(workloads.batch_pairs(shape, job.worker, job.workers))
            self.retries_left = LOAD_RETRIES_PER_ITEM * len(self.todo) + 10
        else:
            self.mix = workloads.Mix(job.phase, shape, rng)

    def _next(self) -> tuple[int, bytes, int, Any] | None:
        """(operation, body, logical bytes written, what to retry on failure)."""
        if self.mix is not None:
            operation, body, written = self.mix.next()
            return operation, body, written, None
        if not self.todo:
            return None
        work = self.todo.popleft()
        shape = self.job.shape
        if self.job.phase == "load":
            return (
                workloads.PUT,
                self.bodies.put(work),
                shape.record_bytes(workloads.user_key(work)),
                work,
            )
        written = sum(
            shape.record_bytes(workloads.partition_key(p) + workloads.sort_key(i), "pksk")
            for p, i in work
        )
        return workloads.BATCH, self.bodies.batch_put(work), written, work

    def _retry(self, work: Any) -> None:
        if work is not None and self.retries_left > 0:
            self.retries_left -= 1
            self.todo.append(work)

    def _batch_unprocessed(self, body: bytes, work: list[tuple[int, int]]) -> int:
        """Re-queue the UnprocessedItems of a BatchWriteItem answer; return items written."""
        if b"PutRequest" not in body:
            return len(work)
        unprocessed = json.loads(body).get("UnprocessedItems") or {}
        left = []
        for requests in unprocessed.values():
            for request in requests:
                item = request["PutRequest"]["Item"]
                part = int(item["pk"]["S"].removeprefix("part"))
                number = int(item["sk"]["S"].removeprefix("item"))
                left.append((part, number))
        if left:
            self._retry(left)
        return len(work) - len(left)

    async def _drive(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        perf_counter = time.perf_counter
        monotonic = time.monotonic
        while True:
            now = monotonic()
            if now >= self.stop_at:
                break
            chosen = self._next()
            if chosen is None:
                break
            operation, body, written, work = chosen
            if connection is None or connection.closed:
                if connection is not None:
                    self.reconnects += 1
                _, connection = await loop.create_connection(lambda: _Connection(loop), host, port)
            raw = self.signer.request(OPERATIONS[operation], body)
            started = perf_counter()
            try:
                status, answer = await connection.send(raw)
            except (ConnectionError, OSError, TimeoutError) as error:
                self.errors["timeout" if isinstance(error, TimeoutError) else "connection"] += 1
                connection.close()
                self._retry(work)
                continue
            elapsed_us = (perf_counter() - started) * 1e6
            if status != 200:
                kind = _error_type(answer)
                self.errors[kind] += 1
                self._retry(work)
                if kind in _THROTTLED:
                    await asyncio.sleep(_RETRY_PAUSE_SECONDS)
                continue
            if operation == workloads.BATCH:
                items = self._batch_unprocessed(answer, work)
                written = written * items // max(1, len(work))
            else:
                items = 1 if written else 0
            if started >= self.record_from:
                if operation == workloads.GET and answer == b"{}":
                    self.get_misses += 1
                self.latencies[OPERATIONS[operation]].append(elapsed_us)
                self.done += 1
                self.logical_bytes += written
                self.items_written += items
        if connection is not None:
            connection.close()

    async def run(self, start: float) -> float:
        """Run the phase; return the CPU seconds this process spent in its recorded window."""
        self.record_from, self.stop_at = self.job.window(start)
        host, port = self.job.target.host_port
        loop = asyncio.get_running_loop()
        # Every worker begins at the same moment, the start of the parent's clock.
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        reporter = loop.create_task(self._report_progress())
        cpu_at_start = _cpu_seconds()
        marks = [cpu_at_start]
        # The CPU of the warm-up is not the recorded operations' cost.
        loop.call_later(
            max(0.0, self.record_from - time.monotonic()),
            lambda: marks.append(_cpu_seconds()),
        )
        try:
            await asyncio.gather(*(self._drive(host, port) for _ in range(self.job.connections)))
        finally:
            reporter.cancel()
        return _cpu_seconds() - marks[-1]

    async def _report_progress(self) -> None:
        """Send the count of recorded operations, and time out overdue requests."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            self.progress.put(("progress", self.job.worker, self.done))
            now = loop.time()
            for connection in self.connections:
                if connection.overdue(now):
                    connection.time_out()
            self.connections = [c for c in self.connections if not c.closed]

    def result(self, cpu_seconds: float) -> dict[str, Any]:
        return {
            "worker": self.job.worker,
            "latencies": {
                name: samples.tobytes() for name, samples in self.latencies.items() if samples
            },
            "errors": dict(self.errors),
            "logical_bytes": self.logical_bytes,
            "items_written": self.items_written,
            "reconnects": self.reconnects,
            "get_misses": self.get_misses,
            "unfinished": len(self.todo),
            "cpu_s": cpu_seconds,
        }


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def hash_phase(phase: str) -> int:
    """A stable number per phase name (str hashes differ between processes)."""
    return int.from_bytes(hashlib.sha256(phase.encode()).digest()[:4], "big")


def worker_main(job: Job, progress: Any, go: Any, start: Any) -> None:
    """The entry point of a worker process: say it is ready, wait for `go` (an Event), run
    the job from the monotonic time in `start` (a shared double), put the result on
    `progress`."""
    try:
        worker = _Worker(job, progress)
        progress.put(("ready", job.worker, None))
        if not go.wait(START_SECONDS_MAX):
            raise TimeoutError("the benchmark did not start its phase")
        cpu = uvloop.run(worker.run(start.value))
        progress.put(("result", job.worker, worker.result(cpu)))
    except BaseException:
        progress.put(("failed", job.worker, traceback.format_exc()))
        raise
