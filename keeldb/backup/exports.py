"""DynamoDB's export layout (DYNAMODB_JSON), written and read, so tables move between KeelDB
servers and to and from AWS.

An export of table T with ExportArn ".../export/ID" to bucket B and prefix P is::

    P/AWSDynamoDB/ID/manifest-summary.json   what was exported, when, how many items
    P/AWSDynamoDB/ID/manifest-files.json     one JSON line per data file
    P/AWSDynamoDB/ID/data/NAME.json.gz       one {"Item": {...}} JSON line per item

(AWS's documentation, "DynamoDB table export output format"). ImportTable reads every data
file under an S3KeyPrefix, gzip-compressed or not. This module owns those formats; it never
decides which items are exported and never touches a table.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MANIFEST_VERSION = "2020-06-30"  # manifest-summary.json's "version", as AWS writes it
DATA_SUFFIXES = (".json.gz", ".json")


def export_root(prefix: str | None, export_id: str) -> str:
    prefix = (prefix or "").strip("/")
    return f"{prefix}/AWSDynamoDB/{export_id}/" if prefix else f"AWSDynamoDB/{export_id}/"


def encode_data_file(items: list[dict[str, Any]]) -> bytes:
    """A gzip-compressed data file: one {"Item": item} JSON object per line."""
    lines = "".join(json.dumps({"Item": item}, separators=(",", ":")) + "\n" for item in items)
    return gzip.compress(lines.encode(), compresslevel=6)


def data_file_entry(key: str, data: bytes, item_count: int) -> dict[str, Any]:
    """One line of manifest-files.json."""
    md5 = hashlib.md5(data, usedforsecurity=False)
    return {
        "itemCount": item_count,
        "md5Checksum": base64.b64encode(md5.digest()).decode(),
        "etag": md5.hexdigest(),
        "dataFileS3Key": key,
    }


def manifest_summary(
    description: dict[str, Any],
    *,
    arn: str,
    end_time: str,
    files_key: str,
    entries: list[dict[str, Any]],
    billed_bytes: int,
    iso_time: Any,
) -> dict[str, Any]:
    """manifest-summary.json of a finished full export, from its description (times as
    `iso_time` writes them; `end_time` already written so), its files' entries and size."""
    return {
        "version": MANIFEST_VERSION,
        "exportArn": arn,
        "startTime": iso_time(description["StartTime"]),
        "endTime": end_time,
        "tableArn": description["TableArn"],
        "tableId": description["TableId"],
        "exportTime": iso_time(description["ExportTime"]),
        "s3Bucket": description["S3Bucket"],
        "s3Prefix": description.get("S3Prefix"),
        "s3SseAlgorithm": description["S3SseAlgorithm"],
        "s3SseKmsKeyId": description.get("S3SseKmsKeyId"),
        "manifestFilesS3Key": files_key,
        "billedSizeBytes": billed_bytes,
        "itemCount": sum(e["itemCount"] for e in entries),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }


def encode_manifest_files(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()


@dataclass(frozen=True, slots=True)
class FinishedExport:
    """The closing objects of a full export and what its description says once they are
    written."""

    objects: tuple[tuple[str, bytes], ...]  # (key, data) in the order they must be written
    completed: dict[str, Any]  # the description's members once every object is written


def finish_export(
    description: dict[str, Any],
    *,
    root: str,
    results: list[tuple[dict[str, Any], int]],
    end_time: float,
    iso_time: Callable[[float], str],
) -> FinishedExport:
    """manifest-files.json and manifest-summary.json of a full export whose data files were
    written, from each data file's (manifest-files entry, bytes of items read): the files'
    manifest first, as the summary names it, so a stop between the two leaves no summary
    naming a manifest that is not there."""
    entries = [entry for entry, _ in results]
    billed = sum(size for _, size in results)
    files_key = f"{root}manifest-files.json"
    summary_key = f"{root}manifest-summary.json"
    summary = manifest_summary(
        description,
        arn=description["ExportArn"],
        end_time=iso_time(end_time),
        files_key=files_key,
        entries=entries,
        billed_bytes=billed,
        iso_time=iso_time,
    )
    return FinishedExport(
        objects=(
            (files_key, encode_manifest_files(entries)),
            (summary_key, json.dumps(summary).encode()),
        ),
        completed={
            "ExportStatus": "COMPLETED",
            "EndTime": end_time,
            "ExportManifest": summary_key,
            "BilledSizeBytes": billed,
            "ItemCount": summary["itemCount"],
        },
    )


def is_data_file(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    if name.startswith(("manifest-", "_")):
        return False
    return key.endswith(DATA_SUFFIXES)


class ImportFormatError(ValueError):
    """A line of an import's data file is not a DynamoDB JSON item."""


def read_data_file(data: bytes, compression: str) -> Iterator[dict[str, Any] | ImportFormatError]:
    """The items of one data file (or, per bad line, the error that line makes)."""
    if compression == "GZIP":
        data = gzip.decompress(data)
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as error:
            yield ImportFormatError(f"line {number}: {error}")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("Item"), dict):
            yield ImportFormatError(f'line {number}: no "Item" object')
            continue
        item: dict[str, Any] = entry["Item"]
        yield item
