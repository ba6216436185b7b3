"""The Lambda REST layer over a FunctionService with a fake pool: routes, statuses, headers
and error bodies as Lambda's REST-JSON protocol shapes them."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from keeldb.api.server import Request
from keeldb.functions.rest import LambdaApi


def test_errors_carry_their_type_in_a_header_and_lambdas_body(harness, fakes):
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        api = LambdaApi(service)
        missing = await api.handle(Request("GET", b"/2015-03-31/functions/nope", {}, b"", True))
        assert missing.status == 404
        assert ("x-amzn-ErrorType", "ResourceNotFoundException") in missing.headers
        body = orjson.loads(missing.body)
        assert body == {
            "Type": "User",
            "Message": "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
        }
        unknown = await api.handle(Request("PATCH", b"/2015-03-31/functions", {}, b"", True))
        assert unknown.status == 404
        assert ("x-amzn-ErrorType", "UnknownOperationException") in unknown.headers
        garbage = await api.handle(Request("POST", b"/2015-03-31/functions", {}, b"{", True))
        assert garbage.status == 400
        assert ("x-amzn-ErrorType", "InvalidRequestContentException") in garbage.headers
        assert "message" in orjson.loads(garbage.body)
        await service.close()

    asyncio.run(scenario())


def test_a_throttled_invoke_has_reason_and_retry_after(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: event
        service = harness.service()
        await service.start()
        api = LambdaApi(service)
        created = await api.handle(
            Request(
                "POST", b"/2015-03-31/functions", {}, orjson.dumps(fakes.create_body("f")), True
            )
        )
        assert created.status == 201
        put = await api.handle(
            Request(
                "PUT",
                b"/2017-10-31/functions/f/concurrency",
                {},
                b'{"ReservedConcurrentExecutions": 0}',
                True,
            )
        )
        assert put.status == 200
        throttled = await api.handle(
            Request("POST", b"/2015-03-31/functions/f/invocations", {}, b"{}", True)
        )
        assert throttled.status == 429
        assert orjson.loads(throttled.body) == {
            "Type": "User",
            "message": "Rate Exceeded.",
            "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
            "retryAfterSeconds": "1",
        }
        assert ("Retry-After", "1") in throttled.headers
        await service.close()

    asyncio.run(scenario())


def test_invoke_answers_payload_and_headers_per_invocation_type(harness, fakes):
    async def scenario() -> None:
        def handler(event: Any) -> Any:
            if event.get("fail"):
                raise ValueError("nope")
            return {"echo": event}

        harness.pool.handlers["f"] = handler
        service = harness.service()
        await service.start()
        api = LambdaApi(service)
        await service.create_function(fakes.create_body("f"))
        path = b"/2015-03-31/functions/f/invocations"
        ok = await api.handle(Request("POST", path, {"x-amz-log-type": "Tail"}, b'{"a": 1}', True))
        assert ok.status == 200
        assert orjson.loads(ok.body) == {"echo": {"a": 1}}
        names = dict(ok.headers)
        assert names["X-Amz-Executed-Version"] == "$LATEST"
        assert "X-Amz-Log-Result" in names
        assert "X-Amz-Function-Error" not in names
        failed = await api.handle(Request("POST", path, {}, b'{"fail": true}', True))
        assert failed.status == 200
        assert dict(failed.headers)["X-Amz-Function-Error"] == "Unhandled"
        dry = await api.handle(
            Request("POST", path, {"x-amz-invocation-type": "DryRun"}, b"{}", True)
        )
        assert dry.status == 204
        event = await api.handle(
            Request("POST", path, {"x-amz-invocation-type": "Event"}, b"{}", True)
        )
        assert event.status == 202
        bad = await api.handle(
            Request("POST", path, {"x-amz-invocation-type": "Sometimes"}, b"{}", True)
        )
        assert bad.status == 400
        await fakes.eventually(lambda: service.invoker.events_done == 1)
        await service.close()

    asyncio.run(scenario())
