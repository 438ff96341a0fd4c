"""The sync driver seam: what a blocking face needs from a driver, for one host.

The blocking twin of :class:`pgrouter.driver.Driver`, for the pools the
callers' threads (or greenlets) use. The health checks are not here: the
monitor runs them on its own event loop, with the async driver of the same
library (:attr:`SyncDriver.probe_driver`), so the decisions about the cluster
are the very ones the async face makes.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

from ..driver import Driver
from ..dsn import HostDsn
from ..sockets import cut_socket

PoolT = TypeVar("PoolT")
ConnT = TypeVar("ConnT")


class SyncDriver(abc.ABC, Generic[PoolT, ConnT]):
    """What pgrouter's blocking face needs from a database library."""

    name: str = "driver"

    @abc.abstractmethod
    def probe_driver(self) -> Driver[Any, Any]:
        """The async driver whose probe the monitor runs on its loop."""

    @abc.abstractmethod
    def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> PoolT:
        """Open a pool to one host (blocking); ``pool_kwargs`` are the caller's."""

    @abc.abstractmethod
    def acquire(self, pool: PoolT, timeout: float) -> ConnT:
        """A connection within ``timeout`` seconds; ``TimeoutError`` past it."""

    @abc.abstractmethod
    def release(self, pool: PoolT, connection: ConnT) -> None:
        """Give a connection back to its pool (the pool discards a broken one)."""

    @abc.abstractmethod
    def close_pool(self, pool: PoolT) -> None:
        """Close the pool: idle connections now, borrowed ones as they come back."""

    @abc.abstractmethod
    def free_size(self, pool: PoolT) -> int:
        """Connections that can be taken without waiting (max size minus in use)."""

    @abc.abstractmethod
    def max_size(self, pool: PoolT) -> int: ...

    @abc.abstractmethod
    def is_closed(self, connection: ConnT) -> bool: ...

    @abc.abstractmethod
    def socket_of(self, connection: ConnT) -> int | None:
        """The file descriptor of the connection's socket, ``None`` if closed."""

    @abc.abstractmethod
    def fetch_row(self, connection: ConnT, query: str) -> tuple[Any, ...]:
        """Run ``query`` on a borrowed connection, leaving no transaction it began."""

    @abc.abstractmethod
    def end_of_use(self, connection: ConnT, error: BaseException | None) -> None:
        """The end of ``with pm.acquire() as conn``: commit on a clean exit, else roll back."""

    def pending_commit(self, connection: ConnT) -> bool:
        """True when the end of a clean block would send COMMIT (as the async seam's)."""
        return False

    @abc.abstractmethod
    def is_host_error(self, error: BaseException) -> bool:
        """The host, not the query, broke or changed (checks it at once)."""

    def notify(self, connection: ConnT, channel: str, payload: str) -> None:
        """``SELECT pg_notify(channel, payload)`` on a borrowed connection, sent now.

        Committed if the statement opened a transaction. For ``pm.notify()``.
        """
        raise NotImplementedError(f"the {self.name} driver has no NOTIFY support")

    def is_config_error(self, error: BaseException) -> bool:
        return isinstance(error, TypeError)

    def abort(self, connection: ConnT) -> None:
        """Cut the connection at its socket now, even while another thread waits on it.

        The thread blocked in a query reads end of file at once and gets the
        library's connection error; the pool then discards the connection.
        """
        fd = self.socket_of(connection)
        if fd is not None:
            cut_socket(fd)

    # -- run(), transactions and dry runs (pgrouter.interactions) ----------------
    # The blocking twins of the async Driver's hooks of the same names.

    #: True when :meth:`mogrify` needs a connection (a dry run borrows one; nothing is sent).
    mogrify_needs_connection: bool = False

    def run_statement(
        self, connection: ConnT, query: str, args: Any, fetch: bool
    ) -> list[dict[str, Any]]:
        """One statement, the driver's placeholders; its rows as dicts when ``fetch``."""
        raise NotImplementedError(f"the {self.name} driver has no run() support")

    def statement_commits(self, connection: ConnT) -> bool:
        """True when a statement outside :meth:`begin` commits by itself (autocommit)."""
        return True

    def begin(self, connection: ConnT) -> None:
        self.run_statement(connection, "BEGIN", None, False)

    def commit(self, connection: ConnT) -> None:
        self.run_statement(connection, "COMMIT", None, False)

    def rollback(self, connection: ConnT) -> None:
        self.run_statement(connection, "ROLLBACK", None, False)

    def mogrify(self, connection: ConnT | None, query: str, args: Any) -> str | None:
        """The driver's own rendering of ``query`` with ``args``; ``None``: pgrouter's."""
        return None


__all__ = ["SyncDriver"]
