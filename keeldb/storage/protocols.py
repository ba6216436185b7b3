"""The two interfaces the engine is written against: a `Store` (the materialised state of
one node) and a `ReplicatedLog` (where redo records are made durable and ordered).

The single-node log (`keeldb.storage.replog.LocalLog`) and the Multi-Paxos replica group
implement the same `ReplicatedLog`, so replacing one with the other touches neither
`engine/` nor `api/`. This module defines shapes only; it must never do IO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

# One committed log entry, in log order: (log sequence number, redo record bytes).
Entry = tuple[int, bytes]

# Called, in log order and on the event-loop thread, with entries once they are committed
# (durable on a write quorum). It must apply them to the store deterministically.
ApplyFn = Callable[[Sequence[Entry]], None]


class Store(Protocol):
    """Ordered byte-key/byte-value state, plus the LSN of the last applied entry."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with start <= key < end (end None: to the end), ascending or descending."""
        ...

    def write(
        self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes], applied_lsn: int
    ) -> None:
        """Apply one batch atomically and record `applied_lsn` in the same transaction."""
        ...

    def delete_range(self, start: bytes, end: bytes, applied_lsn: int) -> None:
        """Delete every key in [start, end) atomically, recording `applied_lsn`."""
        ...

    def applied_lsn(self) -> int: ...

    def sync(self) -> None:
        """Make everything written so far durable (checkpoint support)."""
        ...

    def close(self) -> None: ...


class ReplicatedLog(Protocol):
    """An ordered, durable log of redo records, replicated or not."""

    async def append(self, record: bytes) -> int:
        """Return the record's LSN once it is committed and has been applied."""
        ...

    def committed_lsn(self) -> int: ...

    async def close(self) -> None: ...
