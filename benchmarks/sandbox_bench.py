"""Benchmark of function sandboxes: cold start, warm invoke, memory per idle instance, and the
isolation overhead on a CPU-bound handler.

    python benchmarks/sandbox_bench.py [--cold 60] [--warm 1000] [--cpu-rounds 8] [--json]

Cold start is request to response through `SandboxPool.invoke` for a function with no idle
instance (a pre-forked warm instance is assigned: code bind-mounted, privileges dropped,
Landlock and seccomp applied, handler imported, invoked); it is also measured without a warm
pool (the zygote forks on demand) to show what the warm pool saves. Warm invoke is request
to response to an idle instance of the same function, and again after the instance was
frozen. Unique memory is USS (psutil) of idle instances. Overhead compares a CPU-bound
handler's duration in a sandbox with the same function called in this process, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from keeldb.functions.sandbox import FunctionSpec, SandboxPool

TARGET_COLD_P50_MS = 5.0
TARGET_WARM_P50_MS = 1.0
TARGET_USS_MB = 4.0
TARGET_OVERHEAD_RATIO = 1.05
WARM_INSTANCES = 4
CPU_LOOP_ITERATIONS = 2_000_000
FROZEN_SECONDS = 0.05

HANDLERS = textwrap.dedent(
    """
    def noop(event, context):
        return {"ok": True}

    def with_client(event, context):
        import boto3
        global client
        client = boto3.client("dynamodb")
        return {"ok": True}

    def cpu(event, context):
        total = 0
        for i in range(event["n"]):
            total += i * i
        return total
    """
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def spec(code: Path, name: str, handler: str) -> FunctionSpec:
    environment = {
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": "us-east-1",
    }
    return FunctionSpec(
        name, code, "0" * 64, f"bench.{handler}", "python3.11", 256, 30.0, environment
    )


async def wait_warm(pool: SandboxPool, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(pool._warm) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


async def cold_starts(
    pool: SandboxPool, code: Path, rounds: int, prefix: str, warm: int, handler: str = "noop"
) -> dict[str, Any]:
    """Wall time of each cold start, and where its CPU time goes (pool, instance set-up)."""
    totals, pool_cpu, instance_cpu, steps = [], [], [], []
    for i in range(rounds):
        await wait_warm(pool, warm)
        await asyncio.sleep(0.005)  # let the refill settle, as between real requests
        function = spec(code, f"{prefix}{i}", handler)
        started = time.perf_counter()
        started_cpu = time.process_time()
        result = await pool.invoke(function, b"{}")
        totals.append((time.perf_counter() - started) * 1000)
        pool_cpu.append((time.process_time() - started_cpu) * 1000)
        assert result.cold_start and result.function_error is None, result.payload
        if result.init_steps_ms:
            steps.append(result.init_steps_ms)
            instance_cpu.append(result.init_steps_ms.get("cpu", 0.0) + (result.cpu_ms or 0.0))
        for instance in list(pool._instances.values()):
            if instance.spec is not None and instance.spec.name == function.name:
                pool._retire(instance)
    step_medians = {
        name: statistics.median(s.get(name, 0.0) for s in steps)
        for name in (steps[0] if steps else {})
        if name != "cpu"
    }
    return {
        "p50_ms": percentile(totals, 0.5),
        "p99_ms": percentile(totals, 0.99),
        "pool_cpu_p50_ms": percentile(pool_cpu, 0.5),
        "instance_cpu_p50_ms": percentile(instance_cpu, 0.5) if instance_cpu else 0.0,
        "steps_wall_p50_ms": step_medians,
    }


async def warm_invokes(pool: SandboxPool, code: Path, rounds: int, freeze: bool) -> list[float]:
    function = spec(code, "warm-freeze" if freeze else "warm", "noop")
    await pool.invoke(function, b"{}")
    times = []
    for _ in range(rounds):
        if freeze:
            for instance in pool._instances.values():
                spec_ = instance.spec
                mine = spec_ is not None and spec_.name == function.name
                if mine and not instance.busy and instance.groups is not None:
                    instance.frozen = instance.groups.freeze(True)
            await asyncio.sleep(FROZEN_SECONDS)  # frozen for real, as after an idle second
        started = time.perf_counter()
        result = await pool.invoke(function, b'{"a": 1}')
        times.append((time.perf_counter() - started) * 1000)
        assert not result.cold_start
    return times


def uss_mb(pids: list[int]) -> list[float]:
    values = []
    for pid in pids:
        try:
            values.append(psutil.Process(pid).memory_full_info().uss / (1024 * 1024))
        except psutil.Error:
            continue
    return values


async def memory(pool: SandboxPool, code: Path, count: int) -> dict[str, float]:
    await wait_warm(pool, WARM_INSTANCES)
    await asyncio.sleep(0.2)
    warm = uss_mb([i.pid for i in pool._warm])
    noop = [spec(code, f"mem-noop{i}", "noop") for i in range(count)]
    boto = [spec(code, f"mem-boto{i}", "with_client") for i in range(count)]
    await asyncio.gather(*(pool.invoke(f, b"{}") for f in noop))
    await asyncio.gather(*(pool.invoke(f, b"{}") for f in boto))
    await asyncio.sleep(0.2)

    def pids(prefix: str) -> list[int]:
        return [
            i.pid
            for i in pool._instances.values()
            if i.spec is not None and i.spec.name.startswith(prefix)
        ]

    zygote = uss_mb([pool._zygote.pid])[0] if pool._zygote else 0.0
    return {
        "warm_unassigned_uss_mb": statistics.median(warm),
        "idle_noop_uss_mb": statistics.median(uss_mb(pids("mem-noop"))),
        "idle_boto3_client_uss_mb": statistics.median(uss_mb(pids("mem-boto"))),
        "zygote_uss_mb": zygote,
    }


async def overhead(pool: SandboxPool, code: Path, rounds: int) -> dict[str, float]:
    module_spec = importlib.util.spec_from_file_location("bench_bare", code / "bench.py")
    assert module_spec is not None and module_spec.loader is not None
    bare_module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bare_module)
    function = spec(code, "cpu", "cpu")
    event = {"n": CPU_LOOP_ITERATIONS}
    payload = json.dumps(event).encode()
    await pool.invoke(function, payload)
    bare_module.cpu(event, None)
    sandboxed, bare, sandboxed_cpu, bare_cpu = [], [], [], []
    for _ in range(rounds):
        result = await pool.invoke(function, payload)
        sandboxed.append(result.duration_ms)
        sandboxed_cpu.append(result.cpu_ms or 0.0)
        started = time.perf_counter()
        started_cpu = time.process_time()
        bare_module.cpu(event, None)
        bare_cpu.append((time.process_time() - started_cpu) * 1000)
        bare.append((time.perf_counter() - started) * 1000)
    return {
        "cpu_sandboxed_ms_median": statistics.median(sandboxed),
        "cpu_bare_ms_median": statistics.median(bare),
        "overhead_ratio": statistics.median(sandboxed) / statistics.median(bare),
        "overhead_ratio_cpu_time": statistics.median(sandboxed_cpu) / statistics.median(bare_cpu),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"load_average_1m": psutil.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="keeldb-sandbox-bench-") as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        (code / "bench.py").write_text(HANDLERS)
        pool = SandboxPool(
            Path(tmp) / "work",
            endpoint_port=1,
            warm_instances=WARM_INSTANCES,
            idle_freeze_seconds=3600,
            idle_reap_seconds=3600,
            instances_max=args.cold * 2 + 64,
            eager=True,
        )
        await pool.start()
        try:
            figures["layers"] = sorted(k for k, v in pool.isolation_layers().items() if v)
            cold = await cold_starts(pool, code, args.cold, "cold", WARM_INSTANCES)
            figures["cold_p50_ms"] = cold["p50_ms"]
            figures["cold_p99_ms"] = cold["p99_ms"]
            figures["cold_pool_cpu_p50_ms"] = cold["pool_cpu_p50_ms"]
            figures["cold_instance_cpu_p50_ms"] = cold["instance_cpu_p50_ms"]
            figures["cold_steps_wall_p50_ms"] = cold["steps_wall_p50_ms"]
            rounds = max(5, args.cold // 4)
            boto = await cold_starts(pool, code, rounds, "boto", WARM_INSTANCES, "with_client")
            figures["cold_boto3_client_p50_ms"] = boto["p50_ms"]
            warm = await warm_invokes(pool, code, args.warm, freeze=False)
            figures["warm_p50_ms"] = percentile(warm, 0.5)
            figures["warm_p99_ms"] = percentile(warm, 0.99)
            thawed = await warm_invokes(pool, code, max(20, args.warm // 20), freeze=True)
            figures["thawed_p50_ms"] = percentile(thawed, 0.5)
            figures.update(await memory(pool, code, 8))
            figures.update(await overhead(pool, code, args.cpu_rounds))
        finally:
            await pool.close()
        # The same cold start without a warm pool: the zygote forks and prepares on demand.
        pool = SandboxPool(
            Path(tmp) / "work0",
            endpoint_port=1,
            warm_instances=0,
            instances_max=args.cold * 2 + 8,
            eager=True,
        )
        await pool.start()
        try:
            cold = await cold_starts(pool, code, max(10, args.cold // 3), "nowarm", 0)
            figures["cold_without_warm_pool_p50_ms"] = cold["p50_ms"]
        finally:
            await pool.close()
    figures["load_average_1m_after"] = psutil.getloadavg()[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=60)
    parser.add_argument("--warm", type=int, default=1000)
    parser.add_argument("--cpu-rounds", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures, indent=2))
        return

    def verdict(value: float, target: float) -> str:
        return "met" if value <= target else "NOT met"

    print(f"isolation layers: {', '.join(figures['layers'])}")
    print(
        f"load average (1 min) before/after: {figures['load_average_1m']:.2f} / "
        f"{figures['load_average_1m_after']:.2f}"
    )
    print(
        f"cold start  p50 {figures['cold_p50_ms']:.2f} ms  p99 {figures['cold_p99_ms']:.2f} ms"
        f"  (target p50 <= {TARGET_COLD_P50_MS} ms: "
        f"{verdict(figures['cold_p50_ms'], TARGET_COLD_P50_MS)}); without a warm pool p50 "
        f"{figures['cold_without_warm_pool_p50_ms']:.2f} ms; a handler creating a boto3 "
        f"DynamoDB client p50 {figures['cold_boto3_client_p50_ms']:.2f} ms"
    )
    print(
        f"  cold start CPU time p50: pool {figures['cold_pool_cpu_p50_ms']:.2f} ms + instance "
        f"{figures['cold_instance_cpu_p50_ms']:.2f} ms; instance steps (wall p50, ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["cold_steps_wall_p50_ms"].items())
    )
    print(
        f"warm invoke p50 {figures['warm_p50_ms']:.3f} ms  p99 {figures['warm_p99_ms']:.3f} ms"
        f"  (target p50 <= {TARGET_WARM_P50_MS} ms: "
        f"{verdict(figures['warm_p50_ms'], TARGET_WARM_P50_MS)}); after a freeze p50 "
        f"{figures['thawed_p50_ms']:.3f} ms"
    )
    print(
        f"unique memory (USS) per idle instance: {figures['idle_noop_uss_mb']:.2f} MB "
        f"(target <= {TARGET_USS_MB} MB: {verdict(figures['idle_noop_uss_mb'], TARGET_USS_MB)});"
        f" warm unassigned {figures['warm_unassigned_uss_mb']:.2f} MB; with a boto3 client "
        f"{figures['idle_boto3_client_uss_mb']:.2f} MB; zygote {figures['zygote_uss_mb']:.1f} MB"
    )
    print(
        f"CPU-bound handler: sandboxed {figures['cpu_sandboxed_ms_median']:.1f} ms, bare "
        f"{figures['cpu_bare_ms_median']:.1f} ms, ratio {figures['overhead_ratio']:.3f} "
        f"(target < {TARGET_OVERHEAD_RATIO}: "
        f"{verdict(figures['overhead_ratio'], TARGET_OVERHEAD_RATIO)}); ratio of CPU time "
        f"{figures['overhead_ratio_cpu_time']:.3f}"
    )


if __name__ == "__main__":
    main()
