"""Waiters benchmark: a queue of N acquires served when the primary comes back.

The primary is stopped; N tasks call ``acquire_master(timeout=60)`` (and give
the connection straight back, no query) on a pool of min = max = 5; then the
primary starts again. Measured: from the snapshot that shows the primary again
to the last waiter served, beside a bare pool of the same size serving a queue
of N acquires on a running primary (the floor: a bare pool cannot wait across
a down primary at all). Also: how many were served, how many failed, the
primary's probe time while the queue drains, and whether every pool is whole
afterwards.

    python bench/waiters.py [--waiters 1000,10000] [--driver asyncpg,psycopg] [--runs N]

Target (issue 9): every waiter served, at most 1.5x the bare pool's time.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from package_versions import describe_versions

from pgrouter.testing import LocalCluster

POOL_SIZE = 5
ACQUIRE_TIMEOUT = 60.0
TARGET_RATIO = 1.5


async def serve_bare(driver: str, dsn: str, waiters: int) -> float:
    """Seconds a bare pool of POOL_SIZE takes to serve ``waiters`` queued acquires."""
    if driver == "asyncpg":
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)

        async def one() -> None:
            connection = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
            await pool.release(connection)

        close: Callable[[], Awaitable[None]] = pool.close
    else:
        import psycopg_pool

        pool = psycopg_pool.AsyncConnectionPool(
            dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False
        )
        await pool.open(wait=True)

        async def one() -> None:
            connection = await pool.getconn(timeout=ACQUIRE_TIMEOUT)
            await pool.putconn(connection)

        close = pool.close
    go = asyncio.Event()

    async def queued() -> None:
        await go.wait()
        await one()

    try:
        # The tasks exist before the clock starts, as pgrouter's waiters do.
        tasks = [asyncio.create_task(queued()) for _ in range(waiters)]
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - started
    finally:
        await close()


async def serve_pgrouter(
    driver: str, cluster: LocalCluster, waiters: int
) -> dict[str, Any]:
    """The same queue through pgrouter, formed while the primary is down."""
    module = "pgrouter.asyncpg" if driver == "asyncpg" else "pgrouter.psycopg3"
    manager_cls = __import__(module, fromlist=["PoolManager"]).PoolManager
    sizes = {"min_size": POOL_SIZE, "max_size": POOL_SIZE}
    primary = cluster.primary
    served = failed = 0
    errors: dict[str, int] = {}
    async with manager_cls(cluster.dsn(), pool_factory_kwargs=sizes) as pm:
        await pm.ready()
        await asyncio.to_thread(primary.stop)
        await pm._board.wait_for(lambda s: not s.primaries, 30)

        async def one() -> None:
            nonlocal served, failed
            try:
                async with pm.acquire_master(timeout=ACQUIRE_TIMEOUT):
                    pass
                served += 1
            except Exception as error:
                failed += 1
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1

        tasks = [asyncio.create_task(one()) for _ in range(waiters)]
        await asyncio.sleep(1.0)  # every waiter is queued, and the primary hunt runs
        back = asyncio.ensure_future(pm._board.wait_for(lambda s: bool(s.primaries), None))
        await asyncio.to_thread(primary.start)
        await back
        published = time.perf_counter()
        probe_times: list[float] = []

        async def watch_probes() -> None:
            while True:
                host = pm.topology.hosts[0]
                if host.last_latency is not None:
                    probe_times.append(host.last_latency)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_probes())
        await asyncio.gather(*tasks)
        took = time.perf_counter() - published
        watcher.cancel()
        whole = all(
            pm.get_pool_freesize(pool) == pm._driver.max_size(pool)
            for pool in pm.pools
            if pool is not None
        )
    return {
        "seconds": took,
        "served": served,
        "failed": failed,
        "errors": errors,
        "max_probe_ms": max(probe_times, default=0.0) * 1000,
        "whole": whole,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", default="1000,10000")
    parser.add_argument("--driver", default="asyncpg,psycopg")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = [int(part) for part in args.waiters.split(",")]
    drivers = [part.strip() for part in args.driver.split(",")]
    print(f"# {describe_versions('pgrouter', 'asyncpg', 'psycopg', 'psycopg-pool')}")
    print(f"# Python {platform.python_version()}, pool min = max = {POOL_SIZE}, {args.runs} runs")
    print("| driver | waiters | bare (s) | pgrouter (s) | ratio | served | failed | "
          "max probe | pools whole |")
    print("|---|---|---|---|---|---|---|---|---|")
    verdict = True
    with LocalCluster(replicas=2) as cluster:
        for driver in drivers:
            for count in counts:
                bare_times, ours = [], []
                for _ in range(args.runs):
                    bare_times.append(await serve_bare(driver, cluster.primary.dsn(), count))
                    ours.append(await serve_pgrouter(driver, cluster, count))
                bare = statistics.median(bare_times)
                mine = statistics.median(run["seconds"] for run in ours)
                served = min(run["served"] for run in ours)
                failed = max(run["failed"] for run in ours)
                probe = max(run["max_probe_ms"] for run in ours)
                whole = all(run["whole"] for run in ours)
                ratio = mine / bare
                verdict &= ratio <= TARGET_RATIO and served == count and whole
                errors = {k: v for run in ours for k, v in run["errors"].items()}
                print(f"| {driver} | {count} | {bare:.3f} | {mine:.3f} | {ratio:.2f}x | "
                      f"{served} | {failed}{' ' + str(errors) if errors else ''} | "
                      f"{probe:.1f} ms | {'yes' if whole else 'NO'} |", flush=True)
    print(f"\nverdict: {'MEETS' if verdict else 'MISSES'} the target "
          f"(all served, <= {TARGET_RATIO}x the bare pool, pools whole)")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
