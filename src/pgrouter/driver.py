"""The driver seam: everything that differs between asyncpg, psycopg and the rest.

The core never imports a driver library. A driver opens a pool for one host,
takes and returns connections, runs the health probe on a dedicated check
connection, and tells closed connections and connection-level errors apart.
Adding a driver is one new module under ``pgrouter.drivers``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .dsn import HostDsn
from .sockets import cut_socket

PoolT = TypeVar("PoolT")
ConnT = TypeVar("ConnT")

#: One round trip tells role, WAL position, timeline and when the server started:
#: a changed start time means every pooled connection is dead; the timeline
#: settles which of two primaries is the newer (split brain); the system
#: identifier, start time and configured port together name the server, so one
#: server listed under two names (``localhost`` and ``127.0.0.1``, or its unix
#: socket) is seen as one server, and two replicas of one machine started in the
#: same microsecond are still two.
#: A replica's timeline is the one its WAL receiver streams, visible only to
#: roles with ``pg_read_all_stats`` (NULL otherwise: unknown, not an error).
PROBE_QUERY = (
    "SELECT pg_is_in_recovery(), "
    "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END)::text, "
    "CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) "
    "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
    "extract(epoch from pg_postmaster_start_time())::float8, "
    "(SELECT system_identifier FROM pg_control_system()), "
    "current_setting('port')::int"
)


@dataclass(frozen=True)
class ProbeResult:
    """What one health probe learned about a host."""

    in_recovery: bool
    wal_lsn: int | None
    timeline: int | None = None  # a replica's only when its role may see its WAL receiver
    server_started_at: float | None = None  # epoch seconds
    system_identifier: int | None = None  # the cluster's, shared by its replicas
    server_port: int | None = None  # the port the server listens on (its setting)


def parse_lsn(text: str | None) -> int | None:
    """``'16/B374D848'`` -> byte position; ``None`` stays ``None``."""
    if not text:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def probe_result(row: tuple[Any, ...] | Any) -> ProbeResult:
    """Build the result from the probe's row, as any driver returns it."""
    in_recovery, lsn, timeline, started, system_id = row[0], row[1], row[2], row[3], row[4]
    port = row[5] if len(row) > 5 else None
    return ProbeResult(
        in_recovery=bool(in_recovery),
        wal_lsn=parse_lsn(lsn),
        timeline=None if timeline is None else int(timeline),
        server_started_at=None if started is None else float(started),
        system_identifier=None if system_id is None else int(system_id),
        server_port=None if port is None else int(port),
    )


class ListenConnection(abc.ABC):
    """A dedicated autocommit connection for LISTEN, outside every pool.

    Its own connection, not a pooled one: a pool resets a connection it takes
    back (``UNLISTEN *`` included) and hands it to someone else.
    :mod:`pgrouter.interactions.listen` drives it: LISTEN on each channel, a
    NOTIFY to a private channel as its liveness check, and the notifications
    received. Channel names arrive checked and exact (case-sensitive); each
    implementation quotes them with its library's own identifier quoting.
    """

    @abc.abstractmethod
    async def listen(self, channel: str) -> None:
        """``LISTEN "channel"``; notifications on it are kept for :meth:`receive`."""

    @abc.abstractmethod
    async def unlisten_all(self) -> None:
        """``UNLISTEN *``: the server stops queueing notifications for this session."""

    @abc.abstractmethod
    async def notify(self, channel: str, payload: str) -> None:
        """``SELECT pg_notify(channel, payload)`` on this very connection."""

    @abc.abstractmethod
    async def receive(self, timeout: float) -> list[tuple[str, str, int]]:
        """``(channel, payload, pid)`` of the notifications received, in order.

        Waits up to ``timeout`` seconds for the first one; ``[]`` if none came.
        Raises the driver's connection error once the connection is lost (or
        was cut by :meth:`abort`). Cancelling it loses nothing.
        """

    @abc.abstractmethod
    def abort(self) -> None:
        """Cut the connection now, never waiting on the server; a waiting call fails."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close it (no round trip that could wait on a dead server)."""


class Driver(abc.ABC, Generic[PoolT, ConnT]):
    """What pgrouter needs from a database driver, for one host at a time."""

    #: Short name used in logs and test ids.
    name: str = "driver"

    #: True when a task cancelled anywhere inside :meth:`acquire` leaves the
    #: pool whole (the pool takes back what it was handing over). The manager
    #: then bounds waits on a full pool with its one shared timer
    #: (:mod:`pgrouter.alarms`) and passes ``timeout=None`` (Python 3.11+),
    #: instead of a driver timeout that costs a loop timer per acquire.
    acquire_cancels_cleanly: bool = False

    #: Seconds a release may wait on the server (a reset query, say) before the
    #: manager calls :meth:`abort` on the connection; ``None`` when a release
    #: never waits on the server.
    release_timeout: float | None = None

    def release_needs_shield(self, pool: PoolT, connection: ConnT) -> bool:
        """False when :meth:`release` cannot lose the connection if cancelled.

        Otherwise the manager runs the release with
        :func:`~pgrouter.eager.finish_despite_cancellation`: free when
        the release never waits, a Task when it does. A driver answers False
        when its release shields itself (asyncpg's does, and always waits on
        the server), so as not to pay for a second Task.
        """
        return True

    @abc.abstractmethod
    async def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> PoolT:
        """Open a pool to one host; ``pool_kwargs`` are the caller's, unchanged."""

    @abc.abstractmethod
    def acquire(self, pool: PoolT, timeout: float | None, **kwargs: Any) -> Awaitable[ConnT]:
        """Take a connection; must not leak it if cancelled or timed out.

        Any awaitable will do (an ``async def`` too): a driver whose pool needs
        no adapting returns the pool's own awaitable, one coroutine frame less
        on every acquire.
        """

    @abc.abstractmethod
    def release(self, pool: PoolT, connection: ConnT, **kwargs: Any) -> Awaitable[None]:
        """Give a connection back to the pool it came from (any awaitable, as :meth:`acquire`)."""

    def hung_up(self, connection: ConnT) -> bool:
        """True when a connection just handed over was already ended by its server,
        though the driver does not know yet (asyncpg's window; see its driver).

        The manager then cuts it and takes another. Called on every acquire:
        the default, for drivers with no such window, answers at once.
        """
        return False

    def release_failed_benignly(self, connection: ConnT, error: BaseException) -> bool:
        """True when a failed release only says the connection was closed already.

        The caller's work was done, and the pool has it back: the release ends
        quietly. Asked only when a release raises.
        """
        return False

    @abc.abstractmethod
    async def fetch_row(self, connection: ConnT, query: str) -> tuple[Any, ...]:
        """Run ``query`` (no parameters) on a borrowed connection; its first row.

        For pgrouter's own small queries on a caller's connection (a write
        token, a replica's replay position). Leaves the connection as it found
        it: no transaction left open that was not open before.
        """

    def end_of_use(self, connection: ConnT, error: BaseException | None) -> Awaitable[None] | None:
        """What the end of ``async with pm.acquire() as connection`` must do first, if anything.

        ``error`` ended the block, or ``None`` for a clean exit. Returns the
        awaitable to run before the release, or ``None`` when there is nothing
        to do (the default: autocommit drivers, and pools that reset on
        release), so those drivers pay one call and no coroutine. An
        explicit ``release()`` skips this: it cannot know whether the work
        it ends succeeded. An error the awaitable raises reaches the caller
        (the connection still goes back to its pool).
        """
        return None

    def pending_commit(self, connection: ConnT) -> bool:
        """True when the end of a clean block would send COMMIT (a transaction is open).

        Read from the connection's own state, without a round trip. Asked only
        when the connection's host left the rotation before the block ended:
        the manager then cuts the connection instead and raises
        :class:`~pgrouter.errors.NotCommittedError` (see :meth:`end_of_use`).
        """
        return False

    @abc.abstractmethod
    async def close_pool(self, pool: PoolT) -> None:
        """Close gracefully: connections in use close as they come back."""

    @abc.abstractmethod
    async def terminate_pool(self, pool: PoolT) -> None:
        """Close every connection now, in use or not."""

    @abc.abstractmethod
    async def terminate_connection(self, connection: ConnT) -> None:
        """Close a borrowed connection now, without returning it (``terminate()``)."""

    def abort(self, connection: ConnT) -> None:
        """Cut a borrowed connection now, without a round trip, even while a query waits on it.

        Ends a release stuck past :attr:`release_timeout`, the work of a
        superseded primary, and the release of a connection to a host that is
        down: the task waiting on it gets the driver's connection error at
        once, and the pool takes it back as broken. A no-op once the
        connection is back in its pool. The default cuts the socket that
        :meth:`socket_of` names (:func:`pgrouter.sockets.cut_socket`).
        """
        fd = self.socket_of(connection)
        if fd is not None:
            cut_socket(fd)

    def socket_of(self, connection: ConnT) -> int | None:
        """The file descriptor of the connection's socket, ``None`` if closed or unknown."""
        return None

    @abc.abstractmethod
    def free_size(self, pool: PoolT) -> int:
        """Connections that can be taken without waiting (max size minus in use)."""

    @abc.abstractmethod
    def max_size(self, pool: PoolT) -> int:
        """The pool's maximum size as the caller configured it."""

    @abc.abstractmethod
    def is_closed(self, connection: ConnT) -> bool:
        """True when the connection is unusable (broken or closed)."""

    @abc.abstractmethod
    async def connect_probe(self, dsn: HostDsn, timeout: float) -> Any:
        """Open the dedicated check connection (outside the caller's pool)."""

    @abc.abstractmethod
    async def probe(self, connection: Any) -> ProbeResult:
        """Run :data:`PROBE_QUERY` on the check connection."""

    @abc.abstractmethod
    async def close_probe(self, connection: Any) -> None:
        """Close the check connection without waiting on a dead server."""

    async def connect_listener(self, dsn: HostDsn, timeout: float) -> ListenConnection:
        """Open a :class:`ListenConnection` to one host, within ``timeout`` seconds.

        For ``pm.listen()``; a driver that cannot LISTEN keeps this default.
        """
        raise NotImplementedError(f"the {self.name} driver has no LISTEN support")

    async def notify(self, connection: ConnT, channel: str, payload: str) -> None:
        """``SELECT pg_notify(channel, payload)`` on a borrowed connection, sent now.

        Committed if the statement opened a transaction (a NOTIFY is delivered
        at commit). For ``pm.notify()``; the default: no NOTIFY support.
        """
        raise NotImplementedError(f"the {self.name} driver has no NOTIFY support")

    def is_config_error(self, error: BaseException) -> bool:
        """True when opening a pool failed on the caller's ``pool_factory_kwargs``.

        Reported by ``ready()`` and the start as a ``TypeError``, not as a host
        that is down: waiting would never fix it.
        """
        return isinstance(error, TypeError)

    def is_host_error(self, error: BaseException) -> bool:
        """True when ``error`` says the host, not the query, changed or broke.

        A connection-level failure, a server shutting down, or a write refused
        because the host is read-only (it was demoted). The manager runs that
        host's check at once when it sees one, instead of at the next tick.
        """
        return isinstance(error, (OSError, ConnectionError, EOFError))

    # -- run(), transactions and dry runs (pgrouter.interactions) ----------------

    #: True when :meth:`mogrify` needs a connection: a dry run then borrows one
    #: (nothing is sent on it).
    mogrify_needs_connection: bool = False

    async def run_statement(
        self, connection: ConnT, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        """Run one statement with the driver's own placeholders on a borrowed connection.

        Its rows as dicts (column name -> value) when ``fetch``, else ``[]``.
        Inside whatever transaction the connection is in: ``pm.run()`` adds
        :meth:`begin` / :meth:`commit` around it where needed.
        """
        raise NotImplementedError(f"the {self.name} driver has no run() support")

    def statement_commits(self, connection: ConnT) -> bool:
        """True when a statement outside :meth:`begin` commits by itself (autocommit)."""
        return True

    async def begin(self, connection: ConnT) -> None:
        """Open a transaction (default: a ``BEGIN`` statement)."""
        await self.run_statement(connection, "BEGIN", None, False)

    async def commit(self, connection: ConnT) -> None:
        await self.run_statement(connection, "COMMIT", None, False)

    async def rollback(self, connection: ConnT) -> None:
        await self.run_statement(connection, "ROLLBACK", None, False)

    def mogrify(self, connection: ConnT | None, query: str, args: Any) -> str | None:
        """The query with ``args`` rendered as the driver would, or ``None``: the driver
        has no mogrify, and pgrouter renders its ``$n`` placeholders itself
        (:mod:`pgrouter.interactions.literals`). Sends nothing."""
        return None


class ProbeThroughPlainDriver:
    """For drivers layered on another one: the health check runs on the plain driver.

    aiopg.sa engines wrap aiopg connections and SQLAlchemy's engine wraps
    asyncpg; the probe needs no SQL layer, so it uses the plain driver's own
    dedicated connection. Put this class first among the bases, and set
    ``self._plain`` in ``__init__``.
    """

    _plain: Driver[Any, Any]

    async def connect_probe(self, dsn: HostDsn, timeout: float) -> Any:
        return await self._plain.connect_probe(dsn, timeout)

    async def probe(self, connection: Any) -> ProbeResult:
        return await self._plain.probe(connection)

    async def close_probe(self, connection: Any) -> None:
        await self._plain.close_probe(connection)

    async def connect_listener(self, dsn: HostDsn, timeout: float) -> ListenConnection:
        # LISTEN needs no SQL layer either: the plain library's raw connection.
        return await self._plain.connect_listener(dsn, timeout)
