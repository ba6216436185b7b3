"""Requests handled in their read callback up to their first wait (`HttpProtocol._start`):
one that needs no waiting is answered before the callback returns, without a task; one that
waits for a future is resumed by the future's done callback (`HttpProtocol._step`) and reads
its outcome (a result, a failure, a cancellation) exactly as under a task; with callback
waits off, or when it waits on anything but a future, it goes on in a task that hands it the
outcome of what it waits for (or the task's own cancellation), exactly as a task running it
from the start would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from keeldb.api import server as server_module
from keeldb.api.server import ApiServer, HttpProtocol, RestResponse


class FakeTransport:
    """Collects what the protocol writes; never full, never closing until closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return None  # no socket: answers go through write()

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def post(operation: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: DynamoDB_20120810.{operation}\r\n"
        f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


class Service:
    """Echo answers at once; Wait waits for `gate` and reports what it saw."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[str] | None = None
        self.seen: list[str] = []

    async def dispatch(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if operation == "Echo":
            return {"Echo": body}
        self.gate = asyncio.get_running_loop().create_future()
        try:
            value = await self.gate
        except asyncio.CancelledError:
            self.seen.append("cancelled")
            raise
        except OSError as error:
            self.seen.append(f"failed: {error}")
            return {"Failed": str(error)}
        self.seen.append(f"result: {value}")
        return {"Got": value}


def connected(service: Service) -> tuple[HttpProtocol, FakeTransport]:
    protocol = HttpProtocol(ApiServer(service.dispatch, {"Echo", "Wait"}))
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def test_a_request_that_needs_no_waiting_is_answered_within_its_read_callback() -> None:
    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Echo", {"i": 1}))
        # No turn of the loop has passed: the answer is already written, and no task exists.
        assert [body_of(r) for r in transport.written] == [{"Echo": {"i": 1}}]
        assert not protocol.busy

    asyncio.run(run())


def test_without_eager_requests_the_answer_waits_for_a_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "EAGER_REQUESTS", False)

    async def run() -> None:
        protocol, transport = connected(Service())
        protocol.data_received(post("Echo", {"i": 1}))
        assert transport.written == []
        assert protocol.busy
        for _ in range(10):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Echo": {"i": 1}}]

    asyncio.run(run())


def test_a_waiting_request_gets_its_result_and_later_requests_queue_behind_it() -> None:
    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}) + post("Echo", {"i": 2}))
        assert transport.written == []
        assert protocol.busy
        assert service.gate is not None
        await asyncio.sleep(0)
        service.gate.set_result("ok")
        for _ in range(10):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Got": "ok"}, {"Echo": {"i": 2}}]
        assert service.seen == ["result: ok"]
        assert not protocol.busy

    asyncio.run(run())


def test_a_waiting_request_sees_the_failure_of_what_it_waits_for() -> None:
    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}))
        assert service.gate is not None
        service.gate.set_exception(OSError("disk full"))
        for _ in range(10):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Failed": "disk full"}]
        assert service.seen == ["failed: disk full"]

    asyncio.run(run())


def test_cancelling_the_task_of_a_waiting_request_cancels_its_handling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "CALLBACK_WAITS", False)

    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}))
        task = protocol._task
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert service.seen == ["cancelled"]
        assert transport.written == []

    asyncio.run(run())


def test_a_request_after_a_finished_wait_is_answered_eagerly_again() -> None:
    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}))
        assert service.gate is not None
        service.gate.set_result("first")
        for _ in range(10):
            await asyncio.sleep(0)
        assert not protocol.busy
        protocol.data_received(post("Echo", {"i": 3}))
        assert [body_of(r) for r in transport.written] == [{"Got": "first"}, {"Echo": {"i": 3}}]

    asyncio.run(run())


def test_a_cancellation_that_arrives_after_the_result_still_reaches_the_handling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task is cancelled when what it waits for is already done (so that cannot be
    cancelled): as under a task of its own, the handling gets the cancellation."""
    monkeypatch.setattr(server_module, "CALLBACK_WAITS", False)

    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}))
        task = protocol._task
        assert task is not None
        await asyncio.sleep(0)
        assert service.gate is not None
        service.gate.set_result("late")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert service.seen == ["cancelled"]
        assert transport.written == []

    asyncio.run(run())


@pytest.mark.parametrize("callback_waits", [True, False])
def test_a_waiting_request_gets_its_result_with_and_without_callback_waits(
    monkeypatch: pytest.MonkeyPatch, callback_waits: bool
) -> None:
    monkeypatch.setattr(server_module, "CALLBACK_WAITS", callback_waits)

    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}) + post("Echo", {"i": 2}))
        assert protocol.busy
        # Resumed by the future's callback: no task until requests queued behind it.
        assert (protocol._task is None) is callback_waits
        assert service.gate is not None
        service.gate.set_result("ok")
        for _ in range(10):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Got": "ok"}, {"Echo": {"i": 2}}]
        assert not protocol.busy

    asyncio.run(run())


class TwoWaits:
    """Waits for two futures one after the other, then for a bare yield (a task's turn)."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Future[str]] = []

    async def dispatch(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        got = []
        for _ in range(2):
            gate = asyncio.get_running_loop().create_future()
            self.gates.append(gate)
            got.append(await gate)
        if operation == "WaitAndYield":
            await asyncio.sleep(0)
        return {"Got": got}


def test_a_handling_that_waits_again_is_resumed_each_time_and_a_bare_yield_takes_a_task() -> None:
    async def run() -> None:
        service = TwoWaits()
        protocol = HttpProtocol(ApiServer(service.dispatch, {"Wait", "WaitAndYield"}))
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        for operation in ("Wait", "WaitAndYield"):
            protocol.data_received(post(operation, {}))
            service.gates[-1].set_result("a")
            await asyncio.sleep(0)
            assert protocol.busy and protocol._task is None
            service.gates[-1].set_result("b")
            for _ in range(10):
                await asyncio.sleep(0)
            assert not protocol.busy
        assert [body_of(r) for r in transport.written] == [{"Got": ["a", "b"]}] * 2

    asyncio.run(run())


def test_a_cancelled_wait_closes_the_connection_unanswered() -> None:
    """The future a handling waits for is cancelled and the handling lets it through: there
    is no answer, so the connection is closed rather than left waiting for one."""

    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}))
        assert service.gate is not None
        service.gate.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert service.seen == ["cancelled"]
        assert transport.written == []
        assert transport.closed
        assert not protocol.busy

    asyncio.run(run())


def test_requests_queued_behind_a_waiting_request_wait_for_the_transport_to_take_more() -> None:
    """After the waiting request's answer, the requests queued behind it wait until the
    transport asks for more (resume_writing), as between any two answers."""

    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}) + post("Echo", {"i": 2}))
        protocol.pause_writing()
        assert service.gate is not None
        service.gate.set_result("ok")
        for _ in range(10):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Got": "ok"}]
        protocol.resume_writing()
        for _ in range(10):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Got": "ok"}, {"Echo": {"i": 2}}]
        assert not protocol.busy

    asyncio.run(run())


def test_a_connection_lost_during_a_wait_drops_the_answer_and_serves_no_more() -> None:
    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}) + post("Echo", {"i": 2}))
        protocol.connection_lost(None)
        assert service.gate is not None
        service.gate.set_result("late")
        for _ in range(10):
            await asyncio.sleep(0)
        # The request's effect stands (it saw its result); nothing is written to a lost
        # connection.
        assert service.seen == ["result: late"]
        assert transport.written == []
        assert not protocol.busy

    asyncio.run(run())


def test_eof_while_a_request_waits_keeps_the_connection_until_it_is_answered() -> None:
    async def run() -> None:
        service = Service()
        protocol, transport = connected(service)
        protocol.data_received(post("Wait", {}))
        assert protocol.eof_received() is True  # half-open: the answer is still owed
        assert service.gate is not None
        service.gate.set_result("ok")
        for _ in range(5):
            await asyncio.sleep(0)
        assert [body_of(r) for r in transport.written] == [{"Got": "ok"}]
        assert transport.closed

    asyncio.run(run())


class LaterLog:
    """A log of one member that commits each record on a later turn of the loop, as a group
    commit does: so a write waits, and a request behind it on the connection must too."""

    def __init__(self, apply: Any) -> None:
        self._apply = apply
        self._lsn = 0

    async def append(self, record: bytes) -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self._lsn += 1
        self._apply([(self._lsn, record)])
        return self._lsn

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


def test_pipelined_reads_after_writes_see_them_and_answers_keep_their_order() -> None:
    from keeldb.engine.database import Database
    from keeldb.storage.memory import MemoryStore

    async def run() -> None:
        db = Database(MemoryStore())
        db.attach_log(LaterLog(db.apply))
        await db.dispatch(
            "CreateTable",
            {
                "TableName": "eager",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        protocol = HttpProtocol(ApiServer(db.dispatch, {"PutItem", "GetItem"}))
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        key = {"pk": {"S": "k"}}

        def put(value: str) -> bytes:
            return post("PutItem", {"TableName": "eager", "Item": {**key, "v": {"S": value}}})

        get = post("GetItem", {"TableName": "eager", "Key": key})
        protocol.data_received(get + put("one") + get + put("two") + get)
        for _ in range(50):
            await asyncio.sleep(0)
        answers = [body_of(r) for r in transport.written]
        assert answers == [
            {},
            {},
            {"Item": {**key, "v": {"S": "one"}}},
            {},
            {"Item": {**key, "v": {"S": "two"}}},
        ]
        assert not protocol.busy

    asyncio.run(run())


def test_a_mounted_service_runs_in_a_task_from_its_start() -> None:
    """A mounted handler may use what works only inside a task (`asyncio.timeout` before
    its first wait, as the function service's invocation does): it is never started in the
    read callback. Started there, it answers 500."""

    async def handler(request: Any) -> RestResponse:
        async with asyncio.timeout(5):  # entered before the handler's first wait
            await asyncio.sleep(0)
            return RestResponse(200, b"{}", "application/json", {})

    async def run() -> None:
        server = ApiServer(Service().dispatch, {"Echo", "Wait"})
        server.mount("/rest/", handler)
        protocol = HttpProtocol(server)
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        # From a callback of the loop, as a transport calls it: no task is running there.
        asyncio.get_running_loop().call_soon(
            protocol.data_received, b"GET /rest/thing HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        for _ in range(10):
            await asyncio.sleep(0)
        assert [r.split(b"\r\n", 1)[0] for r in transport.written] == [b"HTTP/1.1 200 OK"]
        # DynamoDB's own requests on the same server are still answered in the callback.
        protocol.data_received(post("Echo", {"i": 4}))
        assert body_of(transport.written[-1]) == {"Echo": {"i": 4}}

    asyncio.run(run())
