"""``pm.run(...)`` of the blocking managers: the twin of :mod:`.run`, same rules.

A SQL string runs in a transaction of its own where ``pm.acquire(read_only=...)``
routes it; a read whose host broke runs once more on another host (after
that host's check), a write never; ``partial_txn`` / ``txn=`` hold a
transaction (:mod:`.sync_transactions`); ``dry_run`` renders the SQL.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..topology import checked_since
from .literals import render_numbered
from .retry import read_may_retry
from .steps import check_run, result_of, run_step_sync
from .sync_transactions import SyncTransaction, open_sync_transaction

if TYPE_CHECKING:
    from ..sync.manager import BaseSyncPoolManager


def run_sync(
    manager: BaseSyncPoolManager[Any, Any],
    interaction: str | Callable[..., Any],
    args: Any,
    *,
    read_only: bool,
    get_result: bool,
    txn: SyncTransaction | None,
    partial_txn: bool,
    dry_run: bool,
    kwargs: dict[str, Any],
) -> Any:
    """See :meth:`pgrouter.sync.manager.BaseSyncPoolManager.run`."""
    flags = (read_only, get_result, partial_txn, dry_run)
    check_run(manager, interaction, args, kwargs, flags, txn, SyncTransaction)
    if txn is not None:
        if dry_run:
            assert isinstance(interaction, str)
            return render_sync(manager, interaction, args, txn.connection)
        result = txn.run(interaction, args, get_result=get_result, **kwargs)
        return (result, txn) if partial_txn else result
    if dry_run:
        assert isinstance(interaction, str)
        return render_sync_borrowing(manager, interaction, args, read_only)
    if partial_txn:
        held = open_sync_transaction(manager, read_only)
        try:
            result = held.run(interaction, args, get_result=get_result, **kwargs)
        except BaseException:
            held.rollback()
            raise
        return result, held
    if not isinstance(interaction, str):
        # As `with pm.acquire() as conn:` gives it: a clean end commits, an error rolls back.
        with manager.acquire(read_only=read_only) as connection:
            return run_step_sync(manager._driver, connection, interaction, args, get_result, kwargs)
    return _run_sql(manager, interaction, args, read_only, get_result)


def _run_sql(
    manager: BaseSyncPoolManager[Any, Any], query: str, args: Any, read_only: bool, get_result: bool
) -> list[dict[str, Any]] | bool:
    """A SQL string in a transaction of its own (see the async twin for the retry's budget)."""
    driver = manager._driver
    budget = manager._acquire_timeout
    retried = False
    while True:
        started = time.monotonic()
        # The first acquire with the manager's own timeout: nothing to check again.
        borrowed = manager.acquire(
            read_only=read_only, timeout=max(budget, 0.0) if retried else None
        )
        budget -= time.monotonic() - started
        connection = borrowed.connection
        try:
            rows = driver.run_statement(connection, query, args, get_result)
            if not driver.statement_commits(connection):
                driver.commit(connection)
        except BaseException as error:  # an interruption too gives the connection back
            state = manager._state()
            index = state.borrowed[id(connection)][2]  # known until the release below
            _give_back_failed(manager, connection)
            if (
                retried
                or not read_only
                or not isinstance(error, Exception)
                or not read_may_retry(error, driver.is_host_error)
            ):
                raise
            retried = True
            host = state.thread.current.hosts[index]
            manager._check_now(index)
            started = time.monotonic()
            try:
                state.thread.wait_for(functools.partial(checked_since, host), max(budget, 0.0))
            except TimeoutError:
                raise error from None
            budget -= time.monotonic() - started
            if budget <= 0:
                raise
            continue
        manager.release(connection)
        return result_of(rows, get_result)


def _give_back_failed(manager: BaseSyncPoolManager[Any, Any], connection: Any) -> None:
    """After a failed statement: roll back what it left (unless broken), then release."""
    driver = manager._driver
    if not driver.is_closed(connection) and not driver.statement_commits(connection):
        with contextlib.suppress(Exception):  # broken after all: the pool drops it
            driver.rollback(connection)
    manager.release(connection)


def render_sync(
    manager: BaseSyncPoolManager[Any, Any], query: str, args: Any, connection: Any
) -> str:
    """The SQL as the server would receive it, on a connection held already; sends nothing."""
    rendered = manager._driver.mogrify(connection, query, args)
    return render_numbered(query, args) if rendered is None else rendered


def render_sync_borrowing(
    manager: BaseSyncPoolManager[Any, Any], query: str, args: Any, read_only: bool
) -> str:
    """A dry run outside a transaction: a driver whose mogrify needs a connection gets one
    borrowed from the side the query would run on; nothing is sent on it."""
    driver = manager._driver
    if not args and driver.mogrify_needs_connection:
        return query  # with no parameters, the driver sends the query as it is
    if not driver.mogrify_needs_connection:
        rendered = driver.mogrify(None, query, args)
        return render_numbered(query, args) if rendered is None else rendered
    connection = manager.acquire(read_only=read_only).connection
    try:
        return render_sync(manager, query, args, connection)
    finally:
        manager.release(connection)


__all__ = ["render_sync", "render_sync_borrowing", "run_sync"]
