"""The manager's whole public API against a real 3-node cluster, for every driver.

These tests leave the cluster as they found it, so they share one per module.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Any

import pytest
from helpers import execute, fetchval, server_port, wait_until

from pgrouter import (
    NoHostAvailableError,
    PoolManagerClosedError,
    RandomWeightedBalancerPolicy,
    RoundRobinBalancerPolicy,
)
from pgrouter.testing import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.sync_face]


async def test_writes_go_to_the_primary_and_reads_to_replicas(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    primary_port = shared_cluster.primary.port
    replica_ports = {node.port for node in shared_cluster.replicas}
    async with manager_cls(shared_cluster.dsn()) as pm:
        await pm.ready(timeout=10)
        for _ in range(10):
            async with pm.acquire_master() as conn:
                assert await server_port(conn) == primary_port
                assert await fetchval(conn, "SELECT pg_is_in_recovery()") is False
            async with pm.acquire_replica() as conn:
                assert await server_port(conn) in replica_ports
                assert await fetchval(conn, "SELECT pg_is_in_recovery()") is True
            async with pm.acquire(read_only=True) as conn:
                assert await server_port(conn) in replica_ports


async def test_await_style_acquire_and_release(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    async with manager_cls(shared_cluster.dsn()) as pm:
        await pm.ready()
        pool = (await pm.get_master_pools())[0]
        full = pm.get_pool_freesize(pool)
        conn = await pm.acquire()
        assert pm.get_pool_freesize(pool) == full - 1
        assert await fetchval(conn, "SELECT 1") == 1
        assert pm.is_connection_closed(conn) is False
        await pm.release(conn)
        assert pm.get_pool_freesize(pool) == full
        with pytest.raises(ValueError, match="did not hand out"):
            await pm.release(conn)


async def test_pool_level_api(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    async with manager_cls(shared_cluster.dsn(), refresh_delay=0.1) as pm:
        await pm.ready()
        masters = await pm.get_master_pools()
        replicas = await pm.get_replica_pools()
        assert len(masters) == 1 and len(replicas) == 2
        assert pm.pool_is_master(masters[0]) and not pm.pool_is_replica(masters[0])
        assert all(pm.pool_is_replica(p) and not pm.pool_is_master(p) for p in replicas)
        assert await pm.get_pool(read_only=False) is masters[0]
        assert await pm.get_pool(read_only=True) in replicas
        assert pm.available_pool_count == 3
        assert pm.master_pool_count == 1 and pm.replica_pool_count == 2

        await pm.wait_next_pool_check(timeout=5)
        for pool in masters + replicas:
            latency = pm.get_last_response_time(pool)
            assert latency is not None and 0 < latency < 1

        # acquire_from_pool: as a context manager and awaited, any role.
        replica = replicas[0]
        async with pm.acquire_from_pool(replica) as conn:
            assert await fetchval(conn, "SELECT pg_is_in_recovery()") is True
        conn = await pm.acquire_from_pool(replica)
        await pm.release(conn)  # registered, so release() knows its pool
        conn = await pm.acquire_from_pool(masters[0])
        await pm.release_to_pool(conn, masters[0])
        assert pm.get_pool_freesize(masters[0]) == pm._driver.max_size(masters[0])

        # register_connection: a connection taken from the driver pool directly.
        raw = await pm._driver.acquire(replica, 1.0)
        pm.register_connection(raw, replica)
        await pm.release(raw)
        assert pm.get_pool_freesize(replica) == pm._driver.max_size(replica)
        # release_to_pool() of a connection the manager never recorded.
        raw = await pm._driver.acquire(replica, 1.0)
        assert pm.get_pool_freesize(replica) == pm._driver.max_size(replica) - 1
        await pm.release_to_pool(raw, replica)
        assert pm.get_pool_freesize(replica) == pm._driver.max_size(replica)


async def test_ready_and_wait_helpers(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    pm = manager_cls(shared_cluster.dsn(), refresh_delay=0.1)
    try:
        await pm.ready(masters_count=1, replicas_count=0, timeout=10)
        await pm.wait_masters_ready(1)
        await pm.wait_replicas_ready(2)
        await pm.wait_all_ready()
        await pm.ready()
        with pytest.raises(NoHostAvailableError, match="3 replica"):
            await pm.ready(masters_count=1, replicas_count=3, timeout=0.3)
        before = [host.check_count for host in pm.topology]
        await pm.wait_next_pool_check(timeout=5)
        assert all(h.check_count > b for h, b in zip(pm.topology, before))
    finally:
        await pm.close()


async def test_pool_sizes_are_what_the_caller_asked_for(
    shared_cluster: LocalCluster,
    manager_cls: Any,
    small_pools: dict[str, int],
    small_pool_max_size: int,
) -> None:
    async with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        await pm.ready()
        for pool in pm.pools:
            assert pm._driver.max_size(pool) == small_pool_max_size
            assert pm.get_pool_freesize(pool) == small_pool_max_size
        # All five connections of the primary's pool can be taken at once:
        # the health check does not borrow from the caller's pool.
        conns = [await pm.acquire_master() for _ in range(small_pool_max_size)]
        with pytest.raises(NoHostAvailableError, match="no free connection"):
            await pm.acquire_master(timeout=0.2)
        for conn in conns:
            await pm.release(conn)


async def test_fallback_master_when_there_is_no_replica(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    only_primary = shared_cluster.dsn(nodes=[shared_cluster.primary])
    async with manager_cls(only_primary, acquire_timeout=0.3) as pm:
        await pm.ready()
        with pytest.raises(NoHostAvailableError, match="a replica"):
            await pm.acquire_replica()
        async with pm.acquire_replica(fallback_master=True) as conn:
            assert await fetchval(conn, "SELECT pg_is_in_recovery()") is False
    async with manager_cls(only_primary, fallback_master=True) as pm:
        await pm.ready()
        async with pm.acquire_replica() as conn:
            assert await fetchval(conn, "SELECT pg_is_in_recovery()") is False


async def test_master_as_replica_weight(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    primary_port = shared_cluster.primary.port
    async with manager_cls(shared_cluster.dsn()) as pm:
        await pm.ready()
        for weight, expect_primary in ((1.0, True), (0.0, False)):
            for _ in range(30):
                async with pm.acquire_replica(master_as_replica_weight=weight) as conn:
                    assert (await server_port(conn) == primary_port) is expect_primary
        # Awaited: the sync face checks its arguments when its blocking call runs.
        with pytest.raises(ValueError, match="read_only"):
            await pm.acquire(read_only=False, master_as_replica_weight=0.5)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            await pm.acquire_replica(master_as_replica_weight=1.5)
    # The manager-wide default applies to every read.
    async with manager_cls(shared_cluster.dsn(), master_as_replica_weight=1.0) as pm:
        await pm.ready()
        async with pm.acquire_replica() as conn:
            assert await server_port(conn) == primary_port


async def _replica_ports_of_reads(pm: Any, count: int, hold: bool = False) -> list[int]:
    ports = []
    for _ in range(count):
        async with pm.acquire_replica() as conn:
            ports.append(await server_port(conn))
    return ports


async def test_round_robin_alternates(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    async with manager_cls(shared_cluster.dsn(), balancer_policy=RoundRobinBalancerPolicy) as pm:
        await pm.ready()
        ports = await _replica_ports_of_reads(pm, 20)
        assert len(set(ports)) == 2
        assert all(a != b for a, b in itertools.pairwise(ports)), ports


async def test_greedy_picks_the_pool_with_most_free_connections(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    async with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        await pm.ready()
        held = await pm.acquire_replica()
        busy_port = await server_port(held)
        # The other replica has more free connections, so it gets every read.
        ports = await _replica_ports_of_reads(pm, 10)
        assert busy_port not in ports
        await pm.release(held)
        # With equal free sizes, ties are broken at random: both get traffic.
        ports = await _replica_ports_of_reads(pm, 60)
        assert len(set(ports)) == 2


async def test_greedy_queues_each_waiter_where_the_queue_is_shortest(
    shared_cluster: LocalCluster,
    manager_cls: Any,
    small_pools: dict[str, int],
    small_pool_max_size: int,
) -> None:
    async with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        await pm.ready()
        held = [await pm.acquire_replica() for _ in range(2 * small_pool_max_size)]

        async def read() -> int:
            async with pm.acquire_replica(timeout=20) as conn:
                return await server_port(conn)

        # Every replica connection is taken: each waiter queues on one pool.
        # A random pick among the full pools splits ten waiters 5/5 only one
        # time in four; the shortest queue always does.
        waiters = [asyncio.ensure_future(read()) for _ in range(10)]
        await asyncio.sleep(0.05)
        assert not any(waiter.done() for waiter in waiters)
        for conn in held:
            await pm.release(conn)
        ports = await asyncio.gather(*waiters)
        assert sorted(collections.Counter(ports).values()) == [5, 5], ports


async def test_random_weighted_follows_measured_latency(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    # Long refresh_delay: the latencies the policy weighs stay fixed during the reads.
    async with manager_cls(
        shared_cluster.dsn(), balancer_policy=RandomWeightedBalancerPolicy, refresh_delay=30
    ) as pm:
        await pm.ready()
        replicas = pm.topology.replicas
        counts = collections.Counter(await _replica_ports_of_reads(pm, 300))
        assert [h.latency for h in pm.topology.replicas] == [h.latency for h in replicas]
        weights = {h.dsn.port: 1 / h.latency for h in replicas}
        for port, weight in weights.items():
            expected = weight / sum(weights.values())
            assert abs(counts[port] / 300 - expected) < 0.12, (counts, weights)


async def test_timeout_error_names_every_host_and_no_password(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    secret = "s3cr3t-Pa55"
    port = shared_cluster.primary.port
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:{port},127.0.0.1:1/postgres"
    async with manager_cls(dsn, acquire_timeout=0.5) as pm:
        await pm.ready(masters_count=1, replicas_count=0)
        with pytest.raises(NoHostAvailableError) as caught:
            await pm.acquire_replica()
        message = str(caught.value)
        assert secret not in message and secret not in repr(pm)
        assert f"127.0.0.1:{shared_cluster.primary.port}: primary" in message
        assert "127.0.0.1:1: down" in message
        assert "within 0.5 s" in message
        assert all(secret not in str(host) for host in pm.hosts)


async def test_close_is_graceful(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    pm = manager_cls(shared_cluster.dsn())
    await pm.ready()
    conn = await pm.acquire_master()
    closing = asyncio.create_task(pm.close())
    await asyncio.sleep(0.1)
    assert not closing.done(), "close() must wait for the borrowed connection"
    with pytest.raises(PoolManagerClosedError):
        await pm.acquire_master()
    assert await fetchval(conn, "SELECT 42") == 42  # still usable until released
    await pm.release(conn)
    await asyncio.wait_for(closing, 5)
    assert pm.closed
    with pytest.raises(PoolManagerClosedError):
        await pm.acquire_replica()


async def test_terminate_closes_borrowed_connections(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    pm = manager_cls(shared_cluster.dsn())
    await pm.ready()
    conn = await pm.acquire_master()
    await asyncio.wait_for(pm.terminate(), 5)
    assert pm.is_connection_closed(conn)
    await pm.release(conn)  # a no-op after terminate, not an error
    with pytest.raises(PoolManagerClosedError):
        await pm.acquire_master()


async def test_checks_stop_on_close(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    pm = manager_cls(shared_cluster.dsn(), refresh_delay=0.05)
    await pm.ready()
    await pm.close()
    counts = [host.check_count for host in pm.topology]
    await asyncio.sleep(0.3)
    assert [host.check_count for host in pm.topology] == counts


@pytest.mark.async_only(
    "cancels tasks mid-acquire (task.cancel), and a blocking call cannot be cancelled; "
    "test_sync.py has the blocking face's storm (threads with random short timeouts)"
)
async def test_cancellation_storm_leaks_nothing(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """1 000 acquires cancelled at random points: every pool is whole afterwards."""
    import random

    rng = random.Random(1234)
    async with manager_cls(
        shared_cluster.dsn(), pool_factory_kwargs=small_pools, acquire_timeout=5
    ) as pm:
        await pm.ready()

        async def use(read_only: bool) -> None:
            async with pm.acquire(read_only=read_only) as conn:
                await fetchval(conn, "SELECT pg_sleep(0.002)")

        # Each acquire is cancelled after a random delay: while waiting for a
        # free connection, while the driver connects, mid-query or mid-release.
        loop = asyncio.get_running_loop()
        tasks = []
        for i in range(1000):
            task = asyncio.create_task(use(read_only=i % 3 != 0))
            tasks.append(task)
            if rng.random() < 0.7:
                loop.call_later(rng.random() * 0.05, task.cancel)
            if i % 50 == 0:
                await asyncio.sleep(0.005)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        errors = [r for r in results if isinstance(r, Exception)]
        assert cancelled > 100
        assert not errors, errors[:3]
        assert not pm._borrowed

        def every_pool_whole() -> bool:
            return all(pm.get_pool_freesize(p) == pm._driver.max_size(p) for p in pm.pools)

        await wait_until(every_pool_whole, what="every pool's free size back at its maximum")
        # And the pools still work.
        async with pm.acquire_master() as conn:
            await execute(conn, "SELECT 1")


async def test_the_primary_gets_a_heartbeat_check(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    """The primary is checked every primary_heartbeat while a connection to it is in use;
    idle, and replicas always, every refresh_delay only."""
    async with manager_cls(shared_cluster.dsn(), refresh_delay=30, primary_heartbeat=0.05) as pm:
        await pm.ready()
        before = {host.index: host.check_count for host in pm.topology}
        primary = pm.topology.primaries[0]
        await asyncio.sleep(0.3)  # idle: no heartbeat
        assert pm.topology.hosts[primary.index].check_count == before[primary.index]
        async with pm.acquire_master():
            await wait_until(
                lambda: pm.topology.hosts[primary.index].check_count
                >= before[primary.index] + 5,
                what="five heartbeat checks of the primary while a connection is in use",
            )
        for replica in pm.topology.replicas:
            assert replica.check_count == before[replica.index]  # next one is 30 s away
        await asyncio.sleep(0.1)  # a heartbeat check may still be under way
        idle = pm.topology.hosts[primary.index].check_count
        await asyncio.sleep(0.3)
        assert pm.topology.hosts[primary.index].check_count == idle
        # A connection taken from the pool directly counts as work too.
        (pool,) = await pm.get_master_pools()
        async with pm.acquire_from_pool(pool):
            await wait_until(
                lambda: pm.topology.hosts[primary.index].check_count >= idle + 5,
                what="heartbeat checks while a connection from acquire_from_pool() is in use",
            )
    async with manager_cls(shared_cluster.dsn(), refresh_delay=30, primary_heartbeat=None) as pm:
        await pm.ready()
        counts = [host.check_count for host in pm.topology]
        await asyncio.sleep(0.3)
        assert [host.check_count for host in pm.topology] == counts


async def test_one_server_under_two_names_is_one_server(
    shared_cluster: LocalCluster, manager_cls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The primary listed by address and by its unix socket: no split brain, nothing fenced.

    (As with a service name beside node names, common with Consul and Patroni.)
    The server is told by its system identifier and start time; the first name
    serves it, the second is its alias.
    """
    primary, replica = shared_cluster.primary, shared_cluster.replicas[0]
    dsn = (
        f"host={primary.host},{primary.socket_dir},{replica.host} "
        f"port={primary.port},{primary.port},{replica.port} user=postgres dbname=postgres"
    )
    caplog.set_level(logging.WARNING, logger="pgrouter")
    async with manager_cls(dsn) as pm:
        await pm.ready()
        topology = pm.topology
        assert [h.index for h in topology.primaries] == [0]
        assert topology.aliases == {1: 0}
        assert not topology.split_brain and not topology.fenced
        assert "same server as" in topology.describe_host(topology.hosts[1])
        async with pm.acquire_master() as conn:
            assert await server_port(conn) == primary.port
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_waiters_on_a_stalled_pool_cost_one_stall_check_per_host_not_per_waiter(
    shared_cluster: LocalCluster, manager_cls: Any, driver: str
) -> None:
    """500 acquires queue on a full pool that gives nothing back for 0.6 s.

    The host is checked as stalled once per STALL_DELAY (one timer for the host),
    not once per waiter per 100 ms slice: waiting costs nothing per waiter
    between events. (Counted by wrapping the manager's own _check_now.)
    """
    if driver not in ("asyncpg", "sync_psycopg"):
        pytest.skip("the waits are each face's core, the same for every driver: run once a face")
    sizes = {"min_size": 1, "max_size": 1}
    async with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=sizes) as pm:
        await pm.ready()
        calls = collections.Counter()
        check_now = pm._check_now

        def counted(index: int) -> None:
            calls[index] += 1
            check_now(index)

        pm._check_now = counted
        async with pm.acquire_master():  # the pool's only connection, held throughout

            async def waiter() -> str:
                try:
                    async with pm.acquire_master(timeout=0.6):
                        return "served"
                except NoHostAvailableError:
                    return "timed out"

            outcomes = await asyncio.gather(*(waiter() for _ in range(500)))
        assert set(outcomes) == {"timed out"}
        primary = pm.topology.primaries[0].index
        # 0.6 s / 0.1 s: about 6 stall checks of the primary, whatever the number of waiters.
        assert calls[primary] <= 12, f"{calls[primary]} stall checks for 500 waiters"
