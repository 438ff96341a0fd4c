"""The monitor of one cluster on a thread of its own, with no pools: for callers that own
their connections.

A :class:`ClusterWatch` knows what a cluster is (which host is the primary,
which replicas are healthy and how far behind) and nothing else: it opens no
pool and hands out no connection. It is for code whose connections belong to
someone else, such as Django's database router (Django opens and keeps its
own connection per alias, :mod:`pgrouter.django`), and it depends on no
framework.

It runs one :class:`~pgrouter.monitor.TopologyMonitor` on a daemon thread
(:class:`~pgrouter.sync.monitor_thread.MonitorThread`), started on first use.
Its admission hook is a no-op: with no pool to open, a host that passed its
check is usable at once.

``busy`` (whether the primary's heartbeat runs) is "work was routed to this
host within the last ``refresh_delay``": the caller reports each routing with
:meth:`ClusterWatch.note_work`. A busy primary is probed every
``primary_heartbeat`` seconds (0.1 by default), so a primary killed or frozen
under a stream of writes is replaced within a few heartbeats; an idle process
probes each host once per ``refresh_delay`` only. (Always ``False`` would
leave a frozen primary, which raises no error, unseen for up to
``refresh_delay`` under load.) A connection error seen by the caller is fed
back with :meth:`ClusterWatch.request_check`.

Fork safety is the blocking managers': the fork counter of
:mod:`pgrouter.sync.manager` tells a state made before the last ``fork()``
from this process's own; a child starts a fresh monitor on first use and
never touches the parent's thread or sockets (they stay referenced, so no
finalizer closes them).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .. import arguments
from ..driver import Driver
from ..dsn import HostDsn, split_dsn
from ..errors import PoolManagerClosedError
from ..monitor import TopologyMonitor
from ..settings import (
    DEFAULT_PRIMARY_HEARTBEAT,
    DEFAULT_REFRESH_DELAY,
    DEFAULT_REFRESH_TIMEOUT,
    DEFAULT_STOPWATCH_WINDOW_SIZE,
)
from ..topology import TopologySnapshot
from . import manager as _forks_of
from .monitor_thread import MonitorThread

logger = logging.getLogger("pgrouter")

ProbeDriverFactory = Callable[[], Driver[Any, Any]]
#: Called on the monitor's thread with the old and the new snapshot, at every publish.
Listener = Callable[[TopologySnapshot, TopologySnapshot], None]


def installed_probe_driver() -> Driver[Any, Any]:
    """The async driver the checks use: psycopg 3's if it is installed, else aiopg's.

    The same libraries the blocking managers probe with (psycopg 3 async for
    psycopg 3, aiopg for psycopg2), so a process that has a PostgreSQL driver
    for its own connections can check hosts without another one.
    """
    try:
        from ..drivers.psycopg import PsycopgDriver
    except ImportError:
        pass
    else:
        return PsycopgDriver()
    try:
        from ..drivers.aiopg import AiopgDriver
    except ImportError:
        raise ImportError(
            "pgrouter's cluster checks need psycopg 3 (pip install 'pgrouter[psycopg]') "
            "or aiopg (pip install 'pgrouter[psycopg2]')"
        ) from None
    return AiopgDriver()


class _ProcessWatch:
    """What a watch runs in one process: its monitor thread and the hosts' last work."""

    def __init__(self, watch: ClusterWatch) -> None:
        self.generation = _forks_of._forks
        self.pid = os.getpid()
        self.last_work = [-float("inf")] * len(watch.hosts)
        self.busy_window = watch.refresh_delay
        weak = weakref.ref(self)
        self.thread = MonitorThread(
            functools.partial(_make_monitor, watch._monitor_settings, _weak_busy(weak)),
            name=f"pgrouter-watch-{watch.name}",
        )


class ClusterWatch:
    """Watches one cluster's hosts from a thread of its own (see the module docstring)."""

    def __init__(
        self,
        dsn: str | Sequence[HostDsn],
        *,
        refresh_delay: float = DEFAULT_REFRESH_DELAY,
        refresh_timeout: float = DEFAULT_REFRESH_TIMEOUT,
        primary_heartbeat: float | None = DEFAULT_PRIMARY_HEARTBEAT,
        event_driven_checks: bool = True,
        stopwatch_window_size: int = DEFAULT_STOPWATCH_WINDOW_SIZE,
        probe_driver: ProbeDriverFactory = installed_probe_driver,
        name: str = "default",
    ) -> None:
        if isinstance(dsn, str):
            hosts = split_dsn(dsn)
        else:
            hosts = list(dsn)
            if not hosts or not all(isinstance(host, HostDsn) for host in hosts):
                raise TypeError("dsn must be a DSN str or a non-empty sequence of HostDsn")
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str (the cluster's name), got {name!r}")
        if not callable(probe_driver):
            raise TypeError("probe_driver must be a callable returning a pgrouter Driver")
        self.hosts: tuple[HostDsn, ...] = tuple(hosts)
        self.name = name
        self.refresh_delay = arguments.seconds("refresh_delay", refresh_delay)
        heartbeat = arguments.optional_seconds("primary_heartbeat", primary_heartbeat, zero=True)
        self._monitor_settings = _MonitorSettings(
            hosts=self.hosts,
            probe_driver=probe_driver,
            refresh_delay=self.refresh_delay,
            refresh_timeout=arguments.seconds("refresh_timeout", refresh_timeout),
            # 0 is off, as for the managers (pgrouter.settings).
            primary_heartbeat=heartbeat or None,
            event_driven_checks=arguments.flag("event_driven_checks", event_driven_checks),
            stopwatch_window_size=arguments.positive_int(
                "stopwatch_window_size", stopwatch_window_size
            ),
        )
        self._lock = threading.Lock()
        self._process: _ProcessWatch | None = None
        self._closed = False
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        hosts = ",".join(host.address for host in self.hosts)
        return f"<{type(self).__name__} {self.name} hosts={hosts}>"

    # -- this process's monitor ------------------------------------------------

    def _state(self) -> _ProcessWatch:
        """This process's monitor, started on first use (again, fresh, after a fork)."""
        state = self._process
        if state is not None and state.generation == _forks_of._forks:
            return state
        with self._lock:
            state = self._process
            if state is None or state.generation != _forks_of._forks:
                if self._closed:
                    raise PoolManagerClosedError(f"{self!r} is closed")
                if state is not None:
                    _forks_of._INHERITED.append(state)  # the parent's: never touched here
                state = _ProcessWatch(self)
                state.thread.start()
                monitor = state.thread.monitor
                assert monitor is not None
                for listener in self._listeners:
                    monitor.board.listen(listener)
                self._process = state  # last: a racing caller sees it only once it runs
        return state

    @property
    def started(self) -> bool:
        """True once this process's monitor runs."""
        state = self._process
        return state is not None and state.generation == _forks_of._forks

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def topology(self) -> TopologySnapshot:
        """The current snapshot (starts the monitor on first use); closed: an error,
        not a stale snapshot."""
        if self._closed:
            raise PoolManagerClosedError(f"{self!r} is closed")
        return self._state().thread.current

    def wait_for(
        self, predicate: Callable[[TopologySnapshot], bool], timeout: float | None
    ) -> TopologySnapshot:
        """The first snapshot, current or later, that satisfies ``predicate``.

        ``TimeoutError`` when none does within ``timeout`` (or once closed).
        Woken by each publish, never by polling.
        """
        if self._closed:
            raise PoolManagerClosedError(f"{self!r} is closed")
        arguments.optional_seconds("timeout", timeout, zero=True)
        return self._state().thread.wait_for(predicate, timeout)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` on the monitor's thread at every publish, before any
        waiter wakes (for what must happen in the same instant, such as cutting the
        connections of a superseded primary). Kept across forks; call before first use."""
        with self._lock:
            if self._process is not None:
                raise RuntimeError("listen() before the watch's first use")
            self._listeners.append(listener)

    def request_check(self, index: int) -> None:
        """A connection to host ``index`` just failed: check it now, not at the next tick."""
        state = self._process
        if state is None or state.generation != _forks_of._forks:
            return
        monitor = state.thread.monitor
        if monitor is not None:
            state.thread.soon(monitor.request_check, index)

    def note_work(self, index: int) -> None:
        """Work was just routed to host ``index``: it counts as busy for ``refresh_delay``.

        Called on every routing, so it is two stores and, only when the
        host's check sleeps as an idle primary, one wake-up of the monitor's
        loop (its heartbeat resumes at once).
        """
        state = self._process
        if state is None or state.generation != _forks_of._forks:
            return
        state.last_work[index] = time.monotonic()
        monitor = state.thread.monitor
        if monitor is not None and monitor.hosts[index].sleeping_idle:
            state.thread.soon(monitor.work_started, index)

    # -- life cycle -------------------------------------------------------------

    def close(self) -> None:
        """Stop the checks and the thread; idempotent. Never touches a parent's monitor."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            state = self._process
        if state is not None and state.generation == _forks_of._forks:
            state.thread.stop()

    def __enter__(self) -> ClusterWatch:
        self._state()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        state = getattr(self, "_process", None)
        if state is None or getattr(self, "_closed", True):
            return
        if state.generation != _forks_of._forks:
            return  # the parent's thread: not ours to stop, nor to warn about
        thread = state.thread
        monitor = thread.monitor
        if monitor is not None:
            thread.soon(monitor.abandon)
        loop = thread._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        warnings.warn(
            f"unclosed {self!r}: call close() or use 'with'", ResourceWarning, stacklevel=1
        )


class _MonitorSettings:
    """What the monitor thread needs to build its monitor, without a reference to the watch."""

    __slots__ = (
        "event_driven_checks",
        "hosts",
        "primary_heartbeat",
        "probe_driver",
        "refresh_delay",
        "refresh_timeout",
        "stopwatch_window_size",
    )

    def __init__(
        self,
        *,
        hosts: tuple[HostDsn, ...],
        probe_driver: ProbeDriverFactory,
        refresh_delay: float,
        refresh_timeout: float,
        primary_heartbeat: float | None,
        event_driven_checks: bool,
        stopwatch_window_size: int,
    ) -> None:
        self.hosts = hosts
        self.probe_driver = probe_driver
        self.refresh_delay = refresh_delay
        self.refresh_timeout = refresh_timeout
        self.primary_heartbeat = primary_heartbeat
        self.event_driven_checks = event_driven_checks
        self.stopwatch_window_size = stopwatch_window_size


async def _admit_nothing(index: int, restarted: bool) -> None:
    """No pool to open: a host that passed its check is usable at once."""


def _make_monitor(settings: _MonitorSettings, busy: Callable[[int], bool]) -> TopologyMonitor:
    """Built on the monitor's own thread and loop (its tasks belong there)."""
    return TopologyMonitor(
        settings.hosts,
        driver=settings.probe_driver(),
        admit=_admit_nothing,
        refresh_delay=settings.refresh_delay,
        refresh_timeout=settings.refresh_timeout,
        stopwatch_window_size=settings.stopwatch_window_size,
        event_driven_checks=settings.event_driven_checks,
        primary_heartbeat=settings.primary_heartbeat,
        busy=busy,
    )


def _weak_busy(state_ref: weakref.ref[_ProcessWatch]) -> Callable[[int], bool]:
    def busy(index: int) -> bool:
        state = state_ref()
        return state is not None and time.monotonic() - state.last_work[index] < state.busy_window

    return busy


__all__ = ["ClusterWatch", "installed_probe_driver"]
