"""`keeldb bench`: the command line of the benchmark, its progress display and its report.

    keeldb bench --start single --records 20000 --duration 20 --json out.json
    keeldb bench --endpoint http://127.0.0.1:8000 --server-pid 1234 --workloads a,c

Owns: the arguments, the rich progress display while phases run, the final table and the
JSON summary file. It must never measure anything itself (`runner` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keeldb.bench import client, runner, workloads
from keeldb.bench.workloads import Shape

# The width of the final table when it is not printed to a terminal.
REPORT_COLUMNS = 160


def register(commands: Any) -> None:
    """Add this package's subcommands to the `keeldb` parser's subcommands."""
    bench = commands.add_parser(
        "bench",
        help="run YCSB-style workloads against a DynamoDB endpoint",
        description="Run YCSB-style workloads (load, A 50/50, B 95/5, C read-only, Query "
        "Limit 10 of 100) with several client processes and report throughput, latency "
        "percentiles, server CPU per operation, RSS and bytes written per logical byte.",
    )
    where = bench.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", metavar="URL", help="benchmark the server at URL")
    where.add_argument(
        "--start",
        choices=runner.START_MODES,
        help="start a KeelDB to benchmark: single (on disk), memory (--in-memory) or "
        "cluster (keeldb cluster up); it is stopped at the end",
    )
    bench.add_argument(
        "--server-pid",
        type=int,
        metavar="PID",
        help="with --endpoint: the server's process, to report its CPU, RSS and bytes written",
    )
    bench.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="with --start: where the started server keeps its data (default: a temporary "
        "directory, removed at the end)",
    )
    bench.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="with --start: one more argument for the started server (repeatable)",
    )
    bench.add_argument(
        "--workloads",
        default="load,batchload,a,b,c,query",
        help="phases to run, in order (from: load, batchload, a, b, c, query)",
    )
    bench.add_argument("--records", type=int, default=20_000, help="records of usertable")
    bench.add_argument(
        "--duration", type=float, default=20.0, help="seconds recorded per run phase"
    )
    bench.add_argument(
        "--warmup", type=float, default=3.0, help="seconds run but not recorded first"
    )
    bench.add_argument(
        "--max-time", type=float, default=600.0, help="seconds after which any phase stops"
    )
    bench.add_argument("--processes", type=int, default=2, help="client processes")
    bench.add_argument("--connections", type=int, default=4, help="connections per client process")
    bench.add_argument("--distribution", choices=workloads.DISTRIBUTIONS, default="zipfian")
    bench.add_argument("--field-count", type=int, default=workloads.FIELD_COUNT)
    bench.add_argument("--field-bytes", type=int, default=workloads.FIELD_BYTES)
    bench.add_argument("--partitions", type=int, default=workloads.QUERY_PARTITIONS)
    bench.add_argument(
        "--items-per-partition", type=int, default=workloads.QUERY_ITEMS_PER_PARTITION
    )
    bench.add_argument("--query-limit", type=int, default=workloads.QUERY_LIMIT)
    bench.add_argument("--consistent-read", action="store_true")
    bench.add_argument("--seed", type=int, default=42)
    bench.add_argument("--region", default="us-east-1")
    bench.add_argument("--access-key", default="AKIDKEELDBBENCH")
    bench.add_argument("--secret-key", default="keeldb-bench-secret")
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the summary here")
    bench.add_argument("--quiet", action="store_true", help="no progress display")
    # The `keeldb` entry point sets up logging from `log_level` for every subcommand.
    bench.set_defaults(run=main, log_level="warning")


def _settings(args: argparse.Namespace) -> runner.Settings:
    phases = tuple(p.strip() for p in args.workloads.split(",") if p.strip())
    unknown = [p for p in phases if p not in workloads.PHASES]
    if unknown or not phases:
        raise ValueError(f"unknown workloads {unknown}; choose from {', '.join(workloads.PHASES)}")
    for name in ("records", "processes", "connections", "partitions", "items_per_partition"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.max_time <= 0:
        raise ValueError("--duration and --max-time must be positive, --warmup not negative")
    if not 1 <= args.query_limit or args.field_count < 1 or args.field_bytes < 1:
        raise ValueError("--query-limit, --field-count and --field-bytes must be at least 1")
    shape = Shape(
        records=args.records,
        field_count=args.field_count,
        field_bytes=args.field_bytes,
        partitions=args.partitions,
        items_per_partition=args.items_per_partition,
        query_limit=args.query_limit,
        distribution=args.distribution,
        consistent_read=args.consistent_read,
    )
    return runner.Settings(
        workloads=phases,
        shape=shape,
        processes=args.processes,
        connections=args.connections,
        duration_seconds=args.duration,
        warmup_seconds=args.warmup,
        time_max_seconds=args.max_time,
        seed=args.seed,
    )


class RichDisplay:
    """One progress line per phase: a bar (items for loads, seconds for runs) and ops/s."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description:>9}"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: Any = None
        self._loading = False

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def phase_started(self, phase: str, total: int | None, seconds: float | None) -> None:
        self._loading = total is not None
        self._task = self._progress.add_task(
            phase, total=total if total is not None else seconds, rate=""
        )

    def phase_progress(self, ops: int, elapsed_seconds: float) -> None:
        if self._task is None:
            return
        rate = f"{ops / elapsed_seconds:,.0f} ops/s" if elapsed_seconds > 0.5 else ""
        self._progress.update(
            self._task,
            completed=ops if self._loading else elapsed_seconds,
            rate=rate,
        )

    def phase_finished(self, summary: dict[str, Any]) -> None:
        if self._task is None:
            return
        total = self._progress.tasks[-1].total
        self._progress.update(
            self._task, completed=total, rate=f"{summary['throughput_ops_s']:,.0f} ops/s"
        )
        self._task = None


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"keeldb bench: {result['endpoint']} ({result['server']['mode']})")
    for column in (
        "phase",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "server µs/op",
        "server RSS MB",
        "disk B/logical B",
        "client CPU %",
    ):
        table.add_column(column, justify="right")
    for phase in result["phases"]:
        latency = phase["lat_ms"]
        server = phase.get("server") or {}

        def cell(value: Any, form: str = "{:,.1f}") -> str:
            return "-" if value is None else form.format(value)

        table.add_row(
            phase["phase"],
            cell(phase["throughput_ops_s"], "{:,.0f}"),
            cell(latency.get("p50"), "{:.2f}"),
            cell(latency.get("p95"), "{:.2f}"),
            cell(latency.get("p99"), "{:.2f}"),
            cell(latency.get("max"), "{:.1f}"),
            str(phase["errors"]),
            cell(server.get("cpu_us_per_op"), "{:,.0f}"),
            cell(server.get("rss_mb_end")),
            cell(server.get("write_bytes_per_logical_byte"), "{:.2f}"),
            cell(phase["client"]["cpu_pct_of_one_core"], "{:.0f}"),
        )
    return table


def main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        settings = _settings(args)
    except ValueError as error:
        print(f"keeldb bench: {error}", file=sys.stderr)
        return 2
    if args.server_pid is not None and args.start is not None:
        print("keeldb bench: --server-pid goes with --endpoint", file=sys.stderr)
        return 2
    try:
        with runner.server_for(
            args.endpoint, args.start, args.server_pid, args.data_dir, args.serve_arg
        ) as server:
            target = client.Target(
                server.url,
                region=args.region,
                access_key=args.access_key,
                secret_key=args.secret_key,
            )
            target.host_port  # noqa: B018 - refuses anything but http:// before starting
            if args.quiet:
                result = runner.run(settings, target, server, runner.QuietDisplay())
            else:
                with RichDisplay(console) as display:
                    result = runner.run(settings, target, server, display)
    except (RuntimeError, OSError, ValueError) as error:
        print(f"keeldb bench: {error}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    # Piped output keeps every column whole rather than fitting an assumed 80 columns.
    Console(width=None if sys.stdout.isatty() else REPORT_COLUMNS).print(_table(result))
    return 1 if any(p["errors"] or p.get("unfinished") for p in result["phases"]) else 0
