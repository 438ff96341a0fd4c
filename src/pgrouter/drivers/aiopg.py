"""aiopg behind the driver seam: one ``aiopg.Pool`` per host.

aiopg's acquire has no timeout of its own (the pool's ``timeout`` is also every
query's default timeout, so it is not ours to change): the caller's timeout is
enforced by :func:`~pgrouter.bounded.wait_bounded` (with ``cancel_late=False``), which
returns a connection that arrives too late to its pool.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

import aiopg
import psycopg2
import psycopg2.extensions

from ..bounded import wait_bounded
from ..driver import PROBE_QUERY, Driver, ListenConnection, ProbeResult, probe_result
from ..dsn import HostDsn
from .aiopg_listen import AiopgListenConnection
from .sqlstate import is_host_sqlstate
from .statements import psycopg2_mogrify, rows_as_dicts

#: What ``max_size`` reports for a pool without a maximum (aiopg ``maxsize=0``).
UNBOUNDED = sys.maxsize

#: Transaction states in which a returned connection is mid-query: a caller was
#: cancelled while its query ran. aiopg would warn and close it; we close it quietly.
_MID_QUERY = (
    psycopg2.extensions.TRANSACTION_STATUS_ACTIVE,
    psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN,
)


#: Connections whose socket abort() cut (pgrouter.sockets): closed on release,
#: since psycopg2 may still think them idle. Shared with aiopg.sa's driver.
_cut: weakref.WeakSet[aiopg.Connection] = weakref.WeakSet()


def close_if_mid_query(connection: aiopg.Connection | None) -> None:
    """Close a connection returned in the middle of a query (its caller was cancelled),
    or one whose socket was cut."""
    if (
        connection is not None
        and not connection.closed
        and (connection in _cut or connection.raw.get_transaction_status() in _MID_QUERY)
    ):
        connection.close()  # the pool drops closed connections and opens new ones


def is_psycopg2_host_error(error: BaseException) -> bool:
    """Connection-level psycopg2 errors, shutdowns and read-only refusals."""
    if isinstance(error, (OSError, psycopg2.InterfaceError)):
        return True  # InterfaceError: "connection already closed"
    if isinstance(error, psycopg2.Error):
        if error.pgcode is None:
            # Raised by libpq or aiopg, not by the server: the connection broke
            # ("server closed the connection unexpectedly", "Connection closed").
            return isinstance(error, psycopg2.OperationalError)
        return is_host_sqlstate(error.pgcode)
    return False


def is_psycopg2_config_error(error: BaseException) -> bool:
    """A pool keyword psycopg2 took for a connection option it does not know."""
    if isinstance(error, TypeError):
        return True
    return isinstance(error, psycopg2.ProgrammingError) and str(error).startswith("invalid dsn")


class AiopgDriver(Driver[aiopg.Pool, aiopg.Connection]):
    name = "aiopg"

    async def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> aiopg.Pool:
        return await aiopg.create_pool(dsn.to_conninfo(), **pool_kwargs)

    async def acquire(
        self, pool: aiopg.Pool, timeout: float | None, **kwargs: Any
    ) -> aiopg.Connection:
        async def take() -> aiopg.Connection:
            return await pool.acquire(**kwargs)

        async def give_back(connection: aiopg.Connection) -> None:
            await self.release(pool, connection)

        return await wait_bounded(take(), timeout, give_back, cancel_late=False)

    async def release(self, pool: aiopg.Pool, connection: aiopg.Connection, **kwargs: Any) -> None:
        close_if_mid_query(connection)
        await pool.release(connection, **kwargs)

    async def fetch_row(self, connection: aiopg.Connection, query: str) -> tuple[Any, ...]:
        cursor = await connection.cursor()
        try:
            await cursor.execute(query)
            row = await cursor.fetchone()
        finally:
            cursor.close()
        return tuple(row or ())

    async def run_statement(
        self, connection: aiopg.Connection, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        cursor = await connection.cursor()
        try:
            await cursor.execute(query, args)
            if not fetch or cursor.description is None:
                return []
            return rows_as_dicts(cursor.description, await cursor.fetchall())
        finally:
            cursor.close()

    mogrify_needs_connection = True

    def mogrify(self, connection: aiopg.Connection | None, query: str, args: Any) -> str | None:
        assert connection is not None
        return psycopg2_mogrify(connection.raw, query, args)

    def abort(self, connection: aiopg.Connection) -> None:
        _cut.add(connection)
        super().abort(connection)

    def socket_of(self, connection: aiopg.Connection) -> int | None:
        return None if connection.closed else int(connection.raw.fileno())

    async def close_pool(self, pool: aiopg.Pool) -> None:
        pool.close()
        await pool.wait_closed()

    async def terminate_pool(self, pool: aiopg.Pool) -> None:
        pool.terminate()
        await pool.wait_closed()

    async def terminate_connection(self, connection: aiopg.Connection) -> None:
        await connection.close()

    def free_size(self, pool: aiopg.Pool) -> int:
        # aiopg's own freesize counts only idle open connections; we want
        # max - in use (a lazy pool has room for connections it has not opened).
        return self.max_size(pool) - len(pool._used)

    def max_size(self, pool: aiopg.Pool) -> int:
        return int(pool.maxsize or UNBOUNDED)

    def is_config_error(self, error: BaseException) -> bool:
        return is_psycopg2_config_error(error)

    def is_closed(self, connection: aiopg.Connection) -> bool:
        return bool(connection.closed)

    async def connect_probe(self, dsn: HostDsn, timeout: float) -> aiopg.Connection:
        return await aiopg.connect(dsn.to_conninfo(), timeout=timeout)

    async def probe(self, connection: aiopg.Connection) -> ProbeResult:
        cursor = await connection.cursor()
        try:
            await cursor.execute(PROBE_QUERY)
            return probe_result(await cursor.fetchone())
        finally:
            cursor.close()

    async def close_probe(self, connection: aiopg.Connection) -> None:
        await connection.close()  # closes the socket at once, never waits on the server

    async def connect_listener(self, dsn: HostDsn, timeout: float) -> ListenConnection:
        return await AiopgListenConnection.connect(dsn, timeout)

    async def notify(self, connection: aiopg.Connection, channel: str, payload: str) -> None:
        cursor = await connection.cursor()  # aiopg is always in autocommit
        try:
            await cursor.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        finally:
            cursor.close()

    def is_host_error(self, error: BaseException) -> bool:
        return is_psycopg2_host_error(error)


__all__ = ["UNBOUNDED", "AiopgDriver", "close_if_mid_query", "is_psycopg2_host_error"]
