"""The `keeldb` command line: `keeldb serve` runs one node until SIGTERM or SIGINT.

Owns: argument parsing, logging set-up, the event loop (uvloop), signal handling and the
startup line ("KeelDB listening on http://HOST:PORT (data: DIR; ...)"), which is printed and
flushed once the node accepts connections, since scripts and tests wait for it.

It must never contain database or protocol logic: it builds a `NodeConfig` and runs a `Node`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from keeldb import __version__
from keeldb.api.sigv4 import load_credentials
from keeldb.crypto import EncryptionError
from keeldb.engine.ttl import TTL_SWEEP_INTERVAL_SECONDS
from keeldb.node import Node, NodeConfig
from keeldb.storage.wal import CorruptLogError, LogInUseError
from keeldb.workers.pool import WorkersUnsupportedError
from keeldb.workers.pool import check_config as check_workers

log = logging.getLogger("keeldb.cli")

LOG_LEVELS = ("debug", "info", "warning", "error")
# Modules that add subcommands besides `serve`: each has `register(commands)`, which adds its
# parser with `set_defaults(run=FUNCTION)`; FUNCTION(args) returns the exit status.
COMMAND_MODULES = (
    "keeldb.bench.cli",
    "keeldb.cluster.cli",
    "keeldb.backup.cli",
    "keeldb.native",
)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keeldb", description="A self-hosted database that speaks the DynamoDB API."
    )
    parser.add_argument("--version", action="version", version=f"keeldb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a single KeelDB node")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    serve.add_argument(
        "--data-dir", type=Path, default=Path("keeldb-data"), help="where the node keeps its data"
    )
    serve.add_argument(
        "--in-memory", action="store_true", help="keep all data in memory (lost at exit)"
    )
    serve.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="verify SigV4 signatures against the keys in FILE: one 'ACCESS_KEY_ID "
        "SECRET_ACCESS_KEY' per line ('#' starts a comment), or an AWS shared credentials file "
        "([profile] sections); without it any well-formed request is accepted",
    )
    serve.add_argument("--region", default="us-east-1", help="region this node reports")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    serve.add_argument(
        "--ttl-interval",
        type=_positive_seconds,
        default=TTL_SWEEP_INTERVAL_SECONDS,
        metavar="SECONDS",
        help="how often expired Time to Live items are looked for and deleted "
        f"(default {TTL_SWEEP_INTERVAL_SECONDS:g})",
    )
    serve.add_argument(
        "--stream-retention",
        type=_positive_seconds,
        default=24 * 60 * 60,
        metavar="SECONDS",
        help="how long stream records stay readable (default 86400, as DynamoDB)",
    )
    serve.add_argument(
        "--no-functions",
        action="store_true",
        help="do not run the function service (Lambda API and stream triggers)",
    )
    serve.add_argument(
        "--backup-dir",
        type=Path,
        metavar="DIR",
        help="where the archive, backups and exports go (default: DATA_DIR/backups)",
    )
    serve.add_argument(
        "--backup-s3",
        metavar="S3_URL",
        help="keep the archive, backups and exports in s3://BUCKET/PREFIX instead",
    )
    serve.add_argument(
        "--backup-s3-endpoint",
        metavar="URL",
        help="the S3-compatible server that --backup-s3 names",
    )
    serve.add_argument(
        "--master-key-file",
        type=Path,
        metavar="FILE",
        help="encrypt data at rest with data keys wrapped by the master key in FILE "
        "(keep it apart from the data directory)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes serving HTTP on the port (default 1: this process alone); N > 1 "
        "adds N - 1 worker processes that parse, verify and answer reads from the store while "
        "this process also does every write: use the number of cores the clients leave free",
    )
    cluster = serve.add_argument_group("cluster node (see `keeldb cluster up`)")
    cluster.add_argument("--node-id", type=int, metavar="N", help="this node's id in the cluster")
    cluster.add_argument("--zone", help="this node's zone (must match the cluster file)")
    cluster.add_argument("--listen", metavar="HOST:PORT", help="address for other nodes")
    cluster.add_argument("--join", metavar="HOST:PORT", help="a node of the cluster to join")
    cluster.add_argument("--role", choices=("storage", "router", "both"), help="default both")
    cluster.add_argument("--cluster-config", type=Path, metavar="FILE", help="the cluster file")
    cluster.add_argument("--cluster-secret-file", type=Path, metavar="FILE")
    cluster.add_argument("--profile", choices=("standard", "aurora"))
    cluster.add_argument("--fault-endpoint", action="store_true", help=argparse.SUPPRESS)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


async def serve(config: NodeConfig) -> None:
    node = await Node.start(config)
    print(node.describe(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await node.close()
    print("KeelDB stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command != "serve":
        status: int = args.run(args)
        return status
    credentials = None
    if args.credentials is not None:
        try:
            credentials = load_credentials(args.credentials)
        except (OSError, ValueError) as error:
            print(f"keeldb: cannot read credentials: {error}", file=sys.stderr)
            return 2
        if not credentials:
            print(f"keeldb: no credentials in {args.credentials}", file=sys.stderr)
            return 2
    if args.node_id is not None or args.cluster_config is not None or args.join is not None:
        if args.workers != 1:
            print("keeldb: cannot start: --workers is for a single node", file=sys.stderr)
            return 2
        from keeldb.cluster.cli import serve_cluster

        return serve_cluster(args, credentials)
    config = NodeConfig(
        host=args.host,
        port=args.port,
        data_dir=None if args.in_memory else args.data_dir,
        credentials=credentials,
        region=args.region,
        ttl_interval_seconds=args.ttl_interval,
        stream_retention_seconds=args.stream_retention,
        functions=not args.no_functions,
        backup_dir=args.backup_dir,
        backup_s3=args.backup_s3,
        backup_s3_endpoint=args.backup_s3_endpoint,
        master_key_file=args.master_key_file,
        workers=args.workers,
    )
    try:
        check_workers(config)
    except WorkersUnsupportedError as error:
        print(f"keeldb: cannot start: {error}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(config))
    except (OSError, LogInUseError, CorruptLogError, EncryptionError) as error:
        # The address is taken, the data directory cannot be used, another process holds it,
        # its log is damaged in the middle, or its master key is wrong or missing: the error
        # names which, in one line.
        print(f"keeldb: cannot start: {error}", file=sys.stderr)
        return 1
    return 0
