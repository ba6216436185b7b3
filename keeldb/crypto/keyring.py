"""The keyring: the data keys of one data directory, each wrapped by the master key.

This module owns the keyring's file (`keyring/keyring.json` in the data directory), its
format, its lock, and every use of the master key: wrapping and unwrapping data keys, the
master key check value, and rotation (re-wrapping every data key under a new master key
without touching the data they encrypt). It never stores a master key or an unwrapped data
key on disk, and never seals data itself (`keeldb.crypto.sealing` does).

Scopes. Each data key serves one scope: `log` (redo records in the write-ahead log), `node`
(store values outside any table: the catalog) or `table/<table id>` (a table's items, index
entries and statistics). A table's key is made the first time something of the table is
written, and is never removed, so that archived data of a deleted table can still be
restored. A scope may gain newer keys (`add_data_key`); older ones stay for reading.

The file is JSON:

    {"format": "keeldb-keyring-1",
     "check": base64(HMAC-SHA256(master key, CHECK_LABEL)),
     "keys": [{"id": 1, "scope": "log", "wrapped": base64(nonce | AES-256-GCM(data key))}, ...]}

A data key is wrapped with AES-256-GCM under the master key, with a random 96-bit nonce (a
keyring wraps a few thousand keys at most, far below GCM's random-nonce bound) and with its
id and scope as associated data, so a wrapped key cannot be passed off as another scope's.
The check value tells a wrong master key ("not the key this keyring was made with") from a
damaged keyring ("the check matches but a key does not unwrap").

The file is replaced atomically (write a temporary file, fsync, rename, fsync the directory):
a crash leaves the old keyring or the new one, never a mix. While a server runs it holds
`keyring/LOCK` (flock), so an offline rotation cannot race with a server adding a key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keeldb.crypto.errors import (
    AuthenticationError,
    KeyringError,
    KeyringInUseError,
    WrongMasterKeyError,
)
from keeldb.crypto.master_key import MasterKey
from keeldb.crypto.sealing import (
    DATA_KEY_BYTES,
    KEY_ID_MAX,
    DataKey,
    check_format,
    key_id_of,
)
from keeldb.storage.wal import fsync_directory, make_directory_durable

KEYRING_DIR_NAME = "keyring"
KEYRING_FILE_NAME = "keyring.json"
LOCK_FILE_NAME = "LOCK"
KEYRING_FORMAT = "keeldb-keyring-1"
KEYRING_FILE_BYTES_MAX = 64 << 20  # ~500k wrapped keys; a larger file is not a keyring
CHECK_LABEL = b"keeldb master key check v1"
WRAP_LABEL = b"keeldb data key wrap v1"
WRAP_NONCE_BYTES = 12
LOG_SCOPE = "log"
NODE_SCOPE = "node"
TABLE_SCOPE_PREFIX = "table/"
LOG_RECORD_CONTEXT = b"L"  # associated data of a log record (store values use b"S" + key)
SEALED_RECORDS_REMEMBERED_MAX = 65536  # records sealed here and not applied yet; far above
# the log's group size, so the bound only matters if appends keep failing (a record the log
# refuses as too large is never applied, and would otherwise stay remembered)
SEALED_RECORDS_REMEMBERED_BYTES_MAX = 64 << 20


def keyring_dir(data_dir: Path) -> Path:
    return Path(data_dir) / KEYRING_DIR_NAME


def keyring_file(data_dir: Path) -> Path:
    """The one file that must travel with a data directory's copies (snapshots, backups)."""
    return keyring_dir(data_dir) / KEYRING_FILE_NAME


def table_scope(table_id: str) -> str:
    return TABLE_SCOPE_PREFIX + table_id


def check_value(master: MasterKey) -> bytes:
    return hmac.new(master.secret, CHECK_LABEL, hashlib.sha256).digest()


def _wrap_aad(key_id: int, scope: str) -> bytes:
    return WRAP_LABEL + key_id.to_bytes(4, "big") + scope.encode("utf-8")


def wrap_key(master: MasterKey, key_id: int, scope: str, secret: bytes) -> bytes:
    nonce = os.urandom(WRAP_NONCE_BYTES)
    return nonce + AESGCM(master.secret).encrypt(nonce, secret, _wrap_aad(key_id, scope))


def unwrap_key(master: MasterKey, key_id: int, scope: str, wrapped: bytes) -> bytes:
    nonce, body = wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:]
    try:
        secret = AESGCM(master.secret).decrypt(nonce, body, _wrap_aad(key_id, scope))
    except InvalidTag:
        raise KeyringError(
            f"data key {key_id} ({scope}) does not unwrap although the master key matches "
            "the keyring's check value: the keyring is damaged"
        ) from None
    if len(secret) != DATA_KEY_BYTES:
        raise KeyringError(f"data key {key_id} ({scope}) has {len(secret)} bytes")
    return secret


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyringError(f"keyring field {what} is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"keyring field {what} is not base64") from None


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            raw = file.read(KEYRING_FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        raise KeyringError(f"there is no keyring at {path}") from None
    except OSError as error:
        raise KeyringError(f"cannot read the keyring {path}: {error.strerror or error}") from None
    if len(raw) > KEYRING_FILE_BYTES_MAX:
        raise KeyringError(f"{path} is too large to be a keyring")
    try:
        document = json.loads(raw)
    except ValueError:
        raise KeyringError(f"{path} is not a keyring (not JSON): it is damaged") from None
    if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
        raise KeyringError(f"{path} is not a keyring of format {KEYRING_FORMAT}")
    if not isinstance(document.get("keys"), list):
        raise KeyringError(f"{path} has no list of keys: it is damaged")
    return document


def _write_document(directory: Path, document: dict[str, Any]) -> None:
    """Replace the keyring file atomically and durably."""
    path = directory / KEYRING_FILE_NAME
    temporary = directory / (KEYRING_FILE_NAME + ".tmp")
    data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(directory)


def _lock(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise KeyringInUseError(
            f"the keyring in {directory} is in use by another process (a running server?)"
        ) from None
    return fd


class Keyring:
    """The unwrapped data keys of one keyring file; build with `create` or `load`."""

    def __init__(
        self,
        directory: Path,
        master: MasterKey,
        entries: list[tuple[int, str, bytes]],
        *,
        lock_fd: int | None,
        read_only: bool,
    ) -> None:
        self.directory = Path(directory)
        self.read_only = read_only
        self._master = master
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()  # adding a key from a worker thread is possible
        self._by_id: dict[int, DataKey] = {}
        self._by_scope: dict[str, DataKey] = {}  # the newest key of each scope
        self._wrapped: dict[int, bytes] = {}
        for key_id, scope, wrapped in entries:
            self._install(DataKey(key_id, scope, unwrap_key(master, key_id, scope, wrapped)))
            self._wrapped[key_id] = wrapped

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, master: MasterKey) -> Keyring:
        """A new keyring in `directory` (which must not hold one), with its log and node keys."""
        directory = Path(directory)
        make_directory_durable(directory)
        lock_fd = _lock(directory)
        try:
            if (directory / KEYRING_FILE_NAME).exists():
                raise KeyringError(f"{directory} already holds a keyring")
            keyring = cls(directory, master, [], lock_fd=lock_fd, read_only=False)
            keyring._add_entry(LOG_SCOPE, save=False)
            keyring._add_entry(NODE_SCOPE, save=False)
            keyring._save()
        except BaseException:
            os.close(lock_fd)
            raise
        return keyring

    @classmethod
    def load(cls, directory: Path, master: MasterKey, *, read_only: bool = False) -> Keyring:
        """The keyring in `directory`, unwrapped with `master`.

        A wrong master key raises `WrongMasterKeyError` and changes nothing. `read_only` (for
        a keyring copied into a backup, say) takes no lock and refuses to add keys.
        """
        directory = Path(directory)
        lock_fd = None if read_only else _lock(directory)
        try:
            document = _read_document(directory / KEYRING_FILE_NAME)
            expected = _unb64(document.get("check"), "check")
            if not hmac.compare_digest(expected, check_value(master)):
                source = f" in {master.source}" if master.source else ""
                raise WrongMasterKeyError(
                    f"the master key{source} is not the one the keyring in {directory} was "
                    "made with (a wrong key file, or the keyring was rotated to another key)"
                )
            entries = list(_parse_entries(document))
            return cls(directory, master, entries, lock_fd=lock_fd, read_only=read_only)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    def close(self) -> None:
        """Release the lock (the keys stay usable in this process)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- keys ----------------------------------------------------------------------------

    def _install(self, key: DataKey) -> None:
        if key.key_id in self._by_id:
            raise KeyringError(f"data key id {key.key_id} appears twice in the keyring")
        self._by_id[key.key_id] = key
        newest = self._by_scope.get(key.scope)
        if newest is None or newest.key_id < key.key_id:
            self._by_scope[key.scope] = key

    def _add_entry(self, scope: str, *, save: bool = True) -> DataKey:
        if self.read_only:
            raise KeyringError(f"the keyring in {self.directory} is read-only: no key for {scope}")
        key_id = max(self._by_id, default=0) + 1
        if key_id > KEY_ID_MAX:
            raise KeyringError("the keyring has no key id left")
        secret = os.urandom(DATA_KEY_BYTES)
        wrapped = wrap_key(self._master, key_id, scope, secret)
        key = DataKey(key_id, scope, secret)
        if save:
            # Durable before anyone can seal with it: data sealed under a key that a crash
            # forgot could never be read again.
            self._save(pending=[(key, wrapped)])
        self._install(key)
        self._wrapped[key_id] = wrapped
        return key

    def key_for(self, scope: str) -> DataKey:
        """The newest data key of `scope`, made (and durably saved) if the scope has none."""
        key = self._by_scope.get(scope)
        if key is not None:
            return key
        with self._mutex:
            key = self._by_scope.get(scope)
            if key is None:
                key = self._add_entry(scope)
            return key

    def add_data_key(self, scope: str) -> DataKey:
        """A new data key for `scope`: later seals use it, earlier data stays readable."""
        with self._mutex:
            return self._add_entry(scope)

    def data_key(self, key_id: int) -> DataKey | None:
        return self._by_id.get(key_id)

    def data_keys(self) -> list[DataKey]:
        return sorted(self._by_id.values(), key=lambda k: k.key_id)

    # --- sealing -------------------------------------------------------------------------

    def seal(self, scope: str, plaintext: bytes, context: bytes) -> bytes:
        return self.key_for(scope).seal(plaintext, context)

    def open(self, sealed: bytes, context: bytes, what: str = "a sealed value") -> bytes:
        """The plaintext of `sealed`, or `AuthenticationError`: never wrong data."""
        check_format(sealed, what)
        key_id = key_id_of(sealed)
        key = self._by_id.get(key_id)
        if key is None:
            raise AuthenticationError(
                f"{what} names data key {key_id}, which the keyring in {self.directory} does not "
                "hold (copied from another data directory?)"
            )
        return key.open(sealed, context, what)

    @property
    def record_codec(self) -> RecordCodec:
        return RecordCodec(self)

    # --- rotation ------------------------------------------------------------------------

    def rewrap(self, new_master: MasterKey) -> None:
        """Wrap every data key under `new_master` (master key rotation); the data is untouched.

        The new keyring replaces the old one in one rename, then is read back and checked;
        until this returns, keep the old master key: a crash may leave either keyring.
        """
        if self.read_only:
            raise KeyringError(f"the keyring in {self.directory} is read-only")
        with self._mutex:
            wrapped = {
                key.key_id: wrap_key(new_master, key.key_id, key.scope, key.secret)
                for key in self._by_id.values()
            }
            old_master, old_wrapped = self._master, self._wrapped
            self._master, self._wrapped = new_master, wrapped
            try:
                self._save()
            except BaseException:
                self._master, self._wrapped = old_master, old_wrapped
                raise
        # Read back what is on disk: every key must unwrap under the new master key.
        document = _read_document(self.directory / KEYRING_FILE_NAME)
        if not hmac.compare_digest(_unb64(document.get("check"), "check"), check_value(new_master)):
            raise KeyringError(f"the rotated keyring in {self.directory} does not read back")
        for key_id, scope, wrapped_key in _parse_entries(document):
            if unwrap_key(new_master, key_id, scope, wrapped_key) != self._by_id[key_id].secret:
                raise KeyringError(f"data key {key_id} does not read back after rotation")

    def _save(self, pending: list[tuple[DataKey, bytes]] | None = None) -> None:
        """Write every installed key, and `pending` ones not installed yet, to the file."""
        wrapped = dict(self._wrapped)
        keys = self.data_keys()
        for key, wrapped_key in pending or []:
            keys.append(key)
            wrapped[key.key_id] = wrapped_key
        document = {
            "format": KEYRING_FORMAT,
            "check": _b64(check_value(self._master)),
            "keys": [
                {"id": key.key_id, "scope": key.scope, "wrapped": _b64(wrapped[key.key_id])}
                for key in keys
            ],
        }
        _write_document(self.directory, document)


def _parse_entries(document: dict[str, Any]) -> Iterator[tuple[int, str, bytes]]:
    for position, entry in enumerate(document["keys"]):
        if not isinstance(entry, dict):
            raise KeyringError(f"keyring entry {position} is not an object")
        key_id, scope = entry.get("id"), entry.get("scope")
        if not isinstance(key_id, int) or not 0 < key_id <= KEY_ID_MAX:
            raise KeyringError(f"keyring entry {position} has no valid id")
        if not isinstance(scope, str) or not scope:
            raise KeyringError(f"keyring entry {position} has no scope")
        yield key_id, scope, _unb64(entry.get("wrapped"), f"keys[{position}].wrapped")


class RecordCodec:
    """Seals redo records before they enter the log and opens them before they are applied.

    A record this process sealed is usually applied moments later from the very same bytes
    object (the log hands back what it was given): its plaintext is remembered until then,
    so the leader does not decrypt what it has just encrypted. Records from anywhere else
    (replay, another replica) are opened and authenticated as usual.
    """

    __slots__ = ("_keyring", "_sealed", "_sealed_bytes")

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        # id(sealed bytes) -> (the sealed bytes, kept alive so the id stays theirs; plaintext)
        self._sealed: dict[int, tuple[bytes, bytes]] = {}
        self._sealed_bytes = 0

    def seal(self, data: bytes) -> bytes:
        sealed = self._keyring.seal(LOG_SCOPE, data, LOG_RECORD_CONTEXT)
        size = len(sealed) + len(data)
        if (
            len(self._sealed) >= SEALED_RECORDS_REMEMBERED_MAX
            or self._sealed_bytes + size > SEALED_RECORDS_REMEMBERED_BYTES_MAX
        ):
            # Forgetting is always safe: a forgotten record is decrypted when applied.
            self._sealed.clear()
            self._sealed_bytes = 0
        self._sealed[id(sealed)] = (sealed, data)
        self._sealed_bytes += size
        return sealed

    def open(self, data: bytes) -> bytes:
        remembered = self._sealed.pop(id(data), None)
        if remembered is not None:
            self._sealed_bytes -= len(remembered[0]) + len(remembered[1])
            if remembered[0] is data:
                return remembered[1]
        return self._keyring.open(data, LOG_RECORD_CONTEXT, "a log record")
