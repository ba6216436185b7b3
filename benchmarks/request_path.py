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
KEELDB_EAGER_REQUESTS=0 or an older front end, in a task of its own).

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


def request(operation: str, body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body)
    head = HEAD.format(operation=operation, signature="a" * 64, length=len(data))
    return head.encode() + data


def bodies(operation: str, count: int, rng: random.Random) -> list[bytes]:
    out = []
    for _ in range(count):
        key = {"YCSB_KEY": {"S": f"user{rng.randrange(ITEMS)}"}}
        if operation == "GetItem":
            body: dict[str, Any] = {"TableName": TABLE, "Key": key}
        elif operation == "PutItem":
            body = {"TableName": TABLE, "Item": record(rng.randrange(ITEMS))}
        else:
            body = {
                "TableName": TABLE,
                "Key": key,
                "UpdateExpression": "SET #f = :v",
                "ExpressionAttributeNames": {"#f": f"field{rng.randrange(FIELDS)}"},
                "ExpressionAttributeValues": {":v": {"S": f"{rng.randrange(10**9):0100d}"}},
            }
        out.append(request(operation, body))
    return out


async def run(args: argparse.Namespace, directory: Path) -> None:
    db = await loaded_database(directory, ITEMS)
    server = ApiServer(db.dispatch, {"GetItem", "PutItem", "UpdateItem"})
    protocol = HttpProtocol(server)
    transport = CollectingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    rng = random.Random(1)
    for operation in ("GetItem", "PutItem", "UpdateItem"):
        requests = bodies(operation, args.requests, rng)
        size = max(1, len(requests) // args.chunks)
        per_request_us = []
        for start in range(0, len(requests), size):
            chunk = requests[start : start + size]
            answered = transport.answers + len(chunk)
            cpu = time.thread_time()
            for data in chunk:
                protocol.data_received(data)
                # A request that went on in a task (a front end without eager requests, or
                # one that waited): one wake-up when it is answered, as a server's loop pays.
                task = protocol._task
                if task is not None:
                    await task
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
    args = parser.parse_args()
    uvloop.install()
    with tempfile.TemporaryDirectory(prefix="keeldb-request-path-") as name:
        asyncio.run(run(args, Path(name)))


if __name__ == "__main__":
    main()
