"""`python -m keeldb.crypto`: new-key, check and rotate, each one line and an exit status."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from keeldb.crypto.__main__ import main
from keeldb.crypto.errors import EncryptionStateError
from keeldb.crypto.keyring import Keyring, keyring_dir
from keeldb.crypto.master_key import load_master_key
from keeldb.node import Node, NodeConfig


def test_new_key_writes_a_private_key_and_never_overwrites_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "master.key"
    assert main(["new-key", str(path)]) == 0
    assert len(path.read_bytes()) == 32
    assert path.stat().st_mode & 0o077 == 0
    before = path.read_bytes()
    assert main(["new-key", str(path)]) == 1
    assert "never overwritten" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_check_and_rotate_on_a_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, old, new = tmp_path / "data", tmp_path / "old.key", tmp_path / "new.key"
    assert main(["new-key", str(old)]) == 0
    assert main(["new-key", str(new)]) == 0
    Keyring.create(keyring_dir(data), load_master_key(old)).close()
    capsys.readouterr()
    assert main(["check", "--data-dir", str(data), "--key", str(old)]) == 0
    assert "opens all 2 data keys" in capsys.readouterr().out
    assert main(["check", "--data-dir", str(data), "--key", str(new)]) == 1
    assert "is not the one the keyring" in capsys.readouterr().err
    assert (
        main(["rotate", "--data-dir", str(data), "--old-key", str(old), "--new-key", str(old)]) == 1
    )
    assert "nothing to rotate" in capsys.readouterr().err
    assert (
        main(["rotate", "--data-dir", str(data), "--old-key", str(old), "--new-key", str(new)]) == 0
    )
    assert main(["check", "--keyring-dir", str(keyring_dir(data)), "--key", str(new)]) == 0
    assert main(["check", "--data-dir", str(data), "--key", str(old)]) == 1


def test_rotate_refuses_a_new_key_kept_inside_the_data_directory(tmp_path: Path) -> None:
    data, old = tmp_path / "data", tmp_path / "old.key"
    assert main(["new-key", str(old)]) == 0
    Keyring.create(keyring_dir(data), load_master_key(old)).close()
    inside = data / "new.key"
    inside.write_bytes(os.urandom(32))
    assert (
        main(["rotate", "--data-dir", str(data), "--old-key", str(old), "--new-key", str(inside)])
        == 1
    )


def test_an_in_memory_node_refuses_a_master_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(os.urandom(32))
    config = NodeConfig(port=0, data_dir=None, master_key_file=key, functions=False)
    with pytest.raises(EncryptionStateError, match="in-memory"):
        asyncio.run(Node.start(config))
