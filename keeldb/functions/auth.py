"""SigV4 verification of Lambda API requests, when the node has credentials.

Owns: checking that a request to the Lambda API is signed (service "lambda") by one of the
node's keys, with the canonical forms the SDKs use (shared with the DynamoDB front end through
`keeldb.api.sigv4`), and the 403 errors Lambda answers for unsigned, badly signed or unknown-key
requests; and the tokens that make a GetFunction code location usable without a signature,
as Lambda's presigned S3 URLs are.

It must never log or echo a secret, and compares signatures in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from keeldb.api.sigv4 import (
    canonical_query,
    canonical_uri,
    parse_authorization,
    signing_key,
    trim_all,
)
from keeldb.functions.errors import LambdaError

SERVICE = "lambda"
ALGORITHM = "AWS4-HMAC-SHA256"
# A signature's time may differ from ours by at most this much (SigV4's rule).
SIGNATURE_SKEW_SECONDS_MAX = 15 * 60
SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


class MissingAuthenticationTokenException(LambdaError):
    type_name = "MissingAuthenticationTokenException"
    status = 403
    fault = "User"
    message_key = "message"


class InvalidSignatureException(LambdaError):
    type_name = "InvalidSignatureException"
    status = 403
    fault = "User"
    message_key = "message"


class UnrecognizedClientException(LambdaError):
    type_name = "UnrecognizedClientException"
    status = 403
    fault = "User"
    message_key = "message"


class LambdaVerifier:
    """Checks SigV4 Authorization headers of Lambda requests against the node's keys."""

    def __init__(self, credentials: Mapping[str, Any], *, clock: Any = time.time) -> None:
        self.credentials = dict(credentials)
        self.clock = clock

    def verify(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> str:
        authorization = headers.get("authorization")
        if authorization is None or not authorization.strip().startswith("AWS4-"):
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        params = parse_authorization(authorization)
        amz_date = headers.get("x-amz-date")
        if (
            params[""] != ALGORITHM
            or not params.get("Credential")
            or not params.get("Signature")
            or not params.get("SignedHeaders")
            or amz_date is None
        ):
            raise InvalidSignatureException(
                "Authorization header requires 'Credential', 'Signature', 'SignedHeaders' and "
                "an 'X-Amz-Date' header, signed with AWS4-HMAC-SHA256."
            )
        scope = params["Credential"].rstrip("/").split("/")
        if len(scope) != 5 or scope[3] != SERVICE or scope[4] != "aws4_request":
            raise InvalidSignatureException(
                f"Credential should be scoped to correct service: '{SERVICE}'."
            )
        key_id, day, region, service, terminator = scope
        try:
            moment = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise InvalidSignatureException(f"Invalid X-Amz-Date: {amz_date}") from None
        if abs(moment.timestamp() - self.clock()) > SIGNATURE_SKEW_SECONDS_MAX:
            raise InvalidSignatureException("Signature expired: the request time is too skewed.")
        known = self.credentials.get(key_id)
        if known is None:
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )
        signed_names = params["SignedHeaders"].split(";")
        canonical_headers = "".join(
            f"{name.lower()}:{trim_all(headers.get(name.lower(), ''))}\n" for name in signed_names
        )
        payload_hash = hashlib.sha256(body).hexdigest()
        declared = headers.get("x-amz-content-sha256")
        canonical_request = "\n".join(
            (
                method.upper(),
                canonical_uri(path),
                canonical_query(query),
                canonical_headers,
                params["SignedHeaders"],
                declared if declared is not None else payload_hash,
            )
        )
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                amz_date,
                f"{day}/{region}/{service}/{terminator}",
                hashlib.sha256(canonical_request.encode("latin-1")).hexdigest(),
            )
        )
        key = signing_key(known.secret_access_key, day, region, service)
        expected = hmac.new(key, string_to_sign.encode("latin-1"), hashlib.sha256).hexdigest()
        given = params["Signature"].encode("latin-1", "replace")
        if not hmac.compare_digest(expected.encode(), given) or (
            declared is not None and not hmac.compare_digest(declared, payload_hash)
        ):
            raise InvalidSignatureException(SIGNATURE_MISMATCH_MESSAGE)
        token = headers.get("x-amz-security-token")
        if (token or None) != (known.session_token or None):
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )
        return key_id


class CodeLinks:
    """Tokens for code download URLs: valid for the (function, code) pair until restart."""

    def __init__(self) -> None:
        self._secret = os.urandom(32)

    def token(self, name: str, sha256_hex: str) -> str:
        message = f"{name}\n{sha256_hex}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def valid(self, name: str, sha256_hex: str, token: str) -> bool:
        return hmac.compare_digest(self.token(name, sha256_hex), token)
