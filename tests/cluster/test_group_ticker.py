"""The group drivers' shared tick timer: one timer per event loop and tick length drives
every registered driver, survives a driver that raises, and stops with the last one."""

from __future__ import annotations

import asyncio

import pytest

from keeldb.cluster.group import _DrivePass, _Ticker

TICK_SECONDS = 0.01
TEST_SECONDS_MAX = 10.0


class FakeDriver:
    def __init__(self, name: str, *, broken: bool = False) -> None:
        self.group_id = name
        self.ticks = 0
        self.broken = broken

    def _on_timer(self) -> None:
        self.ticks += 1
        if self.broken:
            raise RuntimeError("a driver bug")


async def _until(predicate, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(TICK_SECONDS)


@pytest.mark.interpreted  # fakes stand in for GroupLog, whose type compiled code checks
def test_one_ticker_per_loop_drives_every_driver_even_past_one_that_raises() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        ticker = _Ticker.of(loop, TICK_SECONDS)
        assert _Ticker.of(loop, TICK_SECONDS) is ticker
        assert _Ticker.of(loop, TICK_SECONDS * 2) is not ticker
        broken, a, b = FakeDriver("broken", broken=True), FakeDriver("a"), FakeDriver("b")
        for driver in (broken, a, b):
            ticker.add(driver)  # type: ignore[arg-type]
        await _until(lambda: a.ticks >= 5 and b.ticks >= 5)
        assert broken.ticks >= 5
        assert abs(a.ticks - b.ticks) <= 1  # the same timer: the same ticks
        ticker.remove(a)  # type: ignore[arg-type]
        stopped_at = a.ticks
        await _until(lambda: b.ticks >= stopped_at + 5)
        assert a.ticks == stopped_at
        ticker.remove(b)  # type: ignore[arg-type]
        ticker.remove(broken)  # type: ignore[arg-type]
        assert ticker._handle is None  # the last driver gone, no timer stays armed
        last = b.ticks
        await asyncio.sleep(TICK_SECONDS * 5)
        assert b.ticks == last

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))


class FakeGroup:
    def __init__(self, name: str, log: list[str], *, broken: bool = False) -> None:
        self.group_id = name
        self.log = log
        self.broken = broken

    def _drive_callback(self) -> None:
        self.log.append(self.group_id)
        if self.broken:
            raise RuntimeError("a driver bug")


@pytest.mark.interpreted  # fakes stand in for GroupLog, whose type compiled code checks
def test_the_drivers_a_loop_turn_kicks_run_in_one_callback_in_order() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        drive_pass = _DrivePass.of(loop)
        assert _DrivePass.of(loop) is drive_pass
        driven: list[str] = []
        scheduled: list[object] = []
        real_call_soon = loop.call_soon

        def counting_call_soon(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            scheduled.append(callback)
            return real_call_soon(callback, *args, **kwargs)

        loop.call_soon = counting_call_soon  # type: ignore[method-assign]
        try:
            for group in (FakeGroup("b", driven), FakeGroup("x", driven, broken=True)):
                drive_pass.add(group)  # type: ignore[arg-type]
            drive_pass.add(FakeGroup("a", driven))  # type: ignore[arg-type]
            assert not driven  # at the end of the turn, not at once
            assert len(scheduled) == 1  # one callback for all three
        finally:
            loop.call_soon = real_call_soon  # type: ignore[method-assign]
        await asyncio.sleep(0)
        assert driven == ["b", "x", "a"]  # in the order kicked, past the one that raised
        drive_pass.add(FakeGroup("c", driven))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert driven == ["b", "x", "a", "c"]  # a later turn: a new callback

    asyncio.run(asyncio.wait_for(body(), TEST_SECONDS_MAX))
