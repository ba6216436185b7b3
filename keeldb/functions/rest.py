"""The Lambda REST API (2015-03-31 and its dated companions) over HTTP.

Owns: routing a request's method and path to a FunctionService call, reading the request's
members from the path, the query string, the headers and the JSON body as botocore's
rest-json serializer sends them, the payload limits of Invoke, and shaping answers and
errors as Lambda sends them (status codes per operation, `x-amzn-ErrorType` + JSON body).

It must never hold state of its own nor evaluate anything the service decides; an exception
that is not a LambdaError is our bug and is answered with ServiceException (500).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from keeldb.api.server import Request, RestResponse
from keeldb.functions.auth import LambdaVerifier
from keeldb.functions.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    LambdaError,
    RequestTooLargeException,
    ServiceException,
    UnknownOperationException,
)
from keeldb.functions.model import ASYNC_PAYLOAD_BYTES_MAX, SYNC_PAYLOAD_BYTES_MAX
from keeldb.functions.service import FunctionService

log = logging.getLogger("keeldb.functions")

Handler = Callable[["Call"], Awaitable[RestResponse]]
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


class Call:
    """One request, with its path parameters and query string decoded."""

    def __init__(self, request: Request, params: dict[str, str]) -> None:
        self.request = request
        self.params = params
        _, _, query = request.url.partition(b"?")
        self.query_all = parse_qs(query.decode("latin-1"))
        self.query = {k: v[0] for k, v in self.query_all.items()}

    def json(self) -> dict[str, Any]:
        body = self.request.body
        if not body:
            return {}
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidRequestContentException(
                f"Could not parse request body into json: {error}"
            ) from None
        if not isinstance(data, dict):
            raise InvalidRequestContentException(
                "Could not parse request body into json: expected an object"
            )
        return data

    def max_items(self) -> int | None:
        value = self.query.get("MaxItems")
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise InvalidParameterValueException(f"MaxItems must be an integer: {value}") from None
        if number < 1:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{number}' at 'maxItems' failed to "
                "satisfy constraint: Member must have value greater than or equal to 1"
            )
        return number


def _json(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> RestResponse:
    return RestResponse(status, orjson.dumps(body), "application/json", headers or [])


class LambdaApi:
    """`handle(request)` is mounted on the node's front end for every Lambda path prefix."""

    def __init__(
        self, service: FunctionService, *, credentials: Mapping[str, Any] | None = None
    ) -> None:
        self.service = service
        self.verifier = LambdaVerifier(credentials) if credentials is not None else None
        f = r"(?P<name>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/2015-03-31/functions/?"), self.create_function),
            ("GET", re.compile(r"/2015-03-31/functions/?"), self.list_functions),
            ("GET", re.compile(rf"/2015-03-31/functions/{f}/?"), self.get_function),
            ("DELETE", re.compile(rf"/2015-03-31/functions/{f}/?"), self.delete_function),
            (
                "GET",
                re.compile(rf"/2015-03-31/functions/{f}/configuration/?"),
                self.get_configuration,
            ),
            (
                "PUT",
                re.compile(rf"/2015-03-31/functions/{f}/configuration/?"),
                self.update_configuration,
            ),
            ("PUT", re.compile(rf"/2015-03-31/functions/{f}/code/?"), self.update_code),
            ("GET", re.compile(rf"/2015-03-31/functions/{f}/code/?"), self.download_code),
            ("POST", re.compile(rf"/2015-03-31/functions/{f}/invocations/?"), self.invoke),
            ("POST", re.compile(rf"/2014-11-13/functions/{f}/invoke-async/?"), self.invoke_async),
            ("PUT", re.compile(rf"/2017-10-31/functions/{f}/concurrency/?"), self.put_concurrency),
            (
                "DELETE",
                re.compile(rf"/2017-10-31/functions/{f}/concurrency/?"),
                self.delete_concurrency,
            ),
            ("GET", re.compile(rf"/2019-09-30/functions/{f}/concurrency/?"), self.get_concurrency),
            ("GET", re.compile(r"/2016-08-19/account-settings/?"), self.account_settings),
            ("GET", re.compile(r"/2017-03-31/tags/(?P<arn>[^/]+)/?"), self.list_tags),
            ("POST", re.compile(r"/2017-03-31/tags/(?P<arn>[^/]+)/?"), self.tag_resource),
            ("DELETE", re.compile(r"/2017-03-31/tags/(?P<arn>[^/]+)/?"), self.untag_resource),
            ("POST", re.compile(r"/2015-03-31/event-source-mappings/?"), self.create_mapping),
            ("GET", re.compile(r"/2015-03-31/event-source-mappings/?"), self.list_mappings),
            (
                "GET",
                re.compile(r"/2015-03-31/event-source-mappings/(?P<uuid>[^/]+)/?"),
                self.get_mapping,
            ),
            (
                "PUT",
                re.compile(r"/2015-03-31/event-source-mappings/(?P<uuid>[^/]+)/?"),
                self.update_mapping,
            ),
            (
                "DELETE",
                re.compile(r"/2015-03-31/event-source-mappings/(?P<uuid>[^/]+)/?"),
                self.delete_mapping,
            ),
        ]

    async def handle(self, request: Request) -> RestResponse:
        try:
            path = request.url.split(b"?", 1)[0].decode("latin-1")
            for method, pattern, handler in self.routes:
                match = pattern.fullmatch(path)
                if match is None or method != request.method:
                    continue
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                # A code location is a link (its token authorizes it); the rest is signed.
                if self.verifier is not None and handler != self.download_code:
                    raw_path, _, query = request.url.decode("latin-1").partition("?")
                    self.verifier.verify(
                        request.method, raw_path, query, request.headers, request.body
                    )
                return await handler(Call(request, params))
            raise UnknownOperationException(f"Unknown operation: {request.method} {path}")
        except LambdaError as error:
            return RestResponse(error.status, error.payload(), "application/json", error.headers())
        except Exception:
            log.exception("internal error in %s %s", request.method, request.url[:200])
            error = ServiceException("An internal error occurred.")
            return RestResponse(error.status, error.payload(), "application/json", error.headers())

    # -- functions --------------------------------------------------------------------------

    async def create_function(self, call: Call) -> RestResponse:
        return _json(201, await self.service.create_function(call.json()))

    async def list_functions(self, call: Call) -> RestResponse:
        answer = self.service.list_functions(call.query.get("Marker"), call.max_items())
        return _json(200, answer)

    async def get_function(self, call: Call) -> RestResponse:
        answer = self.service.get_function(call.params["name"], call.query.get("Qualifier"))
        return _json(200, answer)

    async def get_configuration(self, call: Call) -> RestResponse:
        answer = self.service.get_configuration(call.params["name"], call.query.get("Qualifier"))
        return _json(200, answer)

    async def update_configuration(self, call: Call) -> RestResponse:
        return _json(200, await self.service.update_configuration(call.params["name"], call.json()))

    async def update_code(self, call: Call) -> RestResponse:
        return _json(200, await self.service.update_code(call.params["name"], call.json()))

    async def download_code(self, call: Call) -> RestResponse:
        data = self.service.code_zip(
            call.params["name"], call.query.get("sha256", ""), call.query.get("token", "")
        )
        return RestResponse(200, data, "application/zip")

    async def delete_function(self, call: Call) -> RestResponse:
        await self.service.delete_function(call.params["name"], call.query.get("Qualifier"))
        return RestResponse(204, b"", "")

    # -- invocation -------------------------------------------------------------------------

    async def invoke(self, call: Call) -> RestResponse:
        headers = call.request.headers
        invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in INVOCATION_TYPES:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' "
                "failed to satisfy constraint: Member must satisfy enum value set: "
                "[Event, RequestResponse, DryRun]"
            )
        log_type = headers.get("x-amz-log-type", "None")
        if log_type not in ("None", "Tail"):
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{log_type}' at 'logType' failed to "
                "satisfy constraint: Member must satisfy enum value set: [Tail, None]"
            )
        payload = call.request.body or b"{}"
        limit = ASYNC_PAYLOAD_BYTES_MAX if invocation_type == "Event" else SYNC_PAYLOAD_BYTES_MAX
        if len(payload) > limit:
            raise RequestTooLargeException(
                f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise InvalidRequestContentException(
                f"Could not parse request body into json: Could not parse payload into json: "
                f"{error}"
            ) from None
        name = call.params["name"]
        qualifier = call.query.get("Qualifier")
        if invocation_type == "DryRun":
            self.service.resolve(name, qualifier)
            return RestResponse(204, b"", "", [("X-Amz-Executed-Version", "$LATEST")])
        if invocation_type == "Event":
            await self.service.enqueue(name, qualifier, payload)
            return RestResponse(202, b"", "", [("X-Amz-Executed-Version", "$LATEST")])
        outcome = await self.service.invoke(name, qualifier, payload)
        answer_headers = [("X-Amz-Executed-Version", "$LATEST")]
        if outcome.function_error is not None:
            answer_headers.append(("X-Amz-Function-Error", outcome.function_error))
        if log_type == "Tail":
            answer_headers.append(("X-Amz-Log-Result", outcome.log_result()))
        return RestResponse(200, outcome.payload, "application/json", answer_headers)

    async def invoke_async(self, call: Call) -> RestResponse:
        payload = call.request.body or b"{}"
        if len(payload) > ASYNC_PAYLOAD_BYTES_MAX // 4:
            raise RequestTooLargeException(
                f"Request must be smaller than {ASYNC_PAYLOAD_BYTES_MAX // 4} bytes for the "
                "InvokeAsync operation"
            )
        await self.service.enqueue(call.params["name"], None, payload)
        return _json(202, {"Status": 202})

    # -- concurrency and account ------------------------------------------------------------

    async def put_concurrency(self, call: Call) -> RestResponse:
        return _json(200, await self.service.put_concurrency(call.params["name"], call.json()))

    async def get_concurrency(self, call: Call) -> RestResponse:
        return _json(200, self.service.get_concurrency(call.params["name"]))

    async def delete_concurrency(self, call: Call) -> RestResponse:
        await self.service.delete_concurrency(call.params["name"])
        return RestResponse(204, b"", "")

    async def account_settings(self, call: Call) -> RestResponse:
        return _json(200, self.service.account_settings())

    # -- tags -------------------------------------------------------------------------------

    async def list_tags(self, call: Call) -> RestResponse:
        return _json(200, self.service.list_tags(call.params["arn"]))

    async def tag_resource(self, call: Call) -> RestResponse:
        await self.service.tag_resource(call.params["arn"], call.json())
        return RestResponse(204, b"", "")

    async def untag_resource(self, call: Call) -> RestResponse:
        await self.service.untag_resource(call.params["arn"], call.query_all.get("tagKeys", []))
        return RestResponse(204, b"", "")

    # -- event source mappings --------------------------------------------------------------

    async def create_mapping(self, call: Call) -> RestResponse:
        return _json(202, await self.service.create_mapping(call.json()))

    async def list_mappings(self, call: Call) -> RestResponse:
        answer = self.service.list_mappings(
            call.query.get("EventSourceArn"),
            call.query.get("FunctionName"),
            call.query.get("Marker"),
            call.max_items(),
        )
        return _json(200, answer)

    async def get_mapping(self, call: Call) -> RestResponse:
        return _json(200, self.service.get_mapping(call.params["uuid"]))

    async def update_mapping(self, call: Call) -> RestResponse:
        return _json(202, await self.service.update_mapping(call.params["uuid"], call.json()))

    async def delete_mapping(self, call: Call) -> RestResponse:
        return _json(202, await self.service.delete_mapping(call.params["uuid"]))
