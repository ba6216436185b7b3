"""`python -m keeldb.cluster.group_node`: one process hosting one member of a key-value
replica group, for process tests, fault drills and the benchmark.

Owns the wiring of a node for that purpose only: a `Transport` (uvloop), an LMDB store, a
`GroupLog` for the group "kv" and a `KvService` on the transport channel "kv". It prints
`group_node ready <port>` once serving, and stops cleanly on SIGTERM or SIGINT. It never
picks ports or peers: the command line names them all.

    python -m keeldb.cluster.group_node --node-id node1 --listen 127.0.0.1:7001 \\
        --peer node2=127.0.0.1:7002 --peer node3=127.0.0.1:7003 \\
        --secret-file secret --data-dir d1 --profile standard
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from keeldb.cluster.group import GroupLog, GroupOptions, member_node_id
from keeldb.cluster.group_kv import KvMachine, KvService
from keeldb.consensus.replica import Options
from keeldb.consensus.types import Config, ConfigError
from keeldb.net.transport import Transport
from keeldb.storage.lmdb_store import LmdbStore

GROUP_ID = "kv"
PROFILE_SIZES = {"standard": 3, "aurora": 6, "single": 1}


def profile_config(profile: str, node_numbers: list[int]) -> Config:
    numbers = sorted(node_numbers)
    if profile == "standard":
        return Config.standard(numbers)
    if profile == "aurora":
        return Config.aurora(numbers)
    if profile == "single":
        (only,) = numbers
        return Config.single(only)
    raise ConfigError(f"unknown profile {profile!r}")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _peer(text: str) -> tuple[str, str, int]:
    name, sep, address = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NODE=HOST:PORT, got {text!r}")
    host, port = _address(address)
    return name, host, port


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m keeldb.cluster.group_node")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--peer", type=_peer, action="append", default=[])
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--profile", choices=sorted(PROFILE_SIZES), default="standard")
    parser.add_argument("--tick-seconds", type=float, default=0.05)
    parser.add_argument("--compaction-entries", type=int, default=4096)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    secret = args.secret_file.read_bytes().strip()
    host, port = args.listen
    transport = Transport(args.node_id, host, port, secret)
    bound = await transport.start()
    for name, peer_host, peer_port in args.peer:
        transport.add_peer(name, peer_host, peer_port)
    numbers = [int(member_node_id(args.node_id))]
    numbers += [int(member_node_id(name)) for name, _, _ in args.peer]
    config = profile_config(args.profile, numbers)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = LmdbStore(args.data_dir / "store")
    machine = KvMachine(store)
    options = GroupOptions(
        tick_seconds=args.tick_seconds,
        replica=Options(compaction_entries_min=args.compaction_entries, thrifty_accepts=True),
    )
    group = GroupLog(
        GROUP_ID,
        args.node_id,
        config,
        transport,
        args.data_dir / "group",
        store,
        machine.apply,
        options=options,
    )
    await group.start()
    service = KvService(group, machine)
    transport.register("kv", service.handle)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"group_node ready {bound}", flush=True)
    await stop.wait()
    await group.close()
    await transport.close()
    store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(), format=f"{args.node_id} %(levelname)s %(name)s: %(message)s"
    )
    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
