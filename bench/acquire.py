"""Acquire benchmark: pgrouter and hasql against the bare driver pools, on one real cluster.

Measures acquire + ``SELECT 1`` + release (and acquire + release alone) on a
throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and two streaming
replicas on loopback), in two shapes: one task looping (sequential) and
``--concurrency`` tasks sharing one pool (concurrent). Every contender is opened
once, warmed up, then run in alternating rounds (the order rotates each round)
so drift on a busy two-core machine hits all of them alike. Each result is
compared with the bare pool of the same driver and role, run in the same round.

    python bench/acquire.py [--seconds S] [--rounds N] [--quick] [--json PATH]

bench/README.md explains the columns and holds the figures of a run.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psycopg_pool
from package_versions import package_versions

import pgrouter.asyncpg
import pgrouter.psycopg3
from pgrouter.testing import LocalCluster

#: The target the verdict line checks: pgrouter's throughput at least this share of bare.
TARGET_RATIO = 0.85

#: Operations between two clock reads in the sequential loop (reading the clock costs too).
BATCH = 16

Op = Callable[[Any], Awaitable[None]]


# -- what one operation does with a connection ---------------------------------


async def asyncpg_select_1(connection: Any) -> None:
    await connection.fetchval("SELECT 1")


async def psycopg_select_1(connection: Any) -> None:
    cursor = await connection.execute("SELECT 1")
    await cursor.fetchone()


async def nothing(connection: Any) -> None:
    """Acquire + release alone: isolates what the pool (and the library on top) costs."""


QUERY = {"asyncpg": asyncpg_select_1, "psycopg": psycopg_select_1}


@dataclass(frozen=True)
class Workload:
    name: str
    concurrent: bool
    with_query: bool


WORKLOADS = [
    Workload("sequential, acquire + SELECT 1 + release", concurrent=False, with_query=True),
    Workload("concurrent, acquire + SELECT 1 + release", concurrent=True, with_query=True),
    Workload("sequential, acquire + release only", concurrent=False, with_query=False),
    Workload("concurrent, acquire + release only", concurrent=True, with_query=False),
]


# -- contenders -----------------------------------------------------------------


class Contender(abc.ABC):
    """One way of getting a connection: a name, open(), acquire() as a context, close()."""

    #: "bare", "pgrouter" or "hasql"
    library: str

    def __init__(self, driver: str, role: str) -> None:
        self.driver = driver  # "asyncpg" or "psycopg"
        self.role = role  # "primary" or "replica"
        self.error: str | None = None  # set when open() or a run failed

    @property
    def name(self) -> str:
        return f"{self.library}/{self.driver}"

    @property
    def is_bare(self) -> bool:
        return self.library == "bare"

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    def acquire(self) -> contextlib.AbstractAsyncContextManager[Any]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class BareAsyncpg(Contender):
    """``asyncpg.create_pool`` on each DSN; with several, the pools are taken in turn."""

    library = "bare"

    def __init__(self, dsns: list[str], role: str, pool_kwargs: dict[str, Any]) -> None:
        super().__init__("asyncpg", role)
        self._dsns, self._pool_kwargs = dsns, pool_kwargs
        self._pools: list[asyncpg.Pool] = []
        self._turn = itertools.count()

    async def open(self) -> None:
        for dsn in self._dsns:
            self._pools.append(await asyncpg.create_pool(dsn, **self._pool_kwargs))

    def acquire(self) -> contextlib.AbstractAsyncContextManager[Any]:
        pool = self._pools[next(self._turn) % len(self._pools)]
        return pool.acquire()  # type: ignore[no-any-return]

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()


class BarePsycopg(Contender):
    """``psycopg_pool.AsyncConnectionPool`` on each DSN; with several, taken in turn."""

    library = "bare"

    def __init__(self, dsns: list[str], role: str, pool_kwargs: dict[str, Any]) -> None:
        super().__init__("psycopg", role)
        self._dsns, self._pool_kwargs = dsns, pool_kwargs
        self._pools: list[psycopg_pool.AsyncConnectionPool] = []
        self._turn = itertools.count()

    async def open(self) -> None:
        for dsn in self._dsns:
            pool = psycopg_pool.AsyncConnectionPool(dsn, open=False, **self._pool_kwargs)
            self._pools.append(pool)
            await pool.open(wait=True)

    def acquire(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._pools[next(self._turn) % len(self._pools)].connection()

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()


class ManagerContender(Contender):
    """A pool manager (pgrouter's or hasql's) over every host; writes via acquire_master()."""

    def __init__(
        self,
        library: str,
        driver: str,
        make: Callable[[], Any],
    ) -> None:
        super().__init__(driver, "primary")
        self.library = library
        self._make = make
        self.manager: Any = None

    async def open(self) -> None:
        self.manager = self._make()
        await self.manager.ready(timeout=10)

    def acquire(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.manager.acquire_master()  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self.manager is not None:
            await self.manager.close()

    def reader(self) -> ReaderContender:
        return ReaderContender(self)


class ReaderContender(Contender):
    """The same manager read through acquire_replica(); opened and closed by its writer."""

    def __init__(self, writer: ManagerContender) -> None:
        super().__init__(writer.driver, "replica")
        self.library = writer.library
        self._writer = writer

    async def open(self) -> None:
        if self._writer.error is not None:
            raise RuntimeError(self._writer.error)

    def acquire(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._writer.manager.acquire_replica()  # type: ignore[no-any-return]

    async def close(self) -> None:
        pass  # the writer closes the shared manager


def build_contenders(
    cluster_dsn: str, primary_dsn: str, replica_dsns: list[str], pool_size: int
) -> list[Contender]:
    sizes = {"min_size": pool_size, "max_size": pool_size}
    psycopg_sizes = {**sizes, "kwargs": {"autocommit": True}}
    # The benchmark's own waits are bounded by its run time, not by a 1 s acquire timeout.
    manager_kwargs: dict[str, Any] = {"acquire_timeout": 30}

    def hasql_manager(module: str, pool_kwargs: dict[str, Any]) -> Callable[[], Any]:
        def make() -> Any:
            # Imported here: a broken hasql install shows up in its row, not as a crash.
            import importlib

            cls = importlib.import_module(f"hasql.{module}").PoolManager
            return cls(cluster_dsn, pool_factory_kwargs=pool_kwargs, **manager_kwargs)

        return make

    managers = [
        ManagerContender(
            "pgrouter",
            "asyncpg",
            lambda: pgrouter.asyncpg.PoolManager(
                cluster_dsn, pool_factory_kwargs=dict(sizes), **manager_kwargs
            ),
        ),
        ManagerContender("hasql", "asyncpg", hasql_manager("asyncpg", dict(sizes))),
        ManagerContender(
            "pgrouter",
            "psycopg",
            lambda: pgrouter.psycopg3.PoolManager(
                cluster_dsn, pool_factory_kwargs=dict(psycopg_sizes), **manager_kwargs
            ),
        ),
        ManagerContender("hasql", "psycopg", hasql_manager("psycopg3", dict(psycopg_sizes))),
    ]
    # The floor for reads does what a hand-written spread would: one bare pool
    # per replica, taken in turn, so both sides use the same servers.
    return [
        BareAsyncpg([primary_dsn], "primary", sizes),
        BarePsycopg([primary_dsn], "primary", psycopg_sizes),
        *managers,
        BareAsyncpg(replica_dsns, "replica", sizes),
        BarePsycopg(replica_dsns, "replica", psycopg_sizes),
        *(manager.reader() for manager in managers),
    ]


# -- running --------------------------------------------------------------------


async def run_sequential(contender: Contender, op: Op, seconds: float) -> float:
    """Operations per second of one task looping for ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            async with contender.acquire() as connection:
                await op(connection)
        done += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


async def run_concurrent(contender: Contender, op: Op, seconds: float, tasks: int) -> float:
    """Operations per second of ``tasks`` tasks looping together for ``seconds``."""
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> int:
        # The clock is read after every operation: with 64 tasks a batch of
        # them would let a run overshoot its length by tens of milliseconds.
        done = 0
        while time.perf_counter() < deadline:
            async with contender.acquire() as connection:
                await op(connection)
            done += 1
        return done

    counts = await asyncio.gather(*(worker() for _ in range(tasks)))
    return sum(counts) / (time.perf_counter() - start)


async def run_once(
    contender: Contender, workload: Workload, seconds: float, concurrency: int
) -> float:
    op = QUERY[contender.driver] if workload.with_query else nothing
    gc.collect()
    if workload.concurrent:
        return await run_concurrent(contender, op, seconds, concurrency)
    return await run_sequential(contender, op, seconds)


@dataclass
class Cell:
    """The runs of one contender on one workload, and what they add up to."""

    contender: Contender
    workload: Workload
    ops_per_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # vs the bare pool, same round
    error: str | None = None

    @property
    def median_ops(self) -> float:
        return statistics.median(self.ops_per_s)

    @property
    def median_us(self) -> float:
        return 1e6 / self.median_ops

    @property
    def median_ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


def applies(contender: Contender, workload: Workload) -> bool:
    # Reads are compared with a query only: acquire-only on a replica says nothing new.
    return contender.role == "primary" or workload.with_query


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text.splitlines()[0][:120]


async def benchmark(
    contenders: list[Contender],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> list[Cell]:
    cells = {(id(c), w.name): Cell(c, w) for w in WORKLOADS for c in contenders if applies(c, w)}

    async def attempt(cell: Cell, seconds: float) -> float | None:
        if cell.contender.error or cell.error:
            return None
        try:
            return await asyncio.wait_for(
                run_once(cell.contender, cell.workload, seconds, concurrency),
                timeout=seconds * 5 + 10,
            )
        except Exception as error:
            cell.error = describe(error)
            return None

    for workload in WORKLOADS:
        group = [cells[id(c), workload.name] for c in contenders if applies(c, workload)]
        progress(f"warm-up: {workload.name}")
        for cell in group:
            await attempt(cell, warmup)
        # Contenders of one driver run back to back, so a ratio to the bare pool
        # compares runs a second or two apart: CPU steal on a shared machine
        # drifts over seconds, and a ratio of runs further apart carries it.
        blocks: dict[str, list[Cell]] = {}
        for cell in group:
            blocks.setdefault(cell.contender.driver, []).append(cell)
        for round_number in range(rounds):
            progress(f"round {round_number + 1}/{rounds}: {workload.name}")
            results: dict[int, float] = {}
            order = list(blocks.values())
            if round_number % 2:
                order.reverse()
            for block in order:
                shift = round_number % len(block)
                for cell in block[shift:] + block[:shift]:  # rotate: nobody always runs first
                    ops = await attempt(cell, seconds)
                    if ops is not None:
                        cell.ops_per_s.append(ops)
                        results[id(cell.contender)] = ops
            for cell in group:
                baseline = next(
                    other
                    for other in group
                    if other.contender.is_bare
                    and other.contender.driver == cell.contender.driver
                    and other.contender.role == cell.contender.role
                )
                mine = results.get(id(cell.contender))
                base = results.get(id(baseline.contender))
                if mine is not None and base is not None:
                    cell.ratios.append(mine / base)
    return list(cells.values())


# -- reporting ------------------------------------------------------------------


def table(cells: list[Cell], concurrency: int) -> str:
    lines: list[str] = []
    header = (
        f"{'contender':<18} {'ops/s':>9} {'µs/op':>8} {'vs bare':>14} {'middle half':>13} "
        f"{'+µs/op':>8}  {'spread':>7}"
    )
    sections = [("primary", w) for w in WORKLOADS] + [
        ("replica", w) for w in WORKLOADS if w.with_query
    ]
    for role, workload in sections:
        group = [c for c in cells if c.workload is workload and c.contender.role == role]
        if not group:
            continue
        what = workload.name.replace("concurrent", f"concurrent ({concurrency} tasks)")
        verb = "acquire_master()" if role == "primary" else "acquire_replica()"
        lines += ["", f"== {role.upper()} ({verb}) — {what}", header]
        for cell in group:
            lines.append(row(cell, group))
    return "\n".join(lines)


def row(cell: Cell, group: list[Cell]) -> str:
    name = cell.contender.name
    error = cell.contender.error or cell.error
    if error or not cell.ops_per_s:
        return f"{name:<18} FAILED: {error or 'no successful run'}"
    baseline = next(
        other
        for other in group
        if other.contender.is_bare and other.contender.driver == cell.contender.driver
    )
    middle = ""
    if cell.contender.is_bare:
        versus, extra = "(floor)", ""
    else:
        ratio = cell.median_ratio
        versus = f"{ratio:.2f}x bare" if ratio is not None else "n/a"
        extra = f"{cell.median_us - baseline.median_us:+.1f}" if baseline.ops_per_s else ""
        if len(cell.ratios) >= 2:
            low, _, high = statistics.quantiles(cell.ratios, n=4, method="inclusive")
            middle = f"{low:.2f}-{high:.2f}x"
    runs = cell.ops_per_s
    spread = f"±{(max(runs) - min(runs)) / 2 / statistics.median(runs) * 100:.0f}%"
    return (
        f"{name:<18} {cell.median_ops:>9,.0f} {cell.median_us:>8.1f} {versus:>14} {middle:>13} "
        f"{extra:>8}  {spread:>7}"
    )


def verdict(cells: list[Cell]) -> str:
    """One line: is pgrouter within 15% of the bare pool on every with-query workload?"""
    checked = [c for c in cells if c.contender.library == "pgrouter" and c.workload.with_query]
    if not checked:
        return "VERDICT: no pgrouter result to judge"
    failed = [c for c in checked if c.contender.error or c.error or c.median_ratio is None]
    if failed:
        return "VERDICT: pgrouter FAILED to run: " + "; ".join(
            f"{c.contender.name} {c.contender.role}: {c.contender.error or c.error}" for c in failed
        )
    worst = min(checked, key=lambda c: c.median_ratio or 0.0)
    ratio = worst.median_ratio or 0.0
    outcome = "MEETS" if ratio >= TARGET_RATIO else "MISSES"
    return (
        f"VERDICT: pgrouter {outcome} the target (within {1 - TARGET_RATIO:.0%} of the bare "
        f"pool, i.e. >= {TARGET_RATIO:.2f}x) on every workload with a query: worst is "
        f"{worst.contender.name} {worst.contender.role}, {worst.workload.name}, "
        f"{ratio:.2f}x bare"
    )


def environment(args: argparse.Namespace, server_version: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "postgresql": server_version,
        "versions": package_versions("pgrouter", "hasql", "asyncpg", "psycopg", "psycopg-pool"),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "pool_size": args.pool_size,
    }


def to_json(cells: list[Cell], env: dict[str, Any], verdict_line: str) -> dict[str, Any]:
    return {
        "environment": env,
        "verdict": verdict_line,
        "results": [
            {
                "contender": cell.contender.name,
                "library": cell.contender.library,
                "driver": cell.contender.driver,
                "role": cell.contender.role,
                "workload": cell.workload.name,
                "ops_per_s": cell.ops_per_s,
                "median_ops_per_s": cell.median_ops if cell.ops_per_s else None,
                "median_us_per_op": cell.median_us if cell.ops_per_s else None,
                "ratios_to_bare": cell.ratios,
                "median_ratio_to_bare": cell.median_ratio,
                "error": cell.contender.error or cell.error,
            }
            for cell in cells
        ],
    }


# -- main -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short rounds rather than a few long ones, same total time: each ratio
    # compares adjacent runs, and the median of 25 of them moves less with the
    # machine's drift than the median of 9 (9 x 0.5 s runs read the same code
    # anywhere from 0.78x to 0.86x; 25 x 0.25 s, 0.86x to 0.92x).
    parser.add_argument("--seconds", type=float, default=0.25, help="length of one run (s)")
    parser.add_argument("--rounds", type=int, default=25, help="alternating rounds")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up run length (s)")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks when concurrent")
    parser.add_argument("--pool-size", type=int, default=10, help="min = max size per host")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.2, 3
    if args.warmup is None:
        args.warmup = min(args.seconds, 0.5)
    return args


async def run(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    """Benchmark every contender, print the table; returns the results as JSON data."""
    primary = cluster.primary
    replica_dsns = [replica.dsn() for replica in cluster.replicas]
    contenders = build_contenders(cluster.dsn(), primary.dsn(), replica_dsns, args.pool_size)

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    progress("opening every contender")
    for contender in contenders:
        try:
            await asyncio.wait_for(contender.open(), timeout=30)
        except Exception as error:
            contender.error = f"open failed: {describe(error)}"
    try:
        cells = await benchmark(
            contenders,
            seconds=args.seconds,
            warmup=args.warmup,
            rounds=args.rounds,
            concurrency=args.concurrency,
            progress=progress,
        )
    finally:
        for contender in contenders:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(contender.close(), timeout=10)

    env = environment(args, primary.sql("SHOW server_version").strip())
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"pgrouter acquire benchmark — Python {env['python']}, PostgreSQL {env['postgresql']}, "
        f"{env['cpus']} CPUs\n{versions}\n"
        f"pool min=max={args.pool_size} per host; {args.rounds} rounds of {args.seconds:g} s "
        f"each, contenders interleaved; medians over rounds.\n"
        "vs bare = throughput / the bare pool's (same driver, role and round), median over "
        "rounds; middle half = its quartiles;\n+µs/op = µs/op minus the bare pool's; "
        "spread = half the min-max range of the rounds' ops/s."
    )
    print(table(cells, args.concurrency))
    line = verdict(cells)
    print("\n" + line)
    return to_json(cells, env, line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("starting a local cluster (primary + 2 replicas)...", file=sys.stderr, flush=True)
    with LocalCluster(replicas=2) as cluster:
        results = asyncio.run(run(args, cluster))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
