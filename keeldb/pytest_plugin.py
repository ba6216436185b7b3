"""A pytest plugin: the `keeldb_endpoint` fixture gives a test suite a running KeelDB.

Registered through the `pytest11` entry point, so installing KeelDB is enough: a suite that
used moto swaps its fixture for `keeldb_endpoint` and points its clients at the URL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def keeldb_endpoint() -> Iterator[str]:
    """The URL of an in-process KeelDB server (in memory) shared by the test session."""
    from keeldb.embedded import embedded

    with embedded(in_memory=True) as endpoint:
        yield endpoint
