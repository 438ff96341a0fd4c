"""Django's connections and the monitor, kept in step: errors reported, dead connections dropped.

Django keeps one connection per alias and thread and reuses it until
``close_if_unusable_or_obsolete()`` runs at a request's edges. Hooks,
installed once when the sets are first built (:func:`install`):

- every new connection of a set's alias gets an execute wrapper that reports
  a connection error to the set's monitor (:meth:`ClusterWatch.request_check`):
  that host is checked at once, not at its next tick;
- each connection remembers the server it was opened on (the host's start
  time, from the snapshot). When the router is about to send a query to an
  alias whose server restarted since (a crashed primary back as a replica, a
  rewind), :func:`drop_if_stale` closes that thread's connection outside an
  atomic block, so Django opens a fresh one instead of failing on the dead one;
- every open connection of a set is known (weakly) per host: the instant the
  monitor sees a host superseded or fenced (a replica was promoted while it
  was frozen or cut off), every thread's connection to it is cut at its
  socket (:func:`pgrouter.sockets.cut_socket`), as the pools of the other
  faces are. A query blocked on the frozen old primary fails at once with
  Django's connection error instead of waiting for it to thaw, and nothing
  it might acknowledge after its thaw reaches anyone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..sockets import cut_socket
from ..topology import TopologySnapshot, newly_cut

if TYPE_CHECKING:
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
            found = sets()
            member = found.members.get(connection.alias)
            if member is None or not found.settings.enabled:
                return  # routing off (tests): no monitor is started for it
            database_set, index = member
            if not any(isinstance(w, _ErrorReporter) for w in connection.execute_wrappers):
                connection.execute_wrappers.append(_ErrorReporter(database_set, index))
            state = database_set.watch.topology.hosts[index]
            setattr(connection, _STARTED_AT, state.server_started_at)
            database_set.open_connections.add(index, connection)

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
    if connection.connection is None or connection.in_atomic_block:
        return
    # None: opened before the hooks were installed, so of unknown age: dropped too.
    if getattr(connection, _STARTED_AT, None) == snapshot.hosts[index].server_started_at:
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


class OpenConnections:
    """Django's connections of one set, per host index, held weakly (any thread's)."""

    def __init__(self, hosts: int) -> None:
        self._lock = threading.Lock()
        self._by_host: list[weakref.WeakSet[Any]] = [weakref.WeakSet() for _ in range(hosts)]

    def add(self, index: int, connection: Any) -> None:
        with self._lock:
            self._by_host[index].add(connection)

    def of(self, index: int) -> list[Any]:
        with self._lock:
            return list(self._by_host[index])


def follow(database_set: DatabaseSet) -> None:
    """Cut the connections of a host the instant the set's monitor sees it superseded or
    fenced (see the module docstring). Call before the set's first use."""
    weak = weakref.ref(database_set)

    def on_publish(old: TopologySnapshot, new: TopologySnapshot) -> None:
        found = weak()
        if found is None:
            return
        for index in newly_cut(old, new):
            connections = found.open_connections.of(index)
            logger.warning(
                "pgrouter: %s: cutting Django's connections to it (%d): %s",
                new.hosts[index].address,
                len(connections),
                new.describe_host(new.hosts[index]),
            )
            for connection in connections:
                _cut(connection)

    database_set.watch.listen(on_publish)


def _cut(connection: Any) -> None:
    """Shut the socket of a Django connection down (on the monitor's thread: the thread
    that owns the connection may be blocked in a query on it)."""
    raw = connection.connection
    if raw is None:
        return
    try:
        fd = raw.fileno()
    except Exception:  # closed already
        return
    if isinstance(fd, int) and fd >= 0:
        cut_socket(fd)


__all__ = ["OpenConnections", "drop_if_stale", "follow", "install"]
