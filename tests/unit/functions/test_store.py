"""Durable records and code of the function service."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile

import pytest

from keeldb.functions.errors import InvalidParameterValueException
from keeldb.functions.store import FunctionStore, write_atomically


def zip_bytes(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "file.json"
    write_atomically(path, b"one")
    write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.json"]


def test_code_is_kept_and_unzipped_per_function_and_digest(tmp_path):
    store = FunctionStore(tmp_path)
    store.load()
    sha = store.save_code("f", zip_bytes({"app.py": "x = 1\n", "pkg/mod.py": "y = 2\n"}))
    assert (store.code_dir("f", sha) / "pkg" / "mod.py").read_text() == "y = 2\n"
    assert store.zip_path(sha).exists()


def test_a_zip_entry_cannot_escape_the_code_directory(tmp_path):
    store = FunctionStore(tmp_path / "root")
    store.load()
    sha = store.save_code("f", zip_bytes({"../../escape.py": "bad\n"}))
    assert not (tmp_path / "escape.py").exists()
    assert list(store.code_dir("f", sha).rglob("escape.py"))


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    store = FunctionStore(tmp_path)
    store.load()
    with pytest.raises(InvalidParameterValueException, match="Could not unzip"):
        store.save_code("f", b"plain text")


def test_records_and_positions_survive_reopening(tmp_path):
    store = FunctionStore(tmp_path)
    store.load()
    store.functions["f"] = {"name": "f", "code_sha256": "00"}
    store.mappings["u"] = {"uuid": "u", "function": "f"}
    store.write_catalog(*store.catalog_snapshot())
    store.positions["u"] = {"shard": {"after": "123"}}
    store.write_positions("u", store.positions["u"])
    again = FunctionStore(tmp_path)
    again.load()
    assert again.functions == store.functions
    assert again.mappings == store.mappings
    assert again.positions == {"u": {"shard": {"after": "123"}}}


def test_an_older_catalog_snapshot_never_overwrites_a_newer_one(tmp_path):
    store = FunctionStore(tmp_path)
    store.load()
    store.functions["f"] = {"name": "f"}
    old = store.catalog_snapshot()
    store.functions["g"] = {"name": "g"}
    new = store.catalog_snapshot()
    store.write_catalog(*new)
    store.write_catalog(*old)
    again = FunctionStore(tmp_path)
    again.load()
    assert sorted(again.functions) == ["f", "g"]


def test_functions_and_mappings_survive_a_service_restart(harness, fakes):
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f", Timeout=7))
        await service.put_concurrency("f", {"ReservedConcurrentExecutions": 3})
        mapping = await service.create_mapping(
            {"EventSourceArn": fakes.STREAM_ARN, "FunctionName": "f", "StartingPosition": "LATEST"}
        )
        await service.close()
        again = harness.service()
        await again.start()
        assert again.get_configuration("f", None)["Timeout"] == 7
        assert again.get_concurrency("f") == {"ReservedConcurrentExecutions": 3}
        assert again.get_mapping(mapping["UUID"])["State"] == "Enabled"
        sha = again.store.functions["f"]["code_sha256"]
        code = again.code_zip("f", sha, again.code_links.token("f", sha))
        original = base64.b64decode(fakes.create_body("f")["Code"]["ZipFile"])
        assert code == original
        await again.close()

    asyncio.run(scenario())


def test_an_in_memory_store_removes_its_code_at_close(tmp_path):
    store = FunctionStore(None)
    store.load()
    sha = store.save_code("f", zip_bytes({"app.py": "x = 1\n"}))
    assert store.code_dir("f", sha).exists()
    store.close()
    assert not store.root.exists()


def test_a_function_name_with_dots_cannot_reach_outside_the_code_directory(harness, fakes):
    async def scenario() -> None:
        from keeldb.functions.errors import ValidationException

        service = harness.service()
        await service.start()
        for name in ("..", "a..b", "x.y"):
            with pytest.raises(ValidationException):
                await service.create_function(fakes.create_body(name))
        assert service.store.functions == {}
        await service.close()

    asyncio.run(scenario())


def test_a_dry_run_code_update_changes_nothing(harness, fakes):
    async def scenario() -> None:
        service = harness.service()
        await service.start()
        created = await service.create_function(fakes.create_body("f"))
        new = fakes.zip_b64({"app.py": "def handler(e, c):\n    return 2\n"})
        answer = await service.update_code("f", {"ZipFile": new, "DryRun": True})
        assert answer["CodeSha256"] != created["CodeSha256"]
        assert service.get_configuration("f", None)["CodeSha256"] == created["CodeSha256"]
        await service.close()

    asyncio.run(scenario())
