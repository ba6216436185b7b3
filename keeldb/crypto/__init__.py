"""Encryption at rest: envelope encryption of the log, the store and their copies.

A master key (`--master-key-file`, never stored with the data) wraps per-scope data keys
kept in the data directory's keyring; data keys seal redo records (`RecordCodec`) and stored
values (`EncryptingStore`) with AES-256-GCM. See docs/encryption.md.

This package owns every use of key material. It never decides what is stored or logged,
and never lets data that failed authentication through.
"""

from keeldb.crypto.data_dir import holds_data, is_encrypted, open_for_data_dir, open_for_reading
from keeldb.crypto.errors import (
    AuthenticationError,
    EncryptionError,
    EncryptionStateError,
    KeyringError,
    KeyringInUseError,
    MasterKeyError,
    WrongMasterKeyError,
)
from keeldb.crypto.keyring import (
    LOG_SCOPE,
    NODE_SCOPE,
    Keyring,
    RecordCodec,
    keyring_dir,
    keyring_file,
    table_scope,
)
from keeldb.crypto.master_key import MasterKey, load_master_key, parse_master_key
from keeldb.crypto.objects import open_object, seal_object
from keeldb.crypto.sealing import SEALED_OVERHEAD_BYTES, DataKey
from keeldb.crypto.store import EncryptingStore, keyring_of, sibling_store

__all__ = [
    "LOG_SCOPE",
    "NODE_SCOPE",
    "SEALED_OVERHEAD_BYTES",
    "AuthenticationError",
    "DataKey",
    "EncryptingStore",
    "EncryptionError",
    "EncryptionStateError",
    "Keyring",
    "KeyringError",
    "KeyringInUseError",
    "MasterKey",
    "MasterKeyError",
    "RecordCodec",
    "WrongMasterKeyError",
    "holds_data",
    "is_encrypted",
    "keyring_dir",
    "keyring_file",
    "keyring_of",
    "load_master_key",
    "open_for_data_dir",
    "open_for_reading",
    "open_object",
    "parse_master_key",
    "seal_object",
    "sibling_store",
    "table_scope",
]
