"""A gDBPool-compatible facade: ``DBInteractionPool`` over pgrouter's blocking psycopg2 manager.

gDBPool (a gevent + psycopg2 interaction pool) names pools, runs a SQL string
or a function on the write or the read side and hands back an async result,
holds partial transactions, renders dry runs, and LISTENs into a queue until a
cancel event is set. Here each named pool is a
:class:`pgrouter.sync.psycopg2.PoolManager` over a (multi-host) DSN, so the
same calls follow the cluster's primary through a failover:

- ``run()`` calls the manager's ``run()`` (the same retry rules: a read whose
  host broke runs once more elsewhere, a write never) in a greenlet under
  gevent, returning a ``gevent.event.AsyncResult``; without gevent's monkey
  patching, in a worker thread, returning a :class:`PendingResult` (a
  ``concurrent.futures.Future`` with gevent's ``get(block, timeout)``).
- ``listen_on()`` is ``pm.listen()``: it follows the primary too, and puts a
  :class:`~pgrouter.ListenGap` in the queue when notifications may have been
  missed (gDBPool never knew).

Differences, on purpose: a SQL string's rows are dicts (column -> value), as
pgrouter's ``run()`` returns them; errors are :class:`DBInteractionException`
with the original as ``__cause__``; a ``DBInteractionPool`` is not a
process-wide singleton (gDBPool's was): make one and share it.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .interactions.channels import check_channel
from .interactions.listen import ListenGap
from .interactions.sync_transactions import SyncTransaction
from .sync import green
from .sync.psycopg2 import PoolManager

logger = logging.getLogger("pgrouter.gdbpool")


class DBInteractionException(Exception):
    """What ``run()``'s result raises when the interaction failed (gDBPool's name)."""


class _Queue(Protocol):
    def put(self, item: Any) -> None: ...


class _Event(Protocol):
    def is_set(self) -> bool: ...


class PendingResult(concurrent.futures.Future[Any]):
    """``run()``'s result without gevent: a Future whose ``get()`` blocks, as gevent's."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.result(timeout if block else 0)


def unmarshal_payload(payload: str) -> dict[str, str] | str:
    """gDBPool's payload format ``"key:value|key2:value2"`` as a dict; any other payload as is."""
    pairs = [part.partition(":") for part in payload.split("|")]
    if not payload or any(not separator for _, separator, _ in pairs):
        return payload
    return {key: value for key, _, value in pairs}


class DBInteractionPool:
    """Named pools of one or more clusters; ``run()`` and ``listen_on()`` on them."""

    def __init__(
        self,
        dsn: str,
        pool_size: int = 10,
        pool_name: str = "default",
        do_log: bool = False,
        **manager_kwargs: Any,
    ) -> None:
        """``manager_kwargs`` go to every pool's :class:`~pgrouter.sync.psycopg2.PoolManager`."""
        if do_log and not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        self.do_log = do_log
        self.conn_pools: dict[str, PoolManager] = {}
        self.default_write_pool: str | None = None
        self.default_read_pool: str | None = None
        self.default_pool: str | None = None
        self._manager_kwargs = manager_kwargs
        self._sizes: dict[str, int] = {}  # connections per host, by pool name
        if green.patched():
            _make_psycopg2_green()
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self.add_pool(
            dsn=dsn,
            pool_name=pool_name,
            pool_size=pool_size,
            default_write_pool=True,
            default_read_pool=True,
            default_pool=True,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``ipool(...)`` is ``ipool.run(...)``, as in gDBPool."""
        return self.run(*args, **kwargs)

    # -- pools ----------------------------------------------------------------

    def add_pool(
        self,
        dsn: str | None = None,
        pool_name: str | None = None,
        pool_size: int = 10,
        default_write_pool: bool = False,
        default_read_pool: bool = False,
        default_pool: bool = False,
    ) -> None:
        """Add a named pool: a pgrouter manager over ``dsn`` (every host of a cluster)."""
        if not isinstance(dsn, str) or not dsn:
            raise TypeError("add_pool() needs a DSN string")
        if not isinstance(pool_name, str) or not pool_name:
            raise TypeError("add_pool() needs a pool_name string")
        if pool_name in self.conn_pools:
            raise DBInteractionException(f"already have a pool named {pool_name!r}; not added")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
        self.conn_pools[pool_name] = PoolManager(
            dsn,
            name=pool_name,
            pool_factory_kwargs={"minconn": 0, "maxconn": pool_size},
            **self._manager_kwargs,
        )
        self._sizes[pool_name] = pool_size
        if default_write_pool:
            self.default_write_pool = pool_name
        if default_read_pool:
            self.default_read_pool = pool_name
        if default_pool or self.default_pool is None:
            self.default_pool = pool_name
        if self.do_log:
            logger.info("gdbpool: pool %r added (%d connections per host)", pool_name, pool_size)

    @property
    def pool(self) -> PoolManager:
        """The default pool's manager."""
        assert self.default_pool is not None
        return self.conn_pools[self.default_pool]

    def _manager(self, pool: str | None, is_write: bool) -> PoolManager:
        name = (
            pool
            if pool is not None
            else (self.default_write_pool if is_write else self.default_read_pool)
        )
        if name is None:
            name = self.default_pool
        if name not in self.conn_pools:
            raise DBInteractionException(
                f"no pool named {name!r}; pools: {', '.join(sorted(self.conn_pools))}"
            )
        return self.conn_pools[name]

    # -- run ------------------------------------------------------------------

    def run(
        self,
        interaction: str | Callable[..., Any] | None = None,
        interaction_args: Any = None,
        get_result: bool = True,
        is_write: bool = True,
        pool: str | None = None,
        conn: Any = None,
        cursor: Any = None,
        partial_txn: bool = False,
        dry_run: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run ``interaction`` on the write side (``is_write``) or the read side.

        A SQL string (psycopg2's ``%s`` placeholders, ``interaction_args`` its
        parameters) gives its rows as dicts, or ``True`` with ``get_result=False``;
        a function is called as ``interaction(*args, conn=connection, **kwargs)``
        (plus ``cursor=`` when it takes one). ``partial_txn=True`` gives
        ``{"result", "connection", "cursor"}``: pass that ``connection`` (a held
        transaction with ``commit()`` / ``rollback()``) as ``conn=`` to go on in
        it. ``dry_run=True`` gives the SQL as the server would receive it.
        Returns an async result whose ``get()`` blocks.
        """
        if interaction is None:
            raise TypeError("run() needs an interaction: a SQL string or a function")
        if conn is not None and not isinstance(conn, SyncTransaction):
            raise TypeError(
                "conn= must be the 'connection' of an earlier run(partial_txn=True), got "
                f"{type(conn).__name__}"
            )
        manager = self._manager(pool, is_write)
        step: str | Callable[..., Any]
        if isinstance(interaction, str):
            if args or kwargs:
                raise TypeError("run(): a SQL string takes its parameters in interaction_args")
            step, step_args = interaction, interaction_args
        else:
            step, step_args = _calling_convention(interaction, cursor, args, kwargs), None

        def work() -> Any:
            try:
                outcome = manager.run(
                    step,
                    step_args,
                    read_only=not is_write,
                    get_result=get_result,
                    txn=conn,
                    partial_txn=partial_txn,
                    dry_run=dry_run,
                )
            except Exception as error:
                if self.do_log:
                    logger.info("gdbpool: interaction failed: %s", error)
                raise DBInteractionException(str(error)) from error
            if partial_txn:
                result, txn = outcome
                return {"result": result, "connection": txn, "cursor": cursor}
            return outcome

        return self._submit(work)

    def _submit(self, work: Callable[[], Any]) -> Any:
        """A greenlet and an AsyncResult under gevent; else a worker thread and a PendingResult."""
        if green.patched():
            import gevent
            import gevent.event

            async_result = gevent.event.AsyncResult()

            def in_greenlet() -> None:
                try:
                    async_result.set(work())
                except BaseException as error:
                    async_result.set_exception(error)

            gevent.spawn(in_greenlet)
            return async_result
        if self._threads is None:
            size = sum(self._sizes.values())
            self._threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(size, 1), thread_name_prefix="gdbpool"
            )
        pending = PendingResult()

        def in_thread() -> None:
            if not pending.set_running_or_notify_cancel():
                return
            try:
                pending.set_result(work())
            except BaseException as error:
                pending.set_exception(error)

        self._threads.submit(in_thread)
        return pending

    # -- listen ---------------------------------------------------------------

    def listen_on(
        self,
        result_queue: _Queue | None = None,
        channel_name: str | None = None,
        pool: str | None = None,
        cancel_event: _Event | None = None,
        sleep_cycle: float = 0.1,
        *,
        unmarshaller: Callable[[str], Any] = unmarshal_payload,
    ) -> None:
        """Put each notification's payload on ``channel_name`` into ``result_queue``
        until ``cancel_event`` is set (looked at every ``sleep_cycle`` seconds).

        Blocks (spawn it in a greenlet or a thread, as with gDBPool). Payloads go
        through ``unmarshaller`` (gDBPool's ``key:value|...`` dicts by default);
        after a failover or a lost connection a :class:`~pgrouter.ListenGap`
        comes first. It follows the primary of the write side's cluster.
        """
        if result_queue is None or cancel_event is None:
            raise TypeError("listen_on() needs a result_queue and a cancel_event")
        channel = check_channel(channel_name)
        if isinstance(sleep_cycle, bool) or not isinstance(sleep_cycle, (int, float)):
            raise TypeError(f"sleep_cycle must be seconds, got {sleep_cycle!r}")
        if not sleep_cycle > 0:
            raise ValueError(f"sleep_cycle must be positive, got {sleep_cycle!r}")
        manager = self._manager(pool, is_write=True)
        with manager.listen(channel) as items:
            if self.do_log:
                logger.info("gdbpool: listening on %r", channel)
            while not cancel_event.is_set():
                try:
                    item = items.get(sleep_cycle)
                except StopIteration:
                    break  # the manager was closed
                if item is None:
                    continue
                if isinstance(item, ListenGap):
                    result_queue.put(item)
                else:
                    result_queue.put(unmarshaller(item.payload))
        if self.do_log:
            logger.info("gdbpool: stopped listening on %r", channel)

    # -- life cycle -------------------------------------------------------------

    def close(self) -> None:
        """Close every pool (borrowed connections as they come back) and the worker threads."""
        for manager in self.conn_pools.values():
            manager.close()
        if self._threads is not None:
            self._threads.shutdown(wait=False)

    def __enter__(self) -> DBInteractionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _make_psycopg2_green() -> None:
    """psycopg2 waits through gevent (psycogreen), as gDBPool made it do itself."""
    try:
        import psycogreen.gevent
    except ImportError:  # pragma: no cover - the [gevent] extra installs it
        logger.warning("gdbpool: psycogreen is missing: psycopg2 calls block the hub")
        return
    psycogreen.gevent.patch_psycopg()


def _calling_convention(
    interaction: Callable[..., Any], cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[..., Any]:
    """gDBPool's ``fn(*args, conn=..., [cursor=...], **kwargs)`` as pgrouter's ``fn(conn)``."""
    if not callable(interaction):
        raise TypeError(
            "run(): interaction must be a SQL string or a function, "
            f"got {type(interaction).__name__}"
        )
    try:
        wants_cursor = "cursor" in inspect.signature(interaction).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        wants_cursor = False

    def step(connection: Any) -> Any:
        call_kwargs = dict(kwargs, conn=connection)
        if cursor is not None:
            call_kwargs["cursor"] = cursor
        elif wants_cursor:
            call_kwargs["cursor"] = connection.cursor()
        return interaction(*args, **call_kwargs)

    return step


__all__ = ["DBInteractionException", "DBInteractionPool", "PendingResult", "unmarshal_payload"]
