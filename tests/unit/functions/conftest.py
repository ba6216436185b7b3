"""Fakes for the function service's unit tests: a pool that runs Python callables in process,
a DynamoDB Streams dispatch over a list of records (one shard, AWS shapes), and a database
that answers DescribeTable and keeps PutItem items. `make_service` builds a FunctionService
over them."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from keeldb.functions import local_pool
from keeldb.functions.service import FunctionService

REGION = "us-east-1"
ACCOUNT = "000000000000"
STREAM_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/src/stream/2026-01-01T00:00:00.000"
FAILURES_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/failures"
ROLE = "arn:aws:iam::123456789012:role/test"


class ClientError(Exception):
    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name


class FakePool:
    """Runs `handlers[name](event) -> result` in process; an exception is a function error,
    `SandboxTimeout` raised by a handler is a timeout."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        self.events: list[tuple[str, Any]] = []
        self.running = 0
        self.running_max = 0
        self.gate: asyncio.Event | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def isolation_layers(self) -> dict[str, bool]:
        return {"namespaces": False, "seccomp": False}

    def instances(self, name: str) -> int:
        return 0

    async def invoke(self, spec: Any, payload: bytes, **_context: Any) -> local_pool.InvokeResult:
        event = orjson.loads(payload)
        self.events.append((spec.name, event))
        self.running += 1
        self.running_max = max(self.running_max, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            try:
                result = self.handlers[spec.name](event)
            except (local_pool.SandboxTimeout, local_pool.SandboxCrashed, local_pool.SandboxBusy):
                raise
            except Exception as error:  # noqa: BLE001 - a handler's error is its answer
                body = {"errorMessage": str(error), "errorType": type(error).__name__}
                return local_pool.InvokeResult(orjson.dumps(body), "Unhandled", "x\n", 1.0, False)
            return local_pool.InvokeResult(orjson.dumps(result), None, "ok\n", 1.0, False)
        finally:
            self.running -= 1


class FakeStreams:
    """One open shard over `records`; iterators are "index:<next index>"."""

    SHARD = "shardId-00000000000000000001-00000001"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.next_sequence = 100000000000000000000
        self.trimmed_before = 0  # records below this index are gone
        self.get_records_calls = 0

    def put(self, key: str, created: float = 1_800_000_000.0, pad_bytes: int = 0) -> str:
        sequence = str(self.next_sequence)
        self.next_sequence += 1
        self.records.append(
            {
                "eventID": f"e{sequence}",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": REGION,
                "dynamodb": {
                    "ApproximateCreationDateTime": created,
                    "Keys": {"pk": {"S": key}},
                    "NewImage": {"pk": {"S": key}, "pad": {"S": "x" * pad_bytes}},
                    "SequenceNumber": sequence,
                    "SizeBytes": 10,
                    "StreamViewType": "NEW_IMAGE",
                },
            }
        )
        return sequence

    def _index_after(self, sequence: str) -> int:
        for index, record in enumerate(self.records):
            if int(record["dynamodb"]["SequenceNumber"]) > int(sequence):
                return index
        return len(self.records)

    async def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("StreamArn", STREAM_ARN) != STREAM_ARN:
            raise ClientError("ResourceNotFoundException")
        if operation == "DescribeStream":
            return {
                "StreamDescription": {
                    "StreamArn": STREAM_ARN,
                    "StreamStatus": "ENABLED",
                    "Shards": [
                        {
                            "ShardId": self.SHARD,
                            "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                        }
                    ],
                }
            }
        if operation == "GetShardIterator":
            kind = body["ShardIteratorType"]
            if kind == "TRIM_HORIZON":
                index = self.trimmed_before
            elif kind == "LATEST":
                index = len(self.records)
            else:
                index = self._index_after(body["SequenceNumber"])
                if index < self.trimmed_before:
                    raise ClientError("TrimmedDataAccessException")
            return {"ShardIterator": f"index:{index}"}
        if operation == "GetRecords":
            self.get_records_calls += 1
            index = int(body["ShardIterator"].split(":")[1])
            index = max(index, self.trimmed_before)
            limit = body.get("Limit", 1000)
            page = self.records[index : index + limit]
            return {"Records": page, "NextShardIterator": f"index:{index + len(page)}"}
        raise AssertionError(operation)


class FakeDatabase:
    """DescribeTable for the source and failure tables; PutItem items kept per table."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.store = self

    def applied_lsn(self) -> int:
        return 0

    async def dispatch(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["TableName"]
        if operation == "DescribeTable":
            table: dict[str, Any] = {
                "TableName": name,
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            }
            if name == "src":
                table["LatestStreamArn"] = STREAM_ARN
            return {"Table": table}
        if operation == "PutItem":
            self.items.setdefault(name, []).append(body["Item"])
            return {}
        raise AssertionError(operation)


def zip_b64(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def create_body(name: str = "f", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_b64({"app.py": "def handler(e, c):\n    return e\n"})},
    }
    body.update(overrides)
    return body


class Harness:
    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.pool = FakePool()
        self.streams = FakeStreams()
        self.database = FakeDatabase()
        self.now = 1_800_000_000.0

    def service(self, **options: Any) -> FunctionService:
        return FunctionService(
            root=self.root,
            region=REGION,
            account=ACCOUNT,
            endpoint_url="http://127.0.0.1:9",
            endpoint_port=9,
            database=self.database,
            streams=lambda: self.streams,
            pool_module=local_pool,
            pool=self.pool,
            clock=lambda: self.now,
            **options,
        )


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "functions")


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until `check()` holds; fail after `seconds` (generous: CI machines are loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def fakes() -> Any:
    class Fakes:
        pass

    namespace = Fakes()
    for name, value in {
        "create_body": create_body,
        "zip_b64": zip_b64,
        "eventually": eventually,
        "STREAM_ARN": STREAM_ARN,
        "FAILURES_ARN": FAILURES_ARN,
        "ROLE": ROLE,
    }.items():
        setattr(namespace, name, value)
    return namespace
