"""The unisolated pool: warm reuse, and handler errors, timeouts and crashes as results."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from keeldb.functions.local_pool import FunctionSpec, LocalPool

HANDLERS = """
import os
import time

def echo(event, context):
    print("saw", event)
    return {"event": event, "request": context.aws_request_id, "pid": os.getpid()}

def slow(event, context):
    time.sleep(30)

def die(event, context):
    os._exit(3)

def unserializable(event, context):
    return {1, 2}

def broken(event, context):
    raise KeyError("missing")
"""


def spec(code: Path, handler: str, timeout: float = 10.0) -> FunctionSpec:
    return FunctionSpec(
        name=f"f-{handler}",
        code_dir=code,
        code_sha256="00",
        handler=f"app.{handler}",
        runtime="python3.12",
        memory_mb=128,
        timeout_seconds=timeout,
        environment={"_HANDLER": f"app.{handler}", "AWS_LAMBDA_FUNCTION_NAME": f"f-{handler}"},
    )


def run(tmp_path: Path, scenario) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(HANDLERS)

    async def main() -> None:
        pool = LocalPool(tmp_path / "work", endpoint_port=1)
        await pool.start()
        try:
            await scenario(pool, code)
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_second_invocation_reuses_the_warm_instance(tmp_path):
    async def scenario(pool: LocalPool, code: Path) -> None:
        first = await pool.invoke(spec(code, "echo"), b'{"n": 1}', request_id="r-1")
        second = await pool.invoke(spec(code, "echo"), b'{"n": 2}', request_id="r-2")
        assert first.cold_start is True
        assert second.cold_start is False
        one, two = json.loads(first.payload), json.loads(second.payload)
        assert one["event"] == {"n": 1}
        assert one["request"] == "r-1"
        assert two["pid"] == one["pid"]
        assert "saw {'n': 2}" in second.log_tail
        assert second.log_tail.startswith("START RequestId: r-2 Version: $LATEST\n")
        assert pool.instances("f-echo") == 1

    run(tmp_path, scenario)


def test_a_handler_past_its_timeout_is_killed_and_reported(tmp_path):
    async def scenario(pool: LocalPool, code: Path) -> None:
        result = await pool.invoke(spec(code, "slow", timeout=0.5), b"{}", request_id="r")
        assert result.function_error == "Unhandled"
        payload = json.loads(result.payload)
        assert payload["errorType"] == "Sandbox.Timedout"
        assert payload["errorMessage"] == "RequestId: r Error: Task timed out after 0.50 seconds"
        assert pool.instances("f-slow") == 0

    run(tmp_path, scenario)


def test_a_runtime_that_exits_is_an_exit_error_and_the_next_call_starts_afresh(tmp_path):
    async def scenario(pool: LocalPool, code: Path) -> None:
        result = await pool.invoke(spec(code, "die"), b"{}")
        assert result.function_error == "Unhandled"
        assert json.loads(result.payload)["errorType"] == "Runtime.ExitError"
        again = await pool.invoke(spec(code, "die"), b"{}")
        assert again.cold_start is True

    run(tmp_path, scenario)


def test_handler_errors_and_unserializable_results_are_function_errors(tmp_path):
    async def scenario(pool: LocalPool, code: Path) -> None:
        broken = await pool.invoke(spec(code, "broken"), b"{}")
        assert broken.function_error == "Unhandled"
        body = json.loads(broken.payload)
        assert body["errorType"] == "KeyError"
        assert body["stackTrace"]
        odd = await pool.invoke(spec(code, "unserializable"), b"{}")
        assert json.loads(odd.payload)["errorType"] == "Runtime.MarshalError"
        missing = await pool.invoke(spec(code, "nothing_here"), b"{}")
        assert json.loads(missing.payload)["errorType"] == "Runtime.HandlerNotFound"

    run(tmp_path, scenario)


def test_the_unisolated_pool_claims_no_isolation(tmp_path):
    pool = LocalPool(tmp_path, endpoint_port=1)
    layers = pool.isolation_layers()
    assert layers["namespaces"] is False
    assert layers["seccomp"] is False


def test_a_sandbox_pool_that_cannot_start_leaves_functions_running_unisolated(
    harness, fakes, tmp_path
):
    import types

    from keeldb.functions import local_pool

    class BrokenPool:
        async def start(self) -> None:
            raise OSError("no namespaces here")

    sandbox = types.SimpleNamespace(
        __name__="keeldb.functions.sandbox",
        FunctionSpec=local_pool.FunctionSpec,
        SandboxTimeout=local_pool.SandboxTimeout,
        SandboxCrashed=local_pool.SandboxCrashed,
        SandboxBusy=local_pool.SandboxBusy,
    )

    async def scenario() -> None:
        from keeldb.functions.service import FunctionService

        service = FunctionService(
            root=tmp_path / "functions",
            region="us-east-1",
            account="000000000000",
            endpoint_url="http://127.0.0.1:9",
            endpoint_port=9,
            pool_module=sandbox,
            pool=BrokenPool(),
        )
        await service.start()
        try:
            assert service.isolation_layers()["namespaces"] is False
            await service.create_function(fakes.create_body("f"))
            outcome = await service.invoke("f", None, b'{"x": 1}')
            assert outcome.function_error is None
            assert json.loads(outcome.payload) == {"x": 1}
        finally:
            await service.close()

    asyncio.run(scenario())
