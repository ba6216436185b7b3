"""Runs `keeldb bench`: starts a server when asked, sets up the tables, runs each phase with
worker processes, samples the server, and gathers the figures.

Owns: the order of a benchmark (set-up, then each phase in turn), the worker processes of a
phase (started with `spawn`, so nothing of this process's threads or loop leaks into them),
the timing of the server readings (at the start of the recorded window and at its end), and
the KeelDB server it started itself (`keeldb serve` on a free port, stopped by PID).

It must never draw anything on the terminal (the caller's `Display` does) and never leaves a
process behind: workers are joined or terminated, a started server is stopped.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from keeldb.bench import client, probe, report, workloads
from keeldb.bench.workloads import Shape

# A server starts in well under a second; the bound only stops a broken one hanging the run.
SERVER_START_SECONDS_MAX = 60.0
SERVER_STOP_SECONDS_MAX = 30.0
TABLE_ACTIVE_SECONDS_MAX = 60.0
# Workers need a moment to start (spawn imports the client); beyond this they are broken.
WORKERS_READY_SECONDS_MAX = 60.0
# How long after its end a phase's workers may take to send their results.
RESULTS_GRACE_SECONDS = 30.0
# How often the parent samples the server's RSS during a phase.
SAMPLE_SECONDS = 0.25
START_MODES = ("single", "memory", "cluster")
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass(frozen=True, slots=True)
class Settings:
    workloads: tuple[str, ...]
    shape: Shape
    processes: int = 2
    connections: int = 4
    duration_seconds: float = 20.0
    warmup_seconds: float = 3.0
    time_max_seconds: float = 600.0
    seed: int = 42


class Display(Protocol):
    def phase_started(self, phase: str, total: int | None, seconds: float | None) -> None: ...

    def phase_progress(self, ops: int, elapsed_seconds: float) -> None: ...

    def phase_finished(self, summary: dict[str, Any]) -> None: ...


class QuietDisplay:
    def phase_started(self, phase: str, total: int | None, seconds: float | None) -> None:
        pass

    def phase_progress(self, ops: int, elapsed_seconds: float) -> None:
        pass

    def phase_finished(self, summary: dict[str, Any]) -> None:
        pass


@dataclass
class Server:
    """A server the benchmark reads (and, when it started it, stops)."""

    url: str
    pid: int | None = None
    mode: str = "endpoint"
    process: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    remove_data_dir: bool = False
    log_path: Path | None = None
    # The processes of a cluster (its nodes), read together; a single server is `pid`.
    node_pids: list[int] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return self.node_pids or ([self.pid] if self.pid is not None else [])

    def stop(self) -> None:
        if self.mode == "cluster" and self.data_dir is not None:
            subprocess.run(
                [*_KEELDB, "cluster", "down", "--data-dir", str(self.data_dir / "data")],
                capture_output=True,
                check=False,
                timeout=SERVER_STOP_SECONDS_MAX,
            )
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(SERVER_STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.remove_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


_KEELDB = [sys.executable, "-m", "keeldb"]


def start_cluster(root: Path, remove: bool, cluster_args: list[str]) -> Server:
    """`keeldb cluster up` under `root`: it starts the nodes and returns; the benchmark talks
    to the first endpoint it names and reads every node's process."""
    data = root / "data"
    done = subprocess.run(
        [*_KEELDB, "cluster", "up", "--data-dir", str(data), *cluster_args],
        capture_output=True,
        text=True,
        check=False,
        timeout=SERVER_START_SECONDS_MAX,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    server = Server(url="", mode="cluster", data_dir=root, remove_data_dir=remove)
    endpoints = [
        line.split()[1:] for line in done.stdout.splitlines() if line.startswith("endpoints:")
    ]
    if done.returncode != 0 or not endpoints or not endpoints[0]:
        server.stop()
        raise RuntimeError(
            f"`keeldb cluster up` did not start a cluster:\n{done.stdout}{done.stderr}"
        )
    server.url = endpoints[0][0]
    for path in sorted((data / "pids").glob("n*.pid")):
        text = path.read_text().strip()
        if text.isdigit():
            server.node_pids.append(int(text))
    return server


def start_server(mode: str, data_dir: Path | None, serve_args: list[str]) -> Server:
    """Start `keeldb serve` (mode single: on disk; memory: --in-memory) on a free port, or a
    local cluster with `keeldb cluster up` when that command exists."""
    assert mode in START_MODES, mode
    remove = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="keeldb-bench-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    if mode == "cluster":
        return start_cluster(root, remove, serve_args)
    command = [*_KEELDB, "serve", "--port", "0"]
    if mode == "memory":
        command.append("--in-memory")
    else:
        command += ["--data-dir", str(root / "data")]
    command += serve_args
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log_file,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    log_file.close()
    server = Server(
        url="",
        pid=process.pid,
        mode=mode,
        process=process,
        data_dir=root,
        remove_data_dir=remove,
        log_path=log_path,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + SERVER_START_SECONDS_MAX
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        lines.append(line)
        found = _LISTENING.search(line)
        if found:
            server.url = found.group(1)
            # Nothing more is read from its stdout: send it nowhere rather than fill a pipe.
            _drain_in_background(process)
            return server
    server.stop()
    detail = "".join(lines[-5:]) + log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"keeldb serve did not start:\n{detail}")


def _drain_in_background(process: subprocess.Popen[bytes]) -> None:
    stdout = process.stdout
    assert stdout is not None

    def drain() -> None:
        with contextlib.suppress(OSError, ValueError):
            while stdout.read(65536):
                pass

    threading.Thread(target=drain, name="keeldb-bench-server-stdout", daemon=True).start()


def set_up_tables(target: client.Target) -> None:
    """Create the benchmark's tables unless they exist, and wait until they are ACTIVE."""
    for request in workloads.create_table_requests():
        status, answer = client.call(target, "CreateTable", request)
        if status != 200 and not str(answer.get("__type", "")).endswith("ResourceInUseException"):
            raise RuntimeError(f"CreateTable {request['TableName']} failed: {answer}")
    deadline = time.monotonic() + TABLE_ACTIVE_SECONDS_MAX
    for name in (workloads.USER_TABLE, workloads.QUERY_TABLE):
        while True:
            status, answer = client.call(target, "DescribeTable", {"TableName": name})
            if status == 200 and answer["Table"]["TableStatus"] == "ACTIVE":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"table {name} did not become ACTIVE: {answer}")
            time.sleep(0.05)


def run_phase(
    phase: str,
    settings: Settings,
    target: client.Target,
    server_pids: Sequence[int],
    display: Display,
) -> dict[str, Any]:
    """Run one phase with the worker processes and return its summary."""
    assert phase in workloads.PHASES, phase
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    go = context.Event()
    start = context.Value("d", 0.0)
    loading = phase in workloads.LOAD_PHASES
    jobs = [
        client.Job(
            phase=phase,
            worker=worker,
            workers=settings.processes,
            connections=settings.connections,
            target=target,
            shape=settings.shape,
            seed=settings.seed,
            warmup_seconds=0.0 if loading else settings.warmup_seconds,
            duration_seconds=None if loading else settings.duration_seconds,
            time_max_seconds=settings.time_max_seconds,
        )
        for worker in range(settings.processes)
    ]
    processes = [
        context.Process(
            target=client.worker_main,
            args=(job, messages, go, start),
            name=f"keeldb-bench-{phase}-{job.worker}",
            daemon=True,
        )
        for job in jobs
    ]
    for process in processes:
        process.start()
    try:
        return _supervise(
            phase, settings, jobs, processes, messages, go, start, server_pids, display
        )
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)


def _receive(messages: Any, seconds: float) -> tuple[str, int, Any] | None:
    try:
        message: tuple[str, int, Any] = messages.get(timeout=max(0.0, seconds))
    except queue.Empty:
        return None
    return message


def _supervise(
    phase: str,
    settings: Settings,
    jobs: list[client.Job],
    processes: list[Any],
    messages: Any,
    go: Any,
    start: Any,
    server_pids: Sequence[int],
    display: Display,
) -> dict[str, Any]:
    ready: set[int] = set()
    deadline = time.monotonic() + WORKERS_READY_SECONDS_MAX
    while len(ready) < len(jobs):
        message = _receive(messages, deadline - time.monotonic())
        if message is None:
            raise RuntimeError(f"the {phase} workers did not start")
        kind, worker, payload = message
        if kind == "failed":
            raise RuntimeError(f"benchmark worker {worker} failed:\n{payload}")
        ready.add(worker)
    shape = settings.shape
    if phase == "load":
        total: int | None = shape.records
    elif phase == "batchload":
        total = shape.partitions * shape.items_per_partition
    else:
        total = None
    started = time.monotonic() + 0.05
    start.value = started
    record_from, stop_at = jobs[0].window(started)
    display.phase_started(
        phase, total, None if jobs[0].duration_seconds is None else stop_at - record_from
    )
    go.set()
    before: probe.Reading | None = None
    rss_max = 0
    host_before = probe.host_busy_seconds()
    counts = dict.fromkeys(range(len(jobs)), 0)
    results: dict[int, dict[str, Any]] = {}
    end_deadline = stop_at + RESULTS_GRACE_SECONDS
    while len(results) < len(jobs):
        now = time.monotonic()
        if server_pids:
            if before is None and now >= record_from:
                before = probe.read(server_pids)
                rss_max = before.rss_bytes
            elif before is not None:
                rss_max = max(rss_max, probe.read(server_pids).rss_bytes)
        if now > end_deadline:
            raise RuntimeError(f"the {phase} workers did not finish")
        wait = SAMPLE_SECONDS
        if before is None and server_pids:
            wait = min(wait, max(0.0, record_from - now))
        message = _receive(messages, wait)
        if message is None:
            if not any(p.is_alive() for p in processes) and len(results) < len(jobs):
                # The queue may still hold their last messages.
                message = _receive(messages, 1.0)
                if message is None:
                    raise RuntimeError(f"the {phase} workers exited without results")
            else:
                display.phase_progress(
                    sum(counts.values()), max(0.0, time.monotonic() - record_from)
                )
                continue
        kind, worker, payload = message
        if kind == "failed":
            raise RuntimeError(f"benchmark worker {worker} failed:\n{payload}")
        if kind == "progress":
            counts[worker] = payload
            display.phase_progress(sum(counts.values()), max(0.0, time.monotonic() - record_from))
        elif kind == "result":
            results[worker] = payload
            counts[worker] = sum(len(raw) // 8 for raw in payload["latencies"].values())
    finished = time.monotonic()
    host_after = probe.host_busy_seconds()
    loading_phase = phase in workloads.LOAD_PHASES
    if loading_phase:
        elapsed = finished - started
    else:
        elapsed = stop_at - record_from
    server_figures = None
    if server_pids:
        after = probe.read(server_pids)
        if before is None:
            before = after
        rss_max = max(rss_max, after.rss_bytes)
        server_figures = {
            "pids": list(after.pids),
            "cpu_s": after.cpu_seconds - before.cpu_seconds,
            "rss_start": before.rss_bytes,
            "rss_end": after.rss_bytes,
            "rss_max": rss_max,
            "write_bytes": after.write_bytes - before.write_bytes,
        }
    errors: Counter[str] = Counter()
    for result in results.values():
        errors.update(result["errors"])
    summary = report.phase_summary(
        phase,
        elapsed,
        report.merge_latencies(r["latencies"] for r in results.values()),
        errors,
        sum(r["logical_bytes"] for r in results.values()),
        sum(r["items_written"] for r in results.values()),
        sum(r["cpu_s"] for r in results.values()),
        server_figures,
    )
    summary["client"].update(
        processes=len(jobs),
        connections_per_process=settings.connections,
        in_flight=len(jobs) * settings.connections,
        reconnects=sum(r["reconnects"] for r in results.values()),
    )
    summary["get_misses"] = sum(r["get_misses"] for r in results.values())
    if loading_phase:
        summary["unfinished"] = sum(r["unfinished"] for r in results.values())
        summary["items_s"] = round(summary["items_written"] / elapsed, 1)
    busy = host_after[0] - host_before[0]
    total_cpu = host_after[1] - host_before[1]
    summary["host"] = {
        "cpus": probe.cpu_count(),
        "busy_pct_of_all_cores": round(100 * busy / total_cpu, 1) if total_cpu else None,
    }
    display.phase_finished(summary)
    return summary


@contextlib.contextmanager
def server_for(
    endpoint: str | None,
    start_mode: str | None,
    server_pid: int | None,
    data_dir: Path | None,
    serve_args: list[str],
) -> Iterator[Server]:
    """The server to benchmark: the given endpoint, or one started (and stopped) here."""
    if start_mode is None:
        assert endpoint is not None
        yield Server(url=endpoint, pid=server_pid)
        return
    server = start_server(start_mode, data_dir, serve_args)
    try:
        yield server
    finally:
        server.stop()


def run(settings: Settings, target: client.Target, server: Server, display: Display) -> dict:
    """Set up the tables and run every phase; return the whole summary."""
    started = time.time()
    set_up_tables(target)
    phases = [
        run_phase(phase, settings, target, server.pids, display) for phase in settings.workloads
    ]
    return {
        "tool": "keeldb bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "endpoint": target.url,
        "server": {"mode": server.mode, "pids": server.pids},
        "settings": {
            "workloads": list(settings.workloads),
            "records": settings.shape.records,
            "field_count": settings.shape.field_count,
            "field_bytes": settings.shape.field_bytes,
            "partitions": settings.shape.partitions,
            "items_per_partition": settings.shape.items_per_partition,
            "query_limit": settings.shape.query_limit,
            "distribution": settings.shape.distribution,
            "consistent_read": settings.shape.consistent_read,
            "processes": settings.processes,
            "connections_per_process": settings.connections,
            "duration_s": settings.duration_seconds,
            "warmup_s": settings.warmup_seconds,
            "seed": settings.seed,
        },
        "phases": phases,
    }
