"""A node's assembly: in-memory and on-disk nodes start, serve, describe themselves and close."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from keeldb.api.sigv4 import Credential
from keeldb.node import Node, NodeConfig

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coroutine)


async def health(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


def test_an_in_memory_node_serves_and_says_where_its_data_is() -> None:
    async def scenario() -> tuple[str, bytes]:
        node = await Node.start(NodeConfig(port=0, data_dir=None, region="ap-south-1"))
        try:
            return node.describe(), await health(node.port)
        finally:
            await node.close()

    line, answer = run(scenario())
    assert line.startswith("KeelDB listening on http://127.0.0.1:")
    assert line.endswith("(data: in memory; authentication disabled)")
    assert answer.endswith(b"healthy: dynamodb.ap-south-1.amazonaws.com ")


def test_a_durable_node_keeps_tables_across_a_restart(tmp_path: Path) -> None:
    table = {
        "TableName": "kept",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }

    async def first() -> None:
        node = await Node.start(NodeConfig(port=0, data_dir=tmp_path))
        await node.database.dispatch("CreateTable", table)
        await node.close()
        await node.close()  # closing twice is harmless

    async def second() -> list[str]:
        node = await Node.start(NodeConfig(port=0, data_dir=tmp_path))
        try:
            result = await node.database.dispatch("ListTables", {})
            return list(result["TableNames"])
        finally:
            await node.close()

    run(first())
    assert run(second()) == ["kept"]
    assert (tmp_path / "store").is_dir()
    assert (tmp_path / "wal").is_dir()


def test_the_startup_line_counts_access_keys() -> None:
    one = NodeConfig(credentials={"A": Credential("A", "s")}, data_dir=Path("d"))
    two = NodeConfig(
        credentials={"A": Credential("A", "s"), "B": Credential("B", "t")}, data_dir=Path("d")
    )
    node_one = Node(one, None, None, None, None)  # type: ignore[arg-type]
    node_two = Node(two, None, None, None, None)  # type: ignore[arg-type]
    assert node_one.describe().endswith("(data: d; authentication enabled, 1 access key)")
    assert node_two.describe().endswith("(data: d; authentication enabled, 2 access keys)")


def test_an_ipv6_host_is_bracketed_in_the_url() -> None:
    node = Node(NodeConfig(host="::1"), None, None, None, None)  # type: ignore[arg-type]
    node.port = 8123
    assert node.url == "http://[::1]:8123"


def test_a_taken_port_leaves_nothing_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        holder = await Node.start(NodeConfig(port=0, data_dir=None))
        try:
            try:
                await Node.start(NodeConfig(port=holder.port, data_dir=tmp_path))
            except OSError:
                pass
            else:
                raise AssertionError("a second node bound the same port")
            # The failed node closed its store and log: a new one opens the same directory.
            again = await Node.start(NodeConfig(port=0, data_dir=tmp_path))
            await again.close()
        finally:
            await holder.close()

    run(scenario())
