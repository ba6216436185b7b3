"""The keyring: wrapped data keys, the master key check, locking and rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keeldb.crypto.errors import (
    AuthenticationError,
    KeyringError,
    KeyringInUseError,
    WrongMasterKeyError,
)
from keeldb.crypto.keyring import (
    KEYRING_FILE_NAME,
    LOG_SCOPE,
    NODE_SCOPE,
    Keyring,
    table_scope,
)
from keeldb.crypto.master_key import MasterKey


def master() -> MasterKey:
    return MasterKey(os.urandom(32), "test")


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_new_keyring_has_a_log_and_a_node_key_and_no_key_in_plaintext(tmp_path: Path) -> None:
    key = master()
    keyring = Keyring.create(tmp_path / "k", key)
    keyring.close()
    text = (tmp_path / "k" / KEYRING_FILE_NAME).read_bytes()
    document = json.loads(text)
    assert [entry["scope"] for entry in document["keys"]] == [LOG_SCOPE, NODE_SCOPE]
    for data_key in keyring.data_keys():
        assert data_key.secret not in text
        assert data_key.secret.hex().encode() not in text
    assert key.secret not in text


def test_data_keys_survive_reopening_with_the_master_key(tmp_path: Path) -> None:
    key = master()
    keyring = Keyring.create(tmp_path, key)
    table_key = keyring.key_for(table_scope("t1"))
    sealed = keyring.seal(table_scope("t1"), b"item", b"ctx")
    keyring.close()
    reopened = Keyring.load(tmp_path, key)
    assert reopened.key_for(table_scope("t1")).secret == table_key.secret
    assert reopened.open(sealed, b"ctx") == b"item"
    reopened.close()


def test_each_table_gets_its_own_data_key_once(tmp_path: Path) -> None:
    keyring = Keyring.create(tmp_path, master())
    a, b = keyring.key_for(table_scope("a")), keyring.key_for(table_scope("b"))
    assert a.secret != b.secret
    assert keyring.key_for(table_scope("a")) is a
    assert len(keyring.data_keys()) == 4
    keyring.close()


def test_a_wrong_master_key_is_refused_and_the_keyring_is_unchanged(tmp_path: Path) -> None:
    keyring = Keyring.create(tmp_path, master())
    keyring.key_for(table_scope("t"))
    keyring.close()
    before = files(tmp_path)
    with pytest.raises(WrongMasterKeyError, match="not the one the keyring"):
        Keyring.load(tmp_path, master())
    assert files(tmp_path) == before


def test_a_second_writer_is_refused_while_the_keyring_is_held(tmp_path: Path) -> None:
    key = master()
    keyring = Keyring.create(tmp_path, key)
    with pytest.raises(KeyringInUseError):
        Keyring.load(tmp_path, key)
    reader = Keyring.load(tmp_path, key, read_only=True)
    with pytest.raises(KeyringError, match="read-only"):
        reader.key_for(table_scope("new"))
    keyring.close()
    Keyring.load(tmp_path, key).close()


def test_rotation_rewraps_every_key_and_the_old_master_key_no_longer_opens(
    tmp_path: Path,
) -> None:
    old, new = master(), master()
    keyring = Keyring.create(tmp_path, old)
    sealed = keyring.seal(table_scope("t"), b"kept", b"k")
    secrets = {k.key_id: k.secret for k in keyring.data_keys()}
    before = json.loads((tmp_path / KEYRING_FILE_NAME).read_text())
    keyring.rewrap(new)
    keyring.close()
    after = json.loads((tmp_path / KEYRING_FILE_NAME).read_text())
    assert [e["id"] for e in after["keys"]] == [e["id"] for e in before["keys"]]
    assert all(a["wrapped"] != b["wrapped"] for a, b in zip(after["keys"], before["keys"]))
    with pytest.raises(WrongMasterKeyError):
        Keyring.load(tmp_path, old)
    rotated = Keyring.load(tmp_path, new)
    assert {k.key_id: k.secret for k in rotated.data_keys()} == secrets
    assert rotated.open(sealed, b"k") == b"kept"  # the data was never rewritten
    rotated.close()


def test_a_wrapped_key_moved_to_another_scope_does_not_unwrap(tmp_path: Path) -> None:
    key = master()
    keyring = Keyring.create(tmp_path, key)
    keyring.close()
    path = tmp_path / KEYRING_FILE_NAME
    document = json.loads(path.read_text())
    document["keys"][0]["scope"], document["keys"][1]["scope"] = NODE_SCOPE, LOG_SCOPE
    path.write_text(json.dumps(document))
    with pytest.raises(KeyringError, match="damaged"):
        Keyring.load(tmp_path, key)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: "not json",
        lambda d: json.dumps({**d, "format": "other"}),
        lambda d: json.dumps({**d, "keys": 5}),
        lambda d: json.dumps({**d, "keys": [{"id": 0, "scope": "log", "wrapped": "AA=="}]}),
        lambda d: json.dumps({**d, "keys": [{"id": 1, "scope": "log", "wrapped": "%%"}]}),
        lambda d: json.dumps({**d, "keys": d["keys"] + d["keys"][:1]}),
    ],
)
def test_a_damaged_keyring_is_reported_as_such(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    key = master()
    Keyring.create(tmp_path, key).close()
    path = tmp_path / KEYRING_FILE_NAME
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(KeyringError):
        Keyring.load(tmp_path, key)


def test_data_sealed_under_a_key_the_keyring_lacks_is_refused(tmp_path: Path) -> None:
    first = Keyring.create(tmp_path / "a", master())
    second = Keyring.create(tmp_path / "b", master())
    sealed = first.seal(table_scope("x"), b"secret", b"")
    with pytest.raises(AuthenticationError):
        second.open(sealed, b"")
    first.close()
    second.close()


def test_a_newer_data_key_seals_while_older_data_stays_readable(tmp_path: Path) -> None:
    keyring = Keyring.create(tmp_path, master())
    scope = table_scope("t")
    old = keyring.seal(scope, b"old", b"")
    newer = keyring.add_data_key(scope)
    fresh = keyring.seal(scope, b"new", b"")
    assert keyring.key_for(scope) is newer
    assert keyring.open(old, b"") == b"old"
    assert keyring.open(fresh, b"") == b"new"
    keyring.close()


def test_a_key_that_could_not_be_saved_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keeldb.crypto import keyring as keyring_module

    keyring = Keyring.create(tmp_path, master())

    def full_disk(directory: Path, document: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keyring_module, "_write_document", full_disk)
    with pytest.raises(OSError):
        keyring.key_for(table_scope("t"))
    assert [k.scope for k in keyring.data_keys()] == [LOG_SCOPE, NODE_SCOPE]
    monkeypatch.undo()
    assert keyring.key_for(table_scope("t")).scope == table_scope("t")
    keyring.close()


def test_a_crash_while_saving_leaves_the_old_keyring_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = master()
    keyring = Keyring.create(tmp_path, key)
    before = (tmp_path / KEYRING_FILE_NAME).read_bytes()

    def crash(source: object, destination: object) -> None:
        raise KeyboardInterrupt  # the process stops between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        keyring.rewrap(master())
    monkeypatch.undo()
    keyring.close()
    assert (tmp_path / KEYRING_FILE_NAME).read_bytes() == before
    Keyring.load(tmp_path, key).close()


def test_the_keyring_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    Keyring.create(tmp_path, master()).close()
    assert (tmp_path / KEYRING_FILE_NAME).stat().st_mode & 0o077 == 0
