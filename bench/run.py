"""run() benchmark: ``pm.run("SELECT 1")`` against acquire + execute + release by hand.

On a throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and two
streaming replicas on loopback), for three managers side by side in one run:
``pgrouter.asyncpg``, ``pgrouter.psycopg3`` and the blocking
``pgrouter.sync.psycopg``. For each, two contenders on the very same manager:

- ``by hand``: ``conn = pm.acquire(...)``, the driver's own query call with its
  rows fetched (asyncpg ``fetch()``, psycopg ``execute()`` + ``fetchall()``),
  ``pm.release(conn)``: the floor ``run()`` adds its work to;
- ``run()``: ``pm.run("SELECT 1", read_only=...)``: the same steps plus
  argument checks, rows as dicts, the retry's bookkeeping.

Workloads: the primary and the replicas (``read_only=True``), with one caller
and with ``--tasks`` callers at once (tasks on the async managers, threads on
the blocking one). psycopg connections are autocommit (``kwargs={"autocommit":
True}``), so neither contender pays a COMMIT: what is compared is the
library's own cost. Method: a warm-up run of each contender, then ``--rounds``
rounds, in each of which both contenders run ``--seconds`` each, in an order
that alternates round by round; the ratio run()/by hand is taken per round and
its median (and quartiles) reported with the median throughputs. The process's
CPU time per operation (every thread: callers, pool workers, the monitor) is
reported too, with its ratio: steadier than throughput when the machine's
other load swings.

    python bench/run.py [--seconds S] [--rounds N] [--tasks N] [--quick] [--json PATH]

bench/README.md holds the figures of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from package_versions import package_versions

import pgrouter.asyncpg
import pgrouter.psycopg3
import pgrouter.sync.psycopg
from pgrouter.testing import LocalCluster

QUERY = "SELECT 1"
#: Generous: a run's length bounds the waits, not a timeout.
ACQUIRE_TIMEOUT = 30.0
POOL_SIZE = 16


# -- async contenders --------------------------------------------------------------


async def asyncpg_by_hand(pm: Any, read_only: bool) -> None:
    conn = await pm.acquire(read_only=read_only)
    try:
        await conn.fetch(QUERY)
    finally:
        await pm.release(conn)


async def psycopg_by_hand(pm: Any, read_only: bool) -> None:
    conn = await pm.acquire(read_only=read_only)
    try:
        cursor = await conn.execute(QUERY)
        await cursor.fetchall()
    finally:
        await pm.release(conn)


async def by_run(pm: Any, read_only: bool) -> None:
    await pm.run(QUERY, read_only=read_only)


async def measure_async(
    op: Callable[[Any, bool], Awaitable[None]],
    pm: Any,
    read_only: bool,
    tasks: int,
    seconds: float,
) -> tuple[float, float]:
    """(operations per second, CPU seconds per operation) of ``tasks`` tasks running
    ``op`` for ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    counts = [0] * tasks

    async def worker(slot: int) -> None:
        while loop.time() < deadline:
            await op(pm, read_only)
            counts[slot] += 1

    started, cpu = loop.time(), time.process_time()
    await asyncio.gather(*(worker(slot) for slot in range(tasks)))
    ops = sum(counts)
    return ops / (loop.time() - started), (time.process_time() - cpu) / ops


# -- sync contenders ---------------------------------------------------------------


def sync_by_hand(pm: Any, read_only: bool) -> None:
    conn = pm.acquire(read_only=read_only).connection
    try:
        conn.execute(QUERY).fetchall()
    finally:
        pm.release(conn)


def sync_by_run(pm: Any, read_only: bool) -> None:
    pm.run(QUERY, read_only=read_only)


def measure_sync(
    op: Callable[[Any, bool], None], pm: Any, read_only: bool, tasks: int, seconds: float
) -> tuple[float, float]:
    deadline = time.monotonic() + seconds
    counts = [0] * tasks

    def worker(slot: int) -> None:
        while time.monotonic() < deadline:
            op(pm, read_only)
            counts[slot] += 1

    started, cpu = time.monotonic(), time.process_time()
    if tasks == 1:
        worker(0)
    else:
        threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(tasks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ops = sum(counts)
    return ops / (time.monotonic() - started), (time.process_time() - cpu) / ops


# -- the run -------------------------------------------------------------------------


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarize(
    face: str, workload: str, hand: list[tuple[float, float]], run: list[tuple[float, float]]
) -> dict[str, Any]:
    """Medians over the rounds; ratios run()/by hand taken per round (throughput, CPU per op)."""
    q1, median, q3 = quartiles([r[0] / h[0] for r, h in zip(run, hand)])
    cpu_ratio = statistics.median(r[1] / h[1] for r, h in zip(run, hand))
    return {
        "face": face,
        "workload": workload,
        "by_hand_ops": statistics.median(h[0] for h in hand),
        "run_ops": statistics.median(r[0] for r in run),
        "ratio": median,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "by_hand_cpu_us": statistics.median(h[1] for h in hand) * 1e6,
        "run_cpu_us": statistics.median(r[1] for r in run) * 1e6,
        "cpu_ratio": cpu_ratio,
    }


async def bench_async(
    face: str, manager: Any, by_hand: Any, dsn: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    pools: dict[str, Any] = {"min_size": POOL_SIZE, "max_size": POOL_SIZE}
    if face == "psycopg":
        pools["kwargs"] = {"autocommit": True}
    results = []
    async with manager(dsn, pool_factory_kwargs=pools, acquire_timeout=ACQUIRE_TIMEOUT) as pm:
        await pm.ready()
        for read_only in (False, True):
            for tasks in (1, args.tasks):
                workload = f"{'replica' if read_only else 'primary'}, {tasks} task(s)"
                for op in (by_hand, by_run):  # warm-up
                    await measure_async(op, pm, read_only, tasks, min(args.seconds, 0.2))
                hand: list[tuple[float, float]] = []
                run: list[tuple[float, float]] = []
                for round_number in range(args.rounds):
                    order = [(by_hand, hand), (by_run, run)]
                    for op, sink in order if round_number % 2 == 0 else order[::-1]:
                        sink.append(await measure_async(op, pm, read_only, tasks, args.seconds))
                results.append(summarize(face, workload, hand, run))
                print_row(results[-1])
    return results


def bench_sync(dsn: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    pools = {"min_size": POOL_SIZE, "max_size": POOL_SIZE, "kwargs": {"autocommit": True}}
    results = []
    with pgrouter.sync.psycopg.PoolManager(
        dsn, pool_factory_kwargs=pools, acquire_timeout=ACQUIRE_TIMEOUT
    ) as pm:
        pm.ready()
        for read_only in (False, True):
            for tasks in (1, args.tasks):
                workload = f"{'replica' if read_only else 'primary'}, {tasks} thread(s)"
                for op in (sync_by_hand, sync_by_run):
                    measure_sync(op, pm, read_only, tasks, min(args.seconds, 0.2))
                hand: list[tuple[float, float]] = []
                run: list[tuple[float, float]] = []
                for round_number in range(args.rounds):
                    order = [(sync_by_hand, hand), (sync_by_run, run)]
                    for op, sink in order if round_number % 2 == 0 else order[::-1]:
                        sink.append(measure_sync(op, pm, read_only, tasks, args.seconds))
                results.append(summarize("sync psycopg", workload, hand, run))
                print_row(results[-1])
    return results


def print_row(row: dict[str, Any]) -> None:
    print(
        f"| {row['face']} | {row['workload']} | {row['by_hand_ops']:,.0f} | "
        f"{row['run_ops']:,.0f} | {row['ratio']:.2f}x ({row['ratio_q1']:.2f}-"
        f"{row['ratio_q3']:.2f}) | {row['by_hand_cpu_us']:.0f} / {row['run_cpu_us']:.0f} | "
        f"{row['cpu_ratio']:.2f}x |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per contender per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=16, help="callers at once, 2nd workload")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s: a smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 0.2, 3
    print(f"python {platform.python_version()}, {package_versions()}", file=sys.stderr)
    print(
        "| manager | workload | by hand (ops/s) | run() (ops/s) | run()/by hand (q1-q3) "
        "| CPU µs/op, by hand / run() | CPU run()/by hand |"
    )
    print("|---|---|---|---|---|---|---|")
    with LocalCluster(replicas=2) as cluster:
        dsn = cluster.dsn()
        results = asyncio.run(
            bench_async("asyncpg", pgrouter.asyncpg.PoolManager, asyncpg_by_hand, dsn, args)
        )
        results += asyncio.run(
            bench_async("psycopg", pgrouter.psycopg3.PoolManager, psycopg_by_hand, dsn, args)
        )
        results += bench_sync(dsn, args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(args), "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
