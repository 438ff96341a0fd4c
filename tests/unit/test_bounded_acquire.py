"""A timeout on driver acquires that have none, which never loses a late connection."""

from __future__ import annotations

import asyncio

import pytest

from pgrouter.bounded import wait_bounded


class SlowPool:
    """Hands out numbered connections after ``delay`` seconds; records give-backs."""

    def __init__(self, delay: float, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.handed_out = 0
        self.returned: list[int] = []

    async def acquire(self) -> int:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionRefusedError("no server")
        self.handed_out += 1
        return self.handed_out

    async def give_back(self, connection: int) -> None:
        self.returned.append(connection)


async def test_returns_the_connection_in_time() -> None:
    pool = SlowPool(0.01)
    assert await wait_bounded(pool.acquire(), 1.0, pool.give_back, cancel_late=False) == 1
    assert await wait_bounded(pool.acquire(), None, pool.give_back, cancel_late=False) == 2
    assert pool.returned == []


async def test_timeout_raises_and_the_late_connection_goes_back() -> None:
    pool = SlowPool(0.1)
    with pytest.raises(asyncio.TimeoutError):
        await wait_bounded(pool.acquire(), 0.02, pool.give_back, cancel_late=False)
    await asyncio.sleep(0.2)
    assert pool.handed_out == 1 and pool.returned == [1]


async def test_cancelled_caller_leaks_nothing() -> None:
    pool = SlowPool(0.05)
    caller = asyncio.ensure_future(
        wait_bounded(pool.acquire(), 5, pool.give_back, cancel_late=False)
    )
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0.1)
    assert pool.handed_out == 1 and pool.returned == [1]


async def test_a_late_failure_is_dropped_quietly() -> None:
    pool = SlowPool(0.05, fail=True)
    with pytest.raises(asyncio.TimeoutError):
        await wait_bounded(pool.acquire(), 0.01, pool.give_back, cancel_late=False)
    await asyncio.sleep(0.1)
    assert pool.returned == []


async def test_an_error_in_time_reaches_the_caller() -> None:
    pool = SlowPool(0.0, fail=True)
    with pytest.raises(ConnectionRefusedError):
        await wait_bounded(pool.acquire(), 1.0, pool.give_back, cancel_late=False)
