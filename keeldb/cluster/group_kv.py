"""A small key-value state machine over a replica group, for tests, the group runner and
the benchmark: put and compare-and-set go through the group's log, get is a lease read
(waiting briefly for the leader's lease, see `GroupLog.wait_read_lease`).

Owns the command encoding, the deterministic apply onto a `Store` (idempotent by LSN: an
entry at or below the store's applied LSN is skipped), and `KvService`, which answers
requests on a transport channel. It never serves a read without `GroupLog.read_lease()`,
and never retries a write (a client that timed out does not know the outcome).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgpack

from keeldb.cluster.group import AppendTimeout, GroupBusy, GroupClosed, GroupLog, NotLeader
from keeldb.storage.protocols import Entry, Store

KEY_PREFIX = b"kv/"
RESULTS_MAX = 65536  # compare-and-set outcomes kept for the proposer to collect
KEY_CHARS_MAX = 1024
VALUE_BYTES_MAX = 1024 * 1024
READ_LEASE_WAIT_SECONDS = 0.5  # a leader's strong read waits this long for its lease


def encode_put(key: str, value: bytes) -> bytes:
    data: bytes = msgpack.packb(["put", key, value], use_bin_type=True)
    return data


def encode_cas(key: str, expected: bytes | None, value: bytes) -> bytes:
    data: bytes = msgpack.packb(["cas", key, expected, value], use_bin_type=True)
    return data


class KvMachine:
    """Keys to values in a store; apply is deterministic, so every member ends the same."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.results: OrderedDict[int, bool] = OrderedDict()

    def apply(self, entries: Sequence[Entry]) -> None:
        store = self.store
        for lsn, data in entries:
            if lsn <= store.applied_lsn():
                continue
            command = msgpack.unpackb(data, raw=False)
            match command:
                case ["put", str(key), bytes(value)]:
                    store.write([(KEY_PREFIX + key.encode(), value)], [], applied_lsn=lsn)
                case ["cas", str(key), expected, bytes(value)]:
                    current = store.get(KEY_PREFIX + key.encode())
                    succeeded = current == expected
                    puts = [(KEY_PREFIX + key.encode(), value)] if succeeded else []
                    store.write(puts, [], applied_lsn=lsn)
                    self.results[lsn] = succeeded
                    while len(self.results) > RESULTS_MAX:
                        self.results.popitem(last=False)
                case _:
                    raise AssertionError(f"not a key-value command at LSN {lsn}: {command!r}")

    def get(self, key: str) -> bytes | None:
        return self.store.get(KEY_PREFIX + key.encode())


class KvService:
    """Answers {"op": "put" | "cas" | "get" | "status", ...} for one group member."""

    def __init__(self, group: GroupLog, machine: KvMachine) -> None:
        self.group = group
        self.machine = machine

    async def handle(self, sender: str, request: Any) -> dict[str, Any]:
        del sender
        if not isinstance(request, dict):
            return {"ok": False, "error": "BadRequest"}
        op = request.get("op")
        try:
            if op == "status":
                return {"ok": True, "status": self.group.status()}
            key = request.get("key")
            if not isinstance(key, str) or not 0 < len(key) <= KEY_CHARS_MAX:
                return {"ok": False, "error": "BadRequest"}
            if op == "get":
                if not await self.group.wait_read_lease(READ_LEASE_WAIT_SECONDS):
                    return {"ok": False, "error": "NotLeader", "leader": self.group.leader_hint}
                return {"ok": True, "value": self.machine.get(key)}
            value = request.get("value")
            if not isinstance(value, bytes) or len(value) > VALUE_BYTES_MAX:
                return {"ok": False, "error": "BadRequest"}
            if op == "put":
                lsn = await self.group.append(encode_put(key, value))
                return {"ok": True, "lsn": lsn}
            if op == "cas":
                expected = request.get("expected")
                if expected is not None and not isinstance(expected, bytes):
                    return {"ok": False, "error": "BadRequest"}
                lsn = await self.group.append(encode_cas(key, expected, value))
                return {"ok": True, "lsn": lsn, "result": self.machine.results.pop(lsn)}
            return {"ok": False, "error": "BadRequest"}
        except NotLeader as error:
            return {"ok": False, "error": "NotLeader", "leader": error.leader_hint}
        except AppendTimeout:
            return {"ok": False, "error": "Timeout"}
        except (GroupBusy, GroupClosed) as error:
            return {"ok": False, "error": type(error).__name__}
