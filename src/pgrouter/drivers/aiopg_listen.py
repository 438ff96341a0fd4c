"""LISTEN through aiopg (psycopg2 in asynchronous mode): notifications by ``conn.notifies``.

aiopg polls psycopg2 whenever its socket is readable and moves
``connection.notifies`` into an asyncio queue, which it closes with the error
when the connection breaks: :meth:`AiopgListenConnection.receive` then raises it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiopg
import psycopg2.extensions

from ..driver import ListenConnection
from ..dsn import HostDsn
from ..sockets import cut_socket


class AiopgListenConnection(ListenConnection):
    """One aiopg connection LISTENing (see :class:`~pgrouter.driver.ListenConnection`)."""

    def __init__(self, connection: aiopg.Connection) -> None:
        self._connection = connection
        # The queue's get() in flight, kept across receive() calls: cancelling
        # it could drop the notification it was just handed.
        self._getting: asyncio.Future[Any] | None = None

    @classmethod
    async def connect(cls, dsn: HostDsn, timeout: float) -> AiopgListenConnection:
        return cls(await aiopg.connect(dsn.to_conninfo(), timeout=timeout))

    async def _execute(self, query: str, args: tuple[str, ...] = ()) -> None:
        cursor = await self._connection.cursor()
        try:
            await cursor.execute(query, args or None)
        finally:
            cursor.close()

    async def listen(self, channel: str) -> None:
        quoted = psycopg2.extensions.quote_ident(channel, self._connection.raw)
        await self._execute(f"LISTEN {quoted}")

    async def unlisten_all(self) -> None:
        await self._execute("UNLISTEN *")

    async def notify(self, channel: str, payload: str) -> None:
        await self._execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def receive(self, timeout: float) -> list[tuple[str, str, int]]:
        queue = self._connection.notifies
        batch = []
        if self._getting is None and queue.empty():
            self._getting = asyncio.ensure_future(queue.get())
        if self._getting is not None:
            await asyncio.wait({self._getting}, timeout=timeout)
            if not self._getting.done():
                return []
            getting, self._getting = self._getting, None
            batch.append(getting.result())  # raises the error that closed the queue
        while not queue.empty():
            batch.append(queue.get_nowait())
        return [(notify.channel, notify.payload, notify.pid) for notify in batch]

    def abort(self) -> None:
        if not self._connection.closed:
            cut_socket(int(self._connection.raw.fileno()))

    async def close(self) -> None:
        if self._getting is not None:
            self._getting.cancel()
        await self._connection.close()  # closes the socket at once


__all__ = ["AiopgListenConnection"]
