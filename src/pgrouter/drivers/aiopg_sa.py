"""aiopg.sa behind the driver seam: one ``aiopg.sa.Engine`` per host.

An engine is an aiopg pool that hands out ``SAConnection`` wrappers, so sizes,
the probe and the errors are aiopg's (:mod:`pgrouter.drivers.aiopg`); the
probe runs on a plain aiopg connection. aiopg.sa needs SQLAlchemy < 1.5.
"""

from __future__ import annotations

from typing import Any

import aiopg.sa

from ..bounded import wait_bounded
from ..driver import Driver, ProbeThroughPlainDriver
from ..dsn import HostDsn
from .aiopg import (
    UNBOUNDED,
    AiopgDriver,
    close_if_mid_query,
    is_psycopg2_config_error,
    is_psycopg2_host_error,
)

#: aiopg.sa ships no type information: engines and connections are ``Any`` here.
Engine = Any
SAConnection = Any


class AiopgSaDriver(ProbeThroughPlainDriver, Driver[Engine, SAConnection]):
    name = "aiopg_sa"

    def __init__(self) -> None:
        self._plain = AiopgDriver()  # the probe connection is a plain aiopg one

    async def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> Engine:
        return await aiopg.sa.create_engine(dsn.to_conninfo(), **pool_kwargs)

    async def acquire(self, pool: Engine, timeout: float | None, **kwargs: Any) -> SAConnection:
        async def take() -> SAConnection:
            return await pool.acquire(**kwargs)

        async def give_back(connection: SAConnection) -> None:
            await self.release(pool, connection)

        return await wait_bounded(take(), timeout, give_back, cancel_late=False)

    async def release(self, pool: Engine, connection: SAConnection, **kwargs: Any) -> None:
        close_if_mid_query(connection.connection)
        # Rolls back the SAConnection's open transaction, then returns the raw
        # connection to the engine it came from (``pool``).
        await connection.close()

    async def close_pool(self, pool: Engine) -> None:
        pool.close()
        await pool.wait_closed()

    async def terminate_pool(self, pool: Engine) -> None:
        pool.terminate()
        await pool.wait_closed()

    async def terminate_connection(self, connection: SAConnection) -> None:
        if connection.connection is not None:
            await connection.connection.close()

    def free_size(self, pool: Engine) -> int:
        # max - in use, as for aiopg (Engine.freesize counts idle open connections only).
        return self.max_size(pool) - len(pool._pool._used)

    def max_size(self, pool: Engine) -> int:
        return int(pool.maxsize or UNBOUNDED)

    async def fetch_row(self, connection: SAConnection, query: str) -> tuple[Any, ...]:
        result = await connection.execute(query)
        row = await result.first()
        # aiopg.sa's RowProxy is a mapping: iterating it gives the column names.
        return () if row is None else tuple(row.as_tuple())

    # run() talks to the aiopg connection under the SAConnection, in
    # psycopg2's placeholders (%s, %(name)s), as plain SQL given to aiopg.sa does.
    async def run_statement(
        self, connection: SAConnection, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        return await self._plain.run_statement(connection.connection, query, args, fetch)

    async def notify(self, connection: SAConnection, channel: str, payload: str) -> None:
        await self._plain.notify(connection.connection, channel, payload)  # autocommit

    mogrify_needs_connection = True

    def mogrify(self, connection: SAConnection | None, query: str, args: Any) -> str | None:
        assert connection is not None
        return self._plain.mogrify(connection.connection, query, args)

    def abort(self, connection: SAConnection) -> None:
        if connection.connection is not None:
            self._plain.abort(connection.connection)

    def is_config_error(self, error: BaseException) -> bool:
        return is_psycopg2_config_error(error)

    def is_closed(self, connection: SAConnection) -> bool:
        return bool(connection.closed)

    def is_host_error(self, error: BaseException) -> bool:
        return is_psycopg2_host_error(error)


__all__ = ["AiopgSaDriver"]
