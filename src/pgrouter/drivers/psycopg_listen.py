"""LISTEN through psycopg 3: a connection of its own, notifications by ``notifies()``.

psycopg (3.3+) keeps notifications that arrive during another command (the
liveness NOTIFY) in a backlog that the next ``notifies()`` yields first, so
nothing is dropped between two :meth:`PsycopgListenConnection.receive` calls.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ..driver import ListenConnection
from ..dsn import HostDsn
from ..sockets import cut_socket
from .psycopg import with_connection_defaults

#: libpq's connect_timeout is whole seconds; under 2 it is taken as 2.
_MIN_CONNECT_TIMEOUT = 2


def _check_version() -> None:
    major, minor = (int(part) for part in psycopg.__version__.split(".")[:2])
    if (major, minor) < (3, 3):
        # Older notifies() has no backlog: a notification that arrives during
        # our liveness NOTIFY would be dropped.
        raise RuntimeError(f"pm.listen() needs psycopg >= 3.3, found {psycopg.__version__}")


class PsycopgListenConnection(ListenConnection):
    """One psycopg connection LISTENing (see :class:`~pgrouter.driver.ListenConnection`)."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection

    @classmethod
    async def connect(cls, dsn: HostDsn, timeout: float) -> PsycopgListenConnection:
        _check_version()
        connection = await psycopg.AsyncConnection.connect(
            with_connection_defaults(dsn).to_conninfo(),
            autocommit=True,
            connect_timeout=max(_MIN_CONNECT_TIMEOUT, round(timeout + 0.5)),
        )
        return cls(connection)

    async def listen(self, channel: str) -> None:
        await self._connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    async def unlisten_all(self) -> None:
        await self._connection.execute("UNLISTEN *")

    async def notify(self, channel: str, payload: str) -> None:
        await self._connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def receive(self, timeout: float) -> list[tuple[str, str, int]]:
        # stop_after=1 ends after the first batch (all the notifications of one read).
        # Plain tuples, not psycopg's Notify: the garbage collector stops tracking a
        # plain tuple of str and int, so a backlog of them costs no full collections.
        return [
            (notify.channel, notify.payload, notify.pid)
            async for notify in self._connection.notifies(timeout=timeout, stop_after=1)
        ]

    def abort(self) -> None:
        if not self._connection.closed:
            cut_socket(self._connection.pgconn.socket)

    async def close(self) -> None:
        await self._connection.close()  # closes the socket, no round trip


__all__ = ["PsycopgListenConnection"]
