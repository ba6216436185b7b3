"""Fixtures of the transaction unit tests: `make_harness()` builds a database over a
MemoryStore and MemoryLog with a private event loop (`Harness`); `lagging_log` is a log that
keeps proposals in flight for a few loop turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keeldb.engine.database import Database
from keeldb.model.errors import ClientError
from keeldb.storage.memory import MemoryLog, MemoryStore


class Harness:
    def __init__(self, store: MemoryStore | None = None, loop: Any = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.db = Database(self.store)
        self.log = MemoryLog(self.db.apply, start_lsn=self.store.applied_lsn())
        self.db.attach_log(self.log)
        self.loop = loop if loop is not None else asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.run(self.db.dispatch(operation, body))
        return result

    def error(self, operation: str, body: dict[str, Any]) -> ClientError:
        """The client error a request gets; the store must be unchanged by it."""
        before = list(self.store.scan(b"", None))
        with pytest.raises(ClientError) as caught:
            self(operation, body)
        assert list(self.store.scan(b"", None)) == before
        return caught.value

    def create(self, name: str, **extra: Any) -> None:
        body: dict[str, Any] = {
            "TableName": name,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        body.update(extra)
        self("CreateTable", body)

    def get(self, table: str, pk: str) -> dict[str, Any] | None:
        answer = self("GetItem", {"TableName": table, "Key": {"pk": {"S": pk}}})
        return answer.get("Item")

    def get_table_id(self, name: str) -> str:
        from keeldb.engine import catalog

        table = catalog.find_table(self.db, name)
        assert table is not None
        return table.table_id

    def size_of(self, name: str, pk: str) -> int:
        from keeldb.engine import catalog
        from keeldb.engine.item_store import committed_item, storage_key

        table = catalog.find_table(self.db, name)
        assert table is not None
        return committed_item(self.db, storage_key(table, {"pk": {"S": pk}}))[1]

    def put(self, table: str, pk: str, **numbers: int) -> None:
        self("PutItem", {"TableName": table, "Item": item(pk, **numbers)})


def item(pk: str, **numbers: int) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": {"S": pk}}
    for name, value in numbers.items():
        out[name] = {"N": str(value)}
    return out


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}}


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(store: MemoryStore | None = None) -> Harness:
        harness = Harness(store, made[0].loop if made else None)
        made.append(harness)
        return harness

    yield make
    if made:
        made[0].loop.close()


class LaggingLog:
    """A one-member log that applies appended records in batches on a later loop turn."""

    def __init__(self, apply: Any) -> None:
        self._apply = apply
        self._lsn = 0
        self._waiting: list[tuple[int, bytes, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, record: bytes) -> int:
        self._lsn += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((self._lsn, record, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        batch, self._waiting, self._task = self._waiting, [], None
        self._apply([(lsn, record) for lsn, record, _ in batch])
        for lsn, _, future in batch:
            future.set_result(lsn)

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


@pytest.fixture
def lagging_log() -> type[LaggingLog]:
    return LaggingLog
