"""`keeldb serve --workers N`: real processes on 127.0.0.1, checked from the outside.

Which process answered a request is read from its x-amzn-RequestId: every process draws its
own random 32-character prefix (`keeldb.api.server.RequestIds`), so the prefixes seen over
many connections show that the kernel spread them over several processes.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.process

START_SECONDS_MAX = 60.0  # a worker imports the engine on a loaded 2-core machine
STOP_SECONDS_MAX = 30.0
REQUEST_SECONDS_MAX = 30.0
TARGET = "DynamoDB_20120810."
CONNECTIONS = 12  # enough that SO_REUSEPORT's hashing reaches every process
REQUEST_ID_PREFIX_CHARS = 32


class Server:
    """One `keeldb serve` process (and its workers), stopped by PID."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        name: str = "server",
        environment: dict[str, str] | None = None,
    ) -> None:
        self.environment = {**os.environ, **(environment or {})}
        self.log_path = tmp_path / f"{name}.log"
        self.command = [
            sys.executable, "-m", "keeldb", "serve", "--host", "127.0.0.1", "--port", "0",
            "--no-functions", *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.startup_line = ""

    def start(self) -> Server:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env=self.environment,
            )
        assert self.process.stdout is not None
        seen = b""
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                seen += chunk
                match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)[^\n]*", seen)
                if match:
                    self.port = int(match.group(1))
                    self.startup_line = match.group(0).decode()
                    return self
                if not chunk:
                    break
            elif self.process.poll() is not None:
                break
        self.stop(signal.SIGKILL)
        raise AssertionError(f"server did not start: {seen!r}\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        pids = []
        for child in psutil.Process(self.pid).children():
            try:
                command = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue  # a worker that exited (killed, not yet replaced) between the two looks
            if "keeldb.workers.worker" in command:
                pids.append(child.pid)
        return sorted(pids)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        try:
            status = self.process.wait(timeout=STOP_SECONDS_MAX)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            status = self.process.wait(timeout=STOP_SECONDS_MAX)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None
        return status

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class Client:
    """A keep-alive raw-HTTP client; `process` is the request-id prefix of the last answer."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_SECONDS_MAX)
        self.process = ""

    def raw(self, operation: str, body: bytes) -> tuple[int, bytes]:
        self.connection.request(
            "POST",
            "/",
            body=body,
            headers={
                "X-Amz-Target": TARGET + operation,
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        response = self.connection.getresponse()
        data = response.read()
        self.process = response.getheader("x-amzn-RequestId", "")[:REQUEST_ID_PREFIX_CHARS]
        return response.status, data

    def call(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, data = self.raw(operation, json.dumps(body).encode())
        return status, json.loads(data) if data else {}

    def ok(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call(operation, body)
        assert status == 200, (operation, status, answer)
        return answer

    def close(self) -> None:
        self.connection.close()


def clients_over_every_process(port: int, processes: int) -> list[Client]:
    """Connections until every serving process answered at least one (or a bound is hit)."""
    clients: list[Client] = []
    seen: set[str] = set()
    while len(seen) < processes and len(clients) < CONNECTIONS * 4:
        client = Client(port)
        client.ok("ListTables", {})
        seen.add(client.process)
        clients.append(client)
    assert len(seen) == processes, f"connections reached {len(seen)} of {processes} processes"
    return clients


def table_spec(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("workers")
    server = Server(base, "--data-dir", str(base / "data"), "--workers", "2").start()
    yield server
    assert server.stop() == 0, server.log()


# --- reads in workers are linearizable -----------------------------------------------------


@dataclass
class History:
    """Acknowledged counter values and reads of the counter, on one monotonic clock."""

    writes: list[tuple[float, float, int]] = field(default_factory=list)  # start, ack, value
    reads: list[tuple[float, float, int, str]] = field(default_factory=list)  # + process
    lock: threading.Lock = field(default_factory=threading.Lock)


def stale_reads(history: History) -> list[str]:
    """Reads that contradict a linearizable counter: a read that started after value v was
    acknowledged must return at least v, and may not return a value whose write had not
    started when the read ended."""
    problems = []
    writes = sorted(history.writes)
    for start, end, value, process in history.reads:
        acked_before = max((v for _, ack, v in writes if ack < start), default=0)
        started_before = max((v for began, _, v in writes if began < end), default=0)
        if value < acked_before:
            problems.append(
                f"read {value} at {start:.4f} after {acked_before} was acked ({process})"
            )
        if value > started_before:
            problems.append(f"read {value} before its write started ({process})")
    return problems


def test_the_staleness_check_catches_a_read_older_than_an_acknowledged_write() -> None:
    history = History()
    history.writes += [(0.0, 1.0, 1), (1.5, 2.0, 2)]
    history.reads += [(1.2, 1.3, 1, "a"), (2.5, 2.6, 2, "b")]
    assert stale_reads(history) == []
    history.reads.append((2.1, 2.2, 1, "stale worker"))
    history.reads.append((0.1, 0.2, 2, "from the future"))
    problems = stale_reads(history)
    assert len(problems) == 2
    assert "stale worker" in problems[0] and "from the future" in problems[1]


def test_a_strong_read_in_any_worker_returns_the_latest_acknowledged_write(
    workers_server: Server,
) -> None:
    port = workers_server.port
    setup = Client(port)
    setup.ok("CreateTable", table_spec("linear"))
    readers = clients_over_every_process(port, 2)
    history = History()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        client = Client(port)
        try:
            while not stop.is_set():
                began = time.monotonic()
                answer = client.ok(
                    "UpdateItem",
                    {
                        "TableName": "linear",
                        "Key": {"pk": {"S": "counter"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                        "ReturnValues": "UPDATED_NEW",
                    },
                )
                acked = time.monotonic()
                with history.lock:
                    history.writes.append((began, acked, int(answer["Attributes"]["n"]["N"])))
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)
        finally:
            client.close()

    def read(client: Client) -> None:
        try:
            while not stop.is_set():
                began = time.monotonic()
                answer = client.ok(
                    "GetItem",
                    {
                        "TableName": "linear",
                        "Key": {"pk": {"S": "counter"}},
                        "ConsistentRead": True,
                    },
                )
                ended = time.monotonic()
                value = int(answer["Item"]["n"]["N"]) if "Item" in answer else 0
                with history.lock:
                    history.reads.append((began, ended, value, client.process))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(2)]
    threads += [threading.Thread(target=read, args=(c,)) for c in readers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and (len(history.writes) < 150 or len(history.reads) < 300):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(REQUEST_SECONDS_MAX)
    for client in readers:
        client.close()
    assert errors == []
    assert stale_reads(history) == []
    # The check had something to check: many writes, reads from both workers, and reads
    # that began right after an acknowledgement (where a stale view would show).
    assert len(history.writes) >= 50
    assert len({process for _, _, _, process in history.reads}) == 2
    values = sorted(v for _, _, v in history.writes)
    assert values == list(range(1, len(values) + 1))
    setup.ok("DeleteTable", {"TableName": "linear"})
    setup.close()


# --- the catalog ---------------------------------------------------------------------------


def test_every_worker_sees_a_catalog_change_once_it_is_answered(workers_server: Server) -> None:
    port = workers_server.port
    clients = clients_over_every_process(port, 2)
    writer = clients[0]
    for round_ in range(5):
        name = f"cat-{round_}"
        writer.ok("CreateTable", table_spec(name))
        for client in clients:
            # Straight after the answer, on every process: the table exists and takes writes.
            table = client.ok("DescribeTable", {"TableName": name})["Table"]
            assert table["TableStatus"] == "ACTIVE"
            assert name in client.ok("ListTables", {})["TableNames"]
            assert (
                client.ok(
                    "GetItem",
                    {"TableName": name, "Key": {"pk": {"S": "x"}}, "ConsistentRead": True},
                )
                == {}
            )
        writer.ok(
            "UpdateTable",
            {
                "TableName": name,
                "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
            },
        )
        for client in clients:
            table = client.ok("DescribeTable", {"TableName": name})["Table"]
            assert table["StreamSpecification"]["StreamEnabled"] is True, client.process
        writer.ok("DeleteTable", {"TableName": name})
        for client in clients:
            status, answer = client.call(
                "GetItem", {"TableName": name, "Key": {"pk": {"S": "x"}}, "ConsistentRead": True}
            )
            assert status == 400, (client.process, answer)
            assert answer["__type"].endswith("#ResourceNotFoundException")
            assert name not in client.ok("ListTables", {})["TableNames"]
    for client in clients:
        client.close()


# --- the same answers as a single process ----------------------------------------------------


PARITY_REQUESTS: list[tuple[str, bytes]] = [
    ("GetItem", b"{not json"),
    ("GetItem", b"[]"),
    ("NoSuchOperation", b"{}"),
    ("GetItem", b'{"TableName": "missing-table", "Key": {"pk": {"S": "a"}}}'),
    ("GetItem", b'{"TableName": "parity", "Key": {"pk": {"N": "1"}}}'),
    ("Query", b'{"TableName": "parity", "KeyConditionExpression": "pk = :v"}'),
    ("Scan", b'{"TableName": "parity", "Limit": 0}'),
    ("BatchGetItem", b'{"RequestItems": {}}'),
    ("DescribeTable", b'{"TableName": "x"}'),
    ("PutItem", b'{"TableName": "parity", "Item": {"pk": {"N": "1"}}}'),
    ("PutItem", b'{"TableName": "parity", "Item": {"pk": {"S": "a"}, "v": {"S": "1"}}}'),
    (
        "PutItem",
        (
            b'{"TableName": "parity", "Item": {"pk": {"S": "a"}}, '
            b'"ConditionExpression": "attribute_not_exists(pk)", '
            b'"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}'
        ),
    ),
    (
        "UpdateItem",
        b'{"TableName": "parity", "Key": {"pk": {"S": "a"}}, "UpdateExpression": "SET"}',
    ),
    ("GetItem", b'{"TableName": "parity", "Key": {"pk": {"S": "a"}}}'),
    (
        "TransactWriteItems",
        (
            b'{"TransactItems": [{"ConditionCheck": {"TableName": "parity", '
            b'"Key": {"pk": {"S": "a"}}, "ConditionExpression": "attribute_not_exists(pk)"}}]}'
        ),
    ),
    ("CreateTable", b'{"TableName": "parity"}'),
    ("DeleteTable", b'{"TableName": "missing-table"}'),
    ("ListTables", b'{"Limit": 0}'),
]


def test_errors_and_answers_are_those_of_a_single_process(
    workers_server: Server, tmp_path: Path
) -> None:
    single = Server(tmp_path, "--data-dir", str(tmp_path / "single"), name="single").start()
    try:
        answers = []
        for port in (single.port, workers_server.port):
            clients = clients_over_every_process(port, 2 if port == workers_server.port else 1)
            clients[0].ok("CreateTable", table_spec("parity"))
            seen = []
            for operation, body in PARITY_REQUESTS:
                # Each request through every process: local reads and forwarded writes alike.
                for client in (clients * 2)[:2]:
                    status, data = client.raw(operation, body)
                    seen.append((operation, status, data))
            clients[0].ok("DeleteTable", {"TableName": "parity"})
            for client in clients:
                client.close()
            answers.append(seen)
        single_answers, worker_answers = answers
        # Same status and byte-identical body, whichever process answered (each request ran
        # twice per server: the PutItem answers differ only in what the first one wrote).
        assert [a[:2] for a in worker_answers] == [a[:2] for a in single_answers]
        assert worker_answers == single_answers
        assert any(status == 500 for _, status, _ in worker_answers) is False
    finally:
        assert single.stop() == 0


# --- failures ------------------------------------------------------------------------------


def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(
    workers_server: Server,
) -> None:
    # `--workers 2`: the primary and one worker serve HTTP.
    (before,) = workers_server.worker_pids()
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + START_SECONDS_MAX
    while time.monotonic() < deadline:
        after = workers_server.worker_pids()
        if len(after) == 1 and before not in after:
            break
        time.sleep(0.1)
    assert len(after) == 1 and before not in after
    # Once the new worker serves, connections reach both processes again.
    deadline = time.monotonic() + START_SECONDS_MAX
    while True:
        try:
            clients = clients_over_every_process(workers_server.port, 2)
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for client in clients:
        client.close()
    assert "worker 0 (pid" in workers_server.log_path.read_text()


def test_workers_stop_when_the_primary_is_killed(tmp_path: Path) -> None:
    # Without HTTP in the primary: two worker processes serve the port.
    server = Server(
        tmp_path,
        "--data-dir",
        str(tmp_path / "data"),
        "--workers",
        "2",
        environment={"KEELDB_WORKERS_PRIMARY_HTTP": "0"},
    ).start()
    workers = server.worker_pids()
    assert len(workers) == 2
    clients = clients_over_every_process(server.port, 2)
    clients[0].ok("CreateTable", table_spec("dedicated"))
    clients[0].ok("PutItem", {"TableName": "dedicated", "Item": {"pk": {"S": "a"}}})
    for client in clients:
        # Served by the workers alone: the primary has no HTTP socket.
        assert client.ok("GetItem", {"TableName": "dedicated", "Key": {"pk": {"S": "a"}}})
        client.close()
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    deadline = time.monotonic() + STOP_SECONDS_MAX
    while any(psutil.pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Reaped by init once the primary is gone; a zombie has exited too.
    alive = [
        pid
        for pid in workers
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def signed_client(port: int, secret: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="AKIDWORKERS",
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def test_signatures_encryption_and_sigterm_with_workers(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    credentials = tmp_path / "credentials"
    credentials.write_text("AKIDWORKERS worker-secret\n")
    # With encryption at rest the workers forward reads too (only the primary holds keys);
    # they still check every signature themselves.
    flags = ["--data-dir", str(tmp_path / "data"), "--workers", "2", "--master-key-file", str(key)]
    server = Server(tmp_path, *flags, "--credentials", str(credentials)).start()
    assert "2 processes" in server.startup_line
    owner = signed_client(server.port, "worker-secret")
    owner.create_table(**table_spec("sealed"))
    owner.put_item(TableName="sealed", Item={"pk": {"S": "a"}, "v": {"S": "b"}})
    processes = set()
    for _ in range(CONNECTIONS):
        client = signed_client(server.port, "worker-secret")  # a connection pool of its own
        answer = client.get_item(TableName="sealed", Key={"pk": {"S": "a"}})
        assert answer["Item"]["v"] == {"S": "b"}
        processes.add(answer["ResponseMetadata"]["RequestId"][:REQUEST_ID_PREFIX_CHARS])
        forger = signed_client(server.port, "not-the-secret")
        with pytest.raises(ClientError) as refused:
            forger.get_item(TableName="sealed", Key={"pk": {"S": "a"}})
        assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
        with pytest.raises(ClientError) as refused:
            forger.put_item(TableName="sealed", Item={"pk": {"S": "forged"}})
        assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
        client.close()
        forger.close()
    assert len(processes) == 2
    assert "Item" not in owner.get_item(TableName="sealed", Key={"pk": {"S": "forged"}})
    owner.close()
    workers = server.worker_pids()
    assert server.stop() == 0, server.log()
    assert not any(psutil.pid_exists(pid) for pid in workers)
    assert "Traceback" not in server.log()


def test_an_in_memory_node_refuses_workers_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keeldb", "serve", "--in-memory", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=START_SECONDS_MAX,
        check=False,
    )
    assert result.returncode == 2
    assert "needs a data directory" in result.stderr
    assert "one process's memory" in result.stderr


def test_a_port_in_use_is_refused_as_without_workers(
    workers_server: Server, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keeldb",
            "serve",
            "--port",
            str(workers_server.port),
            "--data-dir",
            str(tmp_path / "other"),
            "--workers",
            "2",
            "--no-functions",
        ],
        capture_output=True,
        text=True,
        timeout=START_SECONDS_MAX,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "in use" in result.stderr
