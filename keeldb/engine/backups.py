"""DynamoDB's backup operations: point-in-time recovery, on-demand backups, exports, imports.

This module owns:

- the request validation, ARNs and response shapes of UpdateContinuousBackups,
  DescribeContinuousBackups, RestoreTableToPointInTime, CreateBackup, DescribeBackup,
  ListBackups, DeleteBackup, RestoreTableFromBackup, ExportTableToPointInTime, DescribeExport,
  ListExports, ImportTable, DescribeImport and ListImports, with DynamoDB's error types and
  messages;
- a table's point-in-time recovery settings (`Table.extra["pitr"]`, changed by "update_table"
  records);
- tables being loaded (restored from the archive or a backup, or imported): created CREATING
  with `Table.extra["load"]` saying where their items come from, filled by "load_items"
  records whose applier writes each item through `item_store._item_write` (so indexes and
  statistics are kept as for any write), and made ACTIVE by a "load_done" record.

Everything that reads or writes the backup store (the archive, backup and export objects,
the background jobs) lives in `keeldb.backup`, which this module never imports: the node's
backup service puts an object with the `BackupHooks` methods in `Database.state[HOOKS_KEY]`.
Without it (a node with no backup store) the operations answer that backups are unavailable.
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any, Protocol

from keeldb.engine import catalog
from keeldb.engine.database import Body, Database, operation, redo_kind
from keeldb.engine.item_store import _item_write, storage_key
from keeldb.engine.schema import (
    BILLING_PAY_PER_REQUEST,
    BILLING_PROVISIONED,
    STATUS_ACTIVE,
    STATUS_CREATING,
    Table,
)
from keeldb.model.errors import (
    BackupInUseException,
    BackupNotFoundException,
    ContinuousBackupsUnavailableException,
    ExportConflictException,
    ExportNotFoundException,
    ImportConflictException,
    ImportNotFoundException,
    InvalidExportTimeException,
    InvalidRestoreTimeException,
    PointInTimeRecoveryUnavailableException,
    ResourceInUseException,
    TableAlreadyExistsException,
    TableInUseException,
    TableNotFoundException,
    ValidationException,
)
from keeldb.model.request_shapes import Shape, Violations, check_table_reference, check_types
from keeldb.storage.memory import MemoryLog, MemoryStore

HOOKS_KEY = "backup.hooks"  # Database.state entry: the node's `BackupHooks`
PITR_KEY = "pitr"  # Table.extra entry: {"enabled", "period_days", "enabled_at"}
LOAD_KEY = "load"  # Table.extra entry of a CREATING table being filled
RESTORE_SUMMARY_KEY = "restore_summary"  # Table.extra entry: DescribeTable's RestoreSummary

RECOVERY_PERIOD_DAYS_MIN = 1  # PointInTimeRecoverySpecification.RecoveryPeriodInDays
RECOVERY_PERIOD_DAYS_MAX = 35
SECONDS_PER_DAY = 86400
# KeelDB makes the archive current before it restores, so the latest restorable time trails
# the present by this much only (DynamoDB's is "typically 5 minutes before the current time").
LATEST_RESTORABLE_LAG_SECONDS = 1.0
BACKUP_NAME_LENGTH_MIN = 3
BACKUP_NAME_LENGTH_MAX = 255
BACKUP_NAME_PATTERN = "[a-zA-Z0-9_.-]+"
BACKUP_ARN_LENGTH_MIN = 37
BACKUP_ARN_LENGTH_MAX = 1024
LIST_BACKUPS_LIMIT_MAX = 100  # ListBackups' Limit: 1..100
LIST_EXPORTS_RESULTS_MAX = 25  # ListExports' MaxResults: 1..25
LIST_IMPORTS_PAGE_SIZE_MAX = 25  # ListImports' PageSize: 1..25
CLIENT_TOKEN_SECONDS = 8 * 3600  # how long an export's or import's ClientToken is remembered
EXPORT_CONFLICT_MESSAGE = "There was a conflict when writing to the specified S3 bucket."
IMPORT_CONFLICT_MESSAGE = (
    "There was a conflict when importing from the specified S3 source. This can occur when "
    "the current import conflicts with a previous import request that had the same client "
    "token."
)
LOAD_BATCH_BYTES_MAX = 1024 * 1024  # item bytes in one "load_items" record, at most
LOAD_BATCH_ITEMS_MAX = 1000  # items in one "load_items" record, at most

_BACKUP_NAME_RE = re.compile(r"[a-zA-Z0-9_.\-]+\Z")
# S3Bucket's pattern in DynamoDB's model (ExportTableToPointInTime, ImportTable).
S3_BUCKET_PATTERN = "^[a-z0-9A-Z]+[\\.\\-\\w]*[a-z0-9A-Z]+$"
_S3_BUCKET_RE = re.compile(r"[a-z0-9A-Z]+[.\-\w]*[a-z0-9A-Z]+\Z")
S3_BUCKET_LENGTH_MAX = 255
S3_PREFIX_LENGTH_MAX = 1024


def _check_s3_location(v: Violations, bucket: Any, prefix: Any, path: str, member: str) -> None:
    """S3Bucket by DynamoDB's pattern; a prefix whose "/"-separated parts are never "." or
    ".." (KeelDB maps keys to paths of a directory store, which must stay inside it)."""
    if isinstance(bucket, str):
        v.length(bucket, f"{path}s3Bucket", None, S3_BUCKET_LENGTH_MAX)
        if not _S3_BUCKET_RE.match(bucket):
            v.add(
                bucket,
                f"{path}s3Bucket",
                f"Member must satisfy regular expression pattern: {S3_BUCKET_PATTERN}",
            )
    if isinstance(prefix, str):
        v.length(prefix, f"{path}{member}", None, S3_PREFIX_LENGTH_MAX)
        if any(part in (".", "..") for part in prefix.split("/")):
            raise ValidationException(
                f"{member[0].upper()}{member[1:]} must not contain the path segments . or ..: "
                f"{prefix}"
            )


class BackupHooks(Protocol):
    """What the backup service (keeldb.backup) provides to these operations."""

    def restorable_window(self) -> tuple[float, float] | None:
        """(earliest, latest) instants the archive can restore, in seconds; None if empty."""
        ...

    def start_load(self, table: Table) -> None:
        """Fill a CREATING table whose `extra["load"]` names its source, in the background
        (also called at start for loads a stop interrupted)."""
        ...

    async def create_backup(self, table: Table, name: str, arn: str, now: float) -> Body: ...

    async def backup(self, arn: str) -> dict[str, Any] | None:
        """The stored descriptor of a backup (None if there is none)."""
        ...

    async def list_backups(self) -> list[dict[str, Any]]: ...

    async def delete_backup(self, arn: str) -> dict[str, Any]: ...

    async def start_export(self, table: Table, request: Body, arn: str, now: float) -> Body: ...

    async def export(self, arn: str) -> Body | None: ...

    async def list_exports(self) -> list[Body]: ...

    async def start_import(self, table: Table, request: Body, arn: str, now: float) -> Body: ...

    async def import_(self, arn: str) -> Body | None: ...

    async def list_imports(self) -> list[Body]: ...


NO_ARCHIVE_MESSAGE = (
    "Continuous backups are not available: this server keeps no archive of its log yet "
    "(it is off, or the backup store could not be reached)"
)


def hooks(db: Database) -> BackupHooks:
    found: BackupHooks | None = db.state.get(HOOKS_KEY)
    if found is None:
        raise ContinuousBackupsUnavailableException(
            "Backups are not available: this server has no backup store "
            "(it keeps its data in memory; start it with --backup-dir or --backup-s3)"
        )
    return found


def resource_id(now: float) -> str:
    """The last part of a backup, export or import ARN: milliseconds since the epoch (14
    digits), "-" and 8 random hexadecimal digits, as DynamoDB's."""
    return f"{int(now * 1000):014d}-{uuid.uuid4().hex[:8]}"


def iso_time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


# --- Point-in-time recovery settings --------------------------------------------------------


def pitr_settings(table: Table) -> dict[str, Any] | None:
    settings: dict[str, Any] | None = table.extra.get(PITR_KEY)
    if settings is None or not settings.get("enabled"):
        return None
    return settings


def restorable_range(db: Database, table: Table) -> tuple[float, float]:
    """(EarliestRestorableDateTime, LatestRestorableDateTime) of a table with PITR on."""
    settings = pitr_settings(table)
    assert settings is not None
    now = catalog.current_time(db)
    latest = now - LATEST_RESTORABLE_LAG_SECONDS
    earliest = max(settings["enabled_at"], now - settings["period_days"] * SECONDS_PER_DAY)
    window = hooks(db).restorable_window()
    if window is None:
        raise ContinuousBackupsUnavailableException(NO_ARCHIVE_MESSAGE)
    earliest = max(earliest, window[0])
    return min(earliest, latest), latest


def _continuous_backups_description(db: Database, table: Table) -> Body:
    settings = pitr_settings(table)
    if settings is None:
        pitr: Body = {"PointInTimeRecoveryStatus": "DISABLED"}
    else:
        pitr = {
            "PointInTimeRecoveryStatus": "ENABLED",
            "RecoveryPeriodInDays": settings["period_days"],
        }
        try:
            earliest, latest = restorable_range(db, table)
        except ContinuousBackupsUnavailableException:
            pass  # the archive cannot be reached now: no restorable range to report
        else:
            pitr["EarliestRestorableDateTime"] = earliest
            pitr["LatestRestorableDateTime"] = latest
    return {"ContinuousBackupsStatus": "ENABLED", "PointInTimeRecoveryDescription": pitr}


def _table_for_backups(db: Database, name: str) -> Table:
    """The table a backup operation names (by name or ARN): TableNotFoundException if none."""
    table = catalog.find_table(db, name)
    if table is None:
        raise TableNotFoundException(f"Table not found: {name}")
    return table


UPDATE_CONTINUOUS_BACKUPS_SHAPE: Shape = {
    "TableName": "S",
    "PointInTimeRecoverySpecification": {
        "PointInTimeRecoveryEnabled": "Z",
        "RecoveryPeriodInDays": "L",
    },
}


@operation("UpdateContinuousBackups")
async def update_continuous_backups(db: Database, body: Body) -> Body:
    body = check_types(body, UPDATE_CONTINUOUS_BACKUPS_SHAPE)
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    spec: Any = body.get("PointInTimeRecoverySpecification")
    if v.not_null(spec, "pointInTimeRecoverySpecification"):
        path = "pointInTimeRecoverySpecification"
        v.not_null(spec.get("PointInTimeRecoveryEnabled"), f"{path}.pointInTimeRecoveryEnabled")
        days = spec.get("RecoveryPeriodInDays")
        v.at_least(days, f"{path}.recoveryPeriodInDays", RECOVERY_PERIOD_DAYS_MIN)
        v.at_most(days, f"{path}.recoveryPeriodInDays", RECOVERY_PERIOD_DAYS_MAX)
    v.raise_if_any()
    hooks(db)
    name = body["TableName"]
    async with catalog.catalog_lock(db):
        table = _table_for_backups(db, name)
        if table.status != STATUS_ACTIVE:
            raise ContinuousBackupsUnavailableException(
                f"Backups are being enabled for the table: {table.name}. Please retry later"
            )
        enabled = spec["PointInTimeRecoveryEnabled"]
        current = table.extra.get(PITR_KEY) or {}
        if enabled and hooks(db).restorable_window() is None:
            raise ContinuousBackupsUnavailableException(NO_ARCHIVE_MESSAGE)
        if enabled:
            settings = {
                "enabled": True,
                "period_days": spec.get(
                    "RecoveryPeriodInDays", current.get("period_days", RECOVERY_PERIOD_DAYS_MAX)
                ),
                "enabled_at": current.get("enabled_at")
                if current.get("enabled")
                else catalog.current_time(db),
            }
        else:
            if "RecoveryPeriodInDays" in spec:
                raise ValidationException(
                    "RecoveryPeriodInDays cannot be specified when "
                    "PointInTimeRecoveryEnabled is false"
                )
            settings = {"enabled": False}
        extra = dict(table.extra)
        extra[PITR_KEY] = settings
        await db.propose(
            {
                "kind": "update_table",
                "name": table.name,
                "table_id": table.table_id,
                "changes": {"extra": extra},
            }
        )
        table = _table_for_backups(db, table.name)
    return {"ContinuousBackupsDescription": _continuous_backups_description(db, table)}


@operation("DescribeContinuousBackups")
async def describe_continuous_backups(db: Database, body: Body) -> Body:
    body = check_types(body, {"TableName": "S"})
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    v.raise_if_any()
    table = _table_for_backups(db, body["TableName"])
    return {"ContinuousBackupsDescription": _continuous_backups_description(db, table)}


# --- Tables being loaded --------------------------------------------------------------------


def _scratch_database(db: Database) -> Database:
    """An empty in-memory database with the live one's region, account and clock, where a
    CreateTable request is validated with CreateTable's own checks and messages."""
    scratch = Database(MemoryStore(), region=db.region, account_id=db.account_id)
    scratch.attach_log(MemoryLog(scratch.apply))
    scratch.state[catalog.CLOCK_STATE_KEY] = lambda: catalog.current_time(db)
    return scratch


def create_body(table: Table, target_name: str) -> Body:
    """The CreateTable request that makes a table with `table`'s schema, indexes, billing
    and encryption, named `target_name`."""
    provisioned = table.billing_mode == BILLING_PROVISIONED
    body: Body = {
        "TableName": target_name,
        "AttributeDefinitions": [
            {"AttributeName": a.name, "AttributeType": a.type} for a in table.attribute_definitions
        ],
        "KeySchema": _key_schema(table.hash_key, table.range_key),
        "BillingMode": table.billing_mode,
    }
    if provisioned:
        body["ProvisionedThroughput"] = {
            "ReadCapacityUnits": table.read_capacity_units,
            "WriteCapacityUnits": table.write_capacity_units,
        }
    if table.local_indexes:
        body["LocalSecondaryIndexes"] = [
            {
                "IndexName": i.name,
                "KeySchema": _key_schema(i.hash_key, i.range_key),
                "Projection": _projection(i),
            }
            for i in table.local_indexes
        ]
    if table.global_indexes:
        body["GlobalSecondaryIndexes"] = []
        for index in table.global_indexes:
            spec: Body = {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.hash_key, index.range_key),
                "Projection": _projection(index),
            }
            if provisioned:
                spec["ProvisionedThroughput"] = {
                    "ReadCapacityUnits": index.read_capacity_units,
                    "WriteCapacityUnits": index.write_capacity_units,
                }
            body["GlobalSecondaryIndexes"].append(spec)
    if table.sse_enabled:
        sse: Body = {"Enabled": True}
        if table.sse_type is not None:
            sse["SSEType"] = table.sse_type
        if table.kms_master_key_id is not None:
            sse["KMSMasterKeyId"] = table.kms_master_key_id
        body["SSESpecification"] = sse
    return body


def _key_schema(hash_key: Any, range_key: Any) -> list[Body]:
    schema = [{"AttributeName": hash_key.name, "KeyType": "HASH"}]
    if range_key is not None:
        schema.append({"AttributeName": range_key.name, "KeyType": "RANGE"})
    return schema


def _projection(index: Any) -> Body:
    projection: Body = {"ProjectionType": index.projection_type}
    if index.non_key_attributes:
        projection["NonKeyAttributes"] = list(index.non_key_attributes)
    return projection


def apply_overrides(body: Body, request: Body) -> Body:
    """The CreateTable request of a restore with the request's overrides applied."""
    body = dict(body)
    billing = request.get("BillingModeOverride")
    if billing is not None:
        body["BillingMode"] = billing
    if "ProvisionedThroughputOverride" in request:
        body["ProvisionedThroughput"] = request["ProvisionedThroughputOverride"]
    if "OnDemandThroughputOverride" in request:
        body["OnDemandThroughput"] = request["OnDemandThroughputOverride"]
    if "GlobalSecondaryIndexOverride" in request:
        body["GlobalSecondaryIndexes"] = request["GlobalSecondaryIndexOverride"]
    if "LocalSecondaryIndexOverride" in request:
        body["LocalSecondaryIndexes"] = request["LocalSecondaryIndexOverride"]
    if "SSESpecificationOverride" in request:
        body["SSESpecification"] = request["SSESpecificationOverride"]
    for member in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if member in body and not body[member]:
            del body[member]
    if body.get("BillingMode") == BILLING_PAY_PER_REQUEST:
        body.pop("ProvisionedThroughput", None)
        for index in body.get("GlobalSecondaryIndexes", []):
            index.pop("ProvisionedThroughput", None)
    # Only the attributes some key still uses stay defined (CreateTable refuses others).
    used = {k["AttributeName"] for k in body["KeySchema"]}
    for member in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        for index in body.get(member, []):
            used.update(k["AttributeName"] for k in index.get("KeySchema", []))
    body["AttributeDefinitions"] = [
        d for d in body["AttributeDefinitions"] if d["AttributeName"] in used
    ]
    return body


async def create_loading_table(
    db: Database,
    request: Body,
    load: dict[str, Any],
    summary: Body | None,
    *,
    exists_error: type[Exception] = TableAlreadyExistsException,
) -> Table:
    """Create the table `request` (a CreateTable request) describes, CREATING, to be filled
    from `load`; it becomes ACTIVE with a "load_done" record."""
    scratch = _scratch_database(db)
    name = request.get("TableName")
    if isinstance(name, str) and catalog.find_table(db, name) is not None:
        raise exists_error(f"Table already exists: {name}")
    await catalog.create_table(scratch, request)
    validated = catalog.find_table(scratch, request["TableName"])
    assert validated is not None
    async with catalog.catalog_lock(db):
        if catalog.find_table(db, validated.name) is not None:
            raise exists_error(f"Table already exists: {validated.name}")
        extra = dict(validated.extra)
        extra[LOAD_KEY] = load
        if summary is not None:
            extra[RESTORE_SUMMARY_KEY] = summary
        table = validated.evolve(
            status=STATUS_CREATING,
            table_id=str(uuid.uuid4()),
            arn=catalog.table_arn(db, validated.name),
            created_at=catalog.current_time(db),
            extra=extra,
        )
        await db.propose({"kind": "create_table", "table": table.to_record()})
    created = catalog.find_table(db, table.name)
    assert created is not None
    return created


async def load_items(db: Database, table: Table, items: list[tuple[Any, int]]) -> None:
    """Write `items` ((item, size in bytes) pairs) into a table being loaded."""
    if not items:
        return
    await db.propose(
        {
            "kind": "load_items",
            "table_id": table.table_id,
            "items": [[item, size] for item, size in items],
        }
    )


def load_batches(items: Any, items_max: int = LOAD_BATCH_ITEMS_MAX) -> Any:
    """Cut an iterable of (item, size) into "load_items" batches of at most `items_max`
    items (and about LOAD_BATCH_BYTES_MAX bytes)."""
    assert 1 <= items_max <= LOAD_BATCH_ITEMS_MAX, items_max
    batch: list[tuple[Any, int]] = []
    batch_bytes = 0
    for item, size in items:
        batch.append((item, size))
        batch_bytes += size
        if len(batch) >= items_max or batch_bytes >= LOAD_BATCH_BYTES_MAX:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch


async def finish_load(db: Database, table: Table) -> None:
    """Make a loaded table ACTIVE (its RestoreSummary no longer in progress)."""
    async with catalog.catalog_lock(db):
        await db.propose({"kind": "load_done", "table_id": table.table_id})


async def abandon_load(db: Database, table: Table) -> None:
    """Remove a table whose load failed (its source is damaged or gone)."""
    async with catalog.catalog_lock(db):
        current = catalog.get_table_by_id(db, table.table_id)
        if current is None:
            return
        await db.propose(
            {"kind": "delete_table", "name": current.name, "table_id": current.table_id}
        )


def loading_tables(db: Database) -> list[Table]:
    """Tables still being loaded (CREATING with a load source), by name."""
    return [
        t for t in catalog.list_tables(db) if t.status == STATUS_CREATING and LOAD_KEY in t.extra
    ]


@redo_kind("load_items")
def apply_load_items(db: Database, lsn: int, record: dict[str, Any]) -> None:
    """Write a batch of items into a loading table: each through `_item_write`, the earlier
    ones recorded at lsn - 1 and the last at lsn, so that a crash in the middle (outside a
    store batch) replays the whole record, and writing the same items again is harmless."""
    if lsn <= db.store.applied_lsn():
        return
    table = catalog.get_table_by_id(db, record["table_id"])
    items = record["items"]
    if table is None or not items:
        db.store.write([], [], applied_lsn=lsn)
        return
    for number, (item, size) in enumerate(items, start=1):
        key = storage_key(table, item)
        write = {"table": table.table_id, "item": item, "size": size}
        puts, deletes = _item_write(db, table, key, write)
        db.store.write(puts, deletes, applied_lsn=lsn if number == len(items) else lsn - 1)


@redo_kind("load_done")
def apply_load_done(db: Database, lsn: int, record: dict[str, Any]) -> None:
    if lsn <= db.store.applied_lsn():
        return
    table = catalog.get_table_by_id(db, record["table_id"])
    if table is None or table.status != STATUS_CREATING:
        db.store.write([], [], applied_lsn=lsn)
        return
    extra = dict(table.extra)
    extra.pop(LOAD_KEY, None)
    summary = extra.get(RESTORE_SUMMARY_KEY)
    if summary is not None:
        extra[RESTORE_SUMMARY_KEY] = dict(summary, RestoreInProgress=False)
    updated = table.evolve(status=STATUS_ACTIVE, extra=extra)
    db.store.write([catalog.table_entry(updated)], [], applied_lsn=lsn)
    catalog.remember(db, updated)


# --- RestoreTableToPointInTime, RestoreTableFromBackup --------------------------------------

_THROUGHPUT: Shape = {"ReadCapacityUnits": "L", "WriteCapacityUnits": "L"}
_ON_DEMAND: Shape = {"MaxReadRequestUnits": "L", "MaxWriteRequestUnits": "L"}
_INDEX: Shape = {
    "IndexName": "S",
    "KeySchema": [{"AttributeName": "S", "KeyType": "S"}],
    "Projection": {"ProjectionType": "S", "NonKeyAttributes": ["S"]},
    "ProvisionedThroughput": _THROUGHPUT,
    "OnDemandThroughput": _ON_DEMAND,
}
_OVERRIDES: Shape = {
    "TargetTableName": "S",
    "BillingModeOverride": "S",
    "GlobalSecondaryIndexOverride": [_INDEX],
    "LocalSecondaryIndexOverride": [_INDEX],
    "ProvisionedThroughputOverride": _THROUGHPUT,
    "OnDemandThroughputOverride": _ON_DEMAND,
    "SSESpecificationOverride": {"Enabled": "Z", "SSEType": "S", "KMSMasterKeyId": "S"},
}


def _timestamp(value: Any, member: str) -> float | None:
    """A timestamp member: epoch seconds (what the SDKs send) or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationException(f"Invalid value for {member}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValidationException(f"Invalid timestamp for {member}: {value}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.timestamp()
    raise ValidationException(f"Invalid timestamp for {member}")


def _check_target(v: Violations, body: Body) -> None:
    name = body.get("TargetTableName")
    if v.not_null(name, "targetTableName"):
        v.length(name, "targetTableName", 3, 255)
        v.pattern(name, "targetTableName")
    v.enum(body.get("BillingModeOverride"), "billingModeOverride", catalog.BILLING_MODES)


@operation("RestoreTableToPointInTime")
async def restore_table_to_point_in_time(db: Database, body: Body) -> Body:
    restore_time = _timestamp(body.get("RestoreDateTime"), "RestoreDateTime")
    body = check_types(
        {k: v for k, v in body.items() if k != "RestoreDateTime"},
        {
            **_OVERRIDES,
            "SourceTableArn": "S",
            "SourceTableName": "S",
            "UseLatestRestorableTime": "Z",
        },
    )
    v = Violations()
    _check_target(v, body)
    if body.get("SourceTableName") is not None:
        check_table_reference(v, body["SourceTableName"], "sourceTableName")
    v.raise_if_any()
    source_name = body.get("SourceTableArn") or body.get("SourceTableName")
    if source_name is None:
        raise ValidationException("Either SourceTableArn or SourceTableName must be specified")
    use_latest = body.get("UseLatestRestorableTime", False)
    if use_latest and restore_time is not None:
        raise ValidationException(
            "Only one of RestoreDateTime or UseLatestRestorableTime can be specified"
        )
    service = hooks(db)
    source = catalog.find_table(db, source_name)
    if source is None:
        raise TableNotFoundException(f"Table not found: {source_name}")
    if pitr_settings(source) is None:
        raise PointInTimeRecoveryUnavailableException(
            f"Point in time recovery is not enabled for table '{source.name}'"
        )
    earliest, latest = restorable_range(db, source)
    if restore_time is None:
        if not use_latest:
            raise ValidationException(
                "Either RestoreDateTime or UseLatestRestorableTime must be specified"
            )
        restore_time = latest
    if not earliest <= restore_time <= latest:
        raise InvalidRestoreTimeException(
            f"RestoreDateTime {iso_time(restore_time)} is not within the restorable range "
            f"of table {source.name}: {iso_time(earliest)} to {iso_time(latest)}"
        )
    request = apply_overrides(create_body(source, body["TargetTableName"]), body)
    load = {
        "source": "pitr",
        "table_id": source.table_id,
        "table_name": source.name,
        "time_us": int(restore_time * 1_000_000),
    }
    summary = {
        "SourceTableArn": source.arn,
        "RestoreDateTime": restore_time,
        "RestoreInProgress": True,
    }
    table = await create_loading_table(db, request, load, summary)
    service.start_load(table)
    return {"TableDescription": describe_loading(db, table)}


def describe_loading(db: Database, table: Table) -> Body:
    description = catalog.describe(db, table)
    summary = table.extra.get(RESTORE_SUMMARY_KEY)
    if summary is not None:
        description["RestoreSummary"] = summary
    return description


@operation("RestoreTableFromBackup")
async def restore_table_from_backup(db: Database, body: Body) -> Body:
    body = check_types(body, {**_OVERRIDES, "BackupArn": "S"})
    v = Violations()
    _check_target(v, body)
    arn: Any = body.get("BackupArn")
    if v.not_null(arn, "backupArn"):
        v.length(arn, "backupArn", BACKUP_ARN_LENGTH_MIN, BACKUP_ARN_LENGTH_MAX)
    v.raise_if_any()
    service = hooks(db)
    backup = await service.backup(arn)
    if backup is None or backup["BackupStatus"] == "DELETED":
        raise BackupNotFoundException(f"Backup not found: {arn}")
    if backup["BackupStatus"] != "AVAILABLE":
        raise backup_in_use(arn)
    source = Table.from_record(backup["table"])
    request = apply_overrides(create_body(source, body["TargetTableName"]), body)
    load = {"source": "backup", "backup_arn": arn}
    summary = {
        "SourceBackupArn": arn,
        "SourceTableArn": source.arn,
        "RestoreDateTime": backup["BackupCreationDateTime"],
        "RestoreInProgress": True,
    }
    table = await create_loading_table(db, request, load, summary)
    service.start_load(table)
    return {"TableDescription": describe_loading(db, table)}


def backup_in_use(arn: str) -> BackupInUseException:
    return BackupInUseException(f"Backup is being created: {arn}")


# --- CreateBackup, DescribeBackup, ListBackups, DeleteBackup --------------------------------


@operation("CreateBackup")
async def create_backup(db: Database, body: Body) -> Body:
    body = check_types(body, {"TableName": "S", "BackupName": "S"})
    v = Violations()
    check_table_reference(v, body.get("TableName"))
    name: Any = body.get("BackupName")
    if v.not_null(name, "backupName"):
        v.length(name, "backupName", BACKUP_NAME_LENGTH_MIN, BACKUP_NAME_LENGTH_MAX)
        if not _BACKUP_NAME_RE.match(name):
            v.add(
                name,
                "backupName",
                f"Member must satisfy regular expression pattern: {BACKUP_NAME_PATTERN}",
            )
    v.raise_if_any()
    service = hooks(db)
    table = _table_for_backups(db, body["TableName"])
    if table.status != STATUS_ACTIVE:
        raise TableInUseException(f"Table is being {table.status.lower()}: {table.name}")
    now = catalog.current_time(db)
    arn = f"{table.arn}/backup/{resource_id(now)}"
    details = await service.create_backup(table, name, arn, now)
    return {"BackupDetails": details}


def backup_details(backup: dict[str, Any]) -> Body:
    details = {
        k: backup[k]
        for k in (
            "BackupArn",
            "BackupName",
            "BackupSizeBytes",
            "BackupStatus",
            "BackupType",
            "BackupCreationDateTime",
        )
        if backup.get(k) is not None
    }
    return details


def backup_description(backup: dict[str, Any]) -> Body:
    table = Table.from_record(backup["table"])
    source: Body = {
        "TableName": table.name,
        "TableId": table.table_id,
        "TableArn": table.arn,
        "TableSizeBytes": backup.get("TableSizeBytes", 0),
        "KeySchema": _key_schema(table.hash_key, table.range_key),
        "TableCreationDateTime": table.created_at,
        "ProvisionedThroughput": {
            "ReadCapacityUnits": table.read_capacity_units,
            "WriteCapacityUnits": table.write_capacity_units,
        },
        "ItemCount": backup.get("ItemCount", 0),
        "BillingMode": table.billing_mode,
    }
    features: Body = {}
    if table.local_indexes:
        features["LocalSecondaryIndexes"] = [
            {
                "IndexName": i.name,
                "KeySchema": _key_schema(i.hash_key, i.range_key),
                "Projection": _projection(i),
            }
            for i in table.local_indexes
        ]
    if table.global_indexes:
        features["GlobalSecondaryIndexes"] = [
            {
                "IndexName": i.name,
                "KeySchema": _key_schema(i.hash_key, i.range_key),
                "Projection": _projection(i),
                "ProvisionedThroughput": {
                    "ReadCapacityUnits": i.read_capacity_units,
                    "WriteCapacityUnits": i.write_capacity_units,
                },
            }
            for i in table.global_indexes
        ]
    if table.stream_enabled:
        features["StreamDescription"] = {
            "StreamEnabled": True,
            "StreamViewType": table.stream_view_type,
        }
    if table.sse_enabled:
        features["SSEDescription"] = {"Status": "ENABLED", "SSEType": table.sse_type}
    description: Body = {
        "BackupDetails": backup_details(backup),
        "SourceTableDetails": source,
    }
    if features:
        description["SourceTableFeatureDetails"] = features
    return description


def _check_backup_arn(body: Body) -> str:
    body = check_types(body, {"BackupArn": "S"})
    v = Violations()
    arn: Any = body.get("BackupArn")
    if v.not_null(arn, "backupArn"):
        v.length(arn, "backupArn", BACKUP_ARN_LENGTH_MIN, BACKUP_ARN_LENGTH_MAX)
    v.raise_if_any()
    assert isinstance(arn, str)
    return arn


@operation("DescribeBackup")
async def describe_backup(db: Database, body: Body) -> Body:
    arn = _check_backup_arn(body)
    backup = await hooks(db).backup(arn)
    if backup is None or backup["BackupStatus"] == "DELETED":
        raise BackupNotFoundException(f"Backup not found: {arn}")
    return {"BackupDescription": backup_description(backup)}


@operation("DeleteBackup")
async def delete_backup(db: Database, body: Body) -> Body:
    arn = _check_backup_arn(body)
    service = hooks(db)
    backup = await service.backup(arn)
    if backup is None or backup["BackupStatus"] == "DELETED":
        raise BackupNotFoundException(f"Backup not found: {arn}")
    if backup["BackupStatus"] == "CREATING":
        raise backup_in_use(arn)
    deleted = await service.delete_backup(arn)
    return {"BackupDescription": backup_description(deleted)}


@operation("ListBackups")
async def list_backups(db: Database, body: Body) -> Body:
    lower = _timestamp(body.get("TimeRangeLowerBound"), "TimeRangeLowerBound")
    upper = _timestamp(body.get("TimeRangeUpperBound"), "TimeRangeUpperBound")
    body = check_types(
        {k: v for k, v in body.items() if not k.startswith("TimeRange")},
        {"TableName": "S", "Limit": "L", "ExclusiveStartBackupArn": "S", "BackupType": "S"},
    )
    v = Violations()
    name = body.get("TableName")
    if name is not None:
        check_table_reference(v, name)
    limit = body.get("Limit")
    v.at_least(limit, "limit", 1)
    v.at_most(limit, "limit", LIST_BACKUPS_LIMIT_MAX)
    v.enum(body.get("BackupType"), "backupType", ["USER", "SYSTEM", "AWS_BACKUP", "ALL"])
    start = body.get("ExclusiveStartBackupArn")
    v.length(start, "exclusiveStartBackupArn", BACKUP_ARN_LENGTH_MIN, BACKUP_ARN_LENGTH_MAX)
    v.raise_if_any()
    if lower is not None and upper is not None and lower > upper:
        raise ValidationException("TimeRangeLowerBound must be less than TimeRangeUpperBound")
    backups = [b for b in await hooks(db).list_backups() if b["BackupStatus"] != "DELETED"]
    if name is not None:
        table_name = name
        if name.startswith("arn:"):
            table_name = name.rsplit("/", 1)[-1]
        backups = [b for b in backups if b["table"]["name"] == table_name]
    backup_type = body.get("BackupType", "USER")
    if backup_type not in ("ALL", "USER"):
        backups = []  # KeelDB makes USER backups only
    if lower is not None:
        backups = [b for b in backups if b["BackupCreationDateTime"] >= lower]
    if upper is not None:
        backups = [b for b in backups if b["BackupCreationDateTime"] <= upper]
    backups.sort(key=lambda b: (b["BackupCreationDateTime"], b["BackupArn"]))
    if start is not None:
        arns = [b["BackupArn"] for b in backups]
        if start in arns:
            backups = backups[arns.index(start) + 1 :]
    limit = limit or LIST_BACKUPS_LIMIT_MAX
    page = backups[:limit]
    summaries = []
    for backup in page:
        table = backup["table"]
        summary = {
            "TableName": table["name"],
            "TableId": table["table_id"],
            "TableArn": table["arn"],
            **backup_details(backup),
        }
        if backup.get("BackupExpiryDateTime") is not None:
            summary["BackupExpiryDateTime"] = backup["BackupExpiryDateTime"]
        summaries.append(summary)
    out: Body = {"BackupSummaries": summaries}
    if len(backups) > limit:
        out["LastEvaluatedBackupArn"] = page[-1]["BackupArn"]
    return out


# --- ExportTableToPointInTime, DescribeExport, ListExports ----------------------------------

EXPORT_SHAPE: Shape = {
    "TableArn": "S",
    "ClientToken": "S",
    "S3Bucket": "S",
    "S3BucketOwner": "S",
    "S3Prefix": "S",
    "S3SseAlgorithm": "S",
    "S3SseKmsKeyId": "S",
    "ExportFormat": "S",
    "ExportType": "S",
}


@operation("ExportTableToPointInTime")
async def export_table_to_point_in_time(db: Database, body: Body) -> Body:
    export_time = _timestamp(body.get("ExportTime"), "ExportTime")
    body = check_types({k: v for k, v in body.items() if k != "ExportTime"}, EXPORT_SHAPE)
    v = Violations()
    arn: Any = body.get("TableArn")
    if v.not_null(arn, "tableArn"):
        v.length(arn, "tableArn", 1, 1024)
    v.not_null(body.get("S3Bucket"), "s3Bucket")
    _check_s3_location(v, body.get("S3Bucket"), body.get("S3Prefix"), "", "s3Prefix")
    v.enum(body.get("ExportFormat"), "exportFormat", ["DYNAMODB_JSON", "ION"])
    v.enum(body.get("ExportType"), "exportType", ["FULL_EXPORT", "INCREMENTAL_EXPORT"])
    v.enum(body.get("S3SseAlgorithm"), "s3SseAlgorithm", ["AES256", "KMS"])
    v.raise_if_any()
    if body.get("ExportFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON":
        raise ValidationException("KeelDB exports tables in the DYNAMODB_JSON format only")
    if body.get("ExportType", "FULL_EXPORT") != "FULL_EXPORT":
        raise ValidationException("KeelDB makes full exports only (ExportType FULL_EXPORT)")
    service = hooks(db)
    table = catalog.find_table(db, arn) if arn.startswith("arn:") else None
    if table is None:
        raise TableNotFoundException(f"Table not found: {arn}")
    token = body.get("ClientToken")
    if token is not None:
        # ClientToken makes the request idempotent (DynamoDB keeps tokens for 8 hours): the
        # same request again answers with the export it started; another one conflicts.
        for previous in await service.list_exports():
            if previous.get("ClientToken") != token:
                continue
            if catalog.current_time(db) - previous["StartTime"] > CLIENT_TOKEN_SECONDS:
                continue
            same = previous["TableArn"] == table.arn and all(
                previous.get(member) == body.get(member)
                for member in ("S3Bucket", "S3Prefix", "S3BucketOwner", "S3SseKmsKeyId")
            )
            if not same:
                raise ExportConflictException(EXPORT_CONFLICT_MESSAGE)
            return {"ExportDescription": await service.export(previous["ExportArn"])}
    if pitr_settings(table) is None:
        raise PointInTimeRecoveryUnavailableException(
            f"Point in time recovery is not enabled for table '{table.name}'"
        )
    now = catalog.current_time(db)
    earliest, latest = restorable_range(db, table)
    if export_time is None:
        export_time = latest
    if not earliest <= export_time <= now:
        raise InvalidExportTimeException(
            f"ExportTime {iso_time(export_time)} is not within the restorable range of table "
            f"{table.name}: {iso_time(earliest)} to {iso_time(latest)}"
        )
    export_arn = f"{table.arn}/export/{resource_id(now)}"
    request = dict(body, ExportTime=export_time)
    description = await service.start_export(table, request, export_arn, now)
    return {"ExportDescription": description}


def _wire_name(member: str) -> str:
    """How DynamoDB names a request member in its validation messages (exportArn ...)."""
    return member[0].lower() + member[1:]


def _named_arn(body: Body, member: str) -> Any:
    """The ARN a Describe request names in `member`, checked as DynamoDB checks it."""
    body = check_types(body, {member: "S"})
    v = Violations()
    arn: Any = body.get(member)
    if v.not_null(arn, _wire_name(member)):
        v.length(arn, _wire_name(member), 37, 1024)
    v.raise_if_any()
    return arn


def _listing_request(body: Body, limit_member: str, limit_max: int) -> tuple[Body, Any]:
    """A List request's checked body and its page size member (None when not given)."""
    body = check_types(body, {"TableArn": "S", limit_member: "L", "NextToken": "S"})
    v = Violations()
    limit = body.get(limit_member)
    v.at_least(limit, _wire_name(limit_member), 1)
    v.at_most(limit, _wire_name(limit_member), limit_max)
    v.raise_if_any()
    return body, limit


def _of_table(records: list[Body], body: Body, arn_key: str) -> list[Body]:
    """The records of the table the request names (all without TableArn), in ARN order."""
    if body.get("TableArn") is not None:
        records = [r for r in records if r["TableArn"] == body["TableArn"]]
    return sorted(records, key=lambda r: r[arn_key])


@operation("DescribeExport")
async def describe_export(db: Database, body: Body) -> Body:
    arn = _named_arn(body, "ExportArn")
    description = await hooks(db).export(arn)
    if description is None:
        raise ExportNotFoundException(f"Export not found: {arn}")
    return {"ExportDescription": description}


@operation("ListExports")
async def list_exports(db: Database, body: Body) -> Body:
    body, limit = _listing_request(body, "MaxResults", LIST_EXPORTS_RESULTS_MAX)
    exports = _of_table(await hooks(db).list_exports(), body, "ExportArn")
    return _page(
        exports,
        body.get("NextToken"),
        limit or LIST_EXPORTS_RESULTS_MAX,
        "ExportArn",
        "ExportSummaries",
        lambda e: {
            "ExportArn": e["ExportArn"],
            "ExportStatus": e["ExportStatus"],
            "ExportType": e.get("ExportType", "FULL_EXPORT"),
        },
    )


def _page(
    entries: list[Body], token: str | None, limit: int, key: str, member: str, summary: Any
) -> Body:
    if token is not None:
        keys = [e[key] for e in entries]
        if token not in keys:
            raise ValidationException(f"Invalid NextToken: {token}")
        entries = entries[keys.index(token) + 1 :]
    page = entries[:limit]
    out: Body = {member: [summary(e) for e in page]}
    if len(entries) > limit:
        out["NextToken"] = page[-1][key]
    return out


# --- ImportTable, DescribeImport, ListImports -----------------------------------------------

IMPORT_SHAPE: Shape = {
    "ClientToken": "S",
    "S3BucketSource": {"S3BucketOwner": "S", "S3Bucket": "S", "S3KeyPrefix": "S"},
    "InputFormat": "S",
    "InputCompressionType": "S",
    "TableCreationParameters": {
        "TableName": "S",
        "AttributeDefinitions": [{"AttributeName": "S", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "S", "KeyType": "S"}],
        "BillingMode": "S",
        "ProvisionedThroughput": _THROUGHPUT,
        "OnDemandThroughput": _ON_DEMAND,
        "SSESpecification": {"Enabled": "Z", "SSEType": "S", "KMSMasterKeyId": "S"},
        "GlobalSecondaryIndexes": [_INDEX],
    },
}


@operation("ImportTable")
async def import_table(db: Database, body: Body) -> Body:
    raw_options = body.get("InputFormatOptions")
    body = check_types(body, IMPORT_SHAPE)
    v = Violations()
    source: Any = body.get("S3BucketSource")
    if v.not_null(source, "s3BucketSource"):
        v.not_null(source.get("S3Bucket"), "s3BucketSource.s3Bucket")
        _check_s3_location(
            v, source.get("S3Bucket"), source.get("S3KeyPrefix"), "s3BucketSource.", "s3KeyPrefix"
        )
    input_format = body.get("InputFormat")
    if v.not_null(input_format, "inputFormat"):
        v.enum(input_format, "inputFormat", ["DYNAMODB_JSON", "ION", "CSV"])
    v.enum(body.get("InputCompressionType"), "inputCompressionType", ["GZIP", "ZSTD", "NONE"])
    parameters: Any = body.get("TableCreationParameters")
    v.not_null(parameters, "tableCreationParameters")
    v.raise_if_any()
    del raw_options
    if input_format != "DYNAMODB_JSON":
        raise ValidationException("KeelDB imports the DYNAMODB_JSON format only")
    if body.get("InputCompressionType") == "ZSTD":
        raise ValidationException("KeelDB imports GZIP or uncompressed (NONE) files only")
    service = hooks(db)
    now = catalog.current_time(db)
    token = body.get("ClientToken")
    if token is not None:
        for previous in await service.list_imports():
            if previous.get("ClientToken") != token:
                continue
            if now - previous["StartTime"] > CLIENT_TOKEN_SECONDS:
                continue
            same = all(
                previous.get(member) == body.get(member)
                for member in ("S3BucketSource", "InputFormat", "TableCreationParameters")
            ) and previous.get("InputCompressionType", "NONE") == body.get(
                "InputCompressionType", "NONE"
            )
            if not same:
                raise ImportConflictException(IMPORT_CONFLICT_MESSAGE)
            return {"ImportTableDescription": await service.import_(previous["ImportArn"])}
    name = parameters.get("TableName")
    if isinstance(name, str) and catalog.find_table(db, name) is not None:
        raise ResourceInUseException(f"Table already exists: {name}")
    import_id = resource_id(now)
    load = {"source": "import", "import_id": import_id}
    table = await create_loading_table(
        db, dict(parameters), load, None, exists_error=ResourceInUseException
    )
    import_arn = f"{table.arn}/import/{import_id}"
    description = await service.start_import(table, dict(body), import_arn, now)
    return {"ImportTableDescription": description}


@operation("DescribeImport")
async def describe_import(db: Database, body: Body) -> Body:
    arn = _named_arn(body, "ImportArn")
    description = await hooks(db).import_(arn)
    if description is None:
        raise ImportNotFoundException(f"Import not found: {arn}")
    return {"ImportTableDescription": description}


@operation("ListImports")
async def list_imports(db: Database, body: Body) -> Body:
    body, limit = _listing_request(body, "PageSize", LIST_IMPORTS_PAGE_SIZE_MAX)
    imports = _of_table(await hooks(db).list_imports(), body, "ImportArn")
    return _page(
        imports,
        body.get("NextToken"),
        limit or LIST_IMPORTS_PAGE_SIZE_MAX,
        "ImportArn",
        "ImportSummaryList",
        lambda i: {
            k: i[k]
            for k in (
                "ImportArn",
                "ImportStatus",
                "TableArn",
                "S3BucketSource",
                "CloudWatchLogGroupArn",
                "InputFormat",
                "StartTime",
                "EndTime",
            )
            if i.get(k) is not None
        },
    )
