"""The database counts the requests inside `dispatch` and offers the count to its log."""

from __future__ import annotations

import asyncio

from keeldb.storage.memory import MemoryStore


def test_the_database_counts_the_requests_inside_dispatch_for_the_log() -> None:
    from keeldb.engine import database as database_module
    from keeldb.engine.database import Database
    from keeldb.storage.memory import MemoryLog

    seen: list[int] = []

    async def probe(db: Database, body: dict[str, object]) -> dict[str, object]:
        await asyncio.sleep(0)
        seen.append(db.requests_in_progress)
        return {}

    async def scenario() -> None:
        store = MemoryStore()
        db = Database(store)

        class DemandLog(MemoryLog):
            demand: object = None

            def set_demand(self, demand: object) -> None:
                self.demand = demand

        log = DemandLog(db.apply, start_lsn=0)
        db.attach_log(log)
        database_module.OPERATIONS["TestProbe"] = probe
        try:
            await asyncio.gather(*(db.dispatch("TestProbe", {}) for _ in range(3)))
        finally:
            del database_module.OPERATIONS["TestProbe"]
        assert seen == [3, 2, 1]  # each one leaves before the next looks
        assert db.requests_in_progress == 0
        assert callable(log.demand) and log.demand() == 0  # type: ignore[operator]

    asyncio.run(scenario())
