"""psycopg2 for the blocking face: one blocking pool per host, checks through aiopg.

psycopg2's own ``ThreadedConnectionPool`` is thread-safe but never waits (an
exhausted pool raises at once), and it connects while holding its lock: one
connect to a frozen server stalls every caller of that pool, and the release
of a connection cut meanwhile, until the server thaws. :class:`BlockingPsycopg2Pool`
is the pool this face needs instead: a caller waits for a connection within its
timeout, new connections are opened in the background (as psycopg_pool's
workers do), so a waiter can leave when its host stops serving, and no lock is
held across a round trip. The monitor's checks run through aiopg (psycopg2 in
asynchronous mode) on the monitor's loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.pool

from ..driver import Driver
from ..drivers.aiopg import is_psycopg2_config_error, is_psycopg2_host_error
from ..drivers.statements import psycopg2_mogrify, rows_as_dicts
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


class PoolClosed(psycopg2.pool.PoolError):  # type: ignore[misc]
    """The pool was closed (its host cut or its pool rebuilt): route again."""


class BlockingPsycopg2Pool:
    """A psycopg2 pool that waits for a free connection and connects in the background.

    ``opened`` counts connections open or being opened, never more than
    ``maxconn``; ``in_use`` those handed out. A caller that finds no idle
    connection starts one connect (while there is room) and waits on the
    condition for whichever connection comes first; a connect that fails wakes
    the waiters with its error.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        minconn: int = 1,
        maxconn: int = 10,
        autocommit: bool = False,
        configure: Callable[[Any], None] | None = None,
    ) -> None:
        if not 0 <= minconn <= maxconn or maxconn < 1:
            raise ValueError(
                f"need 0 <= minconn <= maxconn and maxconn >= 1, got {minconn}, {maxconn}"
            )
        if not isinstance(autocommit, bool):
            raise TypeError(f"autocommit must be True or False, got {type(autocommit).__name__}")
        if configure is not None and not callable(configure):
            raise TypeError(f"configure must be callable, got {type(configure).__name__}")
        self.maxconn = maxconn
        self._conninfo = conninfo
        # Set on every new connection, as psycopg_pool's kwargs= and configure= do:
        # autocommit is no libpq option a DSN could carry.
        self._autocommit = autocommit
        self._configure = configure
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[Any] = []
        self._opened = 0
        self._failures = 0
        self._last_error: BaseException | None = None
        self._closed = False
        self.in_use = 0
        try:
            for _ in range(minconn):
                self._idle.append(self._connect())
                self._opened += 1
        except BaseException:
            self.closeall()
            raise

    def getconn(self, timeout: float) -> Any:
        deadline = time.monotonic() + max(timeout, 0)
        with self._cond:
            failures = self._failures
            while True:
                if self._closed:
                    raise PoolClosed("connection pool is closed")
                if self._idle:
                    self.in_use += 1
                    return self._idle.pop()
                if self._failures != failures and self._last_error is not None:
                    raise self._last_error
                if self._opened < self.maxconn:
                    self._opened += 1
                    threading.Thread(
                        target=self._open, name="pgrouter-connect", daemon=True
                    ).start()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no free connection within {timeout:g} s")
                self._cond.wait(remaining)

    def _connect(self) -> Any:
        """A new connection, set up as asked (closed again if the set-up fails)."""
        connection = psycopg2.connect(self._conninfo)
        try:
            if self._autocommit:
                connection.autocommit = True
            if self._configure is not None:
                self._configure(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _open(self) -> None:
        try:
            connection = self._connect()
        except BaseException as error:
            with self._cond:
                self._opened -= 1
                self._failures += 1
                self._last_error = error
                self._cond.notify_all()
            return
        with self._cond:
            keep = not self._closed
            if keep:
                self._idle.append(connection)
                self._cond.notify()
            else:
                self._opened -= 1
        if not keep:
            connection.close()  # finished after the pool closed (a thawed server)

    def putconn(self, connection: Any) -> None:
        # A broken or mid-transaction connection is closed, not kept.
        keep = bool(
            not connection.closed
            and connection.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        )
        with self._cond:
            self.in_use -= 1
            keep = keep and not self._closed
            if keep:
                self._idle.append(connection)
            else:
                self._opened -= 1
            self._cond.notify()
        if not keep and not connection.closed:
            connection.close()

    def closeall(self) -> None:
        """Close the idle connections now; borrowed ones are closed as they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            self._cond.notify_all()
        for connection in idle:
            with contextlib.suppress(psycopg2.Error):
                connection.close()


class SyncPsycopg2Driver(SyncDriver[BlockingPsycopg2Pool, Any]):
    name = "psycopg2"

    def __init__(self) -> None:
        # Cut at the socket (abort): closed for the manager, though psycopg2
        # only finds out at the connection's next use.
        self._cut: weakref.WeakSet[Any] = weakref.WeakSet()

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

    def abort(self, connection: Any) -> None:
        self._cut.add(connection)
        super().abort(connection)

    def is_closed(self, connection: Any) -> bool:
        return bool(connection.closed) or (bool(self._cut) and connection in self._cut)

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

    def notify(self, connection: Any, channel: str, payload: str) -> None:
        idle = connection.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        if idle and not connection.autocommit:
            connection.commit()  # the statement opened a transaction: send it now

    def pending_commit(self, connection: Any) -> bool:
        return bool(
            not connection.closed
            and connection.get_transaction_status()
            == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        )

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

    def run_statement(
        self, connection: Any, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            if not fetch or cursor.description is None:
                return []
            return rows_as_dicts(cursor.description, cursor.fetchall())

    def statement_commits(self, connection: Any) -> bool:
        return bool(connection.autocommit)

    def begin(self, connection: Any) -> None:
        if connection.autocommit:
            self.run_statement(connection, "BEGIN", None, False)
        # else psycopg2 begins one with the first statement

    # psycopg2's commit() and rollback() do nothing in autocommit mode, even
    # after an explicit BEGIN: send the statement then.
    def commit(self, connection: Any) -> None:
        if connection.autocommit:
            self.run_statement(connection, "COMMIT", None, False)
        else:
            connection.commit()

    def rollback(self, connection: Any) -> None:
        if connection.autocommit:
            self.run_statement(connection, "ROLLBACK", None, False)
        else:
            connection.rollback()

    mogrify_needs_connection = True

    def mogrify(self, connection: Any, query: str, args: Any) -> str:
        return psycopg2_mogrify(connection, query, args)

    def is_host_error(self, error: BaseException) -> bool:
        return is_psycopg2_host_error(error)

    def is_config_error(self, error: BaseException) -> bool:
        return is_psycopg2_config_error(error)


__all__ = ["BlockingPsycopg2Pool", "PoolClosed", "SyncPsycopg2Driver"]
