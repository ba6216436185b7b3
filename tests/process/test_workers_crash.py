"""kill -9 of the primary of `keeldb serve --workers 2` loses no acknowledged write.

The single-process crash test's whole machinery (concurrent raw-HTTP writers of puts,
deletes and counters, kills at random moments during segment roll-overs and checkpoints,
restarts on the same directory and a check of every key against what the clients were told)
runs unchanged against `--workers 2` (the primary and one worker process serve HTTP): a
write is acknowledged by the primary itself or through the worker, which hears of the commit
from the primary, and the kill hits the primary.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import psutil
import pytest

pytestmark = [pytest.mark.process, pytest.mark.slow]

CRASH_CYCLES = 5  # each cycle starts three processes; the single-process test runs more
WORKER_EXIT_SECONDS_MAX = 30.0
WORKER_PROCESSES = 1  # `--workers 2`: the primary serves HTTP too


def _crash_test_module() -> ModuleType:
    path = Path(__file__).with_name("test_crash_durability.py")
    spec = importlib.util.spec_from_file_location("crash_durability_for_workers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


crash = _crash_test_module()


class WorkersServerProcess(crash.ServerProcess):  # type: ignore[name-defined,misc]
    """The crash test's server, with a worker process; every primary it kills must take its
    worker with it."""

    killed_workers: ClassVar[list[int]] = []

    def command(self) -> list[str]:
        return [*super().command(), "--workers", "2", "--no-functions"]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            children = psutil.Process(self.process.pid).children()
            WorkersServerProcess.killed_workers += [c.pid for c in children]
            assert len(children) == WORKER_PROCESSES, children
        super().kill()


@pytest.mark.timeout(900)
def test_kill_9_of_the_primary_loses_no_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crash, "ServerProcess", WorkersServerProcess)
    monkeypatch.setenv("KEELDB_CRASH_CYCLES", str(CRASH_CYCLES))
    WorkersServerProcess.killed_workers = []
    crash.test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(tmp_path)
    # The kills hit running servers with workers, and every one of those workers stopped.
    assert len(WorkersServerProcess.killed_workers) >= WORKER_PROCESSES * CRASH_CYCLES
    deadline = time.monotonic() + WORKER_EXIT_SECONDS_MAX
    while time.monotonic() < deadline:
        alive = [
            pid
            for pid in WorkersServerProcess.killed_workers
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == []
