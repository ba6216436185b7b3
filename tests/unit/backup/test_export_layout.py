"""The closing objects of a full export (`keeldb.backup.exports.finish_export`), as a single
node and a cluster both write them: AWS's manifest layout, counts summed over the data
files, and the files' manifest written before the summary that names it."""

from __future__ import annotations

import gzip
import json
from typing import Any

from keeldb.backup import exports as export_format
from keeldb.engine.backups import iso_time

ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/things/export/01700000000000-abcdef12"
ROOT = export_format.export_root("daily/", "01700000000000-abcdef12")


def _description() -> dict[str, Any]:
    return {
        "ExportArn": ARN,
        "ExportStatus": "IN_PROGRESS",
        "StartTime": 1_700_000_000.5,
        "ExportTime": 1_699_999_990.0,
        "TableArn": "arn:aws:dynamodb:us-east-1:000000000000:table/things",
        "TableId": "0f6b1d2e-0000-4000-8000-000000000000",
        "S3Bucket": "exports",
        "S3Prefix": "daily/",
        "S3SseAlgorithm": "AES256",
    }


def _data_file(name: str, items: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    data = export_format.encode_data_file(items)
    return export_format.data_file_entry(f"{ROOT}data/{name}.json.gz", data, len(items)), 40 * len(
        items
    )


def test_a_finished_export_writes_the_files_manifest_then_the_summary_naming_it() -> None:
    results = [
        _data_file("a", [{"pk": {"S": f"a{n}"}} for n in range(3)]),
        _data_file("b", []),
        _data_file("c", [{"pk": {"S": "c0"}}, {"pk": {"S": "c1"}}]),
    ]
    finished = export_format.finish_export(
        _description(), root=ROOT, results=results, end_time=1_700_000_007.25, iso_time=iso_time
    )
    (files_key, files), (summary_key, summary_data) = finished.objects
    assert files_key == "daily/AWSDynamoDB/01700000000000-abcdef12/manifest-files.json"
    assert summary_key == "daily/AWSDynamoDB/01700000000000-abcdef12/manifest-summary.json"
    lines = [json.loads(line) for line in files.decode().splitlines()]
    assert lines == [entry for entry, _ in results]
    summary = json.loads(summary_data)
    assert summary["manifestFilesS3Key"] == files_key
    assert summary["itemCount"] == 5
    assert summary["billedSizeBytes"] == 200
    assert summary["exportArn"] == ARN
    assert summary["endTime"] == iso_time(1_700_000_007.25)
    assert summary["startTime"] == iso_time(1_700_000_000.5)
    assert summary["exportTime"] == iso_time(1_699_999_990.0)
    assert (summary["outputFormat"], summary["exportType"]) == ("DYNAMODB_JSON", "FULL_EXPORT")
    assert finished.completed == {
        "ExportStatus": "COMPLETED",
        "EndTime": 1_700_000_007.25,
        "ExportManifest": summary_key,
        "BilledSizeBytes": 200,
        "ItemCount": 5,
    }


def test_an_export_of_an_empty_table_has_an_empty_files_manifest_and_no_items() -> None:
    finished = export_format.finish_export(
        _description(), root=ROOT, results=[], end_time=1_700_000_001.0, iso_time=iso_time
    )
    (_, files), (_, summary_data) = finished.objects
    assert files == b""
    assert json.loads(summary_data)["itemCount"] == 0
    assert finished.completed["ItemCount"] == 0
    assert finished.completed["BilledSizeBytes"] == 0


def test_a_data_file_entry_counts_the_items_its_file_holds() -> None:
    items = [{"pk": {"S": "x"}, "n": {"N": "1"}}]
    entry, _ = _data_file("x", items)
    data = export_format.encode_data_file(items)
    assert [json.loads(line) for line in gzip.decompress(data).splitlines()] == [
        {"Item": item} for item in items
    ]
    assert entry["itemCount"] == 1
