"""The HTTP front end: DynamoDB's JSON 1.0 protocol over HTTP/1.1 keep-alive.

Owns: the wire protocol (httptools parsing, keep-alive, pipelining, request size bound,
`Expect: 100-continue`), routing `X-Amz-Target: DynamoDB_20120810.<Operation>` to the
database's `dispatch`, SigV4 checks when credentials are configured, and the one place where
a `ClientError` becomes an HTTP response (`{"__type": ..., "message": ...}` with its status,
`x-amz-crc32`, `x-amzn-RequestId`).

It must never evaluate a request itself, touch storage, or hop threads per request: a request
is parsed, dispatched on the event loop and answered with one write (`HttpProtocol._send`:
straight to the socket when nothing is buffered before it, else through the transport). On an
idle connection the dispatch of a JSON-service request starts inside the read callback
(`HttpProtocol._start`), so a request that never waits (a read) is answered there without a
task of its own, and one that waits for a future (a write, for its group's fsync) is resumed
by that future's done callback (`HttpProtocol._step`), still without a task; so no JSON
operation may use what works only inside a task (`asyncio.timeout`, `TaskGroup`,
`current_task`). Mounted services always get a task. An
exception that is not a `ClientError` is our bug: it is logged with its traceback and
answered with a 500 InternalServerError, and the connection and server carry on.

The wire behaviour (health check text, 404 for non-POST or an unknown content type,
SerializationException and UnknownOperationException without a message, check order) follows
what DynamoDB answers, as recorded by dynalite's conformance tests.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import socket
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Container, Coroutine, Sequence
from email.utils import formatdate
from typing import Any

import httptools
import orjson

from keeldb.api.sigv4 import Verifier
from keeldb.model.errors import (
    ClientError,
    InternalServerError,
    SerializationException,
    UnknownOperationException,
)

log = logging.getLogger("keeldb.api")

# An operation's answer: a dict, or an `orjson.Fragment` of one already encoded (a worker's).
Dispatch = Callable[[str, dict[str, Any]], Awaitable[Any]]


class RestResponse:
    """What a mounted REST service answers: status, body, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


RestHandler = Callable[["Request"], Awaitable[RestResponse]]

TARGET_PREFIX = "DynamoDB_20120810"
JSON_CONTENT_TYPES = ("application/x-amz-json-1.0", "application/json")
# DynamoDB refuses request bodies above 16 MB with a bare 413 (the BatchWriteItem page limit
# is 16 MB, so no valid request is larger).
REQUEST_BYTES_MAX = 16 * 1024 * 1024
# Request line plus headers; a longer head is garbage or an attack, not a DynamoDB client.
REQUEST_HEAD_BYTES_MAX = 64 * 1024
# Pipelined requests queued on one connection before we stop reading from it, so that a
# client that sends without reading cannot grow our memory without bound.
PIPELINE_REQUESTS_MAX = 64
# ... and the bytes of their bodies, so that large pipelined requests are bounded as well.
PIPELINE_BYTES_MAX = 32 * 1024 * 1024
# How long a refused connection keeps reading (and dropping) what the client still sends, so
# that the refusal reaches the client instead of being lost to a connection reset.
LINGER_SECONDS_MAX = 2.0
# A request must arrive whole within this time of its first byte: a client that trickles it,
# or stops halfway, would otherwise hold a connection and its buffers for ever.
REQUEST_READ_SECONDS_MAX = 60.0
# How often connections are checked for such stalled requests.
STALL_CHECK_SECONDS = 1.0
# How long a clean shutdown waits for in-flight requests before closing their connections.
SHUTDOWN_SECONDS_MAX = 10.0
# Answers are written to the socket directly when nothing is buffered (`HttpProtocol._send`).
DIRECT_SEND = os.environ.get("KEELDB_DIRECT_SEND", "1") != "0"
# A request on an idle connection is handled in its read callback up to its first wait
# (`HttpProtocol._start`); 0 sends every request through a task, as before.
EAGER_REQUESTS = os.environ.get("KEELDB_EAGER_REQUESTS", "1") != "0"
# Such a request that waits for a future (a write, for its group's fsync) is resumed by that
# future's done callback (`HttpProtocol._step`) rather than by a task made for it; 0 gives it
# a task, as before. Only before Python 3.12: from 3.12 on `asyncio.wait_for` (which the
# cluster's dispatch uses after its first wait) is built on `asyncio.timeout`, which works
# only inside a task.
CALLBACK_WAITS = os.environ.get("KEELDB_CALLBACK_WAITS", "1") != "0" and sys.version_info < (3, 12)

HEALTH_TEMPLATE = "healthy: dynamodb.{region}.amazonaws.com "
NOT_FOUND_BODY = b"<UnknownOperationException/>\n"
INTERNAL_ERROR_MESSAGE = "Internal server error"

# The headers the front end reads when it does not verify signatures (with SigV4 every
# header may be signed, so all are kept).
USED_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "x-amz-target",
        "expect",
        "origin",
        "access-control-request-headers",
        "access-control-request-method",
    }
)
# Raw header names seen so far -> their lower-case form; clients send the same few names in
# the same case, so this saves decoding and lower-casing them on every request. Bounded so
# that a client inventing names cannot grow it.
HEADER_NAME_CACHE_ENTRIES_MAX = 512
_HEADER_KEYS: dict[bytes, str] = {}

_STATUS_LINES = {
    200: b"200 OK",
    201: b"201 Created",
    202: b"202 Accepted",
    204: b"204 No Content",
    400: b"400 Bad Request",
    401: b"401 Unauthorized",
    403: b"403 Forbidden",
    404: b"404 Not Found",
    409: b"409 Conflict",
    412: b"412 Precondition Failed",
    413: b"413 Request Entity Too Large",
    429: b"429 Too Many Requests",
    500: b"500 Internal Server Error",
    502: b"502 Bad Gateway",
    503: b"503 Service Unavailable",
}
_RESPONSE_TEMPLATE = (
    b"HTTP/1.1 %s\r\nx-amzn-RequestId: %s\r\nx-amz-crc32: %d\r\n%sContent-Length: %d\r\n"
    b"Date: %s\r\n%s%s\r\n%s"
)
_CONTENT_TYPE_AMZ_JSON = b"Content-Type: application/x-amz-json-1.0\r\n"
_CONTENT_TYPE_JSON = b"Content-Type: application/json\r\n"
_CONNECTION_CLOSE = b"Connection: close\r\n"


class RequestIds:
    """52-character [0-9A-Z] request ids, like DynamoDB's: a random per-process prefix and a
    counter, so each id is unique without asking the OS for randomness per request."""

    def __init__(self) -> None:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        self._prefix = "".join(alphabet[b % 36] for b in os.urandom(32)).encode("ascii")
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return b"%s%020d" % (self._prefix, next(self._counter))


class DateCache:
    """The `Date` header, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(
        self, method: str, url: bytes, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class ApiServer:
    """Serves one database's `dispatch` over HTTP; `start()` binds, `close()` drains."""

    def __init__(
        self,
        dispatch: Dispatch,
        operations: Container[str],
        *,
        verifier: Verifier | None = None,
        region: str = "us-east-1",
        request_bytes_max: int = REQUEST_BYTES_MAX,
        request_read_seconds_max: float = REQUEST_READ_SECONDS_MAX,
    ) -> None:
        self.dispatch = dispatch
        self.operations = operations
        self.verifier = verifier
        self.region = region
        self.request_bytes_max = request_bytes_max
        self.request_read_seconds_max = request_read_seconds_max
        self._stall_checker: asyncio.Task[None] | None = None
        self.request_ids = RequestIds()
        self.dates = DateCache()
        self.health_body = HEALTH_TEMPLATE.format(region=region).encode("ascii")
        self.connections: set[HttpProtocol] = set()
        # Other AWS JSON services served on the same endpoint (e.g. DynamoDB Streams), by
        # X-Amz-Target prefix: (their dispatch, their operation names).
        self.json_services: dict[str, tuple[Dispatch, Container[str]]] = {}
        # REST services served on the same endpoint (e.g. the function service), by URL path
        # prefix; they see every request whose path starts with their prefix.
        self.mounts: list[tuple[bytes, RestHandler]] = []
        self._mount_prefixes: tuple[bytes, ...] = ()  # the prefixes of `mounts`, for startswith
        self._server: asyncio.AbstractServer | None = None
        self._closing = False
        # One line per answered request at DEBUG level; decided once, as the check per
        # request would cost more than it saves.
        self.trace = log.isEnabledFor(logging.DEBUG)

    def add_json_service(self, prefix: str, dispatch: Dispatch, operations: Container[str]) -> None:
        """Serve `X-Amz-Target: <prefix>.<Operation>` with another service's dispatch."""
        assert prefix != TARGET_PREFIX and prefix not in self.json_services, prefix
        self.json_services[prefix] = (dispatch, operations)

    def mount(self, path_prefix: str, handler: RestHandler) -> None:
        """Hand every request whose URL path starts with `path_prefix` to `handler`."""
        assert path_prefix.startswith("/") and path_prefix != "/", path_prefix
        self.mounts.append((path_prefix.encode("ascii"), handler))
        self._mount_prefixes = tuple(prefix for prefix, _ in self.mounts)

    @property
    def keep_all_headers(self) -> bool:
        """Signature checks and mounted services read headers beyond the few DynamoDB needs."""
        return self.verifier is not None or bool(self.mounts)

    def keeps_all_headers_of(self, url: bytes) -> bool:
        """Whether a request for `url` needs every header: with signature checks, or when a
        mounted service answers it; a DynamoDB request needs only USED_HEADERS."""
        if self.verifier is not None:
            return True
        if not self.mounts or url == b"/":
            return False  # DynamoDB's own path: no mount is "/" (see `mount`)
        path = url.split(b"?", 1)[0]
        return path.startswith(self._mount_prefixes)

    def is_mounted(self, url: bytes) -> bool:
        """Whether a mounted service answers a request for `url`."""
        if not self.mounts or url == b"/":
            return False
        return url.split(b"?", 1)[0].startswith(self._mount_prefixes)

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> int:
        """Bind and start accepting; return the bound port (useful with port 0).

        With `sock` (a bound, listening socket made by the caller, e.g. one of the
        SO_REUSEPORT group of `keeldb.workers`) the server accepts on it instead of binding.
        """
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(
                lambda: HttpProtocol(self), sock=sock, backlog=1024
            )
        else:
            self._server = await loop.create_server(
                lambda: HttpProtocol(self), host, port, reuse_address=True, backlog=1024
            )
        self._stall_checker = loop.create_task(self._close_stalled_connections())
        # uvloop's servers give a list where typeshed says tuple: read it untyped.
        listening: Any = self._server
        sockname = listening.sockets[0].getsockname()
        return int(sockname[1])

    async def _close_stalled_connections(self) -> None:
        """Close connections whose current request has been arriving for too long."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(STALL_CHECK_SECONDS, self.request_read_seconds_max))
            oldest = loop.time() - self.request_read_seconds_max
            for connection in list(self.connections):
                # A busy connection is waiting on us (or on the client reading our answers),
                # and may have paused reading itself: only a client that is sending counts.
                if (
                    connection.reading_since is not None
                    and connection.reading_since < oldest
                    and not connection.busy
                ):
                    log.info("closing a connection whose request stalled")
                    connection.close()

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish, then close every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._stall_checker is not None:
            self._stall_checker.cancel()
        deadline = time.monotonic() + SHUTDOWN_SECONDS_MAX
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def closing(self) -> bool:
        return self._closing

    # -- one request ------------------------------------------------------------------

    async def handle(self, request: Request) -> tuple[bytes, bool]:
        """Answer one request: (the whole response bytes, close the connection after)."""
        request_id = self.request_ids.next()
        close = not request.keep_alive or self._closing
        headers = request.headers
        extra = b""
        origin = headers.get("origin")
        if origin is not None:
            extra = b"Access-Control-Allow-Origin: *\r\n"
            if request.method == "OPTIONS":
                return self._cors_preflight(request, request_id, close), close

        if self.mounts and request.url != b"/":
            path = request.url.split(b"?", 1)[0]
            for prefix, handler in self.mounts:
                if path.startswith(prefix):
                    return await self._rest(handler, request, request_id, close, extra), close

        if request.method == "GET":
            return self._response(200, self.health_body, b"", request_id, close, extra), close

        content_type = headers.get("content-type", "")
        if content_type != "application/x-amz-json-1.0":
            content_type = content_type.split(";", 1)[0].strip()
        if request.method != "POST" or (request.body and content_type not in JSON_CONTENT_TYPES):
            response = self._response(404, NOT_FOUND_BODY, b"", request_id, close, extra)
            if request.method == "HEAD":
                # A response to HEAD has the headers of the full answer and no body.
                response = response[: -len(NOT_FOUND_BODY)]
            return response, close
        response_type = (
            _CONTENT_TYPE_AMZ_JSON
            if content_type == "application/x-amz-json-1.0"
            else _CONTENT_TYPE_JSON
        )
        try:
            body = await self._evaluate(request)
            status = 200
        except ClientError as error:
            status = error.status
            body = error.body()
            if not error.message:
                # DynamoDB sends these protocol errors with a type and no message at all.
                body.pop("message", None)
        except Exception:
            log.exception("internal error in %s", headers.get("x-amz-target"))
            internal = InternalServerError(INTERNAL_ERROR_MESSAGE)
            status = internal.status
            body = internal.body()
        try:
            payload = orjson.dumps(body)
        except TypeError:
            log.exception("response of %s is not serialisable", headers.get("x-amz-target"))
            status = 500
            payload = orjson.dumps(InternalServerError(INTERNAL_ERROR_MESSAGE).body())
        if self.trace:
            log.debug(
                "%s %s %d %d bytes",
                request_id.decode("ascii"),
                headers.get("x-amz-target"),
                status,
                len(payload),
            )
        return self._response(status, payload, response_type, request_id, close, extra), close

    async def _rest(
        self,
        handler: RestHandler,
        request: Request,
        request_id: bytes,
        close: bool,
        extra: bytes,
    ) -> bytes:
        """Answer a request of a mounted REST service; its failures are its own to shape,
        except our bugs, which become a 500 as everywhere else."""
        try:
            answer = await handler(request)
        except Exception:
            log.exception("internal error in %s", request.url[:200])
            answer = RestResponse(
                500, orjson.dumps({"Type": "Service", "message": INTERNAL_ERROR_MESSAGE})
            )
        lines = [extra]
        for name, value in answer.headers:
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if answer.status not in _STATUS_LINES:
            _STATUS_LINES[answer.status] = b"%d Status" % answer.status
        content_type = (
            b"Content-Type: %s\r\n" % answer.content_type.encode("latin-1")
            if answer.content_type
            else b""
        )
        response = self._response(
            answer.status, answer.body, content_type, request_id, close, b"".join(lines)
        )
        if request.method == "HEAD":
            response = response[: len(response) - len(answer.body)]
        return response

    async def _evaluate(self, request: Request) -> Any:
        data = _parse_json(request.body) if request.body else None
        target = request.headers.get("x-amz-target", "")
        service, dot, operation = target.partition(".")
        dispatch = self.dispatch
        operations = self.operations
        if service != TARGET_PREFIX and service in self.json_services:
            dispatch, operations = self.json_services[service]
        elif service != TARGET_PREFIX:
            raise UnknownOperationException("")
        if not dot or "." in operation or operation not in operations:
            raise UnknownOperationException("")
        if self.verifier is not None:
            path, _, query = request.url.decode("latin-1").partition("?")
            self.verifier.verify(request.method, path, query, request.headers, request.body)
        if data is None:
            raise SerializationException("")
        if not isinstance(data, dict):
            raise SerializationException("")
        return await dispatch(operation, data)

    def _response(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        request_id: bytes,
        close: bool,
        extra: bytes = b"",
    ) -> bytes:
        """The whole response in one buffer, so that it leaves in one write."""
        return _RESPONSE_TEMPLATE % (
            _STATUS_LINES[status],
            request_id,
            zlib.crc32(body),
            content_type,
            len(body),
            self.dates.header(),
            extra,
            _CONNECTION_CLOSE if close else b"",
            body,
        )

    def _cors_preflight(self, request: Request, request_id: bytes, close: bool) -> bytes:
        lines = [b"Access-Control-Allow-Origin: *\r\n"]
        allow_headers = request.headers.get("access-control-request-headers")
        if allow_headers is not None:
            lines.append(b"Access-Control-Allow-Headers: %s\r\n" % allow_headers.encode("latin-1"))
        allow_method = request.headers.get("access-control-request-method")
        if allow_method is not None:
            lines.append(b"Access-Control-Allow-Methods: %s\r\n" % allow_method.encode("latin-1"))
        lines.append(b"Access-Control-Max-Age: 172800\r\n")
        return self._response(200, b"", b"", request_id, close, b"".join(lines))

    def bare_response(self, status: int, close: bool) -> bytes:
        """A response with no body, for requests refused before they were read whole."""
        return self._response(status, b"", b"", self.request_ids.next(), close)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SerializationException("") from None


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests with httptools and answers them in order."""

    def __init__(self, server: ApiServer) -> None:
        self._server = server
        self._loop = asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._fd = -1  # the socket's descriptor, for `_send` (-1: the transport's write only)
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        # Whether the request being read keeps every header (decided at its first header,
        # once its URL is known: `ApiServer.keeps_all_headers_of`).
        self._keep_all_headers: bool | None = None
        self._head_bytes = 0
        self._body_parts: list[bytes] = []
        self._body_bytes = 0
        self._refused = False
        # Requests read whole and waiting for their turn; a `bytes` entry is a response
        # already decided (a refusal), sent in order and followed by closing.
        self._pending: collections.deque[Request | bytes] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        # A request's handling begun in a read callback and suspended on a future whose
        # done callback resumes it (`_step`), with no task of its own; None otherwise.
        self._suspended: Coroutine[Any, Any, tuple[bytes, bool]] | None = None
        self._pending_bytes = 0  # bodies of the requests in `_pending`
        self._reading_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._lost = False
        self._eof = False
        # When the first byte of the request being read arrived (loop time); None between
        # requests.
        self.reading_since: float | None = None

    @property
    def busy(self) -> bool:
        """Whether a request of this connection is being answered (or waits to be)."""
        return self._task is not None or self._suspended is not None

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if DIRECT_SEND and sock is not None else -1

    def _send(self, transport: asyncio.Transport, response: bytes) -> None:
        """Send an answer: straight to the socket with os.write when nothing is buffered
        before it (the system call releases the interpreter lock, which uvloop's write
        holds: on loopback the send does the client's TCP receive and wakes it, and on a
        busy host the thread is often descheduled there), the rest through the transport.
        The descriptor is used only while the transport is open, so it is still ours."""
        fd = self._fd
        if fd >= 0 and not transport.is_closing() and not transport.get_write_buffer_size():
            try:
                sent = os.write(fd, response)
            except OSError:
                sent = 0  # would block, or a broken connection: the transport finds out
            if sent == len(response):
                return
            if sent:
                response = response[sent:]
        transport.write(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server.connections.discard(self)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400)
        except httptools.HttpParserError:
            if not self._refused:
                self._refuse(400)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def close(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.close()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reading_since = self._loop.time()
        self._url = b""
        self._headers = {}
        self._keep_all_headers = None
        self._head_bytes = 0
        self._body_parts = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > REQUEST_HEAD_BYTES_MAX:
            self._refuse(400)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > REQUEST_HEAD_BYTES_MAX:
            self._refuse(400)
            return
        key = _HEADER_KEYS.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_HEADER_KEYS) < HEADER_NAME_CACHE_ENTRIES_MAX:
                _HEADER_KEYS[name] = key
        # Without signature checks only a few headers matter; skipping the rest keeps the
        # per-request cost of the SDKs' many headers (user agent, invocation id ...) low.
        keep_all = self._keep_all_headers
        if keep_all is None:
            keep_all = self._keep_all_headers = self._server.keeps_all_headers_of(self._url)
        if keep_all or key in USED_HEADERS:
            headers = self._headers
            text = value.decode("latin-1")
            if key in headers:
                headers[key] += "," + text
            else:
                headers[key] = text

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.request_bytes_max:
            self._refuse(413)
            return
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and not self.busy
            and not self._pending
        ):
            # Only when nothing is owed on this connection: an interim answer must not
            # overtake the answers of earlier pipelined requests. Otherwise the client sends
            # its body after its own short wait, as clients of Expect must.
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_parts.append(body)
        self._body_bytes += len(body)
        if self._body_bytes > self._server.request_bytes_max:
            self._refuse(413)

    def on_message_complete(self) -> None:
        self.reading_since = None
        if self._refused:
            return
        parser = self._parser
        request = Request(
            parser.get_method().decode("ascii", "replace"),
            self._url,
            self._headers,
            # One chunk (the usual case) is passed on without a copy.
            b"".join(self._body_parts),
            parser.should_keep_alive(),
        )
        if (
            EAGER_REQUESTS
            and not self.busy
            and not self._pending
            and (self._writable is None or self._writable.done())
            and self._transport is not None
            and not self._transport.is_closing()
            # A mounted service's handler may need to run in a task from its start (e.g.
            # `asyncio.timeout` refuses to work outside one): it always gets one.
            and not self._server.is_mounted(request.url)
        ):
            # Nothing is owed on this connection: start answering now (`_start`).
            self._start(request)
            return
        self._pending.append(request)
        self._pending_bytes += len(request.body)
        if not self.busy:
            self._task = self._loop.create_task(self._serve())
        elif not self._reading_paused and (
            len(self._pending) >= PIPELINE_REQUESTS_MAX or self._pending_bytes >= PIPELINE_BYTES_MAX
        ):
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True

    # -- answering --------------------------------------------------------------------

    def _refuse(self, status: int) -> None:
        """Answer (after the requests before it) with a bare status and close: the stream
        can no longer be trusted to be in step with the parser."""
        if self._refused:
            return
        self._refused = True
        self.reading_since = None
        self._pending.append(self._server.bare_response(status, close=True))
        if not self.busy:
            self._task = self._loop.create_task(self._serve())

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after a refusal without destroying the answer: closing with unread input
        makes the kernel send a reset that can overtake the response, so the write side is
        shut first and what the client still sends is read and dropped for a while."""
        if transport.can_write_eof():
            transport.write_eof()
            self._loop.call_later(LINGER_SECONDS_MAX, self.close)
        else:
            transport.close()

    def eof_received(self) -> bool:
        # The client finished sending. Requests it sent before are still answered: keep the
        # connection half-open until they are, then `_serve` closes it.
        self._eof = True
        return self.busy and not self._refused

    def _start(self, request: Request) -> None:
        """Run a request's handling up to its first suspension right here, in the read
        callback, rather than in a new task on a later turn of the loop. A request that needs
        no waiting (a read: GetItem, Query ...) is answered at once, without a task; one that
        waits (a write, for its group's fsync) goes on in a task (`_resume`), and requests
        that arrive meanwhile queue behind it as before, so answers keep their order.
        A handling that waits for a future is resumed by the future's done callback
        (`_step`), without a task; anything else it waits on goes to a task (`_resume`)."""
        transport = self._transport
        assert transport is not None
        handling = self._server.handle(request)
        try:
            awaited = handling.send(None)
        except StopIteration as done:
            response, close = done.value
            self._send(transport, response)
            if close or self._eof:
                transport.close()
            return
        except Exception:
            # Only a bug of ours can get here (handle() answers every failure itself).
            log.exception("connection handler failed")
            transport.close()
            return
        self._wait(handling, awaited)

    def _wait(self, handling: Coroutine[Any, Any, tuple[bytes, bool]], awaited: Any) -> None:
        """`handling` yielded `awaited`: resume it when that future is done (`_step`), as a
        task would, or hand it to a task when it yielded anything but a future."""
        if CALLBACK_WAITS and getattr(awaited, "_asyncio_future_blocking", None) is True:
            # Taken over as a task takes a future its coroutine yielded.
            awaited._asyncio_future_blocking = False
            self._suspended = handling
            awaited.add_done_callback(self._step)
            return
        self._task = self._loop.create_task(self._serve(handling, awaited))

    def _step(self, awaited: asyncio.Future[Any]) -> None:
        """The future a suspended handling waits for is done: resume the handling, which
        reads the future's outcome itself (its result, its exception, or CancelledError if
        it was cancelled), exactly as when a task resumes it; answer when it returns, and
        then serve the requests that queued behind it, in a task."""
        handling = self._suspended
        assert handling is not None
        transport = self._transport
        assert transport is not None
        try:
            awaited = handling.send(None)
        except StopIteration as done:
            self._suspended = None
            response, close = done.value
            if not self._lost:
                self._send(transport, response)
                if close or (self._eof and not self._pending):
                    transport.close()
                    return
            if self._pending:
                self._task = self._loop.create_task(self._serve(writable_first=True))
            return
        except asyncio.CancelledError:
            # What it waited for was cancelled and the handling let that through: it has no
            # answer, so the connection is closed rather than left waiting for one.
            self._suspended = None
            transport.close()
            return
        except Exception:
            # Only a bug of ours can get here (handle() answers every failure itself).
            self._suspended = None
            log.exception("connection handler failed")
            transport.close()
            return
        self._suspended = None
        self._wait(handling, awaited)

    async def _resume(
        self, handling: Coroutine[Any, Any, tuple[bytes, bool]], awaited: Any
    ) -> tuple[bytes, bool]:
        """Drive `handling`, suspended by `_start` on `awaited` (what it yielded: a future,
        or None for a bare yield), to its end. Each future is waited for here, and then the
        coroutine is resumed and reads the future's outcome itself, as under a task; a
        cancellation of this task is passed into the coroutine."""
        while True:
            try:
                if awaited is None:
                    await asyncio.sleep(0)
                else:
                    # Taken over as a task takes a future its coroutine yielded; without
                    # this a second await of the pending future refuses to wait.
                    awaited._asyncio_future_blocking = False
                    await awaited
            except asyncio.CancelledError as cancelled:
                if awaited is None or not awaited.cancelled():
                    # This task was cancelled, not the future: the coroutine is told so.
                    try:
                        awaited = handling.throw(cancelled)
                    except StopIteration as done:
                        result: tuple[bytes, bool] = done.value
                        return result
                    continue
            except Exception:  # noqa: BLE001, S110 - the coroutine reads it from the future
                pass
            try:
                awaited = handling.send(None)
            except StopIteration as done:
                result = done.value
                return result

    async def _serve(
        self,
        handling: Coroutine[Any, Any, tuple[bytes, bool]] | None = None,
        awaited: Any = None,
        *,
        writable_first: bool = False,
    ) -> None:
        """Answer the queued requests in order; first, when `_start` began one, that one.
        `writable_first`: the answer before them was just sent, so wait for the transport to
        take more first, as between any two answers."""
        transport = self._transport
        assert transport is not None
        try:
            if writable_first and self._writable is not None and not self._writable.done():
                await self._writable
            if handling is not None:
                response, close = await self._resume(handling, awaited)
                if not self._lost:
                    self._send(transport, response)
                    if close or (self._eof and not self._pending):
                        transport.close()
                        return
                    if self._writable is not None and not self._writable.done():
                        await self._writable
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, bytes):
                    if not self._lost:
                        transport.write(item)
                        self._linger(transport)
                    return
                self._pending_bytes -= len(item.body)
                response, close = await self._server.handle(item)
                if self._lost:
                    # The client left; the request's effect stands, its answer is dropped.
                    continue
                self._send(transport, response)
                if close or (self._eof and not self._pending):
                    transport.close()
                    return
                if (
                    self._reading_paused
                    and len(self._pending) < PIPELINE_REQUESTS_MAX // 2
                    and self._pending_bytes < PIPELINE_BYTES_MAX // 2
                ):
                    self._reading_paused = False
                    transport.resume_reading()
                if self._writable is not None and not self._writable.done():
                    await self._writable
        except Exception:
            # Only a bug of ours can get here (handle() answers every failure itself).
            log.exception("connection handler failed")
            transport.close()
        finally:
            self._task = None
