"""Sealed objects: whole files or blobs (backup parts, archived extras) under a table's key.

This module owns the sealing of data that leaves the store and the log in another form than
a copy of them: a backup's dump of a table's items, say. Such an object is sealed with its
table's data key (the node key when it belongs to no table) and its name in the backup store
as associated data, so it cannot be passed off as another object. It never decides what is
written or where.

Exports in DynamoDB JSON format are meant to be read by other tools and are not sealed: like
DynamoDB's exports to S3, they rely on the encryption of the bucket they are written to.
"""

from __future__ import annotations

from keeldb.crypto.keyring import NODE_SCOPE, Keyring, table_scope

OBJECT_CONTEXT_TAG = b"O"  # associated data of an object: this tag and the object's name


def seal_object(keyring: Keyring, table_id: str | None, name: str, data: bytes) -> bytes:
    scope = NODE_SCOPE if table_id is None else table_scope(table_id)
    return keyring.seal(scope, data, OBJECT_CONTEXT_TAG + name.encode("utf-8"))


def open_object(keyring: Keyring, name: str, sealed: bytes) -> bytes:
    """The plaintext of the object stored under `name`, or `AuthenticationError`."""
    return keyring.open(sealed, OBJECT_CONTEXT_TAG + name.encode("utf-8"), f"object {name}")
