"""alarms.py: many deadlines on one loop timer, with asyncio.timeout()'s contract."""

from __future__ import annotations

import asyncio
import sys

import pytest

from pgrouter.alarms import AlarmClock


def count_loop_timers(loop: asyncio.AbstractEventLoop) -> list[int]:
    timers = [0]
    call_at = loop.call_at

    def counting_call_at(when, callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        timers[0] += 1
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    return timers


async def test_alarms_ring_in_order_of_their_time_not_of_setting() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()
    rang: list[str] = []
    now = loop.time()
    clock.call_at(now + 0.03, lambda: rang.append("third"))
    clock.call_at(now + 0.01, lambda: rang.append("first"))
    clock.call_at(now + 0.02, lambda: rang.append("second"))
    await asyncio.sleep(0.06)
    assert rang == ["first", "second", "third"]
    assert len(clock) == 0


async def test_a_disarmed_alarm_never_rings() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()
    rang: list[str] = []
    alarm = clock.call_at(loop.time() + 0.01, lambda: rang.append("disarmed"))
    clock.call_at(loop.time() + 0.02, lambda: rang.append("kept"))
    alarm.disarm()
    alarm.disarm()  # twice is harmless
    assert not alarm.armed and len(clock) == 1
    await asyncio.sleep(0.05)
    assert rang == ["kept"]
    assert not alarm.rang


async def test_many_alarms_share_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    timers = count_loop_timers(loop)
    try:
        clock = AlarmClock()
        now = loop.time()
        for i in range(1000):
            # Later and later, as the deadlines of a stream of acquires are.
            clock.call_at(now + 10 + i / 1000, lambda: None).disarm()
        assert timers[0] == 1
        clock.close()
    finally:
        del loop.call_at


async def test_disarmed_alarms_do_not_pile_up() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()
    keep = clock.call_at(loop.time() + 60, lambda: None)
    for _ in range(10_000):
        clock.call_at(loop.time() + 30, lambda: None).disarm()
    assert len(clock._heap) < 1000
    assert keep.armed
    clock.close()
    assert len(clock) == 0 and not keep.armed


async def test_a_deadline_turns_its_own_cancellation_into_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()
    cleaned_up = []

    async def full_pool() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaned_up.append("holder back in the queue")
            raise

    started = loop.time()
    with pytest.raises(asyncio.TimeoutError), clock.timeout_at(loop.time() + 0.02) as deadline:
        await full_pool()
    assert deadline.expired
    assert loop.time() - started < 1
    assert cleaned_up == ["holder back in the queue"]
    task = asyncio.current_task()
    if sys.version_info >= (3, 11):
        assert task is not None and task.cancelling() == 0  # nothing left to leak later


async def test_a_deadline_met_leaves_nothing_armed() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()
    with clock.timeout_at(loop.time() + 5) as deadline:
        await asyncio.sleep(0)
    assert not deadline.expired and len(clock) == 0


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()

    async def caller() -> None:
        with clock.timeout_at(loop.time() + 5):
            await asyncio.sleep(10)

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(clock) == 0


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="needs Task.uncancel(); the manager uses none on 3.10"
)
async def test_outside_cancellation_at_the_deadline_still_propagates() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock()
    outcome: list[str] = []
    due = loop.time() + 5

    async def caller() -> None:
        try:
            with clock.timeout_at(due):
                await asyncio.sleep(10)
        except asyncio.TimeoutError:
            outcome.append("timeout")
            raise

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0)  # the task now waits in sleep()
    clock._ring(due)  # the deadline passes: the alarm cancels the task...
    task.cancel()  # ...and someone else cancels it before it wakes up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == []
