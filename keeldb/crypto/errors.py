"""The operating errors of encryption at rest.

None of these is a client's mistake: they stop a node from starting (a wrong or missing master
key, a keyring that does not fit the data directory) or report data that failed
authentication. The command line prints any `EncryptionError` as one line and exits 1.
"""

from __future__ import annotations


class EncryptionError(Exception):
    """Base of every encryption-at-rest failure; the message is meant for an operator."""


class MasterKeyError(EncryptionError):
    """The master key file cannot be used: unreadable, the wrong size, or inside the data."""


class WrongMasterKeyError(EncryptionError):
    """The master key is not the one the keyring was wrapped with."""


class EncryptionStateError(EncryptionError):
    """The data directory and the master key disagree: an encrypted directory started without
    a key, or a directory created without encryption started with one."""


class KeyringError(EncryptionError):
    """The keyring is damaged, of an unknown format, or lacks a data key that data names."""


class KeyringInUseError(EncryptionError):
    """Another process holds the keyring (a running server, or a rotation)."""


class AuthenticationError(EncryptionError):
    """A ciphertext failed authentication: it was altered, moved to another place, or sealed
    under a key this keyring does not hold. Never answered with data."""
