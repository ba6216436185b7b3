from __future__ import annotations

import os
from pathlib import Path

import pytest

from keeldb.functions.sandbox import cgroups


def test_discovery_takes_each_controller_from_one_hierarchy_only() -> None:
    seen: list[str] = []
    for hierarchy in cgroups.discover():
        assert hierarchy.version in (1, 2)
        assert hierarchy.mount.is_dir()
        assert hierarchy.controllers <= set(cgroups.CONTROLLERS)
        seen.extend(hierarchy.controllers)
    assert len(seen) == len(set(seen))


@pytest.fixture
def groups() -> cgroups.PoolGroups:
    if os.geteuid() != 0:
        pytest.skip("control groups need root here")
    pool = cgroups.PoolGroups(f"keeldb-sandbox-test-{os.getpid()}")
    controllers = pool.prepare()
    if not controllers:
        pytest.skip("this host has no writable control group hierarchy")
    yield pool
    pool.remove()


def test_an_instance_group_takes_limits_and_is_removed(groups: cgroups.PoolGroups) -> None:
    instance = groups.instance("i1")
    controllers = {c for h in groups.hierarchies for c in h.controllers}
    assert instance.set_pids(17) == ("pids" in controllers)
    assert instance.set_memory(64 * 1024 * 1024) == ("memory" in controllers)
    assert instance.set_cpu(0.5) == ("cpu" in controllers)
    for hierarchy, path in instance.dirs:
        if "pids" in hierarchy.controllers:
            assert (path / "pids.max").read_text().strip() == "17"
        if "memory" in hierarchy.controllers:
            name = "memory.max" if hierarchy.version == 2 else "memory.limit_in_bytes"
            assert int((path / name).read_text()) == 64 * 1024 * 1024
    # Raising the limit after lowering it works (v1 keeps memory <= memory + swap).
    if "memory" in controllers:
        assert instance.set_memory(256 * 1024 * 1024)
    paths = [path for _, path in instance.dirs]
    assert instance.oom_kills() == 0
    assert instance.remove()
    assert not any(Path(p).exists() for p in paths)
    assert instance.oom_kills() == 0  # remembered from before the removal
