"""The two ends of a worker's Unix socket to the primary, as asyncio protocols.

Owns: pipelining calls over one connection per worker (ids, futures, answers in any order),
coalescing the frames produced in one turn of the event loop into one write, the bound on
calls in flight on each side, and turning answers back into what the HTTP front end expects
(a result, a `ClientError` identical to the primary's, or a failure that becomes a 500).

`WorkerChannel` is the worker's end; `PrimaryChannel` is the primary's end of one worker's
socket and runs the calls against the primary's own `ApiServer` (its database dispatch, its
other JSON services and its REST mounts), exactly as if the request had reached the primary
over HTTP after parsing and signature checks. Neither end ever evaluates a request itself.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable
from typing import Any

import orjson

from keeldb.api.server import TARGET_PREFIX, ApiServer, Request, RestResponse
from keeldb.model.errors import ClientError
from keeldb.workers import protocol

log = logging.getLogger("keeldb.workers")

# Calls a worker keeps in flight to the primary before new ones wait: each HTTP connection
# has at most one request being answered at a time, so this is only reached by thousands of
# connections, and it bounds the primary's queue per worker.
CALLS_IN_FLIGHT_MAX = 4096
# The primary stops reading a worker's socket while this many of its calls run, and reads
# again below half of it (a worker that ignores the bound above cannot grow its memory).
PRIMARY_CALLS_MAX = 2 * CALLS_IN_FLIGHT_MAX
INTERNAL_ERROR_MESSAGE = "Internal server error"


class PrimaryGoneError(Exception):
    """The channel to the primary is closed: an operating error (the worker stops)."""


class PrimaryFailedError(Exception):
    """The primary failed to answer a call (its bug, logged there); a 500 here."""


class ForwardedClientError(ClientError):
    """A client error the primary answered, with its exact status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message", "")))
        self.status = status  # type: ignore[misc]
        self._body = body

    def body(self) -> dict[str, Any]:
        return dict(self._body)


class _FrameWriter:
    """Frames queued during one turn of the loop leave in one write."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def send(self, data: bytes) -> None:
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append(data)

    def flush(self) -> None:
        queued, self._queued = self._queued, []
        if queued and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(queued))


# --- the worker's end --------------------------------------------------------------------


class WorkerChannel(asyncio.Protocol):
    """The worker's connection to the primary: sends calls, matches answers to them."""

    def __init__(self) -> None:
        self._loop = asyncio.get_event_loop()
        self._writer = _FrameWriter(self._loop)
        self._decoder = protocol.FrameDecoder()
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[protocol.Message]] = {}
        self._room: collections.deque[asyncio.Future[None]] = collections.deque()
        self.hello: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._writer.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except protocol.FrameError as error:
            log.error("the primary sent garbage, closing: %s", error)
            self.close()
            return
        calls = self._calls
        for message in messages:
            if message.kind == protocol.HELLO:
                if not self.hello.done():
                    try:
                        self.hello.set_result(protocol.unpacked(message.body))
                    except protocol.FrameError as error:
                        self.hello.set_exception(error)
                continue
            future = calls.pop(message.call_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        if self._room and len(calls) < CALLS_IN_FLIGHT_MAX:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer.transport = None
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(PrimaryGoneError("the primary closed the channel"))
        for waiter in self._room:
            if not waiter.done():
                waiter.set_exception(PrimaryGoneError("the primary closed the channel"))
        if not self.hello.done():
            self.hello.set_exception(PrimaryGoneError("the primary closed the channel"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        transport = self._writer.transport
        if transport is not None:
            transport.close()

    # -- calls ------------------------------------------------------------------------

    def send_ready(self, pid: int) -> None:
        self._writer.send(protocol.packed(protocol.READY, 0, pid))

    async def _call(self, encode: Callable[[int], bytes]) -> protocol.Message:
        if self._writer.transport is None:
            raise PrimaryGoneError("the primary closed the channel")
        while len(self._calls) >= CALLS_IN_FLIGHT_MAX:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._room.append(waiter)
            await waiter
        call_id = next(self._ids)
        if call_id == protocol.CALL_ID_MAX:
            self._ids = itertools.count(1)
        future: asyncio.Future[protocol.Message] = self._loop.create_future()
        self._calls[call_id] = future
        self._writer.send(encode(call_id))
        return await future

    async def call_json(self, service: str, operation: str, body: dict[str, Any]) -> Any:
        """The primary's answer to one JSON operation: its encoded result (an
        `orjson.Fragment`, so that the front end sends the bytes as they are), or the
        `ClientError` it raised."""
        data = orjson.dumps(body)
        answer = await self._call(
            lambda call_id: protocol.call_json(call_id, service, operation, data)
        )
        if answer.kind == protocol.ANSWER_JSON:
            return orjson.Fragment(answer.body)
        if answer.kind == protocol.ANSWER_ERROR:
            status, error = protocol.parse_answer_error(answer.body)
            raise ForwardedClientError(status, orjson.loads(error))
        raise PrimaryFailedError(f"the primary failed on {operation}")

    async def call_rest(self, request: Request) -> RestResponse:
        value = [request.method, request.url, request.headers, request.body]
        answer = await self._call(
            lambda call_id: protocol.packed(protocol.CALL_REST, call_id, value)
        )
        if answer.kind != protocol.ANSWER_REST:
            raise PrimaryFailedError("the primary failed on a REST request")
        status, body, content_type, headers = protocol.unpacked(answer.body)
        return RestResponse(status, body, content_type, [tuple(h) for h in headers])

    def json_dispatch(self, service: str) -> Callable[[str, dict[str, Any]], Any]:
        async def dispatch(operation: str, body: dict[str, Any]) -> Any:
            return await self.call_json(service, operation, body)

        return dispatch


# --- the primary's end -------------------------------------------------------------------


class PrimaryChannel(asyncio.Protocol):
    """The primary's end of one worker's socket: runs its calls, sends their answers."""

    def __init__(self, server: ApiServer, on_ready: Callable[[int], None]) -> None:
        self._server = server
        self._on_ready = on_ready
        self._loop = asyncio.get_event_loop()
        self._writer = _FrameWriter(self._loop)
        self._decoder = protocol.FrameDecoder()
        self._running = 0
        self._paused = False
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.calls_answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._writer.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        transport = self._writer.transport
        if transport is not None:
            transport.close()

    def send_hello(self, settings: dict[str, Any]) -> None:
        self._writer.send(protocol.packed(protocol.HELLO, 0, settings))

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except protocol.FrameError as error:
            log.error("a worker sent garbage, closing its channel: %s", error)
            self.close()
            return
        create_task = self._loop.create_task
        try:
            for message in messages:
                kind = message.kind
                if kind == protocol.CALL_JSON:
                    service, operation, body = protocol.parse_call_json(message.body)
                    self._running += 1
                    create_task(self._json(message.call_id, service, operation, body))
                elif kind == protocol.CALL_REST:
                    value = protocol.unpacked(message.body)
                    self._running += 1
                    create_task(self._rest(message.call_id, value))
                elif kind == protocol.READY:
                    self._on_ready(protocol.unpacked(message.body))
                else:
                    raise protocol.FrameError(f"a worker sent a message of kind {kind}")
        except protocol.FrameError as error:
            log.error("a worker sent garbage, closing its channel: %s", error)
            self.close()
            return
        if self._running >= PRIMARY_CALLS_MAX and not self._paused:
            transport = self._writer.transport
            if transport is not None:
                transport.pause_reading()
                self._paused = True

    def _done(self) -> None:
        self._running -= 1
        self.calls_answered += 1
        if self._paused and self._running < PRIMARY_CALLS_MAX // 2:
            self._paused = False
            transport = self._writer.transport
            if transport is not None:
                transport.resume_reading()

    async def _json(self, call_id: int, service: str, operation: str, body: bytes) -> None:
        server = self._server
        try:
            if service == TARGET_PREFIX:
                dispatch = server.dispatch
            else:
                dispatch = server.json_services[service][0]
            # The worker decoded this body already and found a JSON object.
            result = await dispatch(operation, orjson.loads(body))
            answer = protocol.frame(protocol.ANSWER_JSON, call_id, orjson.dumps(result))
        except ClientError as error:
            error_body = error.body()
            if not error.message:
                # DynamoDB sends these protocol errors with a type and no message at all.
                error_body.pop("message", None)
            answer = protocol.answer_error(call_id, error.status, orjson.dumps(error_body))
        except Exception:
            log.exception("internal error in %s.%s (from a worker)", service, operation)
            answer = protocol.frame(protocol.ANSWER_FAILED, call_id, b"")
        finally:
            self._done()
        self._writer.send(answer)

    async def _rest(self, call_id: int, value: Any) -> None:
        try:
            method, url, headers, body = value
            request = Request(method, url, headers, body, True)
            path = url.split(b"?", 1)[0]
            for prefix, handler in self._server.mounts:
                if path.startswith(prefix):
                    response = await handler(request)
                    break
            else:
                raise LookupError(f"no mounted service for {path[:200]!r}")
            answer = protocol.packed(
                protocol.ANSWER_REST,
                call_id,
                [
                    response.status,
                    response.body,
                    response.content_type,
                    [list(header) for header in response.headers],
                ],
            )
        except Exception:
            log.exception("internal error in a REST request from a worker")
            answer = protocol.frame(protocol.ANSWER_FAILED, call_id, b"")
        finally:
            self._done()
        self._writer.send(answer)
