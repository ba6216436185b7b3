"""A sandbox pool driven from synchronous code, for tests and benchmarks.

Owns: one event loop in a daemon thread that runs a `SandboxPool`, and blocking wrappers of
its coroutines. It must never be used by the database itself, which runs the pool on its own
event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Self, TypeVar

from keeldb.functions.sandbox.pool import FunctionSpec, InvokeResult, SandboxPool

T = TypeVar("T")
CALL_SECONDS_MAX = 120.0  # no pool call in a test takes this long unless something hangs


class ThreadedPool:
    """`with ThreadedPool(work_dir, endpoint_port=...) as pool: pool.invoke(spec, b"{}")`."""

    def __init__(
        self, work_dir: Path, *, pool_class: type[SandboxPool] = SandboxPool, **options: Any
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        # Tests and benchmarks want measured layers and no zygote start in their first call.
        options.setdefault("eager", True)
        self.pool = pool_class(work_dir, **options)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_SECONDS_MAX) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self) -> Self:
        try:
            self.call(self.pool.start())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.call(self.pool.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_SECONDS_MAX)
            self.loop.close()

    def invoke(self, spec: FunctionSpec, payload: bytes, **options: Any) -> InvokeResult:
        return self.call(self.pool.invoke(spec, payload, **options))

    def invoke_many(self, spec: FunctionSpec, payloads: list[bytes]) -> list[Any]:
        """Invoke concurrently; each element is an InvokeResult or the exception raised."""

        async def gather() -> list[Any]:
            calls = [self.pool.invoke(spec, p) for p in payloads]
            return await asyncio.gather(*calls, return_exceptions=True)

        return self.call(gather())

    def isolation_layers(self) -> dict[str, bool]:
        return self.pool.isolation_layers()

    def instances(self, name: str) -> int:
        return self.call(_value(lambda: self.pool.instances(name)))

    def on_loop(self, function: Any) -> Any:
        """Run a plain function on the pool's loop (to read its state without races)."""
        return self.call(_value(function))


async def _value(function: Any) -> Any:
    return function()
