"""The sandbox pool runs handlers as Lambda does: warm reuse, cold starts, the context object,
the environment, logs, error payloads, freezing and reaping idle instances, the instance
limit, and nothing left behind after close. Real zygote, real instances, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keeldb.functions.sandbox import FunctionSpec, SandboxBusy, SandboxCrashed, SandboxPool
from keeldb.functions.sandbox.testing import ThreadedPool

pytestmark = pytest.mark.process

SECRET = "keeldb-sandbox-test-secret-4711"

HANDLERS = textwrap.dedent(
    """
    import logging, os, sys, time
    calls = 0

    def count(event, context):
        global calls
        calls += 1
        return {"calls": calls, "event": event}

    def describe(event, context):
        environ = b""
        try:
            environ = open("/proc/self/environ", "rb").read()
        except OSError:
            pass
        return {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "invoked_function_arn": context.invoked_function_arn,
            "log_group_name": context.log_group_name,
            "remaining": context.get_remaining_time_in_millis(),
            "environment": dict(os.environ),
            "proc_environ": environ.decode("latin-1"),
        }

    def chatty(event, context):
        print("printed line")
        logging.getLogger().warning("logged warning")
        sys.stderr.write("stderr line\\n")
        return "done"

    def fail(event, context):
        raise ValueError("no good")

    def unserializable(event, context):
        return {1, 2}

    def leave(event, context):
        sys.exit(3)

    def forge(event, context):
        import stat
        frame = bytes.fromhex(event["frame"])
        for fd in range(3, 64):
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.write(fd, frame)
            except OSError:
                pass
        return "forged"

    def threads(event, context):
        import threading
        done = []
        workers = [threading.Thread(target=lambda: done.append(sum(range(1000))))
                   for _ in range(event["n"])]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return len(done)

    def slow(event, context):
        time.sleep(event.get("seconds", 1.0))
        return "slept"
    """
)


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("code")
    (directory / "app.py").write_text(HANDLERS)
    (directory / "broken.py").write_text("def handler(:\n")
    return directory


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedPool]:
    os.environ["KEELDB_SANDBOX_SECRET"] = SECRET  # the database's own environment
    try:
        with ThreadedPool(
            tmp_path_factory.mktemp("pool"),
            endpoint_port=1,
            warm_instances=2,
            idle_freeze_seconds=0.2,
            idle_reap_seconds=60.0,
        ) as running:
            yield running
    finally:
        del os.environ["KEELDB_SANDBOX_SECRET"]


def spec(code_dir: Path, handler: str, name: str | None = None, **changes: Any) -> FunctionSpec:
    options: dict[str, Any] = {
        "memory_mb": 128,
        "timeout_seconds": 10.0,
        "environment": {},
        **changes,
    }
    return FunctionSpec(
        name=name or handler.replace(".", "-"),
        code_dir=code_dir,
        code_sha256="1" * 64,
        handler=handler,
        runtime="python3.11",
        **options,
    )


def test_a_second_invocation_reuses_the_warm_instance(pool: ThreadedPool, code_dir: Path) -> None:
    function = spec(code_dir, "app.count", "reuse")
    first = pool.invoke(function, b'{"n": 1}')
    second = pool.invoke(function, b'{"n": 2}')
    assert (first.cold_start, second.cold_start) == (True, False)
    assert json.loads(first.payload) == {"calls": 1, "event": {"n": 1}}
    assert json.loads(second.payload) == {"calls": 2, "event": {"n": 2}}
    assert pool.instances("reuse") == 1


def test_a_changed_configuration_gets_a_new_instance(pool: ThreadedPool, code_dir: Path) -> None:
    pool.invoke(spec(code_dir, "app.count", "reconfigured"), b"{}")
    changed = spec(code_dir, "app.count", "reconfigured", environment={"STAGE": "2"})
    result = pool.invoke(changed, b"{}")
    assert result.cold_start is True
    assert json.loads(result.payload)["calls"] == 1


def test_an_empty_payload_is_an_empty_event(pool: ThreadedPool, code_dir: Path) -> None:
    result = pool.invoke(spec(code_dir, "app.count", "empty"), b"")
    assert json.loads(result.payload)["event"] == {}


def test_the_handler_gets_a_lambda_context(pool: ThreadedPool, code_dir: Path) -> None:
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:ctx"
    function = spec(code_dir, "app.describe", "ctx", memory_mb=192, timeout_seconds=7.0)
    result = pool.invoke(function, b"{}", request_id="req-1", function_arn=arn)
    seen = json.loads(result.payload)
    assert seen["function_name"] == "ctx"
    assert seen["function_version"] == "$LATEST"
    assert seen["memory_limit_in_mb"] == "192"
    assert seen["aws_request_id"] == "req-1" == result.request_id
    assert seen["invoked_function_arn"] == arn
    assert seen["log_group_name"] == "/aws/lambda/ctx"
    assert 0 < seen["remaining"] <= 7000


def test_the_handler_sees_its_environment_and_nothing_of_the_database(
    pool: ThreadedPool, code_dir: Path
) -> None:
    environment = {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:1", "TABLE": "t"}
    result = pool.invoke(spec(code_dir, "app.describe", "env", environment=environment), b"{}")
    seen = json.loads(result.payload)
    assert seen["environment"]["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:1"
    assert seen["environment"]["TABLE"] == "t"
    assert seen["environment"]["AWS_LAMBDA_FUNCTION_NAME"] == "env"
    assert seen["environment"]["LAMBDA_TASK_ROOT"] in ("/var/task", str(code_dir))
    assert "KEELDB_SANDBOX_SECRET" not in seen["environment"]
    assert SECRET not in json.dumps(seen)


def test_output_and_logging_are_in_the_log_tail(pool: ThreadedPool, code_dir: Path) -> None:
    function = spec(code_dir, "app.chatty", "chatty")
    cold = pool.invoke(function, b"{}")
    warm = pool.invoke(function, b"{}")
    for result in (cold, warm):
        lines = result.log_tail.splitlines()
        assert lines[0] == f"START RequestId: {result.request_id} Version: $LATEST"
        assert "printed line" in lines
        assert "stderr line" in lines
        assert any(
            line.startswith("[WARNING]\t") and line.endswith("\tlogged warning") for line in lines
        )
        assert lines[-2] == f"END RequestId: {result.request_id}"
        assert lines[-1].startswith(f"REPORT RequestId: {result.request_id}\tDuration: ")
        assert "Memory Size: 128 MB" in lines[-1]
    assert "Init Duration" in cold.log_tail
    assert "Init Duration" not in warm.log_tail


def test_a_raised_exception_is_lambdas_error_payload(pool: ThreadedPool, code_dir: Path) -> None:
    result = pool.invoke(spec(code_dir, "app.fail", "fail"), b"{}", request_id="req-9")
    assert result.function_error == "Unhandled"
    payload = json.loads(result.payload)
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "no good"
    assert payload["requestId"] == "req-9"
    assert any('raise ValueError("no good")' in frame for frame in payload["stackTrace"])
    assert "[ERROR] ValueError: no good" in result.log_tail


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        (
            "missing.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'missing': No module named 'missing'",
        ),
        ("app.nowhere", "Runtime.HandlerNotFound", "Handler 'nowhere' missing on module 'app'"),
        (
            "nodots",
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodots': not enough values to unpack (expected 2, got 1)",
        ),
        ("broken.handler", "Runtime.UserCodeSyntaxError", "Syntax error in module 'broken'"),
    ],
)
def test_a_handler_that_cannot_load_is_an_init_error(
    pool: ThreadedPool, code_dir: Path, handler: str, error_type: str, message: str
) -> None:
    result = pool.invoke(spec(code_dir, handler, f"init-{error_type[8:]}"), b"{}")
    assert result.function_error == "Unhandled"
    payload = json.loads(result.payload)
    assert payload["errorType"] == error_type
    assert payload["errorMessage"].startswith(message)


def test_an_unserializable_result_is_a_marshal_error(pool: ThreadedPool, code_dir: Path) -> None:
    result = pool.invoke(spec(code_dir, "app.unserializable", "marshal"), b"{}")
    payload = json.loads(result.payload)
    assert payload["errorType"] == "Runtime.MarshalError"
    assert payload["errorMessage"] == (
        "Unable to marshal response: Object of type set is not JSON serializable"
    )


def test_sys_exit_ends_the_instance(pool: ThreadedPool, code_dir: Path) -> None:
    function = spec(code_dir, "app.leave", "leave")
    first = pool.invoke(function, b"{}")
    assert first.function_error == "Unhandled"
    assert json.loads(first.payload)["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in json.loads(first.payload)["errorMessage"]
    assert pool.invoke(function, b"{}").cold_start is True


def test_concurrent_invocations_get_their_own_instances(pool: ThreadedPool, code_dir: Path) -> None:
    function = spec(code_dir, "app.slow", "parallel")
    results = pool.invoke_many(function, [b'{"seconds": 0.5}'] * 3)
    assert [r.payload for r in results] == [b'"slept"'] * 3
    assert pool.instances("parallel") == 3


def test_an_idle_instance_is_frozen_and_thawed_on_the_next_call(
    pool: ThreadedPool, code_dir: Path
) -> None:
    layers = pool.isolation_layers()
    if not layers.get("cgroup_freezer"):
        pytest.skip("this host lacks the isolation layer cgroup_freezer")
    function = spec(code_dir, "app.count", "frozen")
    pool.invoke(function, b"{}")

    def frozen() -> list[bool]:
        return [
            i.frozen
            for i in pool.pool._instances.values()
            if i.spec is not None and i.spec.name == "frozen"
        ]

    deadline = time.monotonic() + 10.0
    while pool.on_loop(frozen) != [True] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.on_loop(frozen) == [True]
    again = pool.invoke(function, b"{}")
    assert again.cold_start is False
    assert json.loads(again.payload)["calls"] == 2


def test_idle_instances_are_reaped_and_the_pool_scales_to_zero(
    tmp_path: Path, code_dir: Path
) -> None:
    with ThreadedPool(
        tmp_path, endpoint_port=1, warm_instances=1, idle_freeze_seconds=0.1, idle_reap_seconds=0.4
    ) as short:
        function = spec(code_dir, "app.count", "reaped")

        async def invoke_twice_and_count() -> int:
            calls = [short.pool.invoke(function, b"{}") for _ in range(2)]
            await asyncio.gather(*calls)
            return short.pool.instances("reaped")  # before the janitor can run

        assert short.call(invoke_twice_and_count()) == 2
        deadline = time.monotonic() + 10.0
        while short.instances("reaped") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert short.instances("reaped") == 0
        assert short.invoke(function, b"{}").cold_start is True


def test_the_instance_limit_answers_busy(tmp_path: Path, code_dir: Path) -> None:
    with ThreadedPool(tmp_path, endpoint_port=1, warm_instances=1, instances_max=1) as small:
        slow = spec(code_dir, "app.slow", "busy")
        outcomes = small.invoke_many(slow, [b'{"seconds": 1.0}'] * 2)
        assert sorted(type(o).__name__ for o in outcomes) == ["InvokeResult", "SandboxBusy"]
        # An idle instance of another function makes room for a new one.
        small.invoke(spec(code_dir, "app.count", "other"), b"{}")
        assert small.instances("busy") == 0
        assert small.instances("other") == 1
        again = small.invoke_many(slow, [b'{"seconds": 1.0}'] * 2)
        assert sorted(type(o).__name__ for o in again) == ["InvokeResult", "SandboxBusy"]
        busy = next(o for o in again if isinstance(o, SandboxBusy))
        assert str(busy) == "all 1 sandbox instances are busy"


def test_close_leaves_no_process_and_no_control_group(tmp_path: Path, code_dir: Path) -> None:
    runner = ThreadedPool(tmp_path, endpoint_port=1, warm_instances=2)
    with runner:
        runner.invoke(spec(code_dir, "app.count", "closing"), b"{}")
        zygote_pid = runner.pool._zygote.pid  # type: ignore[union-attr]
        pids = runner.on_loop(lambda: [i.pid for i in runner.pool._instances.values() if i.pid > 0])
        groups = runner.pool._groups
        assert groups is not None
        bases = [h.base(groups.pool_name) for h in groups.hierarchies]
        assert len(pids) >= 2
    for pid in [zygote_pid, *pids]:
        assert not _alive(pid), pid
    for base in bases:
        assert not base.exists(), base


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00\x00\x03abc",  # not msgpack
        b"\x00\x00\x00\x0a\x81\xa2op\xa6result",  # a map without the result's members
        b"\xff\xff\xff\xff",  # a length over the limit
    ],
)
def test_a_forged_frame_from_the_handler_ends_its_instance_not_the_pool(
    pool: ThreadedPool, code_dir: Path, frame: bytes
) -> None:
    function = spec(code_dir, "app.forge", f"forge-{frame[:4].hex()}")
    result = pool.invoke(function, json.dumps({"frame": frame.hex()}).encode())
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload)["errorType"] == "Runtime.ExitError"
    healthy = pool.invoke(spec(code_dir, "app.count", "after-forgery"), b"{}")
    assert healthy.function_error is None


def test_a_payload_that_is_not_json_is_an_unmarshal_error(
    pool: ThreadedPool, code_dir: Path
) -> None:
    result = pool.invoke(spec(code_dir, "app.count", "unmarshal"), b"{not json")
    assert result.function_error == "Unhandled"
    payload = json.loads(result.payload)
    assert payload["errorType"] == "Runtime.UnmarshalError"
    assert payload["errorMessage"].startswith("Unable to unmarshal input: ")
    again = pool.invoke(spec(code_dir, "app.count", "unmarshal"), b"{}")
    assert json.loads(again.payload)["calls"] == 1  # the handler never ran on the bad input


def test_a_lazy_pool_starts_its_zygote_with_the_first_invocation(
    tmp_path: Path, code_dir: Path
) -> None:
    with ThreadedPool(tmp_path, endpoint_port=1, warm_instances=1, eager=False) as lazy:
        assert lazy.pool._zygote is None
        assert lazy.pool.layers_measured() is False
        predicted = lazy.isolation_layers()
        result = lazy.invoke(spec(code_dir, "app.count", "lazy"), b"{}")
        assert result.function_error is None
        assert lazy.pool._zygote is not None
        assert lazy.pool.layers_measured() is True
        measured = lazy.isolation_layers()
        assert predicted.keys() == measured.keys()
        # On a host where every layer works, the prediction is exact; elsewhere it may only
        # promise more than the probe finds.
        assert {k for k, v in measured.items() if v} <= {k for k, v in predicted.items() if v}


def test_a_cancelled_invocation_ends_its_instance_and_the_next_call_is_answered(
    pool: ThreadedPool, code_dir: Path
) -> None:
    function = spec(code_dir, "app.slow", "cancelled")
    pool.invoke(function, b'{"seconds": 0.0}')

    async def cancel_midway() -> bool:
        task = asyncio.ensure_future(pool.pool.invoke(function, b'{"seconds": 1.0}'))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert pool.call(cancel_midway()) is True
    after = pool.invoke(function, b'{"seconds": 0.0}')
    assert after.payload == b'"slept"'
    assert after.cold_start is True  # the instance that was mid-invocation is gone


def test_a_killed_zygote_is_replaced_without_stalling_the_next_invocation(
    tmp_path: Path, code_dir: Path
) -> None:
    # A cold start makes the pool refill its warm pool at once: killing the zygote right after
    # it lands in the middle of that instance's start-up handshake.
    from keeldb.functions.sandbox.pool import SPAWN_SECONDS_MAX

    gone: list[int] = []
    frozen_instance: list[int] = []

    def frozen_pids() -> list[int]:
        return [i.pid for i in runner.pool._instances.values() if i.frozen]

    with ThreadedPool(
        tmp_path, endpoint_port=1, warm_instances=2, idle_freeze_seconds=0.1
    ) as runner:
        function = spec(code_dir, "app.count", "survivor")
        for cycle in range(3):
            assert runner.invoke(function, b"{}").function_error is None
            if cycle == 0 and runner.isolation_layers().get("cgroup_freezer"):
                # A frozen instance too must die with its zygote.
                deadline = time.monotonic() + 10.0
                while not runner.on_loop(frozen_pids) and time.monotonic() < deadline:
                    time.sleep(0.05)
                frozen_instance = runner.on_loop(frozen_pids)
                assert frozen_instance
            zygote = runner.pool._zygote.pid  # type: ignore[union-attr]
            gone += [
                zygote,
                *runner.on_loop(lambda: [i.pid for i in runner.pool._instances.values()]),
            ]
            # The zygote killed by the previous cycle may have lived on (a SIGKILL takes effect
            # when the kernel next runs it) and only just gone: then there is nothing to kill.
            with contextlib.suppress(ProcessLookupError):
                os.kill(zygote, signal.SIGKILL)
            started = time.monotonic()
            result = runner.invoke(spec(code_dir, "app.count", f"after{cycle}"), b"{}")
            assert result.function_error is None
            assert time.monotonic() - started < SPAWN_SECONDS_MAX / 2, cycle
        deadline = time.monotonic() + 10.0  # the last kill may not be noticed yet
        while runner.pool._zygote.pid in gone and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        assert runner.pool._zygote.pid not in gone  # type: ignore[union-attr]
        # The function's old instance died with its zygote: it starts afresh.
        again = runner.invoke(function, b"{}")
        assert (again.cold_start, json.loads(again.payload)["calls"]) == (True, 1)
    for pid in gone:
        assert not _alive(pid), pid
    assert frozen_instance == [] or set(frozen_instance) <= set(gone)


class HandOutPool(SandboxPool):
    """A pool whose next hand-out of an instance first runs `at_hand_out(pool, instance)`,
    on the pool's loop, before the pool checks the instance: a fault placed there, exactly,
    instead of raced for with a timer."""

    at_hand_out: Callable[[SandboxPool, Any], None] | None = None

    def _handing_out(self, instance: Any) -> None:
        action, self.at_hand_out = self.at_hand_out, None
        if action is not None:
            action(self, instance)


def _kill_zygote_and_wait(pool: SandboxPool, instance: Any) -> None:
    """SIGKILL the zygote and return once it has exited (its socket closed, the parent-death
    signal sent to its instances), without reaping it: the pool's child watcher does."""
    del instance
    assert pool._zygote is not None
    pid = pool._zygote.pid
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # the watcher may reap it first
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def _wait_exited(pidfd: int) -> None:
    ready, _, _ = select.select([pidfd], [], [], 10.0)
    assert ready, "the instance did not exit"


def _kill_instance_unreported(pool: SandboxPool, instance: Any) -> None:
    """Kill the instance about to be handed out while its zygote is stopped, so that the pool
    cannot hear of the exit before it sends the invocation; the zygote goes on right after."""
    assert pool._zygote is not None
    zygote = pool._zygote.pid
    os.kill(zygote, signal.SIGSTOP)
    signal.pidfd_send_signal(instance.pidfd, signal.SIGKILL)
    _wait_exited(instance.pidfd)
    asyncio.get_running_loop().call_soon(os.kill, zygote, signal.SIGCONT)


@pytest.fixture
def hand_out_pool(tmp_path: Path) -> Iterator[ThreadedPool]:
    with ThreadedPool(
        tmp_path, pool_class=HandOutPool, endpoint_port=1, warm_instances=1
    ) as running:
        yield running


def _arm(runner: ThreadedPool, action: Callable[[SandboxPool, Any], None]) -> None:
    def arm() -> None:
        runner.pool.at_hand_out = action  # type: ignore[attr-defined]

    runner.on_loop(arm)


def test_an_idle_instance_whose_zygote_exited_before_its_hand_out_is_not_handed_out(
    hand_out_pool: ThreadedPool, code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    function = spec(code_dir, "app.count", "idle-of-a-dead-zygote")
    assert json.loads(hand_out_pool.invoke(function, b"{}").payload)["calls"] == 1
    _arm(hand_out_pool, _kill_zygote_and_wait)
    with caplog.at_level(logging.WARNING, logger="keeldb.functions.sandbox"):
        result = hand_out_pool.invoke(function, b"{}")
    assert hand_out_pool.on_loop(lambda: hand_out_pool.pool.at_hand_out) is None  # it ran
    assert (result.function_error, result.cold_start) == (None, True), result.payload
    assert json.loads(result.payload)["calls"] == 1  # a fresh instance of the new zygote
    # The exit was read at the hand-out: the invocation never reached the dead instance.
    assert "before its handler started" not in caplog.text


def test_a_warm_instance_whose_zygote_exited_before_its_hand_out_is_not_assigned(
    hand_out_pool: ThreadedPool, code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _arm(hand_out_pool, _kill_zygote_and_wait)
    with caplog.at_level(logging.WARNING, logger="keeldb.functions.sandbox"):
        result = hand_out_pool.invoke(spec(code_dir, "app.count", "warm-of-a-dead-zygote"), b"{}")
    assert hand_out_pool.on_loop(lambda: hand_out_pool.pool.at_hand_out) is None
    assert (result.function_error, result.cold_start) == (None, True), result.payload
    assert "died during its set-up" not in caplog.text
    assert "before its handler started" not in caplog.text


def test_an_instance_that_dies_before_its_handler_starts_passes_the_invocation_on(
    hand_out_pool: ThreadedPool, code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    function = spec(code_dir, "app.count", "dies-unseen")
    hand_out_pool.invoke(function, b"{}")
    _arm(hand_out_pool, _kill_instance_unreported)
    with caplog.at_level(logging.WARNING, logger="keeldb.functions.sandbox"):
        result = hand_out_pool.invoke(function, b"{}")
    assert hand_out_pool.on_loop(lambda: hand_out_pool.pool.at_hand_out) is None
    assert (result.function_error, result.cold_start) == (None, True), result.payload
    assert json.loads(result.payload)["calls"] == 1
    assert "before its handler started" in caplog.text  # the dead one was handed out


def test_an_instance_that_dies_in_its_handler_is_never_invoked_again(
    hand_out_pool: ThreadedPool, code_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # At most once: the handler started, so its death is the invocation's result, even when
    # the instance was of a zygote that exited meanwhile.
    function = spec(code_dir, "app.slow", "dies-in-handler")
    hand_out_pool.invoke(function, b'{"seconds": 0.0}')

    async def kill_midway() -> Any:
        call = asyncio.ensure_future(hand_out_pool.pool.invoke(function, b'{"seconds": 2.0}'))
        await asyncio.sleep(0.5)
        (instance,) = [
            i
            for i in hand_out_pool.pool._instances.values()
            if i.busy and i.spec is not None and i.spec.name == function.name
        ]
        signal.pidfd_send_signal(instance.pidfd, signal.SIGKILL)
        return await call

    with caplog.at_level(logging.WARNING, logger="keeldb.functions.sandbox"):
        result = hand_out_pool.call(kill_midway())
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload)["errorType"] == "Runtime.ExitError"
    # Not passed on: no other instance of the function was started for it.
    assert "before its handler started" not in caplog.text
    assert hand_out_pool.instances(function.name) == 0


@pytest.mark.parametrize("delay_seconds", [0.0, 0.5])
def test_closing_while_the_zygote_starts_fails_the_waiting_call_and_leaves_nothing(
    tmp_path: Path, code_dir: Path, delay_seconds: float
) -> None:
    runner = ThreadedPool(tmp_path, endpoint_port=1, warm_instances=1, eager=False)
    runner.__enter__()

    async def invoke_then_close() -> tuple[str, int | None]:
        call = asyncio.ensure_future(runner.pool.invoke(spec(code_dir, "app.count"), b"{}"))
        await asyncio.sleep(delay_seconds)
        await runner.pool.close()
        zygote = runner.pool._zygote
        try:
            await call
        except SandboxCrashed:
            return "crashed", zygote.pid if zygote else None
        return "answered", zygote.pid if zygote else None

    try:
        outcome, zygote_pid = runner.call(invoke_then_close())
    finally:
        runner.close()
    if delay_seconds == 0.0:
        assert outcome == "crashed"
    else:
        # Half a second in, the zygote is still starting on a busy machine and the call fails
        # with it, or it has started and the call was answered before the close: either way
        # the close leaves nothing running.
        assert outcome in ("crashed", "answered")
    assert zygote_pid is None or not _alive(zygote_pid)


def test_a_handler_can_run_threads(pool: ThreadedPool, code_dir: Path) -> None:
    # Each thread reserves address space for its stack: RLIMIT_AS must leave room for that.
    result = pool.invoke(spec(code_dir, "app.threads", "threads"), b'{"n": 24}')
    assert (result.function_error, result.payload) == (None, b"24")


DATABASE_STAND_IN = """
import json, sys, time
from pathlib import Path
from keeldb.functions.sandbox import FunctionSpec
from keeldb.functions.sandbox.testing import ThreadedPool

runner = ThreadedPool(Path(sys.argv[1]), endpoint_port=1, warm_instances=1,
                      idle_freeze_seconds=0.1)
runner.__enter__()
for name in ("first", "second"):
    spec = FunctionSpec(name, Path(sys.argv[2]), "0", "app.count", "python3.11", 128, 10.0, {})
    runner.invoke(spec, b"{}")
pids = runner.on_loop(lambda: [i.pid for i in runner.pool._instances.values() if i.pid > 0])
print(json.dumps([runner.pool._zygote.pid, *pids]), flush=True)
time.sleep(120)
"""


def test_kill_9_of_the_pool_process_leaves_no_sandbox_behind(
    tmp_path: Path, code_dir: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", DATABASE_STAND_IN, str(tmp_path / "work"), str(code_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        pids = json.loads(process.stdout.readline())
        assert len(pids) >= 3  # the zygote, two assigned instances, the warm ones
        time.sleep(0.5)  # the idle instances are frozen by now
        assert all(_alive(pid) for pid in pids)
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10.0
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if _alive(pid)] == []
