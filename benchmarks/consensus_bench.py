"""Benchmark of the consensus core alone: committed entries per second of protocol CPU.

Drives 3 (`standard`) and 6 (`aurora`) replicas on a perfect in-memory network with batches
of 64 (keeldb.consensus.bench.run_workload) and reports entries/s of process CPU time. The
timing lives here because the consensus package may not read clocks.

    python benchmarks/consensus_bench.py [--entries 200000] [--profile standard] [--profile aurora]
"""

from __future__ import annotations

import argparse
import time

from keeldb.consensus.bench import run_workload

TARGET_ENTRIES_PER_SECOND = 50_000  # for `standard` on one core


def measure(profile: str, entries: int, batch: int) -> tuple[float, int, int]:
    run_workload(profile, min(entries, 5_000), batch)  # warm up
    start = time.process_time()
    result = run_workload(profile, entries, batch)
    elapsed = time.process_time() - start
    return result.entries_committed / elapsed, result.messages_delivered, result.entries_committed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--profile", action="append", choices=["standard", "aurora", "single"])
    args = parser.parse_args()
    for profile in args.profile or ["standard", "aurora"]:
        rate, messages, committed = measure(profile, args.entries, args.batch)
        note = ""
        if profile == "standard":
            met = "met" if rate >= TARGET_ENTRIES_PER_SECOND else "NOT met"
            note = f"  (target {TARGET_ENTRIES_PER_SECOND:,}/s {met})"
        print(
            f"{profile:9s} {committed:,} entries, {messages:,} messages, "
            f"{rate:,.0f} entries/s of protocol CPU{note}"
        )


if __name__ == "__main__":
    main()
