"""Retention and shard rollover: the background task that keeps streams' shards in shape.

Owns `StreamTrimmer`, which every `interval_seconds` reads the clock once and
- if any record is older than `retention_seconds` (or a disabled stream, or a closed shard,
  has outlived it), proposes a "stream_trim" redo record (`keeldb.engine.streams.plan_trim`);
  each removes at most `TRIM_RECORDS_PER_ENTRY_MAX` records, and one tick proposes at most
  `TRIM_ENTRIES_PER_TICK_MAX` of them, so that a backlog never stalls writers;
- if a stream's open shard is `shard_seconds` old, proposes a "stream_roll" redo record,
  which closes it and opens its child. DynamoDB's shards are ephemeral too ("created and
  deleted automatically"); rolling them keeps the shard lineage that a partition split will
  use exercised, and lets a closed shard, and its records, age out whole.
Both go through the log like every other change, so replicas agree and a crash never leaves
half a change. `KEELDB_STREAM_SHARD_SECONDS` overrides the shard lifetime (tests use it).

It never writes the store itself and never answers a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from keeldb.engine import catalog
from keeldb.engine import streams as records
from keeldb.engine.database import Database

log = logging.getLogger("keeldb.streams")

TRIM_INTERVAL_SECONDS_MAX = 60.0  # how often a node with 24-hour retention looks
TRIM_INTERVAL_SECONDS_MIN = 0.05
# A tick looks this many times per retention period, so a short retention (in tests) is
# honoured closely and a long one costs one look a minute.
TRIM_TICKS_PER_RETENTION = 20
TRIM_ENTRIES_PER_TICK_MAX = 16
STOP_SECONDS_MAX = 5.0
# How long a shard stays open before it rolls over to a child: our choice (DynamoDB does not
# document its shards' lifetime).
SHARD_SECONDS_DEFAULT = 4 * 60 * 60
SHARD_SECONDS_ENV = "KEELDB_STREAM_SHARD_SECONDS"


def shard_seconds_from_environment() -> float:
    text = os.environ.get(SHARD_SECONDS_ENV)
    if not text:
        return SHARD_SECONDS_DEFAULT
    value = float(text)
    if not value > 0:
        raise ValueError(f"{SHARD_SECONDS_ENV} must be a positive number of seconds: {text!r}")
    return value


def trim_interval_seconds(
    retention_seconds: float, shard_seconds: float = SHARD_SECONDS_DEFAULT
) -> float:
    return max(
        TRIM_INTERVAL_SECONDS_MIN,
        min(
            TRIM_INTERVAL_SECONDS_MAX,
            retention_seconds / TRIM_TICKS_PER_RETENTION,
            shard_seconds / TRIM_TICKS_PER_RETENTION,
        ),
    )


async def trim_once(db: Database, retention_seconds: float) -> int:
    """Propose trim records until nothing is past retention or the tick's budget is spent;
    the number of records proposed."""
    before_ms = int((catalog.current_time(db) - retention_seconds) * 1000)
    proposed = 0
    while proposed < TRIM_ENTRIES_PER_TICK_MAX:
        record = records.plan_trim(db, before_ms)
        if record is None:
            break
        await db.propose(record)
        proposed += 1
    return proposed


async def roll_once(db: Database, shard_seconds: float) -> int:
    """Propose a rollover for every stream whose open shard is `shard_seconds` old; the
    number proposed."""
    now_ms = int(catalog.current_time(db) * 1000)
    due = records.roll_pending(db, now_ms, max(1, int(shard_seconds * 1000)))
    for table_id, label in due:
        await db.propose(records.roll_record(table_id, label, now_ms))
    return len(due)


class StreamTrimmer:
    """Runs `trim_once` every interval on the running event loop until stopped. A failed
    tick is logged and retried at the next one."""

    def __init__(
        self,
        db: Database,
        retention_seconds: float,
        shard_seconds: float = SHARD_SECONDS_DEFAULT,
    ) -> None:
        assert retention_seconds > 0, retention_seconds
        assert shard_seconds > 0, shard_seconds
        self.db = db
        self.retention_seconds = retention_seconds
        self.shard_seconds = shard_seconds
        self.interval_seconds = trim_interval_seconds(retention_seconds, shard_seconds)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        assert self._task is None, "started twice"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="keeldb-streams-trim")

    async def stop(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=STOP_SECONDS_MAX)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)
            if self._stopping.is_set():
                return
            try:
                await trim_once(self.db, self.retention_seconds)
                await roll_once(self.db, self.shard_seconds)
            except Exception:
                log.exception("stream trim failed; retrying in %s s", self.interval_seconds)
