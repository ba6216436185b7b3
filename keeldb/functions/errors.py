"""The Lambda API's client errors: the error types, HTTP statuses and body shapes of Lambda.

Owns: one exception family for every request the function service refuses, and how each is
shaped on the wire by the REST-JSON protocol: an `x-amzn-ErrorType` header naming the type and
a JSON body with `Type` ("User" for the caller's fault, "Service" for ours) and the message
under the member name Lambda's model gives it (`message` for most types, `Message` for
ResourceNotFoundException and ServiceException), plus modelled extras such as `Reason`.

It must never be raised for an operating failure of the node (a full disk, a crashed
sandbox): those are logged by the service and answered as ServiceException.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class LambdaError(Exception):
    """A request the function service refuses; `message` is shown to the caller verbatim."""

    type_name: ClassVar[str] = "ServiceException"
    status: ClassVar[int] = 500
    fault: ClassVar[str] = "Service"
    message_key: ClassVar[str] = "Message"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"Type": self.fault, self.message_key: self.message}
        body.update(self.extra)
        return body

    def payload(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> list[tuple[str, str]]:
        return [("x-amzn-ErrorType", self.type_name)]


class ServiceException(LambdaError):
    type_name = "ServiceException"


class InvalidParameterValueException(LambdaError):
    type_name = "InvalidParameterValueException"
    status = 400
    fault = "User"
    message_key = "message"


class ValidationException(LambdaError):
    """Lambda's front end answers members that break the model's constraints with this."""

    type_name = "ValidationException"
    status = 400
    fault = "User"
    message_key = "message"


class InvalidRequestContentException(LambdaError):
    type_name = "InvalidRequestContentException"
    status = 400
    fault = "User"
    message_key = "message"


class ResourceNotFoundException(LambdaError):
    type_name = "ResourceNotFoundException"
    status = 404
    fault = "User"
    message_key = "Message"


class ResourceConflictException(LambdaError):
    type_name = "ResourceConflictException"
    status = 409
    fault = "User"
    message_key = "message"


class ResourceInUseException(LambdaError):
    type_name = "ResourceInUseException"
    status = 400
    fault = "User"
    message_key = "message"


class RequestTooLargeException(LambdaError):
    type_name = "RequestTooLargeException"
    status = 413
    fault = "User"
    message_key = "message"


class CodeStorageExceededException(LambdaError):
    type_name = "CodeStorageExceededException"
    status = 400
    fault = "User"
    message_key = "message"


class TooManyRequestsException(LambdaError):
    type_name = "TooManyRequestsException"
    status = 429
    fault = "User"
    message_key = "message"

    def headers(self) -> list[tuple[str, str]]:
        retry = self.extra.get("retryAfterSeconds")
        headers = super().headers()
        if retry is not None:
            headers.append(("Retry-After", str(retry)))
        return headers


class UnsupportedMediaTypeException(LambdaError):
    type_name = "UnsupportedMediaTypeException"
    status = 415
    fault = "User"
    message_key = "message"


class UnknownOperationException(LambdaError):
    type_name = "UnknownOperationException"
    status = 404
    fault = "User"
    message_key = "message"


class PreconditionFailedException(LambdaError):
    type_name = "PreconditionFailedException"
    status = 412
    fault = "User"
    message_key = "message"
