"""The handler loop of an unisolated function instance (see `local_pool`).

Owns: importing the handler named by `_HANDLER` from the code directory, then answering
invocations read from fd 0 on fd 1. A frame is a 4-byte big-endian length and its bytes; each
request is a frame with a JSON header (`request_id`) and a frame with the event's JSON; each
answer is a frame with a JSON header (`error`, `log`, `duration_ms`) and a frame with the
payload. What the handler prints, and Python's logging, is the invocation's log.

It must never write anything but frames on its answer channel: the handler's own stdout is
captured per invocation.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import struct
import sys
import time
import traceback
import uuid
from typing import Any, BinaryIO

FRAME_HEADER = struct.Struct(">I")


class Context:
    """The `context` argument Lambda's Python runtime passes to a handler."""

    def __init__(self, request_id: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.invoked_function_arn = (
            f"arn:aws:lambda:{region}:000000000000:function:{self.function_name}"
        )
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "keeldb"
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _InitError(Exception):
    """The handler could not be loaded; `payload` is Lambda's answer for it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload["errorMessage"])
        self.payload = payload


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(FRAME_HEADER.size)
    if len(head) < FRAME_HEADER.size:
        return None
    (length,) = FRAME_HEADER.unpack(head)
    data = stream.read(length)
    return data if len(data) == length else None


def _write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(FRAME_HEADER.pack(len(data)) + data)


def _error_payload(error: BaseException, request_id: str) -> dict[str, Any]:
    frames = traceback.extract_tb(error.__traceback__)[1:]  # drop the runtime's own frame
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def main() -> None:
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    code_dir = sys.argv[1]
    sys.path.insert(0, code_dir)
    os.chdir(code_dir)
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    timeout_seconds = float(sys.argv[2])
    handler: Any = None
    init_error: dict[str, Any] | None = None
    try:
        module = importlib.import_module(module_name)
    except BaseException as error:  # noqa: BLE001 - the user's import failure, reported per invocation
        init_error = {
            "errorMessage": f"Unable to import module '{module_name}': {error}",
            "errorType": "Runtime.ImportModuleError",
            "stackTrace": [],
        }
    else:
        handler = getattr(module, function_name, None)
        if handler is None:
            init_error = {
                "errorMessage": f"Handler '{function_name}' missing on module '{module_name}'",
                "errorType": "Runtime.HandlerNotFound",
                "stackTrace": [],
            }
    while True:
        head = _read_frame(requests)
        request = _read_frame(requests)
        if head is None or request is None:
            return
        request_id = json.loads(head).get("request_id") or str(uuid.uuid4())
        log = io.StringIO()
        stream_handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(stream_handler)
        started = time.monotonic()
        error: str | None = None
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                if init_error is not None:
                    raise _InitError(init_error)
                event = json.loads(request) if request else None
                result = handler(event, Context(request_id, started + timeout_seconds))
                try:
                    payload = json.dumps(result).encode()
                except (TypeError, ValueError) as failure:
                    error = "Unhandled"
                    payload = json.dumps(
                        {
                            "errorMessage": f"Unable to marshal response: {failure}",
                            "errorType": "Runtime.MarshalError",
                            "requestId": request_id,
                            "stackTrace": [],
                        }
                    ).encode()
            except _InitError as failure:
                error = "Unhandled"
                payload = json.dumps({**failure.payload, "requestId": request_id}).encode()
                print(f"[ERROR] {failure.payload['errorType']}: {failure.payload['errorMessage']}")
            except Exception as failure:  # noqa: BLE001 - the handler's error is its answer
                error = "Unhandled"
                payload = json.dumps(_error_payload(failure, request_id)).encode()
                print(f"[ERROR] {type(failure).__name__}: {failure}")
                traceback.print_exc()
        logging.getLogger().removeHandler(stream_handler)
        duration_ms = (time.monotonic() - started) * 1000
        header = {"error": error, "log": log.getvalue()[-8192:], "duration_ms": duration_ms}
        _write_frame(answers, json.dumps(header).encode())
        _write_frame(answers, payload)


if __name__ == "__main__":
    main()
