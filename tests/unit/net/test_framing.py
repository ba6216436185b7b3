"""Frames: length prefix, size limit, per-frame MAC, and the stream decoder."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeldb.net.framing import (
    FRAME_BYTES_MAX,
    MAC_BYTES,
    FrameDecoder,
    FramingError,
    batch,
    encode_frame,
    frame_mac,
    open_sealed,
    seal,
)

KEY = b"k" * 32


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=1, max_value=50))
def test_decoder_returns_the_bodies_sent_however_the_stream_is_cut(
    bodies: list[bytes], chunk: int
) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got.extend(decoder.feed(stream[i : i + chunk]))
    assert got == bodies
    assert decoder.buffered_bytes == 0


def test_decoder_refuses_a_length_above_the_limit_before_reading_the_body() -> None:
    decoder = FrameDecoder(frame_bytes_max=100)
    with pytest.raises(FramingError, match="exceeds 100 bytes"):
        decoder.feed((101).to_bytes(4, "big") + b"x")


def test_encoding_a_body_above_the_limit_is_refused() -> None:
    with pytest.raises(FramingError):
        encode_frame(b"\0" * (FRAME_BYTES_MAX + 1))


def test_sealed_body_opens_with_its_key_and_sequence() -> None:
    assert open_sealed(KEY, 7, seal(KEY, 7, b"data")) == b"data"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body: body[:-1] + bytes([body[-1] ^ 1]),  # altered data
        lambda body: bytes([body[0] ^ 1]) + body[1:],  # altered MAC
        lambda body: body[:10],  # cut short
    ],
)
def test_a_tampered_sealed_body_does_not_open(tamper: object) -> None:
    body = seal(KEY, 3, b"payload")
    with pytest.raises(FramingError):
        open_sealed(KEY, 3, tamper(body))  # type: ignore[operator]


def test_a_replayed_or_reordered_frame_fails_because_the_sequence_differs() -> None:
    body = seal(KEY, 3, b"payload")
    with pytest.raises(FramingError, match="frame 4"):
        open_sealed(KEY, 4, body)


def test_a_body_sealed_with_another_key_does_not_open() -> None:
    with pytest.raises(FramingError):
        open_sealed(KEY, 0, seal(b"j" * 32, 0, b"payload"))


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_a_batch_is_a_msgpack_array_of_the_messages_as_sent(count: int) -> None:
    messages = [[0, "ch", i] for i in range(count)]
    data = batch([msgpack.packb(m) for m in messages])
    assert msgpack.unpackb(data, raw=False) == messages


def test_a_sealed_batch_opens_whole_and_an_altered_message_in_it_does_not() -> None:
    data = batch([msgpack.packb([0, "ch", "a"]), msgpack.packb([0, "ch", "b"])])
    body = seal(KEY, 0, data)
    assert open_sealed(KEY, 0, body) == data
    altered = body.replace(b"\xa1b", b"\xa1c")
    assert altered != body
    with pytest.raises(FramingError):
        open_sealed(KEY, 0, altered)


def test_the_mac_depends_on_the_key_the_sequence_and_the_data() -> None:
    macs = {
        frame_mac(KEY, 0, b"data"),
        frame_mac(KEY, 1, b"data"),
        frame_mac(b"j" * 32, 0, b"data"),
        frame_mac(KEY, 0, b"date"),
    }
    assert len(macs) == 4
    assert all(len(mac) == MAC_BYTES for mac in macs)
