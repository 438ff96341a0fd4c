"""What both faces' held transactions share: their life, and when pgrouter ends them.

A transaction held over several calls (``run(partial_txn=True)``,
``pm.transaction()``) keeps a connection, and with it row locks and a pool
slot. pgrouter ends it, whoever holds it, in two cases:

- it stayed open longer than the manager's ``txn_timeout`` (a caller that
  forgot it, or died with it);
- the snapshot shows its host no longer serving the role it was taken for
  (down, demoted, fenced or superseded): what it would commit there is on a
  server that no longer takes the writes, or may never answer.

Either way its connection is cut at the socket, as the manager cuts a
superseded host's work: no round trip that could wait on a dead or frozen
server, and the server rolls the transaction back (releasing its locks) as it
sees the connection end. The connection then goes back to its pool, which
drops it. Whoever uses the transaction afterwards gets
:class:`~pgrouter.errors.TransactionClosedError` saying why.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import TransactionClosedError
from ..topology import HostRole, TopologySnapshot, serves


def lost_reason(snapshot: TopologySnapshot, index: int, role: HostRole) -> str | None:
    """Why host ``index`` no longer serves a transaction taken in ``role``; ``None`` if it does."""
    if serves(snapshot, index, role):
        return None
    host = snapshot.hosts[index]
    return (
        f"its host {host.address} stopped serving as {role.name.lower()}: "
        + snapshot.describe_host(host)
    )


class TxnLife:
    """One held transaction's state, safe to change from another thread.

    ``ended`` says why it is over (``None`` while open). ``busy`` counts its
    owner's calls under way: a transaction ended by pgrouter during one gives
    its connection back when that call ends, else at once; exactly once.
    """

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.ended: str | None = None
        self.by_pgrouter = False
        self.committing = False
        self._busy = 0
        self._returned = False

    def enter(self) -> None:
        """A call of the owner starts; raises if the transaction is over."""
        with self._lock:
            if self.ended is not None:
                raise TransactionClosedError(f"the transaction is over: {self.ended}")
            self._busy += 1

    def leave(self) -> bool:
        """A call of the owner ended; True when the caller must now give the connection back."""
        with self._lock:
            self._busy -= 1
            return self._take_return()

    def end(self, reason: str, *, by_pgrouter: bool) -> tuple[bool, bool]:
        """Mark it over: (whether this call ended it, whether it must give the connection back)."""
        with self._lock:
            if self.ended is not None:
                return False, False
            self.ended = reason
            self.by_pgrouter = by_pgrouter
            return True, self._take_return()

    def _take_return(self) -> bool:
        if self.ended is None or self._busy or self._returned:
            return False
        self._returned = True
        return True


class HeldTransaction(Protocol):
    host_index: int
    role: HostRole

    def expire(self, reason: str) -> None: ...


class TxnRegistry:
    """A manager's open transactions, ended the moment a snapshot shows their host lost.

    Listens to the board it watches (the monitor's), held by the manager; the
    board holds this listener weakly. Transactions are held weakly too: one
    dropped by its owner is collected (its connection stays borrowed until
    ``txn_timeout``, whose timer holds it).
    """

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()
        self._board_id: int | None = None
        self._current: Callable[[], TopologySnapshot] | None = None

    def watch(self, board: Any) -> None:
        """Listen to ``board`` (once per board: a forked child has a new one)."""
        if self._board_id != id(board):
            self._board_id = id(board)
            self._current = lambda: board.current
            board.listen(self.on_topology)

    def add(self, txn: HeldTransaction) -> None:
        with self._lock:
            self._open.add(txn)
        if self._current is not None:  # a snapshot published before we listened
            reason = lost_reason(self._current(), txn.host_index, txn.role)
            if reason is not None:
                txn.expire(reason)

    def forget(self, txn: HeldTransaction) -> None:
        with self._lock:
            self._open.discard(txn)

    def expire_all(self, reason: str) -> None:
        """End every open transaction (the manager is terminated)."""
        with self._lock:
            held = list(self._open)
        for txn in held:
            txn.expire(reason)

    def on_topology(self, old: TopologySnapshot, new: TopologySnapshot) -> None:
        with self._lock:
            held = list(self._open)
        for txn in held:
            reason = lost_reason(new, txn.host_index, txn.role)
            if reason is not None:
                txn.expire(reason)

    def __len__(self) -> int:
        return len(self._open)


__all__ = ["HeldTransaction", "TxnLife", "TxnRegistry", "lost_reason"]
