"""Stream pollers: one per event source mapping, reading a table's stream and invoking its
function with batches of records, as Lambda's event source mappings for DynamoDB do.

Owns: reading the stream through the node's DynamoDB Streams service (in process, with the
public API's shapes: DescribeStream, GetShardIterator, GetRecords), shard order (a child shard
after its parent is finished), batching (BatchSize, MaximumBatchingWindowInSeconds), the Lambda
event shape, the error handling of a batch (retries, MaximumRetryAttempts,
MaximumRecordAgeInSeconds, BisectBatchOnFunctionError, ReportBatchItemFailures, the OnFailure
destination) and the durable checkpoint of each shard's position, written only after the
records before it were handled. Delivery is at least once: a crash between an invocation and
its checkpoint invokes the function again with the same records after restart.

It must never drop a record because the function is throttled (the poller pauses), and never
advances a checkpoint past a record that was neither processed nor handed to the OnFailure
handling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from keeldb.functions.errors import ServiceException, TooManyRequestsException
from keeldb.functions.model import SYNC_PAYLOAD_BYTES_MAX

if TYPE_CHECKING:
    from keeldb.functions.service import FunctionService

log = logging.getLogger("keeldb.functions")

# GetRecords returns at most this many records per call (DynamoDB Streams' limit).
GET_RECORDS_LIMIT_MAX = 1000
# How long an idle poller waits for new records before it looks again.
IDLE_WAIT_SECONDS = 0.5
# Lambda invokes a stream function with at most 6 MB of records (its payload limit), less
# room for the {"Records": [...]} envelope.
BATCH_PAYLOAD_BYTES_MAX = SYNC_PAYLOAD_BYTES_MAX - 1024
# Without a way to wait for new records, an idle poller looks again after this long.
FALLBACK_WAIT_SECONDS = 0.05
# Pause while the function is throttled, missing or the stream is unreadable.
THROTTLE_PAUSE_SECONDS = 0.1
PROBLEM_PAUSE_SECONDS = 1.0
# Waits between retries of a failed batch: doubling from the first to the last.
RETRY_DELAY_SECONDS_MIN = 0.05
RETRY_DELAY_SECONDS_MAX = 2.0
STREAMS_TARGET = "DynamoDBStreams_20120810"
# The stream's shard list is read again after this long (or when a shard closes): new shards
# appear rarely, and describing the stream on every poll would cost more than reading it.
SHARDS_REFRESH_SECONDS = 1.0
# Polls follow each other at most this often: wake-ups come from writes to any table's stream.
POLL_INTERVAL_SECONDS_MIN = 0.005


def _error_type(error: BaseException) -> str:
    return str(getattr(error, "type_name", type(error).__name__))


def _sequence(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def _created(record: dict[str, Any]) -> float:
    value = record.get("dynamodb", {}).get("ApproximateCreationDateTime", 0)
    return float(value)


class StreamPoller:
    """Polls one mapping's stream until stopped; `record` is the mapping's current record."""

    def __init__(self, service: FunctionService, record: dict[str, Any]) -> None:
        self.service = service
        self.record = record
        self.uuid = record["uuid"]
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._iterators: dict[str, str] = {}
        # Records read but not yet batched (a batch filled up), and shards whose iterator
        # reached their end, per shard id.
        self._carry: dict[str, list[dict[str, Any]]] = {}
        self._ended: set[str] = set()
        self._shards: list[dict[str, Any]] = []
        self._shards_read_at = -math.inf
        self.positions: dict[str, Any] = dict(service.store.positions.get(self.uuid, {}))
        self.invocations = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writing is not None:
            # A failed write was already reported by the loop (and will be redone).
            with contextlib.suppress(OSError):
                await self._writing

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if not self.record["enabled"]:
                    await self._sleep(PROBLEM_PAUSE_SECONDS)
                    continue
                if self.record["function"] not in self.service.store.functions:
                    self._result("PROBLEM: Function not found.")
                    await self._sleep(PROBLEM_PAUSE_SECONDS)
                    continue
                dispatch = self.service.streams_dispatch()
                if dispatch is None:
                    await self._sleep(PROBLEM_PAUSE_SECONDS)
                    continue
                started = time.monotonic()
                mark = self._applied()
                if not await self._poll_once(dispatch):
                    # A record applied while this poll ran would not wake the wait below.
                    if mark is None or self._applied() == mark:
                        await self._wait_for_records()
                    pause = POLL_INTERVAL_SECONDS_MIN - (time.monotonic() - started)
                    if pause > 0:
                        await asyncio.sleep(pause)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                kind = _error_type(error)
                if kind == "ResourceNotFoundException":
                    self._result("PROBLEM: Stream not found.")
                else:
                    log.exception("stream poller %s failed; retrying", self.uuid)
                self._rewind()
                self._shards_read_at = -math.inf
                await self._sleep(PROBLEM_PAUSE_SECONDS)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _applied(self) -> int | None:
        """The database's last applied log position, to tell whether anything was applied
        between two moments (None without a database)."""
        database = self.service.database
        if database is None:
            return None
        return int(database.store.applied_lsn())

    async def _wait_for_records(self) -> None:
        wait = self.service.wait_for_records
        if wait is None:
            await self._sleep(FALLBACK_WAIT_SECONDS)
            return
        await wait(IDLE_WAIT_SECONDS)

    def _result(self, text: str) -> None:
        self.record["last_result"] = text

    # -- reading the stream -----------------------------------------------------------------

    async def _current_shards(self, dispatch: Any) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._shards_read_at >= SHARDS_REFRESH_SECONDS:
            self._shards = await self._describe_shards(dispatch)
            self._shards_read_at = now
        return self._shards

    async def _describe_shards(self, dispatch: Any) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            body: dict[str, Any] = {"StreamArn": self.record["source"]}
            if start is not None:
                body["ExclusiveStartShardId"] = start
            answer = await dispatch("DescribeStream", body)
            description = answer["StreamDescription"]
            shards.extend(description.get("Shards", []))
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards

    async def _iterator(self, dispatch: Any, shard_id: str, first: bool) -> str:
        position = self.positions.get(shard_id) or {}
        body: dict[str, Any] = {"StreamArn": self.record["source"], "ShardId": shard_id}
        if position.get("after"):
            body["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            body["SequenceNumber"] = position["after"]
        else:
            # LATEST is read from the start and filtered by the mapping's creation time, so
            # that a restart before the first checkpoint loses nothing written after it.
            body["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            answer = await dispatch("GetShardIterator", body)
        except Exception as error:
            if _error_type(error) != "TrimmedDataAccessException":
                raise
            log.warning(
                "mapping %s: records of shard %s after %s were trimmed before they were "
                "processed; continuing from the oldest record",
                self.uuid,
                shard_id,
                position.get("after"),
            )
            body = {k: v for k, v in body.items() if k != "SequenceNumber"}
            body["ShardIteratorType"] = "TRIM_HORIZON"
            answer = await dispatch("GetShardIterator", body)
        return str(answer["ShardIterator"])

    async def _poll_once(self, dispatch: Any) -> bool:
        """Read and handle at most one batch per shard; whether any record was seen."""
        shards = await self._current_shards(dispatch)
        known = {shard["ShardId"] for shard in shards}
        progressed = False
        for index, shard in enumerate(shards):
            shard_id = shard["ShardId"]
            if (self.positions.get(shard_id) or {}).get("done"):
                continue
            parent = shard.get("ParentShardId")
            if parent in known and not (self.positions.get(parent) or {}).get("done"):
                continue  # a child waits until its parent's records are all handled
            batch, closed = await self._read_batch(dispatch, shard_id, index == 0)
            if batch:
                progressed = True
                await self._handle(shard_id, batch)
            if closed:
                await self._checkpoint(shard_id, None, done=True)
                self._shards_read_at = -math.inf  # its children may be new
        return progressed

    async def _read_batch(
        self, dispatch: Any, shard_id: str, first: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        """The next batch of a shard: at most BatchSize records and BATCH_PAYLOAD_BYTES_MAX
        of them, gathered for at most the batching window; and whether the shard is closed
        and every record of it has been handed out. Records read beyond a full batch are
        carried to the next one."""
        batch_size = self.record["batch_size"]
        deadline = time.monotonic() + self.record["window"]
        batch: list[dict[str, Any]] = []
        size = 0
        skipped_to: str | None = None
        pending = self._carry.pop(shard_id, [])
        while True:
            while pending and len(batch) < batch_size:
                record_bytes = len(orjson.dumps(pending[0])) + 1
                if batch and size + record_bytes > BATCH_PAYLOAD_BYTES_MAX:
                    break
                batch.append(pending.pop(0))
                size += record_bytes
            if pending:
                self._carry[shard_id] = pending  # the batch is full
                return batch, False
            if len(batch) >= batch_size:
                return batch, False
            if shard_id in self._ended:
                break
            records, ended = await self._get_records(dispatch, shard_id, first, batch_size)
            if records is None:  # the iterator expired: read again from the checkpoint
                if batch:
                    return batch, False
                continue
            for record in records:
                if self._before_start(record):
                    skipped_to = _sequence(record)
                    continue
                record = dict(record)
                record["eventSourceARN"] = self.record["source"]
                pending.append(record)
            if ended:
                self._ended.add(shard_id)
                continue
            if not records:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, 0.05))
        if skipped_to is not None and not batch:
            await self._checkpoint(shard_id, skipped_to)
        closed = shard_id in self._ended
        if closed:
            self._ended.discard(shard_id)
        return batch, closed

    async def _get_records(
        self, dispatch: Any, shard_id: str, first: bool, limit: int
    ) -> tuple[list[dict[str, Any]] | None, bool]:
        """One GetRecords call: (records, whether the shard ended), or (None, False) when the
        iterator expired or its records were trimmed."""
        iterator = self._iterators.get(shard_id)
        if iterator is None:
            iterator = await self._iterator(dispatch, shard_id, first)
        try:
            answer = await dispatch(
                "GetRecords",
                {"ShardIterator": iterator, "Limit": min(GET_RECORDS_LIMIT_MAX, limit)},
            )
        except Exception as error:
            if _error_type(error) not in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                raise
            self._iterators.pop(shard_id, None)
            return None, False
        next_iterator = answer.get("NextShardIterator")
        if next_iterator is None:
            self._iterators.pop(shard_id, None)
        else:
            self._iterators[shard_id] = next_iterator
        return list(answer.get("Records", [])), next_iterator is None

    def _rewind(self, shard_id: str | None = None) -> None:
        """Forget what was read past the checkpoint (of one shard, or of all), so that
        reading starts again from the checkpoint."""
        shards = [shard_id] if shard_id is not None else list(self._iterators | self._carry)
        for shard in shards:
            self._iterators.pop(shard, None)
            self._carry.pop(shard, None)
            self._ended.discard(shard)
        if shard_id is None:
            self._ended.clear()

    def _before_start(self, record: dict[str, Any]) -> bool:
        if self.record["starting_position"] != "LATEST":
            return False
        if self.positions:
            return False  # once anything is checkpointed, everything after it counts
        return _created(record) < math.floor(self.record["created"])

    # -- handling a batch -------------------------------------------------------------------

    async def _handle(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        """Deliver `records` (in order) until each one is processed or given up on."""
        pending: list[tuple[list[dict[str, Any]], int]] = [(records, 0)]
        while pending:
            if not self.record["enabled"]:
                # Disabled mid-batch: the rest is read again from the checkpoint once enabled.
                self._rewind(shard_id)
                return
            batch, retries = pending.pop(0)
            batch = await self._drop_expired(shard_id, batch)
            if not batch:
                continue
            outcome = await self._invoke(batch)
            failed_from = self._failed_from(batch, outcome)
            if failed_from is None:
                await self._checkpoint(shard_id, _sequence(batch[-1]))
                self._result("OK")
                continue
            if failed_from > 0:
                await self._checkpoint(shard_id, _sequence(batch[failed_from - 1]))
                batch = batch[failed_from:]
            limit = self.record["retries"]
            if limit != -1 and retries >= limit:
                await self._on_failure(shard_id, batch, "RetryAttemptsExhausted", outcome)
                await self._checkpoint(shard_id, _sequence(batch[-1]))
                continue
            self._result("PROBLEM: Function call failed")
            delay = min(RETRY_DELAY_SECONDS_MAX, RETRY_DELAY_SECONDS_MIN * 2**retries)
            await asyncio.sleep(delay)
            if self.record["bisect"] and len(batch) > 1:
                # Splitting a batch does not use up its retries (Lambda's rule).
                middle = len(batch) // 2
                pending[:0] = [(batch[:middle], retries), (batch[middle:], retries)]
            else:
                pending.insert(0, (batch, retries + 1))

    async def _drop_expired(
        self, shard_id: str, batch: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        age = self.record["record_age"]
        if age == -1:
            return batch
        now = self.service.clock()
        expired = [r for r in batch if now - _created(r) > age]
        if not expired:
            return batch
        await self._on_failure(shard_id, expired, "RecordAgeExceeded", None)
        return [r for r in batch if now - _created(r) <= age]

    async def _invoke(self, batch: list[dict[str, Any]]) -> Any:
        """Invoke the function with the batch; wait (never drop) while it is throttled."""
        payload = orjson.dumps({"Records": batch})
        while True:
            while not self.record["enabled"]:
                await self._sleep(PROBLEM_PAUSE_SECONDS)
            name = self.record["function"]
            if name not in self.service.store.functions:
                self._result("PROBLEM: Function not found.")
                await asyncio.sleep(PROBLEM_PAUSE_SECONDS)
                continue
            try:
                outcome = await self.service.invoker.run(name, payload)
            except TooManyRequestsException:
                self._result("PROBLEM: Function call throttled")
                await asyncio.sleep(THROTTLE_PAUSE_SECONDS)
                continue
            except ServiceException:
                # The function never ran: as Lambda does before an invocation, wait and try
                # again without using up the batch's retries.
                self._result("PROBLEM: Function could not be started")
                await asyncio.sleep(PROBLEM_PAUSE_SECONDS)
                continue
            self.invocations += 1
            return outcome

    def _failed_from(self, batch: list[dict[str, Any]], outcome: Any) -> int | None:
        """None when the batch succeeded; else the index of the first record to retry."""
        if outcome.function_error is not None:
            return 0
        if "ReportBatchItemFailures" not in self.record["response_types"]:
            return None
        try:
            answer = orjson.loads(outcome.payload) if outcome.payload else None
        except orjson.JSONDecodeError:
            return 0
        if not isinstance(answer, dict):
            return None
        failures = answer.get("batchItemFailures")
        if failures is None or failures == []:
            return None
        if not isinstance(failures, list):
            return 0
        sequences = [_sequence(r) for r in batch]
        indexes = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if identifier not in sequences:
                return 0  # Lambda treats an unknown or empty identifier as a failed batch
            indexes.append(sequences.index(identifier))
        return min(indexes)

    async def _checkpoint(self, shard_id: str, sequence: str | None, *, done: bool = False) -> None:
        position = dict(self.positions.get(shard_id) or {})
        if sequence is not None:
            position["after"] = sequence
        if done:
            position["done"] = True
        self.positions[shard_id] = position
        snapshot = dict(self.positions)
        self.service.store.positions[self.uuid] = snapshot
        # Shielded, so that stopping the poller lets a started checkpoint reach the disk
        # (`stop` waits for it): a clean shutdown then redelivers nothing.
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(self.service.store.write_positions, self.uuid, snapshot)
        )
        await asyncio.shield(self._writing)

    # -- on failure -------------------------------------------------------------------------

    async def _on_failure(
        self, shard_id: str, batch: list[dict[str, Any]], condition: str, outcome: Any
    ) -> None:
        destination = self.record.get("on_failure")
        first, last = batch[0], batch[-1]
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.service.arn(self.record["function"]),
                "condition": condition,
                "approximateInvokeCount": self.invocations,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": getattr(outcome, "function_error", None) or "",
            },
            "version": "1.0",
            "timestamp": _iso(self.service.clock()),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": _sequence(first),
                "endSequenceNumber": _sequence(last),
                "approximateArrivalOfFirstRecord": _iso(_created(first)),
                "approximateArrivalOfLastRecord": _iso(_created(last)),
                "batchSize": len(batch),
                "streamArn": self.record["source"],
            },
        }
        if destination is None:
            log.warning(
                "mapping %s discards %d records (%s) with no on-failure destination",
                self.uuid,
                len(batch),
                condition,
            )
            return
        if ":logs:" in destination:
            log.warning("on-failure record for %s: %s", destination, orjson.dumps(record).decode())
            return
        await self._write_failure_item(destination, record)

    async def _write_failure_item(self, table_arn: str, record: dict[str, Any]) -> None:
        """The failure record as an item of the destination table: its partition key is the
        request id (a string or number key), the record's parts are attributes."""
        database = self.service.database
        table = table_arn.rsplit("table/", 1)[1]
        while True:
            try:
                described = await database.dispatch("DescribeTable", {"TableName": table})
                schema = described["Table"]["KeySchema"]
                types = {
                    a["AttributeName"]: a["AttributeType"]
                    for a in described["Table"]["AttributeDefinitions"]
                }
                item: dict[str, Any] = {
                    "record": {"S": orjson.dumps(record).decode()},
                    "condition": {"S": record["requestContext"]["condition"]},
                    "functionArn": {"S": record["requestContext"]["functionArn"]},
                    "timestamp": {"S": record["timestamp"]},
                }
                for key, value in record["DDBStreamBatchInfo"].items():
                    item[key] = {"N": str(value)} if isinstance(value, int) else {"S": str(value)}
                for key in schema:
                    name = key["AttributeName"]
                    if types[name] == "N":
                        item[name] = {"N": str(time.time_ns())}
                    elif types[name] == "B":
                        item[name] = {"B": base64.b64encode(uuid.uuid4().bytes).decode()}
                    else:
                        item[name] = {"S": record["requestContext"]["requestId"]}
                await database.dispatch("PutItem", {"TableName": table, "Item": item})
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # The records stay unprocessed (and unchecked) until the record is written.
                log.exception("mapping %s cannot write its failure record to %s", self.uuid, table)
                await asyncio.sleep(PROBLEM_PAUSE_SECONDS)


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
