"""The node-to-node transport on real loopback sockets: authentication, framing, calls,
reconnects, backpressure, faults and TLS."""

from __future__ import annotations

import asyncio
import datetime
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import uvloop

from keeldb.net import auth
from keeldb.net import transport as transport_module
from keeldb.net.framing import encode_frame, seal
from keeldb.net.transport import (
    CallTimeout,
    PeerUnavailable,
    RemoteError,
    TlsConfig,
    Transport,
)

SECRET = b"cluster-secret-for-tests-0123456789"
TEST_SECONDS_MAX = 20.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TEST_SECONDS_MAX)

    asyncio.run(bounded())


async def pair(
    secret_a: bytes = SECRET, secret_b: bytes = SECRET, **kwargs: Any
) -> tuple[Transport, Transport]:
    a = Transport("a", "127.0.0.1", 0, secret_a, **kwargs)
    b = Transport("b", "127.0.0.1", 0, secret_b, **kwargs)
    await a.start()
    await b.start()
    a.add_peer("b", "127.0.0.1", b.port)
    b.add_peer("a", "127.0.0.1", a.port)
    return a, b


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_call_returns_the_handlers_reply_and_one_way_messages_arrive_in_order() -> None:
    async def body() -> None:
        a, b = await pair(local_sockets=False)  # TCP, whose keepalive is checked below
        got: list[Any] = []

        async def handler(sender: str, payload: Any) -> Any:
            got.append((sender, payload))
            return {"echo": payload}

        b.register("ch", handler)
        assert await a.call("b", "ch", [1, b"\x00bytes", "s"], 5) == {
            "echo": [1, b"\x00bytes", "s"]
        }
        for i in range(500):
            assert a.send("b", "ch", i)
        await eventually(lambda: len(got) == 501)
        assert [p for _, p in got[1:]] == list(range(500))
        assert {s for s, _ in got} == {"a"}
        # The kernel probes the connection, so a vanished host is noticed in seconds.
        dialed = a._peers["b"].writer
        assert dialed is not None
        sock = dialed.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        await a.close()
        await b.close()

    run(body)


def test_concurrent_calls_are_matched_to_their_own_replies() -> None:
    async def body() -> None:
        a, b = await pair()

        async def slow_echo(sender: str, payload: int) -> int:
            await asyncio.sleep((payload % 5) * 0.01)  # replies overtake each other
            return payload * 2

        b.register("echo", slow_echo)
        replies = await asyncio.gather(*(a.call("b", "echo", i, 5) for i in range(200)))
        assert replies == [i * 2 for i in range(200)]
        await a.close()
        await b.close()

    run(body)


def test_a_handler_error_reaches_the_caller_as_remote_error() -> None:
    async def body() -> None:
        a, b = await pair()

        async def broken(sender: str, payload: Any) -> Any:
            raise KeyError("missing")

        b.register("broken", broken)
        with pytest.raises(RemoteError, match="KeyError"):
            await a.call("b", "broken", None, 5)
        with pytest.raises(RemoteError, match="no handler for channel 'nothing'"):
            await a.call("b", "nothing", None, 5)
        assert await a.call("b", "_ping", None, 5) == "pong"  # the connection survived
        await a.close()
        await b.close()

    run(body)


def test_a_node_with_the_wrong_secret_is_refused_and_its_messages_never_handled() -> None:
    async def body() -> None:
        a, b = await pair(secret_a=b"another-secret-0123456789abcdef")
        handled: list[Any] = []

        async def handler(sender: str, payload: Any) -> Any:
            handled.append(payload)
            return "reached"

        b.register("ch", handler)
        with pytest.raises(PeerUnavailable, match="does not know the cluster secret"):
            await a.call("b", "ch", "x", 5)
        a.send("b", "ch", "y")
        a.register("ch", handler)
        with pytest.raises(PeerUnavailable):
            await b.call("a", "ch", "z", 5)
        await asyncio.sleep(0.2)
        assert handled == []
        assert b.refused_count >= 1 and a.refused_count >= 1
        assert not a.is_connected("b") and not b.is_connected("a")
        await a.close()
        await b.close()

    run(body)


def test_garbage_and_oversized_lengths_on_the_listening_port_are_refused() -> None:
    async def body() -> None:
        b = Transport("b", "127.0.0.1", 0, SECRET)
        await b.start()
        # Before the handshake a frame may not exceed a few KiB (no buffering for strangers).
        oversized_hello = (5000).to_bytes(4, "big") + b"x" * 10
        for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\xff\xff\xff\xff" + b"x" * 10, oversized_hello):
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            writer.write(junk)
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed on us
            # At once, not after the handshake timeout (5 s) waiting for a body never sent.
            assert time.monotonic() - started < 3
            writer.close()
        await eventually(lambda: b.refused_count == 3)
        await b.close()

    run(body)


def test_a_frame_with_a_bad_mac_after_the_handshake_closes_the_connection_unhandled() -> None:
    async def body() -> None:
        b = Transport("b", "127.0.0.1", 0, SECRET)
        await b.start()
        handled: list[Any] = []

        async def handler(sender: str, payload: Any) -> None:
            handled.append(payload)

        b.register("ch", handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)

        async def body_of_next_frame() -> Any:
            length = int.from_bytes(await reader.readexactly(4), "big")
            return msgpack.unpackb(await reader.readexactly(length), raw=False)

        nonce = auth.new_nonce()
        writer.write(encode_frame(msgpack.packb(auth.hello("intruder", nonce))))
        answer, keys = auth.answer_challenge(
            SECRET, await body_of_next_frame(), "intruder", nonce, "b"
        )
        writer.write(encode_frame(msgpack.packb(answer)))
        assert await body_of_next_frame() == ["welcome"]
        good = msgpack.packb([[0, "ch", "first"]])
        writer.write(encode_frame(seal(keys.send, 0, good)))
        forged = msgpack.packb([[0, "ch", "forged"]])
        writer.write(encode_frame(seal(b"\0" * 32, 1, forged)))
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert handled == ["first"]
        writer.close()
        await b.close()

    run(body)


def test_the_dialer_reconnects_after_the_peer_restarts_on_the_same_port() -> None:
    async def body() -> None:
        a, b = await pair()

        async def echo(sender: str, payload: Any) -> Any:
            return payload

        b.register("echo", echo)
        assert await a.call("b", "echo", 1, 5) == 1
        port = b.port
        await b.close()
        with pytest.raises(PeerUnavailable):
            await a.call("b", "echo", 2, 5)
        # Once a connection attempt has failed, one-way messages are dropped at once.
        await eventually(lambda: not a.send("b", "echo", 3))
        b2 = Transport("b", "127.0.0.1", port, SECRET)
        await b2.start()
        b2.register("echo", echo)
        await eventually(lambda: a.is_connected("b"), 10)
        assert await a.call("b", "echo", 4, 5) == 4
        assert a.stats()["peers"]["b"]["connections"] == 2
        await a.close()
        await b2.close()

    run(body)


def test_a_call_to_an_address_where_nothing_listens_fails_fast_as_unavailable() -> None:
    async def body() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        a = Transport("a", "127.0.0.1", 0, SECRET)
        await a.start()
        a.add_peer("b", "127.0.0.1", port)
        started = time.monotonic()
        with pytest.raises(PeerUnavailable):
            await a.call("b", "x", None, 10)
        with pytest.raises(PeerUnavailable, match="unknown peer"):
            await a.call("nobody", "x", None, 10)
        assert time.monotonic() - started < 5
        await a.close()

    run(body)


@pytest.mark.parametrize("local", [True, False], ids=["unix", "tcp"])
def test_a_full_send_queue_drops_one_way_messages_and_calls_time_out(
    monkeypatch: pytest.MonkeyPatch, local: bool
) -> None:
    monkeypatch.setattr(transport_module, "SEND_QUEUE_FRAMES_MAX", 32)

    async def body() -> None:
        a, b = await pair(local_sockets=local)
        assert await a.call("b", "_ping", None, 5) == "pong"
        assert a.stats()["peers"]["b"]["socket"] == ("unix" if local else "tcp")
        release = asyncio.Event()
        received: list[int] = []

        async def stuck(sender: str, payload: Any) -> None:
            received.append(len(payload))
            await release.wait()  # the receiver stops reading: TCP buffers fill up

        b.register("stuck", stuck)
        assert await a.call("b", "_ping", None, 5) == "pong"
        blob = b"x" * 65536
        accepted = 0
        for _ in range(200):
            accepted += a.send("b", "stuck", blob)
            await asyncio.sleep(0)
        deadline = time.monotonic() + 10
        while a.stats()["peers"]["b"]["dropped_full"] == 0 and time.monotonic() < deadline:
            a.send("b", "stuck", blob)
            await asyncio.sleep(0.01)
        assert a.stats()["peers"]["b"]["dropped_full"] > 0
        assert a.stats()["peers"]["b"]["queued"] <= 32
        with pytest.raises(CallTimeout):
            await a.call("b", "_ping", None, 0.5)
        release.set()
        await eventually(lambda: a.stats()["peers"]["b"]["queued"] == 0, 10)
        assert await a.call("b", "_ping", None, 5) == "pong"
        assert 0 < len(received) <= accepted + 200
        await a.close()
        await b.close()

    run(body)


@pytest.mark.parametrize("local", [True, False], ids=["unix", "tcp"])
def test_partition_on_one_node_cuts_both_directions_until_healed_from_outside(local: bool) -> None:
    async def body() -> None:
        a, b = await pair(local_sockets=local)
        got: list[Any] = []

        async def handler(sender: str, payload: Any) -> Any:
            got.append(payload)
            return "ok"

        a.register("ch", handler)
        b.register("ch", handler)
        status = await b.apply_fault_command({"op": "partition", "groups": [["b"], ["a"]]})
        assert ["a", "b"] in status["blocked"]
        a.send("b", "ch", "a->b")
        b.send("a", "ch", "b->a")
        with pytest.raises(CallTimeout):
            await a.call("b", "ch", "call a->b", 0.5)
        with pytest.raises(CallTimeout):
            await b.call("a", "ch", "call b->a", 0.5)
        await asyncio.sleep(0.1)
        assert got == []
        # The transport's own channels are never faulted: heal b from a.
        status = await a.call("b", "_fault", {"op": "heal"}, 5)
        assert status["blocked"] == [] and status["dropped"] >= 4
        assert await a.call("b", "ch", "after", 5) == "ok"
        assert await b.call("a", "ch", "after", 5) == "ok"
        await a.close()
        await b.close()

    run(body)


@pytest.mark.parametrize("local", [True, False], ids=["unix", "tcp"])
def test_drop_and_delay_faults_apply_to_ordinary_channels(local: bool) -> None:
    async def body() -> None:
        a, b = await pair(local_sockets=local)
        got: list[Any] = []

        async def handler(sender: str, payload: Any) -> Any:
            got.append(payload)
            return payload

        b.register("ch", handler)
        assert await a.call("b", "ch", 0, 5) == 0
        await a.apply_fault_command({"op": "drop", "probability": 1.0})
        for i in range(20):
            a.send("b", "ch", i)
        await asyncio.sleep(0.2)
        assert got == [0]
        await a.apply_fault_command({"op": "heal"})
        await a.apply_fault_command({"op": "delay", "seconds": 0.3})
        started = time.monotonic()
        assert await a.call("b", "ch", 1, 5) == 1
        assert time.monotonic() - started >= 0.3
        reply = await a.call("b", "_fault", {"op": "bogus"}, 5)
        assert "unknown fault command" in reply["error"]
        await a.close()
        await b.close()

    run(body)


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test cluster CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keeldb-node")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("keeldb-node")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "node.pem",
        directory / "node.key",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca_file


def test_tls_connections_carry_calls_and_a_plain_dialer_is_refused(tmp_path: Path) -> None:
    cert_file, key_file, ca_file = _make_certificates(tmp_path)
    tls = TlsConfig.from_files(cert_file, key_file, ca_file, server_hostname="keeldb-node")

    async def body() -> None:
        a, b = await pair(tls=tls)

        async def echo(sender: str, payload: Any) -> Any:
            return [sender, payload]

        b.register("echo", echo)
        assert await a.call("b", "echo", b"over tls", 5) == ["a", b"over tls"]
        plain = Transport("c", "127.0.0.1", 0, SECRET)
        await plain.start()
        plain.add_peer("b", "127.0.0.1", b.port)
        with pytest.raises(PeerUnavailable):
            await plain.call("b", "echo", "x", 5)
        await plain.close()
        await a.close()
        await b.close()

    run(body)


def test_unavailable_says_whether_a_call_may_have_reached_the_peer() -> None:
    async def body() -> None:
        a, b = await pair()
        entered = asyncio.Event()

        async def hang(sender: str, payload: Any) -> None:
            entered.set()
            await asyncio.sleep(60)

        b.register("hang", hang)
        pending = asyncio.ensure_future(a.call("b", "hang", None, 10))
        await entered.wait()
        await b.close()  # the connection breaks with the request handled
        with pytest.raises(PeerUnavailable) as in_flight:
            await pending
        assert in_flight.value.maybe_delivered
        await eventually(lambda: not a.send("b", "hang", None))
        with pytest.raises(PeerUnavailable) as never_sent:
            await a.call("b", "hang", None, 5)
        assert not never_sent.value.maybe_delivered
        await a.close()

    run(body)


def test_a_message_larger_than_a_frame_is_dropped_without_breaking_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "FRAME_BYTES_MAX", 4096)

    async def body() -> None:
        a, b = await pair()

        async def echo(sender: str, payload: Any) -> Any:
            return payload

        async def big(sender: str, payload: Any) -> Any:
            return b"y" * 8192

        b.register("echo", echo)
        b.register("big", big)
        assert await a.call("b", "echo", b"small", 5) == b"small"
        assert not a.send("b", "echo", b"x" * 8192)
        assert a.stats()["peers"]["b"]["dropped_oversize"] == 1
        with pytest.raises(ValueError, match="exceeds"):
            await a.call("b", "echo", b"x" * 8192, 5)
        with pytest.raises(RemoteError, match="reply larger than a frame"):
            await a.call("b", "big", None, 5)
        assert await a.call("b", "echo", b"still", 5) == b"still"
        assert a.stats()["peers"]["b"]["connections"] == 1
        await a.close()
        await b.close()

    run(body)


@pytest.mark.parametrize("local", [True, False], ids=["unix", "tcp"])
def test_messages_queued_in_one_turn_share_a_frame_and_arrive_in_order(local: bool) -> None:
    async def body() -> None:
        a, b = await pair(local_sockets=local)
        got: list[Any] = []

        async def handler(sender: str, payload: Any) -> None:
            got.append(payload)

        async def echo(sender: str, payload: Any) -> Any:
            return payload

        b.register("ch", handler)
        b.register("echo", echo)
        assert await a.call("b", "echo", "up", 5) == "up"  # connected
        before = a.stats()["peers"]["b"]
        for i in range(200):
            assert a.send("b", "ch", i)
        replies = await asyncio.gather(*(a.call("b", "echo", i, 5) for i in range(50)))
        await eventually(lambda: len(got) == 200)
        assert got == list(range(200))
        assert replies == list(range(50))
        after = a.stats()["peers"]["b"]
        messages = after["messages_sent"] - before["messages_sent"]
        frames = after["frames_sent"] - before["frames_sent"]
        assert messages == 250
        assert 1 <= frames < 10  # one frame per round, not one per message
        await a.close()
        await b.close()

    run(body)


def test_a_frame_whose_batch_holds_a_malformed_message_closes_the_connection() -> None:
    async def body() -> None:
        b = Transport("b", "127.0.0.1", 0, SECRET)
        await b.start()
        handled: list[Any] = []

        async def handler(sender: str, payload: Any) -> None:
            handled.append(payload)

        b.register("ch", handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)

        async def body_of_next_frame() -> Any:
            length = int.from_bytes(await reader.readexactly(4), "big")
            return msgpack.unpackb(await reader.readexactly(length), raw=False)

        nonce = auth.new_nonce()
        writer.write(encode_frame(msgpack.packb(auth.hello("peer", nonce))))
        answer, keys = auth.answer_challenge(SECRET, await body_of_next_frame(), "peer", nonce, "b")
        writer.write(encode_frame(msgpack.packb(answer)))
        assert await body_of_next_frame() == ["welcome"]
        writer.write(encode_frame(seal(keys.send, 0, msgpack.packb([[0, "ch", "first"]]))))
        writer.write(encode_frame(seal(keys.send, 1, msgpack.packb([[0, "ch", "x"], 7]))))
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert handled == ["first"]
        writer.close()
        await b.close()

    run(body)


def test_peers_on_loopback_talk_over_a_unix_socket_unless_told_tcp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def body() -> None:
        a, b = await pair()
        assert a.local_listening and b.local_listening
        assert await a.call("b", "_ping", None, 5) == "pong"
        assert a.stats()["peers"]["b"]["socket"] == "unix"
        sock = a._peers["b"].writer.get_extra_info("socket")
        assert sock.family == socket.AF_UNIX
        await a.close()
        await b.close()
        # The environment switch turns them off; TCP then carries everything.
        monkeypatch.setenv(transport_module.LOCAL_SOCKETS_ENV, "tcp")
        c, d = await pair()
        assert not c.local_listening and not d.local_listening
        assert await c.call("b", "_ping", None, 5) == "pong"
        assert c.stats()["peers"]["b"]["socket"] == "tcp"
        await c.close()
        await d.close()

    run(body)


def test_a_dialer_falls_back_to_tcp_when_the_peer_has_no_unix_socket() -> None:
    async def body() -> None:
        a = Transport("a", "127.0.0.1", 0, SECRET)
        b = Transport("b", "127.0.0.1", 0, SECRET, local_sockets=False)
        await a.start()
        await b.start()
        a.add_peer("b", "127.0.0.1", b.port)
        b.add_peer("a", "127.0.0.1", a.port)
        assert await a.call("b", "_ping", None, 5) == "pong"
        assert a.stats()["peers"]["b"]["socket"] == "tcp"
        assert await b.call("a", "_ping", None, 5) == "pong"
        assert b.stats()["peers"]["a"]["socket"] == "tcp"  # b never tries one
        await a.close()
        await b.close()

    run(body)


def test_a_unix_socket_name_exists_only_for_loopback_addresses() -> None:
    assert transport_module.local_name("127.0.0.1", 7001) is not None
    assert transport_module.local_name("localhost", 7001) == transport_module.local_name(
        "127.0.0.1", 7001
    )
    assert transport_module.local_name("127.0.0.1", 7001) != transport_module.local_name(
        "127.0.0.1", 7002
    )
    assert transport_module.local_name("10.0.0.5", 7001) is None
    assert transport_module.local_name("db2.example.com", 7001) is None


@pytest.mark.parametrize("local", [True, False], ids=["unix", "tcp"])
def test_a_frame_of_several_messages_with_a_bad_mac_is_rejected_whole(local: bool) -> None:
    async def body() -> None:
        b = Transport("b", "127.0.0.1", 0, SECRET)
        await b.start()
        handled: list[Any] = []

        def handler(sender: str, payload: Any) -> None:  # a plain-function handler
            handled.append(payload)

        b.register("ch", handler)
        if local:
            name = transport_module.local_name("127.0.0.1", b.port)
            assert name is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(name)
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)

        async def body_of_next_frame() -> Any:
            length = int.from_bytes(await reader.readexactly(4), "big")
            return msgpack.unpackb(await reader.readexactly(length), raw=False)

        nonce = auth.new_nonce()
        writer.write(encode_frame(msgpack.packb(auth.hello("peer", nonce))))
        answer, keys = auth.answer_challenge(SECRET, await body_of_next_frame(), "peer", nonce, "b")
        writer.write(encode_frame(msgpack.packb(answer)))
        assert await body_of_next_frame() == ["welcome"]
        good = msgpack.packb([[0, "ch", 1], [0, "ch", 2]])
        bad_data = msgpack.packb([[0, "ch", 3], [0, "ch", 4], [0, "ch", 5]])
        bad = bytearray(seal(keys.send, 1, bad_data))
        bad[-1] ^= 1  # the last message altered after sealing: the MAC no longer verifies
        after = msgpack.packb([[0, "ch", 6]])
        # All three frames in one write, so they arrive in one chunk and are cut apart there.
        writer.write(
            encode_frame(seal(keys.send, 0, good))
            + encode_frame(bytes(bad))
            + encode_frame(seal(keys.send, 2, after))
        )
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert handled == [1, 2]  # the good frame; none of the bad one, nothing after it
        writer.close()
        await b.close()

    run(body)


def test_prepacked_payloads_arrive_decoded_in_order_with_plain_sends_and_obey_faults() -> None:
    async def body() -> None:
        a, b = await pair()
        got: list[Any] = []
        b.register("ch", lambda sender, payload: got.append((sender, payload)))
        b.register("other", lambda sender, payload: got.append(("other", payload)))
        shared = msgpack.packb(["x", b"\x00" * 300, {"k": 1}], use_bin_type=True)
        for i in range(50):
            assert a.send("b", "ch", i)
            assert a.send_packed("b", "ch", shared)
            assert a.send_packed("b", "other", msgpack.packb(i))
        await eventually(lambda: len(got) == 150)
        expected: list[Any] = []
        for i in range(50):
            expected += [("a", i), ("a", ["x", b"\x00" * 300, {"k": 1}]), ("other", i)]
        assert got == expected
        await a.apply_fault_command({"op": "drop", "probability": 1.0})
        assert not a.send_packed("b", "ch", shared)
        await a.apply_fault_command({"op": "heal"})
        assert not a.send_packed("nobody", "ch", shared)
        assert a.send_packed("b", "ch", shared)
        await eventually(lambda: len(got) == 151)
        await a.close()
        await b.close()

    run(body)


@pytest.mark.parametrize("local", [False, True], ids=["tcp", "unix"])
def test_under_uvloop_calls_one_way_messages_and_an_awaiting_handler_keep_their_order(
    local: bool,
) -> None:
    # Nodes run on uvloop, whose transports are not asyncio's classes.
    async def body() -> None:
        a, b = await pair(local_sockets=local)
        got: list[Any] = []

        async def slow(sender: str, payload: Any) -> None:
            await asyncio.sleep(0.001 * (payload % 3))  # holds up the messages behind it
            got.append(payload)

        b.register("slow", slow)
        b.register("echo", lambda sender, payload: payload)
        assert await a.call("b", "echo", [1, b"x"], 5) == [1, b"x"]
        for i in range(200):
            assert a.send("b", "slow", i)
        await eventually(lambda: len(got) == 200)
        assert got == list(range(200))
        assert await a.call("b", "echo", "after", 5) == "after"
        await a.close()
        await b.close()

    uvloop.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))
