from __future__ import annotations

import asyncio
import socket

import pytest

from keeldb.functions.sandbox import frames


def test_a_frame_round_trips_over_a_socket_pair() -> None:
    left, right = socket.socketpair()
    message = {"op": "invoke", "payload": b"\x00\xff" * 1000, "n": 3, "text": "é"}
    frames.send(left, message)
    assert frames.recv(right) == message


def test_frames_arrive_whole_and_in_order_when_sent_back_to_back() -> None:
    left, right = socket.socketpair()
    left.sendall(frames.encode({"n": 1}) + frames.encode({"n": 2}))
    assert [frames.recv(right)["n"], frames.recv(right)["n"]] == [1, 2]


def test_a_closed_peer_is_a_frame_error() -> None:
    left, right = socket.socketpair()
    left.sendall(frames.encode({"n": 1})[:3])
    left.close()
    with pytest.raises(frames.FrameError, match="closed"):
        frames.recv(right)


def test_a_frame_over_the_limit_is_refused_on_both_sides() -> None:
    with pytest.raises(frames.FrameError, match="exceeds"):
        frames.encode({"payload": b"x" * (frames.FRAME_BYTES_MAX + 1)})
    left, right = socket.socketpair()
    left.sendall((frames.FRAME_BYTES_MAX + 1).to_bytes(4, "big"))
    with pytest.raises(frames.FrameError, match="exceeds"):
        frames.recv(right)


def test_a_body_that_is_not_a_map_is_a_frame_error() -> None:
    with pytest.raises(frames.FrameError, match="not a map"):
        frames.decode(b"\x93\x01\x02\x03")  # msgpack [1, 2, 3]


def test_the_asyncio_reader_and_writer_speak_the_same_format() -> None:
    async def exchange() -> dict[str, object]:
        left, right = socket.socketpair()
        left.setblocking(False)
        await frames.asend(left, {"op": "ready", "layers": {"seccomp": True}})
        frames.send(right, {"op": "init"})
        received = frames.recv(right)
        assert received == {"op": "ready", "layers": {"seccomp": True}}
        return await frames.arecv(left)

    assert asyncio.run(exchange()) == {"op": "init"}
