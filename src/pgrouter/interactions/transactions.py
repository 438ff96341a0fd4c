"""A transaction held over several calls, on an async manager.

``result, txn = await pm.run(sql, partial_txn=True)`` and
``async with pm.transaction() as txn:`` give a :class:`Transaction`: it holds
one connection, to the host the manager routed it to, with a transaction
open there. ``await txn.run(...)`` (or ``pm.run(..., txn=txn)``) goes on in
it; ``commit()`` / ``rollback()`` end it and give the connection back.
pgrouter ends it itself after ``txn_timeout`` or when its host stops serving
its role (:mod:`.txn_watch`): cut, rolled back by the server, the connection
returned; using it then raises :class:`~pgrouter.errors.TransactionClosedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import TransactionClosedError
from ..topology import HostRole
from .steps import check_interaction, run_step_async
from .txn_watch import TxnLife

if TYPE_CHECKING:
    from ..manager import BasePoolManager

logger = logging.getLogger("pgrouter")


class Transaction:
    """One open transaction on a connection of an async manager (see the module docstring)."""

    def __init__(
        self,
        manager: BasePoolManager[Any, Any],
        connection: Any,
        host_index: int,
        role: HostRole,
        timeout: float,
    ) -> None:
        self._manager = manager
        self.connection = connection
        self.host_index = host_index
        self.role = role
        self._life = TxnLife(contextlib.nullcontext())  # one loop: no other thread
        self._timeout = timeout
        # The timer holds the transaction: one its owner dropped still ends on time.
        self._timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)
        self._returning: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "open" if self._life.ended is None else f"over ({self._life.ended})"
        return f"<Transaction on host #{self.host_index} {state}>"

    @property
    def closed(self) -> bool:
        """True once committed, rolled back, or ended by pgrouter."""
        return self._life.ended is not None

    @property
    def closed_reason(self) -> str | None:
        return self._life.ended

    async def run(
        self,
        interaction: str | Callable[..., Any],
        args: Any = None,
        *,
        get_result: bool = True,
        **kwargs: Any,
    ) -> Any:
        """One more step in this transaction (see :meth:`BasePoolManager.run`); never retried."""
        check_interaction(interaction, args, kwargs)
        self._life.enter()
        try:
            return await run_step_async(
                self._manager._driver, self.connection, interaction, args, get_result, kwargs
            )
        except Exception as error:
            self._raise_if_ended(error)
            raise
        finally:
            if self._life.leave():
                await self._give_back()

    async def commit(self) -> None:
        """Commit and give the connection back.

        Raises :class:`TransactionClosedError` if pgrouter ended the
        transaction first (nothing of it was committed), or cut it during the
        commit because its host was lost (the outcome is then unknown).
        """
        self._life.enter()
        self._life.committing = True
        try:
            await self._manager._driver.commit(self.connection)
        except BaseException as error:
            self._life.committing = False
            if self._life.ended is not None:
                await self._finish_call(None, cut=False)
                raise TransactionClosedError(
                    f"the commit was cut, its outcome is unknown: {self._life.ended}"
                ) from error
            await self._finish_call("its commit failed", cut=True)
            raise
        self._life.committing = False
        if self._life.ended is not None:  # cut by pgrouter while the commit ran
            await self._finish_call(None, cut=False)
            raise TransactionClosedError(
                f"the commit was cut, its outcome is unknown: {self._life.ended}"
            )
        await self._finish_call("committed", cut=False)

    async def rollback(self) -> None:
        """Roll back and give the connection back; nothing to do if it is over already."""
        if self._life.ended is not None:
            return
        self._life.enter()
        try:
            await self._manager._driver.rollback(self.connection)
        except Exception as error:
            # The connection broke, and with it the transaction: the server
            # rolls it back. Cut it, so the pool drops it.
            logger.debug("pgrouter: a rollback failed, cutting its connection: %r", error)
            await self._finish_call("rolled back (its connection broke)", cut=True)
            return
        except BaseException:
            await self._finish_call("rolled back (cancelled)", cut=True)
            raise
        await self._finish_call("rolled back", cut=False)

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit a clean block; roll back one that raised (the error propagates)."""
        if exc is None:
            await self.commit()
        else:
            await self.rollback()

    # -- the end ------------------------------------------------------------------

    async def _finish_call(self, reason: str | None, *, cut: bool) -> None:
        """The owner's call (begun with ``enter()``) ended, ending the transaction with
        ``reason`` (``None``: pgrouter ended it already); the connection goes back once."""
        must_return = self._life.leave()
        if reason is not None:
            ended, give_back = self._life.end(reason, by_pgrouter=False)
            if ended:
                self._timer.cancel()
                self._manager._transactions.forget(self)
                if cut:
                    self._cut()
            must_return = must_return or give_back
        if must_return:
            await self._give_back()

    def expire(self, reason: str) -> None:
        """pgrouter ends it (see :mod:`.txn_watch`): cut now, give back now or after the
        call under way. Synchronous: called from a timer and a snapshot listener."""
        ended, give_back = self._life.end(reason, by_pgrouter=True)
        if not ended:
            return
        self._timer.cancel()
        self._manager._transactions.forget(self)
        logger.warning(
            "pgrouter: ending a held transaction (host #%d): %s", self.host_index, reason
        )
        self._cut()
        if give_back:
            self._returning = asyncio.ensure_future(self._give_back())

    def _timed_out(self) -> None:
        if self._life.committing:
            # A commit is under way: cutting it would leave its outcome
            # unknown. Its own end settles the transaction; look again soon.
            self._timer = asyncio.get_running_loop().call_later(0.1, self._timed_out)
            return
        self.expire(f"open longer than txn_timeout={self._timeout:g} s; rolled back")

    def _cut(self) -> None:
        try:
            self._manager._driver.abort(self.connection)
        except Exception as error:  # closed already
            logger.debug("pgrouter: cutting a transaction's connection: %r", error)

    async def _give_back(self) -> None:
        try:
            await self._manager.release(self.connection)
        except Exception as error:  # its pool is closing, or terminate() took it
            logger.debug("pgrouter: giving back a transaction's connection: %r", error)

    def _raise_if_ended(self, error: BaseException) -> None:
        if self._life.ended is not None and self._life.by_pgrouter:
            raise TransactionClosedError(f"the transaction is over: {self._life.ended}") from error


async def open_transaction(manager: BasePoolManager[Any, Any], read_only: bool) -> Transaction:
    """A connection routed as ``acquire(read_only=...)`` routes it, with a transaction begun."""
    connection = await manager.acquire(read_only=read_only)
    try:
        index = manager._borrowed[id(connection)][2]
        snapshot = manager._board.current
        role = snapshot.hosts[index].role
        await manager._driver.begin(connection)
    except BaseException:
        await manager.release(connection)
        raise
    txn = Transaction(manager, connection, index, role, manager._txn_timeout)
    registry = manager._transactions
    registry.watch(manager._board)
    registry.add(txn)
    return txn


class TransactionContext:
    """``async with pm.transaction() as txn:`` (commits a clean block), or
    ``txn = await pm.transaction()`` (commit or roll back yourself)."""

    def __init__(self, manager: BasePoolManager[Any, Any], read_only: bool) -> None:
        self._manager = manager
        self._read_only = read_only
        self._txn: Transaction | None = None

    def __await__(self) -> Generator[Any, None, Transaction]:
        return open_transaction(self._manager, self._read_only).__await__()

    async def __aenter__(self) -> Transaction:
        self._txn = await open_transaction(self._manager, self._read_only)
        return self._txn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._txn is not None
        await self._txn.__aexit__(exc_type, exc, tb)


__all__ = ["Transaction", "TransactionContext", "open_transaction"]
