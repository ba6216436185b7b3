"""Settings for every test: the tools installed beside the interpreter that runs the tests
(the AWS CLI, `keeldb`) come first on PATH, as in an activated virtual environment, so that
`.venv/bin/python -m pytest` finds the ones set up with the project."""

from __future__ import annotations

import os
import sys

_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
