"""Compiled modules: the request path built with mypyc, and the switch that keeps them honest.

The modules named in `MODULES` (the HTTP front end, the item operations, the expression
language, the value model and the local log and store: the code every request runs; and on a
cluster node, the consensus core, the group driver, the router and the transport) can be
compiled to C extensions with mypyc, from the same sources and their type annotations. The
interpreter then loads the extension instead of the source, and the request path costs the
event loop less CPU (docs/performance.md, "Compiled modules").

`keeldb native build` compiles them in place, next to their sources, and writes
`keeldb/_native.json`: the SHA-256 of each source it compiled. On import, `keeldb` compares
those digests with the sources as they are now (`guard`): if any source changed since the
build, or `KEELDB_NATIVE=off` is set, every compiled module is bypassed and the sources run
(the compiled modules call each other directly, so they are used all together or not at all).
A build that fails leaves nothing behind: KeelDB then runs interpreted, as it does wherever
no compiler is available.

    keeldb native build     # compile (needs a C compiler, Python's headers and mypy)
    keeldb native status    # what this process runs: on, off, stale or absent
    keeldb native clean     # remove the compiled modules
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = PACKAGE_DIR / "_native.json"
GROUP = "keeldb._native"  # the shared library holding every compiled module's code
_LIBRARY = GROUP.rpartition(".")[2] + "__mypyc.py"  # its name in `_extensions_present`
SWITCH_ENV = "KEELDB_NATIVE"

# Compiled, relative to the package. Leaving a module out is always safe; putting one in
# needs the suite to pass with it compiled (mypyc enforces the annotations at run time, and
# a compiled class takes no new attributes). keeldb/model/errors.py stays interpreted: other
# modules subclass its exceptions, and an interpreted subclass of a compiled exception class
# has no method table (calling its compiled methods crashed the process). A compiled class
# takes no weak references either (this mypyc has no `supports_weakrefs`).
MODULES: tuple[str, ...] = (
    "api/server.py",
    "cluster/group.py",
    "cluster/group_codec.py",
    "cluster/keyroute.py",
    "cluster/ring.py",
    "cluster/router.py",
    "consensus/messages.py",
    "consensus/replica.py",
    "consensus/types.py",
    "engine/catalog.py",
    "engine/database.py",
    "engine/indexes.py",
    "engine/item_requests.py",
    "engine/item_store.py",
    "engine/items.py",
    "engine/packing.py",
    "engine/schema.py",
    "expressions/context.py",
    "expressions/evaluate.py",
    "expressions/keycondition.py",
    "expressions/legacy.py",
    "expressions/lexer.py",
    "expressions/parser.py",
    "expressions/plan.py",
    "expressions/printer.py",
    "expressions/reserved.py",
    "expressions/resolve.py",
    "model/capacity.py",
    "model/keys.py",
    "model/limits.py",
    "model/numbers.py",
    "model/request_shapes.py",
    "model/values.py",
    "net/framing.py",
    "net/transport.py",
    "storage/lmdb_store.py",
    "storage/replog.py",
    "storage/wal.py",
)

_BUILD_SCRIPT = f"""
import sys
from setuptools import setup
from mypyc.build import mypycify

temp, files = sys.argv[1], sys.argv[2:]
setup(
    name="keeldb-native",
    ext_modules=mypycify(
        ["--ignore-missing-imports", *files],
        opt_level="3",
        group_name={GROUP!r},
        target_dir=temp + "/c",
    ),
    script_args=[
        "-q", "build_ext", "--inplace", "--build-temp", temp + "/o", "--build-lib", temp + "/l"
    ],
)
"""

# What the import guard decided for this process: "on", "off" (switched off), "stale" (a
# source changed since the build) or "absent" (nothing compiled).
state = "absent"


def module_name(source: str) -> str:
    return "keeldb." + source.removesuffix(".py").replace("/", ".")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extensions_present(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every compiled module in the package now, by its source (relative): the package has
    no C extensions of its own, so each one is from a build (perhaps an older one)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    found = {}
    for path in package_dir.rglob("*" + suffix):
        source = path.relative_to(package_dir).as_posix().removesuffix(suffix) + ".py"
        found[source] = path
    return found


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Loads the listed modules from their sources even where an extension is present."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def decide(package_dir: Path, switch: str | None) -> tuple[str, dict[str, Path]]:
    """What a process should run: ("on", {}) to use the compiled modules, else the reason
    ("absent", "off" or "stale") and the sources to load instead of the extensions present.
    "on" only if the extensions present are exactly those the manifest names, each built
    from the source as it is now, and `switch` (KEELDB_NATIVE) is not "off"."""
    present = _extensions_present(package_dir)
    if not present:
        return "absent", {}
    bypass = {
        module_name(source): package_dir / source
        for source in present
        if (package_dir / source).exists()
    }
    if switch == "off":
        return "off", bypass
    try:
        manifest = json.loads((package_dir / MANIFEST.name).read_text())
        recorded: dict[str, str] = manifest["sources"]
        fresh = bool(recorded) and set(recorded) == set(present) - {_LIBRARY}
        for source, digest in recorded.items():
            if not fresh:
                break
            fresh = _digest(package_dir / source) == digest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        fresh = False
    return ("on", {}) if fresh else ("stale", bypass)


def guard() -> str:
    """Decide, before any compiled module is imported, whether this process uses them."""
    global state
    state, bypass = decide(PACKAGE_DIR, os.environ.get(SWITCH_ENV))
    if bypass:
        sys.meta_path.insert(0, _SourcesFirst(bypass))
    return state


def clean() -> None:
    MANIFEST.unlink(missing_ok=True)
    for path in _extensions_present().values():
        path.unlink(missing_ok=True)


def build(modules: Sequence[str] = MODULES) -> None:
    """Compile `modules` in place and record their sources' digests; on failure, leave
    nothing compiled behind (and raise)."""
    import subprocess
    import tempfile

    clean()
    root = PACKAGE_DIR.parent
    digests = {source: _digest(PACKAGE_DIR / source) for source in modules}
    with tempfile.TemporaryDirectory(prefix="keeldb-native-") as temp:
        files = [str(Path(PACKAGE_DIR.name) / source) for source in modules]
        try:
            done = subprocess.run(
                [sys.executable, "-c", _BUILD_SCRIPT, temp, *files],
                cwd=root,
                check=False,
                capture_output=True,
                text=True,
            )
        except BaseException:
            clean()
            raise
        if done.returncode != 0:
            clean()
            # mypy's and the compiler's complaints, which say what to mend.
            lines = (done.stdout + done.stderr).strip().splitlines()
            raise RuntimeError("the build failed:\n" + "\n".join(lines[-40:]))
    present = _extensions_present()
    missing = [source for source in [*modules, _LIBRARY] if source not in present]
    if missing:
        clean()
        raise RuntimeError(f"the build did not produce {', '.join(missing)}")
    # Written last: without it nothing compiled is used.
    MANIFEST.write_text(json.dumps({"sources": digests}, indent=1, sort_keys=True) + "\n")


def register(commands: Any) -> None:
    """`keeldb native build|status|clean`."""
    native = commands.add_parser(
        "native", help="compile the request path with mypyc, or show whether it is compiled"
    )
    native.add_argument("action", choices=("build", "status", "clean"))
    native.set_defaults(run=run, log_level="warning")


def run(args: Any) -> int:
    if args.action == "build":
        try:
            build()
        except (RuntimeError, OSError) as error:
            print(f"keeldb: compiled modules not built ({error}); KeelDB runs interpreted")
            return 1
        print(f"keeldb: {len(MODULES)} modules compiled")
    elif args.action == "clean":
        clean()
        print("keeldb: compiled modules removed")
    else:
        print(f"compiled modules: {state}")
    return 0
