"""Deciding, at start, whether a data directory is encrypted and with which keyring.

Owns the start rules (docs/encryption.md, "Starting a node"):

- a new data directory started with a master key gets a new keyring;
- a directory with a keyring needs its master key: none, or another one, stops the start;
- a directory created without encryption refuses a master key (its data is plaintext, and
  encrypting it in place would mean rewriting it; move the tables instead).

All of it is decided before the store or the log is opened, and a refusal changes nothing
in the directory. It never opens the store or the log itself.
"""

from __future__ import annotations

from pathlib import Path

import lmdb

from keeldb.crypto.errors import EncryptionStateError, KeyringError
from keeldb.crypto.keyring import Keyring, keyring_dir, keyring_file
from keeldb.crypto.master_key import load_master_key
from keeldb.crypto.sealing import FORMAT_VERSION
from keeldb.storage.lmdb_store import STORE_DBS_MAX
from keeldb.storage.wal import CorruptLogError, read_segment

STORE_DIR_NAME = "store"  # as keeldb.node lays out a data directory
WAL_DIR_NAME = "wal"
STORE_ITEMS_DB = b"items"  # the LmdbStore sub-database holding the store's values
MASTER_KEY_FLAG = "--master-key-file"
LOG_PEEK_BYTES = 1 << 20  # read of the oldest segment to see its first record (redo records
# are far smaller; a larger first record just leaves the question open)


def holds_data(data_dir: Path) -> bool:
    """Whether the directory already has a store or log records (made with or without a key)."""
    data_dir = Path(data_dir)
    if (data_dir / STORE_DIR_NAME / "data.mdb").exists():
        return True
    wal = data_dir / WAL_DIR_NAME
    return wal.is_dir() and any(wal.glob("*.wal"))


def is_encrypted(data_dir: Path) -> bool:
    return keyring_file(data_dir).exists()


def log_is_sealed(data_dir: Path) -> bool:
    """Whether the first record of the oldest log segment is sealed (a redo record in
    plaintext is a msgpack map, whose first byte is never the sealed format's version)."""
    wal = Path(data_dir) / WAL_DIR_NAME
    segments = sorted(wal.glob("*.wal")) if wal.is_dir() else []
    for path in segments:
        with open(path, "rb") as file:
            data = file.read(LOG_PEEK_BYTES)
        try:
            for _lsn, _time_us, payload in read_segment(data):
                return payload[:1] == bytes([FORMAT_VERSION])
        except CorruptLogError:
            return False  # cut, or a first record beyond the peek: not known to be sealed
    return False


def store_is_sealed(data_dir: Path) -> bool:
    """Whether the first value of the item store is sealed (plaintext values are msgpack
    arrays or maps). The store is opened read-only and without its lock file, so nothing in
    the directory changes; a store that cannot be opened so is not known to be sealed."""
    path = Path(data_dir) / STORE_DIR_NAME
    if not (path / "data.mdb").exists():
        return False
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=STORE_DBS_MAX)
    except lmdb.Error:
        return False
    try:
        items = env.open_db(STORE_ITEMS_DB, create=False)
        with env.begin(db=items) as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return False
            return bytes(cursor.value()[:1]) == bytes([FORMAT_VERSION])
    except lmdb.Error:
        return False
    finally:
        env.close()


def _check_keyring_not_lost(data_dir: Path) -> None:
    if log_is_sealed(data_dir) or store_is_sealed(data_dir):
        raise KeyringError(
            f"the data directory {data_dir} holds encrypted data but its keyring "
            f"{keyring_file(data_dir)} is missing; restore that file (from where the "
            "data directory was backed up) and start with the same master key"
        )


def open_for_data_dir(
    data_dir: Path, master_key_file: Path | None, *, backup_dir: Path | None = None
) -> Keyring | None:
    """The keyring to run `data_dir` with, or None when it is not encrypted at rest.

    Raises an `EncryptionError` (and changes nothing) when the key and the directory disagree.
    """
    data_dir = Path(data_dir)
    encrypted = is_encrypted(data_dir)
    if not encrypted:
        _check_keyring_not_lost(data_dir)
    if master_key_file is None:
        if encrypted:
            raise EncryptionStateError(
                f"the data directory {data_dir} is encrypted at rest: start with "
                f"{MASTER_KEY_FLAG} naming its master key"
            )
        return None
    keep_out_of = (data_dir,) if backup_dir is None else (data_dir, Path(backup_dir))
    master = load_master_key(master_key_file, keep_out_of=keep_out_of)
    if encrypted:
        return Keyring.load(keyring_dir(data_dir), master)
    if holds_data(data_dir):
        raise EncryptionStateError(
            f"the data directory {data_dir} was created without encryption at rest and holds "
            f"plaintext data; start it without {MASTER_KEY_FLAG}, or move its tables to a new "
            "encrypted node (export and import, or backup and restore)"
        )
    return Keyring.create(keyring_dir(data_dir), master)


def open_for_reading(data_dir: Path, master_key_file: Path | None) -> Keyring | None:
    """The keyring of a stopped node's data directory, for offline readers (a scrub, an
    inspection): read-only, no lock taken, nothing created. None when the directory is not
    encrypted; an `EncryptionError` when the key and the directory disagree."""
    data_dir = Path(data_dir)
    if not is_encrypted(data_dir):
        if master_key_file is not None:
            raise EncryptionStateError(
                f"the data directory {data_dir} is not encrypted at rest; drop {MASTER_KEY_FLAG}"
            )
        return None
    if master_key_file is None:
        raise EncryptionStateError(
            f"the data directory {data_dir} is encrypted at rest: give {MASTER_KEY_FLAG} "
            "naming its master key"
        )
    master = load_master_key(master_key_file, keep_out_of=(data_dir,))
    return Keyring.load(keyring_dir(data_dir), master, read_only=True)
