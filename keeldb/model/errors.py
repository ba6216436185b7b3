"""Client errors: the DynamoDB error types, each with its wire namespace and HTTP status.

Every layer raises these for a client's mistake; `keeldb.api` turns them into HTTP responses
in one place. Operating errors (a corrupt log record, an unreachable peer) are never of this
family: they are handled by the drivers, not reported as the client's fault.
"""

from __future__ import annotations

from typing import Any, ClassVar

DYNAMODB_NAMESPACE = "com.amazonaws.dynamodb.v20120810"
CORAL_SERVICE_NAMESPACE = "com.amazon.coral.service"
CORAL_VALIDATE_NAMESPACE = "com.amazon.coral.validate"


class ClientError(Exception):
    """A request the service refuses; `message` is shown to the client verbatim."""

    type_name: ClassVar[str] = "ClientError"
    namespace: ClassVar[str] = DYNAMODB_NAMESPACE
    status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def wire_type(self) -> str:
        return f"{self.namespace}#{self.type_name}"

    def body(self) -> dict[str, Any]:
        """The JSON body DynamoDB sends for this error."""
        return {"__type": self.wire_type, "message": self.message}


class ValidationException(ClientError):
    type_name = "ValidationException"
    namespace = CORAL_VALIDATE_NAMESPACE


class SerializationException(ClientError):
    type_name = "SerializationException"
    namespace = CORAL_SERVICE_NAMESPACE


class UnknownOperationException(ClientError):
    type_name = "UnknownOperationException"
    namespace = CORAL_SERVICE_NAMESPACE


class UnrecognizedClientException(ClientError):
    type_name = "UnrecognizedClientException"
    namespace = CORAL_SERVICE_NAMESPACE


class InvalidSignatureException(ClientError):
    type_name = "InvalidSignatureException"
    namespace = CORAL_SERVICE_NAMESPACE


class MissingAuthenticationTokenException(ClientError):
    type_name = "MissingAuthenticationTokenException"
    namespace = CORAL_SERVICE_NAMESPACE


class AccessDeniedException(ClientError):
    type_name = "AccessDeniedException"
    namespace = CORAL_SERVICE_NAMESPACE


class ResourceNotFoundException(ClientError):
    type_name = "ResourceNotFoundException"


class ResourceInUseException(ClientError):
    type_name = "ResourceInUseException"


class LimitExceededException(ClientError):
    type_name = "LimitExceededException"


class ProvisionedThroughputExceededException(ClientError):
    type_name = "ProvisionedThroughputExceededException"


class RequestLimitExceeded(ClientError):
    type_name = "RequestLimitExceeded"


class ItemCollectionSizeLimitExceededException(ClientError):
    type_name = "ItemCollectionSizeLimitExceededException"


class ConditionalCheckFailedException(ClientError):
    """A condition evaluated to false; `item` is the old item when the request asked for it
    with ReturnValuesOnConditionCheckFailure=ALL_OLD."""

    type_name = "ConditionalCheckFailedException"

    def __init__(
        self, message: str = "The conditional request failed", item: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.item = item

    def body(self) -> dict[str, Any]:
        out = super().body()
        if self.item is not None:
            out["Item"] = self.item
        return out


class InternalServerError(ClientError):
    """Reported for a failure of ours, never for a client's mistake."""

    type_name = "InternalServerError"
    status = 500


class IncompleteSignatureException(ClientError):
    type_name = "IncompleteSignatureException"
    namespace = CORAL_SERVICE_NAMESPACE


class DuplicateItemException(ClientError):
    """A PartiQL INSERT of an item whose primary key is already in the table."""

    type_name = "DuplicateItemException"


# --- Backups, point-in-time recovery, exports and imports ---------------------------------


class TableNotFoundException(ClientError):
    type_name = "TableNotFoundException"


class TableAlreadyExistsException(ClientError):
    type_name = "TableAlreadyExistsException"


class TableInUseException(ClientError):
    type_name = "TableInUseException"


class BackupNotFoundException(ClientError):
    type_name = "BackupNotFoundException"


class BackupInUseException(ClientError):
    type_name = "BackupInUseException"


class ContinuousBackupsUnavailableException(ClientError):
    type_name = "ContinuousBackupsUnavailableException"


class PointInTimeRecoveryUnavailableException(ClientError):
    type_name = "PointInTimeRecoveryUnavailableException"


class InvalidRestoreTimeException(ClientError):
    type_name = "InvalidRestoreTimeException"


class ExportNotFoundException(ClientError):
    type_name = "ExportNotFoundException"


class ExportConflictException(ClientError):
    type_name = "ExportConflictException"


class InvalidExportTimeException(ClientError):
    type_name = "InvalidExportTimeException"


class ImportNotFoundException(ClientError):
    type_name = "ImportNotFoundException"


class ImportConflictException(ClientError):
    type_name = "ImportConflictException"


class ExpiredIteratorException(ClientError):
    """DynamoDB Streams: a shard iterator used after it expired (15 minutes)."""

    type_name = "ExpiredIteratorException"


class TrimmedDataAccessException(ClientError):
    """DynamoDB Streams: a position before the shard's trim horizon (records past retention
    are trimmed)."""

    type_name = "TrimmedDataAccessException"


# --- Transactions ----------------------------------------------------------------------------


class TransactionCanceledException(ClientError):
    """A transaction was cancelled: `reasons` holds one CancellationReason per action, in the
    order of the request ({"Code": "None"} for an action that was not at fault)."""

    type_name = "TransactionCanceledException"

    def __init__(self, message: str, reasons: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.reasons = reasons

    def body(self) -> dict[str, Any]:
        # DynamoDB names this exception's message "Message", beside its reasons.
        return {
            "__type": self.wire_type,
            "CancellationReasons": self.reasons,
            "Message": self.message,
        }


class TransactionConflictException(ClientError):
    """A plain write to an item that a transaction in progress holds."""

    type_name = "TransactionConflictException"


class TransactionInProgressException(ClientError):
    """A transaction retried with its ClientRequestToken while the first is still in flight."""

    type_name = "TransactionInProgressException"


class IdempotentParameterMismatchException(ClientError):
    """A ClientRequestToken reused with other parameters within its lifetime."""

    type_name = "IdempotentParameterMismatchException"
