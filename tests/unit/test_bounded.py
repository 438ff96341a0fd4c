"""wait_bounded: returns at the deadline even when the operation is slow to cancel."""

from __future__ import annotations

import asyncio

import pytest

from pgrouter.bounded import wait_bounded

unwound: list[str] = []


async def stubborn(result: str, unwind: float) -> str:
    """Like psycopg against a frozen server: cancellation takes ``unwind`` s to finish."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(unwind)
        unwound.append(result)
        return result  # swallows the cancellation and produces a result anyway
    return result


async def test_returns_the_result_in_time() -> None:
    assert await wait_bounded(asyncio.sleep(0, "ok"), 1) == "ok"


async def test_times_out_at_the_deadline_not_after_the_unwinding() -> None:
    with pytest.raises(asyncio.TimeoutError):
        await wait_bounded(stubborn("late", unwind=0.2), 0.01)
    # asyncio.wait_for would only raise once the operation finished unwinding.
    assert "late" not in unwound
    await asyncio.sleep(0.3)
    assert "late" in unwound


async def test_a_late_result_is_disposed_of() -> None:
    disposed: list[str] = []

    async def dispose(value: str) -> None:
        disposed.append(value)

    with pytest.raises(asyncio.TimeoutError):
        await wait_bounded(stubborn("connection", unwind=0.05), 0.01, dispose_late=dispose)
    await asyncio.sleep(0.2)
    assert disposed == ["connection"]


async def test_caller_cancelled_disposes_late_result() -> None:
    disposed: list[str] = []

    async def dispose(value: str) -> None:
        disposed.append(value)

    waiter = asyncio.create_task(wait_bounded(stubborn("conn", unwind=0.02), None, dispose))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.1)
    assert disposed == ["conn"]


async def test_errors_propagate() -> None:
    async def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await wait_bounded(boom(), 1)
