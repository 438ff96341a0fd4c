"""SQLAlchemy 2's asyncio engine behind the driver seam: one ``AsyncEngine`` per host.

Each host gets ``create_async_engine("postgresql+asyncpg://...", **pool_kwargs)``;
``acquire()`` hands out a started ``AsyncConnection`` (usable as is, or with
``AsyncSession(bind=connection)``), and releasing it closes it, which returns
its DBAPI connection to the engine's pool. ``AsyncEngine.connect()`` has no
timeout of its own (``pool_timeout`` only bounds the wait for a full pool), so
the caller's timeout is enforced by
:func:`~pgrouter.bounded.wait_bounded` (with ``cancel_late=False``). The probe runs on a
plain asyncpg connection (the dialect's own driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import sqlalchemy.exc as sa_errors
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool, QueuePool

from ..bounded import wait_bounded
from ..driver import Driver, ProbeThroughPlainDriver
from ..dsn import HostDsn
from .asyncpg import AsyncpgDriver
from .sqlstate import is_host_sqlstate
from .statements import positional_args

#: What ``max_size`` reports for a pool without a maximum (``max_overflow=-1``,
#: or a pool class other than ``QueuePool``).
UNBOUNDED = sys.maxsize

#: The dialect: SQLAlchemy's asyncio support for PostgreSQL over asyncpg.
SCHEME = "postgresql+asyncpg"


def engine_url(dsn: HostDsn) -> str:
    """The host's URL with the asyncpg dialect's scheme (options become connect keywords)."""
    return SCHEME + dsn.to_url()[len("postgresql") :]


class SqlalchemyDriver(ProbeThroughPlainDriver, Driver[AsyncEngine, AsyncConnection]):
    name = "sqlalchemy"

    def __init__(self) -> None:
        self._plain = AsyncpgDriver()  # the probe connection is a plain asyncpg one

    async def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> AsyncEngine:
        # Lazy, like every SQLAlchemy pool: nothing connects until the first acquire.
        return create_async_engine(engine_url(dsn), **pool_kwargs)

    async def acquire(
        self, pool: AsyncEngine, timeout: float | None, **kwargs: Any
    ) -> AsyncConnection:
        async def take() -> AsyncConnection:
            return await pool.connect(**kwargs).start()

        async def give_back(connection: AsyncConnection) -> None:
            await self.release(pool, connection)

        return await wait_bounded(take(), timeout, give_back, cancel_late=False)

    async def release(self, pool: AsyncEngine, connection: AsyncConnection, **kwargs: Any) -> None:
        # Rolls back what the caller left open and checks the DBAPI connection
        # in; the pool invalidates it when that reset fails (a broken connection).
        await connection.close()

    async def close_pool(self, pool: AsyncEngine) -> None:
        await _all_checked_in(pool.sync_engine.pool)
        await pool.dispose()

    async def terminate_pool(self, pool: AsyncEngine) -> None:
        # Borrowed connections were invalidated by terminate_connection().
        await pool.dispose()

    async def terminate_connection(self, connection: AsyncConnection) -> None:
        if not connection.closed:
            await connection.invalidate()
            await connection.close()

    def free_size(self, pool: AsyncEngine) -> int:
        sync_pool = pool.sync_engine.pool
        if not isinstance(sync_pool, QueuePool):
            return UNBOUNDED
        # checkedout() counts connections handed out and those being opened.
        return self.max_size(pool) - int(sync_pool.checkedout())

    def max_size(self, pool: AsyncEngine) -> int:
        sync_pool = pool.sync_engine.pool
        if not isinstance(sync_pool, QueuePool):
            return UNBOUNDED
        overflow = int(sync_pool._max_overflow)
        return UNBOUNDED if overflow < 0 else int(sync_pool.size()) + overflow

    async def fetch_row(self, connection: AsyncConnection, query: str) -> tuple[Any, ...]:
        began = not connection.in_transaction()
        result = await connection.exec_driver_sql(query)
        row = result.first()
        if began:
            await connection.rollback()  # SQLAlchemy began a transaction for it: end it
        return tuple(row or ())

    async def run_statement(
        self, connection: AsyncConnection, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        # The driver's own SQL and placeholders ($1, $2: the asyncpg dialect's
        # numeric_dollar style), not text()'s :name.
        params = positional_args(args, self.name)
        result = await connection.exec_driver_sql(query, params if params else None)
        if not fetch or not result.returns_rows:
            return []
        return [dict(row._mapping) for row in result]

    async def notify(self, connection: AsyncConnection, channel: str, payload: str) -> None:
        began = not connection.in_transaction()
        await connection.exec_driver_sql("SELECT pg_notify($1, $2)", (channel, payload))
        if began:
            await connection.commit()  # SQLAlchemy began a transaction for it: send it now

    def statement_commits(self, connection: AsyncConnection) -> bool:
        return False  # SQLAlchemy begins a transaction for the first statement

    async def begin(self, connection: AsyncConnection) -> None:
        if not connection.in_transaction():
            await connection.begin()

    async def commit(self, connection: AsyncConnection) -> None:
        await connection.commit()

    async def rollback(self, connection: AsyncConnection) -> None:
        await connection.rollback()

    def abort(self, connection: AsyncConnection) -> None:
        # The asyncpg connection under SQLAlchemy's adapter: terminate() drops
        # its transport at once; the pool invalidates it when its reset fails.
        with contextlib.suppress(Exception):  # closed or invalidated already
            raw = connection.sync_connection.connection.dbapi_connection._connection  # type: ignore[union-attr]
            self._plain.abort(raw)

    def is_closed(self, connection: AsyncConnection) -> bool:
        return bool(connection.closed or connection.invalidated)

    def is_host_error(self, error: BaseException) -> bool:
        if isinstance(error, (OSError, sa_errors.DisconnectionError)):
            return True
        if isinstance(error, sa_errors.DBAPIError):
            if error.connection_invalidated:  # the dialect saw a disconnect
                return True
            return is_host_sqlstate(getattr(error.orig, "sqlstate", None))
        # Raised by asyncpg itself (e.g. while connecting) rather than wrapped.
        return self._plain.is_host_error(error)


async def _all_checked_in(pool: Pool) -> None:
    """Wait until every connection of ``pool`` is back (woken by its checkins)."""
    if not isinstance(pool, QueuePool) or pool.checkedout() == 0:
        return
    loop = asyncio.get_running_loop()
    returned = asyncio.Event()

    def check() -> None:
        if pool.checkedout() == 0:
            returned.set()

    def on_checkin(*_: Any) -> None:
        # Fires before the connection is counted back in: look once it is.
        loop.call_soon(check)

    event.listen(pool, "checkin", on_checkin)
    try:
        check()
        await returned.wait()
    finally:
        event.remove(pool, "checkin", on_checkin)


__all__ = ["SCHEME", "UNBOUNDED", "SqlalchemyDriver", "engine_url"]
