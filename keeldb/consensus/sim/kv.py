"""The key-value state machine the simulated replicas apply, and the commands clients send.

It owns the command encoding (`Command`), the deterministic apply (`KvStore.apply`), the
session table that makes a retried command take effect once, and the snapshot bytes of the
whole state. It must never depend on anything but the bytes it is given: two replicas that
apply the same commands in the same order end in byte-identical snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from keeldb.consensus.sim.linearizability import OpKind

# Bound on the request ids remembered per client; far above what one run issues, so the
# session table never forgets a request that a late retry could still deliver.
SESSION_REQUESTS_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class Command:
    """One client request as it travels through the log."""

    client: int
    request: int
    kind: OpKind
    key: str
    value: bytes | None = None
    expected: bytes | None = None

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(
            ["kv", self.client, self.request, self.kind.value, self.key, self.value,
             self.expected],
            use_bin_type=True,
        )
        return data

    @staticmethod
    def decode(data: bytes) -> Command | None:
        """The command in `data`, or None when the entry is not a client command."""
        if not data:
            return None
        try:
            fields = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return None
        if not isinstance(fields, list) or len(fields) != 7 or fields[0] != "kv":
            return None
        _, client, request, kind, key, value, expected = fields
        return Command(client, request, OpKind(kind), key, value, expected)


Result = bytes | bool | None


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one command did: its result, and whether it was a duplicate."""

    command: Command
    result: Result
    duplicate: bool


class KvStore:
    """Keys to values, plus per client the request ids already applied and the last result.

    The session table is part of the replicated state (it travels in snapshots), so every
    replica agrees on which retries are duplicates.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.applied: dict[int, set[int]] = {}
        self.results: dict[int, dict[int, Result]] = {}
        self.applied_count = 0

    def apply(self, command: Command) -> Applied:
        done = self.applied.setdefault(command.client, set())
        results = self.results.setdefault(command.client, {})
        if command.request in done:
            return Applied(command, results.get(command.request), True)
        assert len(done) < SESSION_REQUESTS_MAX
        result: Result
        match command.kind:
            case OpKind.GET:
                result = self.data.get(command.key)
            case OpKind.PUT:
                assert command.value is not None
                self.data[command.key] = command.value
                result = None
            case OpKind.CAS:
                assert command.value is not None
                result = self.data.get(command.key) == command.expected
                if result:
                    self.data[command.key] = command.value
        done.add(command.request)
        results[command.request] = result
        self.applied_count += 1
        return Applied(command, result, False)

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def has_applied(self, client: int, request: int) -> bool:
        return request in self.applied.get(client, ())

    def snapshot(self) -> bytes:
        """The whole state as bytes, in sorted order so equal states give equal bytes."""
        data: bytes = msgpack.packb(
            [
                "kvsnap",
                sorted(self.data.items()),
                [[c, sorted(self.applied[c])] for c in sorted(self.applied)],
                [[c, sorted(self.results[c].items())] for c in sorted(self.results)],
                self.applied_count,
            ],
            use_bin_type=True,
        )
        return data

    @staticmethod
    def restore(data: bytes) -> KvStore:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
        assert fields[0] == "kvsnap"
        store = KvStore()
        store.data = {k: v for k, v in fields[1]}
        store.applied = {c: set(reqs) for c, reqs in fields[2]}
        store.results = {c: {r: res for r, res in items} for c, items in fields[3]}
        store.applied_count = fields[4]
        return store
