"""``await pm.run(...)`` of the async managers: a SQL string or a function, on either side.

- A SQL string runs in a transaction of its own on the host the manager routes
  it to (``pm.acquire(read_only=...)``: the primary, or a replica within the
  manager's lag bounds, pins and read-your-writes), and gives its rows as a
  list of dicts, or ``True`` with ``get_result=False``.
- A read that failed because its host broke runs once more, on another host
  (:mod:`.retry`): the failed host is checked first, so the second routing
  sees it down. A write is never run again.
- ``partial_txn=True`` / ``txn=`` hold a transaction over several calls
  (:mod:`.transactions`); ``dry_run=True`` renders the SQL (:func:`render`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..topology import checked_since
from .literals import render_numbered
from .retry import read_may_retry
from .steps import check_run, result_of, run_step_async
from .transactions import Transaction, open_transaction

if TYPE_CHECKING:
    from ..manager import BasePoolManager


async def run(
    manager: BasePoolManager[Any, Any],
    interaction: str | Callable[..., Any],
    args: Any,
    *,
    read_only: bool,
    get_result: bool,
    txn: Transaction | None,
    partial_txn: bool,
    dry_run: bool,
    kwargs: dict[str, Any],
) -> Any:
    """See :meth:`pgrouter.manager.BasePoolManager.run`."""
    flags = (read_only, get_result, partial_txn, dry_run)
    check_run(manager, interaction, args, kwargs, flags, txn, Transaction)
    if txn is not None:
        if dry_run:
            assert isinstance(interaction, str)
            return render(manager, interaction, args, read_only, txn.connection)
        result = await txn.run(interaction, args, get_result=get_result, **kwargs)
        return (result, txn) if partial_txn else result
    if dry_run:
        assert isinstance(interaction, str)
        return await render_borrowing(manager, interaction, args, read_only)
    if partial_txn:
        held = await open_transaction(manager, read_only)
        try:
            result = await held.run(interaction, args, get_result=get_result, **kwargs)
        except BaseException:
            await held.rollback()
            raise
        return result, held
    if not isinstance(interaction, str):
        # The function gets the connection as `async with pm.acquire()` gives
        # it, and its end is the driver's (psycopg commits a clean block).
        async with manager.acquire(read_only=read_only) as connection:
            return await run_step_async(
                manager._driver, connection, interaction, args, get_result, kwargs
            )
    return await _run_sql(manager, interaction, args, read_only, get_result)


async def _run_sql(
    manager: BasePoolManager[Any, Any], query: str, args: Any, read_only: bool, get_result: bool
) -> list[dict[str, Any]] | bool:
    """A SQL string in a transaction of its own; a read once more on another host if its host broke.

    The acquire timeout is a budget for waiting on hosts: what the first
    acquire left of it bounds the second (the query's own time is not a wait
    for a host, and is not counted).
    """
    loop = asyncio.get_running_loop()
    driver = manager._driver
    budget = manager._acquire_timeout
    retried = False
    while True:
        started = loop.time()
        # The first acquire with the manager's own timeout: nothing to check again.
        connection = await manager.acquire(
            read_only=read_only, timeout=max(budget, 0.0) if retried else None
        )
        budget -= loop.time() - started
        index = manager._borrowed[id(connection)][2]
        try:
            rows = await driver.run_statement(connection, query, args, get_result)
            if not driver.statement_commits(connection):
                await driver.commit(connection)
        except BaseException as error:
            # The release rolls back what is left (or drops a broken connection);
            # a cancellation too gives the connection back (the release shields itself).
            await manager.release(connection)
            if (
                retried
                or not read_only
                or not isinstance(error, Exception)
                or not read_may_retry(error, driver.is_host_error)
            ):
                raise
            retried = True
            host = manager._board.current.hosts[index]
            # Checked before routing again, so the balancer sees the broken
            # host down instead of picking it once more.
            manager._check_now(index)
            started = loop.time()
            try:
                await manager._board.wait_for(
                    functools.partial(checked_since, host), max(budget, 0.0)
                )
            except asyncio.TimeoutError:
                raise error from None
            budget -= loop.time() - started
            if budget <= 0:
                raise
            continue
        await manager.release(connection)
        return result_of(rows, get_result)


def render(
    manager: BasePoolManager[Any, Any], query: str, args: Any, read_only: bool, connection: Any
) -> str:
    """The SQL as the server would receive it, on a connection held already; sends nothing."""
    rendered = manager._driver.mogrify(connection, query, args)
    return render_numbered(query, args) if rendered is None else rendered


async def render_borrowing(
    manager: BasePoolManager[Any, Any], query: str, args: Any, read_only: bool
) -> str:
    """A dry run outside a transaction: the driver's mogrify needs a connection, so one
    is borrowed from the side the query would run on, and nothing is sent on it."""
    driver = manager._driver
    if not args and driver.mogrify_needs_connection:
        return query  # with no parameters, the driver sends the query as it is
    if not driver.mogrify_needs_connection:
        rendered = driver.mogrify(None, query, args)
        return render_numbered(query, args) if rendered is None else rendered
    connection = await manager.acquire(read_only=read_only)
    try:
        return render(manager, query, args, read_only, connection)
    finally:
        await manager.release(connection)


__all__ = ["render", "render_borrowing", "run"]
