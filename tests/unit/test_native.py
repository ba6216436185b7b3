"""Which code a process runs: the compiled modules only when they match the sources."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
from pathlib import Path

from keeldb.native import MANIFEST, decide

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _package(tmp_path: Path, sources: dict[str, str], built: list[str]) -> Path:
    """A package directory with `sources` and, for those in `built`, an extension and the
    manifest a build writes (the extensions' contents do not matter to the decision)."""
    package = tmp_path / "keeldb"
    for name, text in sources.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in built:
        (package / (name.removesuffix(".py") + SUFFIX)).write_bytes(b"")
    if built:
        (package / ("_native__mypyc" + SUFFIX)).write_bytes(b"")
        digests = {
            name: hashlib.sha256((package / name).read_bytes()).hexdigest() for name in built
        }
        (package / MANIFEST.name).write_text(json.dumps({"sources": digests}))
    return package


SOURCES = {"api/server.py": "x = 1\n", "model/keys.py": "y = 2\n"}


def test_nothing_built_runs_the_sources() -> None:
    assert decide(Path("/nonexistent"), None) == ("absent", {})


def test_a_fresh_build_is_used(tmp_path: Path) -> None:
    package = _package(tmp_path, SOURCES, list(SOURCES))
    assert decide(package, None) == ("on", {})
    assert decide(package, "on") == ("on", {})


def test_switched_off_every_compiled_module_loads_from_its_source(tmp_path: Path) -> None:
    package = _package(tmp_path, SOURCES, list(SOURCES))
    state, bypass = decide(package, "off")
    assert state == "off"
    assert bypass == {
        "keeldb.api.server": package / "api/server.py",
        "keeldb.model.keys": package / "model/keys.py",
    }


def test_one_changed_source_bypasses_all_of_them(tmp_path: Path) -> None:
    package = _package(tmp_path, SOURCES, list(SOURCES))
    (package / "model/keys.py").write_text("y = 3\n")
    state, bypass = decide(package, None)
    assert state == "stale"
    assert set(bypass) == {"keeldb.api.server", "keeldb.model.keys"}


def test_an_extension_the_manifest_does_not_name_is_stale(tmp_path: Path) -> None:
    # Left by an older build whose module list was longer: it would shadow its source.
    package = _package(tmp_path, SOURCES, ["api/server.py"])
    (package / ("model/keys" + SUFFIX)).write_bytes(b"")
    state, bypass = decide(package, None)
    assert state == "stale"
    assert bypass["keeldb.model.keys"] == package / "model/keys.py"


def test_extensions_without_a_manifest_are_stale(tmp_path: Path) -> None:
    package = _package(tmp_path, SOURCES, list(SOURCES))
    (package / MANIFEST.name).unlink()
    assert decide(package, None)[0] == "stale"
    (package / MANIFEST.name).write_text("not json")
    assert decide(package, None)[0] == "stale"
