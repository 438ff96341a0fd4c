"""The psycopg driver ends ``async with`` as ``pool.connection()`` does, against a real cluster.

Clean exit: commit. An error (cancellation too): roll back, and the error
propagates. A failed commit raises and the connection still goes back. An
explicit ``release()`` is ``putconn()``: what was left open is rolled back.
Psycopg only: the other drivers are autocommit or reset on release (README).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from helpers import wait_until

from pgrouter.psycopg3 import PoolManager
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

#: Connections are not autocommit (psycopg's default): every statement opens a
#: transaction that the end of ``async with`` must commit or roll back.
POOLS = {"min_size": 1, "max_size": 2}


@pytest.fixture
async def pm(shared_cluster: LocalCluster) -> AsyncIterator[PoolManager]:
    async with PoolManager(shared_cluster.dsn(), pool_factory_kwargs=dict(POOLS)) as manager:
        await manager.ready()
        yield manager


@pytest.fixture
async def table(shared_cluster: LocalCluster) -> AsyncIterator[str]:
    """A new table; the unique key is checked at COMMIT, so a commit can fail for real."""
    name = f"events_{uuid.uuid4().hex[:8]}"
    async with await _observer(shared_cluster) as conn:
        await conn.execute(f"CREATE TABLE {name} (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    yield name
    async with await _observer(shared_cluster) as conn:
        await conn.execute(f"DROP TABLE {name}")


async def _observer(cluster: LocalCluster) -> psycopg.AsyncConnection[Any]:
    """A connection of its own to the primary: sees only what was committed."""
    return await psycopg.AsyncConnection.connect(cluster.primary.dsn(), autocommit=True)


async def _committed_ids(cluster: LocalCluster, table: str) -> list[int]:
    async with await _observer(cluster) as conn:
        cursor = await conn.execute(f"SELECT id FROM {table} ORDER BY id")
        return [row[0] for row in await cursor.fetchall()]


def _primary_pool_is_whole(pm: PoolManager) -> bool:
    [pool] = [pool for pool in pm.pools if pool is not None and pm.pool_is_master(pool)]
    return pm.get_pool_freesize(pool) == POOLS["max_size"]


async def test_a_clean_exit_commits(
    pm: PoolManager, shared_cluster: LocalCluster, table: str
) -> None:
    async with pm.acquire_master() as conn:
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
    [master] = await pm.get_master_pools()
    async with pm.acquire_from_pool(master) as conn:  # every block exit, not only the balancer's
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
    assert await _committed_ids(shared_cluster, table) == [1, 2]
    assert _primary_pool_is_whole(pm)


async def test_an_error_rolls_back_and_propagates(
    pm: PoolManager, shared_cluster: LocalCluster, table: str
) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pm.acquire_master() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            raise Boom
    assert await _committed_ids(shared_cluster, table) == []
    assert _primary_pool_is_whole(pm)
    # The connection came back clean: the next block's work is its own.
    async with pm.acquire_master() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
    assert await _committed_ids(shared_cluster, table) == [2]


async def test_a_cancelled_block_rolls_back(
    pm: PoolManager, shared_cluster: LocalCluster, table: str
) -> None:
    inserted = asyncio.Event()

    async def writer() -> None:
        async with pm.acquire_master() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            inserted.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(writer())
    await inserted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _committed_ids(shared_cluster, table) == []
    assert _primary_pool_is_whole(pm)


async def test_a_failed_commit_raises_and_the_connection_goes_back(
    pm: PoolManager, shared_cluster: LocalCluster, table: str
) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pm.acquire_master() as conn:
            # Both inserts succeed; the deferred unique key fails the COMMIT.
            await conn.execute(f"INSERT INTO {table} VALUES (1), (1)")
    assert await _committed_ids(shared_cluster, table) == []
    assert _primary_pool_is_whole(pm)
    async with pm.acquire_master() as conn:  # and it is usable
        await conn.execute(f"INSERT INTO {table} VALUES (3)")
    assert await _committed_ids(shared_cluster, table) == [3]


async def test_explicit_release_rolls_back_as_putconn_does(
    pm: PoolManager, shared_cluster: LocalCluster, table: str
) -> None:
    conn = await pm.acquire_master()
    try:
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
    finally:
        await pm.release(conn)
    assert await _committed_ids(shared_cluster, table) == []
    # What the caller commits itself stays committed.
    conn = await pm.acquire_master()
    try:
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
        await conn.commit()
    finally:
        await pm.release(conn)
    assert await _committed_ids(shared_cluster, table) == [2]
    assert _primary_pool_is_whole(pm)


async def test_a_block_inside_close_is_committed_before_the_pools_close(
    shared_cluster: LocalCluster, table: str
) -> None:
    pm = PoolManager(shared_cluster.dsn(), pool_factory_kwargs=dict(POOLS))
    await pm.ready()
    inserted = asyncio.Event()

    async def writer() -> None:
        async with pm.acquire_master() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            inserted.set()

    task = asyncio.create_task(writer())
    await inserted.wait()
    await pm.close()  # waits for the borrowed connection, commit included
    await task
    assert await _committed_ids(shared_cluster, table) == [1]


async def test_a_block_left_with_a_query_running_refuses_to_commit(
    pm: PoolManager, shared_cluster: LocalCluster, table: str
) -> None:
    with pytest.raises(psycopg.InterfaceError, match="nothing was committed"):
        async with pm.acquire_master() as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            rows = conn.cursor().stream("SELECT generate_series(1, 100000)")
            async for _ in rows:
                break  # the stream is left unfinished: the query still runs
    assert await _committed_ids(shared_cluster, table) == []
    await rows.aclose()
    # The pool closed that connection; it is whole again once it opened another.
    await wait_until(lambda: _primary_pool_is_whole(pm), what="the pool whole again")


async def test_a_connection_closed_in_the_block_is_left_to_the_pool(pm: PoolManager) -> None:
    async with pm.acquire_master() as conn:
        await conn.execute("SELECT 1")
        await conn.close()
    await wait_until(lambda: _primary_pool_is_whole(pm), what="the pool whole again")
    async with pm.acquire_master() as conn:
        assert not conn.closed
