"""asyncpg behind the driver seam: one ``asyncpg.Pool`` per host.

Besides plain delegation, it closes two windows in which asyncpg fails a
connection's next operation with an ``InternalClientError`` of its own
(MagicStack/asyncpg#784, #1069) instead of treating it as the closed connection
it is, as it does a few loop iterations later:

- a server that ends an idle session (a fast shutdown, a backend that found its
  postmaster dead in a failover, ``pg_terminate_backend()``) sends a FATAL
  error, then the end of the stream. asyncpg takes the error, unasked for, as a
  protocol fault, and until it has read the end of stream (one or two loop
  iterations) ``is_closed()`` is False while any query or reset fails with
  "cannot switch to state N; another operation (2) is in progress". An acquire
  passes such a connection by (:func:`_hung_up`), as asyncpg's pool does once it
  knows it is closed: the holder reconnects;
- ``Pool.release()`` hands the reset to a shielded task. If the connection ends
  before that task starts (its end of stream read, or the manager's
  :meth:`~AsyncpgDriver.abort`), asyncpg has already taken the holder back and the
  task fails with "release() called on a free connection holder".

A release that fails with an ``InternalClientError`` after asyncpg took the
connection back, closed, ends quietly: the caller's work was done, and asyncpg
releases a connection it already knows closed without a word.

Both are hooks the manager calls (:meth:`~pgrouter.driver.Driver.hung_up` on
every connection handed over, :meth:`~pgrouter.driver.Driver.release_failed_benignly`
only when a release fails), so a successful acquire or release pays no extra
frame of its own.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
from collections.abc import Awaitable
from typing import Any

import asyncpg
import asyncpg.exceptions as pg_errors

from ..driver import PROBE_QUERY, Driver, ListenConnection, ProbeResult, probe_result
from ..dsn import HostDsn
from .asyncpg_listen import AsyncpgListenConnection
from .statements import positional_args

_HOST_ERRORS = (
    OSError,
    pg_errors.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    pg_errors.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    pg_errors.ReadOnlySQLTransactionError,  # a write reached a host that is no longer primary
    pg_errors.InternalClientError,  # protocol state broken by a connection lost mid-operation
)


logger = logging.getLogger("pgrouter")

#: Connect timeout of pool connections unless the caller sets ``timeout``.
CONNECT_TIMEOUT = 5.0
#: Bound on the reset a connection gets on release; past it the manager aborts it.
RELEASE_TIMEOUT = 10.0


def hung_up(connection: Any) -> bool:
    """True when the server has ended the connection but asyncpg does not know yet.

    Its transport has read the end of stream (closing, ``connection_lost()``
    not called yet), or the end of stream has reached the socket, read or not.
    Asked on every acquire: a few attribute reads and one ``poll()``.
    """
    transport = connection._con._transport  # the pool's proxy; a fresh acquire has one
    if transport is None:
        return False  # asyncpg knows it is closed: its pool does the right thing
    if transport.is_closing():
        return True
    # Selector transports keep their socket as _sock; get_extra_info() is the
    # public, slower way for any other.
    sock = getattr(transport, "_sock", None) or transport.get_extra_info("socket")
    if sock is None or not _HAS_POLL:
        return False  # (Windows: the transport's closing state is all we see)
    # One poll() with no wait, inline: paid on every handover of an idle connection.
    poller = select.poll()  # (a kept poller would need a lock: pools may live in threads)
    fd = sock.fileno()
    poller.register(fd, _WATCHED)
    ready = poller.poll(0)
    return bool(ready) and _ended(fd, ready[0][1])


#: Linux's poll() event for the peer's end of stream, seen even behind unread data.
_PEER_HUNG_UP = getattr(select, "POLLRDHUP", 0)
#: What the probe asks poll() for; elsewhere readable (POLLIN) only says that
#: something waits, and a peek tells whether it is the end of stream.
_WATCHED = _PEER_HUNG_UP or getattr(select, "POLLIN", 0)
_ENDED = _PEER_HUNG_UP | getattr(select, "POLLHUP", 0) | getattr(select, "POLLERR", 0)
_HAS_POLL = hasattr(select, "poll")


def _ended(fd: int, events: int) -> bool:
    """Whether the ``events`` poll() saw on socket ``fd`` are the server's end of stream."""
    if events & _ENDED:
        return True
    # A message ahead of the end of stream (a FATAL not read yet) is fine:
    # asyncpg reads it during the next query and reports the connection lost.
    peek = socket.socket(fileno=fd)  # over the driver's descriptor, detached below
    try:
        peek.setblocking(False)
        return peek.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset by the peer
    finally:
        peek.detach()


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

    async def fetch_row(self, connection: Any, query: str) -> tuple[Any, ...]:
        return tuple(await connection.fetchrow(query))

    async def run_statement(
        self, connection: Any, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        # asyncpg's placeholders are $1, $2...: positional arguments only.
        params = positional_args(args, self.name)
        if not fetch:
            await connection.execute(query, *params)
            return []
        return [dict(record) for record in await connection.fetch(query, *params)]

    # The module function itself: no method frame on every acquire.
    hung_up = staticmethod(hung_up)  # type: ignore[assignment]

    def release_failed_benignly(self, connection: Any, error: BaseException) -> bool:
        # The two windows of the module docstring: asyncpg took the connection
        # back, closed, and then failed its own reset of it.
        return isinstance(error, pg_errors.InternalClientError) and (
            getattr(connection, "_con", None) is None
        )

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

    async def connect_listener(self, dsn: HostDsn, timeout: float) -> ListenConnection:
        return await AsyncpgListenConnection.connect(dsn, timeout)

    async def notify(self, connection: Any, channel: str, payload: str) -> None:
        await connection.execute("SELECT pg_notify($1, $2)", channel, payload)

    def is_host_error(self, error: BaseException) -> bool:
        if isinstance(error, _HOST_ERRORS):
            return True
        # asyncpg reports a connection closed under a query as InterfaceError.
        return isinstance(error, pg_errors.InterfaceError) and "closed" in str(error)
