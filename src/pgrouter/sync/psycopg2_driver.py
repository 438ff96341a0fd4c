"""psycopg2 for the blocking face: one blocking pool per host, checks through aiopg.

psycopg2's own ``ThreadedConnectionPool`` is thread-safe but never waits: an
exhausted pool raises at once. :class:`BlockingPsycopg2Pool` adds the wait,
with a semaphore of the pool's size around it, so a caller waits for a
connection within its timeout as with every other pool. The monitor's checks
run through aiopg (psycopg2 in asynchronous mode) on the monitor's loop.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.pool

from ..driver import Driver
from ..drivers.aiopg import is_psycopg2_config_error, is_psycopg2_host_error
from ..dsn import HostDsn
from .driver import SyncDriver

#: Applied to pool connections unless the DSN sets them (as for psycopg 3): a
#: dead peer becomes an error instead of a connection hanging for minutes.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
}


class BlockingPsycopg2Pool:
    """``ThreadedConnectionPool`` that waits for a free connection instead of raising."""

    def __init__(self, conninfo: str, *, minconn: int = 1, maxconn: int = 10) -> None:
        self.maxconn = maxconn
        self._pool = psycopg2.pool.ThreadedConnectionPool(minconn, maxconn, conninfo)
        self._slots = threading.BoundedSemaphore(maxconn)
        self._lock = threading.Lock()
        self.in_use = 0

    def getconn(self, timeout: float) -> Any:
        if not self._slots.acquire(timeout=max(timeout, 0)):
            raise TimeoutError(f"no free connection within {timeout:g} s")
        try:
            connection = self._pool.getconn()
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self.in_use += 1
        return connection

    def putconn(self, connection: Any) -> None:
        try:
            # A broken or mid-transaction connection is closed, not kept.
            close = bool(connection.closed) or (
                connection.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE
            )
            if close and not connection.closed:
                connection.close()
            self._pool.putconn(connection, close=close)
        finally:
            with self._lock:
                self.in_use -= 1
            self._slots.release()

    def closeall(self) -> None:
        self._pool.closeall()


class SyncPsycopg2Driver(SyncDriver[BlockingPsycopg2Pool, Any]):
    name = "psycopg2"

    def probe_driver(self) -> Driver[Any, Any]:
        from ..drivers.aiopg import AiopgDriver

        return AiopgDriver()

    def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> BlockingPsycopg2Pool:
        present = {key for key, _ in dsn.options}
        missing = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in present}
        conninfo = (dsn.with_options(**missing) if missing else dsn).to_conninfo()
        return BlockingPsycopg2Pool(conninfo, **pool_kwargs)

    def acquire(self, pool: BlockingPsycopg2Pool, timeout: float) -> Any:
        return pool.getconn(timeout)

    def release(self, pool: BlockingPsycopg2Pool, connection: Any) -> None:
        pool.putconn(connection)

    def close_pool(self, pool: BlockingPsycopg2Pool) -> None:
        pool.closeall()

    def free_size(self, pool: BlockingPsycopg2Pool) -> int:
        return pool.maxconn - pool.in_use

    def max_size(self, pool: BlockingPsycopg2Pool) -> int:
        return pool.maxconn

    def is_closed(self, connection: Any) -> bool:
        return bool(connection.closed)

    def socket_of(self, connection: Any) -> int | None:
        return None if connection.closed else int(connection.fileno())

    def fetch_row(self, connection: Any, query: str) -> tuple[Any, ...]:
        idle = connection.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with connection.cursor() as cursor:
            cursor.execute(query)
            row = cursor.fetchone()
        if idle and not connection.autocommit:
            connection.rollback()
        return tuple(row or ())

    def end_of_use(self, connection: Any, error: BaseException | None) -> None:
        # As psycopg2's own `with connection:`: commit a clean block, roll back a failed one.
        if connection.closed:
            return
        status = connection.get_transaction_status()
        if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            return
        if error is None and status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            connection.commit()
        elif status != psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:
            connection.rollback()

    def is_host_error(self, error: BaseException) -> bool:
        return is_psycopg2_host_error(error)

    def is_config_error(self, error: BaseException) -> bool:
        return is_psycopg2_config_error(error)


__all__ = ["BlockingPsycopg2Pool", "SyncPsycopg2Driver"]
