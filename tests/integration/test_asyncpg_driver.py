"""The asyncpg driver on a real server: connections that end under asyncpg's feet.

A server that closes an idle session (a fast shutdown, a backend finding its
postmaster dead in a failover, ``pg_terminate_backend()``,
``idle_session_timeout``) first sends a FATAL ErrorResponse, then the end of
the stream. asyncpg reads the two in different loop iterations; in between,
its protocol is in its error-consuming state (2) and ``is_closed()`` is still
False, so the next operation fails with ``InternalClientError: cannot switch to
state 12 (a query) / 15 (the reset of a release); another operation (2) is in
progress`` (MagicStack/asyncpg#784, #1069). Two loop iterations later asyncpg
knows the connection is closed: its pool reconnects at the next acquire and a
release skips the reset. The driver gives the window the same outcome.

Also: a release whose connection is aborted (or ends) before the task asyncpg
shields its reset in has started fails with "release() called on a free
connection holder", though asyncpg has taken the connection back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from helpers import wait_until

from pgrouter.asyncpg import PoolManager
from pgrouter.eager import start
from pgrouter.testing import LocalCluster, Node

pytestmark = pytest.mark.cluster

#: One connection, so the one the server hung up on is the one handed out next.
ONE_CONNECTION = {"min_size": 1, "max_size": 1}


@pytest.fixture(scope="module")
def one_node() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=0) as cluster:
        yield cluster


def hang_up(node: Node, pid: int) -> None:
    """End session ``pid`` on ``node``; its FATAL and its end of stream wait unread.

    Blocking on purpose: the loop must not run until both are in the client's
    socket. (``pg_terminate_backend`` with a timeout waits for the backend to exit.)
    """
    assert node.sql(f"SELECT pg_terminate_backend({pid}, 10000)") == "t"
    time.sleep(0.05)


async def yield_to_loop(iterations: int) -> None:
    # 1: the loop reads the FATAL; 2: the end of stream is read in this one (still
    # unread when we run); 3: read, the transport is closing, connection_lost() pending.
    for _ in range(iterations):
        await asyncio.sleep(0)


@pytest.mark.parametrize("iterations", [2, 3])
async def test_acquire_skips_a_connection_the_server_hung_up_on(
    one_node: LocalCluster, iterations: int
) -> None:
    async with PoolManager(one_node.dsn(), pool_factory_kwargs=ONE_CONNECTION) as pm:
        await pm.ready()
        async with pm.acquire_master() as connection:
            pid = await connection.fetchval("SELECT pg_backend_pid()")
        hang_up(one_node.primary, pid)
        await yield_to_loop(iterations)

        async with pm.acquire_master() as connection:
            # Was InternalClientError: cannot switch to state 12; another operation (2)
            assert await connection.fetchval("SELECT pg_backend_pid()") != pid
        await pool_whole(pm)


@pytest.mark.parametrize("iterations", [2, 3])
async def test_release_of_a_connection_the_server_hung_up_on(
    one_node: LocalCluster, iterations: int
) -> None:
    async with PoolManager(one_node.dsn(), pool_factory_kwargs=ONE_CONNECTION) as pm:
        await pm.ready()
        # Was InternalClientError (state 15) from the reset, after the block had
        # done its work: a write acknowledged by the server reported as failed.
        async with pm.acquire_master() as connection:
            pid = await connection.fetchval("SELECT pg_backend_pid()")
            hang_up(one_node.primary, pid)
            await yield_to_loop(iterations)

        async with pm.acquire_master() as connection:
            assert await connection.fetchval("SELECT pg_backend_pid()") != pid
        await pool_whole(pm)


async def test_abort_of_a_connection_whose_release_has_started(one_node: LocalCluster) -> None:
    # What the manager does to a release in flight when its host is declared
    # down or superseded: abort() lands between Pool.release() and the first
    # step of the task it shields the reset in.
    async with PoolManager(one_node.dsn(), pool_factory_kwargs=ONE_CONNECTION) as pm:
        await pm.ready()
        connection = await pm.acquire_master()
        rest, _ = start(pm.release(connection))
        assert rest is not None  # waiting for the shielded reset
        pm._driver.abort(connection)
        # Was InternalClientError: PoolConnectionHolder.release() called on a free
        # connection holder (asyncpg took the holder back when the connection ended).
        await rest
        async with pm.acquire_master() as connection:
            assert await connection.fetchval("SELECT 1") == 1
        await pool_whole(pm)


async def pool_whole(pm: PoolManager) -> None:
    """The one pool's connection free again (asyncpg may be reconnecting it: bounded wait)."""
    await wait_until(lambda: pm.get_pool_freesize(pm.pools[0]) == 1, what="the pool whole")
    assert not pm._borrowed
