"""A timeout for drivers whose acquire has none, that never loses a late connection.

aiopg's ``Pool.acquire()`` and SQLAlchemy's ``AsyncEngine.connect()`` take no
timeout, and cancelling them half way (in the middle of a connect, or just as
the pool hands a connection over) can strand a connection: taken from the pool,
owned by nobody. So the driver's own acquire runs in a task of its own that is
never cancelled. The caller waits for it at most ``timeout`` seconds; when the
caller gives up (timeout) or is cancelled, the task finishes in the background
and whatever connection it still produces goes straight back to its pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger("pgrouter")

ConnT = TypeVar("ConnT")

#: Background work in flight (late acquires, their give-backs): the event loop
#: keeps only weak references to tasks, so they are kept here until done.
_in_flight: set[asyncio.Future[object]] = set()


async def acquire_within(
    acquire: Callable[[], Awaitable[ConnT]],
    give_back: Callable[[ConnT], Awaitable[None]],
    timeout: float | None,
) -> ConnT:
    """``await acquire()`` for at most ``timeout`` seconds (``None``: no limit).

    Raises :class:`asyncio.TimeoutError` on timeout. On timeout or cancellation
    of the caller, a connection that ``acquire()`` returns later is passed to
    ``give_back``.
    """
    task: asyncio.Task[ConnT] = asyncio.ensure_future(acquire())
    try:
        # asyncio.wait() neither cancels the task on timeout nor when the caller
        # is cancelled: the task stays ours to clean up.
        await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        _give_back_when_done(task, give_back)
        raise
    if not task.done():
        _give_back_when_done(task, give_back)
        raise asyncio.TimeoutError(f"no connection within {timeout:g} s")
    return task.result()


def _give_back_when_done(
    task: asyncio.Task[ConnT], give_back: Callable[[ConnT], Awaitable[None]]
) -> None:
    _in_flight.add(task)  # type: ignore[arg-type]

    def on_done(finished: asyncio.Task[ConnT]) -> None:
        _in_flight.discard(finished)  # type: ignore[arg-type]
        if finished.cancelled():
            return
        error = finished.exception()  # retrieved, so asyncio logs no "never retrieved"
        if error is not None:
            logger.debug("pgrouter: an abandoned acquire failed: %r", error)
            return
        returning = asyncio.ensure_future(_give_back_quietly(give_back, finished.result()))
        _in_flight.add(returning)
        returning.add_done_callback(_in_flight.discard)

    task.add_done_callback(on_done)


async def _give_back_quietly(give_back: Callable[[ConnT], Awaitable[None]], conn: ConnT) -> None:
    try:
        await give_back(conn)
    except Exception as error:  # the pool may be closing; nothing is waiting on this
        logger.debug("pgrouter: returning a late connection failed: %r", error)


__all__ = ["acquire_within"]
