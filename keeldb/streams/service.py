"""Attaches DynamoDB Streams to a started node (see `keeldb.node.NODE_SERVICES`): serves the
`DynamoDBStreams_20120810` JSON protocol on the node's endpoint and runs the task that
trims records past retention and rolls shards over. Owns nothing else; it never touches the
store directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keeldb.streams import api
from keeldb.streams.trim import StreamTrimmer, shard_seconds_from_environment

if TYPE_CHECKING:
    from keeldb.node import Closer, Node


async def attach(node: Node) -> Closer | None:
    node.server.add_json_service(api.TARGET_PREFIX, api.dispatcher(node.database), api.OPERATIONS)
    trimmer = StreamTrimmer(
        node.database, node.config.stream_retention_seconds, shard_seconds_from_environment()
    )
    trimmer.start()
    return trimmer.stop
