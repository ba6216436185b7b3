"""The `keeldb verify` and `keeldb backup watch` subcommands (registered by
`keeldb.cli.COMMAND_MODULES`).

`keeldb verify [--table T] [--data-dir D] [--backup-dir DIR | --backup-s3 URL
[--backup-s3-endpoint URL]]` rebuilds a stopped node's state from its archive and log and
compares it with its store (`keeldb.backup.verify`), showing rich progress bars; it prints
the differences and exits 1 if there is any (or if the archive is damaged), 0 if the states
are equal, 2 if the check cannot be made.

`keeldb backup watch --endpoint URL (--table NAME | --backup-arn ARN | --export-arn ARN |
--import-arn ARN)` follows a restore, a backup, an export or an import through the DynamoDB
API with a rich progress bar until it ends. This module only parses arguments and reports.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from keeldb.backup.manifest import ArchiveGapError
from keeldb.backup.service import NODE_ID_FILE, PrefixedStore
from keeldb.backup.store import ArchiveCorruptError, ObjectMissingError, open_store
from keeldb.backup.verify import VerifyError, verify_node

EXIT_EQUAL = 0
EXIT_DIFFERENT = 1
EXIT_CANNOT_CHECK = 2


def register(commands: Any) -> None:
    """Add this package's subcommands to the `keeldb` parser's subcommands."""
    verify = commands.add_parser(
        "verify",
        help="rebuild a stopped node's state from its archive and compare it with its store",
    )
    verify.add_argument("--table", help="compare only this table (default: everything)")
    verify.add_argument(
        "--data-dir", type=Path, default=Path("keeldb-data"), help="the node's data directory"
    )
    verify.add_argument("--backup-dir", type=Path, metavar="DIR", help="the backup directory")
    verify.add_argument("--backup-s3", metavar="S3_URL", help="the backup store s3://BUCKET/PREFIX")
    verify.add_argument("--backup-s3-endpoint", metavar="URL", help="its S3-compatible server")
    verify.add_argument("--region", default="us-east-1", help="the S3 client's region")
    verify.add_argument(
        "--master-key-file",
        type=Path,
        metavar="FILE",
        help="the master key of a node encrypted at rest",
    )
    verify.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning"
    )
    verify.set_defaults(run=run_verify)

    backup = commands.add_parser("backup", help="follow restores, backups, exports and imports")
    actions = backup.add_subparsers(dest="action", required=True)
    watch = actions.add_parser(
        "watch", help="show a progress bar until a restore, backup, export or import ends"
    )
    watch.add_argument("--endpoint", required=True, help="the server's URL")
    watch.add_argument("--region", default="us-east-1")
    target = watch.add_mutually_exclusive_group(required=True)
    target.add_argument("--table", help="a table being restored or imported")
    target.add_argument("--backup-arn", help="a backup being created")
    target.add_argument("--export-arn", help="an export in progress")
    target.add_argument("--import-arn", help="an import in progress")
    watch.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    watch.add_argument("--timeout", type=float, default=24 * 3600.0, help="give up after this")
    watch.set_defaults(run=run_watch, log_level="warning")


def run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    data_dir: Path = args.data_dir
    id_file = data_dir / NODE_ID_FILE
    if not (data_dir / "store").is_dir() or not id_file.exists():
        console.print(f"keeldb verify: {data_dir} is not the data directory of a node with backups")
        return EXIT_CANNOT_CHECK
    base = open_store(
        data_dir, args.backup_dir, args.backup_s3, args.backup_s3_endpoint, args.region
    )
    assert base is not None
    store = PrefixedStore(base, f"nodes/{id_file.read_text().strip()}/")
    from keeldb import crypto

    try:
        keyring = crypto.open_for_data_dir(
            data_dir, args.master_key_file, backup_dir=args.backup_dir
        )
    except crypto.EncryptionError as error:
        console.print(f"keeldb verify: {error}")
        return EXIT_CANNOT_CHECK
    try:
        return _verify(args, data_dir, store, keyring, console)
    finally:
        if keyring is not None:
            keyring.close()


def _verify(
    args: argparse.Namespace, data_dir: Path, store: Any, keyring: Any, console: Any
) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total or None)
            bars.update(tasks[phase], completed=done, total=total or None)

        try:
            report = verify_node(
                data_dir, store, table=args.table, progress=progress, keyring=keyring
            )
        except ArchiveCorruptError as error:
            console.print(f"keeldb verify: the archive is damaged: {error}")
            return EXIT_DIFFERENT
        except (VerifyError, ArchiveGapError, ObjectMissingError, OSError) as error:
            console.print(f"keeldb verify: cannot check: {error}")
            return EXIT_CANNOT_CHECK
    scope = f"table {args.table}" if args.table else "the store"
    if report.differences == 0:
        print(
            f"verified {scope} at record {report.lsn}: {report.keys_compared} keys, "
            "the archive and the store agree"
        )
        return EXIT_EQUAL
    print(
        f"{scope} differs from the archive at record {report.lsn}: {report.missing} missing, "
        f"{report.extra} extra, {report.different} different "
        f"(of {report.keys_compared} keys)"
    )
    for line in report.examples:
        print(f"  {line}")
    sys.stdout.flush()
    return EXIT_DIFFERENT


def _watch_step(client: Any, args: argparse.Namespace) -> tuple[bool, int, int | None, str]:
    """(finished, items done, items expected if known, status text) of what is watched."""
    if args.table is not None:
        table = client.describe_table(TableName=args.table)["Table"]
        total = None
        summary = table.get("RestoreSummary", {})
        if "SourceBackupArn" in summary:
            backup = client.describe_backup(BackupArn=summary["SourceBackupArn"])
            total = backup["BackupDescription"]["SourceTableDetails"]["ItemCount"]
        elif "SourceTableArn" in summary:
            try:
                source = client.describe_table(TableName=summary["SourceTableArn"])["Table"]
                total = source["ItemCount"]  # its count now: an estimate of the restore's
            except client.exceptions.ResourceNotFoundException:
                total = None
        status = table["TableStatus"]
        return status != "CREATING", table["ItemCount"], total, status
    if args.backup_arn is not None:
        found = client.describe_backup(BackupArn=args.backup_arn)["BackupDescription"]
        status = found["BackupDetails"]["BackupStatus"]
        count = found["SourceTableDetails"]["ItemCount"]
        return status != "CREATING", count if status != "CREATING" else 0, count, status
    if args.export_arn is not None:
        export = client.describe_export(ExportArn=args.export_arn)["ExportDescription"]
        total = None
        try:
            total = client.describe_table(TableName=export["TableArn"])["Table"]["ItemCount"]
        except client.exceptions.ResourceNotFoundException:
            pass
        status = export["ExportStatus"]
        return status != "IN_PROGRESS", export.get("ItemCount", 0), total, status
    found = client.describe_import(ImportArn=args.import_arn)["ImportTableDescription"]
    status = found["ImportStatus"]
    return status != "IN_PROGRESS", found.get("ImportedItemCount", 0), None, status


def run_watch(args: argparse.Namespace) -> int:
    import time

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, soft_wrap=True)
    client = boto3.client(
        "dynamodb",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "keeldb"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "keeldb"),
    )
    what = args.table or args.backup_arn or args.export_arn or args.import_arn
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("items"),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + args.timeout
    with Progress(*columns, console=console) as bars:
        task = bars.add_task(what, total=None)
        while True:
            try:
                finished, done, total, status = _watch_step(client, args)
            except (BotoCoreError, ClientError) as error:
                console.print(f"keeldb backup watch: {error}")
                return EXIT_CANNOT_CHECK
            bars.update(
                task,
                completed=done,
                total=max(total, done) if total else None,
                description=f"{what} {status}",
            )
            if finished:
                break
            if time.monotonic() > deadline:
                console.print(f"keeldb backup watch: still {status} after {args.timeout:g} s")
                return EXIT_DIFFERENT
            time.sleep(args.interval)
    print(f"{what}: {status}, {done} items")
    return EXIT_EQUAL if status in ("ACTIVE", "AVAILABLE", "COMPLETED") else EXIT_DIFFERENT
