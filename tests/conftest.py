"""Settings for every test: the tools installed beside the interpreter that runs the tests
(the AWS CLI, `keeldb`) come first on PATH, as in an activated virtual environment, so that
`.venv/bin/python -m pytest` finds the ones set up with the project."""

from __future__ import annotations

import os
import sys

_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def pytest_collection_modifyitems(config: object, items: list[object]) -> None:
    """With the compiled modules in use, the tests marked `interpreted` (they replace parts
    of those modules, which a compiled module does not see) are left to
    tests/test_interpreted.py, which runs them on the sources in a process of their own."""
    import keeldb.native

    if keeldb.native.state != "on":
        return
    kept, left = [], []
    for item in items:
        (left if item.get_closest_marker("interpreted") else kept).append(item)  # type: ignore[attr-defined]
    if left:
        config.hook.pytest_deselected(items=left)  # type: ignore[attr-defined]
        items[:] = kept
