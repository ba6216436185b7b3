"""Where a durable write's wall time and CPU go, on a real server under the reference load.

Starts `keeldb serve` on disk (defaults: archiver and function service on) with
KEELDB_LOG_STATS set, so that the log writes its group-commit timings
(`replog.GroupTimings`) to a file every second; runs the phases of the reference harness
(`ddb_bench.py`: 2 client processes x 4 connections, 8 requests in flight) one at a time; and
for each phase reports, from the differences before and after it:

- the server's CPU per operation by thread (`/proc/PID/task/*/stat`: the event loop, the
  log's disk thread, the archiver, the rest), the client's CPU per operation and how busy
  the host's cores were;
- group commits: records per group, the wall time per group of its write, its fdatasync,
  the hand-off to the disk thread and back, applying it to the store and waking the writers;
  and per record, the wait from its append to the start of its group's write.

From these it derives the throughput bound of a closed loop: with W writes per group and a
group's fixed wall time T (queue wait + commit + apply), writes complete at most at W / T
per second while the CPU per operation of the server and the client, on the cores they
share, allows at most cores / (server + client CPU per operation).

    python -m benchmarks.write_decompose --workloads load,a --records 5000 --duration 8
    python -m benchmarks.write_decompose --env KEELDB_WAL_SYNC=thread --tree /tmp/old-single
    python -m benchmarks.write_decompose --env KEELDB_WAL_SYNC=async --port 8100

Run it from the tree to measure; `--tree` runs another checkout's server (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HARNESS_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "ddb_bench.py"
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
SERVER_START_SECONDS_MAX = 30.0


def thread_cpu(pid: int, disk_thread_id: int | None) -> dict[str, float]:
    """CPU seconds (user + system) of process `pid`: its event-loop thread ("loop"), the
    log's disk thread ("disk") and all other threads ("other": the archiver, LMDB's readers
    in executors, the function service ...)."""
    cpu: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        tid = int(task.name)
        name = "loop" if tid == pid else "disk" if tid == disk_thread_id else "other"
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND
        cpu[name] = cpu.get(name, 0.0) + seconds
    return cpu


def free_port(port: int = 0) -> int:
    """`port`, or (0) one the kernel finds free."""
    if port:
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    tree: Path,
    data_dir: Path,
    stats: Path,
    env_extra: list[str],
    serve_args: list[str],
    port: int = 0,
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port(port)
    env = dict(os.environ, PYTHONPATH=str(tree), KEELDB_LOG_STATS=str(stats))
    for pair in env_extra:
        name, _, value = pair.partition("=")
        env[name] = value
    process = subprocess.Popen(
        [sys.executable, "-m", "keeldb", "serve", "--port", str(port)]
        + ["--data-dir", str(data_dir), *serve_args],
        env=env,
        cwd=tree,  # `python -m` puts the working directory first on the path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SERVER_START_SECONDS_MAX
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def read_stats(path: Path) -> dict[str, Any]:
    try:
        stats: dict[str, Any] = json.loads(path.read_text())
        return stats
    except (OSError, ValueError):
        return {}


def run_phase(
    harness: Path, endpoint: str, pid: int, phase: str, args: argparse.Namespace
) -> dict[str, Any]:
    out = Path(tempfile.mktemp(prefix="decompose-", suffix=".jsonl"))
    command = [sys.executable, str(harness), "--endpoint", endpoint, "--workloads", phase]
    command += ["--records", str(args.records), "--duration", str(args.duration)]
    command += ["--server-pid", str(pid), "--json-out", str(out), "--quiet", "--warmup", "0"]
    subprocess.run(command, check=True, capture_output=True)
    lines = out.read_text().splitlines()
    out.unlink()
    summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return summary


def decompose(
    summary: dict[str, Any],
    cpu0: dict[str, float],
    cpu1: dict[str, float],
    stats0: dict[str, Any],
    stats1: dict[str, Any],
) -> dict[str, Any]:
    ops = summary["ops"]
    threads = {
        name: round(1e6 * (cpu1.get(name, 0.0) - cpu0.get(name, 0.0)) / ops, 1)
        for name in sorted(set(cpu0) | set(cpu1))
        if cpu1.get(name, 0.0) - cpu0.get(name, 0.0) > 0
    }
    result: dict[str, Any] = {
        "phase": summary["phase"],
        "ops": ops,
        "ops_s": summary["throughput_ops_s"],
        "p50_ms": summary["lat_ms"]["p50"],
        "p99_ms": summary["lat_ms"]["p99"],
        "server_us_per_op": summary.get("server", {}).get("cpu_us_per_op"),
        "server_us_per_op_by_thread": threads,
        "client_us_per_op": summary["client"]["us_per_op"],
        "host_busy_pct": summary.get("host", {}).get("busy_pct_of_all_cores"),
    }
    if stats1:
        diff = {
            key: stats1[key] - stats0.get(key, 0)
            for key in stats1
            if isinstance(stats1[key], int | float) and key != "disk_thread_id"
        }
        groups = diff.get("groups", 0)
        records = diff.get("records", 0)
        if groups:
            sizes0 = {int(k): v for k, v in stats0.get("group_sizes", {}).items()}
            sizes1 = {int(k): v for k, v in stats1.get("group_sizes", {}).items()}
            sizes = {k: sizes1[k] - sizes0.get(k, 0) for k in sorted(sizes1)}
            result["groups"] = {
                "count": groups,
                "inline": diff.get("inline_groups", 0),
                # fdatasync completed on the loop (KEELDB_WAL_SYNC=async): their commit is
                # write + fdatasync to its completion seen on the loop, with no hand-off.
                "async": diff.get("async_groups", 0),
                "records_per_group": round(records / groups, 2),
                "sizes": {k: v for k, v in sizes.items() if v},
                "queue_wait_us_per_record": round(1e6 * diff["queue_wait_seconds"] / records),
                "commit_us_per_group": round(1e6 * diff["commit_seconds"] / groups),
                "write_us_per_group": round(1e6 * diff["write_seconds"] / groups),
                "fdatasync_us_per_group": round(1e6 * diff["sync_seconds"] / groups),
                # The old tree's flusher waited for the disk thread: its commit held the
                # hand-off both ways; now the write job starts itself (handback is apart).
                "handoff_us_per_group": round(
                    1e6
                    * (diff["commit_seconds"] - diff["write_seconds"] - diff["sync_seconds"])
                    / max(1, groups - diff.get("inline_groups", 0) - diff.get("async_groups", 0))
                ),
                "handback_us_per_group": round(1e6 * diff.get("handback_seconds", 0.0) / groups),
                "apply_us_per_group": round(1e6 * diff["apply_seconds"] / groups),
                "groups_s": round(groups / summary["elapsed_s"], 1),
            }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="load,a")
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--harness", type=Path, default=HARNESS_DEFAULT.resolve())
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--serve-arg", action="append", default=[])
    parser.add_argument("--label", default="")
    parser.add_argument("--port", type=int, default=0, help="the server's (0: any free one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decompose-") as work:
        stats = Path(work) / "log-stats.json"
        process, endpoint = start_server(
            args.tree, Path(work) / "data", stats, args.env, args.serve_arg, args.port
        )
        try:
            run_phase(args.harness, endpoint, process.pid, "setup", args)
            for phase in args.workloads.split(","):
                time.sleep(1.2)  # one stats write after the previous phase
                stats0 = read_stats(stats)
                cpu0 = thread_cpu(process.pid, stats0.get("disk_thread_id"))
                summary = run_phase(args.harness, endpoint, process.pid, phase, args)
                time.sleep(1.2)
                stats1 = read_stats(stats)
                cpu1 = thread_cpu(process.pid, stats1.get("disk_thread_id"))
                result = decompose(summary, cpu0, cpu1, stats0, stats1)
                result["label"] = args.label
                print(json.dumps(result), flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
