"""Encryption at rest under kill -9 and damage: real `keeldb serve` processes on 127.0.0.1.

A server killed during concurrent encrypted writes comes back with every acknowledged write,
readable, and still no plaintext on disk (recovery replays sealed records, and the torn tail
of the log is sealed data too). An item whose stored ciphertext was altered is refused to
readers and writers alike, while the node goes on serving everything else; a log record
altered on disk (with its CRC made to match) stops recovery with a one-line error.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from keeldb.model.keys import item_key
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.wal import (
    RECORD_HEADER,
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER,
    SEGMENT_HEADER_BYTES,
    record_crc,
)

pytestmark = pytest.mark.process

MARKER = "MARKER-d1ce-5eed-encrypted-under-kill"
WRITERS = 3
WRITE_SECONDS = 1.5  # writes run at least this long before the SIGKILL
ACKNOWLEDGED_MIN = 20  # ... and until this many were acknowledged (a busy machine is slow)
WRITE_SECONDS_MAX = 30.0
START_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 30.0
JOIN_SECONDS_MAX = 30.0
# Small segments and frequent checkpoints, so the kill can land in a roll-over or a checkpoint.
SMALL_LOG_ENVIRONMENT = {
    "KEELDB_WAL_SEGMENT_BYTES": str(64 * 1024),
    "KEELDB_CHECKPOINT_WAL_BYTES": str(256 * 1024),
    "KEELDB_CHECKPOINT_INTERVAL_SECONDS": "0.2",
}


class Server:
    def __init__(self, data: Path, key: Path, log: Path) -> None:
        self.command = [
            sys.executable, "-m", "keeldb", "serve", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(data), "--master-key-file", str(key), "--no-functions",
        ]  # fmt: skip
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        with self.log.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **SMALL_LOG_ENVIRONMENT},
            )
        assert self.process.stdout is not None
        seen = b""
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                seen += chunk
                match = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", seen)
                if match:
                    self.url = match.group(1).decode()
                    return
                if not chunk:
                    break
            elif self.process.poll() is not None:
                break
        self.signal(signal.SIGKILL)
        raise AssertionError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def signal(self, signum: int) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        status = self.process.wait(timeout=STOP_SECONDS_MAX)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None
        return status

    def client(self) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )


@pytest.fixture
def server(tmp_path: Path) -> Any:
    key = tmp_path / "keys" / "master.key"
    key.parent.mkdir()
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    process = Server(tmp_path / "data", key, tmp_path / "server.log")
    yield process
    if process.process is not None:
        process.signal(signal.SIGKILL)


def create_table(ddb: Any) -> None:
    ddb.create_table(
        TableName="sealed",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def files_with(marker: bytes, root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and marker in p.read_bytes()]


def test_acknowledged_encrypted_writes_survive_sigkill_and_stay_ciphertext(
    server: Server, tmp_path: Path
) -> None:
    server.start()
    create_table(server.client())
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        ddb = server.client()
        version = 0
        while not stop.is_set():
            version += 1
            key = f"w{number}-{version % 20}"
            try:
                ddb.put_item(
                    TableName="sealed",
                    Item={"pk": {"S": key}, "v": {"N": str(version)}, "s": {"S": MARKER}},
                )
            except (BotoCoreError, ClientError):
                return  # the server died under this write: not acknowledged
            with lock:
                acknowledged[key] = version

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    while time.monotonic() - started < WRITE_SECONDS_MAX:
        time.sleep(0.1)
        with lock:
            enough = len(acknowledged) >= ACKNOWLEDGED_MIN
        if enough and time.monotonic() - started >= WRITE_SECONDS:
            break
    server.signal(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(JOIN_SECONDS_MAX)
    assert acknowledged, "no write was acknowledged before the kill"
    assert files_with(MARKER.encode(), tmp_path / "data") == []

    server.start()
    ddb = server.client()
    for key, version in sorted(acknowledged.items()):
        item = ddb.get_item(TableName="sealed", Key={"pk": {"S": key}}, ConsistentRead=True)
        # The write in flight at the kill may have landed after the last acknowledged one.
        assert int(item["Item"]["v"]["N"]) >= version, key
        assert item["Item"]["s"]["S"] == MARKER
    assert server.signal(signal.SIGTERM) == 0
    assert files_with(MARKER.encode(), tmp_path / "data") == []


def test_an_altered_item_refuses_reads_and_writes_while_the_node_serves_the_rest(
    server: Server, tmp_path: Path
) -> None:
    server.start()
    ddb = server.client()
    create_table(ddb)
    for n in range(10):
        ddb.put_item(TableName="sealed", Item={"pk": {"S": f"k{n}"}, "s": {"S": MARKER}})
    table_id = ddb.describe_table(TableName="sealed")["Table"]["TableId"]
    assert server.signal(signal.SIGTERM) == 0

    target = item_key(table_id, 0, {"S": "k4"}, None)
    store = LmdbStore(tmp_path / "data" / "store")
    sealed = store.get(target)
    store.close()
    assert sealed is not None
    path = tmp_path / "data" / "store" / "data.mdb"
    raw = bytearray(path.read_bytes())
    start = raw.find(sealed)
    assert start >= 0
    while start >= 0:  # older copies of the page may hold the value too
        raw[start + 40] ^= 0x80
        start = raw.find(sealed, start + 1)
    path.write_bytes(bytes(raw))

    server.start()
    ddb = server.client()
    # A write must read the old image first (conditions, sizes, indexes): it is refused too,
    # so the damaged value is never silently replaced or built upon.
    for call in (
        lambda: ddb.get_item(TableName="sealed", Key={"pk": {"S": "k4"}}),
        lambda: ddb.put_item(TableName="sealed", Item={"pk": {"S": "k4"}, "s": {"S": "new"}}),
        lambda: ddb.delete_item(TableName="sealed", Key={"pk": {"S": "k4"}}),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "InternalServerError"
    ddb.put_item(TableName="sealed", Item={"pk": {"S": "k5"}, "s": {"S": "still served"}})
    assert ddb.get_item(TableName="sealed", Key={"pk": {"S": "k5"}})["Item"]["s"]["S"] == (
        "still served"
    )
    # Deleting the table removes the damage (a restore from a backup would follow).
    ddb.delete_table(TableName="sealed")
    create_table(ddb)
    ddb.put_item(TableName="sealed", Item={"pk": {"S": "k4"}, "s": {"S": MARKER}})
    assert ddb.get_item(TableName="sealed", Key={"pk": {"S": "k4"}})["Item"]["s"]["S"] == MARKER
    assert server.signal(signal.SIGTERM) == 0
    assert f"a stored value of table {table_id} failed authentication" in (
        (tmp_path / "server.log").read_text()
    )


def test_an_altered_log_record_stops_recovery_with_one_line(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEELDB_ARCHIVE", "off")  # keep every segment where it is
    server.start()
    ddb = server.client()
    create_table(ddb)
    for n in range(10):
        ddb.put_item(TableName="sealed", Item={"pk": {"S": f"k{n}"}, "s": {"S": MARKER}})
    server.signal(signal.SIGKILL)  # no checkpoint at close: the log keeps every record
    data = tmp_path / "data"
    # Without its store, the node must rebuild everything from the log on the next start.
    for name in ("data.mdb", "lock.mdb"):
        (data / "store" / name).unlink()
    segments = sorted((data / "wal").glob("*.wal"))
    raw = bytearray(segments[-1].read_bytes())
    salt = SEGMENT_HEADER.unpack_from(raw, 0)[2]
    offset, last = SEGMENT_HEADER_BYTES, None
    while offset + RECORD_HEADER_BYTES <= len(raw):
        length, _, lsn = RECORD_HEADER.unpack_from(raw, offset)
        if length == 0 or offset + RECORD_HEADER_BYTES + length > len(raw):
            break
        last = (offset, length, lsn)
        offset += RECORD_HEADER_BYTES + length
    assert last is not None
    at, length, lsn = last
    payload_at = at + RECORD_HEADER_BYTES
    raw[payload_at + length - 5] ^= 0x10  # inside the ciphertext; the CRC is made to match
    payload = bytes(raw[payload_at : payload_at + length])
    RECORD_HEADER.pack_into(raw, at, length, record_crc(salt, length, lsn, payload), lsn)
    segments[-1].write_bytes(bytes(raw))

    refused = subprocess.run(
        server.command, capture_output=True, text=True, timeout=START_SECONDS_MAX, check=False
    )
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("keeldb: cannot start: a log record failed authentication")
