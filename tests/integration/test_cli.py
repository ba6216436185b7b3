"""`keeldb serve` as a user runs it: the startup line, flags, signals and exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RUN_SECONDS_MAX = 30


def test_the_startup_line_names_address_data_and_authentication(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "mydata"
    server = server_factory(data_dir=data)
    assert re.fullmatch(
        rf"KeelDB listening on http://127\.0\.0\.1:\d+ \(data: {re.escape(str(data))}; "
        r"authentication disabled\)",
        server.startup_line,
    )
    assert int(server.url.rsplit(":", 1)[1]) > 0


def test_in_memory_mode_says_so(server_factory: Callable[..., Any]) -> None:
    server = server_factory("--in-memory")
    assert server.startup_line.endswith("(data: in memory; authentication disabled)")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly(server_factory: Callable[..., Any], signum: int) -> None:
    server = server_factory("--in-memory")
    assert server.stop(signum) == 0
    assert "KeelDB stopped" in server.output()
    assert "Traceback" not in server.output()


def test_the_health_check_answers_on_the_printed_url(server_factory: Callable[..., Any]) -> None:
    import urllib.request

    server = server_factory("--in-memory", "--region", "eu-west-2")
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:
        assert response.read() == b"healthy: dynamodb.eu-west-2.amazonaws.com "


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeldb", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=RUN_SECONDS_MAX,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_a_malformed_credentials_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("only-a-key-id\n")
    result = run_cli(
        "serve", "--port", "0", "--in-memory", "--credentials", str(path), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "cannot read credentials" in result.stderr
    assert "credentials:1" in result.stderr


def test_a_missing_credentials_file_stops_the_start(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--port", "0", "--in-memory", "--credentials", str(tmp_path / "none"), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "cannot read credentials" in result.stderr


def test_a_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--in-memory", cwd=tmp_path)
    assert result.returncode == 1
    assert "keeldb: cannot start:" in result.stderr
    assert str(port) in result.stderr


def test_an_unusable_data_dir_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("serve", "--port", "0", "--data-dir", str(blocker / "data"), cwd=tmp_path)
    assert result.returncode == 1
    assert "keeldb: cannot start:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_data_dir_held_by_another_server_is_reported_in_one_line(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    server_factory(data_dir=data_dir)
    result = run_cli("serve", "--port", "0", "--data-dir", str(data_dir), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("keeldb: cannot start:")
    assert "in use by another process" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_serve_flags(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--in-memory", "--credentials", "--region"):
        assert flag in result.stdout


def test_items_survive_a_restart_on_the_same_data_dir(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "persist"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    ddb.create_table(
        TableName="kept",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="kept", Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    assert first.stop() == 0

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    assert "kept" in ddb.list_tables()["TableNames"]
    item = ddb.get_item(TableName="kept", Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"]
    assert item == {"pk": {"S": "a"}, "n": {"N": "1"}}


def test_the_aws_cli_lists_tables(
    endpoint: str, table_factory: Callable[..., str], tmp_path: Path
) -> None:
    name = table_factory()
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="AKIDCLI",
        AWS_SECRET_ACCESS_KEY="cli-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "none-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none-credentials"),
    )
    result = subprocess.run(
        ["aws", "dynamodb", "list-tables", "--endpoint-url", endpoint, "--output", "json"],
        capture_output=True,
        check=False,
        text=True,
        timeout=RUN_SECONDS_MAX * 2,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert name in json.loads(result.stdout)["TableNames"]


def test_sigterm_during_writes_loses_no_acknowledged_write(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Path
) -> None:
    import threading
    import time

    data = tmp_path / "busy"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    ddb.create_table(
        TableName="busy",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(number: int) -> None:
        client = client_factory(first.url)
        for index in range(100_000):
            if stop.is_set():
                return
            key = f"w{number}-{index}"
            try:
                client.put_item(TableName="busy", Item={"pk": {"S": key}})
            except Exception:  # noqa: BLE001 - the server is going away: stop writing
                return
            acknowledged.append(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.stop(signal.SIGTERM) == 0
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(acknowledged) >= 50

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    missing = [
        key
        for key in acknowledged
        if "Item" not in ddb.get_item(TableName="busy", Key={"pk": {"S": key}}, ConsistentRead=True)
    ]
    assert missing == []


def test_debug_logging_traces_each_request(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any]
) -> None:
    server = server_factory("--in-memory", "--log-level", "debug")
    client_factory(server.url).list_tables()
    server.stop()
    trace = [
        line for line in server.output().splitlines() if "DynamoDB_20120810.ListTables" in line
    ]
    assert len(trace) == 1
    assert re.search(r"[0-9A-Z]{52} DynamoDB_20120810\.ListTables 200 \d+ bytes$", trace[0])
