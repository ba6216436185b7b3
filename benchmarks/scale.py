"""Scale run: load a million ~1 KB items into one `keeldb serve`, read at that size, kill -9
during more writes, and time the restart.

    python benchmarks/scale.py [--items 1000000] [--dir /tmp/keeldb-scale] [--json out.json]

Steps, each reported as it ends:

1. start `keeldb serve --data-dir DIR/data` (functions off: only the database is measured);
2. load --items items into `querytable` with BatchWriteItem (`keeldb bench`'s batchload:
   partitions of 100 items, 2 client processes x 4 connections), sampling the server's RSS
   (anonymous and file-backed, i.e. LMDB's mapped pages) every few seconds against the items
   loaded, and the size of the data directory;
3. Query (Limit 10 of 100) and GetItem (`qget`) throughput at that size;
4. start loading again (overwriting the first partitions), SIGKILL the server mid-way, start
   it again and time (a) until it listens, (b) until a GetItem of an acknowledged item
   succeeds; then check that every item of one sampled partition is present.

Not part of the test suite (it takes minutes and gigabytes); rerun it by hand. The data
directory is removed at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

from keeldb.bench import client, runner, workloads
from keeldb.bench.workloads import Shape

ITEMS_PER_PARTITION = 100
# Reading /proc this often during the load gives the RSS curve.
RSS_SAMPLE_SECONDS = 5.0
START_SECONDS_MAX = 600.0  # a restart that replays a long log is slow, never this slow
KILL_AFTER_SECONDS = 8.0  # into the second load: past a few group commits and a checkpoint


def _status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def _dir_bytes(path: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for part in ("store", "wal"):
        total = 0
        for root, _, files in os.walk(path / part):
            for name in files:
                try:
                    # Allocated blocks, not apparent size: LMDB's file is sparse.
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
        sizes[part] = total
    return sizes


def _start(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start the server; return it, its URL and the seconds until it listened."""
    started = time.monotonic()
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keeldb",
            "serve",
            "--port",
            "0",
            "--no-functions",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=log_file,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    log_file.close()
    assert process.stdout is not None
    while time.monotonic() - started < START_SECONDS_MAX:
        line = process.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        if "listening on" in line:
            url = line.split("listening on ", 1)[1].split()[0]
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, url, time.monotonic() - started
    process.kill()
    process.wait()
    raise RuntimeError(f"the server did not start; see {log_path}")


class RssSampler:
    """Samples the server's RSS in a thread while a phase runs."""

    def __init__(self, pid: int, data_dir: Path) -> None:
        self.pid = pid
        self.data_dir = data_dir
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            try:
                sample: dict[str, Any] = {"t_s": round(time.monotonic() - self._started, 1)}
                sample.update(_status_kb(self.pid))
                sample.update(_dir_bytes(self.data_dir))
            except OSError:
                return
            self.samples.append(sample)
            print(
                f"  t={sample['t_s']:>6}s RSS {sample['VmRSS'] / 1024:>7.0f} MB "
                f"(anon {sample['RssAnon'] / 1024:.0f}, file {sample['RssFile'] / 1024:.0f}) "
                f"store {sample['store'] / 2**20:.0f} MB wal {sample['wal'] / 2**20:.0f} MB",
                flush=True,
            )


class PrintDisplay:
    def phase_started(self, phase: str, total: int | None, seconds: float | None) -> None:
        print(f"{phase}: started", flush=True)

    def phase_progress(self, ops: int, elapsed_seconds: float) -> None:
        pass

    def phase_finished(self, summary: dict[str, Any]) -> None:
        latency = summary["lat_ms"]
        print(
            f"{summary['phase']}: {summary['throughput_ops_s']:,.0f} ops/s "
            f"(items {summary.get('items_s', '-')}/s) p50 {latency.get('p50')} ms "
            f"p99 {latency.get('p99')} ms errors {summary['errors']}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/keeldb-scale"))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per read phase")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()

    partitions = max(1, args.items // ITEMS_PER_PARTITION)
    shape = Shape(records=1000, partitions=partitions, items_per_partition=ITEMS_PER_PARTITION)
    settings = runner.Settings(
        workloads=(),
        shape=shape,
        processes=args.processes,
        connections=args.connections,
        duration_seconds=args.duration,
        warmup_seconds=2.0,
        time_max_seconds=3600.0,
    )
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    data_dir = args.dir / "data"
    log_path = args.dir / "server.log"
    result: dict[str, Any] = {"items": partitions * ITEMS_PER_PARTITION}
    display = PrintDisplay()

    process, url, first_start = _start(data_dir, log_path)
    try:
        target = client.Target(url)
        runner.set_up_tables(target)
        print(f"server pid {process.pid} at {url}; loading {result['items']:,} items", flush=True)
        with RssSampler(process.pid, data_dir) as sampler:
            load = runner.run_phase("batchload", settings, target, [process.pid], display)
        result["load"] = {
            "seconds": load["elapsed_s"],
            "items_per_s": load["items_s"],
            "requests_per_s": load["throughput_ops_s"],
            "p99_ms": load["lat_ms"]["p99"],
            "errors": load["errors"],
            "server_cpu_us_per_item": round(load["server"]["cpu_us_per_op"] / 25, 1),
            "write_bytes_per_logical_byte": load["server"]["write_bytes_per_logical_byte"],
            "rss_samples": sampler.samples,
        }
        result["after_load"] = {**_status_kb(process.pid), **_dir_bytes(data_dir)}
        reads = {}
        for phase in ("query", "qget"):
            summary = runner.run_phase(phase, settings, target, [process.pid], display)
            reads[phase] = {
                "ops_per_s": summary["throughput_ops_s"],
                "p50_ms": summary["lat_ms"]["p50"],
                "p99_ms": summary["lat_ms"]["p99"],
                "errors": summary["errors"],
                "get_misses": summary["get_misses"],
                "server_cpu_us_per_op": summary["server"]["cpu_us_per_op"],
                "rss_mb_start": summary["server"]["rss_mb_start"],
                "rss_mb_end": summary["server"]["rss_mb_end"],
            }
        result["reads"] = reads

        # Kill -9 during a second load, then time the restart.
        print("second load; SIGKILL after a few seconds", flush=True)
        reload = runner.Settings(
            workloads=(),
            shape=Shape(records=1000, partitions=partitions, items_per_partition=100),
            processes=args.processes,
            connections=args.connections,
            time_max_seconds=KILL_AFTER_SECONDS,
        )
        killer = threading.Timer(KILL_AFTER_SECONDS - 1.0, process.send_signal, [signal.SIGKILL])
        killer.start()
        try:
            runner.run_phase("batchload", reload, target, [], runner.QuietDisplay())
        except RuntimeError as error:
            print(f"  (load stopped: {str(error).splitlines()[0]})", flush=True)
        killer.join()
        process.wait()
        wal_at_kill = _dir_bytes(data_dir)["wal"]
        restarted = time.monotonic()
        process, url, listen_seconds = _start(data_dir, log_path)
        target = client.Target(url)
        key = {"pk": {"S": workloads.partition_key(0)}, "sk": {"S": workloads.sort_key(0)}}
        status, answer = client.call(
            target, "GetItem", {"TableName": workloads.QUERY_TABLE, "Key": key}
        )
        first_read = time.monotonic() - restarted
        check_partition = partitions - 1
        status_q, page = client.call(
            target,
            "Query",
            {
                "TableName": workloads.QUERY_TABLE,
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {
                    ":p": {"S": workloads.partition_key(check_partition)}
                },
            },
        )
        result["recovery"] = {
            "wal_bytes_at_kill": wal_at_kill,
            "seconds_to_listen": round(listen_seconds, 2),
            "seconds_to_first_read": round(first_read, 2),
            "first_read_found": status == 200 and "Item" in answer,
            "sampled_partition_items": page.get("Count") if status_q == 200 else None,
            "first_start_seconds": round(first_start, 2),
            "rss_after_restart": _status_kb(process.pid),
        }
        print(json.dumps(result["recovery"]), flush=True)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    summary = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
