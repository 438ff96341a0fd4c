"""Hosts dying, coming back and changing role, for every driver, on fresh clusters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import execute, fetchval, server_port, wait_until

from pgrouter import NoHostAvailableError
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

FAST_CHECKS = {"refresh_delay": 0.1, "refresh_timeout": 0.5}


async def test_killed_replica_leaves_the_rotation_and_comes_back(
    cluster: LocalCluster, manager_cls: Any
) -> None:
    victim, survivor = cluster.replicas
    async with manager_cls(cluster.dsn(), **FAST_CHECKS) as pm:
        await pm.ready()
        await asyncio.to_thread(victim.kill)
        await wait_until(lambda: pm.replica_pool_count == 1, what="the killed replica to leave")
        down = next(h for h in pm.topology if h.dsn.port == victim.port)
        assert not down.healthy and down.last_error
        for _ in range(20):
            async with pm.acquire_replica() as conn:
                assert await server_port(conn) == survivor.port

        await asyncio.to_thread(victim.start)
        await wait_until(lambda: pm.replica_pool_count == 2, what="the replica to come back")
        ports = set()
        for _ in range(60):
            async with pm.acquire_replica() as conn:
                ports.add(await server_port(conn))
        assert ports == {victim.port, survivor.port}


async def test_kill_primary_promote_replica_writes_resume(
    cluster: LocalCluster, manager_cls: Any
) -> None:
    old_primary = cluster.primary
    async with manager_cls(cluster.dsn(), **FAST_CHECKS, acquire_timeout=10) as pm:
        await pm.ready()
        async with pm.acquire_master() as conn:
            await execute(conn, "CREATE TABLE t (id int)")
        # Replication is asynchronous: a kill -9 right after the commit would
        # lose the table along with the old primary.
        await asyncio.to_thread(cluster.wait_replicas_caught_up)
        await asyncio.to_thread(old_primary.kill)
        new_primary = await asyncio.to_thread(cluster.failover)

        # A write waits for the new primary instead of failing; no restart.
        async with pm.acquire_master() as conn:
            assert await server_port(conn) == new_primary.port
            await execute(conn, "INSERT INTO t VALUES (1)")
        assert [h.dsn.port for h in pm.topology.primaries] == [new_primary.port]
        async with pm.acquire_replica(timeout=10) as conn:
            assert await server_port(conn) not in (old_primary.port, new_primary.port)


async def test_connection_returns_to_its_pool_after_a_role_change(
    cluster: LocalCluster, manager_cls: Any
) -> None:
    async with manager_cls(cluster.dsn(), **FAST_CHECKS) as pm:
        await pm.ready()
        conn = await pm.acquire_replica()
        port = await server_port(conn)
        pool = next(
            p
            for p in await pm.get_replica_pools()
            if pm.get_pool_freesize(p) < pm._driver.max_size(p)
        )
        node = next(n for n in cluster.nodes if n.port == port)
        await asyncio.to_thread(cluster.primary.kill)
        await asyncio.to_thread(cluster.failover, node)
        await wait_until(lambda: pm.pool_is_master(pool), what="the replica to be seen as primary")
        await pm.release(conn)
        assert pm.get_pool_freesize(pool) == pm._driver.max_size(pool)


async def test_all_hosts_down_then_back(cluster: LocalCluster, manager_cls: Any) -> None:
    async with manager_cls(cluster.dsn(password="hunter2-secret"), **FAST_CHECKS) as pm:
        await pm.ready()
        await asyncio.gather(*(asyncio.to_thread(node.stop, "immediate") for node in cluster.nodes))
        await wait_until(lambda: pm.available_pool_count == 0, what="every host to leave")
        with pytest.raises(NoHostAvailableError) as caught:
            await pm.acquire_master(timeout=0.3)
        message = str(caught.value)
        assert "hunter2-secret" not in message
        for node in cluster.nodes:
            assert f"127.0.0.1:{node.port}: down" in message

        await asyncio.gather(*(asyncio.to_thread(node.start) for node in cluster.nodes))
        async with pm.acquire_master(timeout=10) as conn:
            assert await fetchval(conn, "SELECT 1") == 1
        async with pm.acquire_replica(timeout=10) as conn:
            assert await fetchval(conn, "SELECT pg_is_in_recovery()") is True


async def test_acquire_waits_for_a_host_that_comes_up(
    cluster: LocalCluster, manager_cls: Any
) -> None:
    """An acquire started while no primary exists gets one as soon as it appears."""
    async with manager_cls(cluster.dsn(), **FAST_CHECKS) as pm:
        await pm.ready()
        await asyncio.to_thread(cluster.primary.kill)
        await wait_until(lambda: pm.master_pool_count == 0, what="the primary to leave")
        waiting = asyncio.create_task(_write_port(pm))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        new_primary = await asyncio.to_thread(cluster.failover)
        assert await asyncio.wait_for(waiting, 10) == new_primary.port


async def _write_port(pm: Any) -> int:
    async with pm.acquire_master(timeout=20) as conn:
        return await server_port(conn)


async def test_writer_queued_on_a_dead_primary_is_rerouted(
    cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """A writer waiting in the full pool of a primary that dies gets the new primary.

    Without re-routing it would wait out its whole timeout in a dead pool's
    queue and fail, though a new primary was up long before.
    """
    pm = manager_cls(cluster.dsn(), **FAST_CHECKS, pool_factory_kwargs=small_pools)
    await pm.ready()
    primary_pool = (await pm.get_master_pools())[0]
    held = [await pm.acquire_master() for _ in range(pm._driver.max_size(primary_pool))]
    try:
        queued = asyncio.create_task(_write_port(pm))
        await asyncio.sleep(0.2)
        assert not queued.done()
        await asyncio.to_thread(cluster.primary.kill)
        new_primary = await asyncio.to_thread(cluster.failover)
        assert await asyncio.wait_for(queued, 30) == new_primary.port
    finally:
        for conn in held:
            await pm.release(conn)
        try:
            await asyncio.wait_for(pm.close(), 10)  # a hang here must fail, not time out
        finally:
            await pm.terminate()


async def test_frozen_primary_is_bypassed_before_its_check_times_out(
    cluster: LocalCluster, manager_cls: Any
) -> None:
    """SIGSTOP the primary and promote a replica: writes move before the probe times out.

    The frozen primary's check hangs; after a short while the host is marked
    suspect, every host is re-checked, the promoted replica shows up as a
    second primary on a newer timeline, and the split-brain rule fences the
    frozen one. ``refresh_timeout`` is long here so the ordering is unambiguous:
    writes move while the frozen host has not yet failed its check. (A write sent
    to the frozen host before that hangs with it: no library can answer for it.)
    """
    frozen = cluster.primary
    async with manager_cls(
        cluster.dsn(), refresh_delay=0.2, refresh_timeout=8, acquire_timeout=6
    ) as pm:
        await pm.ready()
        await asyncio.to_thread(frozen.freeze)
        try:
            new_primary = await asyncio.to_thread(cluster.failover)
            await wait_until(
                lambda: [h.dsn.port for h in pm.topology.primaries] == [new_primary.port],
                timeout=6,
                what="writes to move to the promoted replica",
            )
            frozen_state = next(h for h in pm.topology if h.dsn.port == frozen.port)
            assert frozen_state.healthy, "the frozen host's check should not have timed out yet"
            assert frozen_state in pm.topology.fenced
            assert await asyncio.wait_for(_write_port(pm), 6) == new_primary.port
        finally:
            await asyncio.to_thread(frozen.thaw)
