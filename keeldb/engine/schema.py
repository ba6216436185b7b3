"""The in-memory description of one table: its key schema and everything DescribeTable
reports. Owned by the catalog; read by item operations. Never does IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class KeyAttribute:
    name: str
    type: str  # "S", "N" or "B"


@dataclass(slots=True)
class Table:
    name: str
    table_id: str  # a UUID string, as DynamoDB's TableId
    hash_key: KeyAttribute
    range_key: KeyAttribute | None
    status: str  # CREATING | ACTIVE | UPDATING | DELETING
    created_at: float  # seconds since the epoch, as CreationDateTime
    arn: str
    # Everything else DescribeTable reports (billing, throughput, stream spec, tags ...).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key_names(self) -> tuple[str, ...]:
        if self.range_key is None:
            return (self.hash_key.name,)
        return (self.hash_key.name, self.range_key.name)
