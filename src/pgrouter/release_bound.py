"""A bound on how long a connection may take to go back to its pool.

asyncpg resets a connection on release with a round trip to the server. On a
frozen server, or a connection that a network fault left silently dead, that
round trip never ends, and neither would the caller's ``async with`` nor the
pool's ``close()``. asyncpg's own remedy, a timeout on the reset, costs a loop
timer per release, and cancelled loop timers are what made a contended
acquire + release dearer than the bare pool's (see :mod:`pgrouter.alarms`).

Every release gets the same bound, so the order they started in is the order
they fall due: one insertion-ordered dict holds them, and one loop timer, for
the oldest, is all the bookkeeping. A release that ends is dropped from the
dict; one still running at its due time has its connection aborted, which
makes the driver's pool take it back as broken.

The same record serves a second purpose, for every driver: when a host is
declared down, fenced or superseded, :meth:`ReleaseBound.abort_host` aborts
the releases still running on it at once, instead of at the bound (or never,
for a driver whose release has no bound: ``bound=None``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any


class ReleaseBound:
    """Aborts the connection of any release still running ``bound`` seconds after it began."""

    def __init__(self, bound: float | None, abort: Callable[[Any], None]) -> None:
        self._bound = bound
        self._abort = abort
        # token -> (connection, its host's index, time.monotonic() it falls due), oldest first
        self._running: dict[int, tuple[Any, int, float]] = {}
        self._tokens = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Releases being watched."""
        return len(self._running)

    def begin(self, connection: Any, host: int = 0) -> int:
        """Watch a release about to start on host ``host``; pass the token to :meth:`end`."""
        token = next(self._tokens)
        bound = self._bound
        if bound is None:
            self._running[token] = (connection, host, 0.0)
            return token
        self._running[token] = (connection, host, time.monotonic() + bound)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(bound, self._abort_overdue)
        return token

    def end(self, token: int) -> None:
        """The release is over (done or failed): stop watching it."""
        self._running.pop(token, None)

    def abort_host(self, host: int) -> int:
        """Abort every release still running on host ``host`` now; returns how many."""
        doomed = [token for token, (_, index, _) in self._running.items() if index == host]
        for token in doomed:
            connection = self._running.pop(token)[0]
            self._abort(connection)
        return len(doomed)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running.clear()

    def _abort_overdue(self) -> None:
        self._timer = None
        now = time.monotonic()
        running = self._running
        while running:
            token, (connection, _, due) = next(iter(running.items()))
            if due > now:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(due - now, self._abort_overdue)
                return
            del running[token]
            self._abort(connection)


__all__ = ["ReleaseBound"]
