"""AWS Signature Version 4 verification for requests signed with an Authorization header.

Owns: parsing the Authorization header, rebuilding the canonical request and the string to
sign exactly as the AWS SDKs do, deriving the signing key, and reporting every failure with
the error type and message DynamoDB uses. Also owns the credentials file format.

It must never see the network or the database: it takes the parts of a request (method,
raw path, raw query, lower-cased headers, body bytes) and either returns the access key id
that signed it or raises a `ClientError`.

Reference: "Create a signed AWS API request" and "Elements of an AWS API request signature"
in the IAM user guide; the check order and messages follow what DynamoDB answers.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qs, quote

from keeldb.model.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "dynamodb"
TERMINATOR = "aws4_request"
# AWS rejects a signature whose date is more than 15 minutes away from the server's clock
# ("Signature expired" / "Signature not yet current").
SIGNATURE_SKEW_SECONDS_MAX = 15 * 60
# Derived signing keys are cached per (secret, day, region): they change once a day, and
# deriving one costs four HMACs. The bound keeps a flood of distinct scopes from growing it.
SIGNING_KEY_CACHE_ENTRIES_MAX = 1024
# Parsed X-Amz-Date values kept (a few seconds' worth in normal traffic).
DATE_CACHE_ENTRIES_MAX = 1024

MISSING_TOKEN_MESSAGE = "Request is missing Authentication Token"
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
BAD_TOKEN_MESSAGE = "The security token included in the request is invalid"
SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)

_BASIC_DATE = re.compile(r"\d{8}T\d{6}Z")
_BASIC_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, slots=True)
class Credential:
    access_key_id: str
    secret_access_key: str
    # A session token, when the credential is a temporary one; None for a long-term key.
    session_token: str | None = None


def load_credentials(path: str | Path) -> dict[str, Credential]:
    """Read a credentials file, in either of two formats.

    Plain: one credential per line, `ACCESS_KEY_ID SECRET_ACCESS_KEY [SESSION_TOKEN]`,
    separated by whitespace; blank lines and lines starting with `#` are ignored.

    AWS shared credentials (the INI file the SDKs read, e.g. `~/.aws/credentials`): every
    `[profile]` section with `aws_access_key_id` and `aws_secret_access_key` (and optionally
    `aws_session_token`) is one credential.

    A malformed line or section is reported by name, since starting without it would
    silently lock a client out.
    """
    text = Path(path).read_text(encoding="utf-8")
    if any(line.strip().startswith("[") for line in text.splitlines()):
        return _load_shared_credentials(path, text)
    credentials: dict[str, Credential] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (2, 3):
            raise ValueError(
                f"{path}:{number}: expected 'ACCESS_KEY_ID SECRET_ACCESS_KEY [SESSION_TOKEN]'"
            )
        if fields[0] in credentials:
            raise ValueError(f"{path}:{number}: access key id {fields[0]!r} appears twice")
        token = fields[2] if len(fields) == 3 else None
        credentials[fields[0]] = Credential(fields[0], fields[1], token)
    return credentials


def _load_shared_credentials(path: str | Path, text: str) -> dict[str, Credential]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as error:
        raise ValueError(f"{path}: {error}") from None
    credentials: dict[str, Credential] = {}
    for section in parser.sections():
        values = parser[section]
        key_id = values.get("aws_access_key_id", "").strip()
        secret = values.get("aws_secret_access_key", "").strip()
        if not key_id or not secret:
            raise ValueError(
                f"{path}: [{section}] needs aws_access_key_id and aws_secret_access_key"
            )
        if key_id in credentials:
            raise ValueError(f"{path}: [{section}]: access key id {key_id!r} appears twice")
        token = values.get("aws_session_token", "").strip() or None
        credentials[key_id] = Credential(key_id, secret, token)
    return credentials


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_access_key: str, day: str, region: str, service: str) -> bytes:
    """The HMAC chain of SigV4: secret -> date -> region -> service -> "aws4_request"."""
    k_date = _hmac(("AWS4" + secret_access_key).encode("utf-8"), day)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, TERMINATOR)


def canonical_uri(raw_path: str) -> str:
    """The path as the SDKs canonicalise it: dot segments removed, then URI-encoded again
    (for every service but S3 the already-encoded path is encoded a second time)."""
    path = raw_path or "/"
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def canonical_query(raw_query: str) -> str:
    """Query pairs sorted by their encoded key, then value, as sent (already encoded)."""
    if not raw_query:
        return ""
    pairs = []
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def trim_all(value: str) -> str:
    return " ".join(value.split())


def _format_basic(moment: datetime) -> str:
    return moment.strftime(_BASIC_FORMAT)


def parse_authorization(header: str) -> dict[str, str]:
    """`AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=x;y, Signature=z` -> dict.

    The algorithm is stored under the key "" so that callers can check it last, as AWS does.
    """
    algorithm, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {"": algorithm}
    for part in re.split(r"[,\s]+", rest):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if eq:
            params[key] = value
    return params


class Verifier:
    """Verifies SigV4 Authorization headers against a fixed set of credentials."""

    def __init__(
        self,
        credentials: Mapping[str, Credential],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = dict(credentials)
        self._clock = clock
        self._keys: dict[tuple[str, str, str], bytes] = {}
        # X-Amz-Date values -> seconds: SDK clients sign many requests per second.
        self._basic_dates: dict[str, float] = {}

    @property
    def key_count(self) -> int:
        return len(self._credentials)

    def verify(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """Return the access key id that signed the request, or raise the client error.

        `headers` maps lower-cased header names to their values (repeated headers already
        joined with ","). Checks run in DynamoDB's order, so that a request with several
        faults gets the same error it would get from DynamoDB.
        """
        authorization = headers.get("authorization")
        query_auth = "X-Amz-Algorithm" in _query_keys(raw_query)
        if authorization is not None and query_auth:
            raise InvalidSignatureException(
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' "
                "as HTTP header."
            )
        if authorization is None and query_auth:
            _check_query_parameters(raw_query)
        if authorization is None or not authorization.strip().startswith("AWS4-"):
            # Presigned (query-string) requests are not accepted by this front end: DynamoDB's
            # SDKs always sign with the Authorization header.
            raise MissingAuthenticationTokenException(MISSING_TOKEN_MESSAGE)

        params = parse_authorization(authorization)
        amz_date = headers.get("x-amz-date")
        http_date = headers.get("date")
        missing = ""
        for name in ("Credential", "Signature", "SignedHeaders"):
            if not params.get(name):
                missing += f"Authorization header requires '{name}' parameter. "
        if amz_date is None and http_date is None:
            missing += (
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                "'Date' header. "
            )
        if missing:
            raise IncompleteSignatureException(missing + "Authorization=" + authorization)

        timestamp = self._check_date(amz_date, http_date)

        signed_names = params["SignedHeaders"].split(";")
        if "host" not in (name.lower() for name in signed_names):
            raise InvalidSignatureException(
                "'Host' must be a 'SignedHeader' in the AWS Authorization."
            )
        if params[""] != ALGORITHM:
            raise IncompleteSignatureException(
                f"Unsupported AWS 'algorithm': '{params['']}' (only {ALGORITHM} for now). "
            )

        credential = params["Credential"].rstrip("/")
        scope = credential.split("/")
        if len(scope) != 5:
            raise IncompleteSignatureException(
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                f"keyid/date/region/service/term, got '{credential}'"
            )
        key_id, day, region, service, terminator = scope
        problems = ""
        if not region:
            problems += f"Credential should be scoped to a valid region, not '{region}'. "
        if service != SERVICE:
            problems += f"Credential should be scoped to correct service: '{SERVICE}'. "
        if terminator != TERMINATOR:
            problems += (
                f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
                f"not '{terminator}'. "
            )
        if day != timestamp[:8]:
            problems += (
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{day}' != '{timestamp[:8]}', from '{timestamp}'."
            )
        if problems:
            raise InvalidSignatureException(problems.rstrip())

        known = self._credentials.get(key_id)
        if known is None:
            raise UnrecognizedClientException(UNKNOWN_KEY_MESSAGE)

        payload_hash = hashlib.sha256(body).hexdigest()
        declared_hash = headers.get("x-amz-content-sha256")
        canonical_headers = "".join(
            f"{name.lower()}:{trim_all(headers.get(name.lower(), ''))}\n" for name in signed_names
        )
        canonical_request = "\n".join(
            (
                method.upper(),
                canonical_uri(raw_path),
                canonical_query(raw_query),
                canonical_headers,
                params["SignedHeaders"],
                declared_hash if declared_hash is not None else payload_hash,
            )
        )
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                timestamp,
                f"{day}/{region}/{service}/{terminator}",
                # Header values were decoded as latin-1, so latin-1 gives back the very bytes
                # the client signed (UTF-8 or not).
                hashlib.sha256(canonical_request.encode("latin-1")).hexdigest(),
            )
        )
        key = self._signing_key(known.secret_access_key, day, region)
        expected = hmac.new(key, string_to_sign.encode("latin-1"), hashlib.sha256).hexdigest()
        if not _same(expected, params["Signature"]) or (
            # A correctly signed hash that is not the body's: the body was altered.
            declared_hash is not None and not _same(declared_hash, payload_hash)
        ):
            # Like DynamoDB, show what was expected, so that a client author can find the
            # difference; it holds nothing the client did not send.
            raise InvalidSignatureException(
                f"{SIGNATURE_MISMATCH_MESSAGE}\n\n"
                f"The Canonical String for this request should have been\n'{canonical_request}'"
                f"\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
            )

        token = headers.get("x-amz-security-token")
        if token is not None and (
            known.session_token is None or not _same(token, known.session_token)
        ):
            raise UnrecognizedClientException(BAD_TOKEN_MESSAGE)
        if token is None and known.session_token is not None:
            raise UnrecognizedClientException(BAD_TOKEN_MESSAGE)
        return key_id

    def _check_date(self, amz_date: str | None, http_date: str | None) -> str:
        """The request's timestamp in ISO-8601 basic format, within the allowed skew."""
        if amz_date is not None:
            timestamp = amz_date
            seconds = self._basic_dates.get(amz_date)
            if seconds is None:
                seconds = _parse_basic(amz_date)
                if len(self._basic_dates) >= DATE_CACHE_ENTRIES_MAX:
                    self._basic_dates.clear()
                self._basic_dates[amz_date] = seconds
        else:
            assert http_date is not None
            try:
                moment = parsedate_to_datetime(http_date)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                seconds = moment.timestamp()
                timestamp = _format_basic(moment.astimezone(UTC))
            except (TypeError, ValueError, OverflowError):
                # Unparseable, or a year outside what a date can hold.
                raise IncompleteSignatureException(_bad_date_message(http_date)) from None
        now = self._clock()
        if seconds < now - SIGNATURE_SKEW_SECONDS_MAX:
            raise InvalidSignatureException(
                f"Signature expired: {timestamp} is now earlier than "
                f"{_format_seconds(now - SIGNATURE_SKEW_SECONDS_MAX)} "
                f"({_format_seconds(now)} - 15 min.)"
            )
        if seconds > now + SIGNATURE_SKEW_SECONDS_MAX:
            raise InvalidSignatureException(
                f"Signature not yet current: {timestamp} is still later than "
                f"{_format_seconds(now + SIGNATURE_SKEW_SECONDS_MAX)} "
                f"({_format_seconds(now)} + 15 min.)"
            )
        return timestamp

    def _signing_key(self, secret: str, day: str, region: str) -> bytes:
        cache_key = (secret, day, region)
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) >= SIGNING_KEY_CACHE_ENTRIES_MAX:
                self._keys.clear()
            key = signing_key(secret, day, region, SERVICE)
            self._keys[cache_key] = key
        return key


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison; compared as bytes, since a client may send any octets."""
    return hmac.compare_digest(
        given.encode("latin-1", "replace"), expected.encode("latin-1", "replace")
    )


def _parse_basic(value: str) -> float:
    """Seconds since the epoch of an ISO-8601 basic-format UTC time (20130609T095204Z)."""
    if not _BASIC_DATE.fullmatch(value):
        raise IncompleteSignatureException(_bad_date_message(value))
    try:
        moment = datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        raise IncompleteSignatureException(_bad_date_message(value)) from None
    return moment.timestamp()


def _format_seconds(seconds: float) -> str:
    return _format_basic(datetime.fromtimestamp(seconds, UTC))


def _bad_date_message(value: str) -> str:
    return (
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


QUERY_AUTH_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "X-Amz-Date",
)


def _check_query_parameters(raw_query: str) -> None:
    """A request that starts query-string signing must carry all of its parameters."""
    values = parse_qs(raw_query, keep_blank_values=True)
    missing = "".join(
        f"AWS query-string parameters must include '{name}'. "
        for name in QUERY_AUTH_PARAMETERS
        if not values.get(name, [""])[0]
    )
    if missing:
        raise IncompleteSignatureException(missing + "Re-examine the query-string parameters.")


def _query_keys(raw_query: str) -> set[str]:
    if not raw_query:
        return set()
    return {pair.partition("=")[0] for pair in raw_query.split("&")}
