"""A timeout that returns on time, and never leaks what arrives late.

``asyncio.wait_for`` waits for the cancelled operation to finish before it
raises. Some drivers take seconds to unwind a cancellation against a frozen
server (psycopg tries to cancel the query server side for up to 5 s, then
waits again), so a 1 s probe timeout could take 11 s. :func:`wait_bounded`
instead abandons the operation at the deadline: it keeps running in the
background until its cancellation completes, and if it produced something
anyway (a connection that arrived late), ``dispose_late`` gets it.

With ``cancel_late=False`` the abandoned operation is not even cancelled: it
runs to completion. That is the safe way to put a timeout on a driver's own
acquire that has none (aiopg's ``Pool.acquire()``, SQLAlchemy's
``AsyncEngine.connect()``): cancelling those half way, in the middle of a
connect or just as the pool hands a connection over, can strand a connection
that nobody owns; left to finish, the connection goes back to its pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger("pgrouter")

#: Abandoned operations still running: held so they are not garbage collected.
_abandoned: set[asyncio.Future[object]] = set()


async def wait_bounded(
    awaitable: Awaitable[T],
    timeout: float | None,
    dispose_late: Callable[[T], Awaitable[object]] | None = None,
    *,
    cancel_late: bool = True,
) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds (``None``: no limit).

    Raises ``asyncio.TimeoutError`` at the deadline. If the caller is
    cancelled, or the deadline passes, and the operation still succeeds
    later, its result goes to ``dispose_late`` (e.g. to close or release it).
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        abandon(task, dispose_late, cancel=cancel_late)
        raise
    if not done:
        abandon(task, dispose_late, cancel=cancel_late)
        raise asyncio.TimeoutError(f"gave up after {timeout:g} s")
    return task.result()


def abandon(
    task: asyncio.Future[T],
    dispose_late: Callable[[T], Awaitable[object]] | None = None,
    *,
    cancel: bool = True,
) -> None:
    """Stop waiting for ``task`` (cancelled, unless ``cancel`` is False); dispose of
    its result if it still produces one."""
    if cancel:
        task.cancel()
    _abandoned.add(task)  # type: ignore[arg-type]

    def on_done(finished: asyncio.Future[T]) -> None:
        _abandoned.discard(finished)  # type: ignore[arg-type]
        if finished.cancelled():
            return
        error = finished.exception()  # marks it retrieved: no "never retrieved" noise
        if error is not None:
            logger.debug("pgrouter: an abandoned operation failed: %r", error)
            return
        if dispose_late is not None:
            disposal = asyncio.ensure_future(dispose_late(finished.result()))
            _abandoned.add(disposal)
            disposal.add_done_callback(_forget_disposal)

    task.add_done_callback(on_done)


def _forget_disposal(disposal: asyncio.Future[object]) -> None:
    _abandoned.discard(disposal)
    if not disposal.cancelled() and disposal.exception() is not None:
        logger.debug("pgrouter: disposing of a late result failed: %r", disposal.exception())


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True if it is set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: on Python < 3.12 that can
    swallow a cancellation arriving as the timeout fires, and a checker loop
    that swallows its ``stop()`` runs forever.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        if not waiter.done():
            waiter.cancel()
    return event.is_set()


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again if it swallowed one.

    Drivers and older asyncio can swallow a cancellation that races with a
    result; the task's own loop condition (a stopping flag) ends it then.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("pgrouter: stopped task ended with %r", task.exception())
