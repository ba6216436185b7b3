"""The pure and sans-IO packages import no IO modules, and imports point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "keeldb"
FORBIDDEN_IN_PURE = {"asyncio", "socket", "time", "threading", "os", "subprocess", "selectors"}
PURE_PACKAGES = ["model", "expressions", "consensus"]
# Packages a layer may not import (imports point down: api -> engine -> expressions -> model).
FORBIDDEN_UPWARD = {
    "model": {"expressions", "engine", "storage", "consensus", "api", "cluster", "net"},
    "expressions": {"engine", "storage", "consensus", "api", "cluster", "net"},
    "engine": {"api", "cluster", "net", "consensus"},
    "consensus": {"expressions", "engine", "storage", "api", "cluster", "net"},
    "storage": {"api", "engine", "expressions", "cluster", "net"},
}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _modules(package: str, *, include_sim: bool = True) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    return files


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_package_imports_no_io_modules(package: str) -> None:
    bad = []
    for path in _modules(package):
        for name, line in _imports(path):
            if name.split(".")[0] in FORBIDDEN_IN_PURE:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN_UPWARD))
def test_imports_point_down_the_layers(package: str) -> None:
    bad = []
    for path in _modules(package):
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] == "keeldb" and len(parts) > 1 and parts[1] in FORBIDDEN_UPWARD[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


def test_layering_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import time\nfrom keeldb.api import server\n")
    names = [name for name, _ in _imports(probe)]
    assert "time" in names
    assert "keeldb.api" in names
