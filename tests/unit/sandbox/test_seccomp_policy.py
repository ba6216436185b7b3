from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from keeldb.functions.sandbox import _linux, seccomp_policy

try:
    PROGRAM = seccomp_policy.compile_program()
except (ImportError, OSError) as error:  # pragma: no cover - hosts without libseccomp
    pytest.skip(f"libseccomp is not usable here: {error}", allow_module_level=True)


def confined(attempt: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.seccomp_load_bpf(PROGRAM)
        return attempt()

    return run


def udp() -> None:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()


def netlink() -> None:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()


def tcp() -> bool:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC).close()
    socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    socket.socketpair()
    return True


def new_namespace() -> None:
    _linux.unshare(_linux.CLONE_NEWUSER)


def ptrace_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, os.getppid(), None, None) == -1:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")


def exec_shell() -> None:
    os.execv("/bin/sh", ["/bin/sh", "-c", "exit 0"])


def test_the_program_is_whole_bpf_instructions() -> None:
    assert len(PROGRAM) > 0
    assert len(PROGRAM) % 8 == 0


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (udp, {"raised": "PermissionError", "errno": 1}),
        (netlink, {"raised": "OSError", "errno": 97}),  # EAFNOSUPPORT
        (new_namespace, {"raised": "PermissionError", "errno": 1}),
        (ptrace_parent, {"raised": "PermissionError", "errno": 1}),
        (exec_shell, {"raised": "PermissionError", "errno": 1}),
    ],
)
def test_the_filter_denies(in_child: Any, attempt: Callable[[], Any], expected: Any) -> None:
    assert in_child(confined(attempt)) == expected


def test_tcp_and_unix_sockets_still_work_under_the_filter(in_child: Any) -> None:
    assert in_child(confined(tcp)) == {"value": True}


def test_without_the_filter_the_same_attempts_succeed(in_child: Any) -> None:
    # The control: these pass unconfined, so the denials above are the filter's doing.
    assert in_child(udp) == {"value": None}
    assert in_child(tcp) == {"value": True}
