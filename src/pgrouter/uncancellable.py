"""Run a coroutine to its end even if the caller is cancelled, at no cost when it never waits.

A connection's way back to its pool must not stop half way because the task
returning it was cancelled: the connection would belong to nobody. The usual
guard, ``await asyncio.shield(release())``, wraps every release in a new Task,
which costs a task creation and three more event-loop iterations per release,
even when the release finishes without ever waiting (psycopg's ``putconn()`` of
an idle connection does, nearly always). :func:`finish_despite_cancellation`
starts the coroutine at once, in the caller's task, as Python 3.12's eager
tasks do: if it ends without suspending, no cancellation could reach it and
nothing else is paid; only if it suspends does a Task take it over from that
point, shielded from the caller's cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


async def finish_despite_cancellation(coroutine: Coroutine[Any, Any, T]) -> T:
    """Await ``coroutine``; a cancellation of the caller no longer stops it half way.

    The caller still sees its ``CancelledError`` at once; the coroutine then
    finishes in the background (the running loop holds its Task).
    """
    try:
        suspended_on = coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    rest = asyncio.get_running_loop().create_task(_resume(coroutine, suspended_on))
    return await asyncio.shield(rest)


async def _resume(coroutine: Coroutine[Any, Any, T], suspended_on: Any) -> T:
    return await _Resumed(coroutine, suspended_on)


class _Resumed(Generic[T]):
    """Awaitable that continues a coroutine already suspended on ``suspended_on``.

    It hands the Task driving it exactly what the coroutine yielded (the future
    it waits on), and passes back every value or exception the Task sends, as
    ``yield from`` would had the coroutine been awaited from the start.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, T], suspended_on: Any) -> None:
        self._coroutine = coroutine
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, T]:
        coroutine, yielded = self._coroutine, self._suspended_on
        while True:
            try:
                try:
                    sent = yield yielded
                except BaseException as thrown:
                    yielded = coroutine.throw(thrown)
                else:
                    yielded = coroutine.send(sent)
            except StopIteration as finished:
                result: T = finished.value
                return result
