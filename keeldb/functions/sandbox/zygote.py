"""The fork server ("zygote"): a process, apart from the database, that forks sandboxes warm.

Owns: pre-importing the runtime and what handlers use (json, boto3, botocore) once, compiling
the seccomp program once, and forking one instance per request of the pool, each as init of
a new PID namespace when the host allows it. It reports each child's pid (with a pidfd, so
that the pool can signal it without a pid-reuse race) and each child's exit.

Run as `python -m keeldb.functions.sandbox.zygote FD`, FD being a SOCK_SEQPACKET unix socket
to the pool: one msgpack message per packet, the instance's control socket attached to
"spawn". It exits, killing every instance it forked, when the pool's end closes.

It must never run function code itself and never hold a function's data: only the forked
children, after confinement, do.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import socket
import sys
from typing import Any

import msgpack

from keeldb.functions.sandbox import _linux, runtime

# Imported here so that every instance starts with them loaded and shared copy-on-write, as a
# Lambda runtime offers them; a handler's `import boto3` then costs nothing.
PRELOAD_MODULES = (
    "json",
    "encodings.idna",  # socket.getaddrinfo imports it on first use
    "decimal",
    "datetime",
    "uuid",
    "base64",
    "hashlib",
    "hmac",
    "ssl",
    "http.client",
    "logging",
    "traceback",
    "urllib3",
    "botocore",
    "botocore.session",
    "botocore.client",
    "botocore.endpoint",
    "botocore.httpsession",
    "botocore.parsers",
    "botocore.serialize",
    "botocore.auth",
    "botocore.regions",
    "boto3",
    "boto3.session",
    "boto3.dynamodb.types",
    "boto3.dynamodb.conditions",
)
# botocore's service models for what handlers here call: creating the first DynamoDB client
# in a handler drops from ~200 ms (reading and parsing these JSON files) to ~7 ms, and the
# parsed models are shared copy-on-write by every instance instead of copied into each.
PRELOAD_SERVICE_MODELS = {
    "dynamodb": ("service-2", "endpoint-rule-set-1", "paginators-1", "waiters-2", "resources-1"),
    "dynamodbstreams": ("service-2", "endpoint-rule-set-1", "paginators-1"),
}
PRELOAD_DATA = ("endpoints", "partitions", "sdk-default-configuration")
PACKET_BYTES_MAX = 64 * 1024  # a spawn plan is a few hundred bytes
REHEARSALS = 32  # CPython 3.11 specialises a code object after it has run 8 times or so


def _preload() -> None:
    import importlib

    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    try:
        import boto3
        from botocore.exceptions import DataNotFoundError
    except ImportError:
        return
    # The default session holds the loader whose cache keeps the models. It reads no
    # environment, configuration file or credentials until a client is created: that happens
    # in the instance, under the function's own environment.
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    loader = boto3.DEFAULT_SESSION._session.get_component("data_loader")
    for service, kinds in PRELOAD_SERVICE_MODELS.items():
        for kind in kinds:
            try:
                loader.load_service_model(service, kind)
            except DataNotFoundError:
                continue  # a model this botocore version lacks stays unloaded
    for name in PRELOAD_DATA:
        try:
            loader.load_data(name)
        except DataNotFoundError:
            continue


def _pid_namespace_works(own_pid_ns: int | None) -> bool:
    if own_pid_ns is None:
        return False
    try:
        _linux.unshare(_linux.CLONE_NEWPID)
        _linux.setns(own_pid_ns, _linux.CLONE_NEWPID)
    except OSError:
        return False
    return True


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    if fds:
        socket.send_fds(sock, [body], fds)
    else:
        sock.send(body)


def _hello(pid_namespace: bool, seccomp_program: bytes | None) -> dict[str, Any]:
    return {
        "op": "hello",
        "pid": os.getpid(),
        "pid_namespace": pid_namespace,
        "landlock_abi": _linux.landlock_abi_version(),
        "seccomp": seccomp_program is not None,
    }


def _end(children: dict[int, tuple[int, int]]) -> None:
    """The pool is gone: kill every instance and exit."""
    for _, pid in children.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    _preload()
    try:
        from keeldb.functions.sandbox import seccomp_policy

        seccomp_program: bytes | None = seccomp_policy.compile_program()
    except (ImportError, OSError, RuntimeError) as e:
        seccomp_program = None
        sys.stderr.write(f"keeldb zygote: seccomp unavailable: {e}\n")
    try:
        own_pid_ns: int | None = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        own_pid_ns = None
    pid_namespace = os.geteuid() == 0 and _pid_namespace_works(own_pid_ns)
    # The request path, run here before any fork: the interpreter specialises the bytecode
    # of code it has run a few times and fills first-use caches, and doing that once in the
    # zygote means no instance copies those pages to do it again.
    for _ in range(REHEARSALS):
        runtime.rehearse()
    # Objects that exist now are never collected: the children's collector then leaves their
    # pages alone, and they stay shared copy-on-write.
    gc.collect()
    gc.freeze()
    try:
        _send(control, _hello(pid_namespace, seccomp_program))
    except OSError:
        os._exit(0)  # the pool closed while this zygote started
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, None)
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (instance id, pid)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                try:
                    body, fds, _, _ = socket.recv_fds(control, PACKET_BYTES_MAX, 1)
                except OSError:
                    body, fds = b"", []
                if not body:
                    _end(children)
                message = msgpack.unpackb(body, raw=False)
                assert message["op"] == "spawn"
                assert len(fds) == 1
                instance_sock = socket.socket(fileno=fds[0])
                pid = _fork(
                    message["plan"],
                    instance_sock,
                    control,
                    selector,
                    children,
                    own_pid_ns
                    if pid_namespace and "namespaces" not in message["plan"].get("disabled", ())
                    else None,
                    seccomp_program,
                )
                instance_sock.close()
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (message["plan"]["id"], pid)
                selector.register(pidfd, selectors.EVENT_READ, pidfd)
                try:
                    _send(
                        control, {"op": "spawned", "id": message["plan"]["id"], "pid": pid}, [pidfd]
                    )
                except OSError:
                    _end(children)
            else:
                pidfd = key.data
                selector.unregister(pidfd)
                instance_id, pid = children.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                try:
                    _send(control, {"op": "exited", "id": instance_id, "status": status})
                except OSError:
                    _end(children)


def _fork(
    plan: dict[str, Any],
    instance_sock: socket.socket,
    control: socket.socket,
    selector: selectors.BaseSelector,
    children: dict[int, tuple[int, int]],
    own_pid_ns: int | None,
    seccomp_program: bytes | None,
) -> int:
    if own_pid_ns is not None:
        _linux.unshare(_linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            keep = instance_sock.fileno()
            selector.close()
            control.close()
            os.closerange(3, keep)
            os.closerange(keep + 1, 65536)
            runtime.serve(
                instance_sock, {**plan, "pid_namespace": own_pid_ns is not None}, seccomp_program
            )
        except BaseException:  # noqa: BLE001 - a child never returns into the zygote's loop
            os._exit(1)
        os._exit(0)
    if own_pid_ns is not None:
        _linux.setns(own_pid_ns, _linux.CLONE_NEWPID)
    return pid


if __name__ == "__main__":
    main(int(sys.argv[1]))
