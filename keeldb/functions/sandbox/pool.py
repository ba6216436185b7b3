"""The sandbox pool: the database-side owner of the zygote and of every function instance.

Owns: starting the zygote, keeping `warm_instances` pre-forked and prepared instances ready,
assigning one to a function on a cold start, routing each invocation to an idle instance of
the same function (configuration and code) or a new one, enforcing the timeout by killing the
instance, freezing idle instances and reaping them after `idle_reap_seconds` (scale to zero),
and each instance's control groups. It reports a handler's errors, timeouts and crashes as
Lambda does: as an `InvokeResult` with `function_error` set, never as an exception.

It must never run function code in the database process, never hand an instance to a second
function, and never leave a process or a control group behind after `close`.

A synchronous invocation runs its handler at most once. Each zygote is a generation: when it
exits, its generation ends, and no instance it forked is handed out again or kept idle after
its current invocation (a zygote's exit is read from its socket before every hand-out, so an
exit the event loop has not yet turned to still counts). An instance that dies before it
announces that its handler starts (its "started" frame) has run nothing of the invocation:
the invocation then goes to a fresh instance. One that dies after it is a crash of that
invocation (Runtime.ExitError), never retried, since the handler's side effects may have
happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import stat
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from keeldb.functions.sandbox import confine, frames
from keeldb.functions.sandbox.cgroups import InstanceGroups, PoolGroups

log = logging.getLogger("keeldb.functions.sandbox")

PIDS_MAX = 64  # processes and threads in one instance (a fork bomb stops here)
CPUS_PER_INSTANCE = 1.0  # cpu.max: one core, so no instance starves the database
# The memory an instance may use before it is assigned (the runtime itself, no handler yet).
WARM_MEMORY_BYTES = 128 * 1024 * 1024
# A zygote fork plus namespace and root set-up takes milliseconds; a loaded host, far longer.
SPAWN_SECONDS_MAX = 15.0
ZYGOTE_START_SECONDS_MAX = 60.0
CLOSE_SECONDS_MAX = 10.0
# An instance that dies during its set-up is replaced: once, plus once per warm instance, since
# a dead zygote takes every warm instance it forked with it.
COLD_START_ATTEMPTS = 2
ZYGOTE_RESTART_PAUSE_SECONDS = 1.0  # between attempts to restart a zygote that died
# After this much CPU time an instance is retired, well before its RLIMIT_CPU hard limit.
CPU_SECONDS_RETIRE = confine.CPU_SECONDS_LIFETIME_MAX // 2
UID_BASE = 1_500_000  # each instance runs as its own uid: UID_BASE + id % UID_SPAN
UID_SPAN = 100_000
ACCOUNT_ID = "000000000000"
JANITOR_PERIOD_SECONDS_MAX = 1.0
PACKET_BYTES_MAX = 64 * 1024


class SandboxTimeout(Exception):
    """Starting an instance took longer than SPAWN_SECONDS_MAX (a handler's timeout is not
    raised: it comes back as an InvokeResult with Lambda's Sandbox.Timedout payload)."""


class SandboxCrashed(Exception):
    """The sandbox machinery itself failed (the zygote is gone, or the pool is closed).

    A handler's instance dying is not raised: it comes back as an InvokeResult with Lambda's
    Runtime.ExitError (or Runtime.OutOfMemory) payload.
    """


class SandboxBusy(Exception):
    """Every one of `instances_max` instances is busy: the caller should answer 429."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    code_dir: Path  # the unzipped code; the pool makes it world-readable, instances read-only
    code_sha256: str
    handler: str  # "module.function", as Lambda's Handler
    runtime: str  # "python3.11" etc: run with the host's interpreter
    memory_mb: int
    timeout_seconds: float
    environment: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> tuple[Any, ...]:
        """Instances are shared only between invocations with an identical configuration."""
        return (
            self.name,
            str(self.code_dir),
            self.code_sha256,
            self.handler,
            self.runtime,
            self.memory_mb,
            self.timeout_seconds,
            tuple(sorted(self.environment.items())),
        )


@dataclass
class InvokeResult:
    payload: bytes
    function_error: str | None
    log_tail: str
    duration_ms: float
    cold_start: bool
    init_duration_ms: float | None = None
    request_id: str = ""
    # On a cold start, the milliseconds of each confinement step in the instance.
    init_steps_ms: dict[str, float] | None = None
    # CPU time (user + system, the handler's children included) the invocation used.
    cpu_ms: float | None = None


class _Instance:
    def __init__(self, instance_id: int, sock: socket.socket, groups: InstanceGroups | None):
        self.id = instance_id
        self.sock = sock
        self.groups = groups
        self.pid = 0
        self.pidfd = -1
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.layers: dict[str, bool] = {}
        self.key: tuple[Any, ...] | None = None
        self.spec: FunctionSpec | None = None
        self.busy = False
        self.frozen = False
        self.idle_since = time.monotonic()
        self.cpu_seconds = 0.0
        self.dead = False
        self.holds_slot = False  # counted in the pool's assigned instances
        self.forgotten = False  # the process is reaped and the pool has let go of it
        self.generation = 0  # the zygote that forked it (SandboxPool._generation then)
        self.serving = False  # handed out to an invocation that has not ended yet

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        if self.pidfd >= 0:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        if self.groups is not None:
            with contextlib.suppress(OSError):
                self.groups.kill()


class SandboxPool:
    """Function instances in sandboxes, forked warm by a zygote; see docs/sandbox.md."""

    def __init__(
        self,
        work_dir: Path,
        *,
        endpoint_port: int,
        warm_instances: int = 2,
        idle_freeze_seconds: float = 1.0,
        idle_reap_seconds: float = 300.0,
        instances_max: int = 32,
        pids_max: int = PIDS_MAX,
        disabled_layers: frozenset[str] = frozenset(),
        eager: bool = False,
    ) -> None:
        assert warm_instances >= 0
        assert instances_max >= 1
        self.work_dir = Path(work_dir)
        self.endpoint_port = endpoint_port
        self.warm_instances = warm_instances
        self.idle_freeze_seconds = idle_freeze_seconds
        self.idle_reap_seconds = idle_reap_seconds
        self.instances_max = instances_max
        self.pids_max = pids_max
        # Only for tests that show what one layer stops, or how a host without it degrades:
        # "seccomp", "landlock", "namespaces" (no PID, mount, IPC or UTS namespace, no pivot).
        assert disabled_layers <= {"seccomp", "landlock", "namespaces"}
        self.disabled_layers = disabled_layers
        # Start the zygote in start() rather than at the first invocation.
        self.eager = eager
        self._booting: asyncio.Future[None] | None = None
        self._measured = False
        self._ids = itertools.count(1)
        self._zygote: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._hello: dict[str, Any] = {}
        self._spawning: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._instances: dict[int, _Instance] = {}
        self._warm: collections.deque[_Instance] = collections.deque()
        self._warm_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._warm_pending = 0
        self._idle: dict[tuple[Any, ...], list[_Instance]] = {}
        self._assigned = 0
        self._groups: PoolGroups | None = None
        self._controllers: set[str] = set()
        self._layers: dict[str, bool] = {}
        self._readable_code: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._leftover_groups: list[InstanceGroups] = []
        self._restarting: asyncio.Future[None] | None = None
        # Each zygote started is a generation; its exit ends it (the counter moves on).
        self._generation = 0
        self._zygote_stat = -1  # /proc/ZYGOTE/stat, to see a SIGKILL before it takes effect
        self._closed = False
        self._started = False

    # ---- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the pool; the zygote starts with the first invocation (or `ready()`), so a
        database whose functions are never invoked pays nothing for them."""
        assert not self._started
        self._started = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "root").mkdir(exist_ok=True)
        (self.work_dir / "tmp").mkdir(exist_ok=True)
        (self.work_dir / "probe").mkdir(exist_ok=True)
        self._groups = PoolGroups(f"keeldb-sandbox-{os.getpid()}-{id(self):x}")
        if os.geteuid() == 0:
            try:
                self._controllers = self._groups.prepare()
            except OSError as e:
                log.warning("control groups unavailable: %s", e)
                self._controllers = set()
        self._layers = _predicted_layers(self._controllers, self.disabled_layers)
        self._janitor = asyncio.create_task(self._janitor_loop())
        if self.eager:
            await self.ready()

    async def ready(self) -> None:
        """Start the zygote, measure the isolation layers on a probe instance and fill the
        warm pool, unless done already; raises SandboxCrashed if the zygote cannot start."""
        if self._closed or not self._started:
            raise SandboxCrashed("the sandbox pool is not running")
        if self._booting is None or (self._booting.done() and self._booting.exception()):
            self._booting = asyncio.ensure_future(self._boot())
            # Retrieved here too: a boot nobody awaits any more must not log "never retrieved".
            self._booting.add_done_callback(lambda f: f.cancelled() or f.exception())
        booting = self._booting
        try:
            await asyncio.shield(booting)
        except (OSError, TimeoutError, frames.FrameError) as e:
            raise SandboxCrashed(f"the sandbox zygote could not start: {e}") from e
        except asyncio.CancelledError:
            if booting.cancelled():  # close() stopped the start, not our caller
                raise SandboxCrashed("the sandbox pool closed while starting") from None
            raise

    async def _boot(self) -> None:
        try:
            await self._start_zygote()
            await self._probe_layers()
        except BaseException:
            if self._zygote is not None and self._zygote.returncode is None:
                self._zygote.kill()
            raise
        self._fill_warm()
        active = sorted(k for k, v in self._layers.items() if v)
        absent = sorted(k for k, v in self._layers.items() if not v)
        log.info(
            "sandbox isolation active: %s; absent: %s",
            ", ".join(active),
            ", ".join(absent) or "none",
        )

    async def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = ours
        self._generation += 1
        try:
            self._zygote = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keeldb.functions.sandbox.zygote",
                str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                env=_zygote_environment(),
            )
        finally:
            theirs.close()
        self._close_zygote_stat()
        self._zygote_stat = _open_stat(self._zygote.pid)
        try:
            ours.setblocking(False)
            loop = asyncio.get_running_loop()
            hello: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._spawning[0] = hello  # type: ignore[assignment]
            loop.add_reader(ours.fileno(), self._on_zygote_readable)
            self._hello = await asyncio.wait_for(hello, ZYGOTE_START_SECONDS_MAX)
        except BaseException:
            if self._zygote.returncode is None:
                self._zygote.kill()  # close() or the next attempt reaps it
            raise

    async def _restart_zygote(self) -> None:
        """A zygote died (killed, out of memory): start another, so functions keep running."""
        if self._zygote is not None:
            await self._zygote.wait()
        while not self._closed:
            try:
                await self._start_zygote()
            except Exception as e:  # noqa: BLE001 - logged; retried after a pause
                log.error("the sandbox zygote could not be restarted: %s", e)
                await asyncio.sleep(ZYGOTE_RESTART_PAUSE_SECONDS)
                continue
            log.warning("the sandbox zygote was restarted")
            self._fill_warm()
            return

    async def close(self) -> None:
        """Kill every instance and the zygote, and remove the control groups."""
        if self._closed:
            return
        self._closed = True
        for starting in (self._booting, self._restarting):
            if starting is not None and not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await starting
        if self._janitor is not None:
            self._janitor.cancel()
        for task in list(self._tasks):
            task.cancel()
        for instance in list(self._instances.values()):
            self._kill(instance)
        for waiter in self._warm_waiters:
            if not waiter.done():
                waiter.set_exception(SandboxCrashed("the sandbox pool is closed"))
        if self._control is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._control.close()  # the zygote kills what is left and exits
        if self._zygote is not None and self._zygote.returncode is None:
            try:
                await asyncio.wait_for(self._zygote.wait(), CLOSE_SECONDS_MAX)
            except TimeoutError:
                self._zygote.kill()
                await self._zygote.wait()
        self._zygote_gone()
        if self._groups is not None:
            deadline = time.monotonic() + CLOSE_SECONDS_MAX
            while True:
                self._groups.remove()
                if all(
                    not h.base(self._groups.pool_name).exists() for h in self._groups.hierarchies
                ):
                    break
                if time.monotonic() > deadline:
                    log.warning("control groups of the sandbox pool could not be removed")
                    break
                await asyncio.sleep(0.01)
        shutil.rmtree(self.work_dir / "tmp", ignore_errors=True)

    # ---- public queries ---------------------------------------------------------------

    def isolation_layers(self) -> dict[str, bool]:
        """Which isolation layers are active on this host: predicted from the host's
        capabilities until the zygote has started, then measured on a probe instance."""
        return dict(self._layers)

    def layers_measured(self) -> bool:
        return self._measured

    def instances(self, name: str) -> int:
        """How many instances (busy or idle) run the function `name`."""
        return sum(
            1
            for i in self._instances.values()
            if i.spec is not None and i.spec.name == name and not i.dead
        )

    # ---- invocation -------------------------------------------------------------------

    async def invoke(
        self,
        spec: FunctionSpec,
        payload: bytes,
        *,
        request_id: str | None = None,
        function_arn: str | None = None,
    ) -> InvokeResult:
        """Run the handler on the payload in an instance of the function; see the module doc."""
        if self._closed:
            raise SandboxCrashed("the sandbox pool is closed")
        if self._booting is None or not self._booting.done() or self._booting.exception():
            await self.ready()
        request_id = request_id or str(uuid.uuid4())
        if function_arn is None:
            region = spec.environment.get("AWS_REGION", "us-east-1")
            function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{spec.name}"
        instance = self._take_idle(spec.key())
        if instance is None:
            return await self._cold_start(spec, payload, request_id, function_arn)
        request = _invoke_frame(request_id, function_arn, payload)
        result = await self._run(
            instance, spec, request, request_id, False, None, "", retryable=True
        )
        if result is not None:
            return result
        # The idle instance died before its handler started (its zygote exited meanwhile):
        # nothing of the invocation ran, so a fresh instance takes it.
        log.warning("an idle sandbox instance died before its handler started; starting another")
        return await self._cold_start(spec, payload, request_id, function_arn)

    async def _cold_start(
        self, spec: FunctionSpec, payload: bytes, request_id: str, function_arn: str
    ) -> InvokeResult:
        """Assign a warm instance to the function and invoke it. An instance that dies before
        its handler starts (before it reports its set-up, or between that and its "started"
        frame: its zygote killed, say) is replaced, as Lambda retries a failed init within the
        same invocation; the handler itself has not run then."""
        request = _invoke_frame(request_id, function_arn, payload)
        attempts = COLD_START_ATTEMPTS + self.warm_instances
        for attempt in range(attempts):
            self._make_room()
            self._assigned += 1  # a slot for this request's instance, until it dies
            try:
                instance = await self._take_warm()
            except BaseException:
                self._assigned -= 1
                raise
            instance.holds_slot = True
            try:
                # The invocation rides with the assignment: one round trip less.
                init = await self._assign(instance, spec, request)
                init_ms = init.get("init_ms", 0.0)
                init_log = init.get("log", "")
                if init.get("died") and attempt + 1 < attempts:
                    log.warning("a sandbox instance died during its set-up; starting another")
                    continue
                if init["error"] is not None:
                    self._kill(instance)
                    self._settle(instance)
                    body = json.dumps(init["error"]).encode()
                    return self._result(
                        spec, request_id, body, "Unhandled", init_log, 0.0, True, init_ms, None
                    )
                result = await self._run(
                    instance,
                    spec,
                    None,
                    request_id,
                    True,
                    init_ms,
                    init_log,
                    retryable=attempt + 1 < attempts,
                )
                if result is None:
                    log.warning("a sandbox instance died before its handler started; another")
                    continue
                result.init_steps_ms = init.get("steps_ms")
                return result
            finally:
                self._fill_warm()
        raise AssertionError("unreachable: the last attempt returns")

    def _handing_out(self, instance: _Instance) -> None:
        """Called as `instance` is about to be handed to an invocation, before the pool checks
        that its zygote still runs. A seam for tests (a zygote killed right here); nothing."""
        del instance

    def _notice_zygote_exit(self) -> None:
        """End the zygote's generation now if it exits or was sent its death (SIGKILL, from
        the OOM killer or anyone), rather than when the event loop next turns to its socket
        (an invocation already queued on the loop runs first) or when the kernel has torn
        down its memory, milliseconds or more on a loaded host. Its instances die as it ends
        (PR_SET_PDEATHSIG): one handed out meanwhile could die inside its handler."""
        if self._control is None or self._control.fileno() < 0:
            return
        self._on_zygote_readable()
        if self._control.fileno() >= 0 and _process_ending(self._zygote_stat):
            self._zygote_gone()

    def _usable(self, instance: _Instance) -> bool:
        """Whether an instance may be handed out: alive, and forked by the running zygote."""
        self._handing_out(instance)
        self._notice_zygote_exit()
        return not instance.dead and instance.generation == self._generation

    def _take_idle(self, key: tuple[Any, ...]) -> _Instance | None:
        idle = self._idle.get(key)
        while idle:
            instance = idle.pop()  # the most recently used: its caches are warmest
            if not self._usable(instance):
                self._kill(instance)
                if instance.generation != self._generation:
                    self._forget(instance)
                continue
            if instance.frozen:
                try:
                    assert instance.groups is not None
                    instance.groups.freeze(False)
                except OSError:
                    self._kill(instance)
                    continue
                instance.frozen = False
            instance.busy = True
            instance.serving = True
            return instance
        if not idle:
            self._idle.pop(key, None)
        return None

    def _make_room(self) -> None:
        if self._assigned < self.instances_max:
            return
        # Evict the idle instance unused the longest, of any function.
        oldest: _Instance | None = None
        for idle in self._idle.values():
            for instance in idle:
                if not instance.dead and (
                    oldest is None or instance.idle_since < oldest.idle_since
                ):
                    oldest = instance
        if oldest is None:
            raise SandboxBusy(f"all {self.instances_max} sandbox instances are busy")
        self._retire(oldest)

    async def _run(
        self,
        instance: _Instance,
        spec: FunctionSpec,
        request: dict[str, Any] | None,
        request_id: str,
        cold: bool,
        init_ms: float | None,
        init_log: str,
        *,
        retryable: bool = False,
    ) -> InvokeResult | None:
        """Send the invocation (unless it went with the assignment) and await its result.
        None (only if `retryable`): the instance died before its handler started."""
        try:
            return await self._exchange(
                instance, spec, request, request_id, cold, init_ms, init_log, retryable
            )
        except asyncio.CancelledError:
            # The caller gave up: the result would arrive later and be read as the next one's.
            self._kill(instance)
            raise
        finally:
            self._settle(instance)

    def _settle(self, instance: _Instance) -> None:
        """After an invocation: a dead instance's socket is closed once its process is gone,
        and an instance whose zygote exited meanwhile is not kept."""
        instance.serving = False
        if instance.generation != self._generation and not instance.forgotten:
            # No zygote reports its exit any more: the pool lets go of it itself.
            self._kill(instance)
            instance.busy = False
            self._forget(instance)
        if instance.dead:
            instance.busy = False
            if instance.forgotten:
                instance.sock.close()

    async def _exchange(
        self,
        instance: _Instance,
        spec: FunctionSpec,
        request: dict[str, Any] | None,
        request_id: str,
        cold: bool,
        init_ms: float | None,
        init_log: str,
        retryable: bool,
    ) -> InvokeResult | None:
        started = time.perf_counter()
        try:
            if request is not None:
                try:
                    await frames.asend(instance.sock, request)
                except OSError:
                    if not retryable:
                        raise
                    self._kill(instance)  # gone before it could read the invocation
                    return None
            async with asyncio.timeout(spec.timeout_seconds):
                try:
                    reply = await frames.arecv(instance.sock)
                except frames.PeerClosed as e:
                    if retryable and e.between_frames:
                        # Gone before it said its handler starts: nothing of this invocation
                        # ran, and the caller may give it to another instance.
                        self._kill(instance)
                        return None
                    raise
                if reply.get("op") == "started":
                    reply = await frames.arecv(instance.sock)
            reply = _checked_result(reply)
        except TimeoutError:
            duration_ms = (time.perf_counter() - started) * 1000
            self._kill(instance)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            text = f"Task timed out after {spec.timeout_seconds:.2f} seconds"
            log_text = init_log + f"{stamp}Z {request_id} {text}\n"
            body = json.dumps(
                {
                    "errorMessage": f"RequestId: {request_id} Error: {text}",
                    "errorType": "Sandbox.Timedout",
                }
            ).encode()
            return self._result(
                spec,
                request_id,
                body,
                "Unhandled",
                log_text,
                duration_ms,
                cold,
                init_ms,
                instance,
                status="timeout",
            )
        except (frames.FrameError, OSError):
            duration_ms = (time.perf_counter() - started) * 1000
            return await self._crashed(
                instance, spec, request_id, duration_ms, cold, init_ms, init_log
            )
        duration_ms = (time.perf_counter() - started) * 1000
        instance.cpu_seconds = reply.get("cpu_seconds", 0.0)
        function_error = "Unhandled" if reply["error"] else None
        result = self._result(
            spec,
            request_id,
            reply["payload"],
            function_error,
            init_log + reply["log"],
            duration_ms,
            cold,
            init_ms,
            instance,
            max_rss_kb=reply.get("max_rss_kb"),
        )
        result.cpu_ms = reply.get("cpu_ms")
        body = reply["payload"]
        if reply["error"] and b'"Runtime.ExitError"' in body[:200]:
            self._kill(instance)  # sys.exit() in a handler ends its instance, as in Lambda
        else:
            self._release(instance)
        return result

    async def _crashed(
        self,
        instance: _Instance,
        spec: FunctionSpec,
        request_id: str,
        duration_ms: float,
        cold: bool,
        init_ms: float | None,
        init_log: str,
    ) -> InvokeResult:
        # Read the groups before the process is reaped: then they are removed.
        oom = instance.groups is not None and instance.groups.oom_kills() > 0
        self._kill(instance)
        status: int | None = None
        with contextlib.suppress(TimeoutError, SandboxCrashed):
            status = await asyncio.wait_for(asyncio.shield(instance.exited), CLOSE_SECONDS_MAX)
        reason = "signal: killed"
        if status is not None:
            if os.WIFSIGNALED(status):
                number = signal.Signals(os.WTERMSIG(status))
                reason = "signal: " + _SIGNAL_WORDS.get(number, number.name)
            elif os.WIFEXITED(status):
                reason = f"exit status {os.WEXITSTATUS(status)}"
        error_type = "Runtime.OutOfMemory" if oom else "Runtime.ExitError"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
        body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
        log_text = init_log + message + "\n" + error_type + "\n"
        return self._result(
            spec,
            request_id,
            body,
            "Unhandled",
            log_text,
            duration_ms,
            cold,
            init_ms,
            instance,
            status="error",
        )

    def _result(
        self,
        spec: FunctionSpec,
        request_id: str,
        body: bytes,
        function_error: str | None,
        text: str,
        duration_ms: float,
        cold: bool,
        init_ms: float | None,
        instance: _Instance | None,
        *,
        status: str | None = None,
        max_rss_kb: int | None = None,
    ) -> InvokeResult:
        # Lambda reports the whole runtime's memory: the largest of the instance's peak
        # resident set (pages shared with the zygote included) and its group's own peak.
        used_bytes = (max_rss_kb or 0) * 1024
        if instance is not None and instance.groups is not None:
            used_bytes = max(used_bytes, instance.groups.memory_peak_bytes() or 0)
        used_mb = math.ceil((used_bytes or 0) / (1024 * 1024))
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\t"
            f"Memory Size: {spec.memory_mb} MB\tMax Memory Used: {used_mb} MB\t"
        )
        if init_ms is not None:
            report += f"Init Duration: {init_ms:.2f} ms\t"
        if status is not None:
            report += f"Status: {status}"
        tail = (
            f"START RequestId: {request_id} Version: $LATEST\n{text}"
            f"END RequestId: {request_id}\n{report}\n"
        )
        return InvokeResult(body, function_error, tail, duration_ms, cold, init_ms, request_id)

    def _release(self, instance: _Instance) -> None:
        instance.busy = False
        instance.idle_since = time.monotonic()
        if self._closed or instance.dead or instance.generation != self._generation:
            return  # _settle lets go of an instance whose zygote exited
        if instance.cpu_seconds > CPU_SECONDS_RETIRE:
            self._retire(instance)
            return
        assert instance.key is not None
        self._idle.setdefault(instance.key, []).append(instance)

    def _kill(self, instance: _Instance) -> None:
        self._free_slot(instance)
        instance.kill()

    def _free_slot(self, instance: _Instance) -> None:
        if instance.holds_slot:
            instance.holds_slot = False
            self._assigned -= 1

    def _retire(self, instance: _Instance) -> None:
        if instance.key is not None:
            idle = self._idle.get(instance.key, [])
            if instance in idle:
                idle.remove(instance)
            if not idle:
                self._idle.pop(instance.key, None)
        self._kill(instance)

    # ---- warm pool and spawning -------------------------------------------------------

    def _fill_warm(self) -> None:
        if self._closed:
            return
        while len(self._warm) + self._warm_pending < self.warm_instances:
            self._warm_pending += 1
            self._background(self._spawn_warm())

    def _background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn_warm(self) -> None:
        try:
            instance = await self._spawn()
        except Exception as e:  # noqa: BLE001 - logged; the next request spawns its own
            log.warning("a warm sandbox instance failed to start: %s", e)
            self._warm_pending -= 1
            self._wake_warm_waiter(e)
            return
        self._warm_pending -= 1
        self._warm.append(instance)
        self._wake_warm_waiter(None)

    def _wake_warm_waiter(self, error: Exception | None) -> None:
        # On a failed warm spawn too: the woken request then starts an instance of its own
        # (and fails only if that fails), rather than inheriting another spawn's failure.
        del error
        while self._warm_waiters:
            waiter = self._warm_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _take_warm(self) -> _Instance:
        while True:
            while self._warm:
                instance = self._warm.popleft()
                if self._usable(instance):
                    # The refill waits for this cold start to finish: a fork and a root
                    # set-up running beside it would compete for the CPU and the mount lock.
                    instance.serving = True
                    return instance
                self._kill(instance)
                if instance.generation != self._generation:
                    self._forget(instance)
            if self.warm_instances == 0 or len(self._warm_waiters) >= self._warm_pending:
                # No warm instance is coming for this request: start one for it alone.
                instance = await self._spawn()
                instance.serving = True
                return instance
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._warm_waiters.append(waiter)
            await waiter

    async def _spawn(self) -> _Instance:
        if self._restarting is not None and not self._restarting.done():
            await asyncio.wait_for(asyncio.shield(self._restarting), ZYGOTE_START_SECONDS_MAX)
        if self._closed or self._control is None:
            raise SandboxCrashed("the sandbox pool is closed")
        instance_id = next(self._ids)
        groups = None
        if self._groups is not None and self._controllers:
            groups = self._groups.instance(f"i{instance_id}")
            groups.set_pids(self.pids_max)
            groups.set_cpu(CPUS_PER_INSTANCE)
            groups.set_memory(WARM_MEMORY_BYTES)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        instance = _Instance(instance_id, ours, groups)
        instance.generation = self._generation
        self._instances[instance_id] = instance
        fallback_tmp = self.work_dir / "tmp" / f"i{instance_id}"
        plan = {
            "id": instance_id,
            "uid": UID_BASE + instance_id % UID_SPAN,
            "procs_files": groups.procs_files() if groups is not None else [],
            "root_dir": str(self.work_dir / "root"),
            "ro_paths": _python_paths(),
            "fallback_tmp_dir": str(fallback_tmp),
            "port": self.endpoint_port,
            "pids_max": self.pids_max,
            "memory_cgroup": "memory" in self._controllers,
            "landlock_abi": self._hello.get("landlock_abi", 0),
            "disabled": sorted(self.disabled_layers),
        }
        spawned: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._spawning[instance_id] = spawned
        # The handshake reads the socket: if the process dies meanwhile (with its zygote, say),
        # _forget must leave the socket open, so that the read sees the end of the stream
        # instead of waiting on a closed descriptor.
        instance.busy = True
        try:
            body = msgpack.packb({"op": "spawn", "plan": plan}, use_bin_type=True)
            socket.send_fds(self._control, [body], [theirs.fileno()])
            theirs.close()
            instance.pid, instance.pidfd = await asyncio.wait_for(spawned, SPAWN_SECONDS_MAX)
            ready = await asyncio.wait_for(frames.arecv(ours), SPAWN_SECONDS_MAX)
        except TimeoutError:
            state = _process_state(instance.pid)
            self._kill(instance)
            raise SandboxTimeout(
                f"a sandbox instance took over {SPAWN_SECONDS_MAX} s to start ({state})"
            ) from None
        except (frames.FrameError, OSError) as e:
            self._kill(instance)
            raise SandboxCrashed(f"a sandbox instance died while starting: {e}") from e
        finally:
            theirs.close()
            self._spawning.pop(instance_id, None)
            instance.busy = False
            if instance.forgotten:
                instance.sock.close()
                if instance.pidfd >= 0:
                    os.close(instance.pidfd)
                    instance.pidfd = -1
        if instance.dead:
            raise SandboxCrashed("a sandbox instance died while starting")
        assert ready["op"] == "ready"
        instance.layers = ready["layers"]
        if not instance.layers.get("pivot_root"):
            # Without a private root the instance keeps the pool's uid: the directory is its.
            fallback_tmp.mkdir(mode=0o700, exist_ok=True)
        return instance

    async def _assign(
        self, instance: _Instance, spec: FunctionSpec, then: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        instance.key = spec.key()
        instance.spec = spec
        instance.busy = True
        self._ensure_readable(spec)
        if instance.groups is not None:
            # The limit covers the runtime and the handler, as Lambda's MemorySize does.
            try:
                instance.groups.set_memory(spec.memory_mb * 1024 * 1024)
            except OSError as e:
                log.warning("memory limit of %s MB not applied: %s", spec.memory_mb, e)
        assign = {
            "op": "assign",
            "name": spec.name,
            "code_dir": str(Path(spec.code_dir).resolve()),
            "handler": spec.handler,
            "runtime": spec.runtime,
            "memory_mb": spec.memory_mb,
            "timeout_seconds": spec.timeout_seconds,
            "environment": dict(spec.environment),
        }
        try:
            data = frames.encode(assign) + (frames.encode(then) if then is not None else b"")
            await asyncio.get_running_loop().sock_sendall(instance.sock, data)
            init = _checked_init(
                await asyncio.wait_for(frames.arecv(instance.sock), max(spec.timeout_seconds, 10.0))
            )
        except asyncio.CancelledError:
            self._kill(instance)
            self._settle(instance)
            raise
        except (TimeoutError, frames.FrameError, OSError) as e:
            self._kill(instance)
            self._settle(instance)
            message = "RequestId: Error: Runtime exited during initialisation"
            return {
                "error": {"errorType": "Runtime.ExitError", "errorMessage": message},
                "log": "",
                "init_ms": 0.0,
                "died": not isinstance(e, TimeoutError),
            }
        instance.layers = init.get("layers", instance.layers)
        return init

    def _ensure_readable(self, spec: FunctionSpec) -> None:
        """Instances run as unprivileged uids: the code must be readable by others."""
        marker = (str(spec.code_dir), spec.code_sha256)
        if marker in self._readable_code:
            return
        for directory, dirs, files in os.walk(spec.code_dir):
            for name in [directory, *(os.path.join(directory, f) for f in files)]:
                mode = os.lstat(name).st_mode
                if stat.S_ISLNK(mode):
                    continue
                wanted = mode | stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
                if wanted != mode:
                    os.chmod(name, stat.S_IMODE(wanted))
            del dirs  # walked by os.walk itself
        self._readable_code.add(marker)

    async def _probe_layers(self) -> None:
        """Assign one instance to an empty function to learn which layers take effect."""
        probe = FunctionSpec(
            "keeldb-sandbox-probe",
            self.work_dir / "probe",
            "",
            "probe.handler",
            "python3.11",
            128,
            10.0,
            {},
        )
        self._assigned += 1
        try:
            instance = await self._spawn()
        except BaseException:
            self._assigned -= 1
            raise
        instance.holds_slot = True
        init = await self._assign(instance, probe)
        self._kill(instance)
        self._settle(instance)
        layers = dict(instance.layers)
        if init.get("error", {}).get("errorType") != "Runtime.ImportModuleError":
            log.warning("the sandbox probe failed: %s", init.get("error"))
        layers["cgroup_memory"] = "memory" in self._controllers
        layers["cgroup_pids"] = "pids" in self._controllers
        layers["cgroup_cpu"] = "cpu" in self._controllers
        layers["cgroup_freezer"] = "freezer" in self._controllers
        layers["cgroup_joined"] = bool(layers.get("cgroup_joined"))
        layers["pid_namespace"] = bool(self._hello.get("pid_namespace")) and (
            "namespaces" not in self.disabled_layers
        )
        # Instances share the host's network namespace: Landlock limits TCP to the endpoint's
        # port (see docs/sandbox.md) and seccomp allows no UDP, raw or packet socket.
        layers["net_namespace"] = False
        layers["tcp_endpoint_only"] = bool(layers.get("landlock_net"))
        layers.setdefault("seccomp", False)
        self._layers = layers
        self._measured = True

    # ---- zygote messages and the janitor -----------------------------------------------

    def _on_zygote_readable(self) -> None:
        assert self._control is not None
        while True:
            try:
                body, fds, _, _ = socket.recv_fds(self._control, PACKET_BYTES_MAX, 1)
            except BlockingIOError:
                return
            except OSError:
                body, fds = b"", []
            if not body:
                self._zygote_gone()
                return
            message = msgpack.unpackb(body, raw=False)
            op = message["op"]
            if op == "hello":
                hello = self._spawning.pop(0, None)
                if hello is not None and not hello.done():
                    hello.set_result(message)
            elif op == "spawned":
                future = self._spawning.get(message["id"])
                if future is not None and not future.done():
                    future.set_result((message["pid"], fds[0]))
                else:
                    for fd in fds:
                        os.close(fd)
            elif op == "exited":
                instance = self._instances.get(message["id"])
                if instance is not None:
                    self._free_slot(instance)
                    instance.dead = True
                    if not instance.exited.done():
                        instance.exited.set_result(message["status"])
                    self._forget(instance)

    def _zygote_gone(self) -> None:
        """The zygote exited: its instances die with it (PR_SET_PDEATHSIG); start another."""
        if self._control is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._control.close()
        error = SandboxCrashed("the sandbox zygote exited")
        for future in self._spawning.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: the spawner may already have given up
        self._spawning.clear()
        self._generation += 1  # the zygote's generation has ended
        self._close_zygote_stat()
        for instance in list(self._instances.values()):
            if not instance.exited.done():
                instance.exited.set_exception(error)
                instance.exited.exception()  # retrieved: nobody may wait for it
            if instance.serving and not instance.dead and not self._closed:
                # Mid-invocation: it dies with its zygote (PR_SET_PDEATHSIG) unless the signal
                # missed it; then it finishes this invocation and _settle lets go of it. Killing
                # it here would fail an invocation that may complete.
                continue
            # They should die with their parent (PR_SET_PDEATHSIG); kill them all the same,
            # since a frozen process under a v1 freezer would not die until thawed.
            self._kill(instance)
            self._forget(instance)
        if not self._closed and (self._restarting is None or self._restarting.done()):
            log.error("the sandbox zygote exited; starting another")
            self._restarting = asyncio.ensure_future(self._restart_zygote())

    def _close_zygote_stat(self) -> None:
        if self._zygote_stat >= 0:
            os.close(self._zygote_stat)
            self._zygote_stat = -1

    def _forget(self, instance: _Instance) -> None:
        """The process is gone: release its sockets and groups."""
        if instance.forgotten:
            return
        self._instances.pop(instance.id, None)
        self._free_slot(instance)
        if instance.spec is not None:
            instance.spec = None
            self._retire(instance)
        with contextlib.suppress(ValueError):
            self._warm.remove(instance)
        instance.forgotten = True
        if not instance.busy:
            # An invocation in flight may still read the frames the process sent before it
            # exited; _settle closes the socket after it.
            instance.sock.close()
        if instance.pidfd >= 0:
            os.close(instance.pidfd)
            instance.pidfd = -1
        if instance.groups is not None and not instance.groups.remove():
            # The kernel may still be tearing the processes down; the janitor retries.
            self._leftover_groups.append(instance.groups)
        shutil.rmtree(self.work_dir / "tmp" / f"i{instance.id}", ignore_errors=True)
        if not self._closed:
            self._fill_warm()

    async def _janitor_loop(self) -> None:
        period = min(
            JANITOR_PERIOD_SECONDS_MAX,
            self.idle_freeze_seconds / 2 or 0.05,
            self.idle_reap_seconds / 2 or 0.05,
        )
        while True:
            await asyncio.sleep(max(period, 0.01))
            now = time.monotonic()
            for idle in list(self._idle.values()):
                for instance in list(idle):
                    age = now - instance.idle_since
                    if age >= self.idle_reap_seconds:
                        self._retire(instance)
                    elif (
                        age >= self.idle_freeze_seconds
                        and not instance.frozen
                        and instance.groups is not None
                        and "freezer" in self._controllers
                    ):
                        with contextlib.suppress(OSError):
                            instance.frozen = instance.groups.freeze(True)
            self._leftover_groups = [g for g in self._leftover_groups if not g.remove()]


_SIGNAL_WORDS = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGBUS: "bus error",
}


def _checked_result(reply: dict[str, Any]) -> dict[str, Any]:
    """The instance's result frame, or FrameError: the handler shares the process that writes
    it, so a malformed frame is the function's fault and ends its instance."""
    valid = (
        reply.get("op") == "result"
        and isinstance(reply.get("payload"), bytes)
        and isinstance(reply.get("error"), bool)
        and isinstance(reply.get("log"), str)
        and isinstance(reply.get("cpu_seconds", 0.0), (int, float))
        and isinstance(reply.get("cpu_ms", 0.0), (int, float))
        and isinstance(reply.get("max_rss_kb", 0), int)
    )
    if not valid:
        raise frames.FrameError("malformed result frame")
    return reply


def _checked_init(init: dict[str, Any]) -> dict[str, Any]:
    layers = init.get("layers", {})
    valid = (
        init.get("op") == "init"
        and (init.get("error") is None or isinstance(init.get("error"), dict))
        and isinstance(init.get("log", ""), str)
        and isinstance(init.get("init_ms", 0.0), (int, float))
        and isinstance(init.get("steps_ms", {}), dict)
        and isinstance(layers, dict)
        and all(isinstance(v, bool) for v in layers.values())
    )
    if not valid:
        raise frames.FrameError("malformed init frame")
    return init


def _predicted_layers(controllers: set[str], disabled: frozenset[str]) -> dict[str, bool]:
    """The layers this host should give an instance, from what the pool process can see
    without forking: its uid and capabilities, the control groups, Landlock's ABI, seccomp."""
    from keeldb.functions.sandbox import _linux

    capabilities = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    capabilities = int(line.split()[1], 16)
    except OSError:
        pass
    cap_sys_admin = bool(capabilities & (1 << 21))
    namespaces = os.geteuid() == 0 and cap_sys_admin and "namespaces" not in disabled
    abi = 0 if "landlock" in disabled else _linux.landlock_abi_version()
    try:
        import pyseccomp  # noqa: F401 - only whether libseccomp loads

        seccomp = "seccomp" not in disabled and _linux.SUPPORTED
    except (ImportError, OSError):
        seccomp = False
    return {
        "pid_namespace": namespaces,
        "mount_namespace": namespaces,
        "ipc_namespace": namespaces,
        "uts_namespace": namespaces,
        "hostname": namespaces,
        "pivot_root": namespaces,
        "root_read_only": namespaces,
        "cgroup_joined": bool(controllers),
        "cgroup_memory": "memory" in controllers,
        "cgroup_pids": "pids" in controllers,
        "cgroup_cpu": "cpu" in controllers,
        "cgroup_freezer": "freezer" in controllers,
        "rlimits": True,
        "unprivileged_user": os.geteuid() != 0 or namespaces,
        "no_capabilities": True,
        "no_new_privs": True,
        "landlock_fs": abi >= 1,
        "landlock_net": abi >= 4,
        "landlock_scope": abi >= 6,
        "seccomp": seccomp,
        "net_namespace": False,
        "tcp_endpoint_only": abi >= 4,
    }


# /proc/PID/stat (proc(5)), after the command's closing parenthesis: state is the first field,
# flags the 7th, the pending signals the 29th.
_STAT_STATE, _STAT_FLAGS, _STAT_SIGNALS = 0, 6, 28
PROC_STAT_BYTES_MAX = 4096  # /proc/PID/stat is one line of some 300 bytes
_PF_EXITING = 0x4  # include/linux/sched.h: set as the process enters do_exit()
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _open_stat(pid: int) -> int:
    """A descriptor of /proc/PID/stat, read again by `_process_ending` (-1 without procfs): it
    names this process only, even once its pid is reused."""
    try:
        return os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _process_ending(stat_fd: int) -> bool:
    """Whether a process is gone, exiting, or has SIGKILL pending: a fatal SIGKILL is added to
    the pending set of every thread of the process before kill(2) returns."""
    if stat_fd < 0:
        return False  # cannot tell: the exit is seen on the zygote's socket
    try:
        fields = os.pread(stat_fd, PROC_STAT_BYTES_MAX, 0).rsplit(b")", 1)[1].split()
    except ProcessLookupError:
        return True  # reaped
    except (OSError, IndexError):
        return False
    if fields[_STAT_STATE] in (b"Z", b"X", b"x"):
        return True
    return bool(int(fields[_STAT_FLAGS]) & _PF_EXITING or int(fields[_STAT_SIGNALS]) & _SIGKILL_BIT)


def _process_state(pid: int) -> str:
    """Where a process is stuck, for the log: its state and the kernel function it waits in."""
    if pid <= 0:
        return "the zygote did not report its pid"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text() or "-"
    except OSError:
        return f"pid {pid} is gone"
    return f"pid {pid} state {state}, waiting in {wchan}"


def _invoke_frame(request_id: str, function_arn: str, payload: bytes) -> dict[str, Any]:
    return {
        "op": "invoke",
        "request_id": request_id,
        "function_arn": function_arn,
        "payload": payload,
    }


def _zygote_environment() -> dict[str, str]:
    """The zygote's environment: nothing of the database's (no keys, no paths), since every
    instance is a copy of the zygote's memory. Handlers get theirs from their FunctionSpec."""
    package_root = str(Path(__file__).resolve().parents[3])
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": package_root,
        # glibc reads it when the zygote starts: threads share two malloc arenas instead of
        # reserving 64 MiB of address space each, which keeps RLIMIT_AS meaningful.
        "MALLOC_ARENA_MAX": "2",
    }


def _python_paths() -> list[str]:
    """The directories of the interpreter, its libraries and the C libraries it has loaded."""
    paths = {sys.base_prefix, sys.prefix}
    for entry in sys.path:
        if entry and os.path.isdir(entry) and "site-packages" in entry:
            paths.add(entry)
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/") and ".so" in parts[5]:
                    paths.add(os.path.dirname(parts[5]))
    except OSError:
        pass
    # Nested paths are covered by their parent's bind mount.
    ordered = sorted(os.path.realpath(p) for p in paths)
    kept: list[str] = []
    for path in ordered:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


__all__ = [
    "FunctionSpec",
    "InvokeResult",
    "SandboxBusy",
    "SandboxCrashed",
    "SandboxPool",
    "SandboxTimeout",
]
