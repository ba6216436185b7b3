"""Embedded mode: `keeldb.embedded()` and the `keeldb_endpoint` pytest fixture."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

import keeldb
from keeldb.embedded import embedded


def client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="AKIDEMBEDDED",
        aws_secret_access_key="embedded-secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "keeldb-embedded"]


def test_the_context_manager_serves_boto3_and_cleans_up() -> None:
    before = len(server_threads())
    with keeldb.embedded() as endpoint:
        assert endpoint.startswith("http://127.0.0.1:")
        assert "TableNames" in client(endpoint).list_tables()
        assert len(server_threads()) == before + 1
    assert len(server_threads()) == before
    with pytest.raises(EndpointConnectionError):
        client(endpoint).list_tables()


def test_the_temporary_data_directory_is_removed_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    with embedded() as endpoint:
        client(endpoint).list_tables()
        assert Path(made[0]).is_dir()
    assert len(made) == 1
    assert not Path(made[0]).exists()


def test_in_memory_mode_touches_no_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("in-memory mode made a temporary directory")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with embedded(in_memory=True) as endpoint:
        assert "TableNames" in client(endpoint).list_tables()


def test_an_error_in_the_block_still_stops_the_server() -> None:
    before = len(server_threads())
    with pytest.raises(RuntimeError, match="boom"), embedded(in_memory=True) as endpoint:
        client(endpoint).list_tables()
        raise RuntimeError("boom")
    assert len(server_threads()) == before


def test_two_embedded_servers_run_side_by_side() -> None:
    with embedded(in_memory=True) as first, embedded(in_memory=True) as second:
        assert first != second
        ddb = client(first)
        ddb.create_table(
            TableName="only-in-first",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        assert "only-in-first" in ddb.list_tables()["TableNames"]
        assert "only-in-first" not in client(second).list_tables()["TableNames"]


def test_a_given_data_dir_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "kept"
    with embedded(data_dir=data) as endpoint:
        client(endpoint).list_tables()
    assert data.is_dir()


def test_credentials_turn_on_signature_checks() -> None:
    with embedded(in_memory=True, credentials={"AKIDEMBEDDED": "embedded-secret"}) as endpoint:
        assert "TableNames" in client(endpoint).list_tables()
        wrong = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="AKIDOTHER",
            aws_secret_access_key="x",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        with pytest.raises(wrong.exceptions.ClientError) as caught:
            wrong.list_tables()
        assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_the_pytest_fixture_gives_a_working_endpoint(keeldb_endpoint: str) -> None:
    assert keeldb_endpoint.startswith("http://127.0.0.1:")
    assert "TableNames" in client(keeldb_endpoint).list_tables()


def test_the_pytest_fixture_works_in_a_users_test_suite(tmp_path: Path) -> None:
    (tmp_path / "test_users_code.py").write_text(
        textwrap.dedent(
            """
            import boto3

            def test_users_code(keeldb_endpoint):
                ddb = boto3.client(
                    "dynamodb", region_name="us-east-1", endpoint_url=keeldb_endpoint,
                    aws_access_key_id="a", aws_secret_access_key="b",
                )
                ddb.create_table(
                    TableName="users",
                    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
                assert ddb.list_tables()["TableNames"] == ["users"]
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_users_code.py"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_server_that_cannot_start_says_why_and_leaves_no_thread(tmp_path: Path) -> None:
    before = len(server_threads())
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with (
        pytest.raises(RuntimeError, match="KeelDB failed to start") as caught,
        embedded(data_dir=blocker / "data"),
    ):
        pass
    assert isinstance(caught.value.__cause__, OSError)
    assert len(server_threads()) == before
