"""The pool manager: one pool per host, routed by role, health and balancer.

Data path of an acquire, top to bottom in :meth:`BasePoolManager._acquire`:
DSN split into hosts (at construction) -> the :class:`TopologyMonitor` checks
each host and publishes its state (a :class:`PoolKeeper` per host opens its
pool as the host is admitted) -> the current
:class:`TopologySnapshot` -> the balancer picks a host (or we await the next
snapshot) -> the driver takes a connection from that host's pool -> the
connection is recorded with its pool, so :meth:`release` returns it there even
after the host changed role or left the rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import warnings
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic

from . import arguments
from .acquire import AcquireContext
from .aio.polled_wait import wait_polled
from .aio.pool_keeper import PoolKeeper
from .alarms import AlarmClock, Deadline, HostLeft
from .balancer_policy import has_eligible_host
from .bounded import wait_event
from .driver import ConnT, Driver, PoolT
from .dsn import HostDsn, split_dsn
from .eager import finish_despite_cancellation, start
from .errors import (
    NoHostAvailableError,
    NotCommittedError,
    PoolManagerClosedError,
    WrongEventLoopError,
)
from .interactions.channels import check_channel, check_channels, check_payload
from .interactions.listen import CONNECT_TIMEOUT as LISTEN_CONNECT_TIMEOUT
from .interactions.listen import DEFAULT_MAX_PENDING, ListenedHosts, Listener, Listeners
from .interactions.run import run as run_interaction
from .interactions.transactions import Transaction, TransactionContext
from .interactions.txn_watch import TxnRegistry
from .monitor import Admit, TopologyMonitor, describe_error
from .readiness import (
    Readiness,
    first_checks_done,
    no_host_error,
    one_more_check,
    raise_rejected_pool_kwargs,
)
from .release_bound import ReleaseBound
from .routing.consistency import (
    CAUSAL_POLL_FIRST,
    CAUSAL_POLL_MAX,
    TOKEN_READ_KINDS,
    ReadYourWrites,
    current_scope,
    note_position,
    plan_token_read,
    position_lost,
    position_query,
    replayed_query,
)
from .routing.reads import ReadRule
from .routing.requests import check_write_arguments, resolve_pool_pick, resolve_read
from .routing.tokens import WRITE_TOKEN_QUERY, WriteToken, token_from_row
from .settings import ManagerOptions, manager_settings
from .topology import (
    HostRole,
    HostState,
    TopologySnapshot,
    checked_since,
    newly_cut,
    newly_failed,
    serves,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("pgrouter")

#: A host whose full pool has acquires queued on it and took nothing back for
#: this long is checked at once (its connections may be stuck on a frozen server).
STALL_DELAY = 0.1
#: close() says this often (seconds) how many connections it still waits for.
CLOSE_WARNING_INTERVAL = 5.0
#: Acquire timeouts at or past this are no timeouts (and inf is refused).
_FOREVER = 1e9


class BasePoolManager(Generic[PoolT, ConnT]):
    """Routes connections over every host of one cluster (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        driver: Driver[PoolT, ConnT],
        **options: Unpack[ManagerOptions],
    ) -> None:
        self._hosts: list[HostDsn] = split_dsn(dsn)
        self._driver = driver
        settings = manager_settings(type(self).__name__, **options)
        # Transactions held over several calls (run(partial_txn=True), transaction()).
        self._txn_timeout = settings.txn_timeout
        self._transactions = TxnRegistry(contextlib.nullcontext())
        # Read on every acquire: plain attributes, not through the settings.
        self._acquire_timeout = settings.acquire_timeout
        self._balancer = settings.balancer
        self._read_defaults = settings.read_defaults
        self._name = settings.name
        self._causal_wait = settings.causal_wait
        self._refresh_timeout = settings.refresh_timeout
        # Whether the driver has anything to do at the end of `async with`
        # (psycopg commits); asked on every exit, so known once.
        self._ends_use = type(driver).end_of_use is not Driver.end_of_use
        # How reads with a write token were served, for metrics (see token_read_counts).
        self._token_reads = dict.fromkeys(TOKEN_READ_KINDS, 0)
        # ids of borrowed connections to the primary that were asked for as reads.
        self._reads_on_primary: set[int] = set()
        # Per host index: connections handed out and not yet given back. The
        # primary's heartbeat runs only while it has some (idle costs nothing).
        self._in_use = [0] * len(self._hosts)
        # One pool keeper per host (its pools), following one monitor (what
        # the cluster is), which admits a host through its keeper before it
        # publishes it healthy.
        self._keepers: list[PoolKeeper[PoolT, ConnT]] = [
            PoolKeeper(
                index=index,
                dsn=host,
                driver=driver,
                pool_kwargs=dict(settings.pool_kwargs),
                refresh_timeout=settings.refresh_timeout,
            )
            for index, host in enumerate(self._hosts)
        ]
        # Hosts pm.listen()'s listeners LISTEN on: work for the heartbeat, as a
        # connection handed out (see _is_busy).
        self._listened = ListenedHosts()
        self._monitor = TopologyMonitor(
            self._hosts,
            driver=driver,
            # Weakly: the checks, which the loop holds, must not keep alive a
            # manager its owner dropped (it warns when collected, see __del__).
            admit=_weak_admit(weakref.WeakMethod(self._admit)),
            refresh_delay=settings.refresh_delay,
            refresh_timeout=settings.refresh_timeout,
            stopwatch_window_size=settings.stopwatch_window_size,
            event_driven_checks=settings.event_driven_checks,
            primary_heartbeat=settings.primary_heartbeat,
            busy=functools.partial(_is_busy, self._in_use, self._listened),
        )
        self._board = self._monitor.board
        # id(connection) -> (connection, its pool, its host's index)
        self._borrowed: dict[int, tuple[ConnT, PoolT, int]] = {}
        # Per host index: our acquires queued on its full pool. The greedy
        # balancer sends the next one to the shortest queue.
        self._queued = [0] * len(self._hosts)
        # Per host index: connections given back, so a stalled pool can be told
        # from a busy one by one timer per host (see _watch_stall).
        self._returned = [0] * len(self._hosts)
        self._stall_timers: list[asyncio.TimerHandle | None] = [None] * len(self._hosts)
        # Per host index: the waits queued on its full pool, by the role the
        # host had when they chose it; tripped when it stops serving that role.
        self._parked: list[dict[HostRole, set[Deadline]]] = [{} for _ in self._hosts]
        # Python 3.11+: a wait on a full pool is one wait, ended early by a trip
        # (Task.uncancel() tells a trip from an outside cancellation). 3.10:
        # slices of STALL_DELAY, between which the host's state is read.
        self._trip_waits = sys.version_info >= (3, 11)
        # Hosts down, fenced or superseded: a connection of theirs given back
        # is cut, not reset through a socket that may never answer.
        self._unusable: frozenset[int] = frozenset()
        self._board.listen(self._on_topology)
        self._background: set[asyncio.Future[None]] = set()
        self._releases_in_flight = 0
        # Deadlines of acquires waiting on a full pool, on one loop timer
        # rather than one each (see alarms.py), where the driver's acquire may
        # be cancelled anywhere. Not on Python 3.10: without Task.uncancel() a
        # cancellation from outside at the deadline would pass for a timeout.
        self._alarms = AlarmClock()
        self._deadlines_on_alarms = driver.acquire_cancels_cleanly and sys.version_info >= (3, 11)
        # Releases running now, by host: aborted past the driver's bound (a
        # release that may hang on the server), and at once when their host is
        # declared down, fenced or superseded.
        self._releasing = ReleaseBound(driver.release_timeout, driver.abort)
        # Set once closing and nothing is borrowed or on its way back; close()
        # waits on it. (Only while closing: acquires and releases stay free of it.)
        self._all_returned = asyncio.Event()
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it started on
        self._closing = False
        self._closed = False
        self._listeners = Listeners()  # pm.listen()'s, ended by close()
        with contextlib.suppress(RuntimeError):  # no running loop: start on first use
            asyncio.get_running_loop()
            self._start()

    def __repr__(self) -> str:
        hosts = ",".join(host.address for host in self._hosts)
        return f"<{type(self).__name__} hosts={hosts} driver={self._driver.name}>"

    # -- state ------------------------------------------------------------

    @property
    def topology(self) -> TopologySnapshot:
        """The current snapshot of every host's role and health."""
        return self._board.current

    @property
    def hosts(self) -> list[HostDsn]:
        return list(self._hosts)

    @property
    def dsn(self) -> list[HostDsn]:
        """One redacted-on-print DSN per host (hasql exposes the split DSNs as ``dsn``)."""
        return list(self._hosts)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pools(self) -> list[PoolT | None]:
        """Each host's current pool, ``None`` where the host was never reached."""
        return [keeper.pool for keeper in self._keepers]

    @property
    def available_pool_count(self) -> int:
        snapshot = self._board.current
        return len(snapshot.primaries) + len(snapshot.replicas)

    @property
    def master_pool_count(self) -> int:
        return len(self._board.current.primaries)

    @property
    def replica_pool_count(self) -> int:
        return len(self._board.current.replicas)

    # -- acquire ----------------------------------------------------------

    def acquire(
        self,
        read_only: bool = False,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        *,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        after: WriteToken | None = None,
        **kwargs: Any,
    ) -> AcquireContext[ConnT]:
        """A connection to the primary, or (``read_only``) to a replica.

        Waits for a suitable host (woken by each new topology snapshot) and for
        a free connection in its pool, both within ``timeout`` seconds. For a
        read: ``max_lag_*`` bound how far behind its replica may be, ``after``
        (a :class:`~pgrouter.WriteToken`) asks for a host that has replayed
        that write; pins (:mod:`pgrouter.pinning`) send it to the primary.
        """
        if not read_only:
            check_write_arguments(master_as_replica_weight, max_lag_bytes, max_lag_seconds, after)
            return self.acquire_master(timeout, **kwargs)
        return self.acquire_replica(
            fallback_master,
            master_as_replica_weight,
            timeout,
            max_lag_bytes=max_lag_bytes,
            max_lag_seconds=max_lag_seconds,
            after=after,
            **kwargs,
        )

    def acquire_master(self, timeout: float | None = None, **kwargs: Any) -> AcquireContext[ConnT]:
        return self._request(False, False, 0.0, timeout, kwargs, None)

    def acquire_replica(
        self,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        *,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        after: WriteToken | None = None,
        **kwargs: Any,
    ) -> AcquireContext[ConnT]:
        """A connection to a replica (see :meth:`acquire`), as routing resolves the request."""
        request = resolve_read(
            self._name,
            self._read_defaults,
            fallback_master,
            master_as_replica_weight,
            max_lag_bytes,
            max_lag_seconds,
            after,
        )
        if request.to_primary:
            return self._request(False, False, 0.0, timeout, kwargs, None)
        if request.after is not None:
            return self._request_after(
                request.after,
                request.fallback_master,
                request.master_as_replica_weight,
                timeout,
                kwargs,
                request.rule,
            )
        return self._request(
            True,
            request.fallback_master,
            request.master_as_replica_weight,
            timeout,
            kwargs,
            request.rule,
        )

    def _request(
        self,
        read_only: bool,
        fallback_master: bool,
        master_as_replica_weight: float,
        timeout: float | None,
        kwargs: dict[str, Any],
        rule: ReadRule | None,
    ) -> AcquireContext[ConnT]:
        """The acquire these arguments ask for, to await or to enter; nothing runs yet."""
        if timeout is None and not self._closing:
            seconds = self._acquire_timeout  # the common case, without a call
        else:
            seconds = self._checked_timeout(timeout)
        acquire = functools.partial(
            self._acquire,
            read_only,
            fallback_master,
            master_as_replica_weight,
            seconds,
            kwargs,
            rule,
        )
        return AcquireContext(acquire, self._give_back)

    def _checked_timeout(self, timeout: float | None) -> float:
        if self._closing:
            self._raise_if_closed()
        if timeout is None:
            return self._acquire_timeout
        if not (isinstance(timeout, (int, float)) and 0 <= timeout < _FOREVER):
            # Cheap on the hot path; the full check, which names the fault, on a miss.
            arguments.seconds("timeout", timeout, zero=True)
        return timeout

    def _request_after(
        self,
        token: WriteToken,
        fallback_master: bool,
        master_as_replica_weight: float,
        timeout: float | None,
        kwargs: dict[str, Any],
        rule: ReadRule | None,
    ) -> AcquireContext[ConnT]:
        """A read that must see the write ``token`` stands for (see :meth:`_acquire_after`)."""
        acquire = functools.partial(
            self._acquire_after,
            token,
            fallback_master,
            master_as_replica_weight,
            self._checked_timeout(timeout),
            kwargs,
            rule,
        )
        return AcquireContext(acquire, self._give_back)

    async def _acquire_after(
        self,
        token: WriteToken,
        fallback_master: bool,
        master_as_replica_weight: float,
        timeout: float,
        kwargs: dict[str, Any],
        rule: ReadRule | None,
        context: AcquireContext[ConnT] | None,
    ) -> ConnT:
        """A connection to a host that has replayed ``token``, never one behind it.

        The routing layer says where such a read may go
        (:func:`~pgrouter.routing.consistency.route_for_token`). For a replica:
        first one whose last check already covers the token (no extra round
        trip); else any replica within the bounds, asked on its own connection
        until it has replayed the token, up to ``causal_wait``; else the primary.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        plan = plan_token_read(self._board.current, token, rule)
        if plan.ignore:
            self._token_reads["ignored"] += 1
            return await self._acquire(
                True, fallback_master, master_as_replica_weight, timeout, kwargs, rule, context
            )
        if plan.first is not None:
            self._token_reads["replica"] += 1
            return await self._acquire(True, False, 0.0, timeout, kwargs, plan.first, context)
        if plan.nearest is not None:
            connection = await self._acquire(
                True, False, 0.0, timeout, kwargs, plan.nearest, context
            )
            wait = min(self._causal_wait, max(deadline - loop.time(), 0))
            try:
                caught_up = await self._replayed(connection, token, wait)
            except BaseException:
                if context is not None:
                    context.connection = None
                await self._give_back(connection, None)
                raise
            if caught_up:
                self._token_reads["replica_after_wait"] += 1
                return connection
            if context is not None:
                context.connection = None
            await self._give_back(connection, None)
        self._token_reads["primary"] += 1
        remaining = max(deadline - loop.time(), 0)
        return await self._acquire(False, False, 0.0, remaining, kwargs, None, context)

    async def _replayed(self, connection: ConnT, token: WriteToken, wait: float) -> bool:
        """Ask the replica behind ``connection`` until it has replayed ``token``, up to ``wait``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        query = replayed_query(token)
        pause = CAUSAL_POLL_FIRST
        while True:
            row = await self._driver.fetch_row(connection, query)
            if row and row[0]:
                return True
            if loop.time() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, CAUSAL_POLL_MAX)

    @property
    def name(self) -> str:
        """The cluster's name: pins (:mod:`pgrouter.pinning`) of this name route its reads."""
        return self._name

    @property
    def token_read_counts(self) -> dict[str, int]:
        """How reads with a write token were served: ``replica`` (at once),
        ``replica_after_wait``, ``primary``, ``ignored`` (a token of another cluster)."""
        return dict(self._token_reads)

    async def write_token(self, connection: ConnT) -> WriteToken:
        """The token of what ``connection`` (to the primary) wrote so far: call it after the commit.

        Taken at the WAL insert position, never behind the commit record.
        Inside :func:`~pgrouter.read_your_writes` the scope remembers it too.
        """
        record = self._borrowed.get(id(connection))
        if record is None:
            raise ValueError("write_token() takes a connection this manager handed out")
        if not self._board.current.is_primary(self._board.current.hosts[record[2]]):
            raise ValueError("write_token() needs a connection to the primary")
        token = token_from_row(await self._driver.fetch_row(connection, WRITE_TOKEN_QUERY))
        scope = current_scope()
        if scope is not None:
            scope.remember(token)
        return token

    async def _acquire(
        self,
        read_only: bool,
        fallback_master: bool,
        master_as_replica_weight: float,
        timeout: float,
        kwargs: dict[str, Any],
        rule: ReadRule | None,
        context: AcquireContext[ConnT] | None,
    ) -> ConnT:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start()  # first use, or a misuse it reports
        deadline = loop.time() + timeout
        failures: dict[int, str] = {}  # host index -> why its pool gave no connection

        while True:
            if self._closing:
                self._raise_if_closed()
            # 1. A host: the balancer's pick on the current snapshot, or the
            #    first later snapshot that has one.
            host = self._pick(
                self._board.current, read_only, fallback_master, master_as_replica_weight, rule
            )
            if host is None:
                try:
                    await self._board.wait_for(
                        functools.partial(
                            has_eligible_host,
                            read_only=read_only,
                            fallback_master=fallback_master,
                            master_as_replica_weight=master_as_replica_weight,
                            rule=rule,
                        ),
                        deadline - loop.time(),
                        room=(read_only, fallback_master, master_as_replica_weight > 0, rule),
                    )
                except asyncio.TimeoutError:
                    raise self._no_host_error(
                        read_only, fallback_master, timeout, failures, rule
                    ) from None
                continue

            pool = self._keepers[host.index].pool
            if pool is None:  # pools are being closed; the closed check above ends this
                await asyncio.sleep(0)
                continue

            # 2. A connection from that host's pool: at once when one is free,
            #    else waiting, parked on the host, for as long as it stays usable.
            connection: ConnT | None
            try:
                free = self._driver.free_size(pool) > 0
                if self._trip_waits:
                    # A free connection is taken here and now, without a wait,
                    # and so without a deadline to pay for. A deadline on the
                    # alarm clock where the driver allows it, else the driver's.
                    on_alarms = self._deadlines_on_alarms
                    acquiring = self._driver.acquire(
                        pool, None if on_alarms else max(deadline - loop.time(), 0), **kwargs
                    )
                    waiting, connection = start(acquiring) if free else (acquiring, None)
                    idle = waiting is None
                    if waiting is not None:
                        connection = await self._wait_parked(
                            host, deadline if on_alarms else None, waiting
                        )
                else:
                    # Python 3.10: the same start, but an acquire that has to
                    # wait (a full pool, or a connect) is polled, not tripped.
                    acquiring = self._driver.acquire(pool, max(deadline - loop.time(), 0), **kwargs)
                    waiting, connection = start(acquiring) if free else (acquiring, None)
                    idle = waiting is None
                    if waiting is not None:
                        connection = await self._wait_in_slices(pool, host, waiting)
            except asyncio.TimeoutError:
                failures[host.index] = "no free connection in its pool"
                raise self._no_host_error(read_only, fallback_master, timeout, failures) from None
            except Exception as error:
                if not self._driver.is_host_error(error):
                    raise
                # The host broke under us: check it now, then route again on
                # the snapshot that check produces.
                failures[host.index] = describe_error(error)
                self._check_now(host.index)
                try:
                    await self._board.wait_for(
                        functools.partial(checked_since, host),
                        deadline - loop.time(),
                    )
                except asyncio.TimeoutError:
                    raise self._no_host_error(
                        read_only, fallback_master, timeout, failures
                    ) from None
                continue

            if connection is None:
                failures[host.index] = "left the rotation while we waited for its pool"
                continue
            if pool is not self._keepers[host.index].pool or (
                idle and self._driver.hung_up(connection)
            ):
                # The pool was cut (its host superseded) or replaced while the
                # driver was still handing this over, say from a connect that
                # a frozen server finished at its thaw; or its server ended it
                # while it sat idle in the pool: never let it be used; its pool
                # reconnects. (A connection handed over after a wait was just
                # given back by a caller, its reset a round trip ago: not asked.)
                failures[host.index] = "its pool was cut, or its server ended the connection"
                self._driver.abort(connection)
                self._in_background(self._return_to_pool(connection, pool, {}, host.index))
                continue

            # 3. Recorded with its pool, so it goes back there whatever the host
            #    becomes. No await between the driver handing it over and this
            #    record: a cancellation cannot fall between them and leak it.
            index = host.index
            self._borrowed[id(connection)] = (connection, pool, index)
            if read_only and host.role is HostRole.PRIMARY:
                # A read the primary served: giving it back records no write token.
                self._reads_on_primary.add(id(connection))
            if context is not None:
                context.connection = connection
            self._in_use[index] += 1
            if self._in_use[index] == 1:
                self._monitor.work_started(index)
            return connection

    def _pick(
        self,
        snapshot: TopologySnapshot,
        read_only: bool,
        fallback_master: bool,
        master_as_replica_weight: float,
        rule: ReadRule | None = None,
    ) -> HostState | None:
        """The balancer's pick for this request on ``snapshot``, ``None`` if no host fits."""
        return self._balancer.pick(
            snapshot,
            read_only=read_only,
            fallback_master=fallback_master,
            master_as_replica_weight=master_as_replica_weight,
            free_size=self._free_size_of_host,
            rule=rule,
        )

    async def _wait_parked(
        self, host: HostState, deadline: float | None, waiting: Awaitable[ConnT]
    ) -> ConnT | None:
        """The rest of an acquire from ``host``'s pool that had to wait, or ``None`` if the
        host stops serving its role first.

        One wait for the whole timeout: nothing runs per waiter while it
        waits. What could end it early arrives as an event. A snapshot showing
        the host down, in another role, fenced or superseded trips the waits
        parked on it (:meth:`_on_topology`), and they route again instead of
        timing out on a dead primary. A full pool that takes nothing back for
        :data:`STALL_DELAY` gets its host checked at once, by one timer per
        host however many wait (:meth:`_watch_stall`).

        ``waiting`` is the driver's acquire, started and suspended. ``deadline``
        is set when the driver's acquire may be cancelled anywhere: the wait
        then ends by the manager's alarm clock, one loop timer for every
        waiting acquire instead of one each. ``None``: the driver was given
        the timeout, and only a trip ends the wait early.
        """
        index = host.index
        self._queued[index] += 1
        if self._stall_timers[index] is None:
            self._watch_stall(index)
        parked = self._parked[index].setdefault(host.role, set())
        wait = self._alarms.timeout_at(deadline)
        parked.add(wait)
        try:
            with wait:
                return await waiting
        except HostLeft:
            return None
        finally:
            parked.discard(wait)
            self._queued[index] -= 1

    async def _wait_in_slices(
        self, pool: PoolT, host: HostState, waiting: Awaitable[ConnT]
    ) -> ConnT | None:
        """Python 3.10's :meth:`_wait_parked`: ``None`` once ``host`` stops serving its role,
        read every STALL_DELAY (polled_wait.py: without ``Task.uncancel()`` a trip
        could swallow a cancellation from outside). ``waiting`` carries the deadline.
        """
        index = host.index
        self._queued[index] += 1
        if self._stall_timers[index] is None:
            self._watch_stall(index)
        try:
            return await wait_polled(
                waiting,
                lambda: not _no_longer_usable(host, self._board.current),
                STALL_DELAY,
                lambda late: self._in_background(self._return_to_pool(late, pool, {}, index)),
            )
        finally:
            self._queued[index] -= 1

    def _watch_stall(self, index: int) -> None:
        """Check the host in :data:`STALL_DELAY` if its pool takes nothing back meanwhile."""
        self._stall_timers[index] = asyncio.get_running_loop().call_later(
            STALL_DELAY, self._stall_due, index, self._returned[index]
        )

    def _stall_due(self, index: int, returned: int) -> None:
        """One host's stall watch: acquires still queued, and nothing came back?"""
        self._stall_timers[index] = None
        if not self._queued[index] or self._closed:
            return
        if self._returned[index] == returned:
            self._check_now(index)
        self._watch_stall(index)

    def _on_topology(self, old: TopologySnapshot, new: TopologySnapshot) -> None:
        """React, in the instant a snapshot is published, to what it changed for our pools.

        - A host that newly lost the writes (superseded) or is fenced has every
          connection cut at the socket, borrowed ones too: a caller whose
          write was in flight on it gets a connection error now, and that
          server can acknowledge nothing more, even if it wakes up later.
        - Waits parked on a host that no longer serves their role are tripped.
        - Connections of unusable hosts are cut when given back (_give_back).
        """
        for index in newly_failed(old, new):
            self._keepers[index].host_failed()
        for index in new.unusable - old.unusable:
            self._releasing.abort_host(index)
        for index in newly_cut(old, new):
            self._cut_host(index, new)
        self._unusable = new.unusable
        for index, parked in enumerate(self._parked):
            for role, waits in parked.items():
                if waits and not serves(new, index, role):
                    for wait in list(waits):
                        wait.trip()

    def _in_background(self, work: Awaitable[None]) -> None:
        """Run ``work`` on its own, held until it ends (a late connection's release)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _admit(self, index: int, restarted: bool) -> None:
        """The monitor found host ``index`` usable: its pool opens (or is rebuilt) first."""
        await self._keepers[index].admit(restarted)

    def _cut_host(self, index: int, snapshot: TopologySnapshot) -> None:
        """Cut every connection to a superseded or fenced host, borrowed and idle."""
        borrowed = [record[0] for record in self._borrowed.values() if record[2] == index]
        logger.warning(
            "pgrouter: %s: cutting its connections (%d in use): %s",
            self._hosts[index].address,
            len(borrowed),
            snapshot.describe_host(snapshot.hosts[index]),
        )
        for connection in borrowed:
            try:
                self._driver.abort(connection)
            except Exception as error:  # already closed, or a driver quirk: keep cutting
                logger.debug("pgrouter: aborting a connection failed: %r", error)
        self._keepers[index].cut_pools()

    def _no_host_error(
        self,
        read_only: bool,
        fallback_master: bool,
        timeout: float,
        failures: dict[int, str],
        rule: ReadRule | None = None,
    ) -> NoHostAvailableError:
        self._raise_config_error()  # not an outage: no host will ever do
        return no_host_error(
            self._board.current, read_only, fallback_master, timeout, failures, rule
        )

    # -- release ----------------------------------------------------------

    async def release(self, connection: ConnT, **kwargs: Any) -> None:
        """Give back a connection from ``await pm.acquire()``, to the pool it came from."""
        if id(connection) not in self._borrowed:
            if self._closed:
                return  # terminate() already closed it
            raise ValueError(
                f"release() got a connection this manager did not hand out: {connection!r}"
            )
        await self._give_back(connection, None, **kwargs)

    def _give_back(
        self,
        connection: ConnT | None,
        error: BaseException | None,
        block_exit: bool = False,
        prepared: bool = False,
        /,
        **kwargs: Any,
    ) -> Awaitable[None]:
        """Return a borrowed connection to its pool; ``error`` ended its use, if any.

        Also the exit of ``async with pm.acquire()`` (``block_exit``): the
        driver's :meth:`~pgrouter.driver.Driver.end_of_use` runs first (psycopg
        commits or rolls back), and in a read-your-writes scope the position
        is noted (:meth:`_end_then_give_back`, which comes back here with
        ``prepared``). A connection no longer recorded (``terminate()`` closed
        it) is left alone. A plain function that returns the release to await,
        with the whole release in one body: the bookkeeping needs no frame of
        its own, on a path every connection takes.
        """
        if not prepared:
            scope = current_scope()
            if block_exit or scope is not None:
                held = self._borrowed.get(id(connection))
                if held is not None:
                    if not (block_exit and self._ends_use):
                        ending = None
                    elif held[2] in self._unusable:
                        # Its host left the rotation: no COMMIT (nor ROLLBACK)
                        # through a socket that may never answer; the release cuts it.
                        ending = self._refuse_commit(held[0], held[2], error)
                    else:
                        ending = self._driver.end_of_use(held[0], error)
                    noting = (
                        scope is not None
                        and error is None
                        and self._notes_position(scope, held[0], held[2])
                    )
                    if ending is not None or noting:
                        return self._end_then_give_back(
                            held[0], error, ending, scope if noting else None, kwargs
                        )
        # Forgotten before the driver can hand it to the next caller, whose
        # record would otherwise be the one deleted. (A record holds its
        # connection alive, so no other object can have the same id.)
        record = self._borrowed.pop(id(connection), None)
        if record is None:
            return _nothing()
        if self._reads_on_primary:
            self._reads_on_primary.discard(id(connection))
        connection, pool, index = record
        self._in_use[index] -= 1
        self._returned[index] += 1
        if index in self._unusable:
            # Down, fenced or superseded: a reset would talk to a server that
            # may never answer (or should not be listened to). Cut it; the
            # pool takes it back as broken.
            self._driver.abort(connection)
        elif (error is not None and self._driver.is_host_error(error)) or (
            self._driver.is_closed(connection)
        ):
            self._check_now(index)
        return self._release_guarded(connection, pool, kwargs, index)

    def _refuse_commit(
        self, connection: ConnT, index: int, error: BaseException | None
    ) -> Awaitable[None] | None:
        """The end of a block whose host left the rotation: raise if it had work to commit."""
        if error is not None or not self._driver.pending_commit(connection):
            return None
        return _raise(NotCommittedError.on(self._board.current.hosts[index].address))

    def _notes_position(self, scope: ReadYourWrites | None, connection: ConnT, index: int) -> bool:
        """True when giving back a connection to host ``index`` must record a position in
        ``scope`` first (routing decides which: :func:`position_query`)."""
        if scope is None:
            return False
        read = id(connection) in self._reads_on_primary
        return position_query(scope, self._board.current, index, read) is not None

    async def _end_then_give_back(
        self,
        connection: ConnT,
        error: BaseException | None,
        ending: Awaitable[None] | None,
        scope: ReadYourWrites | None,
        kwargs: dict[str, Any],
    ) -> None:
        """What must happen before the release, then the release.

        The driver's end of use first (psycopg commits), then, inside a
        read-your-writes scope, the position the next reads must reach. The
        connection stays recorded meanwhile, so ``close()`` waits for it and
        ``terminate()`` can cut it; an error of the commit reaches the caller
        once the connection is back in its pool.
        """
        if ending is not None:
            try:
                await ending
            except BaseException as ending_error:
                await self._give_back(connection, ending_error, False, True, **kwargs)
                raise
        if scope is not None:
            await self._note_position(connection, scope)
        await self._give_back(connection, error, False, True, **kwargs)

    async def _note_position(self, connection: ConnT, scope: ReadYourWrites) -> None:
        """Record in ``scope`` where this connection's host is: a write's token, or a floor."""
        record = self._borrowed.get(id(connection))
        if record is None:
            return
        snapshot = self._board.current
        index = record[2]
        query = position_query(scope, snapshot, index, id(connection) in self._reads_on_primary)
        if query is None:
            return
        try:
            row = await self._driver.fetch_row(connection, query)
            note_position(scope, snapshot, index, query, row)
        except Exception as error:
            position_lost(scope, snapshot, index)
            logger.debug("pgrouter: no position for read-your-writes: %r", error)

    def _release_guarded(
        self, connection: ConnT, pool: PoolT, kwargs: dict[str, Any], index: int = -1
    ) -> Awaitable[None]:
        """Return a connection to ``pool`` whatever befalls the caller meanwhile."""
        if self._driver.release_needs_shield(pool, connection):
            # A caller cancelled while releasing must not strand the connection
            # half way back: the release, and its count, finish on their own.
            return finish_despite_cancellation(
                self._return_to_pool(connection, pool, kwargs, index)
            )
        return self._return_to_pool(connection, pool, kwargs, index)

    async def _return_to_pool(
        self, connection: ConnT, pool: PoolT, kwargs: dict[str, Any], index: int = -1
    ) -> None:
        """The driver's release, bounded at its ``release_timeout``, and counted until it ends.

        Both callers start it before they first wait, so from the moment a
        connection leaves ``_borrowed`` it is counted here, and ``close()``
        waits for it. Recorded with its host (``index``), so it is aborted the
        moment that host is declared down, fenced or superseded.
        """
        self._releases_in_flight += 1
        bound: ReleaseBound | None = self._releasing
        token = self._releasing.begin(connection, index)
        try:
            await self._driver.release(pool, connection, **kwargs)
        except Exception as error:
            if not self._driver.release_failed_benignly(connection, error):
                raise
            logger.debug("pgrouter: released a connection its server had ended: %s", error)
        except asyncio.CancelledError:
            # Only a driver whose release shields itself gets here (the others
            # run under finish_despite_cancellation): its release goes on
            # without us, so it stays bounded.
            bound = None
            raise
        finally:
            if bound is not None:
                bound.end(token)
            self._releases_in_flight -= 1
            if self._closing and not self._borrowed and not self._releases_in_flight:
                self._all_returned.set()

    # -- hasql-compatible pool-level API -----------------------------------

    async def get_pool(
        self,
        read_only: bool,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        *,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
    ) -> PoolT | None:
        """The pool the balancer would pick now, or ``None`` (does not wait).

        A read honours the lag bounds (the manager's, or these) and pins.
        """
        self._raise_if_closed()
        self._start()
        request = resolve_pool_pick(
            self._name,
            self._read_defaults,
            read_only,
            fallback_master,
            master_as_replica_weight,
            max_lag_bytes,
            max_lag_seconds,
        )
        host = self._pick(
            self._board.current,
            not request.to_primary,
            request.fallback_master,
            request.master_as_replica_weight,
            request.rule,
        )
        return None if host is None else self._keepers[host.index].pool

    async def get_master_pools(self) -> list[PoolT]:
        """Pools of the hosts that are primary now (does not wait)."""
        return self._pools_of(self._board.current.primaries)

    async def get_replica_pools(self, fallback_master: bool = False) -> list[PoolT]:
        """Pools of the replicas now; the primary's too when none and ``fallback_master``."""
        snapshot = self._board.current
        hosts = snapshot.replicas or (snapshot.primaries if fallback_master else [])
        return self._pools_of(hosts)

    def _pools_of(self, hosts: Sequence[HostState]) -> list[PoolT]:
        pools = [self._keepers[host.index].pool for host in hosts]
        return [pool for pool in pools if pool is not None]

    def pool_is_master(self, pool: PoolT) -> bool:
        host = self._host_of_pool(pool)
        return host is not None and self._board.current.is_primary(host)

    def pool_is_replica(self, pool: PoolT) -> bool:
        host = self._host_of_pool(pool)
        return host is not None and self._board.current.is_replica(host)

    def get_pool_freesize(self, pool: PoolT) -> int:
        return self._driver.free_size(pool)

    def get_last_response_time(self, pool: PoolT) -> float | None:
        """Median probe time (seconds) of the pool's host over the stopwatch window."""
        host = self._host_of_pool(pool)
        return None if host is None else host.latency

    def is_connection_closed(self, connection: ConnT) -> bool:
        return self._driver.is_closed(connection)

    def acquire_from_pool(self, pool: PoolT, **kwargs: Any) -> AcquireContext[ConnT]:
        """A connection from this very pool, whatever its host's role."""
        index = self._index_of_pool(pool)
        timeout = kwargs.pop("timeout", self._acquire_timeout)

        async def acquire(context: AcquireContext[ConnT] | None) -> ConnT:
            self._raise_if_closed()
            if self._deadlines_on_alarms:
                deadline = asyncio.get_running_loop().time() + timeout
                with self._alarms.timeout_at(deadline):
                    connection = await self._driver.acquire(pool, None, **kwargs)
            else:
                connection = await self._driver.acquire(pool, timeout, **kwargs)
            self.register_connection(connection, pool, _index=index)
            if context is not None:
                context.connection = connection
            return connection

        return AcquireContext(acquire, self._give_back)

    async def release_to_pool(self, connection: ConnT, pool: PoolT, **kwargs: Any) -> None:
        record = self._borrowed.get(id(connection))
        if record is not None:
            if record[1] is not pool:
                raise ValueError("release_to_pool(): the connection came from another pool")
            await self._give_back(connection, None, **kwargs)
        else:
            # Not ours (taken from the driver pool directly): no record to
            # forget, otherwise the same release as any.
            await self._release_guarded(connection, pool, kwargs)

    def register_connection(
        self, connection: ConnT, pool: PoolT, *, _index: int | None = None
    ) -> None:
        """Record a connection taken from ``pool`` so ``release(connection)`` finds its pool."""
        index = self._index_of_pool(pool) if _index is None else _index
        if id(connection) not in self._borrowed:
            self._in_use[index] += 1
            if self._in_use[index] == 1:
                self._monitor.work_started(index)
        self._borrowed[id(connection)] = (connection, pool, index)

    def _check_now(self, index: int) -> None:
        """A connection to this host just failed: check it without waiting for the tick."""
        self._monitor.request_check(index)

    def _free_size_of_host(self, host: HostState) -> int:
        """Free connections in the host's pool, minus our acquires queued for them.

        Negative once a queue forms, so that with every pool full the greedy
        balancer still picks the host that will serve soonest.
        """
        pool = self._keepers[host.index].pool
        if pool is None:
            return 0
        return self._driver.free_size(pool) - self._queued[host.index]

    def _index_of_pool(self, pool: object) -> int:
        for keeper in self._keepers:
            if keeper.owns(pool):
                return keeper.index
        raise ValueError(f"{pool!r} is not a pool of this manager")

    def _host_of_pool(self, pool: object) -> HostState | None:
        for keeper in self._keepers:
            if keeper.pool is pool:
                return self._board.current.hosts[keeper.index]
        return None

    # -- run(), transactions and dry runs (pgrouter.interactions.run) --------------

    async def run(
        self,
        interaction: str | Callable[..., Any],
        args: Any = None,
        *,
        read_only: bool = False,
        get_result: bool = True,
        txn: Transaction | None = None,
        partial_txn: bool = False,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run a SQL string (the driver's placeholders, ``args`` its parameters) in a
        transaction of its own, or call ``interaction(conn, *args, **kwargs)``, on the
        primary or (``read_only``) a replica. A SQL string gives its rows as dicts
        (``True`` with ``get_result=False``); a read whose host broke runs once more on
        another host. ``partial_txn=True`` gives ``(result, txn)``; ``txn=`` goes on in
        one; ``dry_run=True`` gives the SQL with its parameters rendered, sending nothing.
        """
        return await run_interaction(
            self,
            interaction,
            args,
            read_only=read_only,
            get_result=get_result,
            txn=txn,
            partial_txn=partial_txn,
            dry_run=dry_run,
            kwargs=kwargs,
        )

    def transaction(self, read_only: bool = False) -> TransactionContext:
        """``async with pm.transaction() as txn:`` commits a clean block, rolls back on error."""
        return TransactionContext(self, read_only)

    # -- readiness ----------------------------------------------------------

    async def ready(
        self,
        masters_count: int | None = None,
        replicas_count: int | None = None,
        timeout: float | None = 10,
    ) -> None:
        """Wait until that many primaries and replicas are usable (default: every host).

        Raises ``TypeError`` at once if the driver rejected ``pool_factory_kwargs``
        (a configuration error is no outage to wait out).
        """
        self._raise_if_closed()
        self._start()
        arguments.optional_seconds("timeout", timeout, zero=True)
        readiness = Readiness(masters_count, replicas_count, self._config_error)
        try:
            await self._board.wait_for(readiness, timeout)
        except asyncio.TimeoutError:
            raise readiness.timed_out(timeout or 0, self._board.current) from None
        self._raise_config_error()

    async def wait_all_ready(self) -> None:
        await self.ready(timeout=None)

    async def wait_masters_ready(self, masters_count: int) -> None:
        await self.ready(masters_count=masters_count, replicas_count=0, timeout=None)

    async def wait_replicas_ready(self, replicas_count: int) -> None:
        await self.ready(masters_count=0, replicas_count=replicas_count, timeout=None)

    async def wait_next_pool_check(self, timeout: float = 10) -> None:
        """Wait until every host finished one more check than it had now."""
        self._raise_if_closed()
        self._start()
        await self._board.wait_for(one_more_check(self._board.current), timeout)

    async def wait_first_checks(self, timeout: float | None = None) -> None:
        """Wait until every host has had one verdict, up or down.

        Raises ``TypeError`` if the driver rejected ``pool_factory_kwargs``.
        """
        self._raise_if_closed()
        self._start()
        await self._board.wait_for(first_checks_done, timeout)
        self._raise_config_error()

    def _config_error(self) -> Exception | None:
        """The driver's refusal of ``pool_factory_kwargs``, if a host's pool met one."""
        for keeper in self._keepers:
            if keeper.config_error is not None:
                return keeper.config_error
        return None

    def _raise_config_error(self) -> None:
        raise_rejected_pool_kwargs(self._driver.name, self._config_error())

    # -- LISTEN/NOTIFY (pgrouter.interactions.listen) ------------------------

    def listen(self, *channels: str, max_pending: int = DEFAULT_MAX_PENDING) -> Listener:
        """``async for item in pm.listen("jobs")``: notifications, following the primary.

        Items are :class:`Notification` and, after a failover or a lost
        connection, a :class:`ListenGap` first (see :mod:`pgrouter.interactions.listen`).
        Channel names are exact (case-sensitive). ``async with`` waits for the
        first LISTEN up to the acquire timeout plus a connect. Past
        ``max_pending`` items not taken, they are dropped for a gap
        (:mod:`pgrouter.interactions.listen_backlog`).
        """
        checked = check_channels(channels)
        self._raise_if_closed()
        self._start()
        listener = Listener(
            self._monitor,
            self._driver.connect_listener,
            checked,
            self._listeners.forget,
            start_timeout=self._acquire_timeout + LISTEN_CONNECT_TIMEOUT,
            max_pending=max_pending,
            listened=self._listened,
        )
        return self._listeners.add(listener)

    async def notify(self, channel: str, payload: str = "", timeout: float | None = None) -> None:
        """``pg_notify(channel, payload)`` on the primary (channel name exact)."""
        check_channel(channel)
        check_payload(payload)
        async with self.acquire_master(timeout=timeout) as connection:
            await self._driver.notify(connection, channel, payload)

    # -- life cycle ---------------------------------------------------------

    def _start(self) -> None:
        """Start the checks on the running loop, once; the manager belongs to that loop."""
        if self._started:
            self._check_loop()
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._monitor.start()

    def _check_loop(self) -> None:
        """Raise :class:`WrongEventLoopError` unless called on the manager's own loop."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            ended = self._loop is not None and self._loop.is_closed()
            raise WrongEventLoopError(
                f"{self!r} started on another event loop"
                + (" (closed since: a second asyncio.run()?)" if ended else "")
                + "; its pools and checks belong to that loop. Create one manager per event "
                "loop, inside it (e.g. in the coroutine given to asyncio.run())."
            )

    def _raise_if_closed(self) -> None:
        if self._closing or self._closed:
            raise PoolManagerClosedError(f"{self!r} is closed")

    async def close(self, timeout: float | None = None) -> None:
        """Graceful: no new acquires; waits for borrowed connections, then closes the pools.

        While connections are still out, a warning says how many every
        :data:`CLOSE_WARNING_INTERVAL` seconds (a connection never given back
        would otherwise hang ``close()`` without a word). With ``timeout``,
        what is still out then is terminated, as :meth:`terminate` would.
        """
        if self._closed:
            return
        arguments.optional_seconds("timeout", timeout, zero=True)
        if self._started:
            self._check_loop()
        self._closing = True
        await self._listeners.close_all()
        await self._stop_checkers()
        if not await self._wait_all_returned(timeout):
            await self.terminate()
            return
        await asyncio.gather(*(keeper.close_pools(terminate=False) for keeper in self._keepers))
        self._drop_timers()
        self._closed = True

    async def _wait_all_returned(self, timeout: float | None) -> bool:
        """Wait for every borrowed connection to come back; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._borrowed or self._releases_in_flight:
            wait = CLOSE_WARNING_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    logger.warning(
                        "pgrouter: %r: close() timed out with %d connection(s) still in use;"
                        " terminating them",
                        self,
                        len(self._borrowed) + self._releases_in_flight,
                    )
                    return False
            if not await wait_event(self._all_returned, wait):
                logger.warning(
                    "pgrouter: %r: close() waits for %d connection(s) still in use"
                    " (never given back?)",
                    self,
                    len(self._borrowed) + self._releases_in_flight,
                )
        return True

    async def terminate(self) -> None:
        """Close every connection now, borrowed ones too."""
        if self._started:
            self._check_loop()
        self._closing = True
        await self._listeners.close_all()
        self._transactions.expire_all("the manager was terminated; rolled back")
        await self._stop_checkers()
        borrowed, self._borrowed = list(self._borrowed.values()), {}
        await asyncio.gather(
            *(self._driver.terminate_connection(connection) for connection, _, _ in borrowed),
            return_exceptions=True,
        )
        await asyncio.gather(*(keeper.close_pools(terminate=True) for keeper in self._keepers))
        self._drop_timers()
        self._all_returned.set()
        self._closed = True

    def _drop_timers(self) -> None:
        """The acquire deadlines, stall watches and release bounds go once the pools are closed."""
        for timer in self._stall_timers:
            if timer is not None:
                timer.cancel()
        self._stall_timers = [None] * len(self._hosts)
        self._alarms.close()
        self._releasing.close()

    async def _stop_checkers(self) -> None:
        await self._monitor.stop()

    async def __aenter__(self) -> BasePoolManager[PoolT, ConnT]:
        """Start, and return once every host has had its first check.

        A host that is down does not fail the start (that is what a
        high-availability cluster is for); ``ready()`` waits for more if needed.
        """
        await self.wait_first_checks(timeout=self._refresh_timeout + 10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # A manager dropped unclosed leaves its checks and connections to the
        # garbage collector: say so, once, naming it (as asyncio does for loops).
        if getattr(self, "_started", False) and not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._monitor.abandon()
            _warn(
                f"unclosed {self!r}: call close() or use 'async with'",
                ResourceWarning,
                source=self,
            )


async def _raise(error: BaseException) -> None:
    raise error


async def _nothing() -> None:
    """A release with nothing left to do."""


def _no_longer_usable(host: HostState, snapshot: TopologySnapshot) -> bool:
    """True once ``snapshot`` shows ``host`` down, in another role, fenced or superseded."""
    return not serves(snapshot, host.index, host.role)


def _is_busy(in_use: list[int], listened: ListenedHosts, index: int) -> bool:
    """True while a connection to host ``index`` is handed out or a listener LISTENs
    there (its heartbeat runs then)."""
    return in_use[index] > 0 or index in listened


def _weak_admit(method: weakref.WeakMethod[Admit]) -> Admit:
    """The manager's admission, called through a weak reference (see ``__init__``)."""

    async def admit(index: int, restarted: bool) -> None:
        bound = method()
        if bound is None:
            raise PoolManagerClosedError("the manager was garbage collected")
        await bound(index, restarted)

    return admit


__all__ = ["BasePoolManager"]
