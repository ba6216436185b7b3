"""Running functions: concurrency admission, synchronous invocations and the event queue.

Owns: Lambda's concurrency rules (a function with reserved concurrency runs at most that many
invocations at once; the others share the account's unreserved part), the translation of a
sandbox's result into what Invoke answers (payload, `X-Amz-Function-Error`, the 4 KB log tail,
Lambda's payloads for timeouts and crashed runtimes), and the in-memory queue of asynchronous
(Event) invocations with Lambda's two retries.

It must never parse HTTP or touch the store's files: the REST layer and the stream pollers call
`invoke`; records come from the service.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from keeldb.functions.errors import ServiceException, TooManyRequestsException
from keeldb.functions.model import LOG_TAIL_BYTES_MAX, SYNC_PAYLOAD_BYTES_MAX

log = logging.getLogger("keeldb.functions")

# Lambda retries a failed asynchronous invocation twice; it waits about one and then two
# minutes, which would make a queue test last minutes, so the waits are seconds here.
EVENT_RETRY_DELAYS_SECONDS = (1.0, 2.0)
# A throttled event waits and is tried again until it is this old (Lambda: 6 hours).
EVENT_AGE_SECONDS_MAX = 6 * 60 * 60
# A throttled event is tried again after this long.
EVENT_THROTTLE_DELAY_SECONDS = 0.2
# Events waiting in the queue; beyond it, Invoke with the Event type is refused (429).
EVENT_QUEUE_EVENTS_MAX = 100_000
# Workers that take events from the queue (each one invocation at a time).
EVENT_WORKERS = 8
THROTTLE_MESSAGE = "Rate Exceeded."
RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"


class Concurrency:
    """Invocations in flight per function, against reserved and unreserved concurrency."""

    def __init__(self, account_limit: int) -> None:
        self.account_limit = account_limit
        self.in_flight: dict[str, int] = {}
        self.unreserved_in_flight = 0

    def unreserved_limit(self, reserved_total: int) -> int:
        return self.account_limit - reserved_total

    def acquire(self, name: str, reserved: int | None, reserved_total: int) -> bool:
        """Take one slot for `name` or raise TooManyRequestsException; the result says
        whether the slot came from the unreserved pool (pass it back to `release`)."""
        running = self.in_flight.get(name, 0)
        if reserved is not None:
            if running >= reserved:
                raise TooManyRequestsException(
                    THROTTLE_MESSAGE, Reason=RESERVED_LIMIT, retryAfterSeconds="1"
                )
            self.in_flight[name] = running + 1
            return False
        if self.unreserved_in_flight >= self.unreserved_limit(reserved_total):
            raise TooManyRequestsException(
                THROTTLE_MESSAGE, Reason=ACCOUNT_LIMIT, retryAfterSeconds="1"
            )
        self.in_flight[name] = running + 1
        self.unreserved_in_flight += 1
        return True

    def release(self, name: str, unreserved: bool) -> None:
        running = self.in_flight[name]
        assert running > 0, name
        if running == 1:
            del self.in_flight[name]
        else:
            self.in_flight[name] = running - 1
        if unreserved:
            assert self.unreserved_in_flight > 0
            self.unreserved_in_flight -= 1


@dataclass
class Outcome:
    """What one invocation produced, as Invoke reports it."""

    payload: bytes
    function_error: str | None
    log: str
    duration_ms: float
    cold_start: bool
    request_id: str

    def log_result(self) -> str:
        """X-Amz-Log-Result: base64 of the last 4 KB of the log."""
        tail = self.log.encode("utf-8")[-LOG_TAIL_BYTES_MAX:]
        return base64.b64encode(tail).decode("ascii")


@dataclass
class _Event:
    event_id: str
    name: str
    payload: bytes
    received: float  # wall-clock seconds, so that an event's age survives a restart
    attempts: int = 0
    not_before: float = 0.0


class Invoker:
    """Admits, runs and reports invocations; `spec_for(name)` builds the sandbox spec."""

    def __init__(
        self,
        pool: Any,
        spec_for: Callable[[str], Any],
        reservation: Callable[[str], tuple[int | None, int]],
        exists: Callable[[str], bool],
        *,
        account_limit: int,
        function_arn: Callable[[str], str],
        pool_module: Any,
    ) -> None:
        self.spec_for = spec_for
        self.reservation = reservation
        self.exists = exists
        self.function_arn = function_arn
        self.concurrency = Concurrency(account_limit)
        self.use_pool(pool, pool_module)
        self._events: deque[_Event] = deque()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self.events_done = 0
        # Called with an event's id once it ran or was given up (the service forgets it).
        self.finished: Callable[[str], None] = lambda event_id: None

    def use_pool(self, pool: Any, pool_module: Any) -> None:
        """Run on `pool`; `pool_module` names its failures (SandboxTimeout, SandboxCrashed,
        SandboxBusy)."""
        self.pool = pool
        self._timeout_type: type[BaseException] = pool_module.SandboxTimeout
        self._crash_type: type[BaseException] = pool_module.SandboxCrashed
        self._busy_type: type[BaseException] = pool_module.SandboxBusy

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(EVENT_WORKERS)]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def run(self, name: str, payload: bytes) -> Outcome:
        """One invocation now, or TooManyRequestsException if concurrency refuses it."""
        reserved, reserved_total = self.reservation(name)
        unreserved = self.concurrency.acquire(name, reserved, reserved_total)
        try:
            return await self._run_admitted(name, payload)
        finally:
            self.concurrency.release(name, unreserved)

    async def _run_admitted(self, name: str, payload: bytes) -> Outcome:
        spec = self.spec_for(name)
        request_id = str(uuid.uuid4())
        try:
            result = await self.pool.invoke(
                spec, payload, request_id=request_id, function_arn=self.function_arn(name)
            )
        except self._busy_type:
            # Every instance the host allows is busy: Lambda's answer when capacity runs out.
            raise TooManyRequestsException(
                THROTTLE_MESSAGE, Reason=ACCOUNT_LIMIT, retryAfterSeconds="1"
            ) from None
        except (self._timeout_type, self._crash_type) as error:
            # The sandbox machinery failed (not the handler, whose failures are results).
            log.error("function %s could not run: %s", name, error)
            raise ServiceException(
                f"Lambda was unable to start an instance of {name}: {error}"
            ) from None
        body = result.payload
        error = result.function_error
        if len(body) > SYNC_PAYLOAD_BYTES_MAX:
            body = orjson.dumps(
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload "
                    f"size ({SYNC_PAYLOAD_BYTES_MAX} bytes).",
                    "errorType": "Function.ResponseSizeTooLarge",
                }
            )
            error = "Unhandled"
        return Outcome(
            body,
            error,
            result.log_tail,
            result.duration_ms,
            result.cold_start,
            getattr(result, "request_id", "") or request_id,
        )

    # -- asynchronous invocations ----------------------------------------------------------

    def check_room(self) -> None:
        """Refuse a new event when the queue is full (before it is journaled)."""
        if len(self._events) >= EVENT_QUEUE_EVENTS_MAX:
            raise TooManyRequestsException(THROTTLE_MESSAGE, Reason=ACCOUNT_LIMIT)

    def enqueue(
        self, name: str, payload: bytes, *, event_id: str = "", received: float | None = None
    ) -> None:
        """Queue an event; `finished(event_id)` is called once it ran or was given up."""
        self.check_room()
        event = _Event(event_id, name, payload, time.time() if received is None else received)
        self._events.append(event)
        self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._events)

    async def _work(self) -> None:
        while True:
            if not self._events:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            event = self._events.popleft()
            now = time.monotonic()
            if event.not_before > now:
                self._events.append(event)
                # Every queued event may be waiting: sleep until the earliest is due.
                soonest = min(e.not_before for e in self._events)
                await asyncio.sleep(max(0.0, min(soonest - now, 0.5)))
                continue
            await self._deliver(event)

    async def _deliver(self, event: _Event) -> None:
        if not self.exists(event.name):
            log.warning("dropping an event for deleted function %s", event.name)
            self.finished(event.event_id)
            return
        try:
            outcome = await self.run(event.name, event.payload)
        except TooManyRequestsException:
            if time.time() - event.received > EVENT_AGE_SECONDS_MAX:
                log.warning("dropping an event for %s: throttled for too long", event.name)
                self.finished(event.event_id)
                return
            event.not_before = time.monotonic() + EVENT_THROTTLE_DELAY_SECONDS
            self._events.append(event)
            return
        except ServiceException:
            outcome = None  # logged where it happened; retried like a function error
        except Exception:
            # A bug below us must not end this worker (the queue would stall): log it and
            # treat the attempt as failed.
            log.exception("event invocation of %s failed", event.name)
            outcome = None
        if outcome is not None and outcome.function_error is None:
            self.events_done += 1
            self.finished(event.event_id)
            return
        if event.attempts < len(EVENT_RETRY_DELAYS_SECONDS):
            event.not_before = time.monotonic() + EVENT_RETRY_DELAYS_SECONDS[event.attempts]
            event.attempts += 1
            self._events.append(event)
            self._wakeup.set()
            return
        self.events_done += 1
        self.finished(event.event_id)
        log.warning(
            "event for %s failed after %d attempts; dropped", event.name, event.attempts + 1
        )
