"""The write path's economies never change a result: the reused packer encodes exactly what
`msgpack.packb` does, remembered store keys are the keys `item_key` computes, and a record
applied from the proposer's hands (not decoded again) is the record the log holds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest

from keeldb.engine import database as database_module
from keeldb.engine.database import Database, decode_record, encode_record, redo_kind
from keeldb.engine.item_store import storage_key
from keeldb.engine.packing import pack
from keeldb.engine.schema import KeyAttribute, Table
from keeldb.model.keys import item_key
from keeldb.storage.memory import MemoryStore
from keeldb.storage.protocols import ApplyFn, Entry

# --- the packer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        [1100, {"pk": {"S": "user1"}, "f": {"S": "x" * 100}}],
        {"kind": "put", "key": b"\x00\x01", "value": b"\xff" * 300, "n": None},
        [0, 0],
        2**40,
        {"nested": [{"B": b"abc"}, {"L": [{"N": "1.5"}]}]},
    ],
)
def test_pack_encodes_exactly_what_packb_encodes(value: Any) -> None:
    assert pack(value) == msgpack.packb(value, use_bin_type=True)
    assert pack(value) == pack(value)  # nothing left over in the reused buffer


def test_pack_after_a_failed_pack_encodes_only_the_next_value() -> None:
    with pytest.raises(TypeError):
        pack([1, 2, object()])
    assert pack([3]) == msgpack.packb([3])


def test_pack_gives_each_thread_its_own_packer() -> None:
    results: list[bool] = []

    def work(seed: int) -> None:
        ok = True
        for i in range(2000):
            value = [seed, i, "x" * (i % 50)]
            ok &= pack(value) == msgpack.packb(value)
        results.append(ok)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4


# --- remembered store keys ------------------------------------------------------------------


def _table(table_id: str, hash_type: str, range_type: str | None = None) -> Table:
    return Table(
        name=f"t-{table_id}",
        table_id=table_id,
        hash_key=KeyAttribute("pk", hash_type),
        range_key=None if range_type is None else KeyAttribute("sk", range_type),
        status="ACTIVE",
        created_at=0.0,
        arn=f"arn:aws:dynamodb:us-east-1:000000000000:table/t-{table_id}",
    )


def test_storage_key_is_the_item_key_for_every_table_type_and_value() -> None:
    for _ in range(2):  # the second pass answers from the cache
        for table_id in ("a", "b"):
            for hash_type, text in (("S", "1"), ("N", "1"), ("B", "AQ==")):
                table = _table(table_id, hash_type)
                key = {"pk": {hash_type: text}}
                assert storage_key(table, key) == item_key(table_id, 0, {hash_type: text}, None)
                ranged = _table(table_id, hash_type, "S")
                key = {"pk": {hash_type: text}, "sk": {"S": "r"}}
                assert storage_key(ranged, key) == item_key(
                    table_id, 0, {hash_type: text}, {"S": "r"}
                )


def test_storage_keys_differ_by_table_type_and_range() -> None:
    keys = {
        storage_key(_table("a", "S"), {"pk": {"S": "1"}}),
        storage_key(_table("b", "S"), {"pk": {"S": "1"}}),
        storage_key(_table("a", "N"), {"pk": {"N": "1"}}),
        storage_key(_table("a", "S", "S"), {"pk": {"S": "1"}, "sk": {"S": "1"}}),
        storage_key(_table("a", "S", "S"), {"pk": {"S": "1"}, "sk": {"S": "2"}}),
        storage_key(_table("a", "S", "N"), {"pk": {"S": "1"}, "sk": {"N": "2"}}),
    }
    assert len(keys) == 6


# --- applying a proposed record without decoding it -----------------------------------------

SEEN: list[dict[str, Any]] = []


@redo_kind("test-economy-note")
def _apply_note(db: Database, lsn: int, record: dict[str, Any]) -> None:
    SEEN.append(record)
    db.store.write([], [], applied_lsn=lsn)


class HandBackLog:
    """A log of one member that hands `apply` the appended bytes, or a copy of them (as a
    replica or a recovery would), or fails the append before applying anything."""

    def __init__(self, apply: ApplyFn, *, copy: bool = False, fail: bool = False) -> None:
        self._apply = apply
        self._lsn = 0
        self.copy = copy
        self.fail = fail

    async def append(self, record: bytes) -> int:
        if self.fail:
            raise OSError("disk full")
        self._lsn += 1
        data = bytes(bytearray(record)) if self.copy else record
        entries: Sequence[Entry] = [(self._lsn, data)]
        self._apply(entries)
        return self._lsn

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


def _database(**log_options: bool) -> tuple[Database, HandBackLog]:
    db = Database(MemoryStore())
    log = HandBackLog(db.apply, **log_options)
    db.attach_log(log)
    return db, log


def test_a_round_tripping_record_is_applied_as_proposed() -> None:
    SEEN.clear()
    db, _ = _database()
    record = {"kind": "test-economy-note", "key": b"k", "n": 1}
    asyncio.run(db.propose(record, round_trips=True))
    assert SEEN[0] is record
    assert db._proposed == {}


class _NotingCodec:
    """A record codec that keeps a copy of every record it seals and opens (as the cluster's
    commit-time codec hands each applied record to the replica's archive)."""

    def __init__(self) -> None:
        self.opened: list[bytes] = []

    def seal(self, data: bytes) -> bytes:
        return b"" + data

    def open(self, data: bytes) -> bytes:
        self.opened.append(data)
        return data


def test_a_record_applied_as_proposed_is_still_shown_to_the_record_codec() -> None:
    SEEN.clear()
    codec = _NotingCodec()
    db = Database(MemoryStore(), record_codec=codec)
    db.attach_log(HandBackLog(db.apply))
    record = {"kind": "test-economy-note", "key": b"k", "n": 2}
    asyncio.run(db.propose(record, round_trips=True))
    assert SEEN[0] is record
    assert [decode_record(data) for data in codec.opened] == [record]


def test_a_record_proposed_without_round_trips_is_decoded() -> None:
    SEEN.clear()
    db, _ = _database()
    record = {"kind": "test-economy-note", "key": b"k"}
    asyncio.run(db.propose(record))
    assert SEEN[0] is not record
    assert SEEN[0] == record


def test_other_bytes_handed_back_are_decoded_not_taken_from_the_proposer() -> None:
    SEEN.clear()
    db, _ = _database(copy=True)
    record = {"kind": "test-economy-note", "key": b"k"}
    asyncio.run(db.propose(record, round_trips=True))
    assert SEEN[0] is not record
    assert SEEN[0] == decode_record(encode_record(record))
    assert db._proposed == {}


def test_a_failed_append_keeps_nothing_for_apply() -> None:
    db, _ = _database(fail=True)
    with pytest.raises(OSError):
        asyncio.run(db.propose({"kind": "test-economy-note"}, round_trips=True))
    assert db._proposed == {}


def test_past_the_bound_records_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    SEEN.clear()
    monkeypatch.setattr(database_module, "PROPOSED_RECORDS_MAX", 0)
    db, _ = _database()
    record = {"kind": "test-economy-note", "key": b"k"}
    asyncio.run(db.propose(record, round_trips=True))
    assert SEEN[0] is not record
    assert SEEN[0] == record


@pytest.mark.interpreted
def test_put_records_of_the_item_operations_round_trip() -> None:
    """What `items.write_item` proposes with round_trips=True decodes to an equal record."""
    db, _ = _database()
    asyncio.run(
        db.dispatch(
            "CreateTable",
            {
                "TableName": "economy",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
    )
    captured: list[dict[str, Any]] = []
    original = db.propose

    async def capture(record: dict[str, Any], *, round_trips: bool = False) -> int:
        if round_trips:
            captured.append(record)
        return await original(record, round_trips=round_trips)

    db.propose = capture  # type: ignore[method-assign]
    asyncio.run(db.dispatch("PutItem", {"TableName": "economy", "Item": {"pk": {"S": "a"}}}))
    asyncio.run(db.dispatch("DeleteItem", {"TableName": "economy", "Key": {"pk": {"S": "a"}}}))
    assert [r["kind"] for r in captured] == ["put", "delete"]
    for record in captured:
        assert decode_record(encode_record(record)) == record
    assert (
        asyncio.run(db.dispatch("GetItem", {"TableName": "economy", "Key": {"pk": {"S": "a"}}}))
        == {}
    )
