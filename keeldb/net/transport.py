"""Node-to-node messaging: authenticated connections (TCP, or Unix-domain sockets between
peers on one host) carrying msgpack frames.

Owns the connections of one node to its peers: dialing each peer once and keeping that
connection (reconnecting with exponential backoff and jitter when it breaks), the mutual
HMAC handshake (`net/auth.py`) and the per-frame MAC (`net/framing.py`), optional TLS,
bounded send queues, one-way messages, request/response calls with timeouts, and the fault
switch (`net/faults.py`). It never interprets payloads (handlers registered per channel do)
and never retries a call: a caller that wants a retry makes another call.

Connections. Each node dials each peer it sends to and keeps one connection to it; that
connection carries this node's one-way messages and calls to the peer, and the peer's
replies to those calls. A peer's messages to us come over the connection it dialed. So
between two nodes that talk both ways there are two connections, one per direction, each
reused for everything that goes that way.

Sockets. Between peers on one host (a loopback address) the connection is an abstract
Unix-domain socket named after the listener's TCP address (`local_name`), which a transport
on loopback listens on besides its TCP port; dialers try it first and fall back to TCP.
Across hosts, and with TLS, it is TCP. `KEELDB_PEER_SOCKETS=tcp` turns Unix sockets off.

Backpressure. Each peer has a send queue bounded in frames and bytes. A one-way message
that does not fit is dropped (and counted): consensus tolerates loss and resends what
matters, and a slow peer must not make the sender's memory grow. A call waits for room,
within its timeout. Messages to a peer whose last connection attempt failed are dropped at
once, and a call to it first tries one fresh connection within its timeout.

Handlers. `register(channel, handler)` with `async handler(sender, payload) -> reply`, or a
plain function of the same arguments (called directly, with no task or coroutine: the cheap
path for the one-way messages of consensus). One-way messages of a connection are handled
one at a time, in the order sent, as the socket delivers them (a connection a peer dialed is
read by protocol callbacks, not a stream and a task); a handler that awaits holds up the
messages behind it and pauses reading the connection until it is done, so they should be
quick, and a slow one pushes back on its sender through the socket; calls run
concurrently, each in its own task, and their replies may overtake each other. An exception
in a call's handler becomes a `RemoteError` at the caller; in a one-way handler it is logged.

Channel names starting with "_" are the transport's own: "_fault" takes fault commands
(see `apply_fault_command`), "_ping" answers "pong". Faults never apply to them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import socket
import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgpack

from keeldb.net import auth
from keeldb.net.faults import FaultCommandError, FaultSwitch
from keeldb.net.framing import (
    BATCH_HEADER_BYTES_MAX,
    FRAME_BYTES_MAX,
    LENGTH,
    LENGTH_BYTES,
    MAC_BYTES,
    FrameDecoder,
    FramingError,
    batch,
    encode_frame,
    open_sealed,
    seal,
)

log = logging.getLogger(__name__)

SEND_QUEUE_FRAMES_MAX = 8192  # frames waiting for one peer's connection, at most
SEND_QUEUE_BYTES_MAX = 64 * 1024 * 1024  # ... and their bytes (one snapshot fits)
WRITE_BATCH_BYTES_MAX = 1024 * 1024  # messages joined into one frame (one MAC), at most
WRITE_BUFFER_BYTES_MAX = 256 * 1024  # unsent bytes in a connection's socket buffer past
# which new frames wait for it to drain (in the connection's task) instead of piling up
# (a single larger message still goes alone in its frame)
FRAME_OVERHEAD_BYTES = MAC_BYTES + BATCH_HEADER_BYTES_MAX  # what a frame adds to a message
HANDSHAKE_FRAME_BYTES_MAX = 4096  # a handshake message, at most: a stranger gets no more
# buffer than this before it has proven the secret
CONNECT_SECONDS_MAX = 5.0  # to open a connection and finish the handshake
BACKOFF_MIN_SECONDS = 0.05  # first wait after a failed connection attempt
BACKOFF_MAX_SECONDS = 1.0  # the wait doubles per failure up to this
READ_CHUNK_BYTES = 256 * 1024  # a dialer reads its replies this much at a time
KEEPALIVE_IDLE_SECONDS = 5  # an idle connection is probed after this long ...
KEEPALIVE_INTERVAL_SECONDS = 2  # ... every this often ...
KEEPALIVE_PROBES = 3  # ... and given up after this many unanswered probes (about 11 s)
CALLS_IN_FLIGHT_MAX = 4096  # calls one inbound connection may have running at once

LOCAL_SOCKETS_ENV = "KEELDB_PEER_SOCKETS"  # "tcp": never Unix-domain sockets (default: on)
LOCAL_NAME_PREFIX = "\0keeldb-peer/"  # abstract Unix-domain names (Linux): no file, gone
# when the socket closes, and scoped to the network namespace as loopback itself is
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

KIND_SEND = 0
KIND_CALL = 1
KIND_REPLY = 2
REPLY_OK = 0
REPLY_ERROR = 1

Handler = Callable[[str, Any], Awaitable[Any] | Any]  # async, or a plain function

_DECODE_ERRORS = (
    ValueError,
    TypeError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
)


class TransportError(Exception):
    """A message or call could not be delivered or answered: an operating error."""


class PeerUnavailable(TransportError):
    """The peer is unknown, cannot be reached, or its connection broke during the call.

    `maybe_delivered` is False when the request surely never left this node (the peer was
    unknown or down, or the connection failed before the request was written): the caller
    may retry it elsewhere as if it was never made. True means it was written to a
    connection that then broke: the peer may have handled it.
    """

    def __init__(self, message: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class CallTimeout(TransportError):
    """No reply within the call's timeout (the peer may still have handled the request)."""


class RemoteError(TransportError):
    """The peer's handler raised; the message names the error."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for node-to-node connections: a context to listen with and one to dial with.

    `from_files` builds the usual mutual-TLS pair: both sides present the node certificate
    and verify the other's against the cluster CA.
    """

    server: ssl.SSLContext
    client: ssl.SSLContext
    server_hostname: str | None = None  # the name dialers verify (None: the peer's host)

    @staticmethod
    def from_files(
        cert_file: Path, key_file: Path, ca_file: Path, server_hostname: str | None = None
    ) -> TlsConfig:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
        server.load_cert_chain(str(cert_file), str(key_file))
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        client.load_cert_chain(str(cert_file), str(key_file))
        return TlsConfig(server, client, server_hostname)


def local_name(host: str, port: int) -> str | None:
    """The abstract Unix-domain socket name a transport listening on loopback `host:port`
    also listens on, or None where there is none (another host, or not Linux).

    Both ends derive it from the TCP address the cluster configuration gives, so nothing
    more needs configuring; the TCP port, bound first, keeps it unique on the host. A
    Unix-domain send costs about half of a loopback TCP one, sender and receiver together
    (no TCP stack on either side), and everything above the socket (handshake, MACs,
    frames, faults) is the same.
    """
    if not sys.platform.startswith("linux"):
        return None
    host = host.strip("[]")
    if host not in _LOOPBACK_HOSTS and not host.startswith("127."):
        return None
    if host == "localhost":
        host = "127.0.0.1"
    return f"{LOCAL_NAME_PREFIX}{host}/{port}"


def _local_sockets_default() -> bool:
    return os.environ.get(LOCAL_SOCKETS_ENV, "").strip().lower() != "tcp"


def _pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _messages(data: bytes) -> list[list[Any]]:
    """The messages of a frame's data (a non-empty msgpack array of non-empty arrays);
    FramingError (or a decode error) for anything else."""
    messages = _unpack(data)
    if not isinstance(messages, list) or not messages:
        raise FramingError("a frame carries a non-empty list of messages")
    for message in messages:
        if not isinstance(message, list) or not message:
            raise FramingError("a message is a non-empty list")
    return messages


def _keep_alive(writer: asyncio.StreamWriter | asyncio.BaseTransport) -> None:
    """Have the kernel probe an idle connection, so that a peer whose host vanished (no
    reset ever comes) is noticed in seconds rather than after TCP's retransmission limit."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family == socket.AF_UNIX:
        return  # a Unix-domain peer is on this host: its death resets the connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system defaults apply
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


async def _open_local(name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, name)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def _read_body(reader: asyncio.StreamReader, bytes_max: int | None = None) -> bytes:
    limit = FRAME_BYTES_MAX if bytes_max is None else bytes_max
    header = await reader.readexactly(LENGTH_BYTES)
    (length,) = LENGTH.unpack(header)
    if length > limit:
        raise FramingError(f"frame length {length} exceeds {limit} bytes")
    return await reader.readexactly(length)


class _Peer:
    """The connection this node dials to one peer, and what waits to go over it."""

    def __init__(self, transport: Transport, node_id: str, host: str, port: int) -> None:
        self.transport = transport
        self.node_id = node_id
        self.host = host
        self.port = port
        self.queue: deque[tuple[bytes, int]] = deque()  # (data, call id or 0)
        self.queue_bytes = 0
        self.written_calls: set[int] = set()  # calls written to the current connection
        self.has_data = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.up = False
        self.failed_attempts = 0  # consecutive failed connection attempts
        self.connected_count = 0  # connections made so far
        self.kick = asyncio.Event()  # cut the backoff short
        self.attempt_waiters: list[asyncio.Future[None]] = []
        self.dropped_full = 0  # one-way messages dropped because the queue was full
        self.dropped_down = 0  # ... because the peer was down
        self.dropped_oversize = 0  # ... because they did not fit in a frame
        self.lost = False  # the current connection broke
        self.frames_sent = 0
        self.messages_sent = 0
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None  # the live connection's, once up
        self.key = b""  # the live connection's sending key ...
        self.sequence = 0  # ... and the number of its next frame
        self.flush_scheduled = False
        self.local = False  # the connection is a Unix-domain one

    @property
    def down(self) -> bool:
        return not self.up and self.failed_attempts > 0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"keeldb-peer-{self.node_id}")

    def full(self, size: int) -> bool:
        return (
            len(self.queue) >= SEND_QUEUE_FRAMES_MAX
            or self.queue_bytes + size > SEND_QUEUE_BYTES_MAX
        )

    def enqueue(self, data: bytes, call_id: int = 0) -> None:
        self.queue.append((data, call_id))
        self.queue_bytes += len(data)
        if self.full(0):
            self.space.clear()
        if not self.flush_scheduled:
            # Everything queued for this peer in the rest of this loop turn, by every group,
            # leaves in one frame at its end, written by the callback itself: no task wakes.
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        writer = self.writer
        if not self.queue or writer is None or self.lost:
            return  # not connected: the connection's task sends the queue once it is
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
            self.has_data.set()  # the socket is backed up: the task writes once it drains
            return
        try:
            self.write_frames(writer)
        except (OSError, RuntimeError) as error:  # the connection is going: the task sees it
            log.info("%s: write to %s failed: %s", self.transport.node_id, self.node_id, error)
            self.has_data.set()

    def write_frames(self, writer: asyncio.StreamWriter) -> None:
        """Write the queue in frames (normally one): one MAC and one length for a whole
        round of messages (every group's, on a node hosting several)."""
        queue = self.queue
        while queue:
            parts: list[bytes] = []
            batch_bytes = 0
            while queue and (
                not parts
                or batch_bytes + len(queue[0][0]) + FRAME_OVERHEAD_BYTES <= FRAME_BYTES_MAX
            ):
                data, call_id = queue.popleft()
                self.queue_bytes -= len(data)
                if call_id:
                    self.written_calls.add(call_id)
                parts.append(data)
                batch_bytes += len(data)
                if batch_bytes >= WRITE_BATCH_BYTES_MAX:
                    break
            writer.write(encode_frame(seal(self.key, self.sequence, batch(parts))))
            self.sequence += 1
            self.frames_sent += 1
            self.messages_sent += len(parts)
        if not self.full(0):
            self.space.set()

    def next_attempt(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.attempt_waiters.append(waiter)
        return waiter

    def _attempt_finished(self) -> None:
        waiters, self.attempt_waiters = self.attempt_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def fail_all(self, reason: str) -> None:
        """The connection is gone: fail the calls waiting on it, drop what was queued."""
        calls, self.calls = self.calls, {}
        written, self.written_calls = self.written_calls, set()
        for call_id, future in calls.items():
            if not future.done():
                future.set_exception(
                    PeerUnavailable(f"{self.node_id}: {reason}", maybe_delivered=call_id in written)
                )
        self.queue.clear()
        self.queue_bytes = 0
        self.space.set()

    async def _back_off(self) -> None:
        """Wait before the next connection attempt, longer after each failed one, or until
        someone kicks the link."""
        backoff = min(BACKOFF_MAX_SECONDS, BACKOFF_MIN_SECONDS * 2 ** (self.failed_attempts - 1))
        try:
            await asyncio.wait_for(self.kick.wait(), backoff * random.uniform(0.5, 1.0))
        except TimeoutError:
            pass
        self.kick.clear()

    async def _run(self) -> None:
        while not self.transport.closed:
            try:
                reader, writer, keys = await asyncio.wait_for(self._connect(), CONNECT_SECONDS_MAX)
            except (OSError, EOFError, TimeoutError, auth.AuthError, FramingError) as error:
                self.up = False
                self.failed_attempts += 1
                if self.failed_attempts == 1 or isinstance(error, auth.AuthError):
                    log.warning(
                        "%s: cannot connect to %s: %s",
                        self.transport.node_id,
                        self.node_id,
                        error or type(error).__name__,
                    )
                self.fail_all(f"cannot connect: {error or type(error).__name__}")
                self._attempt_finished()
                connected = False
            else:
                connected = True
            if not connected:
                # Waited outside the `except` block: compiled, a coroutine suspended inside
                # one would leave its exception current for every other task meanwhile.
                await self._back_off()
                continue
            self.up = True
            self.lost = False
            self.failed_attempts = 0
            self.connected_count += 1
            self.key = keys.send
            self.sequence = 0
            self.writer = writer
            self._attempt_finished()
            replies = asyncio.create_task(self._read_replies(reader, keys.receive))
            try:
                await self._write_until_lost(writer)
            except (OSError, FramingError) as error:
                log.info(
                    "%s: connection to %s lost: %s", self.transport.node_id, self.node_id, error
                )
            finally:
                self.up = False
                self.writer = None
                replies.cancel()
                writer.close()
                self.fail_all("connection lost")

    async def _connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, auth.SessionKeys]:
        transport = self.transport
        tls = transport.tls
        name = local_name(self.host, self.port) if transport.local_sockets else None
        local = None
        if name is not None:
            try:
                local = await _open_local(name)
            except OSError:
                pass  # the peer does not listen there (an older build, or TCP only): TCP
        self.local = local is not None
        if local is not None:
            reader, writer = local
        elif tls is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        else:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=tls.client,
                server_hostname=tls.server_hostname or self.host,
            )
        _keep_alive(writer)
        try:
            nonce = auth.new_nonce()
            writer.write(encode_frame(_pack(auth.hello(transport.node_id, nonce))))
            try:
                challenge = _unpack(await _read_body(reader, HANDSHAKE_FRAME_BYTES_MAX))
            except _DECODE_ERRORS as error:
                raise auth.AuthError(f"malformed challenge: {error}") from None
            except asyncio.IncompleteReadError:
                raise auth.AuthError(f"{self.node_id} closed the connection") from None
            answer, keys = auth.answer_challenge(
                transport.secret, challenge, transport.node_id, nonce, self.node_id
            )
            writer.write(encode_frame(_pack(answer)))
            try:
                welcome = _unpack(await _read_body(reader, HANDSHAKE_FRAME_BYTES_MAX))
            except asyncio.IncompleteReadError:
                raise auth.AuthError(f"{self.node_id} refused our proof") from None
            except _DECODE_ERRORS as error:
                raise auth.AuthError(f"malformed welcome: {error}") from None
            if welcome != ["welcome"]:
                raise auth.AuthError(f"{self.node_id} refused the handshake: {welcome!r}")
        except BaseException:
            writer.close()
            raise
        return reader, writer, keys

    async def _write_until_lost(self, writer: asyncio.StreamWriter) -> None:
        """Send what the loop-turn flush could not (queued before the connection was up,
        or while the socket was backed up), waiting for the socket to drain in between."""
        while True:
            if not self.queue:
                self.has_data.clear()
                await self.has_data.wait()
            if self.lost or self.transport.closed:
                return
            self.write_frames(writer)
            await writer.drain()

    async def _read_replies(self, reader: asyncio.StreamReader, key: bytes) -> None:
        sequence = 0
        decoder = FrameDecoder()
        try:
            while True:
                chunk = await reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    return  # the peer closed the connection
                for body in decoder.feed(chunk):
                    data = open_sealed(key, sequence, body)
                    sequence += 1
                    for message in _messages(data):
                        if len(message) != 4 or message[0] != KIND_REPLY:
                            raise FramingError(f"expected a reply, got {message!r:.80}")
                        _, call_id, status, value = message
                        future = self.calls.pop(call_id, None)
                        if future is None or future.done():
                            continue  # the caller gave up
                        if status == REPLY_OK:
                            future.set_result(value)
                        else:
                            future.set_exception(RemoteError(f"{self.node_id}: {value}"))
        except asyncio.CancelledError:
            raise
        except (OSError, EOFError, FramingError, *_DECODE_ERRORS) as error:
            if not isinstance(error, asyncio.IncompleteReadError):
                log.warning(
                    "%s: bad reply stream from %s: %s", self.transport.node_id, self.node_id, error
                )
        finally:
            self.lost = True
            self.has_data.set()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
        self.fail_all("transport closed")


class _Inbound:
    """A connection a peer dialed to us: its messages come in, our replies go out (the
    replies ready in one turn of the event loop share a frame)."""

    def __init__(self, peer: str, writer: asyncio.WriteTransport, key: bytes) -> None:
        self.peer = peer
        self.writer = writer
        self.key = key
        self.sequence = 0
        self.calls_in_flight = 0
        # The task finishing a one-way handler that awaits (reading is paused meanwhile).
        self.task: asyncio.Task[Any] | None = None
        self._replies: list[bytes] = []
        self._replies_bytes = 0

    def reply(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        if self._replies and self._replies_bytes + len(data) + FRAME_OVERHEAD_BYTES > min(
            FRAME_BYTES_MAX, WRITE_BATCH_BYTES_MAX
        ):
            self._flush()
        if not self._replies:
            asyncio.get_running_loop().call_soon(self._flush)
        self._replies.append(data)
        self._replies_bytes += len(data)

    def _flush(self) -> None:
        replies, self._replies = self._replies, []
        self._replies_bytes = 0
        if not replies or self.writer.is_closing():
            return
        self.writer.write(encode_frame(seal(self.key, self.sequence, batch(replies))))
        self.sequence += 1


class _InboundProtocol(asyncio.Protocol):
    """A connection a peer dialed to us, read by callbacks rather than a stream and a task:
    the handshake first (a task awaits its frames), then each chunk the socket gives is cut
    into frames, each frame verified whole, and its messages handled at once, in order,
    with no stream buffer and no task woken per chunk. A one-way handler that returns an
    awaitable holds up the messages behind it: reading pauses until it is done, so a slow
    handler pushes back on the sender through the socket."""

    def __init__(self, owner: Transport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
        self.inbound: _Inbound | None = None  # set once the peer has proven itself
        self.key = b""  # the receiving key, then
        self.sequence = 0  # and the number of the next frame
        # Before that: the handshake's frames, and who waits for them.
        self.handshake_bodies: deque[bytes] = deque()
        self.handshake_error: BaseException | None = None
        self.handshake_waiter: asyncio.Future[None] | None = None
        # Frames not yet handled, and the messages of the frame being handled.
        self.bodies: deque[bytes] = deque()
        self.messages: deque[list[Any]] = deque()
        self.holding = False  # a one-way handler awaits: the rest waits for it
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports have the methods of asyncio.Transport, not the class)
        self.transport = cast(asyncio.Transport, transport)
        self.owner._spawn(self._handshake())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake_handshake()
        inbound = self.inbound
        if inbound is not None:
            self.owner._inbound.discard(inbound)
            if inbound.task is not None:
                inbound.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
        except FramingError as error:
            if self.inbound is None:
                self.handshake_error = error
                self._wake_handshake()
            else:
                self._drop(error)
            return
        if self.inbound is None:
            self.handshake_bodies.extend(bodies)
            self._wake_handshake()
            return
        self.bodies.extend(bodies)
        if not self.holding:
            self._handle_queued()

    # --- the handshake -------------------------------------------------------------------

    def _wake_handshake(self) -> None:
        waiter = self.handshake_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _handshake_message(self) -> Any:
        while not self.handshake_bodies:
            if self.handshake_error is not None:
                raise self.handshake_error
            if self.lost:
                raise EOFError("the peer closed the connection")
            self.handshake_waiter = asyncio.get_running_loop().create_future()
            await self.handshake_waiter
        try:
            return _unpack(self.handshake_bodies.popleft())
        except _DECODE_ERRORS as error:
            raise auth.AuthError(f"malformed handshake: {error}") from None

    async def _handshake(self) -> None:
        owner = self.owner
        transport = self.transport
        assert transport is not None
        try:
            await asyncio.wait_for(self._prove(transport), CONNECT_SECONDS_MAX)
        except (OSError, EOFError, TimeoutError, auth.AuthError, FramingError) as error:
            owner.refused_count += 1
            log.warning(
                "%s: refused a connection: %s", owner.node_id, error or type(error).__name__
            )
            transport.close()
        except asyncio.CancelledError:
            transport.close()  # the transport closes
            raise

    async def _prove(self, transport: asyncio.Transport) -> None:
        owner = self.owner
        dialer, dialer_nonce = auth.parse_hello(await self._handshake_message())
        nonce = auth.new_nonce()
        transport.write(
            encode_frame(
                _pack(auth.challenge(owner.secret, dialer, dialer_nonce, owner.node_id, nonce))
            )
        )
        answer = await self._handshake_message()
        keys = auth.check_auth(owner.secret, answer, dialer, dialer_nonce, owner.node_id, nonce)
        if self.lost or owner.closed:
            raise EOFError("the connection closed during the handshake")
        # Proven: from here on frames are sealed and may be large. Switched before the
        # welcome leaves, so that nothing the dialer sends after it is read the old way.
        _keep_alive(transport)
        self.key = keys.receive
        self.decoder.set_limit(FRAME_BYTES_MAX)
        self.inbound = _Inbound(dialer, transport, keys.send)
        owner._inbound.add(self.inbound)
        transport.write(encode_frame(_pack(["welcome"])))
        if self.handshake_bodies:  # sent early (it should wait for the welcome): in order
            self.bodies.extend(self.handshake_bodies)
            self.handshake_bodies.clear()
            self._handle_queued()

    # --- messages ------------------------------------------------------------------------

    def _drop(self, error: BaseException) -> None:
        inbound = self.inbound
        log.warning(
            "%s: dropping the connection from %s: %s",
            self.owner.node_id,
            inbound.peer if inbound is not None else "an unproven peer",
            error,
        )
        assert self.transport is not None
        self.transport.close()
        self.lost = True  # nothing more of this connection is handled
        self.bodies.clear()
        self.messages.clear()

    def _handle_queued(self) -> None:
        """Handle the queued messages and frames in order, until a one-way handler awaits
        (the rest then waits for it) or none is left."""
        try:
            messages = self.messages
            bodies = self.bodies
            while True:
                while messages:
                    awaiting = self._handle(messages.popleft())
                    if awaiting is not None:
                        self._hold(awaiting)
                        return
                if not bodies or self.lost:
                    break
                data = open_sealed(self.key, self.sequence, bodies.popleft())
                self.sequence += 1
                messages.extend(_messages(data))
        except (FramingError, *_DECODE_ERRORS) as error:
            self._drop(error)
            return
        if self.holding:
            self.holding = False
            assert self.inbound is not None
            self.inbound.task = None
            if self.transport is not None and not self.lost:
                self.transport.resume_reading()

    def _hold(self, awaiting: Awaitable[Any]) -> None:
        assert self.inbound is not None and self.transport is not None
        if not self.holding:
            self.holding = True
            self.transport.pause_reading()
        self.inbound.task = asyncio.ensure_future(self._finish(awaiting))

    async def _finish(self, awaiting: Awaitable[Any]) -> None:
        try:
            await awaiting
        except asyncio.CancelledError:
            raise
        except Exception:  # a handler's bug must not kill the link
            log.exception("%s: a one-way handler failed", self.owner.node_id)
        if not self.lost:
            self._handle_queued()

    def _handle(self, message: list[Any]) -> Awaitable[Any] | None:
        """Handle one message; the awaitable a one-way handler returned, if any."""
        owner = self.owner
        inbound = self.inbound
        assert inbound is not None
        kind = message[0]
        if kind == KIND_SEND and len(message) == 3:
            _, channel, payload = message
            if not isinstance(channel, str):
                raise FramingError("channel names are strings")
            if owner.faults.active and owner._blocked_from(inbound.peer, channel):
                return None
            handler = owner._handlers.get(channel)
            if handler is None:
                return None
            try:
                result = handler(inbound.peer, payload)
            except Exception:  # a handler's bug must not kill the link
                log.exception("%s: handler for %r failed", owner.node_id, channel)
                return None
            if result is not None and inspect.isawaitable(result):
                return result
            return None
        if kind == KIND_CALL and len(message) == 4:
            _, call_id, channel, payload = message
            if not isinstance(channel, str) or not isinstance(call_id, int):
                raise FramingError("malformed call")
            if owner.faults.active and owner._blocked_from(inbound.peer, channel):
                return None
            if inbound.calls_in_flight >= CALLS_IN_FLIGHT_MAX:
                inbound.reply(_pack([KIND_REPLY, call_id, REPLY_ERROR, "busy"]))
                return None
            inbound.calls_in_flight += 1
            owner._spawn(owner._serve_call(inbound, call_id, channel, payload))
            return None
        raise FramingError(f"unexpected message kind {kind!r}")


class Transport:
    """One node's endpoint: listens for its peers and dials them."""

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        secret: bytes,
        *,
        tls: TlsConfig | None = None,
        faults: FaultSwitch | None = None,
        local_sockets: bool | None = None,
    ) -> None:
        auth.check_secret(secret)
        self.node_id = node_id
        self.host = host
        self.port = port
        self.secret = secret
        self.tls = tls
        self.faults = faults if faults is not None else FaultSwitch()
        # Peers on this host over Unix-domain sockets (not with TLS: its certificates name
        # hosts); None: on unless KEELDB_PEER_SOCKETS=tcp.
        if local_sockets is None:
            local_sockets = _local_sockets_default()
        self.local_sockets = local_sockets and tls is None
        self._local_server: asyncio.base_events.Server | None = None
        self.closed = False
        self._handlers: dict[str, Handler] = {
            "_fault": self._on_fault_command,
            "_ping": self._on_ping,
        }
        self._peers: dict[str, _Peer] = {}
        self._send_heads: dict[str, bytes] = {}  # a one-way message's bytes before its payload
        self._inbound: set[_Inbound] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_call_id = 0
        self.refused_count = 0  # inbound connections that failed the handshake

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the bound port (useful when constructed with port 0)."""
        assert self._server is None
        self._server = await asyncio.get_running_loop().create_server(
            self._inbound_protocol,
            self.host,
            self.port,
            ssl=self.tls.server if self.tls is not None else None,
        )
        listening: Any = self._server  # uvloop gives a list where typeshed says tuple
        self.port = listening.sockets[0].getsockname()[1]
        if self.local_sockets:
            await self._listen_locally()
        return self.port

    async def _listen_locally(self) -> None:
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        name = local_name(host, self.port)
        if name is None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(name)
            sock.listen(128)
            sock.setblocking(False)
            self._local_server = await asyncio.get_running_loop().create_unix_server(
                self._inbound_protocol, sock=sock
            )
        except OSError as error:  # taken (another namespace's stale name?): TCP only
            sock.close()
            log.warning("%s: no Unix-domain socket %r: %s", self.node_id, name[1:], error)

    @property
    def local_listening(self) -> bool:
        """Whether peers on this host may reach this node over a Unix-domain socket."""
        return self._local_server is not None

    async def close(self) -> None:
        """Stop listening, close every connection, fail every call in flight. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
        if self._local_server is not None:
            self._local_server.close()
        for peer in list(self._peers.values()):
            await peer.close()
        serving = []
        for inbound in list(self._inbound):
            inbound.writer.close()
            if inbound.task is not None and inbound.task is not asyncio.current_task():
                inbound.task.cancel()
                serving.append(inbound.task)
        if serving:
            await asyncio.gather(*serving, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._local_server is not None:
            await self._local_server.wait_closed()

    # --- peers and handlers --------------------------------------------------------------

    def add_peer(self, node_id: str, host: str, port: int) -> None:
        """Know where `node_id` listens (replacing an older address). The connection is
        dialed at once and kept open."""
        old = self._peers.get(node_id)
        if old is not None:
            if (old.host, old.port) == (host, port):
                return
            self._spawn(old.close())
        peer = _Peer(self, node_id, host, port)
        self._peers[node_id] = peer
        peer.start()

    def remove_peer(self, node_id: str) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is not None:
            self._spawn(peer.close())

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(sorted(self._peers))

    def register(self, channel: str, handler: Handler) -> None:
        assert not channel.startswith("_"), "channels starting with '_' are the transport's"
        assert channel not in self._handlers, f"channel {channel!r} is already registered"
        self._handlers[channel] = handler

    def unregister(self, channel: str) -> None:
        assert not channel.startswith("_")
        self._handlers.pop(channel, None)

    def is_connected(self, node_id: str) -> bool:
        peer = self._peers.get(node_id)
        return peer is not None and peer.up

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "port": self.port,
            "refused": self.refused_count,
            "faults": self.faults.status(),
            "peers": {
                node_id: {
                    "up": peer.up,
                    "connections": peer.connected_count,
                    "queued": len(peer.queue),
                    "dropped_full": peer.dropped_full,
                    "dropped_down": peer.dropped_down,
                    "dropped_oversize": peer.dropped_oversize,
                    "frames_sent": peer.frames_sent,
                    "socket": "unix" if peer.local else "tcp",
                    "messages_sent": peer.messages_sent,
                }
                for node_id, peer in sorted(self._peers.items())
            },
        }

    # --- sending -------------------------------------------------------------------------

    def _sendable(self, node_id: str) -> _Peer | None:
        """The peer a one-way message may go to now (None: unknown, closed, or down, which
        counts the drop)."""
        peer = self._peers.get(node_id)
        if peer is None or self.closed:
            return None
        if peer.down:
            peer.dropped_down += 1
            return None
        return peer

    def send(self, node_id: str, channel: str, payload: Any) -> bool:
        """Send a one-way message; False when it was dropped (unknown or down peer, full
        queue, or an injected fault). Never blocks."""
        peer = self._sendable(node_id)
        if peer is None:
            return False
        return self._send_data(peer, channel, _pack([KIND_SEND, channel, payload]))

    def send_packed(self, node_id: str, channel: str, payload: bytes) -> bool:
        """`send` of a payload given already msgpack-encoded (exactly one msgpack object,
        e.g. `msgpack.packb(value)`): the receiver's handler gets the decoded value, as from
        `send`. For one payload sent to several peers, or built from parts packed once."""
        peer = self._sendable(node_id)
        if peer is None:
            return False
        head = self._send_heads.get(channel)
        if head is None:
            # A message [KIND_SEND, channel, payload]: a three-item array header, the kind
            # (a positive fixint) and the channel, then the payload's own bytes.
            assert 0 <= KIND_SEND < 0x80
            head = self._send_heads[channel] = bytes([0x93, KIND_SEND]) + _pack(channel)
        return self._send_data(peer, channel, head + payload)

    def _send_data(self, peer: _Peer, channel: str, data: bytes) -> bool:
        node_id = peer.node_id
        if len(data) + FRAME_OVERHEAD_BYTES > FRAME_BYTES_MAX:
            peer.dropped_oversize += 1
            log.error(
                "%s: dropped a %d-byte message to %s on %r: frames hold at most %d bytes",
                self.node_id,
                len(data),
                node_id,
                channel,
                FRAME_BYTES_MAX,
            )
            return False
        if peer.full(len(data)):
            peer.dropped_full += 1
            return False
        faults = self.faults
        if faults.active and not channel.startswith("_"):
            if faults.drops(self.node_id, node_id):
                return False
            if faults.delay_seconds > 0:
                asyncio.get_running_loop().call_later(
                    faults.delay_seconds, self._enqueue_late, peer, data
                )
                return True
        peer.enqueue(data)
        return True

    def flush_now(self) -> None:
        """Write now what every peer queued for the end of this loop turn (for a caller
        that has finished a batch of sends: the callback that would write them waits
        behind the rest of the turn)."""
        for peer in self._peers.values():
            if peer.flush_scheduled:
                peer._flush()

    def _enqueue_late(self, peer: _Peer, data: bytes, call_id: int = 0) -> None:
        if not self.closed and not peer.down and not peer.full(len(data)):
            peer.enqueue(data, call_id)

    async def call(self, node_id: str, channel: str, payload: Any, timeout_seconds: float) -> Any:
        """Send a request and wait for its reply. Raises PeerUnavailable (unknown peer, it
        cannot be reached, or the connection broke before the reply), CallTimeout, or
        RemoteError (its handler raised)."""
        peer = self._peers.get(node_id)
        if peer is None:
            raise PeerUnavailable(f"unknown peer {node_id!r}")
        if self.closed:
            raise PeerUnavailable("the transport is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        if peer.down:
            # Its last connection attempt failed: try once more now, within the timeout.
            attempt = peer.next_attempt()
            peer.kick.set()
            try:
                await asyncio.wait_for(attempt, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise PeerUnavailable(f"{node_id} is unreachable") from None
            if not peer.up:
                raise PeerUnavailable(f"{node_id} is unreachable")
        self._next_call_id += 1
        call_id = self._next_call_id
        data = _pack([KIND_CALL, call_id, channel, payload])
        if len(data) + FRAME_OVERHEAD_BYTES > FRAME_BYTES_MAX:
            raise ValueError(f"call payload of {len(data)} bytes exceeds {FRAME_BYTES_MAX}")
        future: asyncio.Future[Any] = loop.create_future()
        try:
            while peer.full(len(data)):
                peer.space.clear()
                await asyncio.wait_for(peer.space.wait(), max(0.0, deadline - loop.time()))
            faults = self.faults
            lost = False
            if faults.active and not channel.startswith("_"):
                lost = faults.drops(self.node_id, node_id)
            if not lost:
                peer.calls[call_id] = future
                if faults.delay_seconds > 0 and not channel.startswith("_"):
                    loop.call_later(faults.delay_seconds, self._enqueue_late, peer, data, call_id)
                else:
                    peer.enqueue(data, call_id)
            return await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise CallTimeout(
                f"no reply from {node_id} on {channel!r} within {timeout_seconds} s"
            ) from None
        finally:
            peer.calls.pop(call_id, None)
            peer.written_calls.discard(call_id)

    # --- receiving -----------------------------------------------------------------------

    def _inbound_protocol(self) -> _InboundProtocol:
        return _InboundProtocol(self)

    async def _serve_call(
        self, inbound: _Inbound, call_id: int, channel: str, payload: Any
    ) -> None:
        try:
            handler = self._handlers.get(channel)
            if handler is None:
                reply = [KIND_REPLY, call_id, REPLY_ERROR, f"no handler for channel {channel!r}"]
            else:
                try:
                    result = handler(inbound.peer, payload)
                    if inspect.isawaitable(result):
                        result = await result
                    reply = [KIND_REPLY, call_id, REPLY_OK, result]
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - reported to the caller
                    reply = [KIND_REPLY, call_id, REPLY_ERROR, f"{type(error).__name__}: {error}"]
            try:
                data = _pack(reply)
            except (TypeError, ValueError) as error:
                data = _pack([KIND_REPLY, call_id, REPLY_ERROR, f"unencodable reply: {error}"])
            if len(data) + FRAME_OVERHEAD_BYTES > FRAME_BYTES_MAX:
                data = _pack([KIND_REPLY, call_id, REPLY_ERROR, "reply larger than a frame"])
            faults = self.faults
            if (
                faults.active
                and not channel.startswith("_")
                and faults.drops(self.node_id, inbound.peer)
            ):
                return
            inbound.reply(data)
        finally:
            inbound.calls_in_flight -= 1

    def _blocked_from(self, peer: str, channel: str) -> bool:
        """Whether a message from `peer` on `channel` is lost to a partition (counted)."""
        faults = self.faults
        if (
            not faults.active
            or channel.startswith("_")
            or not faults.is_blocked(peer, self.node_id)
        ):
            return False
        faults.dropped_count += 1
        return True

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- fault control -------------------------------------------------------------------

    async def apply_fault_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """Change this node's fault switch (see `FaultSwitch.apply_command`); returns its
        status. Raises FaultCommandError for a command it does not understand."""
        return self.faults.apply_command(command)

    async def _on_fault_command(self, sender: str, payload: Any) -> dict[str, Any]:
        try:
            return await self.apply_fault_command(payload)
        except FaultCommandError as error:
            return {"error": str(error)}

    async def _on_ping(self, sender: str, payload: Any) -> str:
        return "pong"
