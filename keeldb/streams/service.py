"""Attaches DynamoDB Streams to a started node (see `keeldb.node.NODE_SERVICES`): serves the
`DynamoDBStreams_20120810` JSON protocol on the node's endpoint and runs the retention
trimmer. Owns nothing else; it never touches the store directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keeldb.streams import api
from keeldb.streams.trim import StreamTrimmer

if TYPE_CHECKING:
    from keeldb.node import Closer, Node


async def attach(node: Node) -> Closer | None:
    node.server.add_json_service(api.TARGET_PREFIX, api.dispatcher(node.database), api.OPERATIONS)
    trimmer = StreamTrimmer(node.database, node.config.stream_retention_seconds)
    trimmer.start()
    return trimmer.stop
