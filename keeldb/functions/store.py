"""Durable state of the function service: function records, their code, event source mapping
records and each mapping's stream positions.

Owns: the layout under `<data dir>/functions/` (`catalog.json` with every function and mapping
record, `zips/<sha256>.zip` as uploaded, `code/<function>/<sha256>/` unzipped for the
sandboxes, `positions/<uuid>.json` per mapping), and writing each file atomically (temporary
file, fsync, rename, fsync of the directory) so that a crash leaves the old or the new version,
never a torn one. Without a data directory, records live in memory and code in a temporary
directory removed at close.

It must never decide what is valid (see `model`) nor run code; its methods block on the disk,
so the service calls the writing ones off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import orjson

from keeldb.functions.errors import InvalidParameterValueException, RequestTooLargeException
from keeldb.functions.model import UNZIPPED_BYTES_MAX, ZIP_BYTES_MAX

CATALOG_FILE = "catalog.json"
CATALOG_VERSION = 1


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash at any point leaves one whole version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FunctionStore:
    """Records in memory, mirrored to disk when the node has a data directory."""

    def __init__(self, root: Path | None) -> None:
        self.durable = root is not None
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="keeldb-functions-"))
        self.root = root
        self.functions: dict[str, dict[str, Any]] = {}
        self.mappings: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, Any]] = {}
        # Catalog snapshots are written by worker threads; the newest must land last.
        self._catalog_lock = threading.Lock()
        self._catalog_generation = 0
        self._written_generation = 0

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        catalog_path = self.root / CATALOG_FILE
        if not catalog_path.exists():
            return
        catalog = orjson.loads(catalog_path.read_bytes())
        assert catalog["version"] == CATALOG_VERSION, catalog["version"]
        self.functions = {record["name"]: record for record in catalog["functions"]}
        self.mappings = {record["uuid"]: record for record in catalog["mappings"]}
        for uuid in self.mappings:
            path = self.root / "positions" / f"{uuid}.json"
            if path.exists():
                self.positions[uuid] = orjson.loads(path.read_bytes())

    # -- records ----------------------------------------------------------------------------

    def catalog_snapshot(self) -> tuple[int, bytes]:
        """The catalog as it is now, numbered; taken on the event loop, written off it."""
        self._catalog_generation += 1
        data = orjson.dumps(
            {
                "version": CATALOG_VERSION,
                "functions": sorted(self.functions.values(), key=lambda r: r["name"]),
                "mappings": sorted(self.mappings.values(), key=lambda r: r["uuid"]),
            },
            option=orjson.OPT_INDENT_2,
        )
        return self._catalog_generation, data

    def write_catalog(self, generation: int, data: bytes) -> None:
        if not self.durable:
            return
        with self._catalog_lock:
            if generation <= self._written_generation:
                return  # a newer snapshot is already on disk
            write_atomically(self.root / CATALOG_FILE, data)
            self._written_generation = generation

    def write_positions(self, uuid: str, positions: dict[str, Any]) -> None:
        """Write a mapping's positions (the caller keeps `self.positions` up to date)."""
        if self.durable:
            write_atomically(self.root / "positions" / f"{uuid}.json", orjson.dumps(positions))

    def forget_positions(self, uuid: str) -> None:
        self.positions.pop(uuid, None)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "positions" / f"{uuid}.json").unlink()

    # -- queued events ----------------------------------------------------------------------

    def save_event(self, event_id: str, name: str, received: float, payload: bytes) -> None:
        """Journal an accepted Event invocation until it ran or was given up."""
        if not self.durable:
            return
        head = orjson.dumps({"name": name, "received": received})
        write_atomically(self.root / "events" / f"{event_id}.event", head + b"\n" + payload)

    def drop_event(self, event_id: str) -> None:
        if self.durable:
            with contextlib.suppress(FileNotFoundError):
                (self.root / "events" / f"{event_id}.event").unlink()

    def load_events(self) -> list[tuple[str, str, float, bytes]]:
        """The journaled events, oldest first: (id, function name, received, payload)."""
        folder = self.root / "events"
        if not self.durable or not folder.exists():
            return []
        events = []
        for path in folder.glob("*.event"):
            head, _, payload = path.read_bytes().partition(b"\n")
            meta = orjson.loads(head)
            events.append((path.stem, meta["name"], float(meta["received"]), payload))
        events.sort(key=lambda e: e[2])
        return events

    # -- code -------------------------------------------------------------------------------

    def zip_path(self, sha256_hex: str) -> Path:
        return self.root / "zips" / f"{sha256_hex}.zip"

    def code_dir(self, name: str, sha256_hex: str) -> Path:
        return self.root / "code" / name / sha256_hex

    def save_code(self, name: str, data: bytes) -> str:
        """Check, keep and unzip an uploaded zip; return its SHA-256 (hex)."""
        if len(data) > ZIP_BYTES_MAX:
            raise RequestTooLargeException(
                f"Request must be smaller than {ZIP_BYTES_MAX} bytes for the CreateFunction "
                "operation"
            )
        sha = hashlib.sha256(data).hexdigest()
        target = self.code_dir(name, sha)
        if target.exists():
            return sha
        staging = Path(tempfile.mkdtemp(dir=self._ensure(self.root / "code"), prefix=".unzip-"))
        try:
            zip_file = self._ensure(self.root / "zips") / f".{sha}.upload"
            zip_file.write_bytes(data)
            self._unzip(zip_file, staging)
            if self.durable:
                _fsync_tree(staging)
            os.replace(zip_file, self.zip_path(sha))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return sha

    def ensure_code_dir(self, name: str, sha256_hex: str) -> Path:
        """The unzipped code of a function (unzipped again from the kept zip if missing)."""
        target = self.code_dir(name, sha256_hex)
        if not target.exists():
            staging = Path(tempfile.mkdtemp(dir=self._ensure(target.parent), prefix=".unzip-"))
            self._unzip(self.zip_path(sha256_hex), staging)
            os.replace(staging, target)
        return target

    def drop_code(self, name: str, keep_sha256_hex: str | None = None) -> None:
        """Remove a function's unzipped code (all versions but `keep`), and zips no function
        uses any more."""
        folder = self.root / "code" / name
        if folder.exists():
            for child in folder.iterdir():
                if child.name != keep_sha256_hex:
                    shutil.rmtree(child, ignore_errors=True)
        used = {record["code_sha256"] for record in self.functions.values()}
        if keep_sha256_hex is not None:
            used.add(keep_sha256_hex)
        zips = self.root / "zips"
        if zips.exists():
            for path in zips.glob("*.zip"):
                if path.stem not in used:
                    path.unlink(missing_ok=True)

    def close(self) -> None:
        if not self.durable:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _ensure(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _unzip(zip_file: Path, target: Path) -> None:
        try:
            with zipfile.ZipFile(zip_file) as archive:
                total = sum(info.file_size for info in archive.infolist())
                if total > UNZIPPED_BYTES_MAX:
                    raise InvalidParameterValueException(
                        f"Unzipped size must be smaller than {UNZIPPED_BYTES_MAX} bytes"
                    )
                for info in archive.infolist():
                    # extractall drops "..", absolute paths and drive letters from names.
                    archive.extract(info, target)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
            raise InvalidParameterValueException(
                "Could not unzip uploaded file. Please check your file, then try to upload again."
            ) from None


def _fsync_tree(root: Path) -> None:
    for directory, _subdirectories, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
