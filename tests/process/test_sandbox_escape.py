"""Code inside a sandbox cannot reach what is outside it, and a hostile handler cannot hurt
the database next to it.

A real `keeldb serve` process, started by the module, stands in for the database: the sandbox
pool's endpoint port is its port, so a handler may talk to it with boto3 and to nothing else.
Each attempt runs inside a real sandbox (zygote fork, namespaces, cgroups, Landlock, seccomp),
and each test skips, naming the layer, only when `isolation_layers()` says the host lacks the
mechanism the attempt is stopped by.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from keeldb.functions.sandbox import FunctionSpec
from keeldb.functions.sandbox.testing import ThreadedPool

pytestmark = pytest.mark.process

START_SECONDS_MAX = 30.0
PIDS_MAX = 24
WATCH_PERIOD_SECONDS = 0.05
HOG_MEMORY_MB = 96

HANDLERS = textwrap.dedent(
    """
    import ctypes, errno, json, os, socket, subprocess, sys, time

    def attempt(action):
        try:
            value = action()
        except BaseException as e:
            return {"ok": False, "error": type(e).__name__, "errno": getattr(e, "errno", None)}
        return {"ok": True, "value": value}

    def read_file(event, context):
        return attempt(lambda: open(event["path"], "rb").read(64).decode("latin-1"))

    def list_dir(event, context):
        return attempt(lambda: sorted(os.listdir(event["path"])))

    def write_file(event, context):
        return attempt(lambda: open(event["path"], "w").write("x"))

    def write_tmp(event, context):
        path = os.path.join(os.environ["TMPDIR"], "scratch")
        return attempt(lambda: open(path, "w").write("x"))

    def tcp_connect(event, context):
        def connect():
            s = socket.create_connection(("127.0.0.1", event["port"]), timeout=5)
            s.close()
            return True
        return attempt(connect)

    def resolve(event, context):
        return attempt(lambda: sorted({a[4][0] for a in socket.getaddrinfo(event["host"], 80)}))

    def udp_socket(event, context):
        return attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())

    def kill(event, context):
        return attempt(lambda: os.kill(event["pid"], signal_number(event)))

    def signal_number(event):
        return event.get("signal", 15)

    def libc_call(name, *args):
        libc = ctypes.CDLL(None, use_errno=True)
        result = getattr(libc, name)(*args)
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return result

    def ptrace(event, context):
        return attempt(lambda: libc_call("ptrace", 16, event["pid"], None, None))  # ATTACH

    def mount(event, context):
        return attempt(lambda: libc_call("mount", b"none", b"/tmp", b"tmpfs", 0, None))

    def unshare(event, context):
        return attempt(lambda: libc_call("unshare", 0x10000000))  # CLONE_NEWUSER

    def setuid_root(event, context):
        return attempt(lambda: os.setuid(0))

    def exec_shell(event, context):
        return attempt(lambda: os.execv("/bin/sh", ["/bin/sh", "-c", "true"]))

    def subprocess_shell(event, context):
        return attempt(lambda: subprocess.run(["/bin/sh", "-c", "echo escaped"], check=True))

    def who(event, context):
        return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "proc": attempt(lambda: sorted(p for p in os.listdir("/proc") if p.isdigit())),
                "parent_visible": attempt(lambda: os.kill(event["pid"], 0))}

    def memory_hog(event, context):
        hoard = []
        while True:
            hoard.append(bytearray(8 * 1024 * 1024))

    def fork_bomb(event, context):
        born = 0
        while born < 10_000:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            born += 1
        return {"born": born}

    def spin(event, context):
        while True:
            pass

    def dynamodb(event, context):
        import boto3
        client = boto3.client("dynamodb")
        return client.list_tables()["TableNames"]
    """
)


class ServerProcess:
    """A real `keeldb serve` on a free port of 127.0.0.1, in memory, without functions."""

    def __init__(self, log_path: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "keeldb",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--in-memory",
            "--no-functions",
        ]
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS_MAX
        line = b""
        self.port = 0
        while time.monotonic() < deadline and self.process.poll() is None:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line += os.read(self.process.stdout.fileno(), 4096)
                match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                    return
        self.stop()
        raise AssertionError(f"keeldb serve did not start: {line!r}\n{log_path.read_text()}")

    def client(self) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def assert_serving(self) -> None:
        assert self.process.poll() is None, "the database process died"
        client = self.client()
        name = f"alive{time.monotonic_ns()}"
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.put_item(TableName=name, Item={"pk": {"S": "a"}})
        assert client.get_item(TableName=name, Key={"pk": {"S": "a"}})["Item"] == {"pk": {"S": "a"}}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(START_SECONDS_MAX)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("db") / "server.log")
    yield server
    server.stop()


class Watchdog:
    """Reads one item from the database every WATCH_PERIOD_SECONDS, from its own thread, for
    as long as the module's sandboxes misbehave; every failure is kept."""

    def __init__(self, database: ServerProcess) -> None:
        self.client = database.client()
        self.client.meta.config.retries = {"max_attempts": 1}
        self.client.create_table(
            TableName="watched",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.client.put_item(TableName="watched", Item={"pk": {"S": "here"}})
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_PERIOD_SECONDS):
            try:
                item = self.client.get_item(TableName="watched", Key={"pk": {"S": "here"}})
                assert item["Item"] == {"pk": {"S": "here"}}
                self.answers += 1
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                self.failures.append(repr(e))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(START_SECONDS_MAX)


@pytest.fixture(scope="module")
def watchdog(database: ServerProcess) -> Iterator[Watchdog]:
    watching = Watchdog(database)
    yield watching
    watching.stop()


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("code")
    (directory / "escape.py").write_text(HANDLERS)
    return directory


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory, database: ServerProcess, watchdog: Watchdog
) -> Iterator[ThreadedPool]:
    with ThreadedPool(
        tmp_path_factory.mktemp("sandboxes"),
        endpoint_port=database.port,
        warm_instances=2,
        pids_max=PIDS_MAX,
    ) as running:
        yield running


def spec_for(code_dir: Path, handler: str, **changes: Any) -> FunctionSpec:
    environment = {
        "AWS_ENDPOINT_URL_DYNAMODB": changes.pop("endpoint", "http://127.0.0.1:1"),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    options: dict[str, Any] = {"memory_mb": 128, "timeout_seconds": 10.0, **changes}
    return FunctionSpec(
        name=handler.replace(".", "-"),
        code_dir=code_dir,
        code_sha256="0" * 64,
        handler=f"escape.{handler}",
        runtime="python3.11",
        environment=environment,
        **options,
    )


def run(
    pool: ThreadedPool,
    code_dir: Path,
    handler: str,
    event: dict[str, Any] | None = None,
    **changes: Any,
) -> Any:
    result = pool.invoke(spec_for(code_dir, handler, **changes), json.dumps(event or {}).encode())
    assert result.function_error is None, result.payload
    return json.loads(result.payload)


def require_any(pool: ThreadedPool, *layers: str) -> None:
    active = pool.isolation_layers()
    if not any(active.get(layer) for layer in layers):
        pytest.skip(f"this host lacks every one of the isolation layers {', '.join(layers)}")


def require(pool: ThreadedPool, *layers: str) -> None:
    active = pool.isolation_layers()
    missing = [layer for layer in layers if not active.get(layer)]
    if missing:
        pytest.skip(f"this host lacks the isolation layer(s) {', '.join(missing)}")


def test_reading_a_host_file_fails(pool: ThreadedPool, code_dir: Path) -> None:
    require_any(pool, "pivot_root", "landlock_fs")
    assert Path("/etc/hostname").exists() or Path("/etc/passwd").exists()
    for path in ("/etc/hostname", "/etc/passwd", "/proc/1/environ", "/proc/net/tcp"):
        outcome = run(pool, code_dir, "read_file", {"path": path})
        assert outcome["ok"] is False, path


def test_reading_the_database_data_directory_fails(
    pool: ThreadedPool, code_dir: Path, tmp_path: Path
) -> None:
    require_any(pool, "pivot_root", "landlock_fs")
    data_dir = tmp_path / "keeldb-data"
    data_dir.mkdir()
    (data_dir / "data.mdb").write_bytes(b"secret items")
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "data.mdb", 0o644)
    outcome = run(pool, code_dir, "read_file", {"path": str(data_dir / "data.mdb")})
    assert outcome["ok"] is False
    assert outcome["error"] in ("FileNotFoundError", "PermissionError")


def test_listing_the_sandbox_root_shows_nothing_of_the_host(
    pool: ThreadedPool, code_dir: Path
) -> None:
    require(pool, "landlock_fs")
    outcome = run(pool, code_dir, "list_dir", {"path": "/"})
    assert outcome["ok"] is False
    assert outcome["error"] == "PermissionError"


def test_the_handler_can_read_its_own_code_but_not_write_it(
    pool: ThreadedPool, code_dir: Path
) -> None:
    require(pool, "pivot_root")
    readable = run(pool, code_dir, "read_file", {"path": "/var/task/escape.py"})
    assert readable["ok"] is True
    for path in ("/var/task/escape.py", "/var/task/new.py", f"{code_dir}/escape.py"):
        outcome = run(pool, code_dir, "write_file", {"path": path})
        assert outcome["ok"] is False, path
    assert (code_dir / "escape.py").read_text() == HANDLERS
    assert not (code_dir / "new.py").exists()


def test_writing_tmp_and_dev_null_works(pool: ThreadedPool, code_dir: Path) -> None:
    for path in ("/tmp/scratch", "/dev/null"):
        outcome = run(pool, code_dir, "write_file", {"path": path})
        assert outcome == {"ok": True, "value": 1}, path


def test_tcp_to_a_port_other_than_the_database_fails(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "tcp_endpoint_only")
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        probe = socket.create_connection(("127.0.0.1", port), timeout=5)  # reachable from here
        probe.close()
        outcome = run(pool, code_dir, "tcp_connect", {"port": port})
        assert outcome["ok"] is False
        assert outcome["error"] == "PermissionError"
    finally:
        listener.close()


def test_tcp_to_the_database_port_works_and_boto3_reaches_it(
    pool: ThreadedPool, code_dir: Path, database: ServerProcess
) -> None:
    outcome = run(pool, code_dir, "tcp_connect", {"port": database.port})
    assert outcome == {"ok": True, "value": True}
    database.client().create_table(
        TableName="seen_from_sandbox",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # By name too: the sandbox's own /etc/hosts resolves localhost.
    tables = run(pool, code_dir, "dynamodb", endpoint=f"http://localhost:{database.port}")
    assert "seen_from_sandbox" in tables


def test_only_localhost_resolves(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "pivot_root")
    localhost = run(pool, code_dir, "resolve", {"host": "localhost"})
    assert localhost["ok"] is True
    assert "127.0.0.1" in localhost["value"]
    assert run(pool, code_dir, "resolve", {"host": "example.com"})["ok"] is False


def test_udp_sockets_cannot_be_opened(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "seccomp")
    outcome = run(pool, code_dir, "udp_socket")
    assert outcome == {"ok": False, "error": "PermissionError", "errno": 1}


def test_signalling_an_outside_process_fails(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "pid_namespace")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (os.getpid(), sleeper.pid):
            outcome = run(pool, code_dir, "kill", {"pid": pid, "signal": signal.SIGKILL})
            assert outcome["ok"] is False, pid
        time.sleep(0.1)
        assert sleeper.poll() is None, "the sleeping child was killed from the sandbox"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_sandbox_sees_only_its_own_processes(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "pid_namespace", "unprivileged_user", "uts_namespace")
    seen = run(pool, code_dir, "who", {"pid": os.getpid()})
    assert seen["pid"] == 1
    assert seen["parent_visible"]["error"] == "ProcessLookupError"
    # /proc is mounted for the instance's PID namespace, but Landlock hides all of it.
    assert seen["proc"]["ok"] is False or seen["proc"]["value"] == ["1"]
    assert seen["uid"] != 0
    assert seen["gid"] != 0
    assert seen["hostname"] != socket.gethostname()


def test_ptrace_fails(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "seccomp")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (1, sleeper.pid):
            outcome = run(pool, code_dir, "ptrace", {"pid": pid})
            assert outcome["ok"] is False, pid
            assert outcome["errno"] == 1  # EPERM from the seccomp filter
    finally:
        sleeper.kill()
        sleeper.wait()


def test_mount_and_unshare_fail(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "seccomp")
    assert run(pool, code_dir, "mount") == {"ok": False, "error": "PermissionError", "errno": 1}
    assert run(pool, code_dir, "unshare") == {"ok": False, "error": "PermissionError", "errno": 1}


def test_setuid_root_fails(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "unprivileged_user")
    assert run(pool, code_dir, "setuid_root") == {
        "ok": False,
        "error": "PermissionError",
        "errno": 1,
    }


def test_exec_of_a_shell_fails(pool: ThreadedPool, code_dir: Path) -> None:
    require(pool, "seccomp")
    assert run(pool, code_dir, "exec_shell")["ok"] is False
    assert run(pool, code_dir, "subprocess_shell")["ok"] is False


def test_a_memory_hog_is_killed_at_its_limit(
    pool: ThreadedPool, code_dir: Path, database: ServerProcess
) -> None:
    require(pool, "cgroup_memory")
    spec = spec_for(code_dir, "memory_hog", memory_mb=HOG_MEMORY_MB)
    started = time.monotonic()
    result = pool.invoke(spec, b"{}")
    assert result.function_error == "Unhandled"
    payload = json.loads(result.payload)
    assert payload["errorType"] == "Runtime.OutOfMemory"
    assert payload["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert time.monotonic() - started < 10.0  # killed at the limit, not at the timeout
    assert f"Memory Size: {HOG_MEMORY_MB} MB" in result.log_tail
    database.assert_serving()


def test_a_fork_bomb_stops_at_pids_max(
    pool: ThreadedPool, code_dir: Path, database: ServerProcess
) -> None:
    require(pool, "cgroup_pids")
    outcome = run(pool, code_dir, "fork_bomb")
    assert 0 < outcome["born"] < PIDS_MAX
    again = run(pool, code_dir, "fork_bomb")  # the same instance: its children still sleep
    assert again["born"] == 0
    database.assert_serving()


def test_an_infinite_loop_is_killed_at_its_timeout(
    pool: ThreadedPool, code_dir: Path, database: ServerProcess
) -> None:
    spec = spec_for(code_dir, "spin", timeout_seconds=1.0)
    started = time.monotonic()
    result = pool.invoke(spec, b"{}")
    elapsed = time.monotonic() - started
    assert result.function_error == "Unhandled"
    payload = json.loads(result.payload)
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert 1.0 <= elapsed < 10.0
    deadline = time.monotonic() + 10.0
    while pool.instances(spec.name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.instances(spec.name) == 0  # the spinning instance is gone
    database.assert_serving()


def test_the_database_kept_serving_throughout(database: ServerProcess, watchdog: Watchdog) -> None:
    database.assert_serving()
    assert watchdog.failures == []
    assert watchdog.answers >= 5  # it really was asking, all along the tests above


def test_the_checks_catch_a_sandbox_without_seccomp_and_landlock(
    tmp_path: Path, code_dir: Path, pool: ThreadedPool
) -> None:
    require(pool, "seccomp", "tcp_endpoint_only")
    listener = socket.create_server(("127.0.0.1", 0))
    weakened = ThreadedPool(
        tmp_path / "weak",
        endpoint_port=1,
        warm_instances=0,
        disabled_layers=frozenset({"seccomp", "landlock"}),
    )
    try:
        with weakened:
            layers = weakened.isolation_layers()
            assert layers["seccomp"] is False
            assert layers["landlock_net"] is False
            port = listener.getsockname()[1]
            assert run(weakened, code_dir, "tcp_connect", {"port": port}) == {
                "ok": True,
                "value": True,
            }
            assert run(weakened, code_dir, "udp_socket") == {"ok": True, "value": None}
            assert run(weakened, code_dir, "unshare")["ok"] is True
    finally:
        listener.close()


def test_without_namespaces_landlock_and_seccomp_still_confine_the_handler(
    tmp_path: Path, code_dir: Path, pool: ThreadedPool
) -> None:
    require(pool, "landlock_fs", "seccomp", "tcp_endpoint_only")
    listener = socket.create_server(("127.0.0.1", 0))
    degraded = ThreadedPool(
        tmp_path / "flat",
        endpoint_port=1,
        warm_instances=0,
        disabled_layers=frozenset({"namespaces"}),
    )
    try:
        with degraded:
            layers = degraded.isolation_layers()
            assert layers["pivot_root"] is False
            assert layers["pid_namespace"] is False
            assert layers["landlock_fs"] is True
            assert run(degraded, code_dir, "read_file", {"path": "/etc/hostname"})["ok"] is False
            code = str(code_dir / "escape.py")
            assert run(degraded, code_dir, "read_file", {"path": code})["ok"] is True
            assert run(degraded, code_dir, "write_file", {"path": code})["ok"] is False
            assert run(degraded, code_dir, "write_tmp") == {"ok": True, "value": 1}
            port = listener.getsockname()[1]
            assert run(degraded, code_dir, "tcp_connect", {"port": port})["ok"] is False
            assert run(degraded, code_dir, "exec_shell")["ok"] is False
            spin = degraded.invoke(spec_for(code_dir, "spin", timeout_seconds=1.0), b"{}")
            assert json.loads(spin.payload)["errorType"] == "Sandbox.Timedout"
    finally:
        listener.close()
