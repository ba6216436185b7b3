"""Embedded mode: a real KeelDB server inside the calling process, for tests and scripts.

    with keeldb.embedded() as endpoint:
        boto3.client("dynamodb", endpoint_url=endpoint, ...)

Owns: a background thread with its own event loop (uvloop) running one node on a free port of
127.0.0.1, with a temporary data directory removed at exit (or everything in memory), and its
clean stop. The caller's thread and loop are never used by the server.

It must never leave a thread, a socket or a temporary directory behind, even when the body of
the `with` block raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from keeldb.api.sigv4 import Credential
from keeldb.node import Node, NodeConfig

# Starting a node takes milliseconds; anything near this bound means it is stuck.
START_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 30.0


class EmbeddedServer:
    """A node running on a background thread; `start()` returns once it accepts connections."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: uvloop.Loop | None = None
        self._stop: asyncio.Event | None = None
        self._node: Node | None = None
        self._thread = threading.Thread(target=self._run, name="keeldb-embedded", daemon=True)

    @property
    def url(self) -> str:
        assert self._node is not None
        return self._node.url

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(START_SECONDS_MAX):
            raise TimeoutError(f"KeelDB did not start within {START_SECONDS_MAX} s")
        if self._error is not None:
            self._thread.join(STOP_SECONDS_MAX)
            raise RuntimeError("KeelDB failed to start") from self._error
        return self.url

    def stop(self) -> None:
        if self._thread.ident is None:
            return  # never started
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(STOP_SECONDS_MAX)
        if self._thread.is_alive():
            raise TimeoutError(f"KeelDB did not stop within {STOP_SECONDS_MAX} s")

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        stop = asyncio.Event()
        self._stop = stop
        try:
            self._node = await Node.start(self._config)
        except BaseException as error:  # noqa: BLE001 - handed to the starting thread
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            await stop.wait()
        finally:
            await self._node.close()


@contextlib.contextmanager
def embedded(
    *,
    in_memory: bool = False,
    data_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    credentials: dict[str, str] | None = None,
    region: str = "us-east-1",
) -> Iterator[str]:
    """Run a KeelDB server for the duration of the block and yield its URL.

    By default its data lives in a fresh temporary directory removed at exit; `in_memory`
    skips the disk entirely (faster, nothing durable); `data_dir` uses (and keeps) the given
    directory. `credentials` ({access key id: secret}) turns on SigV4 verification.
    """
    assert not (in_memory and data_dir is not None), "in_memory and data_dir exclude each other"
    temporary: str | None = None
    if in_memory:
        directory: Path | None = None
    elif data_dir is not None:
        directory = Path(data_dir)
    else:
        temporary = tempfile.mkdtemp(prefix="keeldb-")
        directory = Path(temporary)
    keys = None
    if credentials is not None:
        keys = {key: Credential(key, secret) for key, secret in credentials.items()}
    server = EmbeddedServer(
        NodeConfig(host=host, port=port, data_dir=directory, credentials=keys, region=region)
    )
    try:
        yield server.start()
    finally:
        try:
            server.stop()
        finally:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)


class _CallableModule(types.ModuleType):
    """Importing `keeldb.embedded` binds the attribute `embedded` of the `keeldb` package to
    this module, hiding the function of the same name that the package root exports. Making
    the module callable keeps `keeldb.embedded(...)` working either way."""

    def __call__(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[str]:
        return embedded(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
