"""The backup store: where the archive, on-demand backups and exports are kept.

This module owns one small interface for a backup target (`BackupStore`: put, get, list and
delete whole objects under "/"-separated keys) and its two backends: a directory
(`DirectoryStore`, `--backup-dir`) and any S3-compatible server through boto3's S3 client
(`S3Store`, `--backup-s3 s3://bucket/prefix` with `--backup-s3-endpoint URL`). It also owns
the verified upload (`put_verified`: write, read back, compare the SHA-256, as DynamoDB's
archivers check every upload) and the verified download (`get_verified`), which refuse an
object whose checksum differs with `ArchiveCorruptError`.

Every call blocks: callers run them in a worker thread, never on the event loop. This module
never decides what is stored or when; it never interprets the bytes it moves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from keeldb.storage.wal import fsync_directory, make_directory_durable

COPY_CHUNK_BYTES = 1024 * 1024  # files are hashed and copied in pieces of this size
S3_LIST_PAGE_KEYS = 1000  # ListObjectsV2's page size (its maximum)
S3_ATTEMPTS_MAX = 3  # tries of one S3 call (boto3's standard retry mode)
S3_CONNECT_SECONDS = 5.0
S3_READ_SECONDS = 60.0


class ArchiveCorruptError(Exception):
    """An object of the backup store does not hold what its manifest says (an operating
    error: the archive is damaged and the object is refused)."""


class ObjectMissingError(Exception):
    """A key the caller expected is not in the backup store."""


class BackupStore(Protocol):
    """Whole objects under "/"-separated keys. `put` is atomic: a reader sees the whole
    object or no object, even after a crash in the middle of the put."""

    def put(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissingError if there is none."""
        ...

    def get_file(self, key: str, path: Path) -> None: ...

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`, sorted."""
        ...

    def delete(self, key: str) -> None: ...

    def bucket(self, name: str) -> BackupStore:
        """The store an export's or an import's S3Bucket names."""
        ...

    def describe(self) -> str: ...


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def put_verified(store: BackupStore, key: str, data: bytes) -> str:
    """Upload `data`, read it back and compare; returns its SHA-256 (hex)."""
    expected = sha256_bytes(data)
    store.put(key, data)
    found = sha256_bytes(store.get(key))
    if found != expected:
        raise ArchiveCorruptError(
            f"{store.describe()}: {key} read back with sha256 {found}, uploaded {expected}"
        )
    return expected


def put_file_verified(store: BackupStore, key: str, path: Path, scratch: Path) -> str:
    """Upload the file at `path`, download it again into `scratch` and compare."""
    expected = sha256_file(path)
    store.put_file(key, path)
    check = scratch / "read-back"
    try:
        store.get_file(key, check)
        found = sha256_file(check)
    finally:
        check.unlink(missing_ok=True)
    if found != expected:
        raise ArchiveCorruptError(
            f"{store.describe()}: {key} read back with sha256 {found}, uploaded {expected}"
        )
    return expected


def get_verified(store: BackupStore, key: str, sha256: str) -> bytes:
    """The object's bytes, refused unless their SHA-256 is `sha256`."""
    data = store.get(key)
    found = sha256_bytes(data)
    if found != sha256:
        raise ArchiveCorruptError(
            f"{store.describe()}: {key} is damaged: its sha256 is {found}, "
            f"the manifest says {sha256}"
        )
    return data


def get_file_verified(store: BackupStore, key: str, sha256: str, path: Path) -> None:
    store.get_file(key, path)
    found = sha256_file(path)
    if found != sha256:
        path.unlink(missing_ok=True)
        raise ArchiveCorruptError(
            f"{store.describe()}: {key} is damaged: its sha256 is {found}, "
            f"the manifest says {sha256}"
        )


# --- a directory ----------------------------------------------------------------------------


class DirectoryStore:
    """Objects as files under `root`; a put writes a temporary file, fsyncs it and renames
    it into place (then fsyncs the directory), so a crash leaves the old object or the new
    one, never a part."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        # Empty parts ("a//b") are skipped; "." and ".." are refused, so that a key (an
        # export's prefix comes from a request) never names a path outside the root.
        parts = [part for part in key.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise ValueError(f"not a key of a directory store: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        make_directory_durable(path.parent)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(path.parent)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        make_directory_durable(target.parent)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                shutil.copyfileobj(source, out, COPY_CHUNK_BYTES)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissingError(f"{self.describe()}: no object {key}") from None

    def get_file(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise ObjectMissingError(f"{self.describe()}: no object {key}") from None

    def list(self, prefix: str) -> list[str]:
        # Walk only the directory the prefix names, not the whole store.
        directory, _, _ = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        if not base.is_dir():
            return []
        keys = []
        for folder, _, files in os.walk(base):
            for name in files:
                if name.startswith(".part-"):
                    continue  # an upload a crash interrupted: never an object
                key = Path(folder, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def bucket(self, name: str) -> DirectoryStore:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a bucket name: {name!r}")
        return DirectoryStore(self.root / "s3" / name)

    def describe(self) -> str:
        return str(self.root)


# --- S3 -------------------------------------------------------------------------------------


def parse_s3_url(url: str) -> tuple[str, str]:
    """("bucket", "prefix/") of "s3://bucket/prefix"; ValueError if it is not an S3 URL."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an S3 URL (s3://BUCKET/PREFIX): {url!r}")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


class S3Store:
    """Objects in an S3 bucket under a key prefix, through boto3's S3 client. A PUT is
    atomic in S3, so no object is ever seen in part."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix

    @classmethod
    def connect(cls, url: str, endpoint: str | None, region: str) -> S3Store:
        import boto3
        from botocore.config import Config

        bucket, prefix = parse_s3_url(url)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            # An unreachable endpoint is noticed in seconds: the archiver's first pass runs
            # while the node starts, and its later passes retry on their own.
            config=Config(
                retries={"max_attempts": S3_ATTEMPTS_MAX, "mode": "standard"},
                connect_timeout=S3_CONNECT_SECONDS,
                read_timeout=S3_READ_SECONDS,
            ),
        )
        return cls(client, bucket, prefix)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket_name, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket_name, self._key(key))

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket_name, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise ObjectMissingError(f"{self.describe()}: no object {key}") from None
        data: bytes = response["Body"].read()
        return data

    def get_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket_name, self._key(key), str(path))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise ObjectMissingError(f"{self.describe()}: no object {key}") from None
            raise

    def list(self, prefix: str) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket_name,
            Prefix=self._key(prefix),
            PaginationConfig={"PageSize": S3_LIST_PAGE_KEYS},
        )
        for page in pages:
            for entry in page.get("Contents", []):
                keys.append(entry["Key"][len(self.prefix) :])
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket_name, Key=self._key(key))

    def bucket(self, name: str) -> S3Store:
        return S3Store(self.client, name, "")

    def describe(self) -> str:
        return f"s3://{self.bucket_name}/{self.prefix}"


def open_store(
    data_dir: Path | None,
    backup_dir: Path | None,
    s3_url: str | None,
    s3_endpoint: str | None,
    region: str,
) -> BackupStore | None:
    """The backup store a node's configuration names; None when it has none (a node kept
    in memory with no backup directory)."""
    if s3_url is not None:
        return S3Store.connect(s3_url, s3_endpoint, region)
    if backup_dir is not None:
        return DirectoryStore(backup_dir)
    if data_dir is not None:
        return DirectoryStore(Path(data_dir) / "backups")
    return None
