"""The numbers of a benchmark phase: latency percentiles and the per-phase summary.

Owns: how latencies (recorded by the workers as microseconds) become p50/p95/p99/max, and the
shape of one phase's JSON summary (throughput, latencies overall and per operation, errors,
client and server resources, bytes written per logical byte).

It must never measure anything itself: it only turns samples into figures.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

PERCENTILES = (50, 95, 99, 99.9)


def percentile(ordered: array[float] | list[float], share: float) -> float:
    """The nearest-rank percentile of sorted samples (0 when there are none)."""
    if not ordered:
        return 0.0
    assert 0 < share <= 100
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return float(ordered[rank - 1])


def latency_summary(samples_us: Iterable[float]) -> dict[str, float]:
    """Latency figures in milliseconds, rounded to microseconds."""
    ordered = sorted(samples_us)
    if not ordered:
        return {"n": 0}
    summary: dict[str, float] = {
        "n": len(ordered),
        "mean": round(sum(ordered) / len(ordered) / 1000, 3),
        "min": round(ordered[0] / 1000, 3),
    }
    for share in PERCENTILES:
        name = f"p{share:g}".replace(".", "")
        summary[name] = round(percentile(ordered, share) / 1000, 3)
    summary["max"] = round(ordered[-1] / 1000, 3)
    return summary


def merge_latencies(parts: Iterable[Mapping[str, bytes]]) -> dict[str, array[float]]:
    """Workers send their latencies per operation as raw `array('d')` bytes; join them."""
    merged: dict[str, array[float]] = {}
    for part in parts:
        for operation, raw in part.items():
            samples = merged.setdefault(operation, array("d"))
            samples.frombytes(raw)
    return merged


def phase_summary(
    phase: str,
    elapsed_seconds: float,
    latencies: Mapping[str, array[float]],
    errors: Mapping[str, int],
    logical_bytes: int,
    items_written: int,
    client_cpu_seconds: float,
    server: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One phase's figures; `server` holds the server's resource deltas when it is known."""
    assert elapsed_seconds > 0
    every: array[float] = array("d")
    for samples in latencies.values():
        every.extend(samples)
    ops = len(every)
    summary: dict[str, Any] = {
        "phase": phase,
        "elapsed_s": round(elapsed_seconds, 3),
        "ops": ops,
        "throughput_ops_s": round(ops / elapsed_seconds, 1),
        "lat_ms": latency_summary(every),
        "per_op": {
            operation: {
                "ops": len(samples),
                "ops_s": round(len(samples) / elapsed_seconds, 1),
                "lat_ms": latency_summary(samples),
            }
            for operation, samples in sorted(latencies.items())
        },
        "errors": sum(errors.values()),
        "error_types": dict(sorted(errors.items())),
        "items_written": items_written,
        "logical_write_bytes": logical_bytes,
        "client": {
            "cpu_s": round(client_cpu_seconds, 2),
            "cpu_pct_of_one_core": round(100 * client_cpu_seconds / elapsed_seconds, 1),
            "us_per_op": round(1e6 * client_cpu_seconds / ops, 1) if ops else None,
        },
    }
    if server is not None:
        cpu = server["cpu_s"]
        written = server["write_bytes"]
        summary["server"] = {
            "pids": server["pids"],
            "cpu_pct_of_one_core": round(100 * cpu / elapsed_seconds, 1),
            "cpu_us_per_op": round(1e6 * cpu / ops, 1) if ops else None,
            "rss_mb_start": round(server["rss_start"] / 2**20, 1),
            "rss_mb_end": round(server["rss_end"] / 2**20, 1),
            "rss_mb_max": round(server["rss_max"] / 2**20, 1),
            "write_bytes": written,
            "write_bytes_per_item_written": round(written / items_written, 1)
            if items_written
            else None,
            "write_bytes_per_logical_byte": round(written / logical_bytes, 2)
            if logical_bytes
            else None,
        }
    return summary
