"""A function pool without isolation, for hosts where the sandbox package cannot run.

Owns: one plain Python process per instance (`local_runtime`), reused while warm, stopped
after an idle time, killed at its timeout. It has the interface of
`keeldb.functions.sandbox.SandboxPool` (start, close, invoke, isolation_layers, instances), so
that the service runs unchanged on it; `isolation_layers()` reports every layer as inactive.

It must never be chosen when the sandbox package is importable, and never claims isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeldb.functions.local_runtime import FRAME_HEADER

# An idle instance is stopped after this long (scale to zero).
IDLE_SECONDS_MAX = 60.0
# Frames larger than this are a broken instance, not an answer (6 MB payload + log header).
FRAME_BYTES_MAX = 8 * 1024 * 1024


class SandboxTimeout(Exception):
    """Starting an instance took too long (a handler's timeout is a result, not this)."""


class SandboxCrashed(Exception):
    """The pool is not running (an instance that dies is a result, not this)."""


class SandboxBusy(Exception):
    """Every instance the pool may run is busy."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    code_dir: Path
    code_sha256: str
    handler: str
    runtime: str
    memory_mb: int
    timeout_seconds: float
    environment: Mapping[str, str]


@dataclass
class InvokeResult:
    payload: bytes
    function_error: str | None
    log_tail: str
    duration_ms: float
    cold_start: bool
    request_id: str = ""


class _Instance:
    def __init__(self, process: asyncio.subprocess.Process, key: tuple[Any, ...]) -> None:
        self.process = process
        self.key = key
        self.idle_since = time.monotonic()

    async def call(
        self, request_id: str, payload: bytes, timeout_seconds: float
    ) -> tuple[dict[str, Any], bytes]:
        assert self.process.stdin is not None and self.process.stdout is not None
        head = json.dumps({"request_id": request_id}).encode()
        self.process.stdin.write(
            FRAME_HEADER.pack(len(head)) + head + FRAME_HEADER.pack(len(payload)) + payload
        )
        await self.process.stdin.drain()
        header = await asyncio.wait_for(self._frame(), timeout_seconds)
        body = await asyncio.wait_for(self._frame(), timeout_seconds)
        return json.loads(header), body

    async def _frame(self) -> bytes:
        assert self.process.stdout is not None
        head = await self.process.stdout.readexactly(FRAME_HEADER.size)
        (length,) = FRAME_HEADER.unpack(head)
        if length > FRAME_BYTES_MAX:
            raise SandboxCrashed(f"answer frame of {length} bytes")
        return await self.process.stdout.readexactly(length)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class LocalPool:
    """Warm, unisolated instances per (function, code)."""

    def __init__(self, work_dir: Path, *, endpoint_port: int, **_options: object) -> None:
        self.work_dir = work_dir
        self.endpoint_port = endpoint_port
        self._idle: dict[tuple[Any, ...], list[_Instance]] = {}
        self._busy: set[_Instance] = set()
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for instance in [*self._busy, *(i for group in self._idle.values() for i in group)]:
            instance.kill()
            with contextlib.suppress(Exception):
                await instance.process.wait()
        self._idle.clear()
        self._busy.clear()

    def isolation_layers(self) -> dict[str, bool]:
        return {
            "process": True,
            "namespaces": False,
            "cgroups": False,
            "seccomp": False,
            "landlock": False,
            "rlimits": False,
        }

    def instances(self, name: str) -> int:
        live = [i for group in self._idle.values() for i in group] + list(self._busy)
        return sum(1 for instance in live if instance.key[0] == name)

    async def invoke(
        self,
        spec: FunctionSpec,
        payload: bytes,
        *,
        request_id: str | None = None,
        function_arn: str | None = None,
    ) -> InvokeResult:
        """Run the handler; its errors, a timeout and a dead instance come back as results
        with Lambda's payloads, as the sandbox pool reports them."""
        if self._reaper is None:
            raise SandboxCrashed("the pool is not running")
        request_id = request_id or str(uuid.uuid4())
        key = _key(spec)
        idle = self._idle.get(key) or []
        cold = not idle
        instance = idle.pop() if idle else await self._spawn(spec, key)
        self._busy.add(instance)
        started = time.monotonic()
        try:
            header, body = await instance.call(request_id, payload, spec.timeout_seconds)
        except TimeoutError:
            instance.kill()
            await instance.process.wait()
            message = (
                f"RequestId: {request_id} Error: Task timed out after "
                f"{spec.timeout_seconds:.2f} seconds"
            )
            return _result(
                spec,
                request_id,
                json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}).encode(),
                "Unhandled",
                message + "\n",
                (time.monotonic() - started) * 1000,
                cold,
                "timeout",
            )
        except (asyncio.IncompleteReadError, ConnectionError, SandboxCrashed) as error:
            instance.kill()
            code = await instance.process.wait()
            message = f"RequestId: {request_id} Error: Runtime exited with error: exit {code}"
            return _result(
                spec,
                request_id,
                json.dumps({"errorType": "Runtime.ExitError", "errorMessage": message}).encode(),
                "Unhandled",
                f"{message} ({error})\n",
                (time.monotonic() - started) * 1000,
                cold,
                "error",
            )
        finally:
            self._busy.discard(instance)
        instance.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(instance)
        return _result(
            spec,
            request_id,
            body,
            header["error"],
            header["log"],
            header.get("duration_ms", (time.monotonic() - started) * 1000),
            cold,
            None,
        )

    async def _spawn(self, spec: FunctionSpec, key: tuple[Any, ...]) -> _Instance:
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **spec.environment}
        environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keeldb.functions.local_runtime",
            str(spec.code_dir),
            str(spec.timeout_seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=environment,
            limit=FRAME_BYTES_MAX,
        )
        return _Instance(process, key)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SECONDS_MAX / 4)
            oldest = time.monotonic() - IDLE_SECONDS_MAX
            for key, group in list(self._idle.items()):
                for instance in [i for i in group if i.idle_since < oldest]:
                    group.remove(instance)
                    instance.kill()
                    await instance.process.wait()


def _key(spec: FunctionSpec) -> tuple[Any, ...]:
    """Instances are shared only between invocations of one configuration and code."""
    return (
        spec.name,
        spec.code_sha256,
        spec.handler,
        spec.memory_mb,
        spec.timeout_seconds,
        tuple(sorted(spec.environment.items())),
    )


def _result(
    spec: FunctionSpec,
    request_id: str,
    body: bytes,
    function_error: str | None,
    text: str,
    duration_ms: float,
    cold: bool,
    status: str | None,
) -> InvokeResult:
    """The log framed as Lambda's runtime frames it: START, the function's lines, END,
    REPORT."""
    if text and not text.endswith("\n"):
        text += "\n"
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\t"
        f"Memory Size: {spec.memory_mb} MB\t"
    )
    if status is not None:
        report += f"Status: {status}"
    tail = (
        f"START RequestId: {request_id} Version: $LATEST\n{text}"
        f"END RequestId: {request_id}\n{report}\n"
    )
    return InvokeResult(body, function_error, tail, duration_ms, cold, request_id)
