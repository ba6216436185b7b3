"""kill -9 loses no acknowledged write and exposes no partial one; a torn log tail is dropped.

These tests run real `python -m keeldb serve` processes on 127.0.0.1 with a data directory,
drive them with concurrent raw-HTTP DynamoDB clients, SIGKILL them at random moments, restart
them on the same directory and check every item against what the clients were told.

KEELDB_CRASH_CYCLES raises the number of kill cycles (default CRASH_CYCLES_DEFAULT) for long
manual runs; KEELDB_CRASH_SEED replays a run's choice of keys, sizes and kill moments.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keeldb.storage.wal import RECORD_HEADER_BYTES, SEGMENT_BYTES, SEGMENT_HEADER_BYTES

pytestmark = pytest.mark.process

CRASH_CYCLES_DEFAULT = 20
WRITERS = 6  # concurrent client threads, each with its own keep-alive connection
OWN_KEYS_PER_WRITER = 30  # keys only one writer puts (overwritten across cycles)
SHARED_KEYS = 8  # keys every writer puts (concurrent overwrites)
DELETE_SHARE = 0.1  # of the writes to own and shared keys, the share that are DeleteItem
KILL_AFTER_SECONDS_MIN = 0.05
KILL_AFTER_SECONDS_MAX = 0.6
BLOB_BYTES_MAX = 12 * 1024  # item payloads vary up to this size, so records vary in size
START_SECONDS_MAX = 30.0  # a server that does not print its startup line by then is broken
REQUEST_SECONDS_MAX = 30.0  # a single request taking longer than this is a hang
STOP_SECONDS_MAX = 30.0
TABLE = "crash"
# Small segments and frequent checkpoints, so that kills land during segment roll-overs,
# store syncs and segment removals, not only during appends.
SMALL_LOG_ENVIRONMENT = {
    "KEELDB_WAL_SEGMENT_BYTES": str(64 * 1024),
    "KEELDB_CHECKPOINT_WAL_BYTES": str(256 * 1024),
    "KEELDB_CHECKPOINT_INTERVAL_SECONDS": "0.2",
}
TARGET = "DynamoDB_20120810."


# --- a server process --------------------------------------------------------------------


class ServerProcess:
    """One `keeldb serve` process on a free port of 127.0.0.1."""

    def __init__(
        self, data_dir: Path, log_path: Path, environment: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.environment = {**os.environ, **(environment or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "keeldb",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
        ]

    def start(self) -> None:
        assert self.process is None
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env=self.environment,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS_MAX
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
                match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                    return
            elif self.process.poll() is not None:
                break
        self.kill()
        raise AssertionError(f"server did not start: {line!r}\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or synced by the process."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_SECONDS_MAX)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None

    def stop(self) -> int:
        """SIGTERM: a clean shutdown; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=STOP_SECONDS_MAX)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None
        return status

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class Client:
    """A keep-alive raw-HTTP DynamoDB client (JSON 1.0), one per thread."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_SECONDS_MAX)

    def call(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Raises OSError or HTTPException when the server goes away mid-request."""
        self.connection.request(
            "POST",
            "/",
            body=json.dumps(body),
            headers={
                "X-Amz-Target": TARGET + operation,
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        response = self.connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}

    def ok(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call(operation, body)
        assert status == 200, (operation, status, answer)
        return answer

    def close(self) -> None:
        self.connection.close()


def create_table(client: Client) -> None:
    client.ok(
        "CreateTable",
        {
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    deadline = time.monotonic() + START_SECONDS_MAX
    while time.monotonic() < deadline:
        table = client.ok("DescribeTable", {"TableName": TABLE})["Table"]
        if table["TableStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise AssertionError("table never became ACTIVE")


def get_item(client: Client, key: str) -> dict[str, Any] | None:
    answer = client.ok(
        "GetItem", {"TableName": TABLE, "Key": {"pk": {"S": key}}, "ConsistentRead": True}
    )
    item: dict[str, Any] | None = answer.get("Item")
    return item


# --- what the clients were told ----------------------------------------------------------


def blob_for(token: str) -> bytes:
    """The payload of a put is a function of its token, so a found item can be verified."""
    digest = hashlib.sha256(token.encode()).digest()
    size = int.from_bytes(digest[:4], "big") % BLOB_BYTES_MAX
    return (digest * (size // len(digest) + 1))[:size]


def item_for(key: str, token: str) -> dict[str, Any]:
    blob = blob_for(token)
    return {
        "pk": {"S": key},
        "tok": {"S": token},
        "blob": {"B": base64.b64encode(blob).decode()},
        "size": {"N": str(len(blob))},
        "digest": {"S": hashlib.sha256(blob).hexdigest()},
    }


@dataclass
class Put:
    token: str
    started: float
    acked: float | None = None  # None: the server died before answering


@dataclass
class History:
    """Every put and delete each key has seen since the last check, and each writer's
    counter."""

    puts: dict[str, list[Put]] = field(default_factory=dict)
    counter_acked: dict[str, int] = field(default_factory=dict)  # highest acknowledged value
    counter_in_flight: dict[str, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_put(self, key: str, put: Put) -> None:
        with self.lock:
            self.puts.setdefault(key, []).append(put)


DELETE_PREFIX = "delete."  # the token of a DeleteItem in a key's history


def check_put_key(key: str, item: dict[str, Any] | None, puts: list[Put]) -> Put | None:
    """The key must hold a whole item or nothing, as left by a write (put or delete) that no
    acknowledged write is known to have followed. Returns that write (None: nothing known)."""
    acked = [p for p in puts if p.acked is not None]

    def superseded(write: Put) -> list[str]:
        if write.acked is None:
            return []  # it may have taken effect at any moment until the kill
        assert write.acked is not None
        return [p.token for p in acked if p.started > write.acked]

    if item is None:
        if not acked:
            return None
        deletes = [p for p in puts if p.token.startswith(DELETE_PREFIX)]
        legal = [d for d in deletes if not superseded(d)]
        assert legal, f"{key}: is missing, but acknowledged {acked[-1].token} put it"
        return legal[-1]
    assert set(item) == {"pk", "tok", "blob", "size", "digest"}, f"{key}: partial item {item}"
    token = item["tok"]["S"]
    assert item == item_for(key, token), f"{key}: item {token} is damaged"
    found = [p for p in puts if p.token == token]
    assert found, f"{key}: item {token} was never written"
    put = found[0]
    newer = superseded(put)
    assert not newer, f"{key}: has {token}, but acknowledged {newer} started after it"
    return put


class Writer(threading.Thread):
    """Puts and deletes own and shared keys and increments its counter until the server
    dies."""

    def __init__(self, index: int, cycle: int, port: int, history: History, seed: int) -> None:
        super().__init__(name=f"writer-{index}", daemon=True)
        self.index = index
        self.cycle = cycle
        self.port = port
        self.history = history
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.acknowledged = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        client = Client(self.port)
        try:
            self._write(client)
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            self.error = error
        finally:
            client.close()

    def _write(self, client: Client) -> None:
        counter_key = f"counter-{self.index}"
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            choice = self.rng.random()
            if choice < 0.25:
                with self.history.lock:
                    self.history.counter_in_flight[counter_key] = True
                try:
                    status, answer = client.call(
                        "UpdateItem",
                        {
                            "TableName": TABLE,
                            "Key": {"pk": {"S": counter_key}},
                            "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                            "ReturnValues": "UPDATED_NEW",
                        },
                    )
                except (OSError, http.client.HTTPException):
                    return
                if status != 200:
                    assert status >= 500, answer
                    return
                value = int(answer["Attributes"]["n"]["N"])
                with self.history.lock:
                    assert value > self.history.counter_acked.get(counter_key, 0)
                    self.history.counter_acked[counter_key] = value
                    self.history.counter_in_flight[counter_key] = False
            else:
                if choice < 0.5:
                    key = f"shared-{self.rng.randrange(SHARED_KEYS)}"
                else:
                    key = f"own-{self.index}-{self.rng.randrange(OWN_KEYS_PER_WRITER)}"
                token = f"{self.index}.{self.cycle}.{sequence}"
                if self.rng.random() < DELETE_SHARE:
                    token = DELETE_PREFIX + token
                    operation = "DeleteItem"
                    body: dict[str, Any] = {"TableName": TABLE, "Key": {"pk": {"S": key}}}
                else:
                    operation = "PutItem"
                    body = {"TableName": TABLE, "Item": item_for(key, token)}
                put = Put(token, time.monotonic())
                self.history.record_put(key, put)
                try:
                    status, answer = client.call(operation, body)
                except (OSError, http.client.HTTPException):
                    return
                if status != 200:
                    assert status >= 500, answer
                    return
                put.acked = time.monotonic()
            self.acknowledged += 1


def check_everything(client: Client, history: History) -> None:
    """Read every key back and fold what is now durable into the history's baseline."""
    now = time.monotonic()
    for key, puts in sorted(history.puts.items()):
        put = check_put_key(key, get_item(client, key), puts)
        # What survived a restart is final: it becomes the one known put of the key,
        # acknowledged now, so that any later acknowledged put must replace it.
        history.puts[key] = [] if put is None else [Put(put.token, put.started, now)]
    for counter_key, acked in sorted(history.counter_acked.items()):
        item = get_item(client, counter_key)
        value = 0 if item is None else int(item["n"]["N"])
        in_flight = history.counter_in_flight.get(counter_key, False)
        assert acked <= value <= acked + int(in_flight), (counter_key, acked, value, in_flight)
        history.counter_acked[counter_key] = value
        history.counter_in_flight[counter_key] = False


def crash_cycles() -> int:
    return int(os.environ.get("KEELDB_CRASH_CYCLES", CRASH_CYCLES_DEFAULT))


@pytest.mark.timeout(900)
def test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    seed = int(os.environ.get("KEELDB_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"KEELDB_CRASH_SEED={seed}")
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", SMALL_LOG_ENVIRONMENT)
    history = History()
    total_acknowledged = 0
    cycles = crash_cycles()
    try:
        server.start()
        client = Client(server.port)
        create_table(client)
        client.close()
        for cycle in range(cycles):
            writers = [
                Writer(i, cycle, server.port, history, rng.randrange(1 << 30))
                for i in range(WRITERS)
            ]
            for writer in writers:
                writer.start()
            time.sleep(rng.uniform(KILL_AFTER_SECONDS_MIN, KILL_AFTER_SECONDS_MAX))
            server.kill()
            for writer in writers:
                writer.stop.set()
            for writer in writers:
                writer.join(REQUEST_SECONDS_MAX)
                assert not writer.is_alive(), f"{writer.name} hangs"
                assert writer.error is None, f"{writer.name}: {writer.error!r}"
                total_acknowledged += writer.acknowledged
            server.start()
            client = Client(server.port)
            check_everything(client, history)
            client.close()
        assert server.stop() == 0, server.log_text()
        server.start()
        client = Client(server.port)
        check_everything(client, history)
        client.close()
    except BaseException:
        print(server.log_text())
        raise
    finally:
        server.kill()
    print(f"{cycles} kill cycles, {total_acknowledged} acknowledged writes checked")
    # Checkpoints ran in the real server (the log no longer starts at its first record), so
    # kills also landed around segment roll-overs and removals.
    assert int(wal_segments(tmp_path / "data")[0].name[:20]) > 1
    # The writes really ran: on average far more than one per writer per cycle.
    assert total_acknowledged > cycles * WRITERS


# --- a torn log tail -----------------------------------------------------------------------


def wal_segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal").glob("*.wal"))


def record_ends(segment: Path) -> list[int]:
    """Byte offsets where each whole record of a segment ends (read with the log's format)."""
    data = segment.read_bytes()
    ends = []
    offset = SEGMENT_HEADER_BYTES
    while offset + RECORD_HEADER_BYTES <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        if length == 0:
            break  # the zeroes a preallocating log keeps ahead of its records
        offset += RECORD_HEADER_BYTES + length
        if offset > len(data):
            break
        ends.append(offset)
    return ends


@pytest.mark.timeout(300)
def test_a_torn_final_log_record_is_discarded_and_the_rest_recovered(tmp_path: Path) -> None:
    """The store lags the log (as after power loss); the log's last segment is then cut at a
    random byte or given a garbage tail. Recovery must replay every whole record and no more:
    the items are a prefix of the sequential puts, exactly as long as the whole records."""
    rng = random.Random(int(os.environ.get("KEELDB_CRASH_SEED", "5")))
    base = tmp_path / "base"
    # Default-sized segments: the puts all land in the last one.
    one_segment = {"KEELDB_WAL_SEGMENT_BYTES": str(SEGMENT_BYTES)}
    server = ServerProcess(base, tmp_path / "server.log", one_segment)
    puts = 40
    try:
        server.start()
        client = Client(server.port)
        create_table(client)
        client.close()
        assert server.stop() == 0  # a clean stop checkpoints: the store holds the table
        shutil.copytree(base / "store", tmp_path / "store-before-puts")
        server.start()
        client = Client(server.port)
        for i in range(puts):
            client.ok("PutItem", {"TableName": TABLE, "Item": item_for(f"seq-{i}", f"t{i}")})
        client.close()
        server.kill()
    except BaseException:
        print(server.log_text())
        raise
    segment = wal_segments(base)[-1]
    ends = record_ends(segment)
    # Without the zeroes preallocated after the last record, so that cuts land in records.
    full = segment.read_bytes()[: ends[-1]]
    # The puts are the last `puts` records (one redo record per put, plus none after them).
    first_put_end_index = len(ends) - puts
    assert first_put_end_index >= 0
    put_region_start = (
        ends[first_put_end_index - 1] if first_put_end_index else SEGMENT_HEADER_BYTES
    )
    cases: list[tuple[str, bytes]] = []
    for _ in range(4):
        cut = rng.randrange(put_region_start, len(full))
        cases.append((f"cut at byte {cut}", full[:cut]))
    cases.append(("zeroed tail", full + b"\x00" * 4096))
    cases.append(("garbage tail", full + bytes(rng.randrange(256) for _ in range(777))))
    cut = rng.randrange(put_region_start, len(full))
    cases.append(("cut plus garbage", full[:cut] + b"\xde\xad\xbe\xef" * 50))
    for index, (name, content) in enumerate(cases):
        case_dir = tmp_path / f"case{index}"
        shutil.copytree(base / "wal", case_dir / "wal")
        shutil.copytree(tmp_path / "store-before-puts", case_dir / "store")
        (case_dir / "wal" / segment.name).write_bytes(content)
        whole_records = sum(1 for end in ends if end <= len(content))
        expected = max(0, min(puts, whole_records - first_put_end_index))
        if len(content) >= len(full):
            expected = puts
        server = ServerProcess(case_dir, tmp_path / f"server{index}.log", one_segment)
        try:
            server.start()
            client = Client(server.port)
            found = [get_item(client, f"seq-{i}") for i in range(puts)]
            client.close()
            present = [item is not None for item in found]
            assert present == [True] * expected + [False] * (puts - expected), name
            for i in range(expected):
                assert found[i] == item_for(f"seq-{i}", f"t{i}"), name
            assert server.stop() == 0
        except BaseException:
            print(name, server.log_text())
            raise
        finally:
            server.kill()


@pytest.mark.timeout(120)
def test_a_killed_server_leaves_zeroes_after_its_last_record_and_restarts_without_a_torn_tail(
    tmp_path: Path,
) -> None:
    """The node's log preallocates: after kill -9 its last segment ends in zeroes (so the kill
    tests above run against a preallocated log), which the restart cuts quietly, keeping
    every acknowledged put."""
    data_dir = tmp_path / "data"
    one_segment = {"KEELDB_WAL_SEGMENT_BYTES": str(SEGMENT_BYTES)}
    server = ServerProcess(data_dir, tmp_path / "server.log", one_segment)
    puts = 10
    try:
        server.start()
        client = Client(server.port)
        create_table(client)
        for i in range(puts):
            client.ok("PutItem", {"TableName": TABLE, "Item": item_for(f"z-{i}", f"t{i}")})
        client.close()
        server.kill()
        segment = wal_segments(data_dir)[-1]
        data = segment.read_bytes()
        records_end = record_ends(segment)[-1]
        assert len(data) > records_end, "no zeroes after the last record"
        assert data[records_end:] == bytes(len(data) - records_end)
        server = ServerProcess(data_dir, tmp_path / "server2.log", one_segment)
        server.start()
        client = Client(server.port)
        for i in range(puts):
            assert get_item(client, f"z-{i}") == item_for(f"z-{i}", f"t{i}")
        client.close()
        assert server.stop() == 0
        assert "torn tail" not in server.log_text()
    except BaseException:
        print(server.log_text())
        raise
