"""LISTEN/NOTIFY for the blocking face: ``for item in pm.listen("jobs")``.

The same :class:`~pgrouter.interactions.listen.ListenPump` as the async face
(one decision, one place) runs on the monitor thread's loop, with the async
twin of the manager's library (psycopg 3 async for ``pgrouter.sync.psycopg``,
aiopg, which drives psycopg2's ``poll()`` and ``conn.notifies``, for
``pgrouter.sync.psycopg2``), and so waits on the very board the monitor
publishes. Items cross to the consumer's thread through the pump's
:class:`~pgrouter.interactions.listen_backlog.Backlog` (a deque) and
gevent-safe wake-ups (:class:`pgrouter.sync.green.Wakeups`): one wake-up per
batch the driver hands over, not per notification, and a consumer that finds
items pending takes them without a lock or a wait. A greenlet waiting for the
next notification blocks only itself.

What bounds its rate against a bare blocking psycopg listener: the reading is
psycopg's async connection on the monitor's loop (its ``notifies()`` costs
about 1.5 times the blocking one's per notification), and each item then
crosses from that thread to the consumer's under the one GIL
(bench/README.md has the figures).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from types import TracebackType

from ..errors import NoHostAvailableError
from ..sync import green
from ..sync.monitor_thread import MonitorThread
from .listen import Connect, ListenedHosts, ListenPump
from .listen_backlog import DEFAULT_MAX_PENDING, Backlog, Ending
from .listen_items import ListenGap, ListenItem, Notification

#: Seconds close() waits for the UNLISTEN and the end of the pump.
CLOSE_TIMEOUT = 5.0


#: A Notification from the driver's tuple with no Python-level call (see listen_backlog).
_make = tuple.__new__


class BlockingListener:
    """What a sync manager's ``listen()`` returns: a blocking iterator of :data:`ListenItem`.

    ``close()`` (from any thread or greenlet) UNLISTENs, closes the connection
    and ends the iteration, waking a consumer blocked in it; ``with`` waits
    for the first LISTEN and closes at the end. :meth:`get` waits at most
    ``timeout`` seconds, for consumers that also watch something else. At
    most ``max_pending`` items wait for the consumer (see
    :mod:`~pgrouter.interactions.listen_backlog`).
    """

    def __init__(
        self,
        thread: MonitorThread,
        connect: Connect,
        channels: tuple[str, ...],
        on_close: collections.abc.Callable[[BlockingListener], None] = lambda listener: None,
        *,
        start_timeout: float | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        listened: ListenedHosts | None = None,
    ) -> None:
        self.channels = channels
        self._start_timeout = start_timeout
        self._thread = thread
        self._connect = connect
        self._on_close = on_close
        self._listened = listened
        self._wakeups = green.Wakeups()
        # Written on the monitor's thread, popped on the consumer's.
        self._backlog = Backlog(max_pending, self._wakeups.notify_all)
        self._pump: ListenPump | None = None
        self._listening = False
        self._ended = False  # the consumer has seen the end
        self._closed = False
        thread.soon(self._start_on_loop)

    # -- on the monitor's loop ---------------------------------------------

    def _start_on_loop(self) -> None:
        monitor = self._thread.monitor
        assert monitor is not None
        self._pump = ListenPump(
            monitor,
            self._connect,
            self.channels,
            self._backlog,
            on_listening=self._on_listening,
            listened=self._listened,
        )
        self._pump.start()
        if self._closed:  # closed before the loop got here
            self._stop_on_loop()

    def _stop_on_loop(self) -> None:
        if self._pump is not None:
            asyncio.get_running_loop().create_task(self._pump.stop())

    def _on_listening(self) -> None:
        self._listening = True
        self._wakeups.notify_all()

    @property
    def listening(self) -> bool:
        """True while LISTEN is in place on a host the monitor sees as the primary."""
        pump = self._pump
        return pump is not None and pump.listening.is_set()

    @property
    def pending(self) -> int:
        """Items received and not taken yet (at most ``max_pending``, the end included)."""
        return len(self._backlog.items)

    @property
    def received(self) -> int:
        """Notifications received so far, on every connection (those dropped included)."""
        return self._backlog.received

    @property
    def dropped(self) -> int:
        """Notifications dropped for a ``consumer too slow`` gap so far."""
        return self._backlog.dropped

    # -- on the consumer's side ------------------------------------------------

    def _wait(self, ready: collections.abc.Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``ready()`` (woken by each delivery); False past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiter = self._wakeups.register()  # before the look: no delivery slips past
            try:
                if ready():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                waiter.wait(remaining)
            finally:
                self._wakeups.forget(waiter)

    def ready(self, timeout: float | None = None) -> None:
        """Return once LISTEN is done on the primary (``TimeoutError`` past ``timeout``)."""
        if not self._wait(lambda: self._listening or self._backlog.ended, timeout):
            raise TimeoutError(f"listen{self.channels}: no LISTEN on a primary within {timeout} s")
        if not self._listening:
            self.get(0)  # raises what ended the pump
            raise RuntimeError("the listener ended before it listened")

    def get(self, timeout: float | None = None) -> ListenItem | None:
        """The next item, waiting at most ``timeout`` seconds; ``None`` if none came.

        ``StopIteration`` once the listener is closed and everything received
        was taken; the error that ended the pump, if one did.
        """
        items = self._backlog.items
        waited = False
        while not self._ended:
            try:
                item = items.popleft()  # the hot path: pending, no wait, no lock
            except IndexError:
                if self._closed:
                    break
                if waited:
                    return None
                waited = True
                self._wait(lambda: bool(items) or self._closed, timeout)
                continue
            if type(item) is tuple:  # the driver's (channel, payload, pid)
                return _make(Notification, item)
            if isinstance(item, ListenGap):
                return item
            assert isinstance(item, Ending)
            self._ended = True
            if item.error is not None:
                raise item.error
        self._ended = True
        raise StopIteration

    def __iter__(self) -> Iterator[ListenItem]:
        return self

    def __next__(self) -> ListenItem:
        item = self.get(None)
        assert item is not None  # no timeout: an item, or StopIteration
        return item

    def close(self) -> None:
        """UNLISTEN and close the connection; wakes and ends the iteration."""
        first, self._closed = not self._closed, True
        self._wakeups.notify_all()
        if self._thread.running:
            if first:
                self._thread.soon(self._stop_on_loop)
            # Every caller waits for the end, also a second one: the manager
            # must not stop its loop under an UNLISTEN in flight.
            self._wait(lambda: self._backlog.ended, CLOSE_TIMEOUT)
        self._on_close(self)

    def __enter__(self) -> BlockingListener:
        """Wait for the first LISTEN, at most ``start_timeout`` (else NoHostAvailableError)."""
        try:
            self.ready(self._start_timeout)
        except TimeoutError:
            self.close()
            raise NoHostAvailableError(
                f"listen{self.channels}: no LISTEN on a primary within"
                f" {self._start_timeout:g} s; hosts: {self._thread.current.describe()}"
            ) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BlockingListeners:
    """A sync manager's open listeners, so that its ``close()`` ends every one."""

    def __init__(self) -> None:
        # Held strongly: a listener its consumer dropped without closing still
        # holds a connection and a task, which close() must end.
        self._open: set[BlockingListener] = set()

    def add(self, listener: BlockingListener) -> BlockingListener:
        self._open.add(listener)
        return listener

    def forget(self, listener: BlockingListener) -> None:
        self._open.discard(listener)

    def close_all(self) -> None:
        for listener in list(self._open):
            listener.close()


__all__ = ["BlockingListener", "BlockingListeners"]
