"""The object ``acquire()`` returns: an async context manager that is also awaitable.

``async with pm.acquire() as conn`` releases on exit; ``conn = await
pm.acquire()`` leaves the release to the caller (``await pm.release(conn)``).
Nothing runs until the object is awaited or entered, so an acquire that is
created but never used costs nothing and leaks nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

ConnT = TypeVar("ConnT")

#: Release callback: the connection, and the error that ended the ``async with`` body.
Release = Callable[[Any, "BaseException | None"], Awaitable[None]]


class AcquireContext(Generic[ConnT]):
    __slots__ = ("_acquire", "_connection", "_release")

    def __init__(
        self,
        acquire: Callable[[], Awaitable[ConnT]],
        release: Release,
    ) -> None:
        self._acquire = acquire
        self._release = release
        self._connection: ConnT | None = None

    def __await__(self) -> Generator[Any, None, ConnT]:
        return self._acquire().__await__()

    async def __aenter__(self) -> ConnT:
        if self._connection is not None:
            raise RuntimeError("this acquire() context is already in use")
        self._connection = await self._acquire()
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._release(connection, exc)
