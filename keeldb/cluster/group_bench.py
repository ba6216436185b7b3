"""`python -m keeldb.cluster.group_bench`: throughput and append latency of a replica group of
real `group_node` processes on loopback.

Owns the timing loop only: it starts a `LocalGroup`, finds the leader, and has a client
process (this one) keep `--concurrency` puts outstanding against the leader for
`--seconds`, then once more with a single put outstanding (latency without queueing).
Every put is a full round: client -> leader over the transport, proposal, Accept to every
member, Q2 fsynced votes, apply on the leader, reply. It never runs in the test suite.

Figures depend on the machine and its load; compare profiles measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from keeldb.cluster.group_harness import LocalGroup, find_leader, kv_call
from keeldb.net.transport import Transport

CALL_SECONDS = 10.0


async def _drive(
    client: Transport, nodes: list[str], seconds: float, concurrency: int, value: bytes
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    leader = [await find_leader(client, nodes, 30)]

    async def worker(number: int) -> None:
        sequence = 0
        while loop.time() < end:
            sequence += 1
            request = {"op": "put", "key": f"k{number}-{sequence % 100}", "value": value}
            started = time.perf_counter()
            reply = await kv_call(client, leader[0], request, CALL_SECONDS)
            if reply.get("ok"):
                latencies.append(time.perf_counter() - started)
                continue
            errors[reply.get("error", "?")] += 1
            hint = reply.get("leader")
            if hint in nodes:
                leader[0] = hint
            else:
                await asyncio.sleep(0.05)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    return {
        "concurrency": concurrency,
        "entries": count,
        "errors": dict(errors),
        "entries_per_second": count / elapsed,
        "p50_ms": 1000 * latencies[count // 2] if count else None,
        "p99_ms": 1000 * latencies[min(count - 1, int(count * 0.99))] if count else None,
        "mean_ms": 1000 * statistics.fmean(latencies) if count else None,
    }


async def measure(
    profile: str, base: Path, seconds: float, concurrency: int, value_bytes: int
) -> list[dict[str, Any]]:
    group = LocalGroup(base / profile, profile)
    results = []
    with group.running():
        client = await group.client()
        try:
            value = b"v" * value_bytes
            await _drive(client, group.nodes, 0.5, concurrency, value)  # warm up
            for outstanding in (concurrency, 1):
                result = await _drive(client, group.nodes, seconds, outstanding, value)
                result["profile"] = profile
                results.append(result)
        finally:
            await client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keeldb.cluster.group_bench")
    parser.add_argument("--profiles", default="single,standard,aurora")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="keeldb-group-bench-") as directory:
        for profile in args.profiles.split(","):
            results = uvloop.run(
                measure(profile, Path(directory), args.seconds, args.concurrency, args.value_bytes)
            )
            for r in results:
                print(
                    f"{r['profile']:>8}  outstanding {r['concurrency']:>3}  "
                    f"{r['entries_per_second']:8.0f} entries/s  p50 {r['p50_ms']:7.2f} ms  "
                    f"p99 {r['p99_ms']:7.2f} ms  ({r['entries']} entries, errors {r['errors'] or 'none'})",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
