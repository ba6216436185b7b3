"""Fixtures of the streams unit tests. `h`: a database over a MemoryStore and a recording
MemoryLog, with a fake clock and a private event loop, and the DynamoDB Streams API bound to
it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine import catalog, indexes
from keeldb.engine.database import Database
from keeldb.model.errors import ClientError
from keeldb.storage.memory import MemoryLog, MemoryStore
from keeldb.streams import api

NOW = 1_800_000_000.0  # a fixed instant (2027-01-15T08:00:00Z)


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingLog(MemoryLog):
    """A MemoryLog that keeps every entry, so that a test can replay it."""

    def __init__(self, apply: Any) -> None:
        super().__init__(apply)
        self.entries: list[tuple[int, bytes]] = []

    async def append(self, record: bytes) -> int:
        self.entries.append((self.committed_lsn() + 1, record))
        return await super().append(record)


class Harness:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.clock = FakeClock()
        self.db.state[catalog.CLOCK_STATE_KEY] = self.clock
        self.log = RecordingLog(self.db.apply)
        self.db.attach_log(self.log)
        self.loop = asyncio.new_event_loop()
        # Index backfills run only when a test steps them.
        self.db.state[indexes.STATE_KEY] = self.loop.create_future()
        self.streams = api.dispatcher(self.db)

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def api(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.streams(operation, body))

    def api_error(self, operation: str, body: dict[str, Any]) -> ClientError:
        with pytest.raises(ClientError) as caught:
            self.api(operation, body)
        return caught.value

    def create(
        self, name: str = "tbl", view: str | None = "NEW_AND_OLD_IMAGES", **more: Any
    ) -> str:
        body: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if view is not None:
            body["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
        body.update(more)
        self("CreateTable", body)
        return self.arn(name) if view is not None else ""

    def arn(self, name: str = "tbl") -> str:
        arn: str = self("DescribeTable", {"TableName": name})["Table"]["LatestStreamArn"]
        return arn

    def put(self, item: dict[str, Any], name: str = "tbl") -> None:
        self("PutItem", {"TableName": name, "Item": item})

    def shard_id(self, arn: str) -> str:
        """The open shard's id (the last one, if the stream is closed)."""
        shards = self.api("DescribeStream", {"StreamArn": arn})["StreamDescription"]["Shards"]
        open_ = [x for x in shards if "EndingSequenceNumber" not in x["SequenceNumberRange"]]
        shard_id: str = (open_ or shards)[-1]["ShardId"]
        return shard_id

    def iterator(self, arn: str, kind: str = "TRIM_HORIZON", **more: Any) -> str:
        body = {"StreamArn": arn, "ShardId": self.shard_id(arn), "ShardIteratorType": kind}
        body.update(more)
        text: str = self.api("GetShardIterator", body)["ShardIterator"]
        return text

    def records(self, arn: str, kind: str = "TRIM_HORIZON", **more: Any) -> list[dict[str, Any]]:
        position: str | None = self.iterator(arn, kind, **more)
        out: list[dict[str, Any]] = []
        while position is not None:
            page = self.api("GetRecords", {"ShardIterator": position})
            out.extend(page["Records"])
            if not page["Records"]:
                break
            position = page.get("NextShardIterator")
        return out

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


@pytest.fixture(scope="session")
def new_harness() -> type[Harness]:
    """The Harness class, for tests that make one per example (hypothesis)."""
    return Harness
