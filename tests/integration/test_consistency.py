"""Lag-bounded reads, read-your-writes by WAL position, pins: against real clusters.

The harness pauses replay on a replica (``pg_wal_replay_pause()``): rows stop
appearing there while the primary takes writes, which is exactly the stale
replica a bounded or token-carrying read must not be served by.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import execute, fetchval, server_port, wait_until

from pgrouter import NoHostAvailableError, WriteToken, current_token, pinning, read_your_writes
from pgrouter.testing import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.sync_face]

#: Checks often enough that lag is measured within a tenth of a second.
FAST = {"refresh_delay": 0.1, "refresh_timeout": 1.0}


@pytest.fixture
def paused_cluster() -> Iterator[LocalCluster]:
    """A primary with two replicas; the first has replay paused; a table to write to."""
    with LocalCluster(replicas=2) as cluster:
        cluster.primary.sql("CREATE TABLE seen (id bigint PRIMARY KEY)")
        cluster.wait_replicas_caught_up()
        cluster.replicas[0].pause_replay()
        yield cluster


async def _write(pm: Any, row_id: int) -> None:
    async with pm.acquire_master() as conn:
        await execute(conn, f"INSERT INTO seen VALUES ({row_id})")


async def _wait_for_lag(pm: Any, port: int, seconds: float = 0.2) -> None:
    """Write once, then wait until the paused replica at ``port`` shows over ``seconds`` of lag."""
    await _write(pm, -port)
    await wait_until(
        lambda: any(
            h.dsn.port == port and (h.lag_bytes or 0) > 0 and (h.lag_seconds or 0) > seconds
            for h in pm.topology
        ),
        what="the paused replica's lag to show",
    )


async def test_a_lag_bound_keeps_reads_off_a_paused_replica(
    paused_cluster: LocalCluster, manager_cls: Any
) -> None:
    paused, live = paused_cluster.replicas
    async with manager_cls(paused_cluster.dsn(), **FAST, max_lag_seconds=0.5) as pm:
        await pm.ready()
        await _wait_for_lag(pm, paused.port, seconds=0.7)
        for row_id in range(30):
            await _write(pm, row_id)
            async with pm.acquire_replica() as conn:  # the manager's bound
                assert await server_port(conn) == live.port
            async with pm.acquire_replica(max_lag_bytes=0) as conn:  # the call's own
                assert await server_port(conn) == live.port
        lagging = next(h for h in pm.topology if h.dsn.port == paused.port)
        assert pm.topology.replication_lag_seconds(lagging) > 0.5
        live_pool = next(pm.pools[h.index] for h in pm.topology if h.dsn.port == live.port)
        for _ in range(10):
            assert await pm.get_pool(True, max_lag_bytes=0) in (live_pool, None)
            assert await pm.get_pool(True) is live_pool
    # Without a bound, the paused replica still serves (it is healthy).
    async with manager_cls(paused_cluster.dsn(), **FAST) as pm:
        await pm.ready()
        ports = set()
        for _ in range(40):
            async with pm.acquire_replica() as conn:
                ports.add(await server_port(conn))
        assert paused.port in ports


async def test_a_bound_no_replica_meets_waits_then_names_every_lag(
    paused_cluster: LocalCluster, manager_cls: Any
) -> None:
    """Both replicas paused: fallback_master reads from the primary, else a timeout naming lags."""
    for replica in paused_cluster.replicas[1:]:
        await asyncio.to_thread(replica.pause_replay)
    async with manager_cls(paused_cluster.dsn(), **FAST) as pm:
        await pm.ready()
        await _wait_for_lag(pm, paused_cluster.replicas[1].port, seconds=0.3)
        await _wait_for_lag(pm, paused_cluster.replicas[0].port, seconds=0.3)
        async with pm.acquire_replica(max_lag_seconds=0.1, fallback_master=True) as conn:
            assert await server_port(conn) == paused_cluster.primary.port
        with pytest.raises(NoHostAvailableError, match=r"at most 0.1 s behind.*lag") as raised:
            async with pm.acquire_replica(max_lag_seconds=0.1, timeout=0.3):
                pass
        assert str(raised.value).count(" lag ") >= 2


async def test_write_then_read_with_a_token_never_misses_its_write(
    paused_cluster: LocalCluster, manager_cls: Any, driver: str
) -> None:
    """Pairs of a write and a read of it, half with an explicit token and half in a scope.

    One replica paused, one keeping up. 10 000 pairs with asyncpg (the core's
    decisions), 400 with each other driver (their token and replay queries).
    """
    pairs = 10_000 if driver == "asyncpg" else 400
    paused = paused_cluster.replicas[0]
    misses: list[int] = []
    async with manager_cls(paused_cluster.dsn(), **FAST) as pm:
        await pm.ready()
        await _wait_for_lag(pm, paused.port)

        async def pair(row_id: int) -> None:
            if row_id % 2:
                async with pm.acquire_master() as conn:
                    await execute(conn, f"INSERT INTO seen VALUES ({row_id})")
                    token = await pm.write_token(conn)
                reading = pm.acquire_replica(after=token, timeout=5)
            else:
                with read_your_writes():
                    await _write(pm, row_id)
                    assert current_token() is not None
                    reading = pm.acquire_replica(timeout=5)
            async with reading as conn:
                found = await fetchval(conn, f"SELECT count(*) FROM seen WHERE id = {row_id}")
                if found != 1:
                    misses.append(row_id)

        async def worker(start: int) -> None:
            for row_id in range(start, pairs, 8):
                await pair(row_id)

        await asyncio.gather(*(worker(start) for start in range(8)))
        counts = pm.token_read_counts
    assert not misses, f"{len(misses)} reads missed their write: {misses[:10]}"
    assert counts["primary"] < pairs / 2, counts  # the live replica served most of them
    assert counts["replica"] + counts["replica_after_wait"] > 0, counts


async def test_a_token_with_every_replica_paused_goes_to_the_primary_within_causal_wait(
    paused_cluster: LocalCluster, manager_cls: Any
) -> None:
    await asyncio.to_thread(paused_cluster.replicas[1].pause_replay)
    async with manager_cls(paused_cluster.dsn(), **FAST, causal_wait=0.2) as pm:
        await pm.ready()
        async with pm.acquire_master() as conn:
            await execute(conn, "INSERT INTO seen VALUES (1)")
            token = await pm.write_token(conn)
        started = time.perf_counter()
        async with pm.acquire_replica(after=token) as conn:
            assert await server_port(conn) == paused_cluster.primary.port
            assert await fetchval(conn, "SELECT count(*) FROM seen WHERE id = 1") == 1
        took = time.perf_counter() - started
        assert took < 2.0, f"the read took {took:.2f} s"  # a bound, not a speed target
        assert pm.token_read_counts["primary"] == 1


async def test_garbled_foreign_and_future_tokens(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    """Garbled: ValueError from parse. Foreign: ignored. Ahead of everything: the primary."""
    with pytest.raises(ValueError):
        WriteToken.parse("w1.zz.1.0.00000000")
    async with manager_cls(shared_cluster.dsn(), **FAST, causal_wait=0.05) as pm:
        await pm.ready()
        async with pm.acquire_master() as conn:
            real = await pm.write_token(conn)
        foreign = WriteToken(real.system_identifier ^ 1, real.timeline, real.lsn + 10**12)
        async with pm.acquire_replica(after=foreign) as conn:
            assert await server_port(conn) in {r.port for r in shared_cluster.replicas}
        assert pm.token_read_counts["ignored"] == 1
        future = WriteToken(real.system_identifier, real.timeline, real.lsn + 10**12)
        async with pm.acquire_replica(after=future) as conn:
            assert await server_port(conn) == shared_cluster.primary.port
        older = WriteToken(real.system_identifier, real.timeline + 5, real.lsn)
        async with pm.acquire_replica(after=older) as conn:  # another timeline: the primary
            assert await server_port(conn) == shared_cluster.primary.port
        assert pm.token_read_counts["primary"] == 2


async def test_monotonic_reads_never_go_back_in_time(
    paused_cluster: LocalCluster, manager_cls: Any
) -> None:
    """Having read from the live replica, a monotonic scope never reads the paused one."""
    paused, live = paused_cluster.replicas
    async with manager_cls(paused_cluster.dsn(), **FAST) as pm:
        await pm.ready()
        await _wait_for_lag(pm, paused.port)
        with read_your_writes(monotonic=True):
            first = None
            while first != live.port:  # the balancer picks either at first
                async with pm.acquire_replica() as conn:
                    first = await server_port(conn)
            for _ in range(30):
                async with pm.acquire_replica() as conn:
                    assert await server_port(conn) != paused.port


async def test_an_idle_primary_shows_no_lag_for_30_s(
    shared_cluster: LocalCluster, manager_cls: Any, driver: str
) -> None:
    if driver != "asyncpg":
        pytest.skip("lag is measured by the monitor, the same for every driver: run once")
    async with manager_cls(shared_cluster.dsn(), **FAST) as pm:
        await pm.ready()
        worst = 0.0
        started = time.perf_counter()
        while time.perf_counter() - started < 30:
            for replica in pm.topology.replicas:
                worst = max(worst, pm.topology.replication_lag_seconds(replica) or 0.0)
            await asyncio.sleep(0.05)
    assert worst < 0.5, f"an idle primary showed {worst:.2f} s of lag"


async def test_pins_of_one_task_never_reach_another(
    shared_cluster: LocalCluster, manager_cls: Any, driver: str
) -> None:
    """1 000 concurrent tasks, half pinned: pinned ones read the primary, the rest replicas."""
    primary = shared_cluster.primary.port
    wrong: list[str] = []
    async with manager_cls(shared_cluster.dsn(), name="orders") as pm:
        await pm.ready()

        async def task(number: int) -> None:
            pinned = number % 2 == 0
            if pinned:
                pinning.pin("orders")
            await asyncio.sleep(0)
            for _ in range(2):
                async with pm.acquire_replica(timeout=30) as conn:
                    port = await server_port(conn)
                if (port == primary) != pinned:
                    wrong.append(f"task {number} pinned={pinned} read from {port}")
                await asyncio.sleep(0)

        tasks = 1000 if driver == "asyncpg" else 200
        await asyncio.gather(*(task(number) for number in range(tasks)))
    assert not wrong, wrong[:5]
    assert not pinning.is_pinned("orders")
