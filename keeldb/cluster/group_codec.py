"""Compact plain-data forms of the consensus messages and records on a group's hot path.

Owns the encoding the group driver puts on the wire (transport payloads) and in its WAL:
the messages and records that carry client commands and the commit point (Accept,
Accepted, Heartbeat, HeartbeatAck, CatchUp; AcceptRecord, ChosenRecord, CommitRecord) get
flat lists built and read by hand, which costs a fraction of the generic
`consensus.codec` walk over dataclass fields; everything else (elections, snapshots,
configuration entries, incarnations) goes through `consensus.codec` unchanged. Must never
do IO; input from the network is the world's, so decoding raises CodecError for anything
that is not exactly one of these shapes.

Forms (a, b: ballot round and node; an entry is kind, command, origin, proposal id, with
kind 0 for COMMAND and 1 for NOOP; an entry holding a configuration takes the generic path):

    Accept        ["a", src, dst, a, b, commit, sent_tick, [slot, kind, cmd, origin, pid]...]
    Accepted      ["A", src, dst, a, b, [slots...], commit, sent_tick]
    Heartbeat     ["h", src, dst, a, b, commit, sent_tick]
    HeartbeatAck  ["H", src, dst, a, b, commit, sent_tick]
    CatchUp       ["c", src, dst, a, b, commit, [slot, kind, cmd, origin, pid]...]
    AcceptRecord  ["r", slot, a, b, kind, cmd, origin, pid]
    ChosenRecord  ["k", slot, kind, cmd, origin, pid]
    CommitRecord  ["m", slot]
    anything else ["g", consensus.codec.to_plain(value)]

On the wire a message is the msgpack encoding of its form (`packed_messages`): the Accepts
of one round, which differ only in their destination, share the bytes of everything after
it, packed once rather than once per follower.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, cast

import msgpack

from keeldb.consensus.codec import CodecError, from_plain, to_plain
from keeldb.consensus.messages import (
    MESSAGE_TYPES,
    Accept,
    Accepted,
    AcceptRecord,
    CatchUp,
    ChosenRecord,
    CommitRecord,
    Heartbeat,
    HeartbeatAck,
    Message,
    Record,
)
from keeldb.consensus.types import NOOP, Ballot, Entry, EntryKind, LogEntry

_KIND_CODES = {EntryKind.COMMAND: 0, EntryKind.NOOP: 1}
_COMMAND = EntryKind.COMMAND
_NOOP = EntryKind.NOOP
RECORD_TYPE_NAMES = frozenset(
    {
        "PromiseRecord",
        "AcceptRecord",
        "ChosenRecord",
        "CommitRecord",
        "SnapshotRecord",
        "IncarnationRecord",
    }
)


def _flat_entries(entries: tuple[tuple[int, Entry], ...]) -> list[Any] | None:
    """Entries as flat lists, or None when one holds a configuration (generic path)."""
    out: list[Any] = []
    for slot, entry in entries:
        if entry.config is not None:
            return None
        out.append([slot, _KIND_CODES[entry.kind], entry.command, entry.origin, entry.proposal_id])
    return out


def _entry(kind: Any, command: Any, origin: Any, proposal_id: Any) -> Entry:
    if kind == 0:
        if not isinstance(command, bytes) or type(origin) is not int:
            raise CodecError("malformed command entry")
        if type(proposal_id) is not int:
            raise CodecError("malformed proposal id")
        return Entry(_COMMAND, command, origin, proposal_id)  # type: ignore[arg-type]
    if kind == 1:
        if command == b"" and origin == 0 and proposal_id == 0:
            return NOOP
        if not isinstance(command, bytes) or type(origin) is not int:
            raise CodecError("malformed no-op entry")
        return Entry(_NOOP, command, origin, proposal_id)  # type: ignore[arg-type]
    raise CodecError(f"unknown entry kind {kind!r}")


def _slot_entries(items: list[Any]) -> tuple[tuple[Any, Entry], ...]:
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) != 5 or type(item[0]) is not int:
            raise CodecError("malformed entry")
        out.append((item[0], _entry(item[1], item[2], item[3], item[4])))
    return tuple(out)


def _ints(*values: Any) -> None:
    for value in values:
        if type(value) is not int:
            raise CodecError("expected an integer")


# The ballots of recent messages, by (round, node): a group's messages carry one ballot for a
# whole leadership, so decoding hands back the one object (cheaper than a new frozen
# dataclass per message, and the core's comparisons with the ballot it holds then start
# with an identity check that holds). Dropped whole when it grows past the bound.
_BALLOTS: dict[tuple[int, int], Ballot] = {}
_BALLOTS_MAX = 1024


def _ballot(r: int, n: int) -> Ballot:
    key = (r, n)
    ballot = _BALLOTS.get(key)
    if ballot is None:
        if len(_BALLOTS) >= _BALLOTS_MAX:
            _BALLOTS.clear()
        ballot = _BALLOTS[key] = Ballot(r, n)  # type: ignore[arg-type]
    return ballot


def encode_message(msg: Message) -> list[Any]:
    kind = type(msg)
    if kind is Accept:
        assert isinstance(msg, Accept)
        flat = _flat_entries(msg.entries)
        if flat is not None:
            b = msg.ballot
            return ["a", msg.src, msg.dst, b.round, b.node_id, msg.commit_slot, msg.sent_tick,
                    *flat]  # fmt: skip
    elif kind is Accepted:
        assert isinstance(msg, Accepted)
        b = msg.ballot
        return ["A", msg.src, msg.dst, b.round, b.node_id, list(msg.slots), msg.commit_slot,
                msg.sent_tick]  # fmt: skip
    elif kind is Heartbeat or kind is HeartbeatAck:
        assert isinstance(msg, Heartbeat | HeartbeatAck)
        b = msg.ballot
        tag = "h" if kind is Heartbeat else "H"
        return [tag, msg.src, msg.dst, b.round, b.node_id, msg.commit_slot, msg.sent_tick]
    elif kind is CatchUp:
        assert isinstance(msg, CatchUp)
        flat = _flat_entries(msg.entries)
        if flat is not None:
            b = msg.ballot
            return ["c", msg.src, msg.dst, b.round, b.node_id, msg.commit_slot, *flat]
    return ["g", to_plain(msg)]


_ARRAY16 = struct.Struct("!BH")
_ARRAY32 = struct.Struct("!BI")
_ACCEPT_TAG = msgpack.packb("a")
_ACCEPT_FIELDS_BEFORE_TAIL = 3  # tag, src, dst: the tail starts with the ballot


def _array_header(count: int) -> bytes:
    """The msgpack header of an array of `count` items."""
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return _ARRAY16.pack(0xDC, count)
    return _ARRAY32.pack(0xDD, count)


def _pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def packed_messages(messages: Sequence[Message]) -> list[bytes]:
    """`msgpack.packb(encode_message(m))` of every message, byte for byte; Accepts in a row
    that carry the same entries (the one tuple the core sends to every follower), ballot,
    commit point and tick are packed once, only their source and destination apart."""
    out: list[bytes] = []
    shared: Accept | None = None  # the Accept whose tail `tail` holds
    tail = b""
    count = 0
    for msg in messages:
        if type(msg) is not Accept:
            out.append(_pack(encode_message(msg)))
            continue
        assert isinstance(msg, Accept)
        if (
            shared is None
            or msg.entries is not shared.entries
            or msg.ballot != shared.ballot
            or msg.commit_slot != shared.commit_slot
            or msg.sent_tick != shared.sent_tick
        ):
            flat = _flat_entries(msg.entries)
            if flat is None:
                shared = None
                out.append(_pack(encode_message(msg)))
                continue
            b = msg.ballot
            rest = [b.round, b.node_id, msg.commit_slot, msg.sent_tick, *flat]
            tail = _pack(rest)[len(_array_header(len(rest))) :]
            count = len(rest) + _ACCEPT_FIELDS_BEFORE_TAIL
            shared = msg
        out.append(_array_header(count) + _ACCEPT_TAG + _pack(msg.src) + _pack(msg.dst) + tail)
    return out


def decode_message(plain: Any) -> Message:
    """The message `plain` encodes; CodecError for anything else."""
    if not isinstance(plain, list) or len(plain) < 2:
        raise CodecError("a message is a tagged list")
    tag = plain[0]
    try:
        if tag == "a":
            _, src, dst, r, n, commit, tick, *items = plain
            _ints(src, dst, r, n, commit, tick)
            return Accept(src, dst, _ballot(r, n), _slot_entries(items), commit, tick)
        if tag == "A":
            _, src, dst, r, n, slots, commit, tick = plain
            _ints(src, dst, r, n, commit, tick)
            if not isinstance(slots, list):
                raise CodecError("malformed slots")
            _ints(*slots)
            return Accepted(src, dst, _ballot(r, n), tuple(slots), commit, tick)
        if tag == "h" or tag == "H":
            _, src, dst, r, n, commit, tick = plain
            _ints(src, dst, r, n, commit, tick)
            cls = Heartbeat if tag == "h" else HeartbeatAck
            return cls(src, dst, _ballot(r, n), commit, tick)
        if tag == "c":
            _, src, dst, r, n, commit, *items = plain
            _ints(src, dst, r, n, commit)
            return CatchUp(src, dst, _ballot(r, n), _slot_entries(items), commit)
    except ValueError as error:  # wrong number of fields to unpack
        raise CodecError(f"malformed {tag!r} message: {error}") from None
    if tag == "g" and len(plain) == 2:
        # Typed `Message` only once checked: compiled (keeldb/native.py), an annotation is
        # checked on assignment, and garbage would raise TypeError instead of CodecError.
        msg = from_plain(plain[1])
        if not isinstance(msg, MESSAGE_TYPES):
            raise CodecError(f"not a message: {type(msg).__name__}")
        return cast(Message, msg)
    raise CodecError(f"unknown message tag {tag!r}")


def encode_record(record: Record) -> list[Any]:
    kind = type(record)
    if kind is AcceptRecord:
        assert isinstance(record, AcceptRecord)
        le = record.entry
        entry = le.entry
        if entry.config is None:
            b = le.ballot
            return ["r", le.slot, b.round, b.node_id, _KIND_CODES[entry.kind], entry.command,
                    entry.origin, entry.proposal_id]  # fmt: skip
    elif kind is ChosenRecord:
        assert isinstance(record, ChosenRecord)
        entry = record.entry
        if entry.config is None:
            return ["k", record.slot, _KIND_CODES[entry.kind], entry.command, entry.origin,
                    entry.proposal_id]  # fmt: skip
    elif kind is CommitRecord:
        assert isinstance(record, CommitRecord)
        return ["m", record.slot]
    return ["g", to_plain(record)]


def decode_record(plain: Any) -> Record:
    """The record `plain` encodes; CodecError for anything else."""
    if not isinstance(plain, list) or len(plain) < 2:
        raise CodecError("a record is a tagged list")
    tag = plain[0]
    try:
        if tag == "r":
            _, slot, r, n, kind, command, origin, pid = plain
            _ints(slot, r, n)
            return AcceptRecord(LogEntry(slot, Ballot(r, n), _entry(kind, command, origin, pid)))
        if tag == "k":
            _, slot, kind, command, origin, pid = plain
            _ints(slot)
            return ChosenRecord(slot, _entry(kind, command, origin, pid))
        if tag == "m":
            _, slot = plain
            _ints(slot)
            return CommitRecord(slot)
    except ValueError as error:
        raise CodecError(f"malformed {tag!r} record: {error}") from None
    if tag == "g" and len(plain) == 2:
        inner = plain[1]
        if not isinstance(inner, list) or not inner or inner[0] not in RECORD_TYPE_NAMES:
            raise CodecError("not a consensus record")
        record: Record = from_plain(inner)
        return record
    raise CodecError(f"unknown record tag {tag!r}")
