"""The sealed form of one value or log record: AES-256-GCM under a data key.

This module owns the bytes of a ciphertext and the rule that makes every (key, nonce) pair
unique. It never reads or writes files and never sees the master key.

Layout (`SEALED_OVERHEAD_BYTES` = 45 bytes more than the plaintext):

| bytes | field |
|---|---|
| 1 | format version (`FORMAT_VERSION`) |
| 4 | data key id, u32 big-endian: which keyring entry sealed it |
| 16 | run salt: random, drawn once per data key per process |
| 8 | counter, u64 big-endian: the nonce within the run |
| n + 16 | AES-256-GCM ciphertext and its 16-byte tag |

Nonces. GCM loses both confidentiality and integrity if a (key, nonce) pair ever repeats,
and random 96-bit nonces are only safe for about 2**32 messages per key (NIST SP 800-38D,
section 8.3), which a busy log would reach in days. So a data key never encrypts directly:
each process draws a random 128-bit run salt and derives a run key from the data key with
HKDF-SHA256 (RFC 5869), then numbers its messages with a 64-bit counter that starts at 0.
Within a run the counter never repeats; two runs (two processes, or a data directory and a
restored copy of it that share a keyring) use different run keys unless their 128-bit salts
collide. Nothing has to be made durable before a seal, and nothing depends on a clock.

Associated data. The header and a caller-given context (the store key of a value, a fixed
label for log records) are authenticated with the ciphertext: a value copied under another
key, or a header altered to name another key or run, fails to open.
"""

from __future__ import annotations

import itertools
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keeldb.crypto.errors import AuthenticationError

FORMAT_VERSION = 1
HEADER = struct.Struct(">BI16sQ")  # version, data key id, run salt, counter
HEADER_BYTES = HEADER.size
TAG_BYTES = 16  # GCM's full-length tag; shorter tags weaken authentication
SEALED_OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES
DATA_KEY_BYTES = 32  # AES-256
RUN_SALT_BYTES = 16
NONCE_PAD = bytes(4)  # a 96-bit nonce is these 4 zero bytes and the 64-bit counter
COUNTER_MAX = (1 << 64) - 1
KEY_ID_MAX = (1 << 32) - 1
RUN_KEYS_CACHED_MAX = 4096  # derived keys of other runs kept for reads; each costs one HKDF
_RUN_KEY_INFO = b"keeldb run key v1"
_KEY_ID = struct.Struct(">I")


def key_id_of(sealed: bytes) -> int:
    """The data key id a sealed value names (its format already checked by `check_format`)."""
    key_id: int = _KEY_ID.unpack_from(sealed, 1)[0]
    return key_id


def check_format(sealed: bytes, what: str) -> None:
    if len(sealed) < SEALED_OVERHEAD_BYTES or sealed[0] != FORMAT_VERSION:
        raise AuthenticationError(
            f"{what} is not sealed data of format {FORMAT_VERSION} (too short or another format)"
        )


class DataKey:
    """One data key of the keyring: seals under this run's derived key, opens any run's."""

    def __init__(self, key_id: int, scope: str, secret: bytes, *, run_salt: bytes | None = None):
        assert 0 < key_id <= KEY_ID_MAX, key_id
        assert len(secret) == DATA_KEY_BYTES
        self.key_id = key_id
        self.scope = scope
        self._secret = secret
        self._run_salt = os.urandom(RUN_SALT_BYTES) if run_salt is None else run_salt
        assert len(self._run_salt) == RUN_SALT_BYTES
        self._run_cipher = AESGCM(self._derive(self._run_salt))
        self._encrypt = self._run_cipher.encrypt
        # Every header of this run starts with the same 21 bytes; only the counter follows.
        self._header_start = HEADER.pack(FORMAT_VERSION, key_id, self._run_salt, 0)[:-8]
        # next() of itertools.count is atomic under the GIL: threads never share a counter.
        self._counter = itertools.count()
        self._run_ciphers: dict[bytes, AESGCM] = {self._run_salt: self._run_cipher}

    @property
    def secret(self) -> bytes:
        return self._secret

    def __repr__(self) -> str:
        return f"DataKey({self.key_id}, {self.scope!r})"

    def _derive(self, salt: bytes) -> bytes:
        info = _RUN_KEY_INFO + _KEY_ID.pack(self.key_id)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=DATA_KEY_BYTES, salt=salt, info=info)
        return hkdf.derive(self._secret)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        # to_bytes raises OverflowError past COUNTER_MAX: a run never wraps its counter.
        counter = next(self._counter).to_bytes(8, "big")
        header = self._header_start + counter
        return header + self._encrypt(NONCE_PAD + counter, plaintext, header + context)

    def open(self, sealed: bytes, context: bytes, what: str) -> bytes:
        """The plaintext of `sealed` (whose format and key id the caller checked)."""
        assert key_id_of(sealed) == self.key_id
        header = sealed[:HEADER_BYTES]
        salt = header[5:21]
        cipher = self._run_ciphers.get(salt)
        if cipher is None:
            if len(self._run_ciphers) >= RUN_KEYS_CACHED_MAX:
                self._run_ciphers.clear()
                self._run_ciphers[self._run_salt] = self._run_cipher
            cipher = self._run_ciphers[salt] = AESGCM(self._derive(salt))
        try:
            return cipher.decrypt(NONCE_PAD + header[-8:], sealed[HEADER_BYTES:], header + context)
        except InvalidTag:
            raise AuthenticationError(
                f"{what} failed authentication: it was altered, or moved from another place"
            ) from None
