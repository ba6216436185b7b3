"""Which requests keep every header: those a mounted service answers and every request when
signatures are checked; a DynamoDB request keeps only the few headers the front end reads."""

from __future__ import annotations

from typing import Any

from keeldb.api.server import ApiServer, Request, RestResponse


async def _dynamodb(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    return {}


async def _rest(request: Request) -> RestResponse:
    return RestResponse(200)


class _AnyVerifier:
    def verify(self, *args: Any) -> None:
        return None


def test_without_mounts_or_signatures_no_request_keeps_every_header() -> None:
    server = ApiServer(_dynamodb, {"GetItem"})
    assert not server.keeps_all_headers_of(b"/")
    assert not server.keeps_all_headers_of(b"/2015-03-31/functions")


def test_a_request_for_a_mounted_path_keeps_every_header_and_others_do_not() -> None:
    server = ApiServer(_dynamodb, {"GetItem"})
    server.mount("/2015-03-31/", _rest)
    assert server.keeps_all_headers_of(b"/2015-03-31/functions/f/invocations")
    assert server.keeps_all_headers_of(b"/2015-03-31/functions?Marker=x")
    assert not server.keeps_all_headers_of(b"/")
    assert not server.keeps_all_headers_of(b"/?/2015-03-31/")
    assert not server.keeps_all_headers_of(b"/2015-03-30/")


def test_with_signature_checks_every_request_keeps_every_header() -> None:
    server = ApiServer(_dynamodb, {"GetItem"}, verifier=_AnyVerifier())  # type: ignore[arg-type]
    assert server.keeps_all_headers_of(b"/")
