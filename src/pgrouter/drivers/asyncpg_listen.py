"""LISTEN through asyncpg: a connection of its own, notifications by ``add_listener``.

asyncpg delivers a notification only to callbacks registered for its channel
(``add_listener`` runs the LISTEN, quoting the name as an identifier); each
callback here appends to one queue that :meth:`AsyncpgListenConnection.receive`
drains, so the order across channels is the server's. asyncpg runs each
callback as a loop callback of its own: it does no more than an append, and
sets the event only when :meth:`~AsyncpgListenConnection.receive` waits.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import asyncpg
import asyncpg.exceptions as pg_errors

from ..bounded import wait_event
from ..driver import ListenConnection
from ..dsn import HostDsn


class AsyncpgListenConnection(ListenConnection):
    """One asyncpg connection LISTENing (see :class:`~pgrouter.driver.ListenConnection`)."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._received: collections.deque[tuple[str, str, int]] = collections.deque()
        self._arrived = asyncio.Event()
        self._waiting = False  # receive() waits on _arrived
        # A connection lost while nothing waits in receive() is noticed there.
        connection.add_termination_listener(self._on_termination)

    @classmethod
    async def connect(cls, dsn: HostDsn, timeout: float) -> AsyncpgListenConnection:
        return cls(await asyncpg.connect(dsn.to_url(), timeout=timeout))

    def _on_notification(self, _: Any, pid: int, channel: str, payload: str) -> None:
        self._received.append((channel, payload, pid))
        if self._waiting:
            self._waiting = False
            self._arrived.set()

    def _on_termination(self, _: Any) -> None:
        self._arrived.set()

    async def listen(self, channel: str) -> None:
        await self._connection.add_listener(channel, self._on_notification)

    async def unlisten_all(self) -> None:
        await self._connection.execute("UNLISTEN *")

    async def notify(self, channel: str, payload: str) -> None:
        await self._connection.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def receive(self, timeout: float) -> list[tuple[str, str, int]]:
        if not self._received:
            self._raise_if_closed()
            self._arrived.clear()
            self._waiting = True
            try:
                await wait_event(self._arrived, timeout)
            finally:
                self._waiting = False
        batch = list(self._received)
        self._received.clear()
        if not batch:
            self._raise_if_closed()
        return batch

    def _raise_if_closed(self) -> None:
        if self._connection.is_closed():
            raise pg_errors.ConnectionDoesNotExistError("the listening connection was closed")

    def abort(self) -> None:
        self._connection.terminate()
        self._arrived.set()

    async def close(self) -> None:
        self.abort()  # a graceful close() would wait on a server that may be frozen


__all__ = ["AsyncpgListenConnection"]
