"""The topology monitor on a thread of its own, for faces whose callers block.

A :class:`MonitorThread` runs one :class:`~pgrouter.monitor.TopologyMonitor`
on an event loop in a daemon thread, started on first use and stopped by
:meth:`MonitorThread.stop`. Snapshots are immutable, so any thread reads the
current one as it is; a thread that waits for a better one waits on a
condition that every publish notifies (never by polling).

Under gevent's monkey patching the thread is a real OS thread all the same
(gevent keeps the original ``threading`` at hand): the monitor's loop blocks
in its own ``select()``, never the hub's, and waiters are woken through
gevent's own thread-safe wake-up (:mod:`pgrouter.sync.green`).

A process forked from one whose monitor runs has no monitor thread (threads
do not survive ``fork()``): the face notices the new process id on first use
and starts a fresh monitor and fresh pools; it never touches what it
inherited (see :mod:`pgrouter.sync.manager`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..monitor import TopologyMonitor
from ..topology import TopologySnapshot
from . import green

T = TypeVar("T")

#: How long stop() waits for the monitor's loop to end its checks.
STOP_TIMEOUT = 5.0


class MonitorThread:
    """Runs ``make_monitor()``'s monitor on a loop in a daemon thread of its own."""

    def __init__(self, make_monitor: Callable[[], TopologyMonitor], name: str) -> None:
        self._make_monitor = make_monitor
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: Any = None
        self.monitor: TopologyMonitor | None = None
        self._changed = green.Wakeups()
        # Set by the monitor's own (real) thread: a patched threading.Event would not
        # wake a greenlet waiting on the hub (LoopExit when nothing else runs there).
        self._started = green.Signal()
        self._lock = threading.Lock()

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        """Start the thread and its monitor, once; returns when the monitor runs."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = green.real_thread(self._run, name=self._name)
        self._started.wait()

    def _run(self) -> None:
        loop = green.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            # Inside the running loop: the monitor's tasks and events belong to it.
            self.monitor = self._make_monitor()
            self.monitor.board.listen(self._on_publish)
            self.monitor.start()

        try:
            loop.run_until_complete(boot())
        finally:
            self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        """Stop the checks and the thread (blocking, bounded by STOP_TIMEOUT)."""
        loop, monitor = self._loop, self.monitor
        if loop is None or monitor is None or loop.is_closed():
            return
        with _suppress_timeout():
            self.call(monitor.stop(), STOP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread = self._thread
        if thread is not None:
            thread.join(STOP_TIMEOUT)
        self._changed.notify_all()

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    # -- what the callers' threads use ---------------------------------------

    @property
    def current(self) -> TopologySnapshot:
        assert self.monitor is not None, "start() first"
        return self.monitor.board.current

    def wait_for(
        self, predicate: Callable[[TopologySnapshot], bool], timeout: float | None
    ) -> TopologySnapshot:
        """The first snapshot, current or later, that satisfies ``predicate``.

        ``TimeoutError`` when none does within ``timeout``. Woken by each
        publish; the predicate is evaluated in the waiting thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiter = self._changed.register()  # before the look: no publish slips past
            try:
                snapshot = self.current
                if predicate(snapshot):
                    return snapshot
                if not self.running:
                    raise TimeoutError("the topology monitor is stopped")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                waiter.wait(remaining)
            finally:
                self._changed.forget(waiter)

    def call(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``work`` on the monitor's loop and wait for its result (from another thread)."""
        assert self._loop is not None, "start() first"
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(timeout)

    def soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the monitor's loop, soon (thread-safe, non-blocking)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _on_publish(self, old: TopologySnapshot, new: TopologySnapshot) -> None:
        self._changed.notify_all()


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(
            exc_type, (TimeoutError, concurrent.futures.TimeoutError, RuntimeError)
        )


__all__ = ["MonitorThread"]
