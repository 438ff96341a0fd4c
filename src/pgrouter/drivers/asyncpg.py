"""asyncpg behind the driver seam: one ``asyncpg.Pool`` per host."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable
from typing import Any

import asyncpg
import asyncpg.exceptions as pg_errors

from ..driver import PROBE_QUERY, Driver, ProbeResult, probe_result
from ..dsn import HostDsn

_HOST_ERRORS = (
    OSError,
    pg_errors.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    pg_errors.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    pg_errors.ReadOnlySQLTransactionError,  # a write reached a host that is no longer primary
    pg_errors.InternalClientError,  # protocol state broken by a connection lost mid-operation
)


#: Connect timeout of pool connections unless the caller sets ``timeout``.
CONNECT_TIMEOUT = 5.0
#: Bound on the reset a connection gets on release; past it the manager aborts it.
RELEASE_TIMEOUT = 10.0


class AsyncpgDriver(Driver[asyncpg.Pool, asyncpg.Connection]):
    name = "asyncpg"
    # asyncpg puts the holder back in its queue when an acquire is cancelled.
    acquire_cancels_cleanly = True
    # The reset on release is a round trip to the server, which may hang.
    release_timeout = RELEASE_TIMEOUT

    async def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> asyncpg.Pool:
        # asyncpg waits 60 s for a connect by default; a host that hangs must
        # fail sooner so the caller's acquire can go elsewhere.
        pool_kwargs.setdefault("timeout", CONNECT_TIMEOUT)
        return await asyncpg.create_pool(dsn.to_url(), **pool_kwargs)

    def acquire(self, pool: asyncpg.Pool, timeout: float | None, **kwargs: Any) -> Awaitable[Any]:
        # The manager passes no timeout on Python 3.11+: it bounds waits with
        # its alarm clock (alarms.py).
        return pool.acquire(timeout=timeout, **kwargs)  # type: ignore[no-any-return]

    def release(self, pool: asyncpg.Pool, connection: Any, **kwargs: Any) -> Awaitable[None]:
        # No timeout for asyncpg's reset (that would be a loop timer per
        # release): the manager bounds it at release_timeout, with abort().
        if sys.version_info < (3, 11):
            # There the manager passes asyncpg its acquire timeouts (100 ms
            # slices on a full pool), and asyncpg would reuse one for the reset.
            kwargs.setdefault("timeout", RELEASE_TIMEOUT)
        return pool.release(connection, **kwargs)  # type: ignore[no-any-return]

    def abort(self, connection: Any) -> None:
        with contextlib.suppress(pg_errors.InterfaceError):  # already back in the pool
            connection.terminate()

    def release_needs_shield(self, pool: asyncpg.Pool, connection: Any) -> bool:
        return False  # Pool.release() shields itself

    async def close_pool(self, pool: asyncpg.Pool) -> None:
        await pool.close()

    async def terminate_pool(self, pool: asyncpg.Pool) -> None:
        pool.terminate()

    async def terminate_connection(self, connection: Any) -> None:
        if not self.is_closed(connection):
            connection.terminate()

    def free_size(self, pool: asyncpg.Pool) -> int:
        # Holders not in use; asyncpg has no public counter for it. (Asked
        # several times per acquire: no int() around an int.)
        return pool._queue.qsize()  # type: ignore[no-any-return]

    def max_size(self, pool: asyncpg.Pool) -> int:
        return int(pool.get_max_size())

    def is_closed(self, connection: Any) -> bool:
        # Asked on every release. A pool proxy's method calls go through a
        # generic wrapper, so ask the connection behind it (None once released).
        plain = getattr(connection, "_con", connection)
        return plain is None or bool(plain.is_closed())

    async def connect_probe(self, dsn: HostDsn, timeout: float) -> asyncpg.Connection:
        return await asyncpg.connect(dsn.to_url(), timeout=timeout)

    async def probe(self, connection: asyncpg.Connection) -> ProbeResult:
        return probe_result(await connection.fetchrow(PROBE_QUERY))

    async def close_probe(self, connection: asyncpg.Connection) -> None:
        connection.terminate()  # never wait on a server that may be gone

    def is_host_error(self, error: BaseException) -> bool:
        if isinstance(error, _HOST_ERRORS):
            return True
        # asyncpg reports a connection closed under a query as InterfaceError.
        return isinstance(error, pg_errors.InterfaceError) and "closed" in str(error)
