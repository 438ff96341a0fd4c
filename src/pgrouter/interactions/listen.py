"""LISTEN/NOTIFY that follows the primary: ``async for item in pm.listen("channel")``.

A :class:`ListenPump` keeps one dedicated connection (never a pooled one: a
pool resets and reuses its connections) LISTENing on the primary of the
monitor's current snapshot, and hands each notification to its consumer as a
:class:`Notification`. The connection ends when

- the board says its host is no longer the primary (down, superseded, fenced,
  or a restarted server): the monitor's own checks see a frozen primary too;
- the connection breaks (the driver raises);
- the liveness NOTIFY is not answered within :data:`PING_TIMEOUT`: every
  :data:`PING_INTERVAL` the pump sends ``pg_notify()`` to a private channel on
  its own connection and waits for it to come back. TCP keepalive would not
  do: a SIGSTOP'd server's kernel still acknowledges keepalive probes, and
  the round trip also proves that the server still delivers notifications.

Then it waits on the board (never a sleep loop) for a primary, LISTENs there,
and yields a :class:`ListenGap` before the next notification: notifications
sent between ``since`` and ``until`` may be lost, so the consumer re-reads
its state. With no failure nothing is lost: each LISTEN is done before the
pump reports itself listening, and every notification received is queued in
a :class:`~pgrouter.interactions.listen_backlog.Backlog`, a batch at a time
(one wake-up of the consumer per batch the driver hands over), up to its
``max_pending`` bound (past it, a gap: see that module).

While it LISTENs on a host the pump counts as work there
(:class:`ListenedHosts`, which the managers' ``busy()`` reads): the monitor
checks that primary on its heartbeat, as with a connection handed out, so a
failover or a freeze is seen as soon as under writes.

Driver calls are never cancelled to bound them (psycopg would try a cancel
request on a frozen server): a watchdog cuts the connection instead, and the
waiting call fails with its driver's connection error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from ..driver import ListenConnection
from ..dsn import HostDsn
from ..errors import NoHostAvailableError
from ..monitor import TopologyMonitor, describe_error
from ..topology import HostState, TopologySnapshot, checked_since
from .listen_backlog import DEFAULT_MAX_PENDING, Backlog, Ending
from .listen_items import ListenGap, ListenItem, Notification

logger = logging.getLogger("pgrouter")

#: Seconds between two liveness NOTIFYs on an otherwise quiet connection.
PING_INTERVAL = 1.0
#: Seconds a liveness NOTIFY may take to come back before the connection is cut.
PING_TIMEOUT = 2.0
#: Seconds to open the listening connection.
CONNECT_TIMEOUT = 3.0
#: Seconds the closing UNLISTEN may take (the connection is cut past it).
UNLISTEN_TIMEOUT = 1.0
#: Retries on one host that keeps failing its connect start this far apart
#: (seconds), doubling up to RETRY_MAX: a host its checks pass but that refuses
#: us (too many connections, say) is not hammered.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0
#: The listening connection's application_name, unless the DSN sets one.
APPLICATION_NAME = "pgrouter-listen"


Connect = Callable[[HostDsn, float], Awaitable[ListenConnection]]


class _Lost(Exception):
    """The listening connection is no longer good; ``str()`` says why."""


class ListenedHosts:
    """How many listeners LISTEN on each host now (one per manager, on the monitor's loop).

    A manager's ``busy(index)`` is true while this holds the host: the monitor
    then checks the primary on its heartbeat, not every ``refresh_delay``.
    """

    def __init__(self) -> None:
        self._counts: collections.Counter[int] = collections.Counter()

    def started(self, index: int) -> None:
        self._counts[index] += 1

    def ended(self, index: int) -> None:
        self._counts[index] -= 1
        if self._counts[index] <= 0:
            del self._counts[index]

    def __contains__(self, index: object) -> bool:
        return index in self._counts


class ListenPump:
    """Keeps LISTENing on the current primary and puts what it gets in ``backlog``.

    Runs as one task on the monitor's loop (:meth:`start`): the caller's loop
    for the async face, the monitor thread's for the blocking one. The
    backlog gets every :data:`ListenItem` in order, and finally its end
    (:meth:`Backlog.end`): ``None`` (stopped) or the exception that ends the
    pump (a driver without LISTEN, say). ``listened`` (the manager's) counts
    the host it listens on as work.
    """

    def __init__(
        self,
        monitor: TopologyMonitor,
        connect: Connect,
        channels: tuple[str, ...],
        backlog: Backlog,
        *,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        on_listening: Callable[[], None] = lambda: None,
        listened: ListenedHosts | None = None,
    ) -> None:
        self._monitor = monitor
        self._connect = connect
        self.channels = channels
        self._backlog = backlog
        self._listened = ListenedHosts() if listened is None else listened
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_listening = on_listening
        self._private = f"pgrouter_alive_{secrets.token_hex(8)}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.listening = asyncio.Event()  # set at each LISTEN done, cleared at each loss
        self.ended = asyncio.Event()
        self.host: HostState | None = None  # where it listens now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """UNLISTEN, close the connection, end the task (idempotent)."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def _run(self) -> None:
        ending: BaseException | None = None
        try:
            await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a driver without LISTEN, or a bug: the consumer sees it
            ending = error
        finally:
            self.ended.set()
            self._backlog.end(ending)

    async def _follow(self) -> None:
        board = self._monitor.board
        since: float | None = None  # last known good, once a connection was lost
        reason = ""
        retry = RETRY_FIRST
        while True:
            snapshot = await board.wait_for(_has_primary, None)
            host = snapshot.primaries[0]
            try:
                connection = await self._connect(listen_dsn(host.dsn), CONNECT_TIMEOUT)
            except (NotImplementedError, RuntimeError, TypeError):
                raise  # no LISTEN in this driver, too old a library, bad arguments
            except Exception as error:
                reason = reason or f"{host.address}: connect failed: {describe_error(error)}"
                retry = await self._after_failure(host, retry)
                continue
            try:
                for channel in (*self.channels, self._private):
                    await connection.listen(channel)
            except Exception as error:
                await _close(connection)
                reason = reason or f"{host.address}: LISTEN failed: {describe_error(error)}"
                retry = await self._after_failure(host, retry)
                continue
            until = time.time()
            retry = RETRY_FIRST
            if since is not None:
                self._backlog.put_gap(ListenGap(since, until, reason))
            self.host = host
            self.listening.set()
            self._listened.started(host.index)
            self._monitor.work_started(host.index)  # the heartbeat, if it slept as idle
            self._on_listening()
            last_good = [until]
            try:
                reason = await self._serve(connection, host, last_good)
            finally:
                self._listened.ended(host.index)
                self.listening.clear()
                if self._stopping:
                    await self._unlisten_and_close(connection)
                else:
                    connection.abort()
                    await _close(connection)
            since = last_good[0]
            logger.warning(
                "pgrouter: listen(): connection lost (%s); following the primary", reason
            )
            self._monitor.request_check(host.index)

    async def _after_failure(self, host: HostState, retry: float) -> float:
        """Wait for a newer check of ``host`` (or another primary), and the backoff."""
        started = time.monotonic()
        self._monitor.request_check(host.index)
        await self._monitor.board.wait_for(
            lambda snapshot: checked_since(host, snapshot) or not _serves_as(snapshot, host),
            None,
        )
        left = retry - (time.monotonic() - started)
        if left > 0:
            await asyncio.sleep(left)  # a rate limit, not a wait for the topology
        return min(retry * 2, RETRY_MAX)

    async def _serve(
        self, connection: ListenConnection, host: HostState, last_good: list[float]
    ) -> str:
        """Receive until the connection is lost; why it was."""
        loop = asyncio.get_running_loop()
        watch = loop.create_task(
            self._monitor.board.wait_for(lambda snapshot: not _serves_as(snapshot, host), None)
        )
        cut_by_board: list[str] = []

        def on_board(task: asyncio.Task[TopologySnapshot]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            snapshot = task.result()
            cut_by_board.append(
                "no longer the primary: " + snapshot.describe_host(snapshot.hosts[host.index])
            )
            connection.abort()

        watch.add_done_callback(on_board)
        sequence = 0
        sent_at: float | None = None  # the unanswered liveness NOTIFY's send time
        next_ping = loop.time() + self._ping_interval
        private = self._private
        put = self._backlog.put
        try:
            while True:
                now = loop.time()
                if sent_at is None:
                    wait = next_ping - now
                else:
                    wait = sent_at + self._ping_timeout - now
                    if wait <= 0:
                        raise _Lost(
                            f"{host.address}: no answer to the liveness NOTIFY"
                            f" within {self._ping_timeout:g} s"
                        )
                batch = await connection.receive(max(wait, 0))
                if batch:
                    received_at = last_good[0] = time.time()
                    notes = [note for note in batch if note[0] != private]
                    if notes:
                        put(notes, received_at)
                    if len(notes) != len(batch):  # liveness answers among them
                        answer = str(sequence)
                        if any(note[0] == private and note[1] == answer for note in batch):
                            sent_at = None
                            next_ping = loop.time() + self._ping_interval
                if sent_at is None and loop.time() >= next_ping:
                    sequence += 1
                    sent_at = loop.time()
                    # Bounded by cutting, not cancelling (see the module docstring).
                    watchdog = loop.call_later(self._ping_timeout, connection.abort)
                    try:
                        await connection.notify(self._private, str(sequence))
                    finally:
                        watchdog.cancel()
        except _Lost as lost:
            return str(lost)
        except Exception as error:
            if cut_by_board:
                return f"{host.address}: {cut_by_board[0]}"
            if sent_at is not None and loop.time() - sent_at >= self._ping_timeout:
                return (
                    f"{host.address}: no answer to the liveness NOTIFY"
                    f" within {self._ping_timeout:g} s"
                )
            return f"{host.address}: {describe_error(error)}"
        finally:
            watch.remove_done_callback(on_board)
            watch.cancel()

    async def _unlisten_and_close(self, connection: ListenConnection) -> None:
        """The consumer stopped: UNLISTEN (bounded by a cut), then close."""
        loop = asyncio.get_running_loop()
        watchdog = loop.call_later(UNLISTEN_TIMEOUT, connection.abort)
        try:
            await connection.unlisten_all()
        except Exception as error:
            logger.debug("pgrouter: UNLISTEN failed: %r", error)
        finally:
            watchdog.cancel()
            await _close(connection)


#: A Notification from the driver's tuple with no Python-level call (see listen_backlog).
_make = tuple.__new__


def listen_dsn(dsn: HostDsn) -> HostDsn:
    """``dsn``, named :data:`APPLICATION_NAME` unless it names itself: a listener is
    told apart from pool connections in ``pg_stat_activity``."""
    if any(key == "application_name" for key, _ in dsn.options):
        return dsn
    return dsn.with_options(application_name=APPLICATION_NAME)


def _has_primary(snapshot: TopologySnapshot) -> bool:
    return bool(snapshot.primaries)


def _serves_as(snapshot: TopologySnapshot, host: HostState) -> bool:
    """True while ``host`` is still the primary, and the same server (not restarted)."""
    primaries = snapshot.primaries
    if not primaries or primaries[0].index != host.index:
        return False
    key = primaries[0].server_key
    return key is None or host.server_key is None or key == host.server_key


async def _close(connection: ListenConnection) -> None:
    try:
        await connection.close()
    except Exception as error:
        logger.debug("pgrouter: closing a listening connection failed: %r", error)


class Listener:
    """What ``pm.listen()`` returns: an async iterator of :data:`ListenItem`.

    The pump starts at once, so ``async with pm.listen("jobs") as items:``
    (which waits for the first LISTEN, up to ``start_timeout``) is the way to
    not miss a NOTIFY sent right after. ``break`` out of ``async for`` then ``aclose()``, or leave
    the ``async with``: UNLISTEN, and the connection closes. At most
    ``max_pending`` items wait for the consumer (see
    :mod:`~pgrouter.interactions.listen_backlog`).
    """

    def __init__(
        self,
        monitor: TopologyMonitor,
        connect: Connect,
        channels: tuple[str, ...],
        on_close: Callable[[Listener], None] = lambda listener: None,
        *,
        start_timeout: float | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        listened: ListenedHosts | None = None,
    ) -> None:
        self._backlog = Backlog(max_pending, self._wake)
        # The consumers' wait for the next batch (one future, shared by all of them).
        self._waiter: asyncio.Future[None] | None = None
        self._pump = ListenPump(monitor, connect, channels, self._backlog, listened=listened)
        self._monitor = monitor
        self._on_close = on_close
        self._start_timeout = start_timeout
        self._ended = False
        self._pump.start()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def channels(self) -> tuple[str, ...]:
        return self._pump.channels

    @property
    def listening(self) -> bool:
        """True while LISTEN is in place on a host the monitor sees as the primary."""
        return self._pump.listening.is_set()

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

    async def ready(self, timeout: float | None = None) -> None:
        """Return once LISTEN is done on the primary (``TimeoutError`` past ``timeout``)."""
        waiter = asyncio.ensure_future(self._pump.listening.wait())
        ended = asyncio.ensure_future(self._pump.ended.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            ended.cancel()
        if not done:
            raise TimeoutError(f"listen{self.channels}: no LISTEN on a primary within {timeout} s")
        if waiter not in done:
            await self.__anext__()  # raises what ended the pump
            raise RuntimeError("the listener ended before it listened")

    def __aiter__(self) -> AsyncIterator[ListenItem]:
        return self

    async def __anext__(self) -> ListenItem:
        # The hot path: a pending notification, no wait, no lock, no call.
        items = self._backlog.items
        while not self._ended:
            if items:
                item = items.popleft()
                if type(item) is tuple:  # the driver's (channel, payload, pid)
                    return _make(Notification, item)
                if isinstance(item, ListenGap):
                    return item
                assert isinstance(item, Ending)
                self._ended = True
                if item.error is not None:
                    raise item.error
                break
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            # Shielded: a consumer cancelled here must not cancel the others' wait.
            await asyncio.shield(waiter)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """UNLISTEN and close the connection; the iteration ends."""
        await self._pump.stop()
        self._ended = True
        self._on_close(self)

    async def __aenter__(self) -> Listener:
        """Wait for the first LISTEN, at most ``start_timeout`` (else NoHostAvailableError)."""
        try:
            await self.ready(self._start_timeout)
        except TimeoutError:
            await self.aclose()
            raise NoHostAvailableError(
                f"listen{self.channels}: no LISTEN on a primary within"
                f" {self._start_timeout:g} s; hosts: {self._monitor.board.current.describe()}"
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Listeners:
    """A manager's open listeners, so that its ``close()`` ends every one."""

    def __init__(self) -> None:
        # Held strongly: a listener its consumer dropped without closing still
        # holds a connection and a task, which close() must end.
        self._open: set[Listener] = set()

    def add(self, listener: Listener) -> Listener:
        self._open.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._open.discard(listener)

    async def close_all(self) -> None:
        await asyncio.gather(*(listener.aclose() for listener in list(self._open)))


__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_MAX_PENDING",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "ListenGap",
    "ListenItem",
    "ListenPump",
    "ListenedHosts",
    "Listener",
    "Listeners",
    "Notification",
]
