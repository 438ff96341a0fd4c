"""eager.py: free when the awaitable never waits; shielded, or handed over, when it does."""

from __future__ import annotations

import asyncio

import pytest

from pgrouter.eager import finish_despite_cancellation, start


def count_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    created = [0]
    default_factory = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs):  # type: ignore[no-untyped-def]
        created[0] += 1
        if default_factory is not None:
            return default_factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return created


async def test_a_coroutine_that_never_waits_runs_inline_without_a_task() -> None:
    created = count_tasks(asyncio.get_running_loop())
    steps: list[str] = []

    async def release() -> str:
        steps.append("released")
        return "done"

    assert await finish_despite_cancellation(release()) == "done"
    assert steps == ["released"]
    assert created[0] == 0


async def test_a_coroutine_that_waits_gets_every_value_and_its_result() -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()

    async def release() -> tuple[int, int]:
        a = await first
        await asyncio.sleep(0)  # a bare yield, as the Task protocol allows
        b = await second
        return a, b

    waiting = asyncio.ensure_future(finish_despite_cancellation(release()))
    await asyncio.sleep(0)
    first.set_result(1)
    await asyncio.sleep(0.01)
    second.set_result(2)
    assert await waiting == (1, 2)


async def test_the_caller_is_cancelled_at_once_and_the_coroutine_still_finishes() -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    finished = asyncio.Event()

    async def release() -> None:
        await gate
        finished.set()

    caller = asyncio.ensure_future(finish_despite_cancellation(release()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not finished.is_set()
    gate.set_result(None)
    await asyncio.wait_for(finished.wait(), 1)


async def test_errors_reach_the_caller_before_and_after_a_wait() -> None:
    async def fails_at_once() -> None:
        raise ValueError("before")

    async def fails_later() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("after")

    with pytest.raises(ValueError, match="before"):
        await finish_despite_cancellation(fails_at_once())
    with pytest.raises(KeyError, match="after"):
        await finish_despite_cancellation(fails_later())


async def test_an_exception_thrown_into_the_wait_reaches_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    seen: list[str] = []

    async def release() -> str:
        try:
            await gate
        except RuntimeError as error:
            seen.append(str(error))
            return "handled"
        return "not reached"

    waiting = asyncio.ensure_future(finish_despite_cancellation(release()))
    await asyncio.sleep(0)
    gate.set_exception(RuntimeError("the server went away"))
    assert await waiting == "handled"
    assert seen == ["the server went away"]


async def test_start_runs_to_the_end_when_nothing_waits() -> None:
    created = count_tasks(asyncio.get_running_loop())

    async def free_connection() -> str:
        return "conn"

    rest, result = start(free_connection())
    assert (rest, result) == (None, "conn")
    assert created[0] == 0


async def test_start_hands_over_what_waits_and_awaiting_it_finishes_it() -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    steps: list[str] = []

    async def full_pool() -> str:
        steps.append("queued")
        value = await gate
        steps.append("woken")
        return value

    rest, result = start(full_pool())
    assert rest is not None and result is None
    assert steps == ["queued"]  # ran in the caller, up to the wait
    loop.call_soon(gate.set_result, "conn")
    assert await rest == "conn"
    assert steps == ["queued", "woken"]


async def test_cancelling_the_await_of_what_start_handed_over_cancels_it_where_it_waits() -> None:
    cleaned_up = []

    async def full_pool() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaned_up.append("holder back in the queue")
            raise

    rest, _ = start(full_pool())
    assert rest is not None
    waiter = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert cleaned_up == ["holder back in the queue"]


async def test_an_exception_after_the_wait_reaches_whoever_awaits_the_rest() -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    async def broken() -> None:
        await gate
        raise ConnectionResetError("server closed the connection")

    rest, _ = start(broken())
    assert rest is not None
    loop.call_soon(gate.set_result, None)
    with pytest.raises(ConnectionResetError):
        await rest
