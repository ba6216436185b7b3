"""The start rules: which data directories open with which master key, touching nothing
when they refuse."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from keeldb.crypto.data_dir import open_for_data_dir
from keeldb.crypto.errors import (
    EncryptionStateError,
    MasterKeyError,
    WrongMasterKeyError,
)
from keeldb.crypto.keyring import keyring_file
from keeldb.storage.lmdb_store import LmdbStore


def key_file(path: Path) -> Path:
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_new_directory_with_a_key_gets_a_keyring(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    keyring = open_for_data_dir(data, key_file(tmp_path / "k"))
    assert keyring is not None
    assert keyring_file(data).exists()
    keyring.close()


def test_a_directory_without_a_key_and_without_a_keyring_is_not_encrypted(tmp_path: Path) -> None:
    assert open_for_data_dir(tmp_path, None) is None
    assert not keyring_file(tmp_path).exists()


def test_an_encrypted_directory_reopens_with_its_key(tmp_path: Path) -> None:
    data, key = tmp_path / "data", key_file(tmp_path / "k")
    data.mkdir()
    first = open_for_data_dir(data, key)
    assert first is not None
    first.close()
    second = open_for_data_dir(data, key)
    assert second is not None
    assert [k.secret for k in second.data_keys()] == [k.secret for k in first.data_keys()]
    second.close()


def test_an_encrypted_directory_refuses_a_wrong_key_and_no_key_touching_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    keyring = open_for_data_dir(data, key_file(tmp_path / "k"))
    assert keyring is not None
    keyring.close()
    before = tree_digest(data)
    with pytest.raises(WrongMasterKeyError):
        open_for_data_dir(data, key_file(tmp_path / "other"))
    with pytest.raises(EncryptionStateError, match="is encrypted at rest: start with"):
        open_for_data_dir(data, None)
    assert tree_digest(data) == before


def test_a_directory_created_without_encryption_refuses_a_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    LmdbStore(data / "store").close()
    before = tree_digest(data)
    with pytest.raises(EncryptionStateError, match="created without encryption"):
        open_for_data_dir(data, key_file(tmp_path / "k"))
    assert tree_digest(data) == before
    assert not keyring_file(data).exists()


def test_a_directory_with_only_log_segments_counts_as_holding_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "wal").mkdir(parents=True)
    (data / "wal" / "00000000000000000001.wal").write_bytes(b"x")
    with pytest.raises(EncryptionStateError):
        open_for_data_dir(data, key_file(tmp_path / "k"))


def test_a_master_key_inside_the_data_or_backup_directory_is_refused(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    data.mkdir()
    backups.mkdir()
    with pytest.raises(MasterKeyError, match="inside"):
        open_for_data_dir(data, key_file(data / "k"))
    with pytest.raises(MasterKeyError, match="inside"):
        open_for_data_dir(data, key_file(backups / "k"), backup_dir=backups)
    assert not keyring_file(data).exists()


def test_offline_readers_open_the_keyring_without_locking_or_creating(tmp_path: Path) -> None:
    from keeldb.crypto.data_dir import open_for_reading

    data, key = tmp_path / "data", key_file(tmp_path / "k")
    data.mkdir()
    assert open_for_reading(data, None) is None
    with pytest.raises(EncryptionStateError, match="not encrypted"):
        open_for_reading(data, key)
    assert not keyring_file(data).exists()
    live = open_for_data_dir(data, key)
    assert live is not None  # a running node holds the keyring; a reader still opens it
    reader = open_for_reading(data, key)
    assert reader is not None
    assert [k.secret for k in reader.data_keys()] == [k.secret for k in live.data_keys()]
    with pytest.raises(EncryptionStateError, match="give --master-key-file"):
        open_for_reading(data, None)
    with pytest.raises(WrongMasterKeyError):
        open_for_reading(data, key_file(tmp_path / "other"))
    live.close()


def test_a_lost_keyring_is_named_instead_of_failing_on_ciphertext(tmp_path: Path) -> None:
    import asyncio
    import shutil

    from keeldb.crypto.errors import KeyringError
    from keeldb.node import Node, NodeConfig

    data, key = tmp_path / "data", key_file(tmp_path / "k")

    async def write_one() -> None:
        node = await Node.start(
            NodeConfig(port=0, data_dir=data, master_key_file=key, functions=False)
        )
        try:
            await node.database.dispatch(
                "CreateTable",
                {
                    "TableName": "lost",
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                    "BillingMode": "PAY_PER_REQUEST",
                },
            )
        finally:
            await node.close()

    asyncio.run(write_one())
    shutil.rmtree(data / "keyring")
    for master_key_file in (None, key):
        with pytest.raises(KeyringError, match="holds encrypted data but its keyring"):
            open_for_data_dir(data, master_key_file)
