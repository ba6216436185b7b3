"""Attaches this subsystem to a started node (see `keeldb.node.NODE_SERVICES`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keeldb.node import Closer, Node


async def attach(node: Node) -> Closer | None:
    return None
