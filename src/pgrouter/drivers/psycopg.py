"""psycopg 3 behind the driver seam: one ``psycopg_pool.AsyncConnectionPool`` per host.

``async with pm.acquire() as conn`` keeps ``pool.connection()``'s contract:
commit on a clean exit, roll back on an error. An explicit ``release()`` is
``putconn()``: it rolls back what was left open.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from ..driver import PROBE_QUERY, Driver, ListenConnection, ProbeResult, probe_result
from ..dsn import HostDsn

#: Applied to pool connections unless the DSN sets them: a dead peer or a
#: network that drops packets surfaces as an error (and so as an event that
#: checks the host at once) instead of a connection hanging for minutes.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",  # ms of unacknowledged data before the kernel gives up
}

#: libpq rounds connect_timeout up to whole seconds (and at least 2);
#: the real bound on a connect is the asyncio timeout around it.
_MIN_LIBPQ_CONNECT_TIMEOUT = 2

logger = logging.getLogger("pgrouter")


class PsycopgDriver(Driver[psycopg_pool.AsyncConnectionPool, psycopg.AsyncConnection[Any]]):
    name = "psycopg"

    def __init__(self) -> None:
        # Connections whose socket abort() cut; release() closes them.
        self._cut: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    async def create_pool(
        self, dsn: HostDsn, **pool_kwargs: Any
    ) -> psycopg_pool.AsyncConnectionPool:
        pool_kwargs.setdefault("open", False)
        pool: psycopg_pool.AsyncConnectionPool = psycopg_pool.AsyncConnectionPool(
            with_connection_defaults(dsn).to_conninfo(), **pool_kwargs
        )
        try:
            await pool.open(wait=True)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def acquire(
        self, pool: psycopg_pool.AsyncConnectionPool, timeout: float | None, **kwargs: Any
    ) -> psycopg.AsyncConnection[Any]:
        try:
            return await pool.getconn(timeout=timeout, **kwargs)
        except psycopg_pool.PoolTimeout as error:
            raise asyncio.TimeoutError(str(error)) from error

    async def release(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        connection: psycopg.AsyncConnection[Any],
        **kwargs: Any,
    ) -> None:
        if connection in self._cut:
            # Its socket was cut (pgrouter.sockets): libpq may still think it
            # idle, and the pool would keep it. Closed, the pool drops it.
            await connection.close()
        await pool.putconn(connection)

    async def fetch_row(
        self, connection: psycopg.AsyncConnection[Any], query: str
    ) -> tuple[Any, ...]:
        idle = connection.info.transaction_status == TransactionStatus.IDLE
        cursor = await connection.execute(query)
        row = await cursor.fetchone()
        if idle and not connection.autocommit:
            await connection.rollback()  # the query began a transaction: end it
        return tuple(row or ())

    async def run_statement(
        self, connection: psycopg.AsyncConnection[Any], query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        # Not closed explicitly, as connection.execute()'s own cursor: closing is a
        # coroutine more per statement, and the result goes with the cursor anyway.
        cursor = connection.cursor(row_factory=dict_row)
        await cursor.execute(query, args)
        if not fetch or cursor.description is None:
            return []
        return await cursor.fetchall()

    def statement_commits(self, connection: psycopg.AsyncConnection[Any]) -> bool:
        return bool(connection.autocommit)

    async def begin(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if connection.autocommit:
            await connection.execute("BEGIN")
        # else psycopg begins one with the first statement

    async def commit(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if connection.autocommit:
            await connection.execute("COMMIT")
        else:
            await connection.commit()

    async def rollback(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if connection.autocommit:
            await connection.execute("ROLLBACK")
        else:
            await connection.rollback()

    mogrify_needs_connection = True

    def mogrify(
        self, connection: psycopg.AsyncConnection[Any] | None, query: str, args: Any
    ) -> str | None:
        assert connection is not None
        # Client-side binding renders what server-side binding would send apart.
        return psycopg.AsyncClientCursor(connection).mogrify(query, args)

    def abort(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._cut.add(connection)
        super().abort(connection)

    def socket_of(self, connection: psycopg.AsyncConnection[Any]) -> int | None:
        if connection.closed:
            return None
        return int(connection.pgconn.socket)

    def end_of_use(
        self, connection: psycopg.AsyncConnection[Any], error: BaseException | None
    ) -> Awaitable[None] | None:
        # Idle (autocommit, or the caller committed): nothing left to end, and
        # no round trip. Closed (UNKNOWN) or broken: the pool discards it.
        # (pgconn's status, as psycopg_pool reads it: .info makes an object.)
        status = connection.pgconn.transaction_status
        if status == TransactionStatus.IDLE or status == TransactionStatus.UNKNOWN:
            return None
        if connection.broken:
            return None
        if status == TransactionStatus.ACTIVE:
            # A query still runs (an unfinished stream): a commit would wait
            # for it for ever, and the pool closes such a connection anyway.
            return None if error is not None else _refuse_commit()
        if error is None and status == TransactionStatus.INTRANS:
            return connection.commit()
        return _roll_back_quietly(connection)

    def pending_commit(self, connection: psycopg.AsyncConnection[Any]) -> bool:
        return bool(connection.pgconn.transaction_status == TransactionStatus.INTRANS)

    async def close_pool(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        await pool.close()

    async def terminate_pool(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        # Borrowed connections were closed by terminate_connection(); this
        # closes the idle ones and stops the pool's workers.
        await pool.close(timeout=1.0)

    async def terminate_connection(self, connection: psycopg.AsyncConnection[Any]) -> None:
        await connection.close()

    def free_size(self, pool: psycopg_pool.AsyncConnectionPool) -> int:
        # max - in use, where in use = opened - idle. Private counters: get_stats()
        # builds a dict per call and this runs on every acquire.
        return int(pool.max_size - pool._nconns + len(pool._pool))

    def max_size(self, pool: psycopg_pool.AsyncConnectionPool) -> int:
        return int(pool.max_size)

    def is_closed(self, connection: psycopg.AsyncConnection[Any]) -> bool:
        return bool(connection.closed or connection.broken)

    async def connect_probe(self, dsn: HostDsn, timeout: float) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            with_connection_defaults(dsn).to_conninfo(),
            autocommit=True,
            connect_timeout=max(_MIN_LIBPQ_CONNECT_TIMEOUT, round(timeout + 0.5)),
        )

    async def probe(self, connection: psycopg.AsyncConnection[Any]) -> ProbeResult:
        cursor = await connection.execute(PROBE_QUERY)
        return probe_result(await cursor.fetchone())

    async def close_probe(self, connection: psycopg.AsyncConnection[Any]) -> None:
        await connection.close()

    async def connect_listener(self, dsn: HostDsn, timeout: float) -> ListenConnection:
        from .psycopg_listen import PsycopgListenConnection  # it imports this module

        return await PsycopgListenConnection.connect(dsn, timeout)

    async def notify(
        self, connection: psycopg.AsyncConnection[Any], channel: str, payload: str
    ) -> None:
        idle = connection.info.transaction_status == TransactionStatus.IDLE
        await connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        if idle and not connection.autocommit:
            await connection.commit()  # the statement opened a transaction: send it now

    def is_host_error(self, error: BaseException) -> bool:
        return isinstance(
            error, (OSError, psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
        ) and not isinstance(error, psycopg_pool.PoolTimeout)


async def _roll_back_quietly(connection: psycopg.AsyncConnection[Any]) -> None:
    """Roll back after an error, without hiding that error behind the rollback's own.

    As psycopg's ``pool.connection()`` does; a connection the rollback broke
    is discarded by its pool.
    """
    try:
        await connection.rollback()
    except Exception as error:
        logger.warning("rollback at the end of async with failed: %s", error)


async def _refuse_commit() -> None:
    raise psycopg.InterfaceError(
        "async with pm.acquire() ended cleanly with a query still running on the "
        "connection (an unfinished stream?): nothing was committed"
    )


def with_connection_defaults(dsn: HostDsn) -> HostDsn:
    """``dsn`` plus :data:`CONNECTION_DEFAULTS` for the options it does not set."""
    present = {key for key, _ in dsn.options}
    missing = {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in present}
    return dsn.with_options(**missing) if missing else dsn
