"""The benchmark's figures: percentiles and the per-phase summary."""

from __future__ import annotations

from array import array

from keeldb.bench import report


def test_percentile_is_the_nearest_rank() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert report.percentile(ordered, 50) == 50.0
    assert report.percentile(ordered, 99) == 99.0
    assert report.percentile(ordered, 100) == 100.0
    assert report.percentile([], 99) == 0.0


def test_latency_summary_is_in_milliseconds() -> None:
    summary = report.latency_summary([1000.0, 2000.0, 3000.0, 10_000.0])
    assert summary["n"] == 4
    assert summary["p50"] == 2.0
    assert summary["max"] == 10.0
    assert summary["mean"] == 4.0


def test_merge_joins_every_workers_samples_per_operation() -> None:
    one = {"GetItem": array("d", [1.0, 2.0]).tobytes()}
    two = {"GetItem": array("d", [3.0]).tobytes(), "UpdateItem": array("d", [4.0]).tobytes()}
    merged = report.merge_latencies([one, two])
    assert sorted(merged["GetItem"]) == [1.0, 2.0, 3.0]
    assert list(merged["UpdateItem"]) == [4.0]


def test_phase_summary_divides_server_costs_by_operations_and_logical_bytes() -> None:
    latencies = {"UpdateItem": array("d", [500.0] * 1000)}
    server = {
        "pids": [1],
        "cpu_s": 0.2,
        "rss_start": 2**20,
        "rss_end": 2 * 2**20,
        "rss_max": 3 * 2**20,
        "write_bytes": 3_000_000,
    }
    summary = report.phase_summary(
        "a", 2.0, latencies, {"ThrottlingException": 2}, 1_000_000, 1000, 0.5, server
    )
    assert summary["throughput_ops_s"] == 500.0
    assert summary["errors"] == 2
    assert summary["server"]["cpu_us_per_op"] == 200.0
    assert summary["server"]["write_bytes_per_logical_byte"] == 3.0
    assert summary["server"]["write_bytes_per_item_written"] == 3000.0
    assert summary["server"]["rss_mb_max"] == 3.0
    assert summary["client"]["cpu_pct_of_one_core"] == 25.0


def test_phase_summary_without_a_server_reports_no_server_figures() -> None:
    summary = report.phase_summary("c", 1.0, {}, {}, 0, 0, 0.0, None)
    assert summary["ops"] == 0
    assert "server" not in summary
