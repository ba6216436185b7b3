"""The plain-data codec: every message and record survives msgpack, garbage is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import msgpack
import pytest

from keeldb.consensus import messages
from keeldb.consensus.codec import CodecError, from_plain, to_plain
from keeldb.consensus.harness import Harness
from keeldb.consensus.types import Config

_spec = importlib.util.spec_from_file_location(
    "_types_test", Path(__file__).with_name("test_types.py")
)
assert _spec is not None and _spec.loader is not None
_types_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_types_test)
SAMPLES = _types_test._samples()


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_every_message_and_record_round_trips_through_msgpack(value: object) -> None:
    packed = msgpack.packb(to_plain(value), use_bin_type=True)
    assert from_plain(msgpack.unpackb(packed, raw=False)) == value


def test_the_codec_knows_every_message_type() -> None:
    for cls in messages.MESSAGE_TYPES:
        assert any(type(v) is cls for v in SAMPLES)


def test_a_whole_run_of_messages_round_trips() -> None:
    h = Harness(Config.aurora([1, 2, 3, 4, 5, 6]), record_events=False)
    h.elect(1)
    seen = 0
    for i in range(20):
        h.propose(1, f"v{i}".encode())
        h.process_all()
        for msg in h.net:
            assert from_plain(msgpack.unpackb(msgpack.packb(to_plain(msg)), raw=False)) == msg
            seen += 1
        h.deliver_all()
    assert seen >= 100  # 20 rounds of 5 Accepts


@pytest.mark.parametrize(
    "garbage",
    [
        {"a": 1},
        [],
        [7, 1],
        ["NoSuchMessage", 1],
        ["Heartbeat", 1, 2],
        ["EntryKind", "nonsense"],
        [
            "",
            [
                "",
                [
                    "",
                    [
                        "",
                        [
                            "",
                            [
                                "",
                                [
                                    "",
                                    ["", ["", ["", ["", ["", ["", ["", ["", ["", ["", []]]]]]]]]]],
                                ],
                            ],
                        ],
                    ],
                ],
            ],
        ],
    ],
)
def test_garbage_is_refused_with_a_codec_error(garbage: object) -> None:
    with pytest.raises(CodecError):
        from_plain(garbage)
