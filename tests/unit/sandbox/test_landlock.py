from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from keeldb.functions.sandbox import _linux, landlock

ABI = _linux.landlock_abi_version()


def test_rights_grow_with_the_abi_version() -> None:
    assert landlock.fs_rights(1) == (1 << 13) - 1
    assert landlock.fs_rights(2) == landlock.fs_rights(1) | landlock.FS_REFER
    assert landlock.fs_rights(3) == landlock.fs_rights(2) | landlock.FS_TRUNCATE
    assert landlock.fs_rights(5) == landlock.fs_rights(3) | landlock.FS_IOCTL_DEV
    assert landlock.net_rights(3) == 0
    assert landlock.net_rights(4) == landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP
    assert landlock.scopes(5) == 0
    assert landlock.scopes(6) == landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET


@pytest.mark.skipif(ABI < 1, reason="this kernel has no Landlock")
def test_a_ruleset_allows_only_its_paths(tmp_path: Path, in_child: Any) -> None:
    allowed = tmp_path / "allowed"
    denied = tmp_path / "denied"
    allowed.mkdir()
    denied.mkdir()
    (allowed / "file").write_text("yes")
    (denied / "file").write_text("no")

    def attempt() -> dict[str, Any]:
        rules = [landlock.PathRule(str(allowed), landlock.READ)]
        fd = landlock.build_ruleset(ABI, rules, [])
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        landlock.restrict(fd)
        outcome: dict[str, Any] = {"allowed": (allowed / "file").read_text()}
        for name, action in [
            ("read_denied", lambda: (denied / "file").read_text()),
            ("write_allowed", lambda: (allowed / "file").write_text("changed")),
            ("list_denied", lambda: os.listdir(denied)),
        ]:
            try:
                action()
                outcome[name] = "succeeded"
            except PermissionError:
                outcome[name] = "denied"
        return outcome

    assert in_child(attempt) == {
        "value": {
            "allowed": "yes",
            "read_denied": "denied",
            "write_allowed": "denied",
            "list_denied": "denied",
        }
    }
    assert (denied / "file").read_text() == "no"


@pytest.mark.skipif(ABI < 4, reason="this kernel's Landlock has no TCP rules (ABI < 4)")
def test_tcp_connect_is_allowed_only_to_the_listed_port(in_child: Any) -> None:
    allowed = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    allowed_port = allowed.getsockname()[1]
    other_port = other.getsockname()[1]

    def attempt() -> dict[str, str]:
        "127.0.0.1".encode("idna")  # the codec is imported lazily: before files are denied
        fd = landlock.build_ruleset(ABI, [], [allowed_port])
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        landlock.restrict(fd)
        outcome = {}
        for name, port in [("allowed", allowed_port), ("other", other_port)]:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                outcome[name] = "connected"
            except PermissionError:
                outcome[name] = "denied"
        try:
            socket.create_server(("127.0.0.1", 0)).close()
            outcome["bind"] = "bound"
        except PermissionError:
            outcome["bind"] = "denied"
        return outcome

    try:
        assert in_child(attempt) == {
            "value": {"allowed": "connected", "other": "denied", "bind": "denied"}
        }
    finally:
        allowed.close()
        other.close()


def test_paths_that_do_not_exist_are_skipped(tmp_path: Path, in_child: Any) -> None:
    if ABI < 1:
        pytest.skip("this kernel has no Landlock")

    def attempt() -> bool:
        rules = [landlock.PathRule(str(tmp_path / "missing"), landlock.READ)]
        fd = landlock.build_ruleset(ABI, rules, [])
        os.close(fd)
        return True

    assert in_child(attempt) == {"value": True}
