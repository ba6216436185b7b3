"""Function and event source mapping records: their limits, validation and API shapes.

Owns: what a valid CreateFunction / UpdateFunctionConfiguration / CreateEventSourceMapping /
UpdateEventSourceMapping request is (with Lambda's limits, error types and messages), the
stored record each one becomes, and the response shape each record has (FunctionConfiguration,
EventSourceMappingConfiguration), function name and ARN parsing.

It must never do IO: no files, sockets or clocks (times are passed in), so that every rule here
is tested without a server.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from keeldb.functions.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceNotFoundException,
    ValidationException,
)

# Lambda's quotas (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
TIMEOUT_SECONDS_MIN = 1
TIMEOUT_SECONDS_MAX = 900
TIMEOUT_SECONDS_DEFAULT = 3
MEMORY_MB_MIN = 128
MEMORY_MB_MAX = 10240
MEMORY_MB_DEFAULT = 128
# A zip uploaded directly in the request (base64 in JSON) may be 50 MB; unzipped, 250 MB.
ZIP_BYTES_MAX = 50 * 1024 * 1024
UNZIPPED_BYTES_MAX = 262_144_000
# Code storage of the account (Lambda's default quota: 75 GB).
ACCOUNT_CODE_BYTES_MAX = 75 * 1024 * 1024 * 1024
# Environment variables: 4 KB in total, names and values together.
ENVIRONMENT_BYTES_MAX = 4 * 1024
DESCRIPTION_CHARS_MAX = 256
HANDLER_CHARS_MAX = 128
FUNCTION_NAME_CHARS_MAX = 64
# Invocation payloads: 6 MB for a synchronous request or response, 1 MB for an event.
SYNC_PAYLOAD_BYTES_MAX = 6 * 1024 * 1024
ASYNC_PAYLOAD_BYTES_MAX = 1024 * 1024
# X-Amz-Log-Result carries the last 4 KB of the invocation's log.
LOG_TAIL_BYTES_MAX = 4 * 1024
# The account's concurrency and the part reservations may never take (Lambda's defaults).
ACCOUNT_CONCURRENCY_DEFAULT = 1000
UNRESERVED_CONCURRENCY_MIN = 100
# Tags on one function (Lambda's quota).
TAGS_PER_RESOURCE_MAX = 50
# ListFunctions pages (Lambda answers at most 50 functions a page).
LIST_ITEMS_MAX = 50
# ListEventSourceMappings pages (at most 100 mappings a page).
MAPPING_LIST_ITEMS_MAX = 100
# Event source mappings for streams.
BATCH_SIZE_MIN = 1
BATCH_SIZE_MAX = 10000
BATCH_SIZE_DEFAULT = 100
BATCHING_WINDOW_SECONDS_MAX = 300
RETRY_ATTEMPTS_MAX = 10000
RECORD_AGE_SECONDS_MIN = 60
RECORD_AGE_SECONDS_MAX = 604800

# Lambda offers these Python runtimes; the handler runs on the interpreter KeelDB runs on.
PYTHON_RUNTIME = re.compile(r"python3\.(9|1[0-9])")
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]+")
FUNCTION_REFERENCE = re.compile(
    r"(?:arn:(?:aws[a-zA-Z-]*)?:lambda:)?"
    r"(?P<region>[a-z]{2}(?:(?:-gov)|(?:-iso[a-z]?))?-[a-z]+-\d:)?"
    r"(?P<account>\d{12}:)?(?:function:)?(?P<name>[a-zA-Z0-9_.-]+)"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?"
)
FUNCTION_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:[a-zA-Z0-9_-]+"
    r"(?::(?P<qualifier>[a-zA-Z0-9$_-]+))?"
)
ROLE_ARN = re.compile(r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+")
ENV_NAME = re.compile(r"[a-zA-Z]([a-zA-Z0-9_])+")
STREAM_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:dynamodb:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"table/(?P<table>[a-zA-Z0-9_.-]+)/stream/(?P<label>[^/]+)"
)
TABLE_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:dynamodb:[a-z0-9-]+:\d{12}:table/(?P<table>[a-zA-Z0-9_.-]+)"
)
LOG_GROUP_ARN = re.compile(r"arn:aws[a-zA-Z-]*:logs:[a-z0-9-]+:\d{12}:log-group:(?P<group>.+)")
# Variables the runtime sets itself; a function may not override them (Lambda's reserved keys).
RESERVED_ENVIRONMENT = frozenset(
    {
        "_HANDLER",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")


def timestamp(now: float) -> str:
    """Lambda's LastModified: ISO 8601 with milliseconds and a +0000 offset."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def function_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def parse_function_reference(value: Any, region: str, account: str) -> tuple[str, str | None]:
    """A FunctionName member (name, partial ARN or ARN, maybe with a qualifier) -> (name,
    qualifier). A reference to another region or account names no function of this node."""
    if not isinstance(value, str) or not value:
        raise ValidationException(
            "1 validation error detected: Value null at 'functionName' failed to satisfy "
            "constraint: Member must not be null"
        )
    match = FUNCTION_REFERENCE.fullmatch(value)
    if match is None or len(value) > 140:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'functionName' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            + FUNCTION_REFERENCE.pattern
        )
    name = match.group("name")
    other_region = match.group("region") and match.group("region")[:-1] != region
    other_account = match.group("account") and match.group("account")[:-1] != account
    if other_region or other_account:
        raise ResourceNotFoundException(f"Function not found: {value}")
    if len(name) > FUNCTION_NAME_CHARS_MAX:
        raise ValidationException(
            f"1 validation error detected: Value '{name}' at 'functionName' failed to "
            f"satisfy constraint: Member must have length less than or equal to "
            f"{FUNCTION_NAME_CHARS_MAX}"
        )
    return name, match.group("qualifier")


def check_qualifier(qualifier: str | None, arn: str) -> None:
    """Only $LATEST exists: versions and aliases are not published here."""
    if qualifier is not None and qualifier != "$LATEST":
        raise ResourceNotFoundException(f"Function not found: {arn}:{qualifier}")


def _integer(body: Mapping[str, Any], member: str, wire: str) -> int | None:
    value = body.get(member)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterValueException(f"{member} must be an integer, not {value!r}.")
    return value


def _bounded(value: int, wire: str, low: int, high: int | None) -> int:
    if value < low:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy "
            f"constraint: Member must have value greater than or equal to {low}"
        )
    if high is not None and value > high:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy "
            f"constraint: Member must have value less than or equal to {high}"
        )
    return value


def _string(body: Mapping[str, Any], member: str) -> str | None:
    value = body.get(member)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameterValueException(f"{member} must be a string, not {value!r}.")
    return value


def check_runtime(runtime: str | None) -> str:
    if runtime is None:
        raise InvalidParameterValueException("Runtime and Handler are mandatory parameters")
    if PYTHON_RUNTIME.fullmatch(runtime) is None:
        raise InvalidParameterValueException(
            f"The runtime parameter of {runtime} is not supported here: functions run on "
            "python3.x runtimes (python3.9 to python3.14)."
        )
    return runtime


def check_handler(handler: str | None) -> str:
    if handler is None:
        raise InvalidParameterValueException("Runtime and Handler are mandatory parameters")
    if len(handler) > HANDLER_CHARS_MAX or not handler or re.search(r"\s", handler):
        raise ValidationException(
            f"1 validation error detected: Value '{handler}' at 'handler' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [^\\s]+"
        )
    return handler


def check_timeout(value: int | None) -> int | None:
    if value is None:
        return None
    return _bounded(value, "timeout", TIMEOUT_SECONDS_MIN, TIMEOUT_SECONDS_MAX)


def check_memory(value: int | None) -> int | None:
    if value is None:
        return None
    _bounded(value, "memorySize", MEMORY_MB_MIN, None)
    if value > MEMORY_MB_MAX:
        raise InvalidParameterValueException(
            "'MemorySize' value failed to satisfy constraint: Member must have value less "
            f"than or equal to {MEMORY_MB_MAX}"
        )
    return value


def check_description(value: str | None) -> str | None:
    if value is not None and len(value) > DESCRIPTION_CHARS_MAX:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'description' failed to "
            f"satisfy constraint: Member must have length less than or equal to "
            f"{DESCRIPTION_CHARS_MAX}"
        )
    return value


def check_role(value: str | None) -> str:
    if value is None:
        raise InvalidParameterValueException("Role is a mandatory parameter")
    if ROLE_ARN.fullmatch(value) is None:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'role' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: " + ROLE_ARN.pattern
        )
    return value


def check_environment(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidParameterValueException("Environment must be an object.")
    variables = value.get("Variables") or {}
    if not isinstance(variables, dict):
        raise InvalidParameterValueException("Environment.Variables must be a map.")
    size = 0
    for name, text in variables.items():
        if not isinstance(text, str):
            raise InvalidParameterValueException(
                f"Environment variable {name} must have a string value."
            )
        if ENV_NAME.fullmatch(name) is None:
            raise ValidationException(
                "1 validation error detected: Value at 'environment.variables' failed to "
                "satisfy constraint: Map keys must satisfy constraint: [Member must satisfy "
                "regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
            )
        if name in RESERVED_ENVIRONMENT:
            raise InvalidParameterValueException(
                "Lambda was unable to configure your environment variables because the "
                "environment variables you have provided contains reserved keys that are "
                f"currently not supported for modification. Reserved keys used in this "
                f"request: {name}"
            )
        size += len(name.encode()) + len(text.encode())
    if size > ENVIRONMENT_BYTES_MAX:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the "
            "environment variables you have provided exceeded the 4KB limit. String measured: "
            f"{size}"
        )
    return dict(variables)


def decode_zip(code: Any) -> bytes:
    """The Code member of CreateFunction (or UpdateFunctionCode's body): a base64 ZipFile."""
    if not isinstance(code, Mapping):
        raise InvalidParameterValueException("Code must be an object with a ZipFile member.")
    if code.get("S3Bucket") is not None or code.get("ImageUri") is not None:
        raise InvalidParameterValueException(
            "Only ZipFile code uploads are supported here: send the zip in the request."
        )
    encoded = code.get("ZipFile")
    if not isinstance(encoded, str) or not encoded:
        raise InvalidParameterValueException("Please provide a source for function code.")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterValueException(
            "Could not unzip uploaded file. Please check your file, then try to upload again."
        ) from None
    return data


def new_function(
    body: Mapping[str, Any], name: str, code_sha256: str, code_size: int, now: float
) -> dict[str, Any]:
    """The stored record of a validated CreateFunction request."""
    package = body.get("PackageType")
    if package not in (None, "Zip"):
        raise InvalidParameterValueException("Only Zip packages are supported here.")
    record = {
        "name": name,
        "runtime": check_runtime(_string(body, "Runtime")),
        "handler": check_handler(_string(body, "Handler")),
        "role": check_role(_string(body, "Role")),
        "description": check_description(_string(body, "Description")) or "",
        "timeout": check_timeout(_integer(body, "Timeout", "timeout")) or TIMEOUT_SECONDS_DEFAULT,
        "memory": check_memory(_integer(body, "MemorySize", "memorySize")) or MEMORY_MB_DEFAULT,
        "environment": check_environment(body.get("Environment")),
        "code_sha256": code_sha256,
        "code_size": code_size,
        "last_modified": timestamp(now),
        "revision_id": new_revision(),
        "reserved": None,
        "tags": dict(body.get("Tags") or {}),
    }
    return record


def updated_configuration(
    record: Mapping[str, Any], body: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """The record after UpdateFunctionConfiguration; members left out keep their value."""
    revision = body.get("RevisionId")
    if revision is not None and revision != record["revision_id"]:
        raise_revision_mismatch()
    new = dict(record)
    if "Runtime" in body:
        new["runtime"] = check_runtime(_string(body, "Runtime"))
    if "Handler" in body:
        new["handler"] = check_handler(_string(body, "Handler"))
    if "Role" in body:
        new["role"] = check_role(_string(body, "Role"))
    if "Description" in body:
        new["description"] = check_description(_string(body, "Description")) or ""
    if "Timeout" in body:
        new["timeout"] = check_timeout(_integer(body, "Timeout", "timeout"))
    if "MemorySize" in body:
        new["memory"] = check_memory(_integer(body, "MemorySize", "memorySize"))
    if "Environment" in body:
        new["environment"] = check_environment(body.get("Environment"))
    new["last_modified"] = timestamp(now)
    new["revision_id"] = new_revision()
    return new


def new_revision() -> str:
    return str(uuid.uuid4())


def raise_revision_mismatch() -> None:
    raise PreconditionFailedException(
        "The Revision Id provided does not match the latest Revision Id. Call the "
        "GetFunction/GetAlias API to retrieve the latest Revision Id"
    )


def configuration(record: Mapping[str, Any], region: str, account: str) -> dict[str, Any]:
    """FunctionConfiguration, as GetFunctionConfiguration and the write operations answer."""
    name = record["name"]
    sha = base64.b64encode(bytes.fromhex(record["code_sha256"])).decode("ascii")
    config: dict[str, Any] = {
        "FunctionName": name,
        "FunctionArn": function_arn(region, account, name),
        "Runtime": record["runtime"],
        "Role": record["role"],
        "Handler": record["handler"],
        "CodeSize": record["code_size"],
        "Description": record["description"],
        "Timeout": record["timeout"],
        "MemorySize": record["memory"],
        "LastModified": record["last_modified"],
        "CodeSha256": sha,
        "Version": "$LATEST",
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": record["revision_id"],
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"},
    }
    if record.get("environment") is not None:
        config["Environment"] = {"Variables": dict(record["environment"])}
    return config


# -- event source mappings -------------------------------------------------------------------


def _mapping_integer(
    body: Mapping[str, Any], member: str, wire: str, low: int, high: int
) -> int | None:
    value = _integer(body, member, wire)
    if value is None:
        return None
    return _bounded(value, wire, low, high)


def check_record_age(value: int | None) -> int | None:
    if value is None or value == -1:
        return value
    if value < RECORD_AGE_SECONDS_MIN or value > RECORD_AGE_SECONDS_MAX:
        raise InvalidParameterValueException(
            "MaximumRecordAgeInSeconds must be -1 (no limit) or between "
            f"{RECORD_AGE_SECONDS_MIN} and {RECORD_AGE_SECONDS_MAX}."
        )
    return value


def check_response_types(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or any(v != "ReportBatchItemFailures" for v in value):
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'functionResponseTypes' failed "
            "to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum "
            "value set: [ReportBatchItemFailures]]"
        )
    return list(dict.fromkeys(value))


def check_destination(value: Any) -> str | None:
    """DestinationConfig.OnFailure.Destination: a table ARN (failed batches become items of
    that table) or a CloudWatch Logs log group ARN (they are written to the node's log)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidParameterValueException("DestinationConfig must be an object.")
    on_failure = value.get("OnFailure") or {}
    destination = on_failure.get("Destination") if isinstance(on_failure, Mapping) else None
    if destination is None or destination == "":
        return None
    if not isinstance(destination, str) or (
        TABLE_ARN.fullmatch(destination) is None and LOG_GROUP_ARN.fullmatch(destination) is None
    ):
        raise InvalidParameterValueException(
            f"The provided destination config DestinationConfig(onSuccess=null, onFailure="
            f"OnFailure(destination={destination})) is invalid: an on-failure destination "
            "here is a DynamoDB table ARN or a CloudWatch Logs log group ARN."
        )
    return destination


def new_mapping(
    body: Mapping[str, Any], function_name: str, stream_arn: str, now: float
) -> dict[str, Any]:
    """The stored record of a validated CreateEventSourceMapping request for a table stream."""
    starting = body.get("StartingPosition")
    if starting is None:
        raise InvalidParameterValueException(
            "1 validation error detected: Value null at "
            "'startingPosition' failed to satisfy constraint: "
            "Member must not be null"
        )
    if starting not in STARTING_POSITIONS:
        raise InvalidParameterValueException(
            f"Unsupported starting position for a DynamoDB stream: {starting}. Use "
            "TRIM_HORIZON or LATEST."
        )
    enabled = body.get("Enabled", True)
    record = {
        "uuid": str(uuid.uuid4()),
        "function": function_name,
        "source": stream_arn,
        "starting_position": starting,
        "enabled": bool(enabled),
        "batch_size": BATCH_SIZE_DEFAULT,
        "window": 0,
        "retries": -1,
        "record_age": -1,
        "bisect": False,
        "response_types": [],
        "on_failure": None,
        "created": now,
        "last_modified": now,
        "last_result": "No records processed",
        "state": "Creating",
    }
    return apply_mapping_update(record, body, now)


def apply_mapping_update(
    record: Mapping[str, Any], body: Mapping[str, Any], now: float
) -> dict[str, Any]:
    new = dict(record)
    batch = _mapping_integer(body, "BatchSize", "batchSize", BATCH_SIZE_MIN, BATCH_SIZE_MAX)
    if batch is not None:
        new["batch_size"] = batch
    window = _mapping_integer(
        body,
        "MaximumBatchingWindowInSeconds",
        "maximumBatchingWindowInSeconds",
        0,
        BATCHING_WINDOW_SECONDS_MAX,
    )
    if window is not None:
        new["window"] = window
    retries = _mapping_integer(
        body, "MaximumRetryAttempts", "maximumRetryAttempts", -1, RETRY_ATTEMPTS_MAX
    )
    if retries is not None:
        new["retries"] = retries
    age = check_record_age(_integer(body, "MaximumRecordAgeInSeconds", "maximumRecordAge"))
    if age is not None:
        new["record_age"] = age
    if "BisectBatchOnFunctionError" in body:
        new["bisect"] = bool(body["BisectBatchOnFunctionError"])
    if "FunctionResponseTypes" in body:
        new["response_types"] = check_response_types(body["FunctionResponseTypes"])
    if "DestinationConfig" in body:
        new["on_failure"] = check_destination(body["DestinationConfig"])
    if "Enabled" in body:
        new["enabled"] = bool(body["Enabled"])
    new["last_modified"] = now
    return new


def mapping_configuration(record: Mapping[str, Any], region: str, account: str) -> dict[str, Any]:
    """EventSourceMappingConfiguration (timestamps as epoch seconds, as the JSON carries them)."""
    config: dict[str, Any] = {
        "UUID": record["uuid"],
        "StartingPosition": record["starting_position"],
        "BatchSize": record["batch_size"],
        "MaximumBatchingWindowInSeconds": record["window"],
        "ParallelizationFactor": 1,
        "EventSourceArn": record["source"],
        "FunctionArn": function_arn(region, account, record["function"]),
        "LastModified": record["last_modified"],
        "LastProcessingResult": record["last_result"],
        "State": record["state"],
        "StateTransitionReason": "User action",
        "DestinationConfig": {"OnFailure": {}},
        "MaximumRecordAgeInSeconds": record["record_age"],
        "BisectBatchOnFunctionError": record["bisect"],
        "MaximumRetryAttempts": record["retries"],
        "TumblingWindowInSeconds": 0,
        "FunctionResponseTypes": list(record["response_types"]),
        "EventSourceMappingArn": (
            f"arn:aws:lambda:{region}:{account}:event-source-mapping:{record['uuid']}"
        ),
    }
    if record["on_failure"] is not None:
        config["DestinationConfig"] = {"OnFailure": {"Destination": record["on_failure"]}}
    return config


def parse_stream_arn(value: Any) -> re.Match[str]:
    if not isinstance(value, str):
        raise InvalidParameterValueException("EventSourceArn is a mandatory parameter")
    match = STREAM_ARN.fullmatch(value)
    if match is None:
        raise InvalidParameterValueException(
            f"Unrecognized event source: {value}. Event sources here are DynamoDB table "
            "streams (arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL)."
        )
    return match
