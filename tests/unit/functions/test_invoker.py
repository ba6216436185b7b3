"""Concurrency admission, invocation outcomes and the event queue, over a fake pool."""

from __future__ import annotations

import asyncio
import base64

import pytest

from keeldb.functions import local_pool
from keeldb.functions.errors import ServiceException, TooManyRequestsException
from keeldb.functions.invoker import Concurrency, Outcome


def test_reserved_concurrency_limits_its_function_only():
    concurrency = Concurrency(account_limit=10)
    assert concurrency.acquire("a", 1, 1) is False
    with pytest.raises(TooManyRequestsException) as caught:
        concurrency.acquire("a", 1, 1)
    assert caught.value.extra["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert concurrency.acquire("b", None, 1) is True
    concurrency.release("a", False)
    assert concurrency.acquire("a", 1, 1) is False


def test_unreserved_functions_share_what_reservations_leave():
    concurrency = Concurrency(account_limit=3)
    concurrency.acquire("a", None, 1)
    concurrency.acquire("b", None, 1)
    with pytest.raises(TooManyRequestsException) as caught:
        concurrency.acquire("c", None, 1)
    assert caught.value.extra["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert caught.value.status == 429
    concurrency.release("a", True)
    concurrency.acquire("c", None, 1)
    assert concurrency.in_flight == {"b": 1, "c": 1}


def test_a_reservation_of_zero_throttles_every_invocation():
    concurrency = Concurrency(account_limit=1000)
    with pytest.raises(TooManyRequestsException):
        concurrency.acquire("a", 0, 0)


def test_the_log_result_is_the_last_4_kb_of_the_log():
    outcome = Outcome(b"", None, "a" * 5000 + "END", 1.0, False, "id")
    tail = base64.b64decode(outcome.log_result())
    assert len(tail) == 4096
    assert tail.endswith(b"aEND")


def test_synchronous_invocations_beyond_the_account_limit_are_throttled(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: event
        harness.pool.gate = asyncio.Event()
        service = harness.service(account_concurrency=102)
        await service.start()
        await service.create_function(fakes.create_body("f"))
        await service.create_function(fakes.create_body("g"))
        harness.pool.handlers["g"] = lambda event: event
        await service.put_concurrency("g", {"ReservedConcurrentExecutions": 1})
        # 102 - 1 reserved = 101 unreserved slots for f.
        running = [asyncio.create_task(service.invoke("f", None, b"{}")) for _ in range(101)]
        await fakes.eventually(lambda: harness.pool.running == 101)
        with pytest.raises(TooManyRequestsException) as caught:
            await service.invoke("f", None, b"{}")
        assert caught.value.extra["Reason"] == "ConcurrentInvocationLimitExceeded"
        reserved = asyncio.create_task(service.invoke("g", None, b"{}"))
        await fakes.eventually(lambda: harness.pool.running == 102)
        harness.pool.gate.set()
        results = await asyncio.gather(*running, reserved)
        assert all(r.function_error is None for r in results)
        assert service.invoker.concurrency.in_flight == {}
        await service.close()

    asyncio.run(scenario())


def test_a_reservation_may_not_leave_fewer_than_100_unreserved(harness, fakes):
    async def scenario() -> None:
        service = harness.service(account_concurrency=150)
        await service.start()
        await service.create_function(fakes.create_body("f"))
        await service.put_concurrency("f", {"ReservedConcurrentExecutions": 50})
        from keeldb.functions.errors import InvalidParameterValueException

        with pytest.raises(InvalidParameterValueException, match=r"minimum value of \[100\]"):
            await service.put_concurrency("f", {"ReservedConcurrentExecutions": 51})
        assert service.account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
        await service.close()

    asyncio.run(scenario())


def test_a_sandbox_that_cannot_start_is_a_service_exception(harness, fakes):
    async def scenario() -> None:
        def broken(event):
            raise local_pool.SandboxTimeout("spawn took too long")

        harness.pool.handlers["f"] = broken
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        with pytest.raises(ServiceException) as caught:
            await service.invoke("f", None, b"{}")
        assert caught.value.status == 500
        assert service.invoker.concurrency.in_flight == {}
        await service.close()

    asyncio.run(scenario())


def test_a_pool_with_every_instance_busy_throttles(harness, fakes):
    async def scenario() -> None:
        def busy(event):
            raise local_pool.SandboxBusy()

        harness.pool.handlers["f"] = busy
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        with pytest.raises(TooManyRequestsException) as caught:
            await service.invoke("f", None, b"{}")
        assert caught.value.extra["Reason"] == "ConcurrentInvocationLimitExceeded"
        await service.close()

    asyncio.run(scenario())


def test_a_failed_event_is_tried_three_times_in_all(harness, fakes, monkeypatch):
    monkeypatch.setattr("keeldb.functions.invoker.EVENT_RETRY_DELAYS_SECONDS", (0.01, 0.02))

    async def scenario() -> None:
        def fail(event):
            raise RuntimeError("no")

        harness.pool.handlers["f"] = fail
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        await service.enqueue("f", None, b'{"n": 1}')
        await fakes.eventually(lambda: service.invoker.events_done == 1)
        await service.close()
        assert harness.pool.events == [("f", {"n": 1})] * 3

    asyncio.run(scenario())


def test_a_throttled_event_waits_instead_of_being_dropped(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        await service.put_concurrency("f", {"ReservedConcurrentExecutions": 0})
        await service.enqueue("f", None, b"{}")
        await asyncio.sleep(0.5)
        assert harness.pool.events == []
        await service.delete_concurrency("f")
        await fakes.eventually(lambda: service.invoker.events_done == 1)
        assert len(harness.pool.events) == 1
        await service.close()

    asyncio.run(scenario())


def test_an_unexpected_pool_failure_does_not_stall_the_event_queue(harness, fakes, monkeypatch):
    monkeypatch.setattr("keeldb.functions.invoker.EVENT_RETRY_DELAYS_SECONDS", (0.01, 0.02))

    async def scenario() -> None:
        def fine(event):
            return None

        class ExplodingPool(type(harness.pool)):
            async def invoke(self, spec, payload, **context):
                if b"explode" in payload:
                    raise OSError("a bug in the pool")
                return await super().invoke(spec, payload, **context)

        pool = ExplodingPool()
        pool.handlers["f"] = fine
        harness.pool = pool
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        for _ in range(10):
            await service.enqueue("f", None, b'{"explode": true}')
        await service.enqueue("f", None, b'{"fine": true}')
        await fakes.eventually(lambda: service.invoker.events_done == 11)
        assert ("f", {"fine": True}) in pool.events
        await service.close()

    asyncio.run(scenario())


def test_a_queued_event_survives_a_restart_and_is_forgotten_once_run(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        await service.put_concurrency("f", {"ReservedConcurrentExecutions": 0})
        await service.enqueue("f", None, b'{"kept": 1}')
        await service.close()
        assert len(list((harness.root / "events").iterdir())) == 1
        again = harness.service()
        await again.start()
        await again.delete_concurrency("f")
        await fakes.eventually(lambda: again.invoker.events_done == 1)
        await again.close()
        assert harness.pool.events == [("f", {"kept": 1})]
        assert list((harness.root / "events").iterdir()) == []

    asyncio.run(scenario())
