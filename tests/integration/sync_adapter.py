"""A blocking manager (``pgrouter.sync``) seen through the async API the conformance suite uses.

The conformance suite (test_manager_api.py, test_consistency.py,
test_topology_changes.py) is written once, against the async manager's API.
:class:`SyncManagerAdapter` lets the same tests drive a sync manager: every
call that may block (acquire, release, ready, close, queries through
:mod:`helpers`) runs in a worker thread, so the test's event loop keeps
running the other tasks of a test while one of them waits, as it does with an
async manager. Each worker call runs in a copy of the calling task's context,
as ``asyncio.to_thread`` does: pins and read-your-writes scopes set by a task
are what the sync manager sees in the thread serving it.

The adapter translates and hides nothing else: every decision (routing,
waits, timeouts, errors and their messages, closing) is the sync manager's
own, and an attribute the adapter does not translate is the sync manager's
(``pm.topology``, ``pm.pools``, ``pm.closed``...; set, too). A method the
sync face lacks fails the test as it would fail a user.

What the adapter cannot translate is cancellation: a blocking call cannot be
interrupted. Tests that cancel tasks mid-call are marked ``async_only`` (see
tests/conftest.py) and their thread-based twins live in test_sync.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

#: Worker threads for the blocking calls. asyncio's default executor has
#: cpu_count + 4 threads: a test whose waiters fill it (ten acquires queued on
#: full pools) would leave no thread for the releases that serve them. Threads
#: start only as calls need them; the largest test runs 200 tasks at once.
_WORKERS = ThreadPoolExecutor(max_workers=300, thread_name_prefix="sync-adapter")


async def run_blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a worker thread, in a copy of this task's context."""
    return await run_in_context(contextvars.copy_context(), function, *args, **kwargs)


async def run_in_context(
    context: contextvars.Context, function: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """``function(*args, **kwargs)`` in a worker thread, in ``context``."""
    call = functools.partial(context.run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_WORKERS, call)


class SyncConnection:
    """A connection a sync manager handed out, as a test holds it.

    ``raw`` is the driver's connection (psycopg 3 or psycopg2); ``borrowed`` the
    sync manager's :class:`~pgrouter.sync.manager.Borrowed` for it, whose
    ``__exit__`` ends an ``async with`` exactly as it ends a ``with``.
    helpers.fetchval/execute recognise this class (kind ``sync``).
    """

    __slots__ = ("borrowed", "raw")

    def __init__(self, borrowed: Any) -> None:
        self.borrowed = borrowed
        self.raw = borrowed.connection

    def __repr__(self) -> str:
        return f"<SyncConnection {self.raw!r}>"


def unwrap(connection: Any) -> Any:
    """The driver's connection behind what a test holds (a raw one passes through)."""
    return connection.raw if isinstance(connection, SyncConnection) else connection


class Acquiring:
    """What ``acquire*()`` returns: ``await`` it, or use it as ``async with``.

    Awaited, it gives a :class:`SyncConnection` to be given back with
    ``await pm.release(conn)``; as a context manager, the connection is given
    back (committed or rolled back by the sync face) when the block ends. The
    sync manager's call, argument checks included, runs when awaited or entered,
    in the context of the ``acquire*()`` call: the async manager resolves a
    read-your-writes scope or a pin when called, and ``reading =
    pm.acquire_replica()`` inside a scope, entered after it, reads in it.
    """

    def __init__(self, call: Callable[[], Any]) -> None:
        self._call = call
        self._context = contextvars.copy_context()
        self._connection: SyncConnection | None = None

    async def _acquire(self) -> SyncConnection:
        future = asyncio.ensure_future(run_in_context(self._context, self._call))
        try:
            return SyncConnection(await asyncio.shield(future))
        except asyncio.CancelledError:
            # The thread goes on blocking; what it gets must not leak from the adapter.
            future.add_done_callback(_give_back_late)
            raise

    def __await__(self) -> Generator[Any, None, SyncConnection]:
        return self._acquire().__await__()

    async def __aenter__(self) -> SyncConnection:
        self._connection = await self._acquire()
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        await run_blocking(self._connection.borrowed.__exit__, exc_type, exc, tb)


def _give_back_late(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        borrowed = future.result()
        _WORKERS.submit(borrowed.__exit__, None, None, None)


class SyncDriverAdapter:
    """The sync manager's driver, with the blocking pool calls the tests await."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    async def acquire(self, pool: Any, timeout: float) -> Any:
        return await run_blocking(self._driver.acquire, pool, timeout)

    async def release(self, pool: Any, connection: Any) -> None:
        await run_blocking(self._driver.release, pool, unwrap(connection))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


class SyncManagerAdapter:
    """A sync manager behind the async manager's API (see the module docstring)."""

    def __init__(self, manager_cls: type[Any], dsn: str, **kwargs: Any) -> None:
        self.sync = manager_cls(dsn, **kwargs)
        self._driver = SyncDriverAdapter(self.sync._driver)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sync, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A test that wraps a manager's method (pm._check_now = counted) wraps the
        # sync manager's own, which its blocking calls then use.
        if name in ("sync", "_driver"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.sync, name, value)

    def __repr__(self) -> str:
        return f"<SyncManagerAdapter {self.sync!r}>"

    async def __aenter__(self) -> SyncManagerAdapter:
        await run_blocking(self.sync.__enter__)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await run_blocking(self.sync.__exit__, *exc_info)

    # -- acquire and release -------------------------------------------------

    def acquire(self, *args: Any, **kwargs: Any) -> Acquiring:
        return Acquiring(functools.partial(self.sync.acquire, *args, **kwargs))

    def acquire_master(self, *args: Any, **kwargs: Any) -> Acquiring:
        return Acquiring(functools.partial(self.sync.acquire_master, *args, **kwargs))

    def acquire_replica(self, *args: Any, **kwargs: Any) -> Acquiring:
        return Acquiring(functools.partial(self.sync.acquire_replica, *args, **kwargs))

    def acquire_from_pool(self, pool: Any, **kwargs: Any) -> Acquiring:
        return Acquiring(functools.partial(self.sync.acquire_from_pool, pool, **kwargs))

    async def release(self, connection: Any) -> None:
        await run_blocking(self.sync.release, unwrap(connection))

    async def release_to_pool(self, connection: Any, pool: Any) -> None:
        await run_blocking(self.sync.release_to_pool, unwrap(connection), pool)

    def register_connection(self, connection: Any, pool: Any) -> None:
        self.sync.register_connection(unwrap(connection), pool)

    def is_connection_closed(self, connection: Any) -> bool:
        return bool(self.sync.is_connection_closed(unwrap(connection)))

    async def write_token(self, connection: Any) -> Any:
        return await run_blocking(self.sync.write_token, unwrap(connection))

    # -- pools (they never block: plain calls, awaitable as in the async API) --

    async def get_pool(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync.get_pool(*args, **kwargs)

    async def get_master_pools(self) -> list[Any]:
        return list(self.sync.get_master_pools())

    async def get_replica_pools(self, *args: Any, **kwargs: Any) -> list[Any]:
        return list(self.sync.get_replica_pools(*args, **kwargs))

    # -- readiness and life cycle (they wait) -----------------------------------

    async def ready(self, *args: Any, **kwargs: Any) -> None:
        await run_blocking(self.sync.ready, *args, **kwargs)

    async def wait_all_ready(self) -> None:
        await run_blocking(self.sync.wait_all_ready)

    async def wait_masters_ready(self, masters_count: int) -> None:
        await run_blocking(self.sync.wait_masters_ready, masters_count)

    async def wait_replicas_ready(self, replicas_count: int) -> None:
        await run_blocking(self.sync.wait_replicas_ready, replicas_count)

    async def wait_next_pool_check(self, timeout: float = 10) -> None:
        await run_blocking(self.sync.wait_next_pool_check, timeout)

    async def close(self) -> None:
        await run_blocking(self.sync.close)

    async def terminate(self) -> None:
        await run_blocking(self.sync.terminate)


def adapter_factory(manager_cls: type[Any]) -> Callable[..., SyncManagerAdapter]:
    """What the ``manager_cls`` fixture gives for a sync driver id: ``factory(dsn, **kwargs)``."""
    return functools.partial(SyncManagerAdapter, manager_cls)


__all__ = [
    "Acquiring",
    "SyncConnection",
    "SyncDriverAdapter",
    "SyncManagerAdapter",
    "adapter_factory",
    "run_blocking",
    "unwrap",
]
