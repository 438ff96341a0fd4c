"""psycopg 3 for the blocking face: one ``psycopg_pool.ConnectionPool`` per host."""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from ..driver import Driver
from ..drivers.psycopg import PsycopgDriver, with_connection_defaults
from ..dsn import HostDsn
from .driver import SyncDriver


class SyncPsycopgDriver(SyncDriver[psycopg_pool.ConnectionPool, psycopg.Connection[Any]]):
    name = "psycopg"

    def __init__(self) -> None:
        # Cut at the socket (abort): closed for the manager, though psycopg only
        # finds out at the connection's next use (as the async driver's).
        self._cut: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def probe_driver(self) -> Driver[Any, Any]:
        return PsycopgDriver()

    def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> psycopg_pool.ConnectionPool:
        pool_kwargs.setdefault("open", False)
        pool: psycopg_pool.ConnectionPool = psycopg_pool.ConnectionPool(
            with_connection_defaults(dsn).to_conninfo(), **pool_kwargs
        )
        try:
            pool.open(wait=True)
        except BaseException:
            pool.close()
            raise
        return pool

    def acquire(self, pool: psycopg_pool.ConnectionPool, timeout: float) -> psycopg.Connection[Any]:
        try:
            return pool.getconn(timeout=timeout)
        except psycopg_pool.PoolTimeout as error:
            raise TimeoutError(str(error)) from error

    def release(
        self, pool: psycopg_pool.ConnectionPool, connection: psycopg.Connection[Any]
    ) -> None:
        pool.putconn(connection)

    def close_pool(self, pool: psycopg_pool.ConnectionPool) -> None:
        pool.close(timeout=1.0)

    def free_size(self, pool: psycopg_pool.ConnectionPool) -> int:
        return int(pool.max_size - pool._nconns + len(pool._pool))

    def max_size(self, pool: psycopg_pool.ConnectionPool) -> int:
        return int(pool.max_size)

    def abort(self, connection: psycopg.Connection[Any]) -> None:
        self._cut.add(connection)
        super().abort(connection)

    def is_closed(self, connection: psycopg.Connection[Any]) -> bool:
        return bool(connection.closed or connection.broken) or (
            bool(self._cut) and connection in self._cut
        )

    def socket_of(self, connection: psycopg.Connection[Any]) -> int | None:
        return None if connection.closed else int(connection.pgconn.socket)

    def fetch_row(self, connection: psycopg.Connection[Any], query: str) -> tuple[Any, ...]:
        idle = connection.info.transaction_status == TransactionStatus.IDLE
        row = connection.execute(query).fetchone()
        if idle and not connection.autocommit:
            connection.rollback()
        return tuple(row or ())

    def notify(self, connection: psycopg.Connection[Any], channel: str, payload: str) -> None:
        idle = connection.info.transaction_status == TransactionStatus.IDLE
        connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        if idle and not connection.autocommit:
            connection.commit()  # the statement opened a transaction: send it now

    def end_of_use(self, connection: psycopg.Connection[Any], error: BaseException | None) -> None:
        # pool.connection()'s contract: commit a clean block, roll back a failed one.
        # Idle (autocommit, or the caller committed): nothing to end and no round
        # trip; closed reads UNKNOWN. (pgconn's status, as psycopg_pool reads it:
        # .info makes an object on every exit.)
        status = connection.pgconn.transaction_status
        if status == TransactionStatus.IDLE or status == TransactionStatus.UNKNOWN:
            return
        if connection.broken:
            return
        if error is None and status == TransactionStatus.INTRANS:
            connection.commit()
        else:
            connection.rollback()

    def pending_commit(self, connection: psycopg.Connection[Any]) -> bool:
        return bool(connection.pgconn.transaction_status == TransactionStatus.INTRANS)

    def run_statement(
        self, connection: psycopg.Connection[Any], query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        cursor = connection.cursor(row_factory=dict_row)  # as connection.execute()'s: not closed
        cursor.execute(query, args)
        if not fetch or cursor.description is None:
            return []
        return cursor.fetchall()

    def statement_commits(self, connection: psycopg.Connection[Any]) -> bool:
        return bool(connection.autocommit)

    def begin(self, connection: psycopg.Connection[Any]) -> None:
        if connection.autocommit:
            connection.execute("BEGIN")
        # else psycopg begins one with the first statement

    def commit(self, connection: psycopg.Connection[Any]) -> None:
        if connection.autocommit:
            connection.execute("COMMIT")
        else:
            connection.commit()

    def rollback(self, connection: psycopg.Connection[Any]) -> None:
        if connection.autocommit:
            connection.execute("ROLLBACK")
        else:
            connection.rollback()

    mogrify_needs_connection = True

    def mogrify(self, connection: psycopg.Connection[Any] | None, query: str, args: Any) -> str:
        assert connection is not None
        return psycopg.ClientCursor(connection).mogrify(query, args)

    def is_host_error(self, error: BaseException) -> bool:
        return isinstance(
            error, (OSError, psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
        ) and not isinstance(error, psycopg_pool.PoolTimeout)


__all__ = ["SyncPsycopgDriver"]
