"""Fixtures for tests that drive a real `keeldb serve` process over HTTP.

- `server`: one server process for the test session (per xdist worker), data in a temporary
  directory, stopped by PID at the end.
- `endpoint`: its URL.
- `ddb` / `ddb_resource`: boto3 client and resource for it (us-east-1, dummy credentials,
  no retries, so that an error reaches the test as DynamoDB sent it).
- `table_factory`: `table_factory(hash_key="pk", hash_type="S", range_key=None,
  range_type="S", **create_table_args) -> table name`; creates a uniquely named table, waits
  until it is ACTIVE and deletes it after the test.
- `client_factory`: `client_factory(endpoint, **boto3_client_args)` -> a boto3 client with
  the same defaults as `ddb` (override credentials, region, config ...).
- `launch_server`: `launch_server(args, log_dir) -> ServerProcess`, for fixtures of wider scope
  that start their own server; the caller stops it (`.stop()`).
- `server_factory`: `server_factory(*extra_args, data_dir=None) -> ServerProcess` starts
  another server (with other flags) that is stopped after the test.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
ACCESS_KEY_ID = "AKIDKEELDBTEST"
SECRET_ACCESS_KEY = "keeldb-test-secret"
# A server starts in well under a second; the bound only stops a broken one hanging the run.
START_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 15.0
TABLE_ACTIVE_SECONDS_MAX = 10.0
# One `aws` invocation starts a Python interpreter and loads botocore: seconds, not millis.
CLI_SECONDS_MAX = 60
_LISTENING = re.compile(r"KeelDB listening on (http://\S+)")


_PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>
# Looked up once in the parent, so that the child only makes the system call.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _stop_with_parent() -> None:
    """In the child: have Linux send SIGTERM when the test process dies, so that a test run
    killed before its teardown (a timeout, a SIGKILL) leaves no server behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A `python -m keeldb serve ...` subprocess; stdout and stderr go to files."""

    def __init__(self, args: list[str], log_dir: Path) -> None:
        self.args = args
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / "stdout.txt"
        self.stderr_path = log_dir / "stderr.txt"
        self._stdout = self.stdout_path.open("wb")
        self._stderr = self.stderr_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keeldb", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            env=env,
            # Only a system call runs between fork and exec, so other threads cannot hold
            # anything it needs.
            preexec_fn=_stop_with_parent,  # noqa: PLW1509
        )
        self.pid = self.process.pid
        self.url = ""
        self.startup_line = ""

    def wait_ready(self) -> str:
        deadline = time.monotonic() + START_SECONDS_MAX
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            match = _LISTENING.search(text)
            if match:
                self.url = match.group(1)
                self.startup_line = text[match.start() :].splitlines()[0]
                return self.url
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"keeldb serve exited with {self.process.returncode}:\n{self.output()}"
                )
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"keeldb serve not ready in {START_SECONDS_MAX} s:\n{self.output()}")

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process by its PID and wait; SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            os.kill(self.pid, signum)
            try:
                self.process.wait(STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(STOP_SECONDS_MAX)
        self._stdout.close()
        self._stderr.close()
        return self.process.returncode


def start_server(args: list[str], log_dir: Path) -> ServerProcess:
    server = ServerProcess(args, log_dir)
    server.wait_ready()
    return server


def make_client(endpoint: str, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "region_name": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET_ACCESS_KEY,
        "config": Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    }
    settings.update(overrides)
    return boto3.client("dynamodb", **settings)


def run_aws_cli(endpoint: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`aws dynamodb ARGS --endpoint-url ENDPOINT --output json` with the test credentials, a
    configuration of its own under `home` (none of the user's), one attempt and no pager."""
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_MAX_ATTEMPTS="1",
        AWS_PAGER="",
    )
    return subprocess.run(
        ["aws", "dynamodb", *args, "--endpoint-url", endpoint, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_SECONDS_MAX,
        check=False,
    )


@pytest.fixture
def aws_cli(endpoint: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `aws dynamodb ARGS` against the session's server (see `run_aws_cli`)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_aws_cli(endpoint, tmp_path, *args)

    return run


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("keeldb-server")
    process = start_server(
        ["--host", "127.0.0.1", "--port", "0", "--data-dir", str(base / "data")], base / "logs"
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def endpoint(request: pytest.FixtureRequest) -> str:
    # KEELDB_TEST_ENDPOINT runs the tests against a server started elsewhere (a cluster).
    external = os.environ.get("KEELDB_TEST_ENDPOINT")
    if external:
        return external
    server: ServerProcess = request.getfixturevalue("server")
    return server.url


@pytest.fixture(scope="session")
def ddb(endpoint: str) -> Any:
    return make_client(endpoint)


@pytest.fixture(scope="session")
def launch_server() -> Callable[[list[str], Path], ServerProcess]:
    return start_server


@pytest.fixture(scope="session")
def client_factory() -> Callable[..., Any]:
    return make_client


@pytest.fixture(scope="session")
def ddb_resource(endpoint: str) -> Any:
    return boto3.resource(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


_table_numbers = itertools.count(1)


def wait_active(ddb: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + TABLE_ACTIVE_SECONDS_MAX
    while True:
        table: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {name} not ACTIVE after {TABLE_ACTIVE_SECONDS_MAX} s")
        time.sleep(0.02)


@pytest.fixture
def table_factory(ddb: Any) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def create(
        hash_key: str = "pk",
        hash_type: str = "S",
        range_key: str | None = None,
        range_type: str = "S",
        **create_table_args: Any,
    ) -> str:
        name = f"t{next(_table_numbers)}-{uuid.uuid4().hex[:12]}"
        attributes = [{"AttributeName": hash_key, "AttributeType": hash_type}]
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key is not None:
            attributes.append({"AttributeName": range_key, "AttributeType": range_type})
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        args: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": attributes,
            "KeySchema": schema,
            "BillingMode": "PAY_PER_REQUEST",
        }
        args.update(create_table_args)
        ddb.create_table(**args)
        created.append(name)
        wait_active(ddb, name)
        return name

    yield create
    for name in created:
        try:
            ddb.delete_table(TableName=name)
        except ddb.exceptions.ResourceNotFoundException:
            pass


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []
    numbers = itertools.count(1)

    def start(*extra_args: str, data_dir: Path | None = None) -> ServerProcess:
        number = next(numbers)
        args = ["--host", "127.0.0.1", "--port", "0"]
        if "--in-memory" not in extra_args:
            args += ["--data-dir", str(data_dir or tmp_path / f"data{number}")]
        process = start_server([*args, *extra_args], tmp_path / f"logs{number}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
