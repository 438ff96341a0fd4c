"""Hosts dying, coming back and changing role, for every driver, on fresh clusters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import execute, fetchval, server_port, wait_until

from pgrouter import NoHostAvailableError
from pgrouter.testing import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.sync_face]

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


@pytest.mark.async_only(
    "a fresh cluster per run: test_sync.py runs this fault for the sync managers once, "
    "under a writer thread, with a bound on when writes resume"
)
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


@pytest.mark.async_only(
    "open-loop writes bounded by asyncio.wait_for, which cannot end a blocking query; "
    "test_sync.py runs this fault for the sync managers with a thread per write"
)
async def test_frozen_primary_thawed_after_a_promotion_acknowledges_nothing(
    cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """Freeze the primary, promote a replica, thaw the old primary 1.5 s later.

    Asynchronous replication and an open-loop write every 5 ms. The writes in
    flight on the frozen primary would complete at the thaw, acknowledged by a
    server whose timeline was superseded, and be missing on the new primary.
    Once the promoted replica is seen, every connection to the frozen primary is
    cut at the socket: those callers fail at once, and nothing the old primary
    says afterwards reaches anyone. Checked: no acknowledged write is missing on
    the new primary, and no write call outlasts the failover's detection by
    more than 0.3 s.
    """
    old = cluster.primary
    old.sql("CREATE TABLE thaw_log (id bigint PRIMARY KEY)")
    await asyncio.to_thread(cluster.wait_replicas_caught_up)
    loop = asyncio.get_running_loop()
    acked: dict[int, tuple[float, int]] = {}  # id -> (loop time of the ack, port)
    durations: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
    tasks: set[asyncio.Task[None]] = set()

    async with manager_cls(cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        await pm.ready()

        async def write(row_id: int) -> None:
            started = loop.time()
            outcome = "acked"
            try:
                async with pm.acquire_master(timeout=3) as conn:
                    port = await asyncio.wait_for(
                        fetchval(
                            conn,
                            f"INSERT INTO thaw_log VALUES ({row_id}) RETURNING inet_server_port()",
                        ),
                        3,
                    )
                acked[row_id] = (loop.time() - frozen_at, port)
            except Exception as error:
                outcome = type(error).__name__
            durations.append((started, loop.time() - started, outcome))

        async def open_loop(until: asyncio.Event) -> None:
            row_id = 0
            while not until.is_set():
                row_id += 1
                task = asyncio.create_task(write(row_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(0.005)

        stop = asyncio.Event()
        frozen_at = loop.time() + 0.5
        writer = asyncio.create_task(open_loop(stop))
        await asyncio.sleep(0.5)
        frozen_at = loop.time()
        await asyncio.to_thread(old.freeze)
        try:
            new = await asyncio.to_thread(cluster.failover)
            await wait_until(
                lambda: [h.dsn.port for h in pm.topology.primaries] == [new.port],
                what="writes to move to the promoted replica",
            )
            detected = loop.time() - frozen_at
            await asyncio.sleep(1.5)
        finally:
            await asyncio.to_thread(old.thaw)
        await asyncio.sleep(1.0)  # the thawed primary answers whatever it still had
        stop.set()
        await writer
        if tasks:
            await asyncio.wait(set(tasks), timeout=10)
        assert pm.topology.hosts[0].index in pm.topology.superseded

    present = {
        int(row) for row in new.sql("SELECT string_agg(id::text, ',') FROM thaw_log").split(",")
    }
    lost = sorted(set(acked) - present)
    assert not lost, (
        f"{len(lost)} acknowledged writes missing on the new primary (id: seconds after the "
        f"freeze, port; old primary {old.port}, detected at {detected:.3f} s): "
        + ", ".join(f"{i}: {acked[i][0]:.3f} s, {acked[i][1]}" for i in lost[:10])
    )
    slowest = max(durations, key=lambda entry: entry[1])
    assert slowest[1] <= detected + 0.3, (
        f"a write call took {slowest[1]:.3f} s ({slowest[2]}); the failover was detected "
        f"{detected:.3f} s after the freeze"
    )
    assert any(at > frozen_at + detected for at, _, outcome in durations if outcome == "acked")


@pytest.mark.async_only(
    "the callers end their queries on the frozen host with asyncio.wait_for, "
    "which cannot interrupt a blocking query"
)
async def test_a_connection_given_back_to_a_frozen_host_is_cut_not_reset(
    cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """Freeze the primary under three callers whose queries then time out (no promotion).

    Giving their connections back must not reset them through the frozen
    server's socket (asyncpg's reset would wait out its 10 s release bound):
    the host is declared down within refresh_timeout, and a connection of a
    host that is down is cut, not reset. Each caller leaves its ``async with``
    within a second of its query's timeout (of the moment its ``wait_for`` raised).
    """
    frozen = cluster.primary
    loop = asyncio.get_running_loop()
    async with manager_cls(
        cluster.dsn(), refresh_timeout=0.5, pool_factory_kwargs=small_pools
    ) as pm:
        await pm.ready()

        async def caller() -> float:
            timed_out_at = None
            try:
                async with pm.acquire_master() as conn:
                    try:
                        await asyncio.wait_for(fetchval(conn, "SELECT 1 FROM pg_sleep(0.3)"), 1.5)
                    except asyncio.TimeoutError:
                        timed_out_at = loop.time()
                        raise
            except asyncio.TimeoutError:
                pass
            assert timed_out_at is not None, "the query on the frozen host did not time out"
            return loop.time() - timed_out_at

        callers = [asyncio.create_task(caller()) for _ in range(3)]
        await asyncio.sleep(0.1)
        await asyncio.to_thread(frozen.freeze)
        try:
            # psycopg's own cancellation of a query (a cancel request, then a
            # wait for the server) takes up to 10 s on a frozen server, inside
            # the caller's wait_for: the bound here is the caller's, not ours.
            done, pending = await asyncio.wait(callers, timeout=15)
            assert not pending, "a caller still waits on the frozen host 15 s after the freeze"
            lingered = [task.result() for task in done]
            assert max(lingered) < 1.0, f"callers left their async with {lingered} s late"
            assert any(h.dsn.port == frozen.port and not h.healthy for h in pm.topology)
        finally:
            await asyncio.to_thread(frozen.thaw)
