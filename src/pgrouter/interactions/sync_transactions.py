"""A transaction held over several calls, on a blocking manager.

The blocking twin of :mod:`.transactions`: ``result, txn = pm.run(sql,
partial_txn=True)`` and ``with pm.transaction() as txn:`` give a
:class:`SyncTransaction`. Its ``txn_timeout`` timer runs on the monitor's own
loop (its thread) and so does the snapshot listener that ends it when its
host is lost; both only cut the connection there (a socket shutdown, safe
from any thread), and the connection goes back to its pool on the callers'
side (:class:`~pgrouter.sync.green.CallerSide`: a worker thread, or a greenlet
of the callers' hub under gevent), or at the end of the owner's call under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import TransactionClosedError
from ..sync import green
from ..topology import HostRole
from .steps import check_interaction, run_step_sync
from .txn_watch import TxnLife

if TYPE_CHECKING:
    from ..sync.manager import BaseSyncPoolManager

logger = logging.getLogger("pgrouter")


class SyncTransaction:
    """One open transaction on a connection of a blocking manager."""

    def __init__(
        self,
        manager: BaseSyncPoolManager[Any, Any],
        connection: Any,
        host_index: int,
        role: HostRole,
        timeout: float,
    ) -> None:
        self._manager = manager
        self.connection = connection
        self.host_index = host_index
        self.role = role
        self._life = TxnLife(green.original_lock())
        self._timeout = timeout
        state = manager._state()
        self._thread = state.thread
        self._callers = state.callers
        self._timer: asyncio.TimerHandle | None = None  # on the monitor's loop
        # The timer holds the transaction: one its owner dropped still ends on time.
        self._thread.soon(self._arm, timeout)

    def __repr__(self) -> str:
        state = "open" if self._life.ended is None else f"over ({self._life.ended})"
        return f"<SyncTransaction on host #{self.host_index} {state}>"

    @property
    def closed(self) -> bool:
        return self._life.ended is not None

    @property
    def closed_reason(self) -> str | None:
        return self._life.ended

    def run(
        self,
        interaction: str | Callable[..., Any],
        args: Any = None,
        *,
        get_result: bool = True,
        **kwargs: Any,
    ) -> Any:
        """One more step in this transaction; never retried."""
        check_interaction(interaction, args, kwargs)
        self._life.enter()
        try:
            return run_step_sync(
                self._manager._driver, self.connection, interaction, args, get_result, kwargs
            )
        except Exception as error:
            if self._life.ended is not None and self._life.by_pgrouter:
                raise TransactionClosedError(
                    f"the transaction is over: {self._life.ended}"
                ) from error
            raise
        finally:
            if self._life.leave():
                self._give_back()

    def commit(self) -> None:
        """Commit and give the connection back (see the async twin for the errors)."""
        self._life.enter()
        self._life.committing = True
        try:
            self._manager._driver.commit(self.connection)
        except BaseException as error:
            self._life.committing = False
            if self._life.ended is not None:
                self._finish_call(None, cut=False)
                raise TransactionClosedError(
                    f"the commit was cut, its outcome is unknown: {self._life.ended}"
                ) from error
            self._finish_call("its commit failed", cut=True)
            raise
        self._life.committing = False
        if self._life.ended is not None:
            self._finish_call(None, cut=False)
            raise TransactionClosedError(
                f"the commit was cut, its outcome is unknown: {self._life.ended}"
            )
        self._finish_call("committed", cut=False)

    def rollback(self) -> None:
        """Roll back and give the connection back; nothing to do if it is over already."""
        if self._life.ended is not None:
            return
        self._life.enter()
        try:
            self._manager._driver.rollback(self.connection)
        except Exception as error:
            logger.debug("pgrouter: a rollback failed, cutting its connection: %r", error)
            self._finish_call("rolled back (its connection broke)", cut=True)
            return
        except BaseException:
            self._finish_call("rolled back (interrupted)", cut=True)
            raise
        self._finish_call("rolled back", cut=False)

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit a clean block; roll back one that raised (the error propagates)."""
        if exc is None:
            self.commit()
        else:
            self.rollback()

    # -- the end ------------------------------------------------------------------

    def _finish_call(self, reason: str | None, *, cut: bool) -> None:
        must_return = self._life.leave()
        if reason is not None:
            ended, give_back = self._life.end(reason, by_pgrouter=False)
            if ended:
                self._thread.soon(self._disarm)
                self._manager._transactions.forget(self)
                if cut:
                    self._cut()
            must_return = must_return or give_back
        if must_return:
            self._give_back()

    def expire(self, reason: str) -> None:
        """pgrouter ends it: cut now; the connection goes back on the callers' side."""
        ended, give_back = self._life.end(reason, by_pgrouter=True)
        if not ended:
            return
        self._manager._transactions.forget(self)
        logger.warning(
            "pgrouter: ending a held transaction (host #%d): %s", self.host_index, reason
        )
        self._cut()
        if give_back:
            self._callers.start(self._give_back, name="pgrouter-transaction-return")

    # On the monitor's loop:
    def _arm(self, delay: float) -> None:
        if self._life.ended is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._life.committing:
            self._arm(0.1)  # a commit under way settles it; cutting it would hide its outcome
            return
        self.expire(f"open longer than txn_timeout={self._timeout:g} s; rolled back")

    def _cut(self) -> None:
        try:
            self._manager._driver.abort(self.connection)
        except Exception as error:
            logger.debug("pgrouter: cutting a transaction's connection: %r", error)

    def _give_back(self) -> None:
        try:
            if self._life.by_pgrouter or self._manager._driver.is_closed(self.connection):
                # Cut: closed first, so its pool drops it without a round trip.
                close = getattr(self.connection, "close", None)
                if close is not None:
                    close()
            self._manager.release(self.connection)
        except Exception as error:
            logger.debug("pgrouter: giving back a transaction's connection: %r", error)


def open_sync_transaction(
    manager: BaseSyncPoolManager[Any, Any], read_only: bool
) -> SyncTransaction:
    """A connection routed as ``acquire(read_only=...)`` routes it, with a transaction begun."""
    connection = manager.acquire(read_only=read_only).connection
    state = manager._state()
    try:
        index = state.borrowed[id(connection)][2]
        role = state.thread.current.hosts[index].role
        manager._driver.begin(connection)
    except BaseException:
        manager.release(connection)
        raise
    txn = SyncTransaction(manager, connection, index, role, manager._txn_timeout)
    registry = manager._transactions
    monitor = state.thread.monitor
    assert monitor is not None
    registry.watch(monitor.board)
    registry.add(txn)
    return txn


__all__ = ["SyncTransaction", "open_sync_transaction"]
