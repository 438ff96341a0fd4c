"""The blocking face: the async manager's API and decisions, for threads and greenlets.

:class:`BaseSyncPoolManager` routes blocking connections over every host of
one cluster. What the cluster is comes from one
:class:`~pgrouter.monitor.TopologyMonitor` running on a daemon thread of its
own (:mod:`pgrouter.sync.monitor_thread`); which host serves a request comes
from the same routing functions the async manager calls (balancer
eligibility, lag bounds, token plans, pins: :mod:`pgrouter.routing`), so no
decision exists twice. What differs is only how a caller waits: it blocks,
woken by each new snapshot, instead of awaiting.

The data path of an acquire, top to bottom in :meth:`BaseSyncPoolManager._acquire`:
the current snapshot -> the balancer picks a host (or the caller waits for a
snapshot that has one) -> the host's blocking pool hands a connection over
(waiting in slices of :data:`SLICE` while the host stays usable) -> the
connection is recorded with its pool, so it goes back there.

Fork safety: a manager created before ``os.fork()`` (gunicorn ``--preload``,
Celery prefork, multiprocessing) notices the new process id on first use in
the child and starts a fresh monitor and fresh pools. What it inherited is
never touched, not even closed: closing a connection sends a message on a
socket the parent still uses. It is kept referenced, so no finalizer runs.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic

from .. import arguments
from ..balancer_policy import has_eligible_host
from ..dsn import HostDsn, split_dsn
from ..errors import NoHostAvailableError, NotCommittedError, PoolManagerClosedError
from ..interactions.blocking_listen import BlockingListener, BlockingListeners
from ..interactions.channels import check_channel, check_channels, check_payload
from ..interactions.listen import CONNECT_TIMEOUT as LISTEN_CONNECT_TIMEOUT
from ..interactions.listen import DEFAULT_MAX_PENDING, ListenedHosts
from ..interactions.sync_run import run_sync
from ..interactions.sync_transactions import SyncTransaction, open_sync_transaction
from ..interactions.txn_watch import TxnRegistry
from ..monitor import Admit, TopologyMonitor, describe_error
from ..monitor.host_monitor import HostMonitor
from ..readiness import (
    Readiness,
    first_checks_done,
    no_host_error,
    one_more_check,
    raise_rejected_pool_kwargs,
)
from ..routing.consistency import (
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
from ..routing.reads import ReadRule
from ..routing.requests import check_write_arguments, resolve_pool_pick, resolve_read
from ..routing.tokens import WRITE_TOKEN_QUERY, WriteToken, token_from_row
from ..settings import ManagerOptions, manager_settings
from ..topology import (
    HostRole,
    HostState,
    TopologyBoard,
    TopologySnapshot,
    checked_since,
    newly_cut,
    newly_failed,
    serves,
)
from . import green
from .driver import ConnT, PoolT, SyncDriver
from .monitor_thread import MonitorThread
from .pool_keeper import SyncPoolKeeper

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("pgrouter")

#: A caller waiting on a full pool looks at the host's state this often (seconds).
SLICE = 0.1

#: What forked children inherited and must never touch (see the module docstring).
_INHERITED: list[object] = []

#: Forks of this process so far: a state made before the last fork is the parent's.
#: (One integer compare per call instead of os.getpid().)
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Borrowed(Generic[ConnT]):
    """A connection handed out: the driver's connection, and ``with`` gives it back.

    ``with pm.acquire_master() as conn:`` gives the driver's own connection and
    releases it at the end of the block (psycopg's commit or rollback first).
    ``conn = pm.acquire_master()`` keeps this object, which passes attribute
    access to the connection; give it back with ``pm.release(conn)``.
    """

    __slots__ = ("_manager", "connection")

    def __init__(self, manager: BaseSyncPoolManager[Any, ConnT], connection: ConnT) -> None:
        self._manager = manager
        self.connection = connection

    def __enter__(self) -> ConnT:
        return self.connection

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._manager._give_back(self.connection, exc, block=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)

    def __repr__(self) -> str:
        return f"<Borrowed {self.connection!r}>"


class _ProcessState(Generic[PoolT, ConnT]):
    """Everything of a manager that belongs to one process (see the module docstring)."""

    def __init__(self, manager: BaseSyncPoolManager[PoolT, ConnT]) -> None:
        self.pid = os.getpid()
        self.generation = _forks
        hosts = manager._hosts
        self.callers = green.CallerSide()
        self.keepers = [
            SyncPoolKeeper(
                index=index,
                dsn=host,
                driver=manager._driver,
                pool_kwargs=manager._pool_kwargs,
                callers=self.callers,
            )
            for index, host in enumerate(hosts)
        ]
        self.in_use = [0] * len(hosts)
        # Hosts this process's listeners LISTEN on (written and read on the
        # monitor's loop): work for the heartbeat, as in_use (see _weak_busy).
        self.listened = ListenedHosts()
        # Per host: connections given back, so a stalled pool is told from a busy one.
        self.returned = [0] * len(hosts)
        # Per host: callers waiting on its full pool, so that with every pool full
        # the greedy balancer sends the next one to the shortest queue (as async).
        self.queued = [0] * len(hosts)
        # Per host: when a waiter last asked for a stall check (one per SLICE, not one per waiter).
        self.stall_checked = [float("-inf")] * len(hosts)
        # id(connection) -> (connection, its pool, its host's index)
        self.borrowed: dict[int, tuple[ConnT, PoolT, int]] = {}
        self.reads_on_primary: set[int] = set()
        self.lock = green.original_lock()
        self.unusable: frozenset[int] = frozenset()
        self._free_size_of_pool = manager._driver.free_size
        # Set by started(), once the monitor runs: read on every acquire.
        self.board: TopologyBoard | None = None
        self.host_monitors: list[HostMonitor] = []
        weak = weakref.ref(self)
        self.thread = MonitorThread(
            functools.partial(manager._make_monitor, _weak_admit(weak), _weak_busy(weak)),
            name=f"pgrouter-monitor-{manager._name}",
        )

    def started(self) -> TopologyMonitor:
        """Keep what every acquire reads of the running monitor at hand."""
        monitor = self.thread.monitor
        assert monitor is not None
        self.board = monitor.board
        self.host_monitors = list(monitor.hosts)
        return monitor

    def free_size(self, host: HostState) -> int:
        """The balancer's measure of a host: free connections minus callers queued."""
        pool = self.keepers[host.index].pool
        return 0 if pool is None else self._free_size_of_pool(pool) - self.queued[host.index]


class BaseSyncPoolManager(Generic[PoolT, ConnT]):
    """Routes blocking connections over every host of one cluster (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        driver: SyncDriver[PoolT, ConnT],
        **options: Unpack[ManagerOptions],
    ) -> None:
        self._hosts: list[HostDsn] = split_dsn(dsn)
        self._driver = driver
        settings = manager_settings(type(self).__name__, **options)
        self._settings = settings
        # Transactions held over several calls (run(partial_txn=True), transaction()).
        self._txn_timeout = settings.txn_timeout
        self._transactions = TxnRegistry(green.original_lock())
        self._acquire_timeout = settings.acquire_timeout
        self._balancer = settings.balancer
        self._read_defaults = settings.read_defaults
        self._name = settings.name
        self._causal_wait = settings.causal_wait
        self._refresh_timeout = settings.refresh_timeout
        self._pool_kwargs = settings.pool_kwargs
        self._token_reads = dict.fromkeys(TOKEN_READ_KINDS, 0)
        self._state_lock = threading.Lock()  # greenlets wait on it under gevent
        self._process: _ProcessState[PoolT, ConnT] | None = None
        self._closed = False
        self._listeners = BlockingListeners()  # pm.listen()'s, ended by close()

    def __repr__(self) -> str:
        hosts = ",".join(host.address for host in self._hosts)
        return f"<{type(self).__name__} hosts={hosts} driver={self._driver.name}>"

    # -- the process's state, and the monitor ---------------------------------

    def _state(self) -> _ProcessState[PoolT, ConnT]:
        """This process's monitor and pools, started on first use (again after a fork)."""
        state = self._process
        if state is not None and state.generation == _forks:
            return state
        with self._state_lock:
            state = self._process
            if state is None or state.generation != _forks:
                if self._closed:
                    raise PoolManagerClosedError(f"{self!r} is closed")
                if state is not None:
                    _INHERITED.append(state)  # the parent's: never touched here
                state = _ProcessState(self)
                state.thread.start()
                state.started().board.listen(functools.partial(_on_topology, weakref.ref(state)))
                self._process = state  # last: a racing caller sees it only once it runs
        return state

    def _make_monitor(self, admit: Admit, busy: Any) -> TopologyMonitor:
        """Built on the monitor's own thread and loop (its tasks belong there)."""
        return TopologyMonitor(
            self._hosts,
            driver=self._driver.probe_driver(),
            admit=admit,
            refresh_delay=self._settings.refresh_delay,
            refresh_timeout=self._refresh_timeout,
            stopwatch_window_size=self._settings.stopwatch_window_size,
            event_driven_checks=self._settings.event_driven_checks,
            primary_heartbeat=self._settings.primary_heartbeat,
            busy=busy,
        )

    def _monitor(self) -> TopologyMonitor:
        monitor = self._state().thread.monitor
        assert monitor is not None
        return monitor

    # -- state --------------------------------------------------------------

    @property
    def topology(self) -> TopologySnapshot:
        return self._state().thread.current

    @property
    def hosts(self) -> list[HostDsn]:
        return list(self._hosts)

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pools(self) -> list[PoolT | None]:
        return [keeper.pool for keeper in self._state().keepers]

    @property
    def token_read_counts(self) -> dict[str, int]:
        return dict(self._token_reads)

    # -- acquire ------------------------------------------------------------

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
    ) -> Borrowed[ConnT]:
        """A connection to the primary, or (``read_only``) to a replica: as the async
        manager's ``acquire()``, blocking (see :class:`Borrowed`)."""
        if not read_only:
            check_write_arguments(master_as_replica_weight, max_lag_bytes, max_lag_seconds, after)
            return self.acquire_master(timeout)
        return self.acquire_replica(
            fallback_master,
            master_as_replica_weight,
            timeout,
            max_lag_bytes=max_lag_bytes,
            max_lag_seconds=max_lag_seconds,
            after=after,
        )

    def acquire_master(self, timeout: float | None = None) -> Borrowed[ConnT]:
        if timeout is None and not self._closed:
            seconds = self._acquire_timeout  # the common case, without a call
        else:
            seconds = self._timeout(timeout)
        return Borrowed(self, self._acquire(False, False, 0.0, seconds, None))

    def acquire_replica(
        self,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        *,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        after: WriteToken | None = None,
    ) -> Borrowed[ConnT]:
        if timeout is None and not self._closed:
            seconds = self._acquire_timeout  # the common case, without a call
        else:
            seconds = self._timeout(timeout)
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
            return Borrowed(self, self._acquire(False, False, 0.0, seconds, None))
        fallback, weight, rule = (
            request.fallback_master,
            request.master_as_replica_weight,
            request.rule,
        )
        if request.after is not None:
            connection = self._acquire_after(request.after, fallback, weight, seconds, rule)
            return Borrowed(self, connection)
        return Borrowed(self, self._acquire(True, fallback, weight, seconds, rule))

    def _timeout(self, timeout: float | None) -> float:
        if self._closed:
            raise PoolManagerClosedError(f"{self!r} is closed")
        if timeout is None:
            return self._acquire_timeout
        return arguments.seconds("timeout", timeout, zero=True)

    def _pick(
        self,
        snapshot: TopologySnapshot,
        read_only: bool,
        fallback_master: bool,
        weight: float,
        rule: ReadRule | None,
        state: _ProcessState[PoolT, ConnT],
    ) -> HostState | None:
        return self._balancer.pick(
            snapshot,
            read_only=read_only,
            fallback_master=fallback_master,
            master_as_replica_weight=weight,
            free_size=state.free_size,
            rule=rule,
        )

    def _acquire(
        self,
        read_only: bool,
        fallback_master: bool,
        weight: float,
        timeout: float,
        rule: ReadRule | None,
    ) -> ConnT:
        state = self._state()
        thread = state.thread
        board = state.board
        assert board is not None
        deadline = time.monotonic() + timeout
        failures: dict[int, str] = {}
        while True:
            if self._closed:
                raise PoolManagerClosedError(f"{self!r} is closed")
            snapshot = board.current
            host = self._pick(snapshot, read_only, fallback_master, weight, rule, state)
            pool = None if host is None else state.keepers[host.index].pool
            if host is None or pool is None:
                try:
                    thread.wait_for(
                        functools.partial(
                            _newer_with_host,
                            snapshot.version,
                            read_only=read_only,
                            fallback_master=fallback_master,
                            master_as_replica_weight=weight,
                            rule=rule,
                        ),
                        max(deadline - time.monotonic(), 0),
                    )
                except TimeoutError:
                    raise self._no_host_error(
                        read_only, fallback_master, timeout, failures, rule
                    ) from None
                continue
            try:
                connection = self._take(pool, host, deadline, state)
            except TimeoutError:
                failures[host.index] = "no free connection in its pool"
                raise self._no_host_error(read_only, fallback_master, timeout, failures) from None
            except Exception as error:
                if _closed_pool(error):
                    # Cut or rebuilt under us: the snapshot that did it is out
                    # already; waiting for a check of a frozen host would not end.
                    failures[host.index] = "its pool was closed while we waited for it"
                    continue
                if not self._driver.is_host_error(error):
                    raise
                failures[host.index] = describe_error(error)
                self._check_now(host.index)
                try:
                    thread.wait_for(
                        functools.partial(checked_since, host),
                        max(deadline - time.monotonic(), 0),
                    )
                except TimeoutError:
                    raise self._no_host_error(
                        read_only, fallback_master, timeout, failures
                    ) from None
                continue
            if connection is None:
                failures[host.index] = "left the rotation while we waited for its pool"
                continue
            index = host.index
            with state.lock:
                if pool is not state.keepers[index].pool:
                    cut = True  # cut (superseded) or replaced while handing it over
                else:
                    cut = False
                    state.borrowed[id(connection)] = (connection, pool, index)
                    state.in_use[index] += 1
                    first = state.in_use[index] == 1
                    if read_only and host.role is HostRole.PRIMARY:
                        state.reads_on_primary.add(id(connection))
            if cut:
                self._driver.abort(connection)
                self._discard(pool, connection)
                failures[index] = "its pool was cut while we waited for it"
                continue
            if first:
                host_monitor = state.host_monitors[index]
                if host_monitor.sleeping_idle:  # else its heartbeat runs anyway: no wake-up
                    thread.soon(host_monitor.work_started)
            return connection

    def _take(
        self,
        pool: PoolT,
        host: HostState,
        deadline: float,
        state: _ProcessState[PoolT, ConnT],
    ) -> ConnT | None:
        """A connection from ``host``'s pool; ``None`` once the host stops serving its role.

        In slices of :data:`SLICE`: between them the caller reads the current
        snapshot (a blocking pool's wait cannot be ended from outside).
        """
        queued = self._driver.free_size(pool) <= 0  # a wait: counted for the balancer
        if queued:
            with state.lock:
                state.queued[host.index] += 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                returned = state.returned[host.index]
                try:
                    return self._driver.acquire(pool, max(min(remaining, SLICE), 0))
                except TimeoutError:
                    if remaining <= SLICE:
                        raise
                if not serves(state.thread.current, host.index, host.role):
                    return None
                if state.returned[host.index] == returned:
                    # Full, and nothing came back for a whole slice: stuck on a frozen server?
                    # Asked by the first waiter of a slice; the others would ask it again.
                    now = time.monotonic()
                    if now - state.stall_checked[host.index] >= SLICE:
                        state.stall_checked[host.index] = now
                        self._check_now(host.index)
        finally:
            if queued:
                with state.lock:
                    state.queued[host.index] -= 1

    def _acquire_after(
        self,
        token: WriteToken,
        fallback_master: bool,
        weight: float,
        timeout: float,
        rule: ReadRule | None,
    ) -> ConnT:
        """A host that has replayed ``token``: the plan every face follows (routing)."""
        deadline = time.monotonic() + timeout
        plan = plan_token_read(self._state().thread.current, token, rule)
        if plan.ignore:
            self._token_reads["ignored"] += 1
            return self._acquire(True, fallback_master, weight, timeout, rule)
        if plan.first is not None:
            self._token_reads["replica"] += 1
            return self._acquire(True, False, 0.0, timeout, plan.first)
        if plan.nearest is not None:
            connection = self._acquire(True, False, 0.0, timeout, plan.nearest)
            wait = min(self._causal_wait, max(deadline - time.monotonic(), 0))
            try:
                caught_up = self._replayed(connection, token, wait)
            except BaseException:
                self._give_back(connection, None)
                raise
            if caught_up:
                self._token_reads["replica_after_wait"] += 1
                return connection
            self._give_back(connection, None)
        self._token_reads["primary"] += 1
        return self._acquire(False, False, 0.0, max(deadline - time.monotonic(), 0), None)

    def _replayed(self, connection: ConnT, token: WriteToken, wait: float) -> bool:
        deadline = time.monotonic() + wait
        query = replayed_query(token)
        pause = CAUSAL_POLL_FIRST
        while True:
            row = self._driver.fetch_row(connection, query)
            if row and row[0]:
                return True
            if time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, CAUSAL_POLL_MAX)

    def _no_host_error(
        self,
        read_only: bool,
        fallback_master: bool,
        timeout: float,
        failures: dict[int, str],
        rule: ReadRule | None = None,
    ) -> NoHostAvailableError:
        self._raise_config_error()  # not an outage: no host will ever do
        return no_host_error(self.topology, read_only, fallback_master, timeout, failures, rule)

    # -- release ------------------------------------------------------------

    def release(self, connection: Any) -> None:
        """Give back a connection from ``conn = pm.acquire()``, to the pool it came from."""
        if isinstance(connection, Borrowed):
            connection = connection.connection
        state = self._state()
        if id(connection) not in state.borrowed:
            if self._closed:
                return
            raise ValueError(
                f"release() got a connection this manager did not hand out: {connection!r}"
            )
        self._give_back(connection, None)

    def _give_back(
        self, connection: ConnT, error: BaseException | None, block: bool = False
    ) -> None:
        """The end of a connection's use: commit or roll back, record a position, release."""
        state = self._state()
        held = state.borrowed.get(id(connection))
        if held is None:
            return  # terminate() closed it
        index = held[2]
        failure: BaseException | None = None
        if not block:
            pass
        elif index in state.unusable:
            # Its host left the rotation: no COMMIT (nor ROLLBACK) through a
            # socket that may never answer; the release below cuts it.
            if error is None and self._driver.pending_commit(connection):
                failure = NotCommittedError.on(self.topology.hosts[index].address)
        else:
            try:
                self._driver.end_of_use(connection, error)
            except BaseException as ending_error:
                failure = ending_error
        scope = current_scope()
        if scope is not None and failure is None and error is None:
            self._note_position(connection, index, scope, state)
        with state.lock:
            record = state.borrowed.pop(id(connection), None)
            if record is None:
                return
            state.in_use[index] -= 1
            state.returned[index] += 1
            state.reads_on_primary.discard(id(connection))
            unusable = index in state.unusable
        pool = record[1]
        if unusable:
            self._driver.abort(connection)
            self._discard(pool, connection)
        else:
            if (error is not None and self._driver.is_host_error(error)) or self._driver.is_closed(
                connection
            ):
                self._check_now(index)
            self._driver.release(pool, connection)
        if failure is not None:
            raise failure

    def _discard(self, pool: PoolT, connection: ConnT) -> None:
        """Give back a connection whose socket was cut: closed, so its pool drops it."""
        try:
            close = getattr(connection, "close", None)
            if close is not None:
                close()
            self._driver.release(pool, connection)
        except Exception as error:  # its pool is closing, or it was gone already
            logger.debug("pgrouter: giving back a cut connection: %r", error)

    def _note_position(
        self,
        connection: ConnT,
        index: int,
        scope: ReadYourWrites,
        state: _ProcessState[PoolT, ConnT],
    ) -> None:
        """Record in ``scope`` where this connection's host is (as the async face)."""
        snapshot = state.thread.current
        query = position_query(scope, snapshot, index, id(connection) in state.reads_on_primary)
        if query is None:
            return
        try:
            row = self._driver.fetch_row(connection, query)
            note_position(scope, snapshot, index, query, row)
        except Exception as error:
            position_lost(scope, snapshot, index)
            logger.debug("pgrouter: no position for read-your-writes: %r", error)

    def write_token(self, connection: Any) -> WriteToken:
        """The token of what a primary connection wrote so far (after its commit)."""
        if isinstance(connection, Borrowed):
            connection = connection.connection
        state = self._state()
        record = state.borrowed.get(id(connection))
        if record is None:
            raise ValueError("write_token() takes a connection this manager handed out")
        snapshot = state.thread.current
        if not snapshot.is_primary(snapshot.hosts[record[2]]):
            raise ValueError("write_token() needs a connection to the primary")
        token = token_from_row(self._driver.fetch_row(connection, WRITE_TOKEN_QUERY))
        scope = current_scope()
        if scope is not None:
            scope.remember(token)
        return token

    def _check_now(self, index: int) -> None:
        state = self._process
        if state is not None and state.thread.monitor is not None:
            state.thread.soon(state.thread.monitor.request_check, index)

    # -- pool-level API -------------------------------------------------------

    def get_pool(
        self,
        read_only: bool,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        *,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
    ) -> PoolT | None:
        """The pool the balancer would pick now, or ``None`` (does not wait)."""
        if self._closed:
            raise PoolManagerClosedError(f"{self!r} is closed")
        state = self._state()
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
            state.thread.current,
            not request.to_primary,
            request.fallback_master,
            request.master_as_replica_weight,
            request.rule,
            state,
        )
        return None if host is None else state.keepers[host.index].pool

    def get_master_pools(self) -> list[PoolT]:
        state = self._state()
        pools = [state.keepers[host.index].pool for host in state.thread.current.primaries]
        return [pool for pool in pools if pool is not None]

    def get_replica_pools(self, fallback_master: bool = False) -> list[PoolT]:
        state = self._state()
        snapshot = state.thread.current
        hosts = snapshot.replicas or (snapshot.primaries if fallback_master else [])
        pools = [state.keepers[host.index].pool for host in hosts]
        return [pool for pool in pools if pool is not None]

    def get_pool_freesize(self, pool: PoolT) -> int:
        return self._driver.free_size(pool)

    def is_connection_closed(self, connection: Any) -> bool:
        if isinstance(connection, Borrowed):
            connection = connection.connection
        return self._driver.is_closed(connection)

    # -- pool-level API: the rest of the async manager's names, blocking ------------

    @property
    def available_pool_count(self) -> int:
        snapshot = self.topology
        return len(snapshot.primaries) + len(snapshot.replicas)

    @property
    def master_pool_count(self) -> int:
        return len(self.topology.primaries)

    @property
    def replica_pool_count(self) -> int:
        return len(self.topology.replicas)

    def pool_is_master(self, pool: PoolT) -> bool:
        host = self._host_of_pool(pool)
        return host is not None and self.topology.is_primary(host)

    def pool_is_replica(self, pool: PoolT) -> bool:
        host = self._host_of_pool(pool)
        return host is not None and self.topology.is_replica(host)

    def get_last_response_time(self, pool: PoolT) -> float | None:
        """Median probe time (seconds) of the pool's host over the stopwatch window."""
        host = self._host_of_pool(pool)
        return None if host is None else host.latency

    def acquire_from_pool(self, pool: PoolT, timeout: float | None = None) -> Borrowed[ConnT]:
        """A connection from this very pool, whatever its host's role."""
        index = self._index_of_pool(pool)
        connection = self._driver.acquire(pool, self._timeout(timeout))
        self.register_connection(connection, pool, _index=index)
        return Borrowed(self, connection)

    def release_to_pool(self, connection: Any, pool: PoolT) -> None:
        """Give ``connection`` back to ``pool``; one the manager never recorded, too."""
        if isinstance(connection, Borrowed):
            connection = connection.connection
        record = self._state().borrowed.get(id(connection))
        if record is None:
            self._driver.release(pool, connection)  # taken from the driver's pool directly
        elif record[1] is not pool:
            raise ValueError("release_to_pool(): the connection came from another pool")
        else:
            self._give_back(connection, None)

    def register_connection(
        self, connection: ConnT, pool: PoolT, *, _index: int | None = None
    ) -> None:
        """Record a connection taken from ``pool`` so ``release(connection)`` finds its pool."""
        index = self._index_of_pool(pool) if _index is None else _index
        state = self._state()
        with state.lock:
            first = False
            if id(connection) not in state.borrowed:
                state.in_use[index] += 1
                first = state.in_use[index] == 1
            state.borrowed[id(connection)] = (connection, pool, index)
        if first:  # the primary's heartbeat runs while its connections are in use
            host_monitor = self._monitor().hosts[index]
            if host_monitor.sleeping_idle:
                state.thread.soon(host_monitor.work_started)

    def _index_of_pool(self, pool: object) -> int:
        for keeper in self._state().keepers:
            if keeper.pool is pool:
                return keeper.index
        raise ValueError(f"{pool!r} is not a pool of this manager")

    def _host_of_pool(self, pool: object) -> HostState | None:
        for keeper in self._state().keepers:
            if keeper.pool is pool:
                return self.topology.hosts[keeper.index]
        return None

    # -- run(), transactions and dry runs (pgrouter.interactions.sync_run) ----------

    def run(
        self,
        interaction: str | Callable[..., Any],
        args: Any = None,
        *,
        read_only: bool = False,
        get_result: bool = True,
        txn: SyncTransaction | None = None,
        partial_txn: bool = False,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The blocking ``run()``: the async manager's, same arguments and rules
        (see :meth:`pgrouter.manager.BasePoolManager.run`)."""
        return run_sync(
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

    def transaction(self, read_only: bool = False) -> SyncTransaction:
        """An open transaction: ``with pm.transaction() as txn:`` commits a clean block,
        rolls back on error; or keep it and ``commit()`` / ``rollback()`` yourself."""
        return open_sync_transaction(self, read_only)

    # -- readiness ----------------------------------------------------------

    def ready(
        self,
        masters_count: int | None = None,
        replicas_count: int | None = None,
        timeout: float | None = 10,
    ) -> None:
        """Wait until that many primaries and replicas are usable (default: every host)."""
        if self._closed:
            raise PoolManagerClosedError(f"{self!r} is closed")
        arguments.optional_seconds("timeout", timeout, zero=True)
        readiness = Readiness(masters_count, replicas_count, self._config_error)
        try:
            self._state().thread.wait_for(readiness, timeout)
        except TimeoutError:
            raise readiness.timed_out(timeout or 0, self.topology) from None
        self._raise_config_error()

    def wait_all_ready(self) -> None:
        self.ready(timeout=None)

    def wait_masters_ready(self, masters_count: int) -> None:
        self.ready(masters_count=masters_count, replicas_count=0, timeout=None)

    def wait_replicas_ready(self, replicas_count: int) -> None:
        self.ready(masters_count=0, replicas_count=replicas_count, timeout=None)

    def wait_next_pool_check(self, timeout: float = 10) -> None:
        self._state().thread.wait_for(one_more_check(self.topology), timeout)

    def wait_first_checks(self, timeout: float | None = None) -> None:
        self._state().thread.wait_for(first_checks_done, timeout)
        self._raise_config_error()

    def _config_error(self) -> Exception | None:
        state = self._process
        if state is None:
            return None
        for keeper in state.keepers:
            if keeper.config_error is not None:
                return keeper.config_error
        return None

    def _raise_config_error(self) -> None:
        raise_rejected_pool_kwargs(self._driver.name, self._config_error())

    # -- LISTEN/NOTIFY (pgrouter.interactions.blocking_listen) ---------------

    def listen(self, *channels: str, max_pending: int = DEFAULT_MAX_PENDING) -> BlockingListener:
        """``for item in pm.listen("jobs")``: notifications, following the primary.

        A blocking iterator of :class:`Notification` and, after a failover or a
        lost connection, a :class:`ListenGap` first; ``close()`` ends it. ``with``
        waits for the first LISTEN up to the acquire timeout plus a connect.
        Past ``max_pending`` items not taken, they are dropped for a gap.
        """
        checked = check_channels(channels)
        state = self._state()
        listener = BlockingListener(
            state.thread,
            self._driver.probe_driver().connect_listener,
            checked,
            self._listeners.forget,
            start_timeout=self._acquire_timeout + LISTEN_CONNECT_TIMEOUT,
            max_pending=max_pending,
            listened=state.listened,
        )
        return self._listeners.add(listener)

    def notify(self, channel: str, payload: str = "", timeout: float | None = None) -> None:
        """``pg_notify(channel, payload)`` on the primary (channel name exact)."""
        check_channel(channel)
        check_payload(payload)
        with self.acquire_master(timeout=timeout) as connection:
            self._driver.notify(connection, channel, payload)

    # -- life cycle ---------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """No new acquires; wait for borrowed connections (up to ``timeout``), close the pools."""
        if self._closed:
            return
        self._closed = True
        state = self._process
        if state is None or state.pid != os.getpid():
            return
        self._listeners.close_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        warned = time.monotonic()
        while state.borrowed:
            if deadline is not None and time.monotonic() >= deadline:
                logger.warning(
                    "pgrouter: %r: close() timed out with %d connection(s) still in use",
                    self,
                    len(state.borrowed),
                )
                break
            if time.monotonic() - warned > 5:
                warned = time.monotonic()
                logger.warning(
                    "pgrouter: %r: close() waits for %d connection(s) still in use",
                    self,
                    len(state.borrowed),
                )
            time.sleep(0.01)
        state.thread.stop()
        for keeper in state.keepers:
            keeper.close()

    def terminate(self) -> None:
        """Close everything now, borrowed connections too."""
        self._closed = True
        state = self._process
        if state is None or state.pid != os.getpid():
            return
        self._listeners.close_all()
        self._transactions.expire_all("the manager was terminated; rolled back")
        with state.lock:
            borrowed, state.borrowed = list(state.borrowed.values()), {}
        for connection, _, _ in borrowed:
            self._driver.abort(connection)
        state.thread.stop()
        for keeper in state.keepers:
            keeper.close()

    def __enter__(self) -> BaseSyncPoolManager[PoolT, ConnT]:
        self._state()
        self.wait_first_checks(timeout=self._refresh_timeout + 10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _on_topology(
    state_ref: weakref.ref[_ProcessState[Any, Any]],
    old: TopologySnapshot,
    new: TopologySnapshot,
) -> None:
    """In the monitor's thread, the instant a snapshot is published (see the async twin)."""
    state = state_ref()
    if state is None:
        return
    for index in newly_failed(old, new):
        state.keepers[index].host_failed()
    state.unusable = new.unusable
    for index in newly_cut(old, new):
        with state.lock:
            # The pool goes first, under the lock _acquire records under: a
            # connection handed over from now on is refused there, never missed here.
            state.keepers[index].cut()
            borrowed = [record for record in state.borrowed.values() if record[2] == index]
        logger.warning(
            "pgrouter: %s: cutting its connections (%d in use): %s",
            new.hosts[index].address,
            len(borrowed),
            new.describe_host(new.hosts[index]),
        )
        for connection, _, _ in borrowed:
            try:
                state.keepers[index]._driver.abort(connection)
            except Exception as error:
                logger.debug("pgrouter: aborting a connection failed: %r", error)


def _newer_with_host(version: int, snapshot: TopologySnapshot, **request: Any) -> bool:
    """A snapshot newer than ``version`` on which this request finds a host."""
    return snapshot.version > version and has_eligible_host(snapshot, **request)


def _closed_pool(error: BaseException) -> bool:
    """A pool closed under a waiting caller (its host was cut): route again."""
    return type(error).__name__ == "PoolClosed"


def _weak_admit(state_ref: weakref.ref[_ProcessState[Any, Any]]) -> Admit:
    async def admit(index: int, restarted: bool) -> None:
        state = state_ref()
        if state is None:
            raise PoolManagerClosedError("the manager was garbage collected")
        await state.callers.run(functools.partial(state.keepers[index].admit, restarted))

    return admit


def _weak_busy(state_ref: weakref.ref[_ProcessState[Any, Any]]) -> Any:
    def busy(index: int) -> bool:
        state = state_ref()
        return state is not None and (state.in_use[index] > 0 or index in state.listened)

    return busy


__all__ = ["BaseSyncPoolManager", "Borrowed"]
