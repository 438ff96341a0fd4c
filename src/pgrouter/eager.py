"""Start an awaitable in the caller's task, and pay for protection only if it waits.

Two guards sit on the path of every connection, and both cost the same way
whichever way the operation goes:

- a release must not stop half way because the task returning the connection
  was cancelled, or the connection belongs to nobody. ``asyncio.shield()``
  guards it by wrapping every release in a new Task: a task creation and three
  more event-loop iterations per release, even when the release finishes
  without ever waiting (psycopg's ``putconn()`` of an idle connection nearly
  always does);
- an acquire must end within its timeout. A timeout context schedules and
  cancels a timer on every acquire, even when a free connection is handed
  over at once (the common case for asyncpg, whose ``Pool.acquire(timeout=)``
  always sets one up).

Both helpers here run the awaitable at once, in the caller's task, as Python
3.12's eager tasks do. If it finishes without suspending, nothing could have
cancelled it or made it late, and nothing more is paid. Only if it suspends
does the guard start, taking the awaitable over from exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


async def finish_despite_cancellation(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; a cancellation of the caller no longer stops it half way.

    The caller still sees its ``CancelledError`` at once; the awaitable then
    finishes in the background (the running loop holds its Task).
    """
    steps, suspended_on = _start(awaitable)
    if steps is None:
        return suspended_on  # type: ignore[no-any-return]  # the result: it never suspended
    rest = asyncio.get_running_loop().create_task(_resume(steps, suspended_on))
    return await asyncio.shield(rest)


async def wait_eagerly(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable`` within ``timeout`` seconds (``asyncio.TimeoutError`` past it).

    The timer is set only once the awaitable suspends. At the deadline the
    awaitable is cancelled where it waits, as ``asyncio.timeout()`` would.
    """
    steps, suspended_on = _start(awaitable)
    if steps is None:
        return suspended_on  # type: ignore[no-any-return]  # the result: it never suspended
    if timeout is None:
        return await _Resumed(steps, suspended_on)
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await _Resumed(steps, suspended_on)
    return await asyncio.wait_for(_resume(steps, suspended_on), timeout)


def _start(awaitable: Awaitable[T]) -> tuple[Generator[Any, Any, T] | None, Any]:
    """Run ``awaitable`` up to its first suspension, in the caller's task.

    Returns its steps and what it suspended on, or ``(None, result)`` if it
    finished without suspending.
    """
    steps = awaitable.__await__()
    try:
        return steps, steps.send(None)
    except StopIteration as finished:
        return None, finished.value


async def _resume(steps: Generator[Any, Any, T], suspended_on: Any) -> T:
    return await _Resumed(steps, suspended_on)


class _Resumed(Generic[T]):
    """Awaitable that continues an awaitable already suspended on ``suspended_on``.

    It hands the Task driving it exactly what the awaitable yielded (the future
    it waits on), and passes back every value or exception the Task sends, as
    ``yield from`` would had the awaitable been awaited from the start.
    """

    def __init__(self, steps: Generator[Any, Any, T], suspended_on: Any) -> None:
        self._steps = steps
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, T]:
        steps, yielded = self._steps, self._suspended_on
        while True:
            try:
                try:
                    sent = yield yielded
                except BaseException as thrown:
                    yielded = steps.throw(thrown)
                else:
                    yielded = steps.send(sent)
            except StopIteration as finished:
                result: T = finished.value
                return result
