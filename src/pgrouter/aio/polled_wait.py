"""Python 3.10's wait for a driver's acquire that may have to end early: polled, not tripped.

On 3.11+ the manager parks an acquire that has to wait and cancels it the instant
its host stops serving (alarms.py: ``Task.uncancel()`` tells that trip from a
cancellation that came from outside). Python 3.10 has no ``uncancel()``: a trip
that cancelled the caller's own task could swallow the caller's cancellation. So
there the acquire runs in a Task of its own that the caller's task waits on, a
slice at a time, asking between slices whether it is still wanted; nothing
cancels the caller's task but its own callers.

Why one Task for the whole wait rather than a driver acquire per slice: an
acquire that must connect (a pool with room to grow) could take longer than a
slice on a loaded machine; cut and restarted every slice, it would never finish.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_polled(
    waiting: Awaitable[T],
    still_wanted: Callable[[], bool],
    every: float,
    give_back: Callable[[T], None],
) -> T | None:
    """``waiting``'s result, or ``None`` as soon as ``still_wanted()`` says no.

    ``still_wanted`` is asked every ``every`` seconds while ``waiting`` has not
    finished. An error of ``waiting`` (the driver's timeout, a host error) is
    raised as it is. Once the wait is given up (``None``, or the caller
    cancelled), ``waiting`` is cancelled; a result it produces all the same, a
    connection handed over as the cancellation arrived, goes to ``give_back``,
    so nothing acquired is left owned by no one.
    """
    task = asyncio.get_running_loop().create_task(_awaited(waiting))
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=every)
            if done:
                return task.result()
            if not still_wanted():
                break
    except asyncio.CancelledError:
        _abandon(task, give_back)
        raise
    _abandon(task, give_back)
    return None


def _abandon(task: asyncio.Task[T], give_back: Callable[[T], None]) -> None:
    """Stop waiting for ``task``; whatever it acquired, now or later, to ``give_back``."""
    if task.done():  # the caller was cancelled in the very iteration it finished
        _give_back_result(task, give_back)
    else:
        task.cancel()
        task.add_done_callback(functools.partial(_give_back_result, give_back=give_back))


async def _awaited(waiting: Awaitable[T]) -> T:
    return await waiting


def _give_back_result(task: asyncio.Task[T], give_back: Callable[[T], None]) -> None:
    """A cancelled wait's late result, if it produced one, to ``give_back``."""
    if task.cancelled():
        return
    if task.exception() is None:  # retrieved either way: no "never retrieved" warning
        give_back(task.result())
