"""A held transaction's life and when pgrouter ends it (interactions/txn_watch.py), with fakes.

The real ends (txn_timeout, a killed or frozen primary) run against real
clusters in tests/integration/test_transactions.py; here, the bookkeeping that
decides who gives the connection back, exactly once, and which snapshots end
a transaction.
"""

from __future__ import annotations

import contextlib
import threading

import pytest

from pgrouter.dsn import split_dsn
from pgrouter.errors import TransactionClosedError
from pgrouter.interactions.txn_watch import TxnLife, TxnRegistry, lost_reason
from pgrouter.topology import HostRole, HostState, TopologySnapshot

P, R = HostRole.PRIMARY, HostRole.REPLICA
DSNS = split_dsn("postgresql://u:secret@h0,h1,h2/db")


def snapshot(
    *roles: HostRole, down: int | None = None, superseded: frozenset[int] = frozenset()
) -> TopologySnapshot:
    return TopologySnapshot(
        hosts=tuple(
            HostState(index=i, dsn=DSNS[i], role=role, healthy=i != down)
            for i, role in enumerate(roles)
        ),
        superseded=superseded,
    )


def test_the_owner_gives_back_when_it_ends_it() -> None:
    life = TxnLife(threading.Lock())
    life.enter()
    assert life.leave() is False  # open: the connection stays held
    assert life.end("committed", by_pgrouter=False) == (True, True)
    assert life.end("again", by_pgrouter=True) == (False, False)
    with pytest.raises(TransactionClosedError, match="committed"):
        life.enter()


def test_ended_during_a_call_the_call_gives_back() -> None:
    life = TxnLife(contextlib.nullcontext())
    life.enter()
    # pgrouter ends it while the owner's call runs: not given back under the call...
    assert life.end("open longer than txn_timeout", by_pgrouter=True) == (True, False)
    # ...but when that call ends, once.
    assert life.leave() is True
    assert life.by_pgrouter and life.ended == "open longer than txn_timeout"


def test_ended_while_idle_pgrouter_gives_back() -> None:
    life = TxnLife(contextlib.nullcontext())
    assert life.end("host lost", by_pgrouter=True) == (True, True)


def test_lost_reason_names_the_host_and_its_state() -> None:
    assert lost_reason(snapshot(P, R, R), 0, P) is None
    assert lost_reason(snapshot(P, R, R), 1, R) is None
    down = lost_reason(snapshot(P, R, R, down=0), 0, P)
    assert down is not None and "h0:5432 stopped serving as primary" in down
    assert "secret" not in down
    demoted = lost_reason(snapshot(R, P, R), 0, P)
    assert demoted is not None and "stopped serving as primary" in demoted
    assert lost_reason(snapshot(P, R, R, superseded=frozenset({0})), 0, P) is not None


class FakeTxn:
    def __init__(self, index: int, role: HostRole) -> None:
        self.host_index = index
        self.role = role
        self.reasons: list[str] = []

    def expire(self, reason: str) -> None:
        self.reasons.append(reason)


class FakeBoard:
    def __init__(self, current: TopologySnapshot) -> None:
        self.current = current
        self.listeners: list[object] = []

    def listen(self, listener: object) -> None:
        self.listeners.append(listener)


def test_registry_ends_only_the_transactions_of_a_lost_host() -> None:
    board = FakeBoard(snapshot(P, R, R))
    registry = TxnRegistry(threading.Lock())
    registry.watch(board)
    registry.watch(board)  # once per board
    assert len(board.listeners) == 1
    on_primary, on_replica = FakeTxn(0, P), FakeTxn(1, R)
    registry.add(on_primary)
    registry.add(on_replica)
    registry.on_topology(board.current, snapshot(P, R, R, down=1))
    assert on_replica.reasons and not on_primary.reasons
    registry.forget(on_replica)
    registry.on_topology(board.current, snapshot(R, P, R))
    assert len(on_primary.reasons) == 1 and len(on_replica.reasons) == 1


def test_a_transaction_added_after_its_host_was_lost_ends_at_once() -> None:
    board = FakeBoard(snapshot(P, R, R, down=0))
    registry = TxnRegistry(threading.Lock())
    registry.watch(board)
    late = FakeTxn(0, P)
    registry.add(late)
    assert late.reasons


def test_expire_all_ends_every_open_transaction() -> None:
    registry = TxnRegistry(threading.Lock())
    held = [FakeTxn(0, P), FakeTxn(1, R)]
    for txn in held:
        registry.add(txn)
    registry.expire_all("the manager was terminated")
    assert all(txn.reasons == ["the manager was terminated"] for txn in held)
