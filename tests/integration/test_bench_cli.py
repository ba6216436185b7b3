"""`keeldb bench` against real servers: one it starts itself, and one it is pointed at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Each phase starts its worker processes (about a second with spawn) and runs a second.
BENCH_SECONDS_MAX = 120


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeldb", "bench", "--quiet", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=BENCH_SECONDS_MAX,
    )


def _small(json_path: Path, workloads: str) -> list[str]:
    return [
        "--workloads",
        workloads,
        "--records",
        "300",
        "--partitions",
        "4",
        "--items-per-partition",
        "30",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--processes",
        "2",
        "--connections",
        "2",
        "--json",
        str(json_path),
    ]


def _phases(json_path: Path) -> dict[str, dict[str, Any]]:
    summary = json.loads(json_path.read_text())
    return {phase["phase"]: phase for phase in summary["phases"]}


def test_bench_started_server_loads_every_record_and_reports_server_costs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "summary.json"
    done = _bench("--start", "single", *_small(out, "load,batchload,a,query"))
    assert done.returncode == 0, done.stderr
    phases = _phases(out)
    assert list(phases) == ["load", "batchload", "a", "query"]
    assert phases["load"]["items_written"] == 300
    assert phases["batchload"]["items_written"] == 4 * 30
    for phase in phases.values():
        assert phase["errors"] == 0
        assert phase["ops"] > 0
        assert phase["lat_ms"]["p99"] >= phase["lat_ms"]["p50"] > 0
        # CPU time is read in clock ticks (10 ms): a short phase may see none of its own.
        assert phase["server"]["cpu_us_per_op"] >= 0
        assert phase["server"]["rss_mb_end"] > 0
    assert sum(phase["server"]["cpu_us_per_op"] for phase in phases.values()) > 0
    # Every read finds its record: the load wrote what the run phases read.
    assert phases["a"]["get_misses"] == 0
    assert set(phases["a"]["per_op"]) == {"GetItem", "UpdateItem"}
    # Writes are fsynced to the log, so a loaded record costs bytes on disk.
    assert phases["load"]["server"]["write_bytes_per_logical_byte"] > 0.5
    assert "ops/s" in done.stdout or "phase" in done.stdout


def test_bench_against_an_endpoint_reads_what_the_load_wrote(
    tmp_path: Path, server_factory: Any, client_factory: Any
) -> None:
    server = server_factory("--in-memory")
    out = tmp_path / "summary.json"
    done = _bench("--endpoint", server.url, "--server-pid", str(server.pid), *_small(out, "load,c"))
    assert done.returncode == 0, done.stderr
    phases = _phases(out)
    assert phases["c"]["get_misses"] == 0
    # The server and any processes it started (function sandboxes) are counted.
    assert phases["c"]["server"]["pids"][0] == server.pid
    ddb = client_factory(server.url)
    item = ddb.get_item(TableName="usertable", Key={"key": {"S": "user299"}})["Item"]
    assert len(item) == 11
    assert all(len(item[f"field{i}"]["S"]) == 100 for i in range(10))


def test_bench_refuses_unknown_workloads_before_starting_anything(tmp_path: Path) -> None:
    done = _bench("--start", "memory", "--workloads", "load,z")
    assert done.returncode == 2
    assert "unknown workloads ['z']" in done.stderr


@pytest.mark.parametrize("url", ["https://127.0.0.1:1", "ftp://x"])
def test_bench_refuses_endpoints_it_cannot_speak_to(url: str) -> None:
    done = _bench("--endpoint", url, "--workloads", "c")
    assert done.returncode == 1
    assert "only http:// endpoints" in done.stderr


@pytest.mark.slow
def test_bench_started_cluster_reads_every_nodes_process(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    done = _bench("--start", "cluster", *_small(out, "load,c"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["server"]["mode"] == "cluster"
    node_pids = summary["server"]["pids"]
    assert len(node_pids) >= 3
    phases = _phases(out)
    assert phases["load"]["items_written"] == 300
    assert phases["c"]["get_misses"] == 0
    assert set(node_pids) <= set(phases["c"]["server"]["pids"])
    # `keeldb cluster down` stopped every node.
    for pid in node_pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True
