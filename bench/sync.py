"""Sync benchmark: pgrouter's blocking managers against the bare blocking pools, on a real cluster.

Measures acquire + ``SELECT 1`` + release with 1 thread and with ``--threads``
threads sharing one pool (or manager), on the primary and on the replicas, on
a throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and two
streaming replicas on loopback). Contenders, every one opened once and kept
open for the whole run:

- ``bare/psycopg``: ``psycopg_pool.ConnectionPool`` on the primary; for reads,
  one pool per replica, taken in turn: the floor for psycopg 3;
- ``pgrouter/psycopg``: ``pgrouter.sync.psycopg.PoolManager`` on the 3-host DSN;
- ``bare/psycopg2``: ``psycopg2.pool.ThreadedConnectionPool`` guarded by a
  ``threading.BoundedSemaphore`` of its size, so a thread waits for a
  connection instead of getting ``PoolError`` (the fewest steps a waiting
  psycopg2 pool can take): the floor for psycopg2;
- ``pool/psycopg2``: pgrouter's own ``BlockingPsycopg2Pool`` used bare, one
  per host as above: what that pool class costs by itself, apart from routing;
- ``pgrouter/psycopg2``: ``pgrouter.sync.psycopg2.PoolManager``.

Every connection is autocommit. psycopg 3 pools get ``kwargs={"autocommit":
True}``. psycopg2 has no such connection option, and pgrouter's psycopg2 pool
takes only ``minconn``/``maxconn``, so once a pool is open every one of its
connections is borrowed once and set ``autocommit = True`` (the same for the
three psycopg2 contenders); afterwards the benchmark checks the pools were not
replaced (a new pool's connections would not be autocommit).

Method as bench/acquire.py: per workload a warm-up run of every contender,
then ``--rounds`` rounds in which every contender runs once; within a round
the contenders of one driver run back to back in an order rotated each round,
and the two drivers' blocks swap places every other round. Medians over the
rounds; the ratio to the bare pool is taken per round, with its quartiles.
Each run also records the process's CPU time per operation (every thread:
the callers', psycopg_pool's workers, pgrouter's monitors), a steadier view of
what a library costs than throughput when the machine's other load swings.

    python bench/sync.py [--seconds S] [--rounds N] [--threads N] [--quick] [--json PATH]

bench/README.md explains the columns and holds the figures of a run.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg2
import psycopg2.pool
import psycopg_pool
from package_versions import package_versions

import pgrouter.sync.psycopg
import pgrouter.sync.psycopg2
from pgrouter.sync.psycopg2_driver import BlockingPsycopg2Pool
from pgrouter.testing import LocalCluster

#: The target the verdict line checks: pgrouter's throughput at least this share of bare.
TARGET_RATIO = 0.85

#: Operations between two clock reads in the one-thread loop (reading the clock costs too).
BATCH = 16

#: Every acquire waits up to this long: a run's own length bounds the waits, not a timeout.
ACQUIRE_TIMEOUT = 30.0

Op = Callable[[Any], None]


# -- what one operation does with a connection ---------------------------------


def psycopg_select_1(connection: Any) -> None:
    connection.execute("SELECT 1").fetchone()


def psycopg2_select_1(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


QUERY: dict[str, Op] = {"psycopg": psycopg_select_1, "psycopg2": psycopg2_select_1}


@dataclass(frozen=True)
class Workload:
    role: str  # "primary" or "replica"
    threads: int

    @property
    def name(self) -> str:
        shape = "1 thread" if self.threads == 1 else f"{self.threads} threads"
        return f"{self.role}, {shape}, acquire + SELECT 1 + release"


# -- contenders -----------------------------------------------------------------


class Contender(abc.ABC):
    """One way of getting a blocking connection: open(), acquire() as a context, close()."""

    #: "bare", "pool" or "pgrouter"
    library: str

    def __init__(self, driver: str) -> None:
        self.driver = driver  # "psycopg" or "psycopg2"
        self.error: str | None = None  # set when open() failed

    @property
    def name(self) -> str:
        return f"{self.library}/{self.driver}"

    @property
    def is_bare(self) -> bool:
        return self.library == "bare"

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def acquire(self, role: str) -> contextlib.AbstractContextManager[Any]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def check(self) -> None:  # noqa: B027 (most contenders have nothing to check)
        """After the run: raise if the run did not measure what it meant to."""


class InTurn:
    """Pools per role; several (the replicas) are taken in turn, as a hand-written spread."""

    def __init__(self) -> None:
        self.pools: dict[str, list[Any]] = {}
        self._turns = {"primary": itertools.count(), "replica": itertools.count()}

    def next(self, role: str) -> Any:
        pools = self.pools[role]
        return pools[next(self._turns[role]) % len(pools)]


class BarePsycopg(Contender):
    """``psycopg_pool.ConnectionPool`` per host; ``pool.connection()``, as its users write."""

    library = "bare"

    def __init__(self, dsns: dict[str, list[str]], size: int) -> None:
        super().__init__("psycopg")
        self._dsns, self._size = dsns, size
        self._pools = InTurn()

    def open(self) -> None:
        for role, dsns in self._dsns.items():
            self._pools.pools[role] = []
            for dsn in dsns:
                pool = psycopg_pool.ConnectionPool(
                    dsn,
                    min_size=self._size,
                    max_size=self._size,
                    kwargs={"autocommit": True},
                    timeout=ACQUIRE_TIMEOUT,
                    open=False,
                )
                self._pools.pools[role].append(pool)
                pool.open(wait=True)

    def acquire(self, role: str) -> contextlib.AbstractContextManager[Any]:
        return self._pools.next(role).connection()  # type: ignore[no-any-return]

    def close(self) -> None:
        for pools in self._pools.pools.values():
            for pool in pools:
                pool.close()


class _Lent:
    """``with`` around a getconn/putconn pair (a class, not a generator: the cheapest form)."""

    __slots__ = ("_connection", "_get", "_put")

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self._get, self._put = get, put

    def __enter__(self) -> Any:
        self._connection = self._get()
        return self._connection

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._put(self._connection)


class WaitingThreadedPool:
    """``ThreadedConnectionPool`` plus a semaphore of its size: threads wait, never fail.

    The floor for psycopg2: nothing but what a waiting pool must do (one
    semaphore, psycopg2's own locked list); psycopg2's ``putconn`` already rolls
    back a connection left in a transaction and drops a broken one.
    """

    def __init__(self, dsn: str, size: int) -> None:
        self.pool = psycopg2.pool.ThreadedConnectionPool(size, size, dsn)
        self._slots = threading.BoundedSemaphore(size)
        self.size = size

    def getconn(self) -> Any:
        if not self._slots.acquire(timeout=ACQUIRE_TIMEOUT):
            raise TimeoutError(f"no free connection within {ACQUIRE_TIMEOUT:g} s")
        try:
            return self.pool.getconn()
        except BaseException:
            self._slots.release()
            raise

    def putconn(self, connection: Any) -> None:
        try:
            self.pool.putconn(connection)
        finally:
            self._slots.release()

    def closeall(self) -> None:
        self.pool.closeall()


def make_autocommit(get: Callable[[], Any], put: Callable[[Any], None], size: int) -> None:
    """Borrow every connection of a psycopg2 pool at once and set it autocommit."""
    connections = [get() for _ in range(size)]
    for connection in connections:
        connection.autocommit = True
    for connection in connections:
        put(connection)


class BarePsycopg2(Contender):
    """A waiting psycopg2 pool per host (see :class:`WaitingThreadedPool`)."""

    library = "bare"

    def __init__(self, dsns: dict[str, list[str]], size: int) -> None:
        super().__init__("psycopg2")
        self._dsns, self._size = dsns, size
        self._pools = InTurn()

    def open(self) -> None:
        for role, dsns in self._dsns.items():
            self._pools.pools[role] = []
            for dsn in dsns:
                pool = WaitingThreadedPool(dsn, self._size)
                self._pools.pools[role].append(pool)
                make_autocommit(pool.getconn, pool.putconn, self._size)

    def acquire(self, role: str) -> contextlib.AbstractContextManager[Any]:
        pool = self._pools.next(role)
        return _Lent(pool.getconn, pool.putconn)

    def close(self) -> None:
        for pools in self._pools.pools.values():
            for pool in pools:
                pool.closeall()


class PgrouterPoolPsycopg2(Contender):
    """pgrouter's ``BlockingPsycopg2Pool`` used bare: the pool class's cost, no routing."""

    library = "pool"

    def __init__(self, dsns: dict[str, list[str]], size: int) -> None:
        super().__init__("psycopg2")
        self._dsns, self._size = dsns, size
        self._pools = InTurn()

    def open(self) -> None:
        for role, dsns in self._dsns.items():
            self._pools.pools[role] = []
            for dsn in dsns:
                pool = BlockingPsycopg2Pool(dsn, minconn=self._size, maxconn=self._size)
                self._pools.pools[role].append(pool)
                make_autocommit(lambda p=pool: p.getconn(ACQUIRE_TIMEOUT), pool.putconn, self._size)

    def acquire(self, role: str) -> contextlib.AbstractContextManager[Any]:
        pool = self._pools.next(role)
        return _Lent(lambda: pool.getconn(ACQUIRE_TIMEOUT), pool.putconn)

    def close(self) -> None:
        for pools in self._pools.pools.values():
            for pool in pools:
                pool.closeall()


class PgrouterManager(Contender):
    """A pgrouter sync manager on the 3-host DSN: acquire_master() / acquire_replica()."""

    library = "pgrouter"

    def __init__(self, driver: str, make: Callable[[], Any], size: int) -> None:
        super().__init__(driver)
        self._make = make
        self._size = size
        self.manager: Any = None
        self._pools: list[Any] = []

    def open(self) -> None:
        self.manager = self._make()
        self.manager.ready(timeout=30)
        self._pools = list(self.manager.pools)
        if self.driver == "psycopg2":
            # BlockingPsycopg2Pool has no autocommit option: set it once per connection.
            for pool in self._pools:
                make_autocommit(lambda p=pool: p.getconn(ACQUIRE_TIMEOUT), pool.putconn, self._size)

    def acquire(self, role: str) -> contextlib.AbstractContextManager[Any]:
        if role == "primary":
            return self.manager.acquire_master()  # type: ignore[no-any-return]
        return self.manager.acquire_replica()  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close(timeout=10)

    def check(self) -> None:
        if any(now is not before for now, before in zip(self.manager.pools, self._pools)):
            raise RuntimeError("a host's pool was rebuilt during the run (a check failed?)")


def build_contenders(
    cluster_dsn: str, primary_dsn: str, replica_dsns: list[str], size: int
) -> list[Contender]:
    dsns = {"primary": [primary_dsn], "replica": replica_dsns}
    # acquire_timeout: 16 threads queuing on 10 connections must never hit the 1 s default.
    manager_kwargs: dict[str, Any] = {"acquire_timeout": ACQUIRE_TIMEOUT}
    psycopg_kwargs = {"min_size": size, "max_size": size, "kwargs": {"autocommit": True}}
    psycopg2_kwargs = {"minconn": size, "maxconn": size}
    return [
        BarePsycopg(dsns, size),
        PgrouterManager(
            "psycopg",
            lambda: pgrouter.sync.psycopg.PoolManager(
                cluster_dsn, pool_factory_kwargs=dict(psycopg_kwargs), **manager_kwargs
            ),
            size,
        ),
        BarePsycopg2(dsns, size),
        PgrouterPoolPsycopg2(dsns, size),
        PgrouterManager(
            "psycopg2",
            lambda: pgrouter.sync.psycopg2.PoolManager(
                cluster_dsn, pool_factory_kwargs=dict(psycopg2_kwargs), **manager_kwargs
            ),
            size,
        ),
    ]


# -- running --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    ops_per_s: float
    cpu_us: float  # the process's CPU time per operation, every thread of it


def run_one_thread(acquire: Callable[[], Any], op: Op, seconds: float) -> Run:
    """The calling thread looping for ``seconds``."""
    done = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            with acquire() as connection:
                op(connection)
        done += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return Run(done / (now - start), (time.process_time() - cpu) / done * 1e6)


def run_threads(acquire: Callable[[], Any], op: Op, seconds: float, threads: int) -> Run:
    """``threads`` threads looping together for ``seconds``."""
    counts = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    bounds: list[float] = []

    def worker(slot: int) -> None:
        barrier.wait()
        deadline = bounds[0]
        done = 0
        try:
            # The clock is read after every operation, so a run ends on time.
            while time.perf_counter() < deadline:
                with acquire() as connection:
                    op(connection)
                done += 1
        except BaseException as error:
            errors.append(error)
        counts[slot] = done

    workers = [
        threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(threads)
    ]
    for thread in workers:
        thread.start()
    cpu = time.process_time()  # after the threads' start: only the loops are counted
    start = time.perf_counter()
    bounds.append(start + seconds)  # before the barrier opens: every worker sees it
    barrier.wait()
    for thread in workers:
        thread.join(seconds * 5 + 10)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    if any(thread.is_alive() for thread in workers):
        raise TimeoutError(f"a worker thread still runs {end - start:.1f} s after the start")
    if errors:
        raise errors[0]
    done = sum(counts)
    return Run(done / (end - start), cpu / max(done, 1) * 1e6)


def run_once(contender: Contender, workload: Workload, seconds: float) -> Run:
    op = QUERY[contender.driver]
    role = workload.role

    def acquire() -> Any:
        return contender.acquire(role)

    gc.collect()
    if workload.threads == 1:
        return run_one_thread(acquire, op, seconds)
    return run_threads(acquire, op, seconds, workload.threads)


@dataclass
class Cell:
    """The runs of one contender on one workload, and what they add up to."""

    contender: Contender
    workload: Workload
    ops_per_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # vs the bare pool, same round
    cpu_us: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)  # vs the bare pool, same round
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

    @property
    def median_cpu_ratio(self) -> float | None:
        return statistics.median(self.cpu_ratios) if self.cpu_ratios else None


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text.splitlines()[0][:120]


def benchmark(
    contenders: list[Contender],
    workloads: list[Workload],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    progress: Callable[[str], None],
) -> list[Cell]:
    cells: list[Cell] = []

    def attempt(cell: Cell, seconds: float) -> Run | None:
        if cell.contender.error or cell.error:
            return None
        try:
            return run_once(cell.contender, cell.workload, seconds)
        except Exception as error:
            cell.error = describe(error)
            return None

    for workload in workloads:
        group = [Cell(contender, workload) for contender in contenders]
        cells += group
        progress(f"warm-up: {workload.name}")
        for cell in group:
            attempt(cell, warmup)
        # Contenders of one driver run back to back, so a ratio to the bare pool
        # compares runs a second or so apart (CPU steal drifts over seconds).
        blocks: dict[str, list[Cell]] = {}
        for cell in group:
            blocks.setdefault(cell.contender.driver, []).append(cell)
        for round_number in range(rounds):
            progress(f"round {round_number + 1}/{rounds}: {workload.name}")
            results: dict[int, Run] = {}
            order = list(blocks.values())
            if round_number % 2:
                order.reverse()
            for block in order:
                shift = round_number % len(block)
                for cell in block[shift:] + block[:shift]:  # rotate: nobody always runs first
                    result = attempt(cell, seconds)
                    if result is not None:
                        cell.ops_per_s.append(result.ops_per_s)
                        cell.cpu_us.append(result.cpu_us)
                        results[id(cell.contender)] = result
            for cell in group:
                baseline = bare_of(cell, group)
                mine = results.get(id(cell.contender))
                base = results.get(id(baseline.contender))
                if mine is not None and base is not None:
                    cell.ratios.append(mine.ops_per_s / base.ops_per_s)
                    cell.cpu_ratios.append(mine.cpu_us / base.cpu_us)
    return cells


def bare_of(cell: Cell, group: list[Cell]) -> Cell:
    return next(
        other
        for other in group
        if other.contender.is_bare and other.contender.driver == cell.contender.driver
    )


# -- reporting ------------------------------------------------------------------


def table(cells: list[Cell], workloads: list[Workload]) -> str:
    lines: list[str] = []
    header = (
        f"{'contender':<18} {'ops/s':>9} {'µs/op':>8} {'vs bare':>14} {'middle half':>13} "
        f"{'+µs/op':>8}  {'spread':>7} {'cpu µs/op':>10} {'cpu vs bare':>12}"
    )
    for workload in workloads:
        group = [c for c in cells if c.workload is workload]
        verb = "acquire_master()" if workload.role == "primary" else "acquire_replica()"
        shape = "1 thread" if workload.threads == 1 else f"{workload.threads} threads"
        lines += [
            "",
            f"== {workload.role.upper()} ({verb}) — {shape}, acquire + SELECT 1 + release",
            header,
        ]
        for cell in group:
            lines.append(row(cell, group))
    return "\n".join(lines)


def row(cell: Cell, group: list[Cell]) -> str:
    name = cell.contender.name
    error = cell.contender.error or cell.error
    if error or not cell.ops_per_s:
        return f"{name:<18} FAILED: {error or 'no successful run'}"
    baseline = bare_of(cell, group)
    middle = ""
    cpu = statistics.median(cell.cpu_us)
    if cell.contender.is_bare:
        versus, extra, cpu_versus = "(floor)", "", ""
    else:
        cpu_ratio = cell.median_cpu_ratio
        cpu_versus = f"{cpu_ratio:.2f}x" if cpu_ratio is not None else "n/a"
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
        f"{extra:>8}  {spread:>7} {cpu:>10.1f} {cpu_versus:>12}"
    ).rstrip()


def verdict(cells: list[Cell]) -> str:
    """One line: is each pgrouter manager within 15% of its bare pool on every workload?"""
    checked = [c for c in cells if c.contender.library == "pgrouter"]
    if not checked:
        return "VERDICT: no pgrouter result to judge"
    failed = [c for c in checked if c.contender.error or c.error or c.median_ratio is None]
    if failed:
        return "VERDICT: pgrouter FAILED to run: " + "; ".join(
            f"{c.contender.name} {c.workload.name}: {c.contender.error or c.error}" for c in failed
        )
    worst = min(checked, key=lambda c: c.median_ratio or 0.0)
    ratio = worst.median_ratio or 0.0
    outcome = "MEETS" if ratio >= TARGET_RATIO else "MISSES"
    below = [c for c in checked if (c.median_ratio or 0.0) < TARGET_RATIO]
    tail = f" ({len(below)} of {len(checked)} rows below)" if below else ""
    costliest = max(checked, key=lambda c: c.median_cpu_ratio or 0.0)
    cpu_note = (
        f"\nCPU per op (not the target, steadier than throughput on a busy machine): highest "
        f"is {costliest.contender.name}, {costliest.workload.name}, "
        f"{costliest.median_cpu_ratio or 0.0:.2f}x bare"
    )
    return (
        f"VERDICT: pgrouter sync {outcome} the target (>= {TARGET_RATIO:.2f}x the bare pool "
        f"on every workload): worst is {worst.contender.name}, {worst.workload.name}, "
        f"{ratio:.2f}x bare{tail}" + cpu_note
    )


VERSIONS = ("pgrouter", "psycopg", "psycopg-pool", "psycopg2-binary", "aiopg")


def environment(args: argparse.Namespace, server_version: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "postgresql": server_version,
        "versions": package_versions(*VERSIONS),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "threads": args.threads,
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
                "role": cell.workload.role,
                "threads": cell.workload.threads,
                "ops_per_s": cell.ops_per_s,
                "median_ops_per_s": cell.median_ops if cell.ops_per_s else None,
                "median_us_per_op": cell.median_us if cell.ops_per_s else None,
                "ratios_to_bare": cell.ratios,
                "median_ratio_to_bare": cell.median_ratio,
                "cpu_us_per_op": cell.cpu_us,
                "median_cpu_ratio_to_bare": cell.median_cpu_ratio,
                "error": cell.contender.error or cell.error,
            }
            for cell in cells
        ],
    }


# -- main -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="length of one run (s)")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up run length (s)")
    parser.add_argument("--threads", type=int, default=16, help="threads when concurrent")
    parser.add_argument("--pool-size", type=int, default=10, help="min = max size per host")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.2, 3
    if args.warmup is None:
        args.warmup = min(args.seconds, 0.5)
    return args


def run(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    """Benchmark every contender, print the table; returns the results as JSON data."""
    primary = cluster.primary
    replica_dsns = [replica.dsn() for replica in cluster.replicas]
    contenders = build_contenders(cluster.dsn(), primary.dsn(), replica_dsns, args.pool_size)
    workloads = [
        Workload(role, threads) for role in ("primary", "replica") for threads in (1, args.threads)
    ]

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    progress("opening every contender")
    for contender in contenders:
        try:
            contender.open()
        except Exception as error:
            contender.error = f"open failed: {describe(error)}"
    try:
        cells = benchmark(
            contenders,
            workloads,
            seconds=args.seconds,
            warmup=args.warmup,
            rounds=args.rounds,
            progress=progress,
        )
        for contender in contenders:
            if contender.error is None:
                try:
                    contender.check()
                except Exception as error:
                    contender.error = f"invalid run: {describe(error)}"
    finally:
        for contender in contenders:
            with contextlib.suppress(Exception):
                contender.close()

    env = environment(args, primary.sql("SHOW server_version").strip())
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    print(
        f"pgrouter sync benchmark — Python {env['python']}, PostgreSQL {env['postgresql']}, "
        f"{env['cpus']} CPUs\n{versions}\n"
        f"pool min=max={args.pool_size} per host, autocommit; {args.rounds} rounds of "
        f"{args.seconds:g} s each, contenders interleaved; medians over rounds.\n"
        "vs bare = throughput / the bare pool's (same driver, workload and round), median over "
        "rounds; middle half = its quartiles;\n+µs/op = µs/op minus the bare pool's; "
        "spread = half the min-max range of the rounds' ops/s;\n"
        "cpu µs/op = the process's CPU time (every thread) per op, median; cpu vs bare = "
        "median of per-round ratios (lower is better).\n"
        "bare/psycopg2 = ThreadedConnectionPool + semaphore; pool/psycopg2 = pgrouter's "
        "BlockingPsycopg2Pool used bare."
    )
    print(table(cells, workloads))
    line = verdict(cells)
    print("\n" + line)
    return to_json(cells, env, line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("starting a local cluster (primary + 2 replicas)...", file=sys.stderr, flush=True)
    with LocalCluster(replicas=2) as cluster:
        results = run(args, cluster)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
