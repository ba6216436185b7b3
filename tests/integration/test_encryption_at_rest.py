"""Encryption at rest through real `keeldb serve` processes: no plaintext of a marker value
anywhere on disk, everything reads back after a restart, a wrong or missing master key is
refused with the directory untouched, rotation works, and altered ciphertext is an error,
never data."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from botocore.exceptions import ClientError

from keeldb.model.keys import item_key
from keeldb.storage.lmdb_store import LmdbStore

MARKER = "MARKER-c0ffee-4b1d-only-ever-ciphertext"
ITEMS = 40
START_SECONDS_MAX = 60  # a refused start is one line and an exit: this only bounds a hang


def new_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def disk_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in sorted(root.rglob("*")) if p.is_file()]


def files_with(marker: bytes, *roots: Path) -> list[str]:
    return [str(p) for p in disk_files(*roots) if marker in p.read_bytes()]


def digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in disk_files(root)}


def refused_start(*args: str) -> subprocess.CompletedProcess[str]:
    """`keeldb serve ARGS` that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "keeldb", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=START_SECONDS_MAX,
        check=False,
    )


def fill(ddb: Any) -> None:
    """A table with both index kinds and a stream, written through every write path."""
    ddb.create_table(
        TableName="vault",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by-g-local",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "g", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        SSESpecification={"Enabled": True},
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(ITEMS):
        ddb.put_item(
            TableName="vault",
            Item={
                "pk": {"S": f"p{n % 4}"},
                "sk": {"N": str(n)},
                "g": {"S": f"g{n % 3}"},
                "secret": {"S": MARKER},
                "nested": {"M": {"deep": {"L": [{"S": MARKER}]}}},
                "set": {"SS": [MARKER, "other"]},
            },
        )
    for n in range(0, ITEMS, 5):
        ddb.update_item(
            TableName="vault",
            Key={"pk": {"S": f"p{n % 4}"}, "sk": {"N": str(n)}},
            UpdateExpression="SET extra = :m",
            ExpressionAttributeValues={":m": {"S": MARKER + "-updated"}},
        )
    ddb.delete_item(TableName="vault", Key={"pk": {"S": "p1"}, "sk": {"N": "1"}})
    ddb.execute_statement(
        Statement="INSERT INTO vault VALUE {'pk': 'p9', 'sk': 999, 'g': 'g0', 'secret': ?}",
        Parameters=[{"S": MARKER}],
    )


def check_everything_reads_back(ddb: Any) -> None:
    items = ddb.scan(TableName="vault", ConsistentRead=True)["Items"]
    assert len(items) == ITEMS  # 40 puts, one delete, one insert
    assert all(item["secret"]["S"] == MARKER for item in items)
    updated = [item for item in items if "extra" in item]
    assert len(updated) == ITEMS // 5
    got = ddb.get_item(TableName="vault", Key={"pk": {"S": "p2"}, "sk": {"N": "2"}})["Item"]
    assert got["nested"]["M"]["deep"]["L"][0]["S"] == MARKER
    by_g = ddb.query(
        TableName="vault",
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "g0"}},
    )["Items"]
    assert len(by_g) == len([n for n in range(ITEMS) if n % 3 == 0]) + 1
    described = ddb.describe_table(TableName="vault")["Table"]
    assert described["ItemCount"] == ITEMS
    assert described["SSEDescription"]["Status"] == "ENABLED"


class Template(NamedTuple):
    data: Path
    key: Path
    table_id: str


@pytest.fixture(scope="module")
def encrypted_template(
    tmp_path_factory: pytest.TempPathFactory,
    launch_server: Callable[..., Any],
    client_factory: Callable[..., Any],
) -> Template:
    """A data directory filled by an encrypted server that was then stopped; its key file."""
    base = tmp_path_factory.mktemp("encrypted")
    data, key = base / "data", new_key(base / "keys" / "master.key")
    args = ["--port", "0", "--data-dir", str(data), "--master-key-file", str(key)]
    server = launch_server(args, base / "logs")
    try:
        ddb = client_factory(server.url)
        fill(ddb)
        table_id = ddb.describe_table(TableName="vault")["Table"]["TableId"]
    finally:
        assert server.stop() == 0
    return Template(data, key, table_id)


@pytest.fixture
def encrypted(encrypted_template: Template, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the template's data directory (each test may change its copy)."""
    data = tmp_path / "data"
    shutil.copytree(encrypted_template.data, data)
    return data, encrypted_template.key


def test_no_marker_is_on_disk_and_everything_reads_back_after_restart(
    encrypted: tuple[Path, Path],
    server_factory: Callable[..., Any],
    client_factory: Callable[..., Any],
) -> None:
    data, key = encrypted
    assert disk_files(data / "wal") and disk_files(data / "store")
    assert files_with(MARKER.encode(), data) == []
    server = server_factory("--master-key-file", str(key), data_dir=data)
    check_everything_reads_back(client_factory(server.url))
    assert server.stop() == 0
    assert files_with(MARKER.encode(), data) == []


def test_without_a_master_key_the_marker_is_on_disk_and_a_key_is_refused_later(
    tmp_path: Path, server_factory: Callable[..., Any], client_factory: Callable[..., Any]
) -> None:
    """The search above finds plaintext when there is some (it can fail); and a directory
    made without encryption is not started with a key, changing nothing."""
    data = tmp_path / "plain"
    server = server_factory(data_dir=data)
    fill(client_factory(server.url))
    assert server.stop() == 0
    assert files_with(MARKER.encode(), data) != []
    before = digest(data)
    refused = refused_start(
        "--data-dir", str(data), "--master-key-file", str(new_key(tmp_path / "k"))
    )
    assert refused.returncode == 1
    assert "created without encryption at rest" in refused.stderr
    assert digest(data) == before


def test_a_wrong_or_missing_master_key_is_refused_and_touches_nothing(
    encrypted: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = encrypted
    before = digest(data)
    wrong = refused_start(
        "--data-dir", str(data), "--master-key-file", str(new_key(tmp_path / "w"))
    )
    assert wrong.returncode == 1
    (line,) = wrong.stderr.strip().splitlines()
    assert line.startswith("keeldb: cannot start: the master key in ")
    assert "is not the one the keyring" in line
    missing = refused_start("--data-dir", str(data))
    assert missing.returncode == 1
    assert "is encrypted at rest: start with --master-key-file" in missing.stderr
    absent = refused_start("--data-dir", str(data), "--master-key-file", str(tmp_path / "none"))
    assert absent.returncode == 1
    assert "cannot read the master key file" in absent.stderr
    assert digest(data) == before


def test_a_master_key_kept_inside_the_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    refused = refused_start(
        "--data-dir", str(data), "--master-key-file", str(new_key(data / "master.key"))
    )
    assert refused.returncode == 1
    assert "copied into backups" in refused.stderr
    assert not (data / "keyring").exists()


def test_rotation_lets_the_new_key_start_and_refuses_the_old_one(
    encrypted: tuple[Path, Path],
    tmp_path: Path,
    server_factory: Callable[..., Any],
    client_factory: Callable[..., Any],
) -> None:
    data, old = encrypted
    new = new_key(tmp_path / "keys" / "new.key")
    store_before = digest(data / "store")
    wal_before = digest(data / "wal")
    rotated = subprocess.run(
        [sys.executable, "-m", "keeldb.crypto", "rotate", "--data-dir", str(data),
         "--old-key", str(old), "--new-key", str(new)],
        capture_output=True, text=True, timeout=START_SECONDS_MAX, check=False,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped" in rotated.stdout
    # Rotation re-wraps keys; it rewrites no data.
    assert digest(data / "store") == store_before
    assert digest(data / "wal") == wal_before
    refused = refused_start("--data-dir", str(data), "--master-key-file", str(old))
    assert refused.returncode == 1
    assert "is not the one the keyring" in refused.stderr
    server = server_factory("--master-key-file", str(new), data_dir=data)
    check_everything_reads_back(client_factory(server.url))


def test_a_running_server_keeps_rotation_and_a_second_server_off_its_keyring(
    encrypted: tuple[Path, Path],
    tmp_path: Path,
    server_factory: Callable[..., Any],
    client_factory: Callable[..., Any],
) -> None:
    data, key = encrypted
    server = server_factory("--master-key-file", str(key), data_dir=data)
    rotated = subprocess.run(
        [sys.executable, "-m", "keeldb.crypto", "rotate", "--data-dir", str(data),
         "--old-key", str(key), "--new-key", str(new_key(tmp_path / "keys" / "n"))],
        capture_output=True, text=True, timeout=START_SECONDS_MAX, check=False,
    )  # fmt: skip
    assert rotated.returncode == 1
    assert "in use by another process" in rotated.stderr
    second = refused_start("--data-dir", str(data), "--master-key-file", str(key))
    assert second.returncode == 1
    assert "in use by another process" in second.stderr
    check_everything_reads_back(client_factory(server.url))


def test_an_altered_stored_value_is_an_error_never_data(
    encrypted: tuple[Path, Path],
    encrypted_template: Template,
    server_factory: Callable[..., Any],
    client_factory: Callable[..., Any],
) -> None:
    data, key = encrypted
    table_id = encrypted_template.table_id
    # Find the sealed value of one item in the LMDB file and flip one bit of its ciphertext.
    target = item_key(table_id, 0, {"S": "p3"}, {"N": "7"})
    store = LmdbStore(data / "store")
    sealed = store.get(target)
    store.close()
    assert sealed is not None
    path = data / "store" / "data.mdb"
    raw = bytearray(path.read_bytes())
    # LMDB copies pages on write, so older copies of the value may sit in free pages too.
    start = raw.find(sealed)
    assert start >= 0
    while start >= 0:
        raw[start + len(sealed) - 20] ^= 0x01
        start = raw.find(sealed, start + 1)
    path.write_bytes(bytes(raw))

    server = server_factory("--master-key-file", str(key), data_dir=data)
    ddb = client_factory(server.url)
    with pytest.raises(ClientError) as refused:
        ddb.get_item(TableName="vault", Key={"pk": {"S": "p3"}, "sk": {"N": "7"}})
    assert refused.value.response["Error"]["Code"] == "InternalServerError"
    with pytest.raises(ClientError):
        ddb.scan(TableName="vault")
    # Every other item still reads, and the server says why the one could not.
    other = ddb.get_item(TableName="vault", Key={"pk": {"S": "p3"}, "sk": {"N": "3"}})
    assert other["Item"]["secret"]["S"] == MARKER
    assert server.stop() == 0
    assert f"a stored value of table {table_id} failed authentication" in server.output()
