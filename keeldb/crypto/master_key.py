"""Loading the master key: the one secret that is never stored with the data.

Owns the master key file's format (32 raw bytes, or the same 32 bytes as 64 hexadecimal
digits, surrounding whitespace allowed) and the rule that the file must not live inside the
data directory or the backup directory, since anything there is copied into backups next to
the data it protects. It must never write the key anywhere, log it, or keep it in a
printable form.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from keeldb.crypto.errors import MasterKeyError

log = logging.getLogger("keeldb.crypto")

MASTER_KEY_BYTES = 32  # AES-256
MASTER_KEY_FILE_BYTES_MAX = 4096  # far above 64 hex digits and whitespace; refuses odd files


class MasterKey:
    """32 secret bytes; `repr` never shows them."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: bytes, source: str = "") -> None:
        if len(secret) != MASTER_KEY_BYTES:
            raise MasterKeyError(
                f"a master key is {MASTER_KEY_BYTES} bytes, not {len(secret)}"
                + (f" ({source})" if source else "")
            )
        self._secret = bytes(secret)
        self.source = source

    @property
    def secret(self) -> bytes:
        return self._secret

    def __repr__(self) -> str:
        return f"MasterKey({self.source or 'in memory'})"


def parse_master_key(data: bytes, source: str = "") -> MasterKey:
    """A master key from a file's contents: 32 raw bytes, or 64 hex digits."""
    if len(data) == MASTER_KEY_BYTES:
        return MasterKey(data, source)
    text = data.strip()
    if len(text) == 2 * MASTER_KEY_BYTES:
        try:
            return MasterKey(bytes.fromhex(text.decode("ascii")), source)
        except (UnicodeDecodeError, ValueError):
            pass
    raise MasterKeyError(
        f"{source or 'the master key'} does not hold a master key: expected "
        f"{MASTER_KEY_BYTES} random bytes or {2 * MASTER_KEY_BYTES} hexadecimal digits, found "
        f"{len(data)} bytes (make one with: openssl rand -out FILE {MASTER_KEY_BYTES})"
    )


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def load_master_key(path: Path, *, keep_out_of: tuple[Path, ...] = ()) -> MasterKey:
    """Read the master key file at `path`.

    `keep_out_of` names the directories the file must not be in (the data directory and the
    backup directory): a key stored with the data it protects protects nothing.
    """
    path = Path(path)
    for directory in keep_out_of:
        if _inside(path, directory):
            raise MasterKeyError(
                f"the master key file {path} is inside {directory}, which is copied into "
                "backups with the data; keep the master key somewhere else"
            )
    try:
        with open(path, "rb") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            data = file.read(MASTER_KEY_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise MasterKeyError(
            f"cannot read the master key file {path}: {error.strerror or error}"
        ) from None
    if len(data) > MASTER_KEY_FILE_BYTES_MAX:
        raise MasterKeyError(f"{path} is too large to be a master key file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "the master key file %s can be read by other users (mode %o); chmod 600 it",
            path,
            mode,
        )
    return parse_master_key(data, str(path))
