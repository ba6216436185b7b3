"""The event trace of a run and its hash: a run is a pure function of its seed, and the
hash over the trace is how tests prove it.

It owns `canonical`, a rendering of messages, records and entries that does not depend on
the process (no object addresses, sets and dict keys sorted, so string hash seeds cannot
change it), and `Trace`, which hashes every event and keeps the readable lines only when
asked. It never does IO.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any

# Longest rendering of a single value kept in a readable trace line.
TRACE_VALUE_CHARS_MAX = 400


def canonical(value: Any) -> str:
    """A deterministic text form of `value`, stable across processes and hash seeds."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (str, bytes)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(
            f"{f.name}={canonical(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
        return f"{type(value).__name__}({inner})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(canonical(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(canonical(v) for v in value)) + "}"
    if isinstance(value, dict):
        items = sorted((canonical(k), canonical(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if hasattr(value, "__slots__") and not hasattr(value, "__dict__"):
        names = [n for cls in type(value).__mro__ for n in getattr(cls, "__slots__", ())]
        inner = ", ".join(f"{n}={canonical(getattr(value, n, None))}" for n in names)
        return f"{type(value).__name__}({inner})"
    if hasattr(value, "__dict__"):
        inner = ", ".join(f"{k}={canonical(v)}" for k, v in sorted(vars(value).items()))
        return f"{type(value).__name__}({inner})"
    text = repr(value)
    assert " at 0x" not in text, f"unstable repr for {type(value).__name__}"
    return text


class Trace:
    def __init__(self, keep_lines: bool) -> None:
        self._hash = hashlib.sha256()
        self.keep_lines = keep_lines
        self.lines: list[str] = []
        self.events = 0

    def record(self, time_us: int, text: str) -> None:
        line = f"{time_us / 1000:10.3f}ms {text}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.events += 1
        if self.keep_lines:
            if len(line) > TRACE_VALUE_CHARS_MAX + 40:
                line = line[: TRACE_VALUE_CHARS_MAX + 40] + " ..."
            self.lines.append(line)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
