"""KeelDB: a self-hosted database that speaks the DynamoDB API.

The package root only re-exports the embedded server entry point; every layer lives in
its own sub-package (see docs/architecture in the repository).
"""

from __future__ import annotations

from typing import Any

from keeldb import native

__version__ = "0.1.0"

# Before any other module of the package is imported: use the compiled modules only if
# they were built from the sources as they are now (keeldb/native.py).
native.guard()


def embedded(*args: Any, **kwargs: Any) -> Any:
    """Start an in-process KeelDB server; see `keeldb.embedded.embedded`."""
    from keeldb.embedded import embedded as _embedded

    return _embedded(*args, **kwargs)


__all__ = ["__version__", "embedded"]
