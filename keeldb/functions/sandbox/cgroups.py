"""Control groups for sandboxes: one group per instance, under the pool's own group.

Owns: finding the hierarchies this host has (cgroup v2, v1, or a hybrid of both), creating an
instance's groups nested under the group the pool process already lives in, writing its
limits (memory, pids, cpu), freezing, thawing, killing and removing them, and reading what
they report (peak memory, OOM kills).

It must never move a process other than a sandbox, never write outside the groups it created,
and never raise for a missing mechanism: an absent controller is a layer the host lacks.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("keeldb.functions.sandbox")

CONTROLLERS = ("memory", "pids", "cpu", "freezer")
CPU_PERIOD_MICROSECONDS = 100_000


@dataclass(frozen=True, slots=True)
class Hierarchy:
    version: int  # 1 or 2
    mount: Path
    own_path: str  # the pool process's group in this hierarchy, relative to the mount
    controllers: frozenset[str]

    def base(self, pool_name: str) -> Path:
        return self.mount / self.own_path.lstrip("/") / pool_name


def _mounts() -> list[tuple[str, Path, set[str]]]:
    """(fstype, mount point, super options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((rfields[0], Path(fields[4]), set(rfields[2].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """Controller name (or "" for v2) -> this process's group path, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if names == "":
            groups[""] = path
        for name in names.split(","):
            if name:
                groups[name] = path
    return groups


def discover() -> list[Hierarchy]:
    """The hierarchies that can hold sandbox groups, each controller taken from one only."""
    own = _own_groups()
    hierarchies: list[Hierarchy] = []
    taken: set[str] = set()
    # v2 first: cgroup.kill and cgroup.freeze live there even in a hybrid layout.
    for fstype, mount, _ in _mounts():
        if fstype != "cgroup2" or "" not in own:
            continue
        own_dir = mount / own[""].lstrip("/")
        try:
            available = set((own_dir / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        wanted = {c for c in ("memory", "pids", "cpu") if c in available}
        controllers = (
            {"freezer"} if (own_dir / "cgroup.freeze").exists() or own[""] == "/" else set()
        )
        controllers |= wanted
        hierarchies.append(Hierarchy(2, mount, own[""], frozenset(controllers)))
        taken |= controllers
        break
    for fstype, mount, options in _mounts():
        if fstype != "cgroup":
            continue
        names = {c for c in CONTROLLERS if c in options and c not in taken}
        if not names:
            continue
        own_path = next((own[c] for c in names if c in own), None)
        if own_path is None:
            continue
        hierarchies.append(Hierarchy(1, mount, own_path, frozenset(names)))
        taken |= names
    return hierarchies


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class PoolGroups:
    """The pool's parent groups; `prepare` creates them, `instance` makes one per sandbox."""

    pool_name: str
    hierarchies: list[Hierarchy] = field(default_factory=list)
    has_kill: bool = False

    def prepare(self) -> set[str]:
        """Create the parent groups; returns the controllers that work on this host."""
        working: list[Hierarchy] = []
        for h in discover():
            base = h.base(self.pool_name)
            _remove_stale(base.parent)
            try:
                base.mkdir(exist_ok=True)
            except OSError as e:
                log.info("cgroup v%d at %s not writable: %s", h.version, h.mount, e)
                continue
            controllers = set(h.controllers)
            if h.version == 2:
                wanted = controllers - {"freezer"}
                enabled = set()
                for c in sorted(wanted):
                    try:
                        _write(base.parent / "cgroup.subtree_control", f"+{c}")
                        _write(base / "cgroup.subtree_control", f"+{c}")
                        enabled.add(c)
                    except OSError as e:
                        log.info("cgroup v2 controller %s unavailable: %s", c, e)
                controllers = enabled | (controllers & {"freezer"})
                self.has_kill = (base / "cgroup.kill").exists()
            working.append(Hierarchy(h.version, h.mount, h.own_path, frozenset(controllers)))
        self.hierarchies = working
        return {c for h in working for c in h.controllers}

    def instance(self, name: str) -> InstanceGroups:
        dirs = []
        for h in self.hierarchies:
            path = h.base(self.pool_name) / name
            path.mkdir(exist_ok=True)
            dirs.append((h, path))
        return InstanceGroups(dirs, self.has_kill)

    def remove(self) -> None:
        for h in self.hierarchies:
            base = h.base(self.pool_name)
            if not base.exists():
                continue
            for child in base.iterdir():
                if child.is_dir():
                    _rmdir_quietly(child)
            _rmdir_quietly(base)


POOL_PREFIX = "keeldb-sandbox-"


def _remove_stale(parent: Path) -> None:
    """Remove the empty groups of pools whose process is gone (killed with -9, say)."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(POOL_PREFIX) or not entry.is_dir():
            continue
        pid_text = entry.name[len(POOL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # that pool is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        for child in entry.iterdir():
            if child.is_dir():
                _rmdir_quietly(child)
        _rmdir_quietly(entry)


def _rmdir_quietly(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


@dataclass
class InstanceGroups:
    dirs: list[tuple[Hierarchy, Path]]
    has_kill: bool
    # What the groups reported when they were removed (the files vanish with them).
    final: tuple[int | None, int] | None = None

    def _find(self, controller: str) -> tuple[Hierarchy, Path] | None:
        for h, path in self.dirs:
            if controller in h.controllers:
                return h, path
        return None

    def procs_files(self) -> list[str]:
        """The files a process writes "0" to, to join every group of this instance."""
        return [str(path / "cgroup.procs") for _, path in self.dirs]

    def set_memory(self, limit_bytes: int) -> bool:
        found = self._find("memory")
        if found is None:
            return False
        h, path = found
        if h.version == 2:
            _write(path / "memory.max", str(limit_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        else:
            # v1 keeps memory <= memory+swap at every step: raise the second first, lower the
            # first first.
            memsw = path / "memory.memsw.limit_in_bytes"
            order = [path / "memory.limit_in_bytes"]
            if memsw.exists():
                current = int(memsw.read_text())
                order = [memsw, *order] if limit_bytes > current else [*order, memsw]
            for name in order:
                _write(name, str(limit_bytes))
        return True

    def set_pids(self, pids_max: int) -> bool:
        found = self._find("pids")
        if found is None:
            return False
        _write(found[1] / "pids.max", str(pids_max))
        return True

    def set_cpu(self, cpus: float) -> bool:
        found = self._find("cpu")
        if found is None:
            return False
        h, path = found
        quota = int(cpus * CPU_PERIOD_MICROSECONDS)
        if h.version == 2:
            _write(path / "cpu.max", f"{quota} {CPU_PERIOD_MICROSECONDS}")
        else:
            _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_MICROSECONDS))
            _write(path / "cpu.cfs_quota_us", str(quota))
        return True

    def freeze(self, frozen: bool) -> bool:
        found = self._find("freezer")
        if found is None:
            return False
        h, path = found
        if h.version == 2:
            _write(path / "cgroup.freeze", "1" if frozen else "0")
        else:
            _write(path / "freezer.state", "FROZEN" if frozen else "THAWED")
        return True

    def kill(self) -> None:
        """SIGKILL every process in the groups (v2's cgroup.kill, else each listed process)."""
        for h, path in self.dirs:
            if h.version == 2 and self.has_kill:
                try:
                    _write(path / "cgroup.kill", "1")
                    return
                except OSError:
                    pass
        self.freeze(True)
        for _, path in self.dirs:
            try:
                pids = (path / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # A frozen process dies only once thawed.
        self.freeze(False)

    def memory_peak_bytes(self) -> int | None:
        if self.final is not None:
            return self.final[0]
        found = self._find("memory")
        if found is None:
            return None
        h, path = found
        name = "memory.peak" if h.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((path / name).read_text())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        if self.final is not None:
            return self.final[1]
        found = self._find("memory")
        if found is None:
            return 0
        h, path = found
        name = "memory.events" if h.version == 2 else "memory.oom_control"
        try:
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> bool:
        if self.final is None:
            self.final = (self.memory_peak_bytes(), self.oom_kills())
        return all(_rmdir_quietly(path) for _, path in self.dirs)
