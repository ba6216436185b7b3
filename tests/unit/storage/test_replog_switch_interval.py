"""Opening a log lowers the interpreter's switch interval, so that the disk thread gets the GIL
back promptly after each fsync; it never raises an interval that is already lower."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from keeldb.storage import replog
from keeldb.storage.lmdb_store import LmdbStore
from keeldb.storage.protocols import Entry


@pytest.fixture
def restore_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def _open_and_close(data_dir: Path) -> float:
    """The switch interval while a log is open."""

    def apply(entries: Sequence[Entry]) -> None:
        del entries

    async def scenario() -> float:
        store = LmdbStore(data_dir / "store")
        log = await replog.LocalLog.open(data_dir / "wal", store, apply)
        seen = sys.getswitchinterval()
        await log.close()
        store.close()
        return seen

    return asyncio.run(scenario())


@pytest.mark.usefixtures("restore_switch_interval")
def test_opening_a_log_lowers_the_default_switch_interval(tmp_path: Path) -> None:
    sys.setswitchinterval(0.005)  # the interpreter's default
    seen = _open_and_close(tmp_path)
    assert seen == pytest.approx(replog.GIL_SWITCH_INTERVAL_SECONDS)
    assert seen < 0.005


@pytest.mark.usefixtures("restore_switch_interval")
def test_opening_a_log_keeps_a_lower_switch_interval(tmp_path: Path) -> None:
    sys.setswitchinterval(replog.GIL_SWITCH_INTERVAL_SECONDS / 5)
    seen = _open_and_close(tmp_path)
    assert seen == pytest.approx(replog.GIL_SWITCH_INTERVAL_SECONDS / 5)
