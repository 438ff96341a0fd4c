"""Transactions held over several calls, against real clusters, for every driver and both faces.

- a partial transaction holding a row lock (``SELECT ... FOR UPDATE``) blocks a
  second writer until its commit, and nobody sees its writes before;
- ``async with pm.transaction()`` / ``with``: a clean block commits, one that
  raised rolls back; a finished transaction refuses further use;
- ``txn_timeout`` ends a forgotten one: the lock is freed, the connection goes
  back (``close()`` does not wait for it), its use raises TransactionClosedError;
- the loss of the primary ends its open transactions: kill -9 (async face) and
  SIGSTOP (blocking face, where a caller would otherwise hang on the frozen
  host) -- once per face: the ending is driver-independent code.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from helpers import wait_until

from conftest import DRIVERS, SMALL_POOLS
from pgrouter import TransactionClosedError
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

PLACEHOLDERS = {
    "asyncpg": "$1",
    "asyncpgsa": "$1",
    "sqlalchemy": "$1",
    "psycopg": "%s",
    "aiopg": "%s",
    "aiopg_sa": "%s",
}
ASYNC_DRIVERS = sorted(name for name in DRIVERS if name in PLACEHOLDERS)
#: The sync managers among the selected drivers (PGROUTER_TEST_DRIVERS), by short name.
SYNC_MANAGERS = {
    name[len("sync_") :]: (DRIVERS[name], SMALL_POOLS[name])
    for name in sorted(DRIVERS)
    if name.startswith("sync_")
}


def _table(cluster: LocalCluster) -> str:
    name = f"txn_{uuid.uuid4().hex[:8]}"
    cluster.primary.sql(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    cluster.primary.sql(f"INSERT INTO {name} VALUES (1, 'a')")
    return name


def _note(cluster: LocalCluster, table: str) -> str:
    return cluster.primary.sql(f"SELECT note FROM {table} WHERE id = 1")


def _lock_is_free(cluster: LocalCluster, table: str) -> bool:
    """True when another session can take the row's lock at once (NOWAIT)."""
    try:
        cluster.primary.sql(f"SELECT 1 FROM {table} WHERE id = 1 FOR UPDATE NOWAIT")
    except Exception:
        return False
    return True


def _async_manager(driver: str, cluster: LocalCluster, **kwargs: Any) -> Any:
    module = importlib.import_module(DRIVERS[driver])
    return module.PoolManager(
        cluster.dsn(), pool_factory_kwargs=dict(SMALL_POOLS[driver]), **kwargs
    )


def _sync_manager(name: str, cluster: LocalCluster, **kwargs: Any) -> Any:
    module_name, pools = SYNC_MANAGERS[name]
    module = importlib.import_module(module_name)
    return module.PoolManager(cluster.dsn(), pool_factory_kwargs=dict(pools), **kwargs)


@pytest.fixture(params=ASYNC_DRIVERS)
def async_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(SYNC_MANAGERS))
def sync_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def apm(shared_cluster: LocalCluster, async_driver: str) -> AsyncIterator[Any]:
    async with _async_manager(async_driver, shared_cluster) as manager:
        await manager.ready()
        yield manager


@pytest.fixture
def spm(shared_cluster: LocalCluster, sync_name: str) -> Iterator[Any]:
    with _sync_manager(sync_name, shared_cluster) as manager:
        manager.ready()
        yield manager


def _wait(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    """Poll until true; a bound on a hang, not a speed assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- a row lock held across calls -----------------------------------------------------


async def test_partial_transaction_blocks_a_second_writer_until_commit(
    apm: Any, async_driver: str, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    p1 = PLACEHOLDERS[async_driver]
    rows, txn = await apm.run(
        f"SELECT note FROM {table} WHERE id = {p1} FOR UPDATE", (1,), partial_txn=True
    )
    assert rows == [{"note": "a"}]
    assert await apm.run(
        f"UPDATE {table} SET note = 'held' WHERE id = 1", txn=txn, get_result=False
    )
    result, same = await apm.run(f"SELECT note FROM {table}", txn=txn, partial_txn=True)
    assert same is txn and result == [{"note": "held"}]  # its own write, seen inside
    second = asyncio.ensure_future(
        apm.run(f"UPDATE {table} SET note = note || '+2' WHERE id = 1", get_result=False)
    )
    await asyncio.sleep(0.5)
    assert not second.done()  # waits on the row lock
    assert _note(shared_cluster, table) == "a"  # nothing visible before the commit
    await txn.commit()
    assert await asyncio.wait_for(second, 15) is True
    assert _note(shared_cluster, table) == "held+2"
    with pytest.raises(TransactionClosedError, match="committed"):
        await txn.run("SELECT 1")
    with pytest.raises(TransactionClosedError):
        await apm.run("SELECT 1", txn=txn)


def test_sync_partial_transaction_blocks_a_second_writer_until_commit(
    spm: Any, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    rows, txn = spm.run(
        f"SELECT note FROM {table} WHERE id = %s FOR UPDATE", (1,), partial_txn=True
    )
    assert rows == [{"note": "a"}]
    spm.run(f"UPDATE {table} SET note = 'held' WHERE id = 1", txn=txn, get_result=False)
    done = threading.Event()

    def second_writer() -> None:
        spm.run(f"UPDATE {table} SET note = note || '+2' WHERE id = 1", get_result=False)
        done.set()

    threading.Thread(target=second_writer, daemon=True).start()
    assert not done.wait(0.5)
    assert _note(shared_cluster, table) == "a"
    txn.commit()
    assert done.wait(15)
    assert _note(shared_cluster, table) == "held+2"
    with pytest.raises(TransactionClosedError, match="committed"):
        txn.run("SELECT 1")


# -- with blocks --------------------------------------------------------------------------


async def test_transaction_block_commits_or_rolls_back(
    apm: Any, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    async with apm.transaction() as txn:
        await txn.run(f"UPDATE {table} SET note = 'b' WHERE id = 1", get_result=False)
        await apm.run(f"UPDATE {table} SET note = note || 'c' WHERE id = 1", txn=txn)
    assert _note(shared_cluster, table) == "bc"
    with pytest.raises(ZeroDivisionError):
        async with apm.transaction() as txn:
            await txn.run(f"UPDATE {table} SET note = 'lost' WHERE id = 1", get_result=False)
            raise ZeroDivisionError
    assert _note(shared_cluster, table) == "bc"
    assert txn.closed and txn.closed_reason == "rolled back"
    # The awaitable form: commit or roll back yourself.
    held = await apm.transaction()
    await held.run(f"UPDATE {table} SET note = 'd' WHERE id = 1", get_result=False)
    await held.rollback()
    await held.rollback()  # over already: nothing to do
    assert _note(shared_cluster, table) == "bc"
    # A function step gets the transaction's connection.
    async with apm.transaction() as txn:
        assert await txn.run(lambda connection: connection is txn.connection)


def test_sync_transaction_block_commits_or_rolls_back(
    spm: Any, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    with spm.transaction() as txn:
        txn.run(f"UPDATE {table} SET note = 'b' WHERE id = 1", get_result=False)
    assert _note(shared_cluster, table) == "b"
    with pytest.raises(ZeroDivisionError), spm.transaction() as txn:
        txn.run(f"UPDATE {table} SET note = 'lost' WHERE id = 1", get_result=False)
        raise ZeroDivisionError
    assert _note(shared_cluster, table) == "b"
    with pytest.raises(TransactionClosedError, match="rolled back"):
        txn.commit()


# -- txn_timeout ----------------------------------------------------------------------------


async def test_txn_timeout_frees_the_lock_and_the_connection(
    async_driver: str, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    p1 = PLACEHOLDERS[async_driver]
    pm = _async_manager(async_driver, shared_cluster, txn_timeout=0.5)
    async with pm:
        await pm.ready()
        _, txn = await pm.run(
            f"SELECT note FROM {table} WHERE id = {p1} FOR UPDATE", (1,), partial_txn=True
        )
        await pm.run(f"UPDATE {table} SET note = 'never' WHERE id = 1", txn=txn)
        assert not _lock_is_free(shared_cluster, table)
        await wait_until(lambda: txn.closed, what="the transaction to time out")
        assert "txn_timeout=0.5 s" in (txn.closed_reason or "")
        await wait_until(
            lambda: asyncio.to_thread(_lock_is_free, shared_cluster, table),
            what="the server to free the lock",
        )
        assert _note(shared_cluster, table) == "a"  # rolled back
        with pytest.raises(TransactionClosedError, match="txn_timeout"):
            await txn.run("SELECT 1")
        with pytest.raises(TransactionClosedError, match="txn_timeout"):
            await txn.commit()
        await txn.rollback()  # rolled back already: nothing to do
        assert await pm.run("SELECT 1 AS one") == [{"one": 1}]
        # Its connection went back: a graceful close waits for no one.
        await asyncio.wait_for(pm.close(), 10)


def test_sync_txn_timeout_frees_the_lock_and_the_connection(
    sync_name: str, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    with _sync_manager(sync_name, shared_cluster, txn_timeout=0.5) as pm:
        pm.ready()
        txn = pm.transaction()
        txn.run(f"SELECT 1 FROM {table} WHERE id = 1 FOR UPDATE")
        txn.run(f"UPDATE {table} SET note = 'never' WHERE id = 1")
        _wait(lambda: txn.closed, what="the transaction to time out")
        _wait(lambda: _lock_is_free(shared_cluster, table), what="the lock to be freed")
        assert _note(shared_cluster, table) == "a"
        with pytest.raises(TransactionClosedError, match="txn_timeout"):
            txn.run("SELECT 1")
        assert pm.run("SELECT 1 AS one") == [{"one": 1}]
        _wait(lambda: not pm._state().borrowed, what="its connection to go back")


@pytest.mark.skipif("sync_psycopg" not in DRIVERS, reason="sync_psycopg is not selected")
def test_txn_timeout_is_checked_by_name(shared_cluster: LocalCluster) -> None:
    with pytest.raises(ValueError, match="txn_timeout must be > 0"):
        _sync_manager("psycopg", shared_cluster, txn_timeout=0)
    with pytest.raises(TypeError, match="txn_timeout must be a number"):
        _sync_manager("psycopg", shared_cluster, txn_timeout="60")


async def test_terminate_ends_held_transactions(apm: Any, shared_cluster: LocalCluster) -> None:
    table = _table(shared_cluster)
    txn = await apm.transaction()
    await txn.run(f"UPDATE {table} SET note = 'never' WHERE id = 1", get_result=False)
    await apm.terminate()
    assert "terminated" in (txn.closed_reason or "")
    with pytest.raises(TransactionClosedError, match="terminated"):
        await txn.run("SELECT 1")
    await wait_until(
        lambda: asyncio.to_thread(_lock_is_free, shared_cluster, table), what="the lock"
    )
    assert _note(shared_cluster, table) == "a"


def test_sync_terminate_ends_held_transactions(spm: Any, shared_cluster: LocalCluster) -> None:
    table = _table(shared_cluster)
    txn = spm.transaction()
    txn.run(f"UPDATE {table} SET note = 'never' WHERE id = 1", get_result=False)
    spm.terminate()
    with pytest.raises(TransactionClosedError, match="terminated"):
        txn.run("SELECT 1")
    _wait(lambda: _lock_is_free(shared_cluster, table), what="the lock to be freed")
    assert _note(shared_cluster, table) == "a"


# -- the primary's loss ---------------------------------------------------------------------


@pytest.mark.skipif("asyncpg" not in DRIVERS, reason="asyncpg is not selected")
async def test_a_killed_primary_ends_its_open_transactions(cluster: LocalCluster) -> None:
    from pgrouter.asyncpg import PoolManager

    cluster.primary.sql("CREATE TABLE held (id int)")
    async with PoolManager(cluster.dsn(), refresh_delay=0.2) as pm:
        await pm.ready()
        _, txn = await pm.run("INSERT INTO held VALUES (1)", partial_txn=True)
        cluster.primary.kill()
        await wait_until(lambda: txn.closed, what="the transaction to end")
        assert "stopped serving as primary" in (txn.closed_reason or "")
        with pytest.raises(TransactionClosedError, match="stopped serving as primary"):
            await txn.run("SELECT 1")
        with pytest.raises(TransactionClosedError):
            await txn.commit()
        await asyncio.wait_for(pm.close(), 10)


@pytest.mark.skipif("psycopg" not in DRIVERS, reason="psycopg is not selected")
async def test_a_statement_waiting_on_a_frozen_primary_ends_with_its_transaction(
    cluster: LocalCluster,
) -> None:
    from pgrouter.psycopg3 import PoolManager

    cluster.primary.sql("CREATE TABLE held (id int)")
    primary = cluster.primary
    async with PoolManager(cluster.dsn(), refresh_delay=0.2, refresh_timeout=0.5) as pm:
        await pm.ready()
        txn = await pm.transaction()
        await txn.run("INSERT INTO held VALUES (1)", get_result=False)
        waiting = asyncio.ensure_future(txn.run("SELECT pg_sleep(0.2) FROM generate_series(1, 50)"))
        await asyncio.sleep(0.1)
        primary.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(TransactionClosedError, match="stopped serving as primary"):
                await asyncio.wait_for(waiting, 30)
            # Ended by the snapshot that shows the host down, not by the statement's end.
            assert time.monotonic() - started < 8
            await wait_until(lambda: not pm._borrowed, what="its connection to go back")
        finally:
            primary.thaw()
    assert primary.sql("SELECT count(*) FROM held") == "0"


@pytest.mark.skipif("sync_psycopg" not in DRIVERS, reason="sync_psycopg is not selected")
def test_a_frozen_primary_ends_its_open_transactions(cluster: LocalCluster) -> None:
    from pgrouter.sync.psycopg import PoolManager

    cluster.primary.sql("CREATE TABLE held (id int)")
    primary = cluster.primary
    with PoolManager(cluster.dsn(), refresh_delay=0.2, refresh_timeout=0.5) as pm:
        pm.ready()
        _, txn = pm.run("INSERT INTO held VALUES (1)", partial_txn=True)
        primary.freeze()
        try:
            _wait(lambda: txn.closed, what="the transaction to end")
            assert "stopped serving as primary" in (txn.closed_reason or "")
            started = time.monotonic()
            with pytest.raises(TransactionClosedError, match="stopped serving as primary"):
                txn.run("SELECT 1")  # refused at once, not sent to the frozen host
            assert time.monotonic() - started < 5
            _wait(lambda: not pm._state().borrowed, what="its connection to go back")
        finally:
            primary.thaw()
    # Nothing of it was committed.
    _wait(lambda: primary.sql("SELECT count(*) FROM held") == "0", what="the thawed primary")


# -- under gevent -------------------------------------------------------------------------

#: A child interpreter (gevent must patch before anything else is imported): run(),
#: a dry run, and a held transaction ended by txn_timeout while a second writer's
#: greenlet waits on its row lock. The connection's return then runs on the callers'
#: hub (a greenlet spawned there from the monitor's thread). Prints one JSON object.
GEVENT_CHILD = r"""
from gevent import monkey
monkey.patch_all()
import sys
DRIVER, DSN, TABLE = sys.argv[1:4]
if DRIVER == "psycopg2":
    import psycogreen.gevent
    psycogreen.gevent.patch_psycopg()
import importlib, json, time
import gevent
from pgrouter.errors import TransactionClosedError

POOLS = {"psycopg": {"min_size": 1, "max_size": 4}, "psycopg2": {"minconn": 1, "maxconn": 4}}
module = importlib.import_module("pgrouter.sync." + DRIVER)
report = {}
with module.PoolManager(DSN, pool_factory_kwargs=POOLS[DRIVER], txn_timeout=0.5) as pm:
    pm.ready()
    report["read"] = pm.run("SELECT pg_is_in_recovery() AS r", read_only=True)
    report["dry"] = pm.run("SELECT %s AS a", ("it's",), dry_run=True)
    _, txn = pm.run(f"SELECT 1 FROM {TABLE} WHERE id = 1 FOR UPDATE", partial_txn=True)
    writer = gevent.spawn(pm.run, f"UPDATE {TABLE} SET note = 'second' WHERE id = 1")
    deadline = time.monotonic() + 15
    while not txn.closed and time.monotonic() < deadline:
        gevent.sleep(0.02)
    report["closed_reason"] = txn.closed_reason
    writer.join(15)
    report["writer"] = writer.value if writer.successful() else repr(writer.exception)
    try:
        txn.run("SELECT 1")
        report["refused"] = False
    except TransactionClosedError:
        report["refused"] = True
    while pm._state().borrowed and time.monotonic() < deadline:
        gevent.sleep(0.02)
    report["borrowed"] = len(pm._state().borrowed)
print(json.dumps(report))
"""


@pytest.mark.parametrize("sync_driver", sorted(SYNC_MANAGERS))
def test_txn_timeout_under_gevent(shared_cluster: LocalCluster, sync_driver: str) -> None:
    pytest.importorskip("gevent")
    table = _table(shared_cluster)
    child = subprocess.run(
        [sys.executable, "-c", GEVENT_CHILD, sync_driver, shared_cluster.dsn(), table],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["read"] == [{"r": True}]
    assert report["dry"] == "SELECT 'it''s' AS a"
    assert "txn_timeout=0.5 s" in (report["closed_reason"] or "")
    assert report["writer"] == [] and report["refused"] is True
    assert report["borrowed"] == 0
    assert _note(shared_cluster, table) == "second"
