"""The object ``acquire()`` returns: an async context manager that is also awaitable.

``async with pm.acquire() as conn`` releases on exit, after the driver ended
the block's work (psycopg commits, or rolls back on an error); ``conn = await
pm.acquire()`` leaves the release to the caller (``await pm.release(conn)``).
Nothing runs until the object is awaited or entered, so an acquire that is
created but never used costs nothing and leaks nothing.

Entering and leaving hand the manager's own coroutines straight to the caller
instead of wrapping them in coroutines of their own: every frame on this path
is paid on each acquire, and again each time a waiting acquire resumes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

ConnT = TypeVar("ConnT")

#: Release callback: the connection (``None`` if there is none), the error
#: that ended the ``async with`` body, and True: the end of a block, where a
#: driver may commit (an explicit ``release()`` passes False: it cannot know
#: whether the work it ends succeeded).
Release = Callable[[Any, "BaseException | None", bool], Awaitable[None]]


class AcquireContext(Generic[ConnT]):
    """One acquire, to await or to enter.

    ``acquire(context)`` makes the awaitable that takes the connection. Given
    this context (``async with``), it stores the connection in
    :attr:`connection` the moment it has one, in the same step as the
    manager's own record, so the exit knows what to release; given ``None``
    (``await``), the caller keeps the connection.
    """

    __slots__ = ("_acquire", "_release", "connection")

    def __init__(
        self,
        acquire: Callable[[AcquireContext[ConnT] | None], Awaitable[ConnT]],
        release: Release,
    ) -> None:
        self._acquire = acquire
        self._release = release
        self.connection: ConnT | None = None

    def __await__(self) -> Generator[Any, None, ConnT]:
        return self._acquire(None).__await__()

    def __aenter__(self) -> Awaitable[ConnT]:
        if self.connection is not None:
            raise RuntimeError("this acquire() context is already in use")
        return self._acquire(self)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]:
        connection, self.connection = self.connection, None
        return self._release(connection, exc, True)
