"""The worker channel's frames (keeldb.workers.protocol): pure, no processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.workers import protocol


def test_frames_split_at_any_byte_decode_to_the_same_messages() -> None:
    frames = [
        protocol.call_json(1, "DynamoDB_20120810", "PutItem", b'{"TableName": "t"}'),
        protocol.frame(protocol.ANSWER_JSON, 1, b"{}"),
        protocol.answer_error(2, 400, b'{"__type": "x"}'),
        protocol.packed(protocol.HELLO, 0, {"a": [1, b"\x00"]}),
        protocol.frame(protocol.ANSWER_FAILED, 3, b""),
    ]
    stream = b"".join(frames)
    whole = protocol.FrameDecoder().feed(stream)
    assert [m.kind for m in whole] == [
        protocol.CALL_JSON,
        protocol.ANSWER_JSON,
        protocol.ANSWER_ERROR,
        protocol.HELLO,
        protocol.ANSWER_FAILED,
    ]
    for cut in range(len(stream) + 1):
        decoder = protocol.FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole
        assert decoder.buffered_bytes == 0
    rng = random.Random(7)
    decoder = protocol.FrameDecoder()
    got = []
    position = 0
    while position < len(stream):
        step = rng.randint(1, 9)
        got += decoder.feed(stream[position : position + step])
        position += step
    assert got == whole


def test_a_json_call_and_an_error_answer_round_trip() -> None:
    (message,) = protocol.FrameDecoder().feed(
        protocol.call_json(4_000_000_000, "DynamoDBStreams_20120810", "GetRecords", b'{"x":1}')
    )
    assert message.call_id == 4_000_000_000
    assert protocol.parse_call_json(message.body) == (
        "DynamoDBStreams_20120810",
        "GetRecords",
        b'{"x":1}',
    )
    (answer,) = protocol.FrameDecoder().feed(protocol.answer_error(9, 413, b"{}"))
    assert protocol.parse_answer_error(answer.body) == (413, b"{}")
    assert (
        protocol.unpacked(protocol.packed(protocol.READY, 0, 1234)[protocol.HEADER_BYTES :]) == 1234
    )


def test_a_frame_above_the_bound_is_refused_before_its_body_arrives() -> None:
    decoder = protocol.FrameDecoder(frame_bytes_max=100)
    header = (101 + protocol.HEADER_BYTES - 4).to_bytes(4, "big") + bytes([protocol.ANSWER_JSON])
    with pytest.raises(protocol.FrameError):
        decoder.feed(header + b"\x00\x00\x00\x01")
    with pytest.raises(protocol.FrameError):
        protocol.frame(protocol.ANSWER_JSON, 1, b"x" * (protocol.FRAME_BYTES_MAX + 1))


def test_an_unknown_kind_or_a_short_length_is_refused() -> None:
    unknown = (5).to_bytes(4, "big") + bytes([99]) + (1).to_bytes(4, "big")
    with pytest.raises(protocol.FrameError):
        protocol.FrameDecoder().feed(unknown)
    short = (2).to_bytes(4, "big") + bytes([protocol.ANSWER_JSON]) + (1).to_bytes(4, "big")
    with pytest.raises(protocol.FrameError):
        protocol.FrameDecoder().feed(short)
    with pytest.raises(protocol.FrameError):
        protocol.parse_call_json(b"\x05ab")
    with pytest.raises(protocol.FrameError):
        protocol.unpacked(b"\xc1")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=50))
def test_garbage_either_decodes_or_raises_the_frame_error(data: bytes, step: int) -> None:
    decoder = protocol.FrameDecoder(frame_bytes_max=1000)
    try:
        for start in range(0, len(data), step):
            for message in decoder.feed(data[start : start + step]):
                assert message.kind in protocol.KINDS
                if message.kind == protocol.CALL_JSON:
                    protocol.parse_call_json(message.body)
                elif message.kind == protocol.ANSWER_ERROR:
                    protocol.parse_answer_error(message.body)
    except protocol.FrameError:
        pass
