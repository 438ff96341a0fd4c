"""Every exception pgrouter raises, under one base class.

Messages name the host and the cause and never carry a password: whatever
text reaches these classes has already been through :func:`pgrouter.dsn.redact`
or is built from :class:`pgrouter.dsn.HostDsn`, whose ``str`` is redacted.
"""

from __future__ import annotations

import asyncio


class PgRouterError(Exception):
    """Base class of every pgrouter error, so callers can catch ours alone."""


class DsnError(PgRouterError, ValueError):
    """A DSN could not be parsed; the message names the bad part, never the password.

    Subclasses ``ValueError`` because a malformed DSN is a bad argument.
    """


class PoolManagerClosedError(PgRouterError, RuntimeError):
    """The manager was closed or terminated; no new connection is handed out."""


class WrongEventLoopError(PgRouterError, RuntimeError):
    """An async manager was used from an event loop other than the one it started on.

    Its pools, checks and connections belong to that loop (asyncio transports
    cannot move): one manager per event loop, created inside it.
    """


class NoHostAvailableError(PgRouterError, asyncio.TimeoutError):
    """No suitable host gave a connection before the acquire timeout.

    Subclasses ``asyncio.TimeoutError`` (``TimeoutError`` on 3.11+) so code
    written for hasql, which raises a bare timeout, keeps working. The message
    lists every host and why it could not be used.
    """


class ClusterError(PgRouterError, RuntimeError):
    """The local test cluster (``pgrouter.testing``) failed to do what was asked."""


class TransactionClosedError(PgRouterError, RuntimeError):
    """A transaction of ``run(partial_txn=True)`` or ``transaction()`` is over.

    Committed or rolled back by its owner, or ended by pgrouter: open longer
    than the manager's ``txn_timeout``, or its host stopped serving its role
    (down, demoted, fenced or superseded). pgrouter ends it by cutting its
    connection, so the server rolls it back; the message says which and why.
    """


class NotCommittedError(PgRouterError, ConnectionError):
    """A block's transaction was not committed: its host went down before the block ended.

    At the end of ``with``/``async with pm.acquire() as conn`` the driver
    commits. When the host has been declared down (its check found no
    answer), fenced or superseded meanwhile, pgrouter does not send that
    COMMIT through a socket that may never answer: it cuts the connection,
    so the server rolls the transaction back, and raises this. Nothing of the
    block was committed; retry it once a primary serves.
    """

    @classmethod
    def on(cls, host: str) -> NotCommittedError:
        return cls(
            f"not committed: {host} left the rotation while this connection was borrowed "
            "(down, fenced or superseded); pgrouter cut the connection instead of sending "
            "COMMIT to it, so the server rolls the transaction back"
        )
