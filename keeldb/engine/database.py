"""The node's database: one object that takes DynamoDB operations and redo records.

`dispatch(operation, body)` is the only entry point of the front end: it validates the
request, evaluates it against the latest view, appends a redo record to the replicated log
and waits for it to commit. `apply(entries)` is the only way state changes: the log calls
it, in log order, with committed redo records, at run time and during recovery alike.

Operations and redo kinds register themselves from their modules (`catalog`, `items`) with
the `operation` and `redo_kind` decorators, so that each module owns its own requests and
records. This module never opens files or sockets.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgpack
from mypy_extensions import mypyc_attr

from keeldb.engine.packing import pack
from keeldb.model.errors import SerializationException, UnknownOperationException
from keeldb.storage.protocols import Entry, ReplicatedLog, Store

Body = dict[str, Any]
OperationFn = Callable[["Database", Body], Awaitable[Body]]
# An applier receives the database, the entry's LSN and the decoded redo record, and makes
# the entry's whole effect one atomic store write recorded at that LSN.
ApplierFn = Callable[["Database", int, dict[str, Any]], None]

# The modules whose import registers operations and redo kinds.
OPERATION_MODULES = (
    "keeldb.engine.catalog",
    "keeldb.engine.items",
    "keeldb.engine.indexes",
    "keeldb.engine.query",
    "keeldb.engine.scan",
    "keeldb.engine.batch",
    "keeldb.engine.ttl",
    "keeldb.engine.partiql",
    "keeldb.engine.streams",
    "keeldb.engine.backups",
    "keeldb.engine.transactions",
    "keeldb.engine.transactions_partition",
    "keeldb.engine.transactions_partiql",
)

# Proposed records kept for `apply` to take without decoding them (`Database.propose`): one
# per write in flight, so a few hundred at most in practice; past this bound a record is
# simply decoded again when it is applied.
PROPOSED_RECORDS_MAX = 4096

OPERATIONS: dict[str, OperationFn] = {}
APPLIERS: dict[str, ApplierFn] = {}


def operation(name: str) -> Callable[[OperationFn], OperationFn]:
    """Register the handler of one DynamoDB operation (e.g. "PutItem")."""

    def register(fn: OperationFn) -> OperationFn:
        assert name not in OPERATIONS, name
        OPERATIONS[name] = fn
        return fn

    return register


def redo_kind(kind: str) -> Callable[[ApplierFn], ApplierFn]:
    """Register how one kind of redo record is applied to the store."""

    def register(fn: ApplierFn) -> ApplierFn:
        assert kind not in APPLIERS, kind
        APPLIERS[kind] = fn
        return fn

    return register


def encode_record(record: dict[str, Any]) -> bytes:
    """Redo records are msgpack maps with a "kind" key naming their applier."""
    assert record["kind"] in APPLIERS, record["kind"]
    return pack(record)


def decode_record(data: bytes) -> dict[str, Any]:
    record: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return record


class RecordCodec(Protocol):
    """Transforms encoded redo records on their way into the log and out of it (encryption
    at rest: `keeldb.crypto.RecordCodec`). `open` raises rather than return wrong bytes."""

    def seal(self, data: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes: ...


# The cluster's router reads through a subclass (`_RoutedView`), compiled or not.
@mypyc_attr(allow_interpreted_subclasses=True)
class Database:
    """Holds the store, the log and the in-memory views built on top of them."""

    def __init__(
        self,
        store: Store,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        record_codec: RecordCodec | None = None,
    ) -> None:
        # Importing the operation modules registers their operations and redo kinds.
        for module in OPERATION_MODULES:
            importlib.import_module(module)

        self.store = store
        self.region = region
        self.account_id = account_id
        self._log: ReplicatedLog | None = None
        # None: records go to the log as encoded; otherwise sealed before, opened after.
        self.record_codec = record_codec
        # Per-module state (the catalog's table cache, pending after-images ...) hangs here,
        # keyed by module name, so that modules do not import each other's internals.
        self.state: dict[str, Any] = {}
        # Requests inside `dispatch` now (evaluating, or waiting for their record to commit).
        self.requests_in_progress = 0
        # Records proposed here and not applied yet that `apply` may take as they are instead
        # of decoding them again (`propose(..., round_trips=True)`): id of the appended bytes
        # -> (those bytes, the record). The bytes are held, so their id cannot be reused.
        self._proposed: dict[int, tuple[bytes, dict[str, Any]]] = {}

    def __copy__(self) -> Database:
        """A second view of this database (the same state, log and pending records); the
        caller may then give it another store. Spelled out, so that a compiled class copies
        as the interpreted one does."""
        view = Database(
            self.store,
            region=self.region,
            account_id=self.account_id,
            record_codec=self.record_codec,
        )
        view._log = self._log
        view.state = self.state
        view.requests_in_progress = self.requests_in_progress
        view._proposed = self._proposed
        return view

    @classmethod
    def in_memory(cls) -> Database:
        """A database over an in-memory store and a log that commits each record as it is
        appended: nothing on disk (tests)."""
        from keeldb.storage.memory import MemoryLog, MemoryStore

        store = MemoryStore()
        db = cls(store)
        db.attach_log(MemoryLog(db.apply, start_lsn=store.applied_lsn()))
        return db

    @property
    def log(self) -> ReplicatedLog:
        assert self._log is not None, "attach_log() first"
        return self._log

    def attach_log(self, log: ReplicatedLog) -> None:
        """The log is built with `self.apply` as its callback, so it is attached after."""
        assert self._log is None
        self._log = log
        # A log that chooses where to fsync by how many requests wait (the node's log in its
        # "auto" mode) asks the database, which sees every request.
        set_demand = getattr(log, "set_demand", None)
        if set_demand is not None:
            set_demand(lambda: self.requests_in_progress)

    async def dispatch(self, operation_name: str, body: Any) -> Body:
        handler = OPERATIONS.get(operation_name)
        if handler is None:
            raise UnknownOperationException("")
        if not isinstance(body, dict):
            # As the HTTP front end answers a body that is not a JSON object.
            raise SerializationException("")
        self.requests_in_progress += 1
        try:
            return await handler(self, body)
        finally:
            self.requests_in_progress -= 1

    async def propose(self, record: dict[str, Any], *, round_trips: bool = False) -> int:
        """Append one redo record and wait until it is committed and applied.

        `round_trips`: the record decodes to an equal record (str keys; str, bytes, int and
        None values, no tuples), so when the log hands back these very bytes to `apply`, it
        may apply `record` itself rather than decode (and open) them again. A log that
        hands back other bytes (a replica's, a recovery's) gets them decoded as always.
        """
        data = encode_record(record)
        if self.record_codec is not None:
            data = self.record_codec.seal(data)
        if not round_trips or len(self._proposed) >= PROPOSED_RECORDS_MAX:
            return await self.log.append(data)
        proposed = self._proposed
        handle = id(data)
        proposed[handle] = (data, record)
        try:
            return await self.log.append(data)
        finally:
            # Applied (`apply` took it), failed or cancelled: never kept past its append.
            proposed.pop(handle, None)

    def apply(self, entries: Sequence[Entry]) -> None:
        codec = self.record_codec
        proposed = self._proposed
        for lsn, data in entries:
            mine = proposed.pop(id(data), None) if proposed else None
            if mine is not None and mine[0] is data:
                if codec is not None:
                    codec.open(data)  # it sees every applied record (e.g. an archive's copy)
                record = mine[1]
            else:
                if mine is not None:
                    proposed[id(data)] = mine  # another object at that id: not ours
                record = decode_record(data if codec is None else codec.open(data))
            APPLIERS[record["kind"]](self, lsn, record)
