"""Start an awaitable in the caller's task, and pay for protection only if it waits.

Two guards sit on the path of every connection, and both cost the same way
whichever way the operation goes:

- a release must not stop half way because the task returning the connection
  was cancelled, or the connection belongs to nobody. ``asyncio.shield()``
  guards it by wrapping every release in a new Task: a task creation and three
  more event-loop iterations per release, even when the release finishes
  without ever waiting (psycopg's ``putconn()`` of an idle connection nearly
  always does);
- an acquire must end within its timeout, and a deadline costs a timer even
  when a free connection is handed over at once (the common case).

:func:`start` runs the awaitable at once, in the caller's task, as Python
3.12's eager tasks do. If it finishes without suspending, nothing could have
cancelled it or made it late, and nothing more is paid. Only if it suspends
does the guard start, taking the awaitable over from exactly where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


async def finish_despite_cancellation(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; a cancellation of the caller no longer stops it half way.

    The caller still sees its ``CancelledError`` at once; the awaitable then
    finishes in the background (the running loop holds its Task).
    """
    rest, result = start(awaitable)
    if rest is None:
        return result  # type: ignore[no-any-return]
    return await asyncio.shield(asyncio.get_running_loop().create_task(_finish(rest)))


def start(awaitable: Awaitable[T]) -> tuple[Awaitable[T] | None, Any]:
    """Run ``awaitable`` in the caller's task up to its first suspension.

    Returns ``(None, result)`` if it finished without suspending. Otherwise
    ``(rest, None)``: awaiting ``rest`` continues it from where it stopped,
    and cancelling that await cancels it where it waits.
    """
    steps = awaitable.__await__()
    try:
        return _Resumed(steps, steps.send(None)), None
    except StopIteration as finished:
        return None, finished.value


async def _finish(rest: Awaitable[T]) -> T:
    return await rest


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
