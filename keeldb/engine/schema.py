"""The in-memory description of one table: its key schema, its secondary indexes and
everything DescribeTable reports. Owned by the catalog (`keeldb.engine.catalog`), which
creates and changes tables only through committed redo records; read by item operations.

A `Table` converts to and from a plain msgpack-friendly dict (`to_record`/`from_record`),
which is what the catalog stores and carries in its redo records. This module never does
IO, never reads a clock and never draws random numbers: every value in a `Table` was
decided when the request that made it was validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# Table states, as DescribeTable's TableStatus reports them.
STATUS_CREATING = "CREATING"
STATUS_ACTIVE = "ACTIVE"
STATUS_UPDATING = "UPDATING"
STATUS_DELETING = "DELETING"

BILLING_PROVISIONED = "PROVISIONED"
BILLING_PAY_PER_REQUEST = "PAY_PER_REQUEST"


@dataclass(frozen=True, slots=True)
class KeyAttribute:
    name: str
    type: str  # "S", "N" or "B"


@dataclass(frozen=True, slots=True)
class SecondaryIndex:
    """One local or global secondary index, as defined at CreateTable (or, for a global
    index, by a later UpdateTable)."""

    name: str
    hash_key: KeyAttribute
    range_key: KeyAttribute | None
    projection_type: str  # ALL | KEYS_ONLY | INCLUDE
    non_key_attributes: tuple[str, ...]
    arn: str
    is_global: bool
    status: str = STATUS_ACTIVE  # global indexes only: CREATING | UPDATING | DELETING | ACTIVE
    read_capacity_units: int = 0  # global indexes of PROVISIONED tables only
    write_capacity_units: int = 0
    # The id under which the index's entries are stored (0 is the base table). Recorded
    # when the index is defined, so that deleting another index never moves it; None only
    # in catalogs written before ids were recorded (readers then use the index's position).
    index_id: int | None = None

    @property
    def key_names(self) -> tuple[str, ...]:
        if self.range_key is None:
            return (self.hash_key.name,)
        return (self.hash_key.name, self.range_key.name)

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hash_key": [self.hash_key.name, self.hash_key.type],
            "range_key": None
            if self.range_key is None
            else [self.range_key.name, self.range_key.type],
            "projection_type": self.projection_type,
            "non_key_attributes": list(self.non_key_attributes),
            "arn": self.arn,
            "is_global": self.is_global,
            "status": self.status,
            "read_capacity_units": self.read_capacity_units,
            "write_capacity_units": self.write_capacity_units,
            "index_id": self.index_id,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SecondaryIndex:
        range_key = record["range_key"]
        return cls(
            name=record["name"],
            hash_key=KeyAttribute(*record["hash_key"]),
            range_key=None if range_key is None else KeyAttribute(*range_key),
            projection_type=record["projection_type"],
            non_key_attributes=tuple(record["non_key_attributes"]),
            arn=record["arn"],
            is_global=record["is_global"],
            status=record["status"],
            read_capacity_units=record["read_capacity_units"],
            write_capacity_units=record["write_capacity_units"],
            index_id=record.get("index_id"),
        )


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the catalog. Immutable: a change makes a new `Table` (`evolve`)."""

    name: str
    table_id: str  # a UUID string, as DynamoDB's TableId
    hash_key: KeyAttribute
    range_key: KeyAttribute | None
    status: str  # CREATING | ACTIVE | UPDATING | DELETING
    created_at: float  # seconds since the epoch, as CreationDateTime
    arn: str
    # Every AttributeDefinition, in the order the CreateTable request gave them (DynamoDB
    # echoes that order back).
    attribute_definitions: tuple[KeyAttribute, ...] = ()
    billing_mode: str = BILLING_PAY_PER_REQUEST
    read_capacity_units: int = 0  # 0 for PAY_PER_REQUEST, as DynamoDB reports
    write_capacity_units: int = 0
    last_increase_at: float | None = None  # ProvisionedThroughput.LastIncreaseDateTime
    last_decrease_at: float | None = None  # ProvisionedThroughput.LastDecreaseDateTime
    # Decreases made on the UTC day `decreases_day` (days since the epoch): DescribeTable
    # reports them as NumberOfDecreasesToday only while that day lasts.
    decreases_day: int = 0
    decreases_count: int = 0
    # BillingModeSummary.LastUpdateToPayPerRequestDateTime; None if the table never was
    # PAY_PER_REQUEST (DynamoDB then omits BillingModeSummary altogether).
    pay_per_request_since: float | None = None
    stream_enabled: bool = False
    stream_view_type: str | None = None
    # LatestStreamLabel of the newest stream the table ever had (it outlives a disabled
    # stream, as in DynamoDB), None if it never had one.
    stream_label: str | None = None
    deletion_protection: bool = False
    table_class: str | None = None  # TableClass, if ever given (DynamoDB omits it otherwise)
    sse_enabled: bool = False
    sse_type: str | None = None  # "KMS" when SSESpecification enabled KMS encryption
    kms_master_key_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # in the order they were first set
    # WarmThroughput: the highest capacity the table was ever ready for (12000/4000 once it
    # was PAY_PER_REQUEST, else the highest provisioned units); it never decreases.
    warm_read_units: int = 0
    warm_write_units: int = 0
    # OnDemandThroughput of a PAY_PER_REQUEST table: the most request units per second it may
    # use; None where unset (DynamoDB then omits the member).
    on_demand_read_units: int | None = None
    on_demand_write_units: int | None = None
    # When TableClass was changed by UpdateTable (DynamoDB allows 2 changes in 30 days).
    table_class_updates: tuple[float, ...] = ()
    local_indexes: tuple[SecondaryIndex, ...] = ()
    global_indexes: tuple[SecondaryIndex, ...] = ()
    # Extension room for later features (TTL settings, replicas ...) that want to ride on
    # the catalog record without a schema change.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key_names(self) -> tuple[str, ...]:
        if self.range_key is None:
            return (self.hash_key.name,)
        return (self.hash_key.name, self.range_key.name)

    @property
    def stream_arn(self) -> str | None:
        """LatestStreamArn: the table's ARN, "/stream/" and the stream label."""
        if self.stream_label is None:
            return None
        return f"{self.arn}/stream/{self.stream_label}"

    def index(self, name: str) -> SecondaryIndex | None:
        for index in self.local_indexes + self.global_indexes:
            if index.name == name:
                return index
        return None

    def evolve(self, **changes: Any) -> Table:
        return replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table_id": self.table_id,
            "hash_key": [self.hash_key.name, self.hash_key.type],
            "range_key": None
            if self.range_key is None
            else [self.range_key.name, self.range_key.type],
            "status": self.status,
            "created_at": self.created_at,
            "arn": self.arn,
            "attribute_definitions": [[a.name, a.type] for a in self.attribute_definitions],
            "billing_mode": self.billing_mode,
            "read_capacity_units": self.read_capacity_units,
            "write_capacity_units": self.write_capacity_units,
            "last_increase_at": self.last_increase_at,
            "last_decrease_at": self.last_decrease_at,
            "decreases_day": self.decreases_day,
            "decreases_count": self.decreases_count,
            "pay_per_request_since": self.pay_per_request_since,
            "stream_enabled": self.stream_enabled,
            "stream_view_type": self.stream_view_type,
            "stream_label": self.stream_label,
            "deletion_protection": self.deletion_protection,
            "table_class": self.table_class,
            "sse_enabled": self.sse_enabled,
            "sse_type": self.sse_type,
            "kms_master_key_id": self.kms_master_key_id,
            "tags": [[k, v] for k, v in self.tags],
            "warm_read_units": self.warm_read_units,
            "warm_write_units": self.warm_write_units,
            "table_class_updates": list(self.table_class_updates),
            "on_demand_read_units": self.on_demand_read_units,
            "on_demand_write_units": self.on_demand_write_units,
            "local_indexes": [i.to_record() for i in self.local_indexes],
            "global_indexes": [i.to_record() for i in self.global_indexes],
            "extra": self.extra,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Table:
        range_key = record["range_key"]
        return cls(
            name=record["name"],
            table_id=record["table_id"],
            hash_key=KeyAttribute(*record["hash_key"]),
            range_key=None if range_key is None else KeyAttribute(*range_key),
            status=record["status"],
            created_at=record["created_at"],
            arn=record["arn"],
            attribute_definitions=tuple(
                KeyAttribute(n, t) for n, t in record["attribute_definitions"]
            ),
            billing_mode=record["billing_mode"],
            read_capacity_units=record["read_capacity_units"],
            write_capacity_units=record["write_capacity_units"],
            last_increase_at=record["last_increase_at"],
            last_decrease_at=record["last_decrease_at"],
            decreases_day=record["decreases_day"],
            decreases_count=record["decreases_count"],
            pay_per_request_since=record["pay_per_request_since"],
            stream_enabled=record["stream_enabled"],
            stream_view_type=record["stream_view_type"],
            stream_label=record["stream_label"],
            deletion_protection=record["deletion_protection"],
            table_class=record["table_class"],
            sse_enabled=record["sse_enabled"],
            sse_type=record["sse_type"],
            kms_master_key_id=record["kms_master_key_id"],
            tags=tuple((k, v) for k, v in record["tags"]),
            warm_read_units=record.get("warm_read_units", 0),
            warm_write_units=record.get("warm_write_units", 0),
            table_class_updates=tuple(record.get("table_class_updates", ())),
            on_demand_read_units=record.get("on_demand_read_units"),
            on_demand_write_units=record.get("on_demand_write_units"),
            local_indexes=tuple(SecondaryIndex.from_record(i) for i in record["local_indexes"]),
            global_indexes=tuple(SecondaryIndex.from_record(i) for i in record["global_indexes"]),
            extra=dict(record["extra"]),
        )
