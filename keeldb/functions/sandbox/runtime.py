"""The Lambda-like Python runtime that runs inside one sandbox instance.

Owns: the instance's side of the control protocol (ready, assign, init, invoke, started,
result), the Lambda environment variables and context object, the capture of a handler's output
and logging, and the shape of the payloads Lambda's Python runtime returns for a handler's
errors.

It must never talk to anything but its inherited control socket, and never run a handler
before `confine.lock_down` has returned: function code only ever runs confined.
"""

from __future__ import annotations

import decimal
import importlib
import io
import json
import logging
import math
import os
import resource
import socket
import sys
import time
import traceback
from typing import Any

from keeldb.functions.sandbox import confine, frames

# The most log text one invocation returns; Lambda's Tail returns only the last 4 KB anyway.
LOG_BYTES_MAX = 256 * 1024
# Lambda's limit on a synchronous response payload.
RESPONSE_BYTES_MAX = 6 * 1024 * 1024
RUNTIME_DIR = "/var/runtime"
STARTED_FRAME = {"op": "started"}


class _Capture(io.TextIOBase):
    """A text stream that keeps the last LOG_BYTES_MAX characters written to it."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size > 2 * LOG_BYTES_MAX:
            kept = "".join(self._parts)[-LOG_BYTES_MAX:]
            self._parts = [kept]
            self._size = len(kept)
        return len(text)

    def take(self) -> str:
        text = "".join(self._parts)[-LOG_BYTES_MAX:]
        self._parts = []
        self._size = 0
        return text


class LambdaContext:
    """The context object Lambda passes to a Python handler."""

    def __init__(
        self, assign: dict[str, Any], request_id: str, function_arn: str, deadline: float
    ) -> None:
        name = assign["name"]
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        # Lambda's Python runtime gives the memory size as the string of its env variable.
        self.memory_limit_in_mb = str(assign["memory_mb"])
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{name}")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, message: str) -> None:
        sys.stdout.write(message)


class _LambdaFormatter(logging.Formatter):
    request_id = ""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        text = f"[{record.levelname}]\t{stamp}\t{self.request_id}\t{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _environment(assign: dict[str, Any], task_dir: str, tmp_dir: str = "/tmp") -> dict[str, str]:
    name = assign["name"]
    region = assign["environment"].get("AWS_REGION", "us-east-1")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": task_dir,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{assign['runtime']}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(assign["memory_mb"]),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime())
        + os.urandom(16).hex(),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "_HANDLER": assign["handler"],
        "HOME": tmp_dir,
        "TMPDIR": tmp_dir,
    }
    env.update(assign["environment"])
    return env


def error_payload(
    error_type: str, message: str, request_id: str | None, stack: list[str]
) -> dict[str, Any]:
    payload: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    if request_id is not None:
        payload["requestId"] = request_id
    payload["stackTrace"] = stack
    return payload


def _load_handler(handler: str) -> tuple[Any, dict[str, Any] | None]:
    """The handler function, or Lambda's init error payload for why it cannot be loaded."""
    module_name, dot, function_name = handler.rpartition(".")
    if not dot or not module_name or not function_name:
        got = len([p for p in handler.split(".") if p]) or 1
        message = f"Bad handler '{handler}': not enough values to unpack (expected 2, got {got})"
        return None, error_payload("Runtime.MalformedHandlerName", message, "", [])
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as e:
        message = f"Syntax error in module '{module_name}': {e}"
        return None, error_payload("Runtime.UserCodeSyntaxError", message, "", [])
    except ImportError as e:
        message = f"Unable to import module '{module_name}': {e}"
        return None, error_payload("Runtime.ImportModuleError", message, "", [])
    except Exception as e:  # noqa: BLE001 - the handler module's own error, as Lambda reports it
        return None, _exception_payload(e, "")
    function = getattr(module, function_name, None)
    if function is None:
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        return None, error_payload("Runtime.HandlerNotFound", message, "", [])
    return function, None


def _exception_payload(error: BaseException, request_id: str | None) -> dict[str, Any]:
    frames_ = traceback.extract_tb(error.__traceback__)
    # The runtime's own frames are not the user's business (Lambda drops them too).
    frames_ = traceback.StackSummary.from_list([f for f in frames_ if f.filename != __file__])
    return error_payload(type(error).__name__, str(error), request_id, frames_.format())


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _reap_orphans() -> None:
    # As init of its PID namespace the runtime inherits every orphan a handler leaves.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _quiet_standard_fds() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def rehearse() -> None:
    """Walk the assignment and invocation paths with a dummy function (the zygote does, before
    it forks): first-use caches and the interpreter's specialised bytecode then live in pages
    every instance shares, instead of being written, and so copied, by each one."""
    assign = {
        "name": "warm",
        "memory_mb": 128,
        "runtime": "python3.11",
        "handler": "a.b",
        "environment": {},
    }
    capture = _Capture()
    _environment(assign, confine.TASK_DIR)
    formatter = _LambdaFormatter()
    handler_ = logging.StreamHandler(capture)
    handler_.setFormatter(formatter)
    record = logging.LogRecord("warm", logging.WARNING, __file__, 0, "warm", None, None)
    handler_.emit(record)
    context = LambdaContext(assign, "warm", "arn", time.monotonic() + 1)
    context.get_remaining_time_in_millis()
    body = json.dumps({"warm": [1, 2.5, "x", None]}, default=_json_default).encode()
    json.loads(body)
    frames.encode({"op": "result", "payload": body, "log": capture.take(), "cpu_seconds": 0.0})
    _cpu_seconds()
    resource.getrusage(resource.RUSAGE_SELF)


def serve(sock: socket.socket, plan: dict[str, Any], seccomp_program: bytes | None) -> None:
    """Run one instance to its end: prepare, wait for a function, then invoke it forever."""
    _quiet_standard_fds()
    state = confine.prepare(plan)
    frames.send(sock, {"op": "ready", "layers": state.layers})
    assign = frames.recv(sock)
    assert assign["op"] == "assign"
    started = time.perf_counter()
    started_cpu = time.process_time()
    capture = _Capture()
    sys.stdout = sys.stderr = capture
    try:
        task_dir = confine.lock_down(state, assign, seccomp_program)
    except OSError as e:
        payload = error_payload("Runtime.ConfinementError", f"sandbox set-up failed: {e}", "", [])
        frames.send(sock, {"op": "init", "error": payload, "log": "", "layers": state.layers})
        return
    environment_started = time.perf_counter()
    os.environ.clear()
    os.environ.update(_environment(assign, task_dir, state.tmp_dir))
    time.tzset()
    sys.path.insert(0, task_dir)
    sys.dont_write_bytecode = True  # the code directory is read-only: do not even try
    formatter = _LambdaFormatter()
    handler_ = logging.StreamHandler(capture)
    handler_.setFormatter(formatter)
    root_logger = logging.getLogger()
    root_logger.handlers[:] = [handler_]
    imported = time.perf_counter()
    state.steps_ms["environment"] = (imported - environment_started) * 1000
    function, init_error = _load_handler(assign["handler"])
    state.steps_ms["import_handler"] = (time.perf_counter() - imported) * 1000
    init_ms = (time.perf_counter() - started) * 1000
    state.steps_ms["cpu"] = (time.process_time() - started_cpu) * 1000
    frames.send(
        sock,
        {
            "op": "init",
            "error": init_error,
            "log": capture.take(),
            "layers": state.layers,
            "init_ms": init_ms,
            "steps_ms": state.steps_ms,
        },
    )
    if init_error is not None:
        return
    timeout_seconds = assign["timeout_seconds"]
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    while True:
        try:
            request = frames.recv(sock)
        except frames.FrameError:
            return
        assert request["op"] == "invoke"
        request_id = request["request_id"]
        deadline = time.monotonic() + timeout_seconds
        cpu_before = _cpu_seconds()
        cpu_soft = min(cpu_hard, math.ceil(cpu_before + timeout_seconds) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))
        formatter.request_id = request_id
        context = LambdaContext(assign, request_id, request["function_arn"], deadline)
        error = None
        exit_after = False
        try:
            raw = request["payload"]
            event = json.loads(raw) if raw else {}
        except ValueError as e:
            # The API checks payloads are JSON; this is the runtime's own answer if one is not.
            error = error_payload(
                "Runtime.UnmarshalError", f"Unable to unmarshal input: {e}", request_id, []
            )
            event = None
        if error is None:
            # Before the handler's first instruction: an instance that dies before the pool
            # reads this ran nothing of the invocation, which may then go to another one.
            frames.send(sock, STARTED_FRAME)
        try:
            if error is None:
                result = function(event, context)
        except SystemExit as e:
            message = (
                f"RequestId: {request_id} Error: Runtime exited with error: exit status {e.code}"
            )
            error = error_payload("Runtime.ExitError", message, None, [])
            error.pop("stackTrace")
            exit_after = True
        except Exception as e:  # noqa: BLE001 - the handler's error is the function's result
            error = _exception_payload(e, request_id)
            capture.write(f"[ERROR] {type(e).__name__}: {e}\n")
            capture.write("Traceback (most recent call last):\n")
            capture.write("".join(error["stackTrace"]))
        if error is None:
            try:
                body = json.dumps(result, default=_json_default).encode()
            except (TypeError, ValueError) as e:
                message = f"Unable to marshal response: {e}"
                error = error_payload("Runtime.MarshalError", message, request_id, [])
            else:
                if len(body) > RESPONSE_BYTES_MAX:
                    message = (
                        f"Response payload size ({len(body)} bytes) exceeded maximum allowed "
                        f"payload size ({RESPONSE_BYTES_MAX} bytes)."
                    )
                    error = error_payload("Function.ResponseSizeTooLarge", message, None, [])
                    error.pop("stackTrace")
        if error is not None:
            body = json.dumps(error).encode()
        for h in root_logger.handlers:
            h.flush()
        max_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        frames.send(
            sock,
            {
                "op": "result",
                "payload": body,
                "error": error is not None,
                "log": capture.take(),
                "cpu_seconds": (cpu_after := _cpu_seconds()),
                "cpu_ms": (cpu_after - cpu_before) * 1000,
                "max_rss_kb": max_rss_kb,
            },
        )
        if exit_after:
            return
        _reap_orphans()
