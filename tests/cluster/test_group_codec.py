"""The group's compact encoding: every message and record round-trips, the hot ones take the
flat forms, configuration entries take the generic path, and garbage is refused."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from keeldb.cluster import group_codec
from keeldb.consensus.codec import CodecError
from keeldb.consensus.messages import (
    Accept,
    Accepted,
    AcceptRecord,
    CatchUp,
    CatchUpAck,
    ChosenRecord,
    CommitRecord,
    Heartbeat,
    HeartbeatAck,
    IncarnationRecord,
    InstallSnapshot,
    Nack,
    Prepare,
    Probe,
    ProbeReply,
    Promise,
    PromiseRecord,
    SnapshotRecord,
)
from keeldb.consensus.types import NOOP, Ballot, Config, Entry, EntryKind, LogEntry, Snapshot

B = Ballot(3, 2)
CMD = Entry(EntryKind.COMMAND, b"\x00redo", 2, (5 << 32) | 9)
CONF = Entry(EntryKind.CONFIG, b"", 2, 11, Config.standard([1, 2, 3]).with_epoch(7))
SNAP = Snapshot(40, ((41, Config.standard([1, 2, 3])),), b"state")

MESSAGES = [
    Accept(2, 1, B, ((10, CMD), (11, NOOP)), 9, 123),
    Accept(2, 1, B, ((10, CMD), (11, CONF)), 9, 123),
    Accepted(1, 2, B, (10, 11), 11, 123),
    Heartbeat(2, 3, B, 11, 130),
    HeartbeatAck(3, 2, B, 11, 130),
    CatchUp(2, 3, B, ((5, CMD), (6, NOOP)), 11),
    CatchUp(2, 3, B, ((7, CONF),), 11),
    Probe(1, 2, B),
    ProbeReply(2, 1, B, True),
    Prepare(1, 2, B, 4),
    Promise(2, 1, B, (LogEntry(5, B, CMD),), 4, 3, SNAP),
    Nack(2, 1, B, Ballot(4, 3)),
    InstallSnapshot(2, 3, B, SNAP),
    CatchUpAck(3, 2, B, 11),
]
RECORDS = [
    AcceptRecord(LogEntry(10, B, CMD)),
    AcceptRecord(LogEntry(11, B, NOOP)),
    AcceptRecord(LogEntry(12, B, CONF)),
    ChosenRecord(13, CMD),
    ChosenRecord(14, CONF),
    CommitRecord(14),
    PromiseRecord(B),
    SnapshotRecord(SNAP),
    IncarnationRecord(4),
]


def _wire(plain: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(plain, use_bin_type=True), raw=False)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_msgpack(message: Any) -> None:
    assert group_codec.decode_message(_wire(group_codec.encode_message(message))) == message


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_round_trips_through_msgpack(record: Any) -> None:
    assert group_codec.decode_record(_wire(group_codec.encode_record(record))) == record


def test_hot_messages_take_the_flat_forms_and_configuration_entries_the_generic_one() -> None:
    assert group_codec.encode_message(MESSAGES[0])[0] == "a"
    assert group_codec.encode_message(MESSAGES[1])[0] == "g"
    assert group_codec.encode_record(RECORDS[0])[0] == "r"
    assert group_codec.encode_record(RECORDS[2])[0] == "g"


@pytest.mark.parametrize(
    "plain",
    [
        None,
        [],
        ["a"],
        ["a", 1, 2, 3, 2, 9, 1, [10, 7, b"", 0, 0]],  # unknown entry kind
        ["a", 1, 2, 3, 2, 9, 1, [10, 0, "text", 2, 1]],  # command must be bytes
        ["A", 1, 2, 3, 2, "slots", 1, 1],
        ["h", 1, 2, 3, 2, 1],
        ["H", 1, 2, "3", 2, 1, 1],
        ["g", ["PromiseRecord", ["Ballot", 1, 1]]],  # a record is not a message
        ["z", 1],
    ],
)
def test_garbage_messages_are_refused_with_codec_error(plain: Any) -> None:
    with pytest.raises(CodecError):
        group_codec.decode_message(plain)


@pytest.mark.parametrize(
    "plain",
    [["r", 1, 2], ["k", "1", 0, b"", 0, 0], ["m"], ["g", ["Heartbeat", 1, 2, 3, 4, 5]], ["q", 1]],
)
def test_garbage_records_are_refused_with_codec_error(plain: Any) -> None:
    with pytest.raises(CodecError):
        group_codec.decode_record(plain)


def _one_by_one(messages: list[Any]) -> list[bytes]:
    return [msgpack.packb(group_codec.encode_message(m), use_bin_type=True) for m in messages]


def test_packed_messages_are_byte_for_byte_the_packed_forms_and_decode_to_their_own_message() -> (
    None
):
    many = tuple((s, Entry(EntryKind.COMMAND, bytes([s % 256]) * s, 2, s)) for s in range(1, 40))
    shared = ((10, CMD), (11, NOOP))
    messages: list[Any] = [
        # One round's Accepts: one entries tuple, a destination each.
        *(Accept(2, dst, B, shared, 9, 123) for dst in (1, 3, 4, 5, 6)),
        # The same entries at another commit point, tick or ballot: not the same tail.
        Accept(2, 1, B, shared, 10, 123),
        Accept(2, 1, B, shared, 10, 124),
        Accept(2, 1, Ballot(4, 2), shared, 10, 124),
        Accept(2, 1, B, ((10, CMD), (11, NOOP)), 10, 124),  # equal entries, another tuple
        *(Accept(2, dst, B, many, 9, 123) for dst in (1, 3)),  # an array16 header
        Accept(2, 1, B, ((10, CMD), (11, CONF)), 9, 123),  # the generic path
        Accept(2, 3, B, ((10, CMD), (11, CONF)), 9, 123),
        *MESSAGES,
    ]
    packed = group_codec.packed_messages(messages)
    assert packed == _one_by_one(messages)
    decoded = [group_codec.decode_message(msgpack.unpackb(p, raw=False)) for p in packed]
    assert decoded == messages


def test_a_packer_sharing_more_than_the_entries_is_caught_by_the_byte_comparison() -> None:
    # The check above is able to fail: a tail reused across commit points (the broken
    # variant) yields the first Accept's commit point for the second.
    first, second = Accept(2, 1, B, ((10, CMD),), 9, 123), Accept(2, 3, B, ((10, CMD),), 10, 123)
    good = group_codec.packed_messages([first, second])
    broken_tail = good[0][len(b"\x98\xa1a\x02\x01") :]
    broken = [good[0], b"\x98\xa1a\x02\x03" + broken_tail]
    assert good == _one_by_one([first, second])
    assert broken != _one_by_one([first, second])
    assert group_codec.decode_message(msgpack.unpackb(broken[1], raw=False)).commit_slot == 9


def test_messages_of_one_leadership_share_one_decoded_ballot_and_the_cache_stays_bounded() -> (
    None
):
    def heartbeat(round_: int) -> list:
        return group_codec.encode_message(Heartbeat(1, 2, Ballot(round_, 1), 3, 4))

    decode = group_codec.decode_message
    first, second = decode(heartbeat(7)), decode(heartbeat(7))
    assert first.ballot is second.ballot and first.ballot == Ballot(7, 1)
    assert decode(heartbeat(8)).ballot == Ballot(8, 1)
    for round_ in range(group_codec._BALLOTS_MAX * 2):
        assert decode(heartbeat(round_)).ballot == Ballot(round_, 1)
    assert len(group_codec._BALLOTS) <= group_codec._BALLOTS_MAX
