"""pgrouter.aio.polled_wait: Python 3.10's acquire wait, ended between slices, losing nothing.

Plain futures and coroutines stand in for a driver's acquire; the real path runs in
the conformance suite on Python 3.10 (scripts/test.sh, .venv-py310). The module has
no version check of its own, so these run on every Python.
"""

from __future__ import annotations

import asyncio

import pytest

from pgrouter.aio.polled_wait import wait_polled

SLICE = 0.01


async def test_the_result_of_the_wait_is_returned() -> None:
    async def acquire() -> str:
        await asyncio.sleep(3 * SLICE)
        return "connection"

    asked: list[bool] = []

    def still_wanted() -> bool:
        asked.append(True)
        return True

    assert await wait_polled(acquire(), still_wanted, SLICE, pytest.fail) == "connection"
    assert asked  # asked between slices while the acquire waited


async def test_a_wait_no_longer_wanted_ends_by_the_next_slice_and_is_cancelled() -> None:
    never = asyncio.get_running_loop().create_future()
    wanted = True
    loop = asyncio.get_running_loop()

    def turn_away() -> None:
        nonlocal wanted
        wanted = False

    loop.call_later(2 * SLICE, turn_away)
    started = loop.time()
    assert await wait_polled(never, lambda: wanted, SLICE, pytest.fail) is None
    assert loop.time() - started < 2 * SLICE + 1.0  # wide margin: a shared machine
    await asyncio.sleep(0)  # the cancellation reaches the future
    assert never.cancelled()


async def test_an_error_of_the_wait_is_raised_as_it_is() -> None:
    async def acquire() -> str:
        await asyncio.sleep(SLICE / 2)
        raise asyncio.TimeoutError

    with pytest.raises(asyncio.TimeoutError):
        await wait_polled(acquire(), lambda: True, SLICE, pytest.fail)


async def test_a_cancellation_of_the_caller_is_not_swallowed_and_cancels_the_wait() -> None:
    never = asyncio.get_running_loop().create_future()
    caller = asyncio.create_task(wait_polled(never, lambda: True, SLICE, pytest.fail))
    await asyncio.sleep(3 * SLICE)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert never.cancelled()


async def test_a_connection_handed_over_despite_the_cancellation_is_given_back() -> None:
    """A driver that finishes its hand-over when cancelled: the connection is not lost."""
    given_back: list[str] = []

    async def acquire() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(SLICE)  # still handing over
            return "late connection"
        return "connection"

    assert await wait_polled(acquire(), lambda: False, SLICE, given_back.append) is None
    assert given_back == []
    await asyncio.sleep(5 * SLICE)
    assert given_back == ["late connection"]


async def test_a_result_that_arrives_as_the_caller_is_cancelled_is_given_back() -> None:
    given_back: list[str] = []
    handed_over = asyncio.get_running_loop().create_future()
    caller = asyncio.create_task(wait_polled(handed_over, lambda: True, 10, given_back.append))
    await asyncio.sleep(SLICE)
    # In one loop iteration: the acquire finishes, and the caller is cancelled.
    handed_over.set_result("connection")
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert given_back == ["connection"]
