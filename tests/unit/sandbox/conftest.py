"""Run a function in a forked child, so that what it confines (seccomp, Landlock, rlimits)
ends with the child and never touches the test process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

CHILD_SECONDS_MAX = 30


def run_in_child(function: Callable[[], Any]) -> Any:
    """The JSON value `function` returns in a forked child, or {"raised": ...} if it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            value: Any = {"value": function()}
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            value = {"raised": type(e).__name__, "errno": getattr(e, "errno", None)}
        os.write(write_end, json.dumps(value).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


@pytest.fixture
def in_child() -> Callable[[Callable[[], Any]], Any]:
    return run_in_child
