"""The `keeldb verify` subcommand (registered by `keeldb.cli.COMMAND_MODULES`).

`keeldb verify [--table T] [--data-dir D] [--backup-dir DIR | --backup-s3 URL
[--backup-s3-endpoint URL]]` rebuilds a stopped node's state from its archive and log and
compares it with its store (`keeldb.backup.verify`), showing rich progress bars; it prints
the differences and exits 1 if there is any (or if the archive is damaged), 0 if the states
are equal, 2 if the check cannot be made. This module only parses arguments and reports.
"""

from __future__ import annotations

import argparse
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
