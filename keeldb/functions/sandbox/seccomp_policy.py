"""The seccomp filter every sandbox runs under, compiled once and installed in microseconds.

Owns: the list of denied system calls and socket kinds, and their compilation to classic BPF
with libseccomp (through pyseccomp). The zygote compiles the program once; each instance
installs the same bytes with prctl, so no instance pays for the compilation.

It must never allow what it denies depending on the instance: the program is the same for all.
"""

from __future__ import annotations

import errno
import socket
import tempfile

# Calls that reach outside the sandbox, change its confinement or the kernel, or inspect
# other processes. Denied with EPERM (not a kill) so a handler sees an ordinary OSError.
DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "syslog",
    "vhangup",
    "lookup_dcookie",
    "personality",
    "execve",
    "execveat",
)
# Namespace flags in clone(2)'s first argument: creating namespaces is denied.
_CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
# The socket families a handler may open: unix (socketpair, local IPC), IPv4, IPv6.
ALLOWED_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
_SOCK_TYPE_MASK = 0xF  # SOCK_NONBLOCK / SOCK_CLOEXEC live above the type bits
_FAMILY_MAX = 64  # larger than AF_MAX on every kernel


def compile_program() -> bytes:
    """The filter as raw BPF bytes for the native architecture; raises OSError without libseccomp."""
    import pyseccomp as sc

    flt = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):
            continue  # a call this architecture does not have
    for bit in _CLONE_NAMESPACE_FLAGS:
        flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
    # clone3 passes its flags in memory that seccomp cannot read: make it look absent, so that
    # the C library falls back to clone, whose flags the rules above do see.
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    nosupport = sc.ERRNO(errno.EAFNOSUPPORT)
    for family in range(_FAMILY_MAX):
        if family not in ALLOWED_FAMILIES:
            flt.add_rule(nosupport, "socket", sc.Arg(0, sc.EQ, family))
    flt.add_rule(nosupport, "socket", sc.Arg(0, sc.GE, _FAMILY_MAX))
    # IPv4 and IPv6 only as TCP streams: no UDP, raw or packet sockets reach any network.
    for family in (socket.AF_INET, socket.AF_INET6):
        for kind in range(_SOCK_TYPE_MASK + 1):
            if kind != socket.SOCK_STREAM:
                flt.add_rule(
                    deny,
                    "socket",
                    sc.Arg(0, sc.EQ, family),
                    sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, kind),
                )
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()
