"""In-memory `Store` and `ReplicatedLog`, for the embedded mode's fast, non-durable option.

They keep the same contracts as the durable implementations (atomic batches, applied LSN,
apply in log order) so the engine cannot tell them apart; they never touch the disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sortedcontainers import SortedDict

from keeldb.storage.protocols import ApplyFn


class MemoryStore:
    """A `Store` held in a sorted dict; lost when the process ends."""

    def __init__(self) -> None:
        self._data: SortedDict = SortedDict()
        self._applied_lsn = 0

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._data.get(key)
        return value

    def scan(
        self, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        keys = self._data.irange(start, end, inclusive=(True, False), reverse=reverse)
        for key in keys:
            # A concurrent delete between yields must not break the iteration.
            value = self._data.get(key)
            if value is not None:
                yield key, value

    def write(
        self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes], applied_lsn: int
    ) -> None:
        assert applied_lsn >= self._applied_lsn
        for key in deletes:
            self._data.pop(key, None)
        for key, value in puts:
            self._data[key] = value
        self._applied_lsn = applied_lsn

    def delete_range(self, start: bytes, end: bytes, applied_lsn: int) -> None:
        assert applied_lsn >= self._applied_lsn
        for key in list(self._data.irange(start, end, inclusive=(True, False))):
            del self._data[key]
        self._applied_lsn = applied_lsn

    def applied_lsn(self) -> int:
        return self._applied_lsn

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None


class MemoryLog:
    """A `ReplicatedLog` of one member with no disk: an entry commits as it is appended."""

    def __init__(self, apply: ApplyFn, start_lsn: int = 0) -> None:
        self._apply = apply
        self._lsn = start_lsn

    async def append(self, record: bytes) -> int:
        self._lsn += 1
        self._apply([(self._lsn, record)])
        return self._lsn

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None
