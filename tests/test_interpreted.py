"""The tests that replace parts of the compiled modules run on the sources.

A test marked `interpreted` swaps a function, a method or a module a compiled module uses
(to count its calls, or to break it on purpose and see a check catch it). Compiled code
calls its own functions directly, so it would not see the swap. When the compiled modules
are in use (keeldb/native.py), tests/conftest.py leaves those tests out of the session and
this test runs them all in a second pytest process with `KEELDB_NATIVE=off`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import keeldb.native

ROOT = Path(__file__).resolve().parent.parent


def test_the_tests_marked_interpreted_pass_on_the_sources() -> None:
    if keeldb.native.state != "on":
        pytest.skip("this session runs the sources: the marked tests ran in it")
    env = dict(os.environ, KEELDB_NATIVE="off")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "interpreted"],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    # Every marked test ran there (none was deselected or skipped away).
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
