"""Django's connections and the monitor, kept in step: errors reported, dead connections dropped.

Django keeps one connection per alias and thread and reuses it until
``close_if_unusable_or_obsolete()`` runs at a request's edges. Two hooks,
installed once by the first router (:func:`install`):

- every new connection of a set's alias gets an execute wrapper that reports
  a connection error to the set's monitor (:meth:`ClusterWatch.request_check`):
  that host is checked at once, not at its next tick;
- each connection remembers the server it was opened on (the host's start
  time, from the snapshot). When the router is about to send a query to an
  alias whose server restarted since (a crashed primary back as a replica, a
  rewind), :func:`drop_if_stale` closes that thread's connection outside an
  atomic block, so Django opens a fresh one instead of failing on the dead one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from .sets import DatabaseSet, SetRegistry

logger = logging.getLogger("pgrouter")

_installed = False
_install_lock = threading.Lock()
_STARTED_AT = "_pgrouter_server_started_at"


def install(sets: Callable[[], SetRegistry]) -> None:
    """Connect the hooks to Django's ``connection_created`` signal, once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from django.db.backends.signals import connection_created

        def on_created(sender: Any, connection: Any, **kwargs: Any) -> None:
            member = sets().members.get(connection.alias)
            if member is None:
                return
            database_set, index = member
            if not any(isinstance(w, _ErrorReporter) for w in connection.execute_wrappers):
                connection.execute_wrappers.append(_ErrorReporter(database_set, index))
            state = database_set.watch.topology.hosts[index]
            setattr(connection, _STARTED_AT, state.server_started_at)

        connection_created.connect(on_created, weak=False, dispatch_uid="pgrouter.django")
        _installed = True


class _ErrorReporter:
    """An execute wrapper: a connection error on this alias asks for a check of its host."""

    __slots__ = ("_index", "_set")

    def __init__(self, database_set: DatabaseSet, index: int) -> None:
        self._set = database_set
        self._index = index

    def __call__(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        try:
            return execute(sql, params, many, context)
        except Exception as error:
            from django.db import InterfaceError, OperationalError

            if isinstance(error, (OperationalError, InterfaceError)):
                self._set.watch.request_check(self._index)
            raise


def drop_if_stale(database_set: DatabaseSet, index: int) -> None:
    """Close this thread's connection to host ``index`` if its server restarted since the
    connection was opened (see the module docstring). Costs nothing until a host restarts."""
    snapshot = database_set.watch.topology
    if not database_set.restarted(index, snapshot):
        return
    from django.db import connections

    connection = connections[database_set.aliases[index]]
    opened_on = getattr(connection, _STARTED_AT, None)
    if opened_on is None or connection.connection is None or connection.in_atomic_block:
        return
    if snapshot.hosts[index].server_started_at == opened_on:
        return
    logger.info(
        "pgrouter: %s restarted since Django's connection %r opened: reconnecting",
        database_set.watch.hosts[index].address,
        connection.alias,
    )
    with contextlib.suppress(Exception):  # it is dead: closing it may fail too
        connection.close()
    connection.connection = None
    setattr(connection, _STARTED_AT, None)


__all__ = ["drop_if_stale", "install"]
