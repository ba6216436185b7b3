"""SigV4 verification against requests signed by botocore, the reference signer."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.api import sigv4
from keeldb.api.sigv4 import Credential, Verifier, load_credentials
from keeldb.model.errors import (
    ClientError,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SIGNED_AT = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
BODY = b'{"TableName": "Music"}'


def sign(
    body: bytes = BODY,
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    token: str | None = None,
    url: str = "http://127.0.0.1:8000/",
    region: str = "us-east-1",
    service: str = "dynamodb",
    at: dt.datetime = SIGNED_AT,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str, dict[str, str], bytes]:
    """(path, query, lower-cased headers, body) of a request signed by botocore."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.DescribeTable",
            "Host": url.split("/")[2],
        },
    )
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: at.replace(tzinfo=None))
    SigV4Auth(Credentials(key_id, secret, token), service, region).add_auth(request)
    path, _, query = url.split("/", 3)[3].partition("?")
    headers = {name.lower(): value for name, value in request.headers.items()}
    return "/" + path, query, headers, body


def verifier(*, now: dt.datetime = SIGNED_AT, token: str | None = None) -> Verifier:
    return Verifier({KEY_ID: Credential(KEY_ID, SECRET, token)}, clock=now.timestamp)


Signer = Callable[..., tuple[str, str, dict[str, str], bytes]]


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> Signer:
    def make(body: bytes = BODY, **kwargs: Any) -> tuple[str, str, dict[str, str], bytes]:
        return sign(body, monkeypatch=monkeypatch, **kwargs)

    return make


def test_a_request_signed_by_botocore_verifies(signed: Signer) -> None:
    path, query, headers, body = signed()
    assert verifier().verify("POST", path, query, headers, body) == KEY_ID


def test_an_empty_body_signed_by_botocore_verifies(signed: Signer) -> None:
    path, query, headers, body = signed(b"")
    assert verifier().verify("POST", path, query, headers, body) == KEY_ID


def test_a_path_and_query_signed_by_botocore_verify(signed: Signer) -> None:
    path, query, headers, body = signed(url="http://localhost:9/a%20b/./c/?z=1&a=2&a=1")
    assert verifier().verify("POST", path, query, headers, body) == KEY_ID


def test_any_region_in_the_scope_verifies(signed: Signer) -> None:
    path, query, headers, body = signed(region="ap-southeast-2")
    assert verifier().verify("POST", path, query, headers, body) == KEY_ID


def test_a_session_token_signed_by_botocore_verifies(signed: Signer) -> None:
    path, query, headers, body = signed(token="tok")
    assert verifier(token="tok").verify("POST", path, query, headers, body) == KEY_ID


def test_a_tampered_body_is_an_invalid_signature(signed: Signer) -> None:
    path, query, headers, body = signed()
    with pytest.raises(InvalidSignatureException) as caught:
        verifier().verify("POST", path, query, headers, body.replace(b"Music", b"Musik"))
    altered = hashlib.sha256(body.replace(b"Music", b"Musik")).hexdigest()
    assert caught.value.message == (
        f"{sigv4.SIGNATURE_MISMATCH_MESSAGE}\n\n"
        "The Canonical String for this request should have been\n"
        "'POST\n/\n\n"
        "content-type:application/x-amz-json-1.0\n"
        "host:127.0.0.1:8000\n"
        "x-amz-date:20260304T050607Z\n"
        "x-amz-target:DynamoDB_20120810.DescribeTable\n\n"
        "content-type;host;x-amz-date;x-amz-target\n"
        f"{altered}'\n\n"
        "The String-to-Sign should have been\n"
        "'AWS4-HMAC-SHA256\n20260304T050607Z\n20260304/us-east-1/dynamodb/aws4_request\n"
        f"{hashlib.sha256(caught.value.message.split(chr(39))[1].encode()).hexdigest()}'\n"
    )


def test_a_tampered_signed_header_is_an_invalid_signature(signed: Signer) -> None:
    path, query, headers, body = signed()
    headers["x-amz-target"] = "DynamoDB_20120810.DeleteTable"
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verifier().verify("POST", path, query, headers, body)


def test_an_unsigned_header_may_change(signed: Signer) -> None:
    path, query, headers, body = signed()
    headers["user-agent"] = "something else"
    assert verifier().verify("POST", path, query, headers, body) == KEY_ID


def test_a_tampered_date_is_an_invalid_signature(signed: Signer) -> None:
    path, query, headers, body = signed()
    headers["x-amz-date"] = "20260304T050608Z"
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verifier().verify("POST", path, query, headers, body)


def test_a_wrong_secret_is_an_invalid_signature(signed: Signer) -> None:
    path, query, headers, body = signed(secret="not the secret")
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verifier().verify("POST", path, query, headers, body)


def test_a_tampered_method_or_path_is_an_invalid_signature(signed: Signer) -> None:
    path, query, headers, body = signed()
    with pytest.raises(InvalidSignatureException):
        verifier().verify("PUT", path, query, headers, body)
    with pytest.raises(InvalidSignatureException):
        verifier().verify("POST", "/other", query, headers, body)


def test_an_unknown_access_key_is_unrecognized(signed: Signer) -> None:
    path, query, headers, body = signed(key_id="AKIDUNKNOWN")
    with pytest.raises(UnrecognizedClientException) as caught:
        verifier().verify("POST", path, query, headers, body)
    assert caught.value.message == "The security token included in the request is invalid."


def test_a_wrong_session_token_is_unrecognized(signed: Signer) -> None:
    path, query, headers, body = signed(token="wrong")
    with pytest.raises(UnrecognizedClientException) as caught:
        verifier(token="tok").verify("POST", path, query, headers, body)
    assert caught.value.message == "The security token included in the request is invalid"


def test_a_signature_older_than_15_minutes_has_expired(signed: Signer) -> None:
    path, query, headers, body = signed()
    now = SIGNED_AT + dt.timedelta(minutes=15, seconds=1)
    with pytest.raises(InvalidSignatureException) as caught:
        verifier(now=now).verify("POST", path, query, headers, body)
    assert caught.value.message == (
        "Signature expired: 20260304T050607Z is now earlier than 20260304T050608Z "
        "(20260304T052108Z - 15 min.)"
    )


def test_a_signature_15_minutes_old_is_still_valid(signed: Signer) -> None:
    path, query, headers, body = signed()
    now = SIGNED_AT + dt.timedelta(minutes=15)
    assert verifier(now=now).verify("POST", path, query, headers, body) == KEY_ID


def test_a_signature_from_the_future_is_not_yet_current(signed: Signer) -> None:
    path, query, headers, body = signed()
    now = SIGNED_AT - dt.timedelta(minutes=16)
    with pytest.raises(InvalidSignatureException) as caught:
        verifier(now=now).verify("POST", path, query, headers, body)
    assert caught.value.message == (
        "Signature not yet current: 20260304T050607Z is still later than 20260304T050507Z "
        "(20260304T045007Z + 15 min.)"
    )


def test_no_authorization_header_is_a_missing_token() -> None:
    with pytest.raises(MissingAuthenticationTokenException) as caught:
        verifier().verify("POST", "/", "", {"host": "h", "x-amz-date": "20260304T050607Z"}, b"")
    assert caught.value.message == "Request is missing Authentication Token"


def test_an_authorization_header_of_another_scheme_is_a_missing_token() -> None:
    with pytest.raises(MissingAuthenticationTokenException):
        verifier().verify("POST", "/", "", {"authorization": "AWS4"}, b"")


def test_both_header_and_query_signatures_are_refused() -> None:
    with pytest.raises(InvalidSignatureException) as caught:
        verifier().verify("POST", "/", "X-Amz-Algorithm", {"authorization": "X"}, b"")
    assert caught.value.message == (
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
    )


def test_an_incomplete_authorization_header_names_every_missing_part() -> None:
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "", {"authorization": "AWS4-"}, b"")
    assert caught.value.message == (
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=AWS4-"
    )


def test_an_authorization_header_without_signed_headers_says_so() -> None:
    header = "AWS4- Signature=b, Credential=a"
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "", {"authorization": header, "date": "a"}, b"")
    assert caught.value.message == (
        "Authorization header requires 'SignedHeaders' parameter. Authorization=" + header
    )


def test_a_date_not_in_basic_format_is_incomplete() -> None:
    header = "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=c"
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "", {"authorization": header, "x-amz-date": "201"}, b"")
    assert caught.value.message == (
        "Date must be in ISO-8601 'basic format'. Got '201'. See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _header(credential: str, signed_headers: str = "host;x-amz-date", algorithm: str = "") -> str:
    return (
        f"{algorithm or sigv4.ALGORITHM} Credential={credential}, "
        f"SignedHeaders={signed_headers}, Signature=abc"
    )


def _headers(authorization: str) -> dict[str, str]:
    return {"authorization": authorization, "x-amz-date": "20260304T050607Z", "host": "h"}


def test_host_must_be_signed() -> None:
    header = _header(f"{KEY_ID}/20260304/us-east-1/dynamodb/aws4_request", "x-amz-date")
    with pytest.raises(InvalidSignatureException) as caught:
        verifier().verify("POST", "/", "", _headers(header), b"")
    assert caught.value.message == "'Host' must be a 'SignedHeader' in the AWS Authorization."


def test_an_unknown_algorithm_is_incomplete() -> None:
    header = _header(
        f"{KEY_ID}/20260304/us-east-1/dynamodb/aws4_request", algorithm="AWS4-HMAC-SHA25"
    )
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "", _headers(header), b"")
    assert caught.value.message == (
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA25' (only AWS4-HMAC-SHA256 for now). "
    )


def test_a_credential_needs_five_parts() -> None:
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "", _headers(_header("a/b/c/d")), b"")
    assert caught.value.message == (
        "Credential must have exactly 5 slash-delimited elements, e.g. "
        "keyid/date/region/service/term, got 'a/b/c/d'"
    )


def test_a_badly_scoped_credential_lists_every_fault() -> None:
    with pytest.raises(InvalidSignatureException) as caught:
        verifier().verify("POST", "/", "", _headers(_header(f"{KEY_ID}/b/c/d/e")), b"")
    assert caught.value.message == (
        "Credential should be scoped to correct service: 'dynamodb'. "
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'e'. "
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        "HTTP: 'b' != '20260304', from '20260304T050607Z'."
    )


def test_the_scope_is_checked_before_the_access_key() -> None:
    with pytest.raises(InvalidSignatureException):
        verifier().verify("POST", "/", "", _headers(_header("UNKNOWN/b/c/dynamodb/e")), b"")


def test_the_signing_key_matches_the_documented_example() -> None:
    # The worked example of "Deriving the signing key" in the AWS General Reference.
    key = sigv4.signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_the_credentials_file_holds_one_key_per_line(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("# keys\n\nAKID1 secret1\n  AKID2   secret2   token2  \n")
    credentials = load_credentials(path)
    assert credentials == {
        "AKID1": Credential("AKID1", "secret1"),
        "AKID2": Credential("AKID2", "secret2", "token2"),
    }


@pytest.mark.parametrize("text", ["AKID1\n", "AKID1 a b c\n", "A s\nA t\n"])
def test_a_malformed_credentials_file_is_refused_with_its_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "credentials"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"credentials:\d"):
        load_credentials(path)


def test_query_string_signing_must_name_every_parameter() -> None:
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "X-Amz-Algorithm", {"host": "h"}, b"")
    assert caught.value.message == (
        "AWS query-string parameters must include 'X-Amz-Algorithm'. "
        "AWS query-string parameters must include 'X-Amz-Credential'. "
        "AWS query-string parameters must include 'X-Amz-Signature'. "
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
        "AWS query-string parameters must include 'X-Amz-Date'. "
        "Re-examine the query-string parameters."
    )


def test_query_string_signing_names_only_the_missing_parameter() -> None:
    query = "X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-Date=d"
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", query, {"host": "h"}, b"")
    assert caught.value.message == (
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
        "Re-examine the query-string parameters."
    )


def test_query_parameters_without_the_algorithm_are_a_missing_token() -> None:
    query = "X-Amz-Credential=a&X-Amz-Signature=b&X-Amz-SignedHeaders=c&X-Amz-Date=d"
    with pytest.raises(MissingAuthenticationTokenException):
        verifier().verify("POST", "/", query, {"host": "h"}, b"")


header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=200),
    target=header_values,
    extra=header_values,
    flip=st.integers(min_value=0),
)
def test_botocore_signatures_verify_and_any_body_change_is_caught(
    body: bytes, target: str, extra: str, flip: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        request = AWSRequest(
            method="POST",
            url="http://127.0.0.1:8000/",
            data=body,
            headers={"Host": "127.0.0.1:8000", "X-Amz-Target": target, "X-Extra": extra},
        )
        patch.setattr("botocore.auth.get_current_datetime", lambda: SIGNED_AT.replace(tzinfo=None))
        SigV4Auth(Credentials(KEY_ID, SECRET), "dynamodb", "us-east-1").add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert verifier().verify("POST", "/", "", headers, body) == KEY_ID
    if body:
        index = flip % len(body)
        changed = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]
        with pytest.raises(InvalidSignatureException):
            verifier().verify("POST", "/", "", headers, changed)


def test_a_signature_with_non_ascii_octets_is_an_invalid_signature(signed: Signer) -> None:
    path, query, headers, body = signed()
    headers["authorization"] = headers["authorization"].rsplit("=", 1)[0] + "=\xe9\xff"
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verifier().verify("POST", path, query, headers, body)


def test_a_non_ascii_header_value_signed_by_botocore_verifies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8000/",
        data=BODY,
        headers={"Host": "127.0.0.1:8000", "X-Note": "caf\u00e9"},
    )
    monkeypatch.setattr(
        "botocore.auth.get_current_datetime", lambda: SIGNED_AT.replace(tzinfo=None)
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "dynamodb", "us-east-1").add_auth(request)
    # On the wire the value is UTF-8; the front end decodes header octets as latin-1.
    headers = {
        name.lower(): value.encode("utf-8").decode("latin-1")
        for name, value in request.headers.items()
    }
    assert verifier().verify("POST", "/", "", headers, BODY) == KEY_ID


pieces = st.sampled_from(
    [
        "AWS4-HMAC-SHA256",
        "AWS4-",
        " ",
        ",",
        "=",
        "/",
        ";",
        "Credential=",
        "SignedHeaders=",
        "Signature=",
        KEY_ID,
        "20260304",
        "us-east-1",
        "dynamodb",
        "aws4_request",
        "host",
        "x-amz-date",
        "\xe9",
    ]
)
garbage = st.one_of(st.text(max_size=40), st.lists(pieces, max_size=16).map("".join))


@settings(max_examples=300, deadline=None)
@given(
    authorization=st.one_of(st.none(), garbage),
    amz_date=st.one_of(st.none(), garbage, st.just("20260304T050607Z")),
    date=st.one_of(st.none(), garbage),
    token=st.one_of(st.none(), garbage),
    query=st.one_of(st.just(""), garbage),
    path=st.one_of(st.just("/"), garbage),
)
def test_any_headers_either_verify_or_raise_a_client_error(
    authorization: str | None,
    amz_date: str | None,
    date: str | None,
    token: str | None,
    query: str,
    path: str,
) -> None:
    headers = {"host": "h"}
    for name, value in (
        ("authorization", authorization),
        ("x-amz-date", amz_date),
        ("date", date),
        ("x-amz-security-token", token),
    ):
        if value is not None:
            headers[name] = value
    try:
        verifier().verify("POST", path, query, headers, b"{}")
    except ClientError:
        pass


@pytest.mark.parametrize(
    "date",
    [
        "1 Jan 99999999999999999999 00:00:00 GMT",
        "Mon, 31 Dec 9999 23:59:59 -2359",
        "Mon, 01 Jan 2020 25:61:61 GMT",
        "yesterday",
    ],
)
def test_an_impossible_date_header_is_reported_as_not_iso_8601(date: str) -> None:
    header = _header(f"{KEY_ID}/20260304/us-east-1/dynamodb/aws4_request")
    with pytest.raises(IncompleteSignatureException) as caught:
        verifier().verify("POST", "/", "", {"authorization": header, "date": date}, b"")
    assert caught.value.message.startswith("Date must be in ISO-8601 'basic format'. Got '")


def test_an_aws_shared_credentials_file_is_read_profile_by_profile(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(
        "[default]\naws_access_key_id = AKID1\naws_secret_access_key = s%cret1\n\n"
        "[temporary]\naws_access_key_id=AKID2\naws_secret_access_key=secret2\n"
        "aws_session_token=token2\nregion=eu-west-1\n"
    )
    assert load_credentials(path) == {
        "AKID1": Credential("AKID1", "s%cret1"),
        "AKID2": Credential("AKID2", "secret2", "token2"),
    }


def test_a_profile_without_a_secret_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = AKID1\n")
    with pytest.raises(ValueError, match=r"\[default\] needs"):
        load_credentials(path)
