"""The `keeldb` subcommands of this package (registered by `keeldb.cli.COMMAND_MODULES`)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add this package's subcommands to the `keeldb` parser's subcommands."""
    del commands
