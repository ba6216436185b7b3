"""Landlock rulesets for a sandbox: which paths it may read or write, which TCP port it may dial.

Owns: the access-right masks per Landlock ABI version and the building of one ruleset from a
list of path rules, a list of connectable ports and the scopes. It must never restrict the
calling process by itself (`restrict` is a separate, explicit step) and never guesses an ABI:
it asks the kernel (Documentation/userspace-api/landlock.rst).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from keeldb.functions.sandbox import _linux

# Filesystem access rights (ABI 1 unless noted).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

# The rights that apply to a regular file (the others need a directory).
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

READ = FS_READ_FILE | FS_READ_DIR
READ_WRITE = (
    READ
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)


def fs_rights(abi: int) -> int:
    """Every filesystem right the given ABI can handle."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def net_rights(abi: int) -> int:
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def _attr_bytes(abi: int) -> int:
    # The struct grew one u64 per feature group: fs (ABI 1), net (ABI 4), scoped (ABI 6).
    if abi >= 6:
        return 24
    if abi >= 4:
        return 16
    return 8


@dataclass(frozen=True, slots=True)
class PathRule:
    path: str
    access: int


def build_ruleset(abi: int, paths: Iterable[PathRule], connect_ports: Iterable[int]) -> int:
    """Create a ruleset fd that denies every handled right except the ones listed.

    Paths that do not exist are skipped (a host without /usr/lib64, say). With ABI >= 4 every
    TCP bind is denied and TCP connect is allowed only to `connect_ports`; with ABI >= 6 the
    instance can neither signal nor reach abstract unix sockets outside its own domain.
    """
    assert abi >= 1
    handled_fs = fs_rights(abi)
    attr = _linux.LandlockRulesetAttr(handled_fs, net_rights(abi), scopes(abi))
    ruleset_fd = _linux.landlock_create_ruleset(attr, _attr_bytes(abi))
    try:
        for rule in paths:
            try:
                fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                access = rule.access & handled_fs
                if not os.path.isdir(rule.path):
                    access &= FILE_RIGHTS
                _linux.landlock_add_rule(
                    ruleset_fd,
                    _linux.LANDLOCK_RULE_PATH_BENEATH,
                    _linux.LandlockPathBeneathAttr(access, fd),
                )
            finally:
                os.close(fd)
        if abi >= 4:
            for port in connect_ports:
                _linux.landlock_add_rule(
                    ruleset_fd,
                    _linux.LANDLOCK_RULE_NET_PORT,
                    _linux.LandlockNetPortAttr(NET_CONNECT_TCP, port),
                )
    except BaseException:
        os.close(ruleset_fd)
        raise
    return ruleset_fd


def restrict(ruleset_fd: int) -> None:
    """Confine the calling thread (and its future children) to the ruleset; needs no_new_privs."""
    _linux.landlock_restrict_self(ruleset_fd)
    os.close(ruleset_fd)
