"""Master key files: raw or hex, the right size, never inside the data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from keeldb.crypto.errors import MasterKeyError
from keeldb.crypto.master_key import MasterKey, load_master_key, parse_master_key


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_a_file_of_32_raw_bytes_is_a_master_key(tmp_path: Path) -> None:
    secret = os.urandom(32)
    assert load_master_key(write(tmp_path / "k", secret)).secret == secret


def test_64_hex_digits_with_a_newline_are_a_master_key(tmp_path: Path) -> None:
    secret = os.urandom(32)
    path = write(tmp_path / "k", secret.hex().encode() + b"\n")
    assert load_master_key(path).secret == secret


@pytest.mark.parametrize("data", [b"", b"short", os.urandom(31), os.urandom(33), b"z" * 64])
def test_anything_else_is_refused_with_the_way_to_make_a_key(data: bytes) -> None:
    with pytest.raises(MasterKeyError, match="openssl rand -out FILE 32"):
        parse_master_key(data, "k")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="cannot read the master key file"):
        load_master_key(tmp_path / "absent")


def test_a_key_file_inside_the_data_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write(data / "master.key", os.urandom(32))
    with pytest.raises(MasterKeyError, match="inside"):
        load_master_key(path, keep_out_of=(data,))
    # Through a relative path too.
    monkeypatch.chdir(data)
    with pytest.raises(MasterKeyError, match="inside"):
        load_master_key(Path("master.key"), keep_out_of=(Path("."),))


def test_a_key_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "k", os.urandom(32), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="keeldb.crypto"):
        load_master_key(path)
    assert "chmod 600" in caplog.text


def test_the_key_never_appears_in_its_repr() -> None:
    secret = bytes(range(32))
    key = MasterKey(secret, "file")
    assert secret.hex() not in repr(key)
    assert repr(secret) not in repr(key)
