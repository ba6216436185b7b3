"""Resource readings of a server process (and its children) and of the host, with psutil.

Owns: CPU seconds, RSS and bytes written to storage (`/proc/PID/io` write_bytes, what the
process caused to be written to disk, page cache flushes included) of a server known by PID,
and the host's CPU busy share. A process that cannot be read (gone, or another user's) reads
as zero rather than failing the benchmark.

It must never signal or otherwise touch the processes it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Reading:
    cpu_seconds: float
    rss_bytes: int
    write_bytes: int
    pids: tuple[int, ...]


def _family(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    try:
        children = root.children(recursive=True)
    except psutil.Error:
        children = []
    return [root, *children]


def read(roots: Sequence[int]) -> Reading:
    """The processes `roots` and their live descendants, summed (children's CPU included)."""
    cpu = 0.0
    rss = 0
    written = 0
    pids = []
    family = [process for pid in roots for process in _family(pid)]
    for process in family:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += process.memory_info().rss
                try:
                    written += process.io_counters().write_bytes
                except (psutil.AccessDenied, AttributeError):
                    pass
            pids.append(process.pid)
        except psutil.Error:
            continue
    return Reading(cpu, rss, written, tuple(pids))


def host_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole host since boot."""
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def cpu_count() -> int:
    return psutil.cpu_count() or 1
