"""Fixtures of the front-end unit tests: an `ApiServer` served on loopback by its own event
loop in a thread, so that a test can talk to it with plain blocking sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import uvloop

from keeldb.api.server import ApiServer

SERVER_THREAD_SECONDS = 10.0  # to start, and to stop after the test


@contextmanager
def _serving(
    server: ApiServer,
    *,
    stop_seconds: float = SERVER_THREAD_SECONDS,
    require_stopped: bool = True,
) -> Iterator[int]:
    """Serve `server` on 127.0.0.1 while the block runs; yields its port. Afterwards the
    loop stops, the server closes, and (`require_stopped`) its thread must have ended."""
    loop = uvloop.new_event_loop()
    started = threading.Event()
    holder: dict[str, int] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["port"] = loop.run_until_complete(server.start("127.0.0.1", 0))
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(SERVER_THREAD_SECONDS)
    yield holder["port"]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(stop_seconds)
    if require_stopped:
        assert not thread.is_alive()


@pytest.fixture(scope="session")
def serve_in_thread() -> Callable[..., AbstractContextManager[int]]:
    """`with serve_in_thread(server) as port:` serves `server` for the block."""
    return _serving
