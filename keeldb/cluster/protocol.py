"""The messages between routers and storage nodes, and the errors they carry.

Owns the shapes of the requests a router sends over the transport ("kv.op" for a
partition's operation, "kv.catalog" for the metadata group, "kv.sync", "kv.tables",
"kv.status"; and "kv.lead", from one storage node to another) and of their answers, and
the translation of a storage node's DynamoDB error back into the same error at the router,
so that the client sees what a single node answers.

Answers are small lists: ["ok", body], ["error", error_body, status], ["redirect", node or
None] (not the leader, nothing done), ["wrong_partition"] (the key belongs elsewhere, nothing
done), ["stale_catalog"] (the partition does not know the table the router names yet,
nothing done), ["unavailable", reason] (no leader with a lease; nothing done). Only "ok" and
"error" mean the operation ran.

It never does IO.
"""

from __future__ import annotations

from typing import Any, ClassVar

from keeldb.model import errors as errors_module
from keeldb.model.errors import ClientError

CHANNEL_OP = "kv.op"
CHANNEL_CATALOG = "kv.catalog"
CHANNEL_SYNC = "kv.sync"
CHANNEL_TABLES = "kv.tables"
CHANNEL_STATUS = "kv.status"
CHANNEL_TXN = "kv.txn"  # a step of a transaction across partitions, or of its ledger
CHANNEL_LEAD = "kv.lead"  # a group's leader asks another member to take the leadership

OK = "ok"
ERROR = "error"
REDIRECT = "redirect"
WRONG_PARTITION = "wrong_partition"
STALE_CATALOG = "stale_catalog"
UNAVAILABLE = "unavailable"

# How a partition may serve an operation.
MODE_WRITE = "write"  # the leader, with a valid lease (conditions see the latest state)
MODE_STRONG = "strong"  # the leader, with a valid lease
MODE_EVENTUAL = "eventual"  # any replica whose log lags the leader's by little


class RemoteClientError(ClientError):
    """A DynamoDB error a storage node raised, carried back to the router unchanged."""

    type_name: ClassVar[str] = "RemoteClientError"

    def __init__(self, body: dict[str, Any], status: int) -> None:
        super().__init__(str(body.get("message", "")))
        self._body = body
        self.status = status  # type: ignore[misc]

    @property
    def wire_type(self) -> str:
        return str(self._body.get("__type", ""))

    @property
    def short_type(self) -> str:
        return self.wire_type.rpartition("#")[2]

    def body(self) -> dict[str, Any]:
        return dict(self._body)


def error_answer(error: ClientError) -> list[Any]:
    return [ERROR, error.body(), error.status]


def _known_errors() -> dict[str, type[ClientError]]:
    known: dict[str, type[ClientError]] = {}
    for value in vars(errors_module).values():
        if isinstance(value, type) and issubclass(value, ClientError) and value is not ClientError:
            known[f"{value.namespace}#{value.type_name}"] = value
    return known


_KNOWN: dict[str, type[ClientError]] = {}


def raise_error(answer: list[Any]) -> None:
    """Raise the error a storage node answered, as the same class where we have it (so that
    code that catches, say, ConditionalCheckFailedException, sees one)."""
    assert answer[0] == ERROR, answer
    body: dict[str, Any] = answer[1]
    status = int(answer[2])
    if not _KNOWN:
        _KNOWN.update(_known_errors())
    cls = _KNOWN.get(str(body.get("__type", "")))
    message = str(body.get("message", ""))
    if cls is errors_module.ConditionalCheckFailedException:
        raise errors_module.ConditionalCheckFailedException(message, body.get("Item"))
    if cls is not None and set(body) <= {"__type", "message"} and cls.status == status:
        try:
            error = cls(message)
        except TypeError:
            error = None
        if error is not None:
            raise error
    raise RemoteClientError(body, status)
