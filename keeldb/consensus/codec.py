"""Plain-data encoding of the consensus vocabulary, for drivers that put it on a wire or a disk.

Owns the mapping between messages, records and their parts and nested lists of ints, bytes,
strings, booleans and None, which msgpack (or any similar format) encodes as is: every
dataclass becomes `[type name, field values...]`, every tuple `["", items...]`, an enum
`[enum name, value]`. Must never choose the byte format or do IO: the driver packs the plain
value. Decoding rejects anything it does not know with CodecError (input from the network is
the world's, not ours).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from keeldb.consensus import messages, types

TUPLE_TAG = ""
NESTING_MAX = 16  # deeper input is garbage: our values nest at most about 8 levels


class CodecError(ValueError):
    """A plain value that does not decode to a consensus message or record."""


_DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        *messages.MESSAGE_TYPES,
        messages.PromiseRecord,
        messages.AcceptRecord,
        messages.ChosenRecord,
        messages.CommitRecord,
        messages.SnapshotRecord,
        messages.IncarnationRecord,
        types.Ballot,
        types.Member,
        types.Config,
        types.Entry,
        types.LogEntry,
        types.Snapshot,
    )
}
_ENUMS: dict[str, type[enum.Enum]] = {types.EntryKind.__name__: types.EntryKind}
_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in _DATACLASSES.items()
}


def to_plain(value: Any) -> Any:
    """A consensus message or record as nested lists of plain values."""
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    if isinstance(value, enum.Enum):
        name = type(value).__name__
        assert name in _ENUMS, f"unregistered enum {name}"
        return [name, value.value]
    if isinstance(value, tuple):
        return [TUPLE_TAG, *(to_plain(item) for item in value)]
    name = type(value).__name__
    assert name in _DATACLASSES, f"unregistered type {name}"
    return [name, *(to_plain(getattr(value, field)) for field in _FIELDS[name])]


def from_plain(plain: Any, _depth: int = 0) -> Any:
    """The inverse of to_plain; CodecError for anything else."""
    if _depth > NESTING_MAX:
        raise CodecError("value nested too deeply")
    if plain is None or isinstance(plain, bool | int | str | bytes):
        return plain
    if not isinstance(plain, list | tuple) or not plain or not isinstance(plain[0], str):
        raise CodecError(f"expected a tagged list, got {type(plain).__name__}")
    tag, items = plain[0], plain[1:]
    if tag == TUPLE_TAG:
        return tuple(from_plain(item, _depth + 1) for item in items)
    if tag in _ENUMS:
        if len(items) != 1:
            raise CodecError(f"{tag}: expected one value")
        try:
            return _ENUMS[tag](items[0])
        except ValueError as exc:
            raise CodecError(f"{tag}: unknown value {items[0]!r}") from exc
    cls = _DATACLASSES.get(tag)
    if cls is None:
        raise CodecError(f"unknown type {tag!r}")
    if len(items) != len(_FIELDS[tag]):
        raise CodecError(f"{tag}: expected {len(_FIELDS[tag])} fields, got {len(items)}")
    return cls(*(from_plain(item, _depth + 1) for item in items))
