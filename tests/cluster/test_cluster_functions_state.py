"""The function state a cluster replicates: `MirroredStore` replicates before it writes
locally, and `materialize` rebuilds a home's directory from the replicated keys so that a
plain `FunctionStore` loads what the previous home had (files only; no processes)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from keeldb.cluster import functions_route
from keeldb.engine.database import Database
from keeldb.functions.store import FunctionStore
from keeldb.storage.memory import MemoryLog, MemoryStore


def zip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", text)
    return buffer.getvalue()


class Replicated:
    """The metadata group's keys, as `functions_state` records leave them (a dict)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.later: list[tuple[list[Any], list[str]]] = []
        self.failing = False

    def mirror(self, puts: list[tuple[str, bytes]], deletes: list[str]) -> None:
        if self.failing:
            raise functions_route.StateUnavailable("not the home")
        for key, value in puts:
            self.keys[key] = value
        for key in deletes:
            self.keys.pop(key, None)

    def mirror_later(self, puts: list[tuple[str, bytes]], deletes: list[str]) -> None:
        self.later.append((puts, deletes))
        self.mirror(puts, deletes)


def test_a_new_home_loads_exactly_what_the_old_home_replicated(tmp_path: Path) -> None:
    replicated = Replicated()
    old = functions_route.MirroredStore(
        tmp_path / "old", replicated.mirror, replicated.mirror_later
    )
    old.load()
    sha = old.save_code("f", zip_bytes("def handler(e, c): return 1"))
    old.functions["f"] = {"name": "f", "code_sha256": sha}
    old.mappings["m1"] = {"uuid": "m1", "function": "f"}
    old.write_catalog(*old.catalog_snapshot())
    old.write_positions("m1", {"shardId-1": {"after": "100000000000000001000"}})
    old.save_event("e1", "f", 12.5, b'{"x": 1}')
    old.save_event("e2", "f", 13.0, b'{"x": 2}')
    old.drop_event("e1")

    new_root = tmp_path / "new"
    (new_root / "positions").mkdir(parents=True)
    (new_root / "positions" / "stale.json").write_bytes(b"{}")  # from an earlier term
    functions_route.materialize(new_root, sorted(replicated.keys.items()))
    new = FunctionStore(new_root)
    new.load()
    assert new.functions == old.functions
    assert new.mappings == old.mappings
    assert new.positions == {"m1": {"shardId-1": {"after": "100000000000000001000"}}}
    assert [(e[0], e[1], e[2], e[3]) for e in new.load_events()] == [("e2", "f", 13.0, b'{"x": 2}')]
    assert (new.ensure_code_dir("f", sha) / "app.py").read_text() == "def handler(e, c): return 1"
    assert not (new_root / "positions" / "stale.json").exists()


def test_nothing_is_written_locally_that_was_not_replicated(tmp_path: Path) -> None:
    replicated = Replicated()
    store = functions_route.MirroredStore(tmp_path, replicated.mirror, replicated.mirror_later)
    store.load()
    store.write_positions("m1", {"s": {"after": "1"}})
    replicated.failing = True
    with pytest.raises(functions_route.StateUnavailable):
        store.write_positions("m1", {"s": {"after": "2"}})
    with pytest.raises(functions_route.StateUnavailable):
        store.write_catalog(*store.catalog_snapshot())
    # The local copy never runs ahead of the replicated state, which the next home starts
    # from: what this home did here, it handed on.
    assert orjson.loads((tmp_path / "positions" / "m1.json").read_bytes()) == {"s": {"after": "1"}}
    assert not (tmp_path / "catalog.json").exists()


def test_dropped_code_is_dropped_from_the_replicated_state_too(tmp_path: Path) -> None:
    replicated = Replicated()
    store = functions_route.MirroredStore(tmp_path, replicated.mirror, replicated.mirror_later)
    store.load()
    first = store.save_code("f", zip_bytes("one = 1"))
    second = store.save_code("f", zip_bytes("two = 2"))
    store.functions["f"] = {"name": "f", "code_sha256": second}
    store.drop_code("f", second)
    assert f"zips/{first}" not in replicated.keys
    assert f"zips/{second}" in replicated.keys


def test_the_state_record_writes_its_keys_in_the_metadata_store() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        store = MemoryStore()
        db = Database(store)
        db.attach_log(MemoryLog(db.apply, start_lsn=store.applied_lsn()))
        record = {"kind": functions_route.STATE_KIND, "puts": [["catalog", b"{}"]], "deletes": []}
        await db.propose(record)
        await db.propose(
            {
                "kind": functions_route.STATE_KIND,
                "puts": [["positions/m1", b"[1]"]],
                "deletes": ["catalog"],
            }
        )
        return functions_route.state_entries(db)

    assert asyncio.run(scenario()) == [("positions/m1", b"[1]")]


def test_unknown_or_escaping_state_keys_are_never_written(tmp_path: Path) -> None:
    functions_route.materialize(
        tmp_path,
        [("zips/../../etc", b"x"), ("other/thing", b"x"), ("positions/.hidden", b"x")],
    )
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []
