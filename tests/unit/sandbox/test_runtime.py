from __future__ import annotations

import decimal
import json
import time
from pathlib import Path

import pytest

from keeldb.functions.sandbox import runtime


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_handler_is_loaded_from_module_and_function(code: Path) -> None:
    (code / "sbx_ok.py").write_text("def handle(event, context):\n    return event\n")
    function, error = runtime._load_handler("sbx_ok.handle")
    assert error is None
    assert function({"a": 1}, None) == {"a": 1}


def test_a_handler_in_a_package_path_is_loaded(code: Path) -> None:
    (code / "sbx_pkg").mkdir()
    (code / "sbx_pkg" / "__init__.py").write_text("")
    (code / "sbx_pkg" / "app.py").write_text("def run(event, context):\n    return 7\n")
    function, error = runtime._load_handler("sbx_pkg/app.run")
    assert error is None
    assert function({}, None) == 7


@pytest.mark.parametrize(
    ("handler", "source", "error_type", "message"),
    [
        (
            "sbx_absent.handler",
            None,
            "Runtime.ImportModuleError",
            "Unable to import module 'sbx_absent': No module named 'sbx_absent'",
        ),
        (
            "sbx_nohandler.handler",
            "x = 1\n",
            "Runtime.HandlerNotFound",
            "Handler 'handler' missing on module 'sbx_nohandler'",
        ),
        (
            "handler",
            None,
            "Runtime.MalformedHandlerName",
            "Bad handler 'handler': not enough values to unpack (expected 2, got 1)",
        ),
        (
            "sbx_syntax.handler",
            "def handler(:\n",
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module 'sbx_syntax': ",
        ),
        ("sbx_raises.handler", "raise KeyError('at import')\n", "KeyError", "'at import'"),
    ],
)
def test_a_handler_that_cannot_load_gets_lambdas_init_error(
    code: Path, handler: str, source: str | None, error_type: str, message: str
) -> None:
    if source is not None:
        (code / f"{handler.split('.')[0]}.py").write_text(source)
    function, error = runtime._load_handler(handler)
    assert function is None
    assert error is not None
    assert error["errorType"] == error_type
    assert error["errorMessage"].startswith(message)
    assert isinstance(error["stackTrace"], list)


def test_an_exception_payload_names_type_message_request_and_user_frames() -> None:
    def user_code() -> None:
        raise ValueError("bad input")

    try:
        user_code()
    except ValueError as e:
        payload = runtime._exception_payload(e, "req-1")
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "bad input"
    assert payload["requestId"] == "req-1"
    assert any("in user_code" in frame for frame in payload["stackTrace"])
    assert list(payload) == ["errorMessage", "errorType", "requestId", "stackTrace"]


def test_decimals_encode_as_numbers_and_other_objects_fail_like_json() -> None:
    encoded = json.dumps(
        {"i": decimal.Decimal(3), "f": decimal.Decimal("2.5")}, default=runtime._json_default
    )
    assert json.loads(encoded) == {"i": 3, "f": 2.5}
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        json.dumps({1}, default=runtime._json_default)


def test_the_capture_keeps_only_the_end_of_a_long_log() -> None:
    capture = runtime._Capture()
    capture.write("start\n")
    for _ in range(3 * runtime.LOG_BYTES_MAX // 1000):
        capture.write("x" * 999 + "\n")
    capture.write("the end\n")
    text = capture.take()
    assert len(text) == runtime.LOG_BYTES_MAX
    assert text.endswith("the end\n")
    assert not text.startswith("start")
    assert capture.take() == ""


def test_the_context_counts_down_to_its_deadline() -> None:
    assign = {"name": "f", "memory_mb": 256}
    context = runtime.LambdaContext(assign, "req", "arn:f", time.monotonic() + 2.0)
    remaining = context.get_remaining_time_in_millis()
    assert 1000 < remaining <= 2000
    assert context.memory_limit_in_mb == "256"
    assert context.function_version == "$LATEST"
    expired = runtime.LambdaContext(assign, "req", "arn:f", time.monotonic() - 1.0)
    assert expired.get_remaining_time_in_millis() == 0


def test_the_environment_has_lambdas_variables_and_the_functions_own() -> None:
    assign = {
        "name": "fn",
        "memory_mb": 512,
        "runtime": "python3.12",
        "handler": "a.b",
        "environment": {"AWS_REGION": "eu-west-2", "TABLE": "t"},
    }
    env = runtime._environment(assign, "/var/task")
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["_HANDLER"] == "a.b"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-2"
    assert env["TABLE"] == "t"
