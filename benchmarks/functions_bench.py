"""Benchmark of the function service: cold start and warm invoke through the Lambda API, unique
memory per idle instance, isolation overhead on a CPU-bound handler, stream lag, and write
throughput with a stream enabled vs disabled.

    python benchmarks/functions_bench.py [--cold 30] [--warm 300] [--lag 150] [--seconds 2] [--json]

Through the API: a `keeldb serve` process (data directory in a temporary directory, real
fsync) driven over keep-alive HTTP connections (unsigned requests; the timing excludes any
SDK). Cold start is Invoke's request to response for a function that has no instance yet;
warm invoke, for one that has an idle instance. Stream lag is from a PutItem's response (the
change is committed) to the start of the handler that receives its record. Write throughput
is PutItem/s from concurrent clients against two tables of the same server, one with a
stream and one without, measured in alternating rounds.

In process: the sandbox pool (`keeldb.functions.sandbox`) for unique memory (USS, psutil) of
idle instances, and a CPU-bound handler's duration sandboxed vs in an unisolated process
(`local_pool`) vs called in this process, interleaved.

The machine this runs on is shared: figures are noisy; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import psutil

TARGET_COLD_P50_MS = 5.0
TARGET_WARM_P50_MS = 1.0
TARGET_USS_MB = 4.0
TARGET_OVERHEAD_RATIO = 1.05
TARGET_STREAM_COST = 0.10  # enabling a stream may cost at most 10% of write throughput
START_SECONDS_MAX = 60.0
LAG_SECONDS_MAX = 120.0
CPU_ITERATIONS = 2_000_000
WRITERS = 4
ROLE = "arn:aws:iam::123456789012:role/bench"

HANDLERS = textwrap.dedent(
    """
    import os
    import time

    def noop(event, context):
        return {"ok": True}

    def cpu(event, context):
        total = 0
        for i in range(event["n"]):
            total += i * i
        return total

    _client = None

    def lag(event, context):
        started = time.time()
        global _client
        if _client is None:
            import boto3
            _client = boto3.client("dynamodb")
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        _client.put_item(TableName=os.environ["LAG_TABLE"],
                         Item={"pk": {"S": keys[0]}, "keys": {"SS": keys},
                               "started": {"N": repr(started)}})
        return {}
    """
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def code_zip() -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bench.py", HANDLERS)
    return base64.b64encode(buffer.getvalue()).decode()


class Connection:
    """One keep-alive HTTP connection to the server, for raw DynamoDB and Lambda requests."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        self.http.request(method, path, body=body, headers=headers or {})
        response = self.http.getresponse()
        return response.status, response.read()

    def dynamodb(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = self.request(
            "POST",
            "/",
            json.dumps(body).encode(),
            {
                "X-Amz-Target": f"DynamoDB_20120810.{operation}",
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        assert status == 200, (status, data)
        return json.loads(data)

    def lam(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        status, data = self.request(method, path, payload, {"Content-Type": "application/json"})
        assert status < 300, (status, data)
        return json.loads(data) if data else {}

    def invoke(self, name: str, payload: bytes) -> tuple[int, bytes]:
        return self.request("POST", f"/2015-03-31/functions/{name}/invocations", payload)


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keeldb",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS_MAX
        self.port = 0
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode(errors="replace")
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
            if not line and self.process.poll() is not None:
                break
        if not self.port:
            self.stop()
            raise RuntimeError("keeldb serve did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


def create_function(conn: Connection, name: str, handler: str, **extra: Any) -> None:
    body = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": f"bench.{handler}",
        "Timeout": 60,
        "Code": {"ZipFile": code_zip()},
    }
    body.update(extra)
    conn.lam("POST", "/2015-03-31/functions", body)


def create_table(conn: Connection, name: str, stream: bool) -> str | None:
    body: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        body["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    answer = conn.dynamodb("CreateTable", body)
    return answer["TableDescription"].get("LatestStreamArn")


def timed_invoke(conn: Connection, name: str, payload: bytes = b"{}") -> float:
    started = time.perf_counter()
    status, data = conn.invoke(name, payload)
    elapsed = (time.perf_counter() - started) * 1000
    assert status == 200, (status, data)
    return elapsed


def cold_and_warm(conn: Connection, cold: int, warm: int) -> dict[str, float]:
    cold_ms = []
    for i in range(cold):
        name = f"cold-{i}"
        create_function(conn, name, "noop")
        cold_ms.append(timed_invoke(conn, name))
        conn.lam("DELETE", f"/2015-03-31/functions/{name}")  # stop its instance piling up
    create_function(conn, "warm", "noop")
    for _ in range(10):
        timed_invoke(conn, "warm")
    warm_ms = [timed_invoke(conn, "warm") for _ in range(warm)]
    return {
        "cold_p50_ms": statistics.median(cold_ms),
        "cold_p99_ms": percentile(cold_ms, 0.99),
        "warm_p50_ms": statistics.median(warm_ms),
        "warm_p99_ms": percentile(warm_ms, 0.99),
    }


def stream_lag(conn: Connection, writes: int) -> dict[str, float]:
    stream_arn = create_table(conn, "lag-source", stream=True)
    create_table(conn, "lag-results", stream=False)
    create_function(conn, "lag", "lag", Environment={"Variables": {"LAG_TABLE": "lag-results"}})
    conn.lam(
        "POST",
        "/2015-03-31/event-source-mappings/",
        {"EventSourceArn": stream_arn, "FunctionName": "lag", "StartingPosition": "LATEST"},
    )
    time.sleep(1.5)  # the mapping's poller starts; LATEST counts from its creation second
    committed: dict[str, float] = {}
    for i in range(writes):
        key = f"w{i}"
        conn.dynamodb("PutItem", {"TableName": "lag-source", "Item": {"pk": {"S": key}}})
        committed[key] = time.time()
        time.sleep(0.01)
    started: dict[str, float] = {}
    deadline = time.monotonic() + LAG_SECONDS_MAX
    while len(started) < writes and time.monotonic() < deadline:
        page = conn.dynamodb("Scan", {"TableName": "lag-results", "ConsistentRead": True})
        for item in page["Items"]:
            for key in item["keys"]["SS"]:
                started[key] = float(item["started"]["N"])
        time.sleep(0.2)
    lags = [(started[k] - committed[k]) * 1000 for k in committed if k in started]
    return {
        "stream_lag_p50_ms": statistics.median(lags),
        "stream_lag_p99_ms": percentile(lags, 0.99),
        "stream_lag_records": float(len(lags)),
    }


def write_throughput(port: int, seconds: float, rounds: int) -> dict[str, float]:
    setup = Connection(port)
    create_table(setup, "tp-stream", stream=True)
    create_table(setup, "tp-plain", stream=False)
    payload = "x" * 200

    def burst(table: str) -> float:
        stop = time.monotonic() + seconds
        counts = [0] * WRITERS

        def writer(index: int) -> None:
            conn = Connection(port)
            n = 0
            while time.monotonic() < stop:
                conn.dynamodb(
                    "PutItem",
                    {
                        "TableName": table,
                        "Item": {"pk": {"S": f"{index}-{n % 500}"}, "d": {"S": payload}},
                    },
                )
                n += 1
            counts[index] = n

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.monotonic() - started)

    burst("tp-plain")  # warm up
    with_stream, without = [], []
    for _ in range(rounds):
        without.append(burst("tp-plain"))
        with_stream.append(burst("tp-stream"))
    plain, streamed = statistics.median(without), statistics.median(with_stream)
    return {
        "writes_per_second_stream_disabled": plain,
        "writes_per_second_stream_enabled": streamed,
        "stream_throughput_ratio": streamed / plain,
    }


async def pool_figures(cpu_rounds: int, idle_instances: int) -> dict[str, float]:
    from keeldb.functions import local_pool

    try:
        from keeldb.functions.sandbox import FunctionSpec, SandboxPool
    except ImportError:
        return {}
    work = Path(tempfile.mkdtemp(prefix="keeldb-fbench-"))
    code = work / "code"
    code.mkdir()
    (code / "bench.py").write_text(HANDLERS)
    os.chmod(code, 0o755)
    os.chmod(code / "bench.py", 0o644)
    environment = {
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }

    def spec(kind: Any, name: str, handler: str) -> Any:
        return kind(name, code, "0" * 64, f"bench.{handler}", "python3.12", 256, 60.0, environment)

    figures: dict[str, float] = {}
    pool = SandboxPool(work / "sandbox", endpoint_port=1)
    local = local_pool.LocalPool(work / "local", endpoint_port=1)
    await pool.start()
    await local.start()
    try:
        figures["isolation_layers_active"] = float(sum(pool.isolation_layers().values()))
        for i in range(idle_instances):
            await pool.invoke(spec(FunctionSpec, f"idle-{i}", "noop"), b"{}")
        await asyncio.sleep(2.0)  # idle instances are frozen after a second
        pids = [
            instance.pid
            for instance in getattr(pool, "_instances", {}).values()
            if getattr(instance, "spec", None) is not None
            and instance.spec.name.startswith("idle-")
        ]
        uss = []
        for pid in pids:
            try:
                uss.append(psutil.Process(pid).memory_full_info().uss / (1024 * 1024))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if uss:
            figures["idle_instance_uss_mb"] = statistics.median(uss)
        payload = json.dumps({"n": CPU_ITERATIONS}).encode()
        sandboxed_spec = spec(FunctionSpec, "cpu", "cpu")
        local_spec = spec(local_pool.FunctionSpec, "cpu", "cpu")
        await pool.invoke(sandboxed_spec, payload)
        await local.invoke(local_spec, payload)
        namespace: dict[str, Any] = {}
        exec(compile(HANDLERS, "bench.py", "exec"), namespace)  # noqa: S102 - our own handler
        sandboxed, plain, here = [], [], []
        for _ in range(cpu_rounds):
            sandboxed.append((await pool.invoke(sandboxed_spec, payload)).duration_ms)
            plain.append((await local.invoke(local_spec, payload)).duration_ms)
            started = time.perf_counter()
            namespace["cpu"]({"n": CPU_ITERATIONS}, None)
            here.append((time.perf_counter() - started) * 1000)
        figures["cpu_sandboxed_ms"] = statistics.median(sandboxed)
        figures["cpu_unisolated_process_ms"] = statistics.median(plain)
        figures["cpu_in_process_ms"] = statistics.median(here)
        figures["overhead_ratio_vs_process"] = (
            figures["cpu_sandboxed_ms"] / figures["cpu_unisolated_process_ms"]
        )
        figures["overhead_ratio_vs_in_process"] = (
            figures["cpu_sandboxed_ms"] / figures["cpu_in_process_ms"]
        )
    finally:
        await pool.close()
        await local.close()
    return figures


def run(args: argparse.Namespace) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="keeldb-fbench-") as data:
        server = Server(Path(data) / "data")
        try:
            conn = Connection(server.port)
            settings = conn.lam("GET", "/2016-08-19/account-settings/")
            figures["api_isolation_layers_active"] = float(
                sum(settings.get("IsolationLayers", {}).values())
            )
            # Throughput first, while no mapping polls any stream.
            figures.update(write_throughput(server.port, args.seconds, args.rounds))
            figures.update(cold_and_warm(conn, args.cold, args.warm))
            figures.update(stream_lag(conn, args.lag))
        finally:
            server.stop()
    figures.update(asyncio.run(pool_figures(args.cpu_rounds, args.idle)))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=30)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--lag", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per table")
    parser.add_argument("--cpu-rounds", type=int, default=6)
    parser.add_argument("--idle", type=int, default=8, help="idle instances to measure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        print(json.dumps(figures, indent=2))
        return

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    f = figures
    print(
        f"cold start (Invoke, new instance): p50 {f['cold_p50_ms']:.2f} ms, "
        f"p99 {f['cold_p99_ms']:.2f} ms (target p50 <= {TARGET_COLD_P50_MS} ms: "
        f"{verdict(f['cold_p50_ms'] <= TARGET_COLD_P50_MS)})"
    )
    print(
        f"warm invoke: p50 {f['warm_p50_ms']:.3f} ms, p99 {f['warm_p99_ms']:.3f} ms "
        f"(target p50 <= {TARGET_WARM_P50_MS} ms: "
        f"{verdict(f['warm_p50_ms'] <= TARGET_WARM_P50_MS)})"
    )
    if "idle_instance_uss_mb" in f:
        print(
            f"unique memory per idle instance: {f['idle_instance_uss_mb']:.2f} MB "
            f"(target <= {TARGET_USS_MB} MB: "
            f"{verdict(f['idle_instance_uss_mb'] <= TARGET_USS_MB)})"
        )
    if "overhead_ratio_vs_process" in f:
        print(
            f"CPU-bound handler: sandboxed {f['cpu_sandboxed_ms']:.1f} ms, unisolated process "
            f"{f['cpu_unisolated_process_ms']:.1f} ms, in process {f['cpu_in_process_ms']:.1f}"
            f" ms; overhead ratio {f['overhead_ratio_vs_process']:.3f} vs process, "
            f"{f['overhead_ratio_vs_in_process']:.3f} vs in process (target < "
            f"{TARGET_OVERHEAD_RATIO}: "
            f"{verdict(f['overhead_ratio_vs_process'] < TARGET_OVERHEAD_RATIO)})"
        )
    print(
        f"stream lag (commit to handler start): p50 {f['stream_lag_p50_ms']:.1f} ms, "
        f"p99 {f['stream_lag_p99_ms']:.1f} ms over {f['stream_lag_records']:.0f} records"
    )
    cost = 1 - f["stream_throughput_ratio"]
    print(
        f"writes/s: stream disabled {f['writes_per_second_stream_disabled']:.0f}, enabled "
        f"{f['writes_per_second_stream_enabled']:.0f} (cost {cost:.1%}; target <= "
        f"{TARGET_STREAM_COST:.0%}: {verdict(cost <= TARGET_STREAM_COST)})"
    )
    print(f"isolation layers active: {f['api_isolation_layers_active']:.0f} (from the API)")


if __name__ == "__main__":
    main()
