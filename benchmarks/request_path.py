"""One request's CPU on the event-loop thread, without the group commit: HTTP to answer.

Feeds whole HTTP requests (the reference harness's: ten 100-character fields, SigV4-sized
headers) to the front end's protocol (`HttpProtocol.data_received`, with a transport that
only collects the answers), which parses them, dispatches them to the engine over an LMDB
store in a temporary directory and writes the answers, as a server does for each request.
The log commits each record as it is appended (`MemoryLog`), so what is measured is the
per-request part of the loop's work (HTTP, JSON, validation, expressions, the engine, one
LMDB commit per write) and not the group commit's, which `benchmarks/write_path.py`
measures. Requests go one at a time on one connection; with the log committing at once no
request waits, so each is answered inside its read callback (or, with
KEELDB_EAGER_REQUESTS=0 or an older front end, in a task of its own). With `--log later`
the log commits what was appended on a later turn of the loop, as a group commit hands a
group back (no disk, one store transaction per group), and `--connections N` keeps N
requests in flight on N connections: so a write suspends, waits for its group and is
answered after it, as on a server, and the front end's and the log's work for a waiting
write is measured too.

Reported per operation (GetItem, PutItem, UpdateItem of one field, on uniformly chosen keys
of a 5,000-item table): the thread's CPU per request (`time.thread_time`),
median over `--chunks` slices and the least disturbed slice. Compare trees alternately in
one sitting (PYTHONPATH=TREE python benchmarks/request_path.py), as the figures move with
the host's load.

    python -m benchmarks.request_path --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from keeldb.api.server import ApiServer, HttpProtocol
from keeldb.bench.inprocess import FIELDS, TABLE, loaded_database, record
from keeldb.bench.workloads import DISTRIBUTIONS, key_chooser
from keeldb.engine.database import Database
from keeldb.storage.protocols import ApplyFn

ITEMS = 5000
# The headers the reference harness sends (a SigV4 signature's worth of bytes).
HEAD = (
    "POST / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/x-amz-json-1.0\r\n"
    "User-Agent: ddb-bench/1.0\r\nAccept-Encoding: identity\r\n"
    "X-Amz-Target: DynamoDB_20120810.{operation}\r\nX-Amz-Date: 20261128T010101Z\r\n"
    "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261128/us-east-1/dynamodb/"
    "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
    "Signature={signature}\r\nContent-Length: {length}\r\n\r\n"
)


class CollectingTransport:
    """What the protocol writes, counted; never full, never closing."""

    def __init__(self) -> None:
        self.answers = 0

    def write(self, data: bytes) -> None:
        self.answers += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return None

    def close(self) -> None:
        raise AssertionError("the benchmark's connection was closed")

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


class LaterLog:
    """Commits what was appended on a later turn of the loop, all of it as one group applied
    in one store transaction (when the store has `batch`), as the node's log hands a group
    back after its fsync; no disk."""

    def __init__(self, store: Any, apply: ApplyFn, start_lsn: int) -> None:
        self._store = store
        self._apply = apply
        self._lsn = start_lsn
        self._queue: list[tuple[bytes, asyncio.Future[int]]] = []
        self.groups = 0

    async def append(self, record: bytes) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not self._queue:
            asyncio.get_running_loop().call_soon(self._commit)
        self._queue.append((record, future))
        return await future

    def _commit(self) -> None:
        group, self._queue = self._queue, []
        first = self._lsn + 1
        self._lsn += len(group)
        with self._store.batch():
            self._apply([(first + i, record) for i, (record, _) in enumerate(group)])
        for i, (_, future) in enumerate(group):
            future.set_result(first + i)
        self.groups += 1

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


def request(operation: str, body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body)
    head = HEAD.format(operation=operation, signature="a" * 64, length=len(data))
    return head.encode() + data


# The operations measured; "A" is workload A's mix, GetItem and UpdateItem in turn.
OPERATIONS = ("GetItem", "PutItem", "UpdateItem", "A")


def bodies(
    operation: str, count: int, rng: random.Random, distribution: str = "uniform"
) -> list[bytes]:
    """`count` requests of `operation` on keys drawn from `distribution`."""
    chooser = key_chooser(distribution, ITEMS, rng)
    out = []
    for n in range(count):
        key = {"YCSB_KEY": {"S": f"user{chooser.next()}"}}
        if operation == "A":
            out.append(body(("GetItem", "UpdateItem")[n % 2], key, rng))
        else:
            out.append(body(operation, key, rng))
    return out


def body(operation: str, key: dict[str, Any], rng: random.Random) -> bytes:
    """One request of `operation` for `key`, as the reference harness sends it."""
    if operation == "GetItem":
        fields: dict[str, Any] = {"TableName": TABLE, "Key": key}
    elif operation == "PutItem":
        number = int(key["YCSB_KEY"]["S"].removeprefix("user"))
        fields = {"TableName": TABLE, "Item": record(number)}
    else:
        fields = {
            "TableName": TABLE,
            "Key": key,
            "UpdateExpression": "SET #f = :v",
            "ExpressionAttributeNames": {"#f": f"field{rng.randrange(FIELDS)}"},
            "ExpressionAttributeValues": {":v": {"S": f"{rng.randrange(10**9):0100d}"}},
        }
    return request(operation, fields)


async def run(args: argparse.Namespace, directory: Path) -> None:
    log = None
    if args.log == "later":

        def log(db: Database) -> LaterLog:
            return LaterLog(db.store, db.apply, db.store.applied_lsn())

    db = await loaded_database(directory, ITEMS, log)
    server = ApiServer(db.dispatch, {"GetItem", "PutItem", "UpdateItem"})
    connections = []
    transport = CollectingTransport()
    for _ in range(args.connections):
        protocol = HttpProtocol(server)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        connections.append(protocol)
    rng = random.Random(1)
    for operation in args.operations.split(","):
        requests = bodies(operation, args.requests, rng, args.distribution)
        size = max(args.connections, len(requests) // args.chunks)
        per_request_us = []
        for start in range(0, len(requests), size):
            chunk = requests[start : start + size]
            answered = transport.answers + len(chunk)
            cpu = time.thread_time()
            for first in range(0, len(chunk), len(connections)):
                for protocol, data in zip(connections, chunk[first:], strict=False):
                    protocol.data_received(data)
                # Until every connection is idle again (a request that waited for its group,
                # or went on in a task): the wake-ups a server's loop pays for them.
                while any(protocol.busy for protocol in connections):
                    await asyncio.sleep(0)
            per_request_us.append((time.thread_time() - cpu) / len(chunk) * 1e6)
            assert transport.answers == answered, "every request is answered"
        ordered = sorted(per_request_us)
        print(
            f"{operation}: {ordered[len(ordered) // 2]:.1f} µs of loop CPU per request "
            f"(least {ordered[0]:.1f})"
        )
    db.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="per operation")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument(
        "--log",
        choices=("now", "later"),
        default="now",
        help="now: each record commits as it is appended; later: on a later turn of the loop",
    )
    parser.add_argument("--connections", type=int, default=1, help="requests in flight")
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, default="uniform")
    parser.add_argument(
        "--operations",
        default="GetItem,PutItem,UpdateItem",
        help=f"comma list of {', '.join(OPERATIONS)} (A: GetItem and UpdateItem in turn)",
    )
    args = parser.parse_args()
    uvloop.install()
    with tempfile.TemporaryDirectory(prefix="keeldb-request-path-") as name:
        asyncio.run(run(args, Path(name)))


if __name__ == "__main__":
    main()
