"""Confinement of one sandbox instance, run inside the instance's own process.

Owns: the steps that turn a fresh fork of the zygote into a sandbox, in two phases. `prepare`
runs while the instance waits in the warm pool, before any function is known: it joins the
instance's control groups, enters new mount/IPC/UTS namespaces (the PID namespace was made by
the zygote's fork), builds a minimal root on a tmpfs (the Python installation read-only, an
empty /var/task, /tmp, a few devices, /proc) and pivots into it, and compiles the Landlock
ruleset. `lock_down` runs on assignment: it attaches the function's code read-only at
/var/task, drops the old root, sets rlimits, drops every capability and switches to an
unprivileged uid, sets no_new_privs, and applies Landlock and seccomp.

Each step that the host cannot do is recorded as an absent layer, never silently skipped.
It must never run function code: the runtime imports the handler only after `lock_down`.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from keeldb.functions.sandbox import _linux, landlock

TASK_DIR = "/var/task"  # where Lambda puts a function's code
ROOT_TMPFS_BYTES = 1024 * 1024  # directories and mount points only
TMP_BYTES_DEFAULT = 512 * 1024 * 1024  # Lambda's default ephemeral storage
NOFILE_MAX = 1024  # Lambda's file descriptor limit
# A handler's /proc/self and the C library read these devices; nothing else of /dev exists.
DEVICES = ("null", "zero", "random", "urandom")
ETC_FILES = {
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "nsswitch.conf": "hosts: files\n",
}
# The cumulative CPU time an instance may use over its life: Lambda's longest timeout, so any
# single invocation fits; the pool retires an instance before it comes near this.
CPU_SECONDS_LIFETIME_MAX = 900
# Headroom of RLIMIT_AS above the memory limit. Address space is not memory: each thread
# reserves its stack (8 MiB) and glibc may reserve a 64 MiB malloc arena for it. With a
# memory cgroup, RLIMIT_AS is only a backstop and leaves threads ample room; without one it
# is the memory limit, with room for a dozen threads.
ADDRESS_SPACE_SLACK_BYTES = 1024 * 1024 * 1024
ADDRESS_SPACE_SLACK_WITH_CGROUP_BYTES = 16 * 1024 * 1024 * 1024
# The address space of the runtime before the handler, when /proc cannot say.
VM_SIZE_GUESS_BYTES = 1024 * 1024 * 1024
_OLD_ROOT = "/.oldroot"


@dataclass
class Confinement:
    """What `prepare` achieved; `lock_down` continues from it."""

    plan: dict[str, Any]
    layers: dict[str, bool] = field(default_factory=dict)
    # Milliseconds each step of lock_down took, for the benchmark's breakdown.
    steps_ms: dict[str, float] = field(default_factory=dict)
    pivoted: bool = False
    ruleset_fd: int | None = None
    tmp_dir: str = "/tmp"


def _try(layers: dict[str, bool], name: str, step: Any, *args: Any) -> bool:
    try:
        step(*args)
    except OSError:
        layers[name] = False
        return False
    layers[name] = True
    return True


def _ro_bind(source: str, target: str) -> None:
    flags = _linux.MS_BIND | _linux.MS_REC
    _linux.mount(source, target, None, flags, None)
    remount = _linux.MS_BIND | _linux.MS_REMOUNT | _linux.MS_RDONLY | _linux.MS_NOSUID
    _linux.mount(source, target, None, remount | _linux.MS_NODEV, None)


def _build_root(plan: dict[str, Any], pid_namespace: bool) -> None:
    root = plan["root_dir"]
    _linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE, None)
    _linux.mount(
        "tmpfs",
        root,
        "tmpfs",
        _linux.MS_NOSUID | _linux.MS_NODEV,
        f"size={ROOT_TMPFS_BYTES},mode=755",
    )
    # /tmp first: an interpreter or environment that lives under /tmp (a virtual environment
    # in a checkout there) is then bound inside it, instead of hidden by it.
    os.makedirs(root + "/tmp")
    _linux.mount(
        "tmpfs",
        root + "/tmp",
        "tmpfs",
        _linux.MS_NOSUID | _linux.MS_NODEV,
        f"size={plan.get('tmp_bytes', TMP_BYTES_DEFAULT)},mode=1777",
    )
    for path in plan["ro_paths"]:
        if not os.path.isdir(path):
            continue
        os.makedirs(root + path, exist_ok=True)
        _ro_bind(path, root + path)
    os.makedirs(root + TASK_DIR, exist_ok=True)
    # Name resolution from files only: "localhost" resolves, nothing else does (no resolver
    # is configured, and no UDP socket could reach one).
    os.makedirs(root + "/etc")
    for name, text in ETC_FILES.items():
        with open(root + "/etc/" + name, "w") as f:
            f.write(text)
        os.chmod(root + "/etc/" + name, 0o644)
    os.makedirs(root + "/dev")
    for name in DEVICES:
        target = root + "/dev/" + name
        open(target, "w").close()
        _linux.mount("/dev/" + name, target, None, _linux.MS_BIND, None)
    if pid_namespace:
        os.makedirs(root + "/proc")
        flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
        _linux.mount("proc", root + "/proc", "proc", flags, None)
    os.makedirs(root + _OLD_ROOT)
    _linux.pivot_root(root, root + _OLD_ROOT)
    os.chdir("/")


def prepare(plan: dict[str, Any]) -> Confinement:
    """The warm-pool phase: everything that does not depend on the function."""
    state = Confinement(plan)
    layers = state.layers
    layers["pid_namespace"] = bool(plan.get("pid_namespace"))
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    joined = True
    for procs in plan["procs_files"]:
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError:
            joined = False
    layers["cgroup_joined"] = joined and bool(plan["procs_files"])
    root = os.geteuid() == 0
    namespaces = _linux.CLONE_NEWNS | _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS
    root = root and "namespaces" not in plan.get("disabled", ())
    if root and _try(layers, "mount_namespace", _linux.unshare, namespaces):
        layers["ipc_namespace"] = layers["uts_namespace"] = True
        _try(layers, "hostname", _linux.sethostname, "sandbox")
        try:
            _build_root(plan, layers["pid_namespace"])
            state.pivoted = True
        except OSError:
            state.pivoted = False
    else:
        layers["mount_namespace"] = layers["ipc_namespace"] = layers["uts_namespace"] = False
    layers["pivot_root"] = state.pivoted
    if not state.pivoted:
        state.tmp_dir = plan["fallback_tmp_dir"]
    layers["landlock_fs"] = layers["landlock_net"] = layers["landlock_scope"] = False
    abi = _landlock_abi(plan)
    if abi >= 1 and state.pivoted:
        state.ruleset_fd = _landlock_ruleset(plan, abi, TASK_DIR, state.tmp_dir)
    return state


def _landlock_ruleset(plan: dict[str, Any], abi: int, task_dir: str, tmp_dir: str) -> int:
    read = landlock.READ
    rules = [landlock.PathRule(path, read) for path in plan["ro_paths"]]
    rules.append(
        landlock.PathRule(os.path.dirname(task_dir) if task_dir == TASK_DIR else task_dir, read)
    )
    rules.append(landlock.PathRule(tmp_dir, landlock.READ_WRITE))
    rules.append(landlock.PathRule("/dev/null", landlock.FS_READ_FILE | landlock.FS_WRITE_FILE))
    rules.extend(landlock.PathRule("/dev/" + d, landlock.FS_READ_FILE) for d in DEVICES[1:])
    rules.extend(landlock.PathRule("/etc/" + name, landlock.FS_READ_FILE) for name in ETC_FILES)
    # No rule for /proc: even /proc/self/net would show the host's sockets, since the network
    # namespace is the host's. The runtime reads what it needs from /proc before restricting.
    return landlock.build_ruleset(abi, rules, [plan["port"]])


def _landlock_abi(plan: dict[str, Any]) -> int:
    # A pool can switch a layer off, so that tests show what that layer alone stops.
    return 0 if "landlock" in plan.get("disabled", ()) else plan.get("landlock_abi", 0)


def _set_rlimits(assign: dict[str, Any], pids_max: int, memory_cgroup: bool) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_MAX, NOFILE_MAX))
    resource.setrlimit(resource.RLIMIT_NPROC, (pids_max, pids_max))
    cpu_hard = CPU_SECONDS_LIFETIME_MAX + int(assign["timeout_seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_hard, cpu_hard))
    vm_bytes = _vm_size_bytes()
    slack = ADDRESS_SPACE_SLACK_WITH_CGROUP_BYTES if memory_cgroup else ADDRESS_SPACE_SLACK_BYTES
    limit = vm_bytes + assign["memory_mb"] * 1024 * 1024 + slack
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return VM_SIZE_GUESS_BYTES


def _drop_bounding_set() -> None:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last_cap = int(f.read())
    except OSError:
        last_cap = _linux.CAP_LAST_CAP_MAX
    for cap in range(last_cap + 1):
        try:
            _linux.prctl(_linux.PR_CAPBSET_DROP, cap)
        except OSError:
            break  # past the kernel's last capability
    _linux.prctl(_linux.PR_CAP_AMBIENT, _linux.PR_CAP_AMBIENT_CLEAR_ALL)


def _drop_capabilities_only() -> None:
    _drop_bounding_set()
    _linux.prctl(_linux.PR_SET_SECUREBITS, _linux.SECUREBITS_LOCKED_DOWN)
    _linux.capset_empty()


def _drop_capabilities_and_user(uid: int) -> None:
    _drop_bounding_set()
    _linux.setgroups_empty()
    os.setresgid(uid, uid, uid)
    # With every uid non-zero and no SECBIT_KEEP_CAPS, the kernel clears the permitted and
    # effective capability sets (capabilities(7), "Effect of user ID changes").
    os.setresuid(uid, uid, uid)


def lock_down(state: Confinement, assign: dict[str, Any], seccomp_program: bytes | None) -> str:
    """The assignment phase; returns the directory holding the function's code.

    After this returns the process can never regain what it dropped: no capabilities, no new
    privileges, the Landlock domain and the seccomp filter last until it exits.
    """
    layers = state.layers
    plan = state.plan
    clock = _StepClock(state.steps_ms)
    if state.pivoted:
        _ro_bind(_OLD_ROOT + assign["code_dir"], TASK_DIR)
        flags = _linux.MS_BIND | _linux.MS_REMOUNT | _linux.MS_RDONLY | _linux.MS_NOSUID
        _linux.mount(TASK_DIR, TASK_DIR, None, flags | _linux.MS_NODEV | _linux.MS_NOEXEC, None)
        clock.step("bind_code")
        _linux.umount2(_OLD_ROOT, _linux.MNT_DETACH)
        os.rmdir(_OLD_ROOT)
        clock.step("detach_old_root")
        flags = _linux.MS_REMOUNT | _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV
        _try(layers, "root_read_only", _linux.mount, "tmpfs", "/", None, flags, None)
        task_dir = TASK_DIR
    else:
        task_dir = assign["code_dir"]
        layers["root_read_only"] = False
    os.chdir(task_dir)
    memory_cgroup = bool(plan.get("memory_cgroup")) and layers.get("cgroup_joined", False)
    _set_rlimits(assign, plan["pids_max"], memory_cgroup)
    layers["rlimits"] = True
    clock.step("remount_rlimits")
    if os.geteuid() == 0 and state.pivoted:
        try:
            _drop_capabilities_and_user(plan["uid"])
        except OSError:
            pass  # a container without CAP_SETUID, say: reported below, not hidden
        layers["unprivileged_user"] = os.geteuid() != 0
        layers["no_capabilities"] = _capabilities_empty()
    elif os.geteuid() == 0:
        # Without a private root the code and the interpreter stay at their host paths, whose
        # directories another uid may not traverse (/root is 0700): keep uid 0, but with no
        # capability at all it is only the owner of root's files, and Landlock confines it.
        try:
            _drop_capabilities_only()
        except OSError:
            pass
        layers["unprivileged_user"] = False
        layers["no_capabilities"] = _capabilities_empty()
    else:
        layers["unprivileged_user"] = os.geteuid() != 0
        layers["no_capabilities"] = _capabilities_empty()
    # A change of uid clears the parent-death signal (prctl(2)): arm it again, so that the
    # instance still dies with its zygote, frozen or not.
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    layers["no_new_privs"] = True
    clock.step("drop_privileges")
    abi = _landlock_abi(plan)
    ruleset_fd = state.ruleset_fd
    if ruleset_fd is None and abi >= 1:
        ruleset_fd = _landlock_ruleset(plan, abi, task_dir, state.tmp_dir)
    if ruleset_fd is not None:
        landlock.restrict(ruleset_fd)
        layers["landlock_fs"] = True
        layers["landlock_net"] = abi >= 4
        layers["landlock_scope"] = abi >= 6
    clock.step("landlock")
    if seccomp_program is not None and "seccomp" not in plan.get("disabled", ()):
        _try(layers, "seccomp", _linux.seccomp_load_bpf, seccomp_program)
    else:
        layers["seccomp"] = False
    clock.step("seccomp")
    return task_dir


class _StepClock:
    def __init__(self, steps_ms: dict[str, float]) -> None:
        self._steps_ms = steps_ms
        self._last = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self._steps_ms[name] = (now - self._last) * 1000
        self._last = now


def _capabilities_empty() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16) == 0
    except OSError:
        pass
    return False
