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

    def record(self, time_us: int, text: str, detail: str = "",
               readable: str | None = None) -> None:
        """One event. The hash covers `text` and `detail` (the full value); the readable
        trace shows `readable` (a summary) when given, else `text`. What is hashed never
        depends on whether lines are kept."""
        line = f"{time_us / 1000:10.3f}ms {text}"
        self._hash.update(line.encode())
        self._hash.update(detail.encode())
        self._hash.update(b"\n")
        if readable is not None:
            line = f"{time_us / 1000:10.3f}ms {readable}"
        self.events += 1
        if self.keep_lines:
            if len(line) > TRACE_VALUE_CHARS_MAX + 40:
                line = line[: TRACE_VALUE_CHARS_MAX + 40] + " ..."
            self.lines.append(line)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def short(value: Any) -> str:
    """A one-line summary of a message for the readable trace: its kind, who sent it to
    whom, and its fields with ballots as round.node and entries as what they do."""
    plain = not (dataclasses.is_dataclass(value) and not isinstance(value, type))
    if plain or type(value).__name__ in ("Ballot", "Entry", "LogEntry", "Snapshot"):
        return _short_field(value)
    parts = [type(value).__name__]
    src, dst = getattr(value, "src", None), getattr(value, "dst", None)
    if src is not None and dst is not None:
        parts.append(f"{src}->{dst}")
    for f in dataclasses.fields(value):
        if f.name in ("src", "dst"):
            continue
        parts.append(f"{f.name}={_short_field(getattr(value, f.name))}")
    return " ".join(parts)


def _short_field(value: Any) -> str:
    name = type(value).__name__
    if name == "Ballot":
        return str(value)
    if name == "Entry":
        return _short_entry(value)
    if name == "LogEntry":
        return f"{value.slot}@{value.ballot}:{_short_entry(value.entry)}"
    if name == "Snapshot":
        return f"snapshot(slot {value.slot}, {len(value.state)} bytes)"
    if isinstance(value, tuple) and value and isinstance(value[0], tuple) and len(value[0]) == 2:
        return "[" + ", ".join(f"{slot}:{_short_field(entry)}" for slot, entry in value) + "]"
    if isinstance(value, tuple):
        return "[" + ", ".join(_short_field(v) for v in value) + "]"
    return canonical(value)


def _short_entry(entry: Any) -> str:
    kind = str(entry.kind.name).lower()
    if kind == "command":
        from keeldb.consensus.sim.kv import Command

        command = Command.decode(entry.command)
        if command is None:
            return f"cmd({len(entry.command)} bytes)"
        what = f"{command.kind.value} {command.key}"
        if command.value is not None:
            what += f"={command.value.decode('utf-8', 'replace')}"
        return f"c{command.client}r{command.request}:{what}"
    if kind == "config":
        return f"config({entry.config})"
    return kind
