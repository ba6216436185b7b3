"""Redo records through the codec: sealed in the write-ahead log, opened on replay, and a
record altered in the log stops recovery instead of being applied."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from keeldb.crypto.errors import AuthenticationError
from keeldb.crypto.keyring import Keyring
from keeldb.crypto.master_key import MasterKey
from keeldb.crypto.store import EncryptingStore
from keeldb.engine.database import Database
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.replog import LocalLog
from keeldb.storage.wal import RECORD_HEADER, SEGMENT_HEADER, record_crc

MARKER = "MARKER-7f3a9c-never-on-disk"
TABLE = {
    "TableName": "secrets",
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    "BillingMode": "PAY_PER_REQUEST",
}


async def run(data: Path, master: MasterKey, work: Any) -> Any:
    directory = data / "keyring"
    if (directory / "keyring.json").exists():
        keyring = Keyring.load(directory, master)
    else:
        keyring = Keyring.create(directory, master)
    store = EncryptingStore(LmdbStore(data / "store"), keyring)
    db = Database(store, record_codec=keyring.record_codec)
    try:
        log = await LocalLog.open(data / "wal", store, db.apply)
        db.attach_log(log)
        try:
            return await work(db)
        finally:
            await log.close()
    finally:
        store.close()


async def write_items(db: Database) -> None:
    await db.dispatch("CreateTable", TABLE)
    for n in range(5):
        item = {"pk": {"S": f"k{n}"}, "secret": {"S": MARKER}}
        await db.dispatch("PutItem", {"TableName": "secrets", "Item": item})


async def read_items(db: Database) -> list[Any]:
    answer = await db.dispatch("Scan", {"TableName": "secrets"})
    return sorted(item["pk"]["S"] for item in answer["Items"] if item["secret"]["S"] == MARKER)


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_records_are_sealed_in_the_log_and_replayed_after_restart(tmp_path: Path) -> None:
    master = MasterKey(os.urandom(32))
    asyncio.run(run(tmp_path, master, write_items))
    for path in every_file(tmp_path):
        assert MARKER.encode() not in path.read_bytes(), path
    assert asyncio.run(run(tmp_path, master, read_items)) == [f"k{n}" for n in range(5)]
    # Without the store, recovery replays (and opens) every record of the log.
    for name in ("data.mdb", "lock.mdb"):
        (tmp_path / "store" / name).unlink()
    assert asyncio.run(run(tmp_path, master, read_items)) == [f"k{n}" for n in range(5)]


def test_without_the_codec_the_marker_would_be_in_the_log(tmp_path: Path) -> None:
    """The check above can fail: the same writes without encryption leave the marker."""

    async def plain(db: Database) -> None:
        await write_items(db)

    store = LmdbStore(tmp_path / "store")

    async def main() -> None:
        db = Database(store)
        log = await LocalLog.open(tmp_path / "wal", store, db.apply)
        db.attach_log(log)
        await plain(db)
        await log.close()

    asyncio.run(main())
    store.close()
    assert any(MARKER.encode() in p.read_bytes() for p in every_file(tmp_path))


def test_a_record_altered_in_the_log_stops_recovery(tmp_path: Path) -> None:
    master = MasterKey(os.urandom(32))

    async def write_and_keep_in_log(db: Database) -> None:
        await write_items(db)

    asyncio.run(run(tmp_path, master, write_and_keep_in_log))
    # Roll the store back to empty so that recovery must replay every record, then alter the
    # last record's ciphertext and fix its CRC, as a deliberate attacker would.
    for name in ("data.mdb", "lock.mdb"):
        (tmp_path / "store" / name).unlink()
    (segment,) = sorted((tmp_path / "wal").glob("*.wal"))
    data = bytearray(segment.read_bytes())
    salt = SEGMENT_HEADER.unpack_from(data, 0)[2]
    offset = SEGMENT_HEADER.size
    last = offset
    while offset < len(data):
        length, _, lsn = RECORD_HEADER.unpack_from(data, offset)
        last, last_lsn, last_length = offset, lsn, length
        offset += RECORD_HEADER.size + length
    payload_at = last + RECORD_HEADER.size
    data[payload_at + last_length - 1] ^= 0x01
    payload = bytes(data[payload_at : payload_at + last_length])
    RECORD_HEADER.pack_into(
        data, last, last_length, record_crc(salt, last_length, last_lsn, payload), last_lsn
    )
    segment.write_bytes(bytes(data))
    with pytest.raises(AuthenticationError, match="a log record failed authentication"):
        asyncio.run(run(tmp_path, master, read_items))


def test_the_codec_authenticates_every_record_it_did_not_just_seal(tmp_path: Path) -> None:
    keyring = Keyring.create(tmp_path, MasterKey(os.urandom(32)))
    codec = keyring.record_codec
    sealed = codec.seal(b"redo record")
    assert b"redo record" not in sealed
    # The same bytes object, handed back by the log: its plaintext.
    assert codec.open(sealed) == b"redo record"
    # Equal bytes read back from disk are another object: decrypted and authenticated.
    assert codec.open(bytes(bytearray(sealed))) == b"redo record"
    altered = bytearray(sealed)
    altered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        codec.open(bytes(altered))
    # Remembered once only: a second apply of the same object is authenticated again.
    second = codec.seal(b"another")
    assert codec.open(second) == b"another"
    assert codec._sealed == {}
    keyring.close()


def test_records_never_applied_are_forgotten_within_a_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keeldb.crypto import keyring as keyring_module

    monkeypatch.setattr(keyring_module, "SEALED_RECORDS_REMEMBERED_BYTES_MAX", 10_000)
    keyring = Keyring.create(tmp_path, MasterKey(os.urandom(32)))
    codec = keyring.record_codec
    kept = [codec.seal(bytes(1000)) for _ in range(50)]  # refused by a log, never applied
    assert codec._sealed_bytes <= 10_000
    assert len(codec._sealed) < 50
    # Forgotten or not, every record still opens to its plaintext.
    assert all(codec.open(sealed) == bytes(1000) for sealed in kept)
    assert codec._sealed == {}
    assert codec._sealed_bytes == 0
    keyring.close()
