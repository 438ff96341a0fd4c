"""The fault suite: a live workload through the manager while a real cluster breaks.

Each scenario gets a fresh 3-node cluster and runs writers (INSERTs of unique
ids, each acknowledged id recorded with the port that acknowledged it) and
readers through the manager while one fault happens. Afterwards every
scenario checks what the caller saw, that every pool's free size is back at
its maximum, and that no acknowledged write was lost on the final primary.

Replication is synchronous (``ANY 1 (*)``) and failovers promote the most
advanced replica: with asynchronous replication a ``kill -9`` loses the last
acknowledged commits whatever the client does, and this suite tests the
client. Run with ``-s`` to see each scenario's figures (write gap, errors).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import execute, fetchval, server_port, wait_until

from pgrouter import NoHostAvailableError, RandomWeightedBalancerPolicy
from pgrouter.bounded import wait_bounded
from pgrouter.testing import LocalCluster, Node
from pgrouter.testing.proxy import ProxiedCluster

pytestmark = pytest.mark.cluster

#: The drivers this suite runs for (the fault behaviour lives in the core; two drivers suffice).
FAULT_DRIVERS = {"asyncpg": "pgrouter.asyncpg", "psycopg": "pgrouter.psycopg3"}
#: Pool sizes, in each driver's keywords: small, so leaks show.
POOLS = {
    "asyncpg": {"min_size": 0, "max_size": 5},
    "psycopg": {"min_size": 1, "max_size": 5},
}
#: The workload's own bound on one acquire + query: an application's statement timeout.
OP_TIMEOUT = 1.0
#: The workload's acquire timeout: shorter than OP_TIMEOUT, so "no host" surfaces as
#: the manager's NoHostAvailableError rather than as the workload's own timeout.
ACQUIRE_TIMEOUT = 0.5
#: How long a scenario waits for something that should happen (a bound, not a target).
PATIENCE = 15.0


@pytest.fixture
def sync_cluster() -> Iterator[LocalCluster]:
    """A fresh primary + 2 replicas; a commit is acknowledged once a replica has it."""
    with LocalCluster(replicas=2, settings={"synchronous_standby_names": "ANY 1 (*)"}) as cluster:
        cluster.primary.sql("CREATE TABLE fault_log (id bigint PRIMARY KEY)")
        cluster.wait_replicas_caught_up()
        yield cluster


@pytest.fixture(params=sorted(FAULT_DRIVERS))
def fault_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pm_cls(fault_driver: str) -> Any:
    import importlib

    return importlib.import_module(FAULT_DRIVERS[fault_driver]).PoolManager


@pytest.fixture
def pools(fault_driver: str) -> dict[str, int]:
    return dict(POOLS[fault_driver])


# --- the workload -------------------------------------------------------------------


@dataclass
class Workload:
    """Writers and readers running through ``pm`` until :meth:`stop`."""

    pm: Any
    writers: int = 3
    readers: int = 3
    pause: float = 0.002  # between two operations of one task
    acked: set[int] = field(default_factory=set)
    # (loop time of the acknowledgement, port that acknowledged it)
    acks: list[tuple[float, int]] = field(default_factory=list)
    reads: list[tuple[float, int]] = field(default_factory=list)
    write_errors: list[tuple[float, str]] = field(default_factory=list)
    read_errors: list[tuple[float, str]] = field(default_factory=list)
    # One example message per error type, for the report.
    examples: dict[str, str] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running: bool = True

    def start(self) -> Workload:
        self._tasks = [asyncio.create_task(self._write_loop()) for _ in range(self.writers)]
        self._tasks += [asyncio.create_task(self._read_loop()) for _ in range(self.readers)]
        return self

    async def stop(self) -> None:
        self._running = False
        await asyncio.wait_for(asyncio.gather(*self._tasks), PATIENCE)

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    async def _write_once(self, row_id: int) -> None:
        async with self.pm.acquire_master(timeout=ACQUIRE_TIMEOUT) as conn:
            port = await fetchval(
                conn, f"INSERT INTO fault_log (id) VALUES ({row_id}) RETURNING inet_server_port()"
            )
        # Only here, after the commit returned: an abandoned write never gets here.
        self.acked.add(row_id)
        self.acks.append((self.now(), int(port)))

    async def _read_once(self) -> None:
        async with self.pm.acquire_replica(timeout=ACQUIRE_TIMEOUT) as conn:
            port = await server_port(conn)
        self.reads.append((self.now(), port))

    async def _write_loop(self) -> None:
        while self._running:
            try:
                await wait_bounded(self._write_once(next(self._ids)), OP_TIMEOUT)
            except Exception as error:
                self.write_errors.append((self.now(), self._note(error)))
                await asyncio.sleep(0.01)
            await asyncio.sleep(self.pause)

    async def _read_loop(self) -> None:
        while self._running:
            try:
                await wait_bounded(self._read_once(), OP_TIMEOUT)
            except Exception as error:
                self.read_errors.append((self.now(), self._note(error)))
                await asyncio.sleep(0.01)
            await asyncio.sleep(self.pause)

    def _note(self, error: Exception) -> str:
        kind = type(error).__name__
        self.examples.setdefault(kind, str(error).splitlines()[0][:120] if str(error) else "")
        return kind

    def first_ack_after(self, since: float, port: int | None = None) -> float | None:
        for at, acked_port in self.acks:
            if at >= since and (port is None or acked_port == port):
                return at
        return None

    def acked_on(self, port: int) -> bool:
        return any(acked_port == port for _, acked_port in self.acks)

    def summary(self) -> str:
        def count(errors: list[tuple[float, str]]) -> str:
            kinds = collections.Counter(kind for _, kind in errors)
            return f"{len(errors)} {dict(kinds)}" if errors else "0"

        return (
            f"writes acked {len(self.acks)}, write errors {count(self.write_errors)}; "
            f"reads {len(self.reads)}, read errors {count(self.read_errors)}"
            + (f"; examples {self.examples}" if self.examples else "")
        )


# --- shared checks ------------------------------------------------------------------


def report(name: str, **figures: object) -> None:
    parts = ", ".join(f"{key}={value}" for key, value in figures.items())
    print(f"\n[fault] {name}: {parts}")


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


async def pools_whole(pm: Any) -> None:
    """Every current pool's free size back at its maximum (bounded wait)."""

    def whole() -> bool:
        return all(
            pm.get_pool_freesize(pool) == pm._driver.max_size(pool)
            for pool in pm.pools
            if pool is not None
        )

    await wait_until(whole, timeout=PATIENCE, what="every pool's free size back at its maximum")
    assert not pm._borrowed


async def no_acked_write_lost(workload: Workload, primary: Node) -> None:
    text = await asyncio.to_thread(primary.sql, "SELECT string_agg(id::text, ',') FROM fault_log")
    present = {int(part) for part in text.split(",") if part}
    lost = workload.acked - present
    assert not lost, (
        f"{len(lost)} acknowledged writes missing on {primary.name}: {sorted(lost)[:10]}"
    )


_check_ids = itertools.count(-1, -1)


async def writes_work(pm: Any, port: int) -> None:
    """A write through the manager lands on ``port`` and commits, without a restart."""
    async with pm.acquire_master(timeout=5) as conn:
        assert await server_port(conn) == port
        await execute(conn, f"INSERT INTO fault_log (id) VALUES ({next(_check_ids)})")


def failover(cluster: LocalCluster) -> tuple[Node, float]:
    """Promote the most advanced replica, re-point the other; returns it and the promote time."""
    new_primary = cluster.most_advanced_replica()
    started = time.perf_counter()
    cluster.failover(new_primary)
    return new_primary, time.perf_counter() - started


async def rejoin(pm: Any, old: Node, new: Node, proxied: ProxiedCluster | None = None) -> None:
    """Bring the old primary back as a replica of ``new`` and wait until the manager uses it.

    A pool of a host that stays down keeps trying to reconnect in the
    background (psycopg's refills count as taken), so the free sizes are
    compared with everyone back, the old primary's pool rebuilt.
    """
    await asyncio.to_thread(old.rewind_as_replica, new)
    port = old.port if proxied is None else proxied.proxy(old).port
    if proxied is not None:
        proxied.proxy(old).pass_through()
    await wait_until(
        lambda: any(h.dsn.port == port for h in pm.topology.replicas),
        PATIENCE,
        "the old primary to rejoin as a replica",
    )


async def steady(workload: Workload, seconds: float = 0.3) -> None:
    """Let the workload run a moment and make sure it really writes and reads."""
    writes, reads = len(workload.acks), len(workload.reads)
    await asyncio.sleep(seconds)
    assert len(workload.acks) > writes and len(workload.reads) > reads, workload.summary()


# --- scenarios ----------------------------------------------------------------------


async def test_kill_primary_and_promote(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    old = sync_cluster.primary
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools) as pm:
        await pm.ready()
        workload = Workload(pm).start()
        await steady(workload)

        fault_at = workload.now()
        await asyncio.to_thread(old.kill)
        new, promote_took = await asyncio.to_thread(failover, sync_cluster)
        await wait_until(
            lambda: workload.acked_on(new.port), PATIENCE, "a write on the new primary"
        )
        await steady(workload)
        await workload.stop()

        gap = workload.first_ack_after(fault_at, new.port)
        assert gap is not None
        report(
            "kill -9 primary + promote",
            write_gap=ms(gap - fault_at),
            failover_incl_promote=ms(promote_took),
            summary=workload.summary(),
        )
        # Replicas never went away: reads failed at most while a replica was promoted.
        assert len(workload.read_errors) <= 3 * workload.readers, workload.summary()
        await writes_work(pm, new.port)
        await rejoin(pm, old, new)
        await pools_whole(pm)
        await no_acked_write_lost(workload, new)


async def test_freeze_primary_and_promote(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    old = sync_cluster.primary
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools) as pm:
        await pm.ready()
        workload = Workload(pm).start()
        await steady(workload)
        try:
            fault_at = workload.now()
            await asyncio.to_thread(old.freeze)
            new, promote_took = await asyncio.to_thread(failover, sync_cluster)
            await wait_until(
                lambda: not any(h.dsn.port == old.port for h in pm.topology.primaries),
                PATIENCE,
                "the frozen primary to leave the rotation",
            )
            left_at = workload.now()
            await wait_until(
                lambda: workload.acked_on(new.port), PATIENCE, "a write on the new primary"
            )
            await steady(workload)
        finally:
            await asyncio.to_thread(old.thaw)
        # Thawed, the old primary claims primary on the old timeline: it must stay fenced.
        await wait_until(
            lambda: any(h.dsn.port == old.port for h in pm.topology.fenced),
            PATIENCE,
            "the thawed old primary to be fenced",
        )
        thawed_at = workload.now()
        await steady(workload)
        await workload.stop()

        gap = workload.first_ack_after(fault_at, new.port)
        assert gap is not None
        report(
            "SIGSTOP primary + promote",
            out_of_rotation=ms(left_at - fault_at),
            write_gap=ms(gap - fault_at),
            failover_incl_promote=ms(promote_took),
            summary=workload.summary(),
        )
        assert left_at - fault_at < 2.5 + promote_took
        assert {port for at, port in workload.acks if at >= thawed_at} == {new.port}
        await writes_work(pm, new.port)
        await rejoin(pm, old, new)
        await pools_whole(pm)
        await no_acked_write_lost(workload, new)


async def test_replica_killed_mid_query(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    primary = sync_cluster.primary
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools) as pm:
        await pm.ready()
        workload = Workload(pm).start()
        await steady(workload)

        async with pm.acquire_replica() as conn:
            port = await server_port(conn)
            victim = next(n for n in sync_cluster.nodes if n.port == port)
            survivor = next(n for n in sync_cluster.replicas if n is not victim)
            long_query = asyncio.create_task(fetchval(conn, "SELECT pg_sleep(30)"))
            await asyncio.sleep(0.2)
            fault_at = workload.now()
            await asyncio.to_thread(victim.kill)
            with pytest.raises(Exception) as caught:  # any driver's error
                await asyncio.wait_for(long_query, 5)
            assert pm._driver.is_host_error(caught.value), repr(caught.value)
            caller_error_after = workload.now() - fault_at
        await wait_until(
            lambda: all(h.dsn.port != victim.port for h in pm.topology.replicas),
            PATIENCE,
            "the killed replica to leave the rotation",
        )
        left_at = workload.now()
        await steady(workload)
        await workload.stop()

        late_reads = {port for at, port in workload.reads if at > left_at}
        report(
            "replica killed mid-query",
            caller_error=f"{type(caught.value).__name__} after {ms(caller_error_after)}",
            out_of_rotation=ms(left_at - fault_at),
            summary=workload.summary(),
        )
        assert late_reads == {survivor.port}
        # Reads in flight on the victim fail: at most one per reader.
        assert len(workload.read_errors) <= workload.readers, workload.summary()
        assert not workload.write_errors, workload.summary()
        await asyncio.to_thread(victim.start)
        await wait_until(lambda: pm.replica_pool_count == 2, PATIENCE, "the replica to come back")
        await pools_whole(pm)
        await no_acked_write_lost(workload, primary)


async def test_network_blackhole_of_the_primary(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    old = sync_cluster.primary
    with ProxiedCluster(sync_cluster) as proxied:
        async with pm_cls(proxied.dsn(), pool_factory_kwargs=pools) as pm:
            await pm.ready()
            workload = Workload(pm).start()
            await steady(workload)

            fault_at = workload.now()
            proxied.proxy(old).blackhole()
            old_proxy_port = proxied.proxy(old).port
            failing_over = asyncio.create_task(asyncio.to_thread(failover, sync_cluster))
            # Target 2 s; the bound leaves room for a loaded 2-core machine.
            await wait_until(
                lambda: all(h.dsn.port != old_proxy_port for h in pm.topology.primaries),
                3.0,
                "the blackholed primary to leave the rotation",
            )
            left_at = workload.now()
            new, promote_took = await failing_over
            await wait_until(
                lambda: workload.acked_on(new.port), PATIENCE, "a write on the new primary"
            )
            await steady(workload)
            await workload.stop()
            # End of the outage for good: RST what the blackhole holds, so the
            # connections stuck in it fail and go back to their pools.
            proxied.proxy(old).reset()

            gap = workload.first_ack_after(fault_at, new.port)
            assert gap is not None
            report(
                "network blackhole of the primary + promote",
                out_of_rotation=ms(left_at - fault_at),
                write_gap=ms(gap - fault_at),
                failover_incl_promote=ms(promote_took),
                summary=workload.summary(),
            )
            await writes_work(pm, new.port)
            await rejoin(pm, old, new, proxied)
            await pools_whole(pm)
            await no_acked_write_lost(workload, new)


async def test_latency_on_one_replica_moves_reads_away(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    slow, fast = sync_cluster.replicas
    with ProxiedCluster(sync_cluster) as proxied:
        # The weighted policy follows the median probe time over the stopwatch
        # window: a short window (and checks every 0.1 s) so it moves within a second.
        async with pm_cls(
            proxied.dsn(),
            pool_factory_kwargs=pools,
            balancer_policy=RandomWeightedBalancerPolicy,
            refresh_delay=0.1,
            stopwatch_window_size=5,
        ) as pm:
            await pm.ready()
            workload = Workload(pm).start()
            await steady(workload, 0.5)
            before = collections.Counter(port for _, port in workload.reads)

            proxied.proxy(slow).add_latency(0.2)
            slow_port = proxied.proxy(slow).port

            def slow_weighed() -> bool:
                host = pm.topology.hosts[[p.port for p in proxied.proxies].index(slow_port)]
                return host.latency is not None and host.latency >= 0.3

            await wait_until(slow_weighed, PATIENCE, "the slow replica's latency to show")
            since = workload.now()
            await asyncio.sleep(1.5)
            after = collections.Counter(port for at, port in workload.reads if at >= since)
            await workload.stop()
            proxied.proxy(slow).pass_through()

            report(
                "200 ms latency on one replica",
                reads_before={"slow": before[slow.port], "fast": before[fast.port]},
                reads_after={"slow": after[slow.port], "fast": after[fast.port]},
                summary=workload.summary(),
            )
            assert before[slow.port] > 0 and before[fast.port] > 0
            share = after[slow.port] / max(1, after[slow.port] + after[fast.port])
            assert share < 0.1, (after, share)
            # Reads that still go to the slow replica (a few per hundred) can outlast
            # the workload's timeouts: a psycopg read there is 2 round trips of 400 ms.
            assert not workload.write_errors, workload.summary()
            late_errors = [at for at, _ in workload.read_errors if at >= since + OP_TIMEOUT]
            assert len(late_errors) <= max(3, 0.03 * sum(after.values())), workload.summary()
            await pools_whole(pm)
            await no_acked_write_lost(workload, sync_cluster.primary)


async def test_all_hosts_down_for_5_s_then_back(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    primary = sync_cluster.primary
    nodes = sync_cluster.nodes
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools) as pm:
        await pm.ready()
        workload = Workload(pm).start()
        await steady(workload)

        fault_at = workload.now()
        await asyncio.gather(*(asyncio.to_thread(node.stop, "immediate") for node in nodes))
        await wait_until(lambda: pm.available_pool_count == 0, PATIENCE, "every host to leave")
        left_at = workload.now()
        for read_only in (False, True):
            with pytest.raises(NoHostAvailableError) as caught:
                await pm.acquire(read_only=read_only, timeout=0.3)
            for node in nodes:
                assert f"127.0.0.1:{node.port}: down" in str(caught.value)
        await asyncio.sleep(max(0.0, 5.0 - (workload.now() - fault_at)))
        back_at = workload.now()
        # Operations begun once every host was known down (those in flight at
        # the stop failed with the driver's connection errors).
        outage_errors = [
            (at, kind)
            for at, kind in workload.write_errors + workload.read_errors
            if left_at + OP_TIMEOUT < at < back_at
        ]

        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        await wait_until(
            lambda: bool(workload.first_ack_after(back_at)), PATIENCE, "writes to come back"
        )
        await pm.ready(timeout=PATIENCE)
        await steady(workload)
        await workload.stop()

        first_ack = workload.first_ack_after(back_at)
        assert first_ack is not None
        report(
            "all hosts down 5 s, then back",
            out_of_rotation=ms(left_at - fault_at),
            write_gap_from_restart=ms(first_ack - back_at),
            write_gap_total=ms(first_ack - fault_at),
            summary=workload.summary(),
        )
        # While every host was known down, callers saw NoHostAvailableError only.
        assert outage_errors
        assert {kind for _, kind in outage_errors} == {"NoHostAvailableError"}, outage_errors[:5]
        await writes_work(pm, primary.port)
        await pools_whole(pm)
        await no_acked_write_lost(workload, primary)


async def test_terminate_every_pooled_connection(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    primary = sync_cluster.primary
    terminate = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools) as pm:
        await pm.ready()
        workload = Workload(pm).start()
        await steady(workload)

        fault_at = workload.now()
        killed = await asyncio.gather(
            *(asyncio.to_thread(node.sql, terminate) for node in sync_cluster.nodes)
        )
        await steady(workload, 1.0)
        await workload.stop()

        first_ack = workload.first_ack_after(fault_at + 0.05)
        report(
            "pg_terminate_backend of every pooled connection",
            terminated=sum(int(k) for k in killed),
            summary=workload.summary(),
        )
        # Each connection that was terminated fails at most one call.
        pool_connections = 3 * pm._driver.max_size(pm.pools[0])
        assert len(workload.write_errors) + len(workload.read_errors) <= pool_connections
        # Every host stayed up: a broken check connection must not take one out of the
        # rotation (it did, for a whole refresh_delay, before the checker retried it).
        kinds = {kind for _, kind in workload.write_errors + workload.read_errors}
        assert "NoHostAvailableError" not in kinds, workload.summary()
        assert first_ack is not None
        await writes_work(pm, primary.port)
        async with pm.acquire_replica() as conn:
            assert await fetchval(conn, "SELECT pg_is_in_recovery()") is True
        await pools_whole(pm)
        await no_acked_write_lost(workload, primary)


async def test_old_primary_returns_as_a_second_primary(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    old = sync_cluster.primary
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools) as pm:
        await pm.ready()
        workload = Workload(pm).start()
        await steady(workload)

        fault_at = workload.now()
        await asyncio.to_thread(old.kill)
        new, promote_took = await asyncio.to_thread(failover, sync_cluster)
        await wait_until(
            lambda: workload.acked_on(new.port), PATIENCE, "a write on the new primary"
        )

        # Back WITHOUT a rewind: a primary again, on the old timeline. Without
        # standbys its commits would wait forever; make them succeed at once,
        # so a write routed to it would be acknowledged and then lost.
        restarted_at = workload.now()
        await asyncio.to_thread(old.start)
        await asyncio.to_thread(old.sql, "ALTER SYSTEM SET synchronous_standby_names = ''")
        await asyncio.to_thread(old.sql, "SELECT pg_reload_conf()")
        await wait_until(
            lambda: [h.dsn.port for h in pm.topology.fenced] == [old.port],
            PATIENCE,
            "the old primary to be fenced",
        )
        fenced_at = workload.now()
        assert [h.dsn.port for h in pm.topology.primaries] == [new.port]
        await steady(workload, 1.0)
        await workload.stop()

        gap = workload.first_ack_after(fault_at, new.port)
        assert gap is not None
        report(
            "split brain (old primary back without rewind)",
            write_gap=ms(gap - fault_at),
            failover_incl_promote=ms(promote_took),
            summary=workload.summary(),
        )
        assert old.port not in {port for at, port in workload.acks if at >= restarted_at}, (
            "a write went to the old primary after it came back"
        )
        assert old.port not in {port for at, port in workload.reads if at >= fenced_at}
        for _ in range(20):
            await writes_work(pm, new.port)
        await rejoin(pm, old, new)
        await pools_whole(pm)
        await no_acked_write_lost(workload, new)


async def test_10000_cancelled_acquires_during_a_failover(
    sync_cluster: LocalCluster, pm_cls: Any, pools: dict[str, int]
) -> None:
    rng = random.Random(4321)
    old = sync_cluster.primary
    async with pm_cls(sync_cluster.dsn(), pool_factory_kwargs=pools, acquire_timeout=5) as pm:
        await pm.ready()

        async def use(read_only: bool) -> None:
            async with pm.acquire(read_only=read_only) as conn:
                await fetchval(conn, "SELECT pg_sleep(0.001)")

        loop = asyncio.get_running_loop()
        tasks = []
        failing_over: asyncio.Future[tuple[Node, float]] | None = None
        started = time.perf_counter()
        for i in range(10_000):
            task = asyncio.create_task(use(read_only=i % 3 != 0))
            tasks.append(task)
            if rng.random() < 0.7:
                loop.call_later(rng.random() * 0.05, task.cancel)
            if i % 100 == 0:
                await asyncio.sleep(0.005)
            if i == 3_000:

                def kill_and_failover() -> tuple[Node, float]:
                    old.kill()
                    return failover(sync_cluster)

                failing_over = asyncio.ensure_future(asyncio.to_thread(kill_and_failover))
        assert failing_over is not None
        results = await asyncio.gather(*tasks, return_exceptions=True)
        new, _ = await failing_over
        took = time.perf_counter() - started

        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        errors = [r for r in results if isinstance(r, Exception)]
        kinds = collections.Counter(type(e).__name__ for e in errors)
        examples = {type(e).__name__: str(e)[:300] for e in errors}
        report(
            "10 000 acquires, random cancellation, failover",
            took=f"{took:.1f} s",
            cancelled=cancelled,
            ok=len(results) - cancelled - len(errors),
            errors=dict(kinds),
            examples=examples,
        )
        assert cancelled > 1000
        # Only what a failover explains: the killed host's errors, or no primary in time.
        # asyncpg detaches a pooled connection that dies under its caller, whose next
        # call then fails with "released back to the pool"; a connection whose server
        # sent FATAL and closed fails with InternalClientError "another operation".
        unexplained = [
            e
            for e in errors
            if not (
                isinstance(e, NoHostAvailableError)
                or pm._driver.is_host_error(e)
                or "released back to the pool" in str(e)
                or "another operation" in str(e)
            )
        ]
        assert not unexplained, unexplained[:3]
        assert not pm._borrowed
        await writes_work(pm, new.port)
        await rejoin(pm, old, new)
        await pools_whole(pm)


async def test_a_release_stuck_on_a_dead_connection_is_cut_at_the_bound(
    sync_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg resets a connection on release with a round trip; a silently dead
    connection never answers. The manager aborts it at the driver's bound, and
    the pool takes it back as broken. (asyncpg only: psycopg's release does not
    wait on the server.)"""
    from pgrouter.asyncpg import PoolManager
    from pgrouter.drivers.asyncpg import AsyncpgDriver

    monkeypatch.setattr(AsyncpgDriver, "release_timeout", 0.5)
    primary = sync_cluster.primary
    with ProxiedCluster(sync_cluster) as proxied:
        async with PoolManager(
            proxied.dsn(), pool_factory_kwargs=dict(POOLS["asyncpg"]), primary_heartbeat=None
        ) as pm:
            await pm.ready()
            outcome: list[str] = []
            started = time.perf_counter()
            try:
                async with pm.acquire_master() as conn:
                    await fetchval(conn, "SELECT 1")
                    proxied.proxy(primary).blackhole()
                    started = time.perf_counter()
            except Exception as error:  # the reset failed: asyncpg says so, as it would bare
                outcome.append(type(error).__name__)
            took = time.perf_counter() - started
            report("release on a blackholed connection", took=ms(took), outcome=outcome)
            assert 0.4 < took < 3.0, f"the release took {took:.2f} s with a 0.5 s bound"
            assert not pm._releasing
            proxied.proxy(primary).pass_through()
            await pools_whole(pm)
            async with pm.acquire_master(timeout=5) as conn:
                assert await fetchval(conn, "SELECT 1") == 1
