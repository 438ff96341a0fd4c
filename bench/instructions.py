"""Instructions per operation: what pgrouter costs the client's CPU, counted by callgrind.

``bench/acquire.py`` measures throughput, and on this shared two-core VM a throughput
ratio swings by ±50 % from one round to the next: the three servers compete with the
client for two cores, and the VM itself shares its host (CPU steal measured ~5 % under
load). Such a ratio cannot tell a
5 % overhead from none. The number of instructions the client process executes does not
depend on who else is running: it only depends on the code that runs. And under
contention (64 tasks on a 10-connection pool) the client's CPU is the bottleneck, so
its instructions per operation are what the library's overhead costs in throughput.

For each contender, this script runs the client under ``valgrind --tool=callgrind``
twice, for a short and a long count of "acquire + ``SELECT 1`` + release" operations,
and reports ``(Ir_long - Ir_short) / (ops_long - ops_short)``: the difference cancels
the interpreter start, the imports, opening and closing the pools. Only the client is
counted; the servers of one throwaway :class:`~pgrouter.testing.LocalCluster` (a
primary and two streaming replicas, started here, outside valgrind) do not run under
it. The child also checks, before its loop, that it talks to a primary or a replica as
its role says (a constant cost, cancelled by the difference).

    python bench/instructions.py [--ops N] [--tasks N [N ...]] [--threads N [N ...]] [--jobs N]
                                 [--driver async|sync|all|DRIVER] [--role primary|replica|all]

``--driver sync`` counts the blocking face the same way (issue 11's workload: 1 and
16 threads, ``--threads``): ``pgrouter.sync.psycopg.PoolManager`` against a bare
``psycopg_pool.ConnectionPool``, ``pgrouter.sync.psycopg2.PoolManager`` against a
psycopg2 ``ThreadedConnectionPool`` with a semaphore (threads wait instead of
getting ``PoolError``), every connection autocommit. Callgrind runs one thread at a
time and counts them all: the monitor's thread too, idle here (no checks during
the run), and a thread waiting for the GIL sleeps in the kernel, where nothing is
counted. ``pgrouter.sync.manager.SLICE`` is raised like ``STALL_DELAY``.

Contenders mirror ``bench/acquire.py``: the bare ``asyncpg`` and ``psycopg_pool`` pools
(min = max = 10 connections, psycopg in autocommit) against pgrouter's managers over
the three hosts; for reads, one bare pool per replica taken in turn against
``acquire_replica()``. Defaults: ``--ops 2500`` (the short run does a fifth of it),
``--tasks 64 1`` (concurrent, then sequential: one table each), every driver and role,
``--jobs 2`` valgrind runs at a time (counts do not depend on what else runs): 8
contenders x 2 task counts x 2 runs of 15-60 s each, about 7 minutes on this two-core VM.

Under valgrind the client runs ~50x slower, so timers sized for native speed would
fire and add work that a native run never does: the manager is built with
``refresh_delay=1000`` and ``primary_heartbeat=None`` (no background checks during
the run) and ``pgrouter.manager.STALL_DELAY`` is raised to 1000 s in the child (no
100 ms wait slices expiring while an acquire queues). The per-acquire work is the
same; only timeouts that cannot expire natively are kept from expiring. Counts are
still not bit-exact: how many replies one event-loop turn finds ready depends on the
servers' timing, which moves a figure by about ±1-2 % from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from package_versions import describe_versions

#: The target the verdict line checks: pgrouter at most this many times bare's instructions.
TARGET_RATIO = 1.15

#: min = max connections of every pool, per host, as in bench/acquire.py.
POOL_SIZE = 10

#: Timeouts in the child, generous: under valgrind everything is ~50x slower.
SLOW_TIMEOUT = 300.0

#: A run that takes longer than this (s) is stuck.
CHILD_TIMEOUT = 900.0

ASYNC_DRIVERS = ("asyncpg", "psycopg")
#: The blocking face (pgrouter.sync), against psycopg_pool.ConnectionPool and a
#: psycopg2 ThreadedConnectionPool with a semaphore (as bench/sync.py's floors).
SYNC_DRIVERS = ("sync_psycopg", "sync_psycopg2")
DRIVERS = ASYNC_DRIVERS + SYNC_DRIVERS
ROLES = ("primary", "replica")
LIBRARIES = ("bare", "pgrouter")

Op = Callable[[Any], Awaitable[None]]
#: Returns an async context manager that gives a connection (pgrouter's is not an
#: AbstractAsyncContextManager).
Acquire = Callable[[], Any]


@dataclass(frozen=True)
class Contender:
    library: str  # "bare" or "pgrouter"
    driver: str  # "asyncpg" or "psycopg"
    role: str  # "primary" or "replica"

    @property
    def name(self) -> str:
        return f"{self.library}/{self.driver}"

    @property
    def key(self) -> str:
        """How the parent names this contender on the child's command line."""
        return f"{self.library}/{self.driver}/{self.role}"

    @classmethod
    def from_key(cls, key: str) -> Contender:
        library, driver, role = key.split("/")
        if library not in LIBRARIES or driver not in DRIVERS or role not in ROLES:
            raise ValueError(f"unknown contender {key!r}")
        return cls(library, driver, role)


# -- the child: N operations, run under valgrind -----------------------------------


async def asyncpg_select_1(connection: Any) -> None:
    await connection.fetchval("SELECT 1")


async def psycopg_select_1(connection: Any) -> None:
    cursor = await connection.execute("SELECT 1")
    await cursor.fetchone()


QUERY: dict[str, Op] = {"asyncpg": asyncpg_select_1, "psycopg": psycopg_select_1}


async def in_recovery(driver: str, connection: Any) -> bool:
    if driver == "asyncpg":
        return bool(await connection.fetchval("SELECT pg_is_in_recovery()"))
    cursor = await connection.execute("SELECT pg_is_in_recovery()")
    row = await cursor.fetchone()
    return bool(row[0])


@dataclass
class Opened:
    """An opened contender: how to get a connection, and how to close it all."""

    acquire: Acquire
    close: Callable[[], Awaitable[None]]


def in_turn(pools: list[Any], take: Callable[[Any], Any]) -> Acquire:
    """One pool: its own acquire, nothing added. Several: taken in turn, as by hand."""
    if len(pools) == 1:
        pool = pools[0]
        return lambda: take(pool)
    turn = itertools.count()
    return lambda: take(pools[next(turn) % len(pools)])


# The child imports only what its contender uses: under valgrind, importing asyncpg,
# psycopg and pgrouter costs ~10 s, a good part of a whole run.


async def open_bare_asyncpg(dsns: list[str]) -> Opened:
    import asyncpg

    pools = [await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE) for dsn in dsns]

    async def close() -> None:
        for pool in pools:
            await pool.close()

    return Opened(in_turn(pools, lambda pool: pool.acquire()), close)


async def open_bare_psycopg(dsns: list[str]) -> Opened:
    import psycopg_pool

    pools = []
    for dsn in dsns:
        pool = psycopg_pool.AsyncConnectionPool(
            dsn,
            open=False,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True},
        )
        pools.append(pool)
        await pool.open(wait=True, timeout=SLOW_TIMEOUT)

    async def close() -> None:
        for pool in pools:
            await pool.close()

    return Opened(in_turn(pools, lambda pool: pool.connection()), close)


async def open_pgrouter(driver: str, role: str, cluster_dsn: str) -> Opened:
    import pgrouter.manager

    # Nothing may time out just because valgrind slows the client down (see the docstring).
    pgrouter.manager.STALL_DELAY = 1000
    pool_kwargs: dict[str, Any] = {"min_size": POOL_SIZE, "max_size": POOL_SIZE}
    if driver == "psycopg":
        pool_kwargs["kwargs"] = {"autocommit": True}
    if driver == "asyncpg":
        from pgrouter.asyncpg import PoolManager
    else:
        from pgrouter.psycopg3 import PoolManager  # type: ignore[assignment]
    manager = PoolManager(
        cluster_dsn,
        pool_factory_kwargs=pool_kwargs,
        acquire_timeout=SLOW_TIMEOUT,
        refresh_timeout=60,
        refresh_delay=1000,
        primary_heartbeat=None,
    )
    await manager.ready(timeout=SLOW_TIMEOUT)
    acquire = manager.acquire_master if role == "primary" else manager.acquire_replica
    return Opened(acquire, manager.close)


async def open_contender(contender: Contender, dsns: dict[str, Any]) -> Opened:
    if contender.library == "pgrouter":
        return await open_pgrouter(contender.driver, contender.role, dsns["cluster"])
    hosts = [dsns["primary"]] if contender.role == "primary" else dsns["replicas"]
    if contender.driver == "asyncpg":
        return await open_bare_asyncpg(hosts)
    return await open_bare_psycopg(hosts)


async def run_ops(acquire: Acquire, op: Op, ops: int, tasks: int) -> None:
    """``ops`` operations in all, by ``tasks`` tasks sharing the pool, as fast as they go."""
    left = ops

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with acquire() as connection:
                await op(connection)

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def child(contender: Contender, ops: int, tasks: int, dsns: dict[str, Any]) -> None:
    opened = await open_contender(contender, dsns)
    try:
        async with opened.acquire() as connection:
            replica = await in_recovery(contender.driver, connection)
        if replica != (contender.role == "replica"):
            raise RuntimeError(f"{contender.key} got a {'replica' if replica else 'primary'}")
        await run_ops(opened.acquire, QUERY[contender.driver], ops, tasks)
    finally:
        await opened.close()
    print(f"done {ops}", flush=True)


def child_main(key: str, ops: str, tasks: str, dsn_file: str) -> int:
    with open(dsn_file, encoding="utf-8") as f:
        dsns = json.load(f)
    contender = Contender.from_key(key)
    if contender.driver in SYNC_DRIVERS:
        sync_child(contender, int(ops), int(tasks), dsns)
    else:
        asyncio.run(child(contender, int(ops), int(tasks), dsns))
    return 0


# -- the child of a sync contender: threads instead of tasks -----------------------


def sync_select_1(connection: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchone()
    cursor.close()


def sync_in_recovery(connection: Any) -> bool:
    cursor = connection.cursor()
    cursor.execute("SELECT pg_is_in_recovery()")
    row = cursor.fetchone()
    cursor.close()
    return bool(row[0])


@dataclass
class OpenedSync:
    acquire: Callable[[], Any]  # a context manager giving a connection
    close: Callable[[], None]


def open_bare_sync_psycopg(dsns: list[str]) -> OpenedSync:
    import psycopg_pool

    pools = [
        psycopg_pool.ConnectionPool(
            dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs={"autocommit": True}, open=False
        )
        for dsn in dsns
    ]
    for pool in pools:
        pool.open(wait=True, timeout=SLOW_TIMEOUT)

    def close() -> None:
        for pool in pools:
            pool.close()

    return OpenedSync(in_turn(pools, lambda pool: pool.connection()), close)


def open_bare_sync_psycopg2(dsns: list[str]) -> OpenedSync:
    import contextlib
    import threading

    import psycopg2.pool

    def pool_of(dsn: str) -> Callable[[], Any]:
        pool = psycopg2.pool.ThreadedConnectionPool(POOL_SIZE, POOL_SIZE, dsn)
        held = [pool.getconn() for _ in range(POOL_SIZE)]
        for opened in held:
            opened.autocommit = True
            pool.putconn(opened)
        room = threading.BoundedSemaphore(POOL_SIZE)  # threads wait, not PoolError

        @contextlib.contextmanager
        def borrowed() -> Iterator[Any]:
            with room:
                taken = pool.getconn()
                try:
                    yield taken
                finally:
                    pool.putconn(taken)

        closers.append(pool.closeall)
        return borrowed

    closers: list[Callable[[], None]] = []
    takes = [pool_of(dsn) for dsn in dsns]

    def close() -> None:
        for closer in closers:
            closer()

    return OpenedSync(in_turn(takes, lambda take: take()), close)


def open_pgrouter_sync(driver: str, role: str, cluster_dsn: str) -> OpenedSync:
    import pgrouter.sync.manager

    # Valgrind is ~50x slower: no 100 ms slice on a full pool may expire (see the docstring).
    pgrouter.sync.manager.SLICE = 1000
    pool_kwargs: dict[str, Any]
    if driver == "sync_psycopg":
        from pgrouter.sync.psycopg import PoolManager

        pool_kwargs = {"min_size": POOL_SIZE, "max_size": POOL_SIZE, "kwargs": {"autocommit": True}}
    else:
        from pgrouter.sync.psycopg2 import PoolManager  # type: ignore[assignment]

        pool_kwargs = {"minconn": POOL_SIZE, "maxconn": POOL_SIZE, "autocommit": True}
    manager: Any = PoolManager(
        cluster_dsn,
        pool_factory_kwargs=pool_kwargs,
        acquire_timeout=SLOW_TIMEOUT,
        refresh_timeout=60,
        refresh_delay=1000,
        primary_heartbeat=None,
    )
    manager.ready(timeout=SLOW_TIMEOUT)
    acquire = manager.acquire_master if role == "primary" else manager.acquire_replica
    return OpenedSync(acquire, lambda: manager.close(timeout=SLOW_TIMEOUT))


def open_sync_contender(contender: Contender, dsns: dict[str, Any]) -> OpenedSync:
    if contender.library == "pgrouter":
        return open_pgrouter_sync(contender.driver, contender.role, dsns["cluster"])
    hosts = [dsns["primary"]] if contender.role == "primary" else dsns["replicas"]
    if contender.driver == "sync_psycopg":
        return open_bare_sync_psycopg(hosts)
    return open_bare_sync_psycopg2(hosts)


def sync_child(contender: Contender, ops: int, threads: int, dsns: dict[str, Any]) -> None:
    import threading

    opened = open_sync_contender(contender, dsns)
    try:
        with opened.acquire() as connection:
            replica = sync_in_recovery(connection)
        if replica != (contender.role == "replica"):
            raise RuntimeError(f"{contender.key} got a {'replica' if replica else 'primary'}")
        left = ops
        lock = threading.Lock()

        def worker() -> None:
            nonlocal left
            while True:
                with lock:
                    if left <= 0:
                        return
                    left -= 1
                with opened.acquire() as connection:
                    sync_select_1(connection)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        opened.close()
    print(f"done {ops}", flush=True)


# -- the parent: one cluster, two counted runs per contender ------------------------


class RunFailed(Exception):
    pass


@dataclass
class Runner:
    """Runs the child under callgrind and returns the instructions it executed."""

    valgrind: str
    python: str
    dsn_file: str
    out_dir: str

    def count(self, contender: Contender, ops: int, tasks: int) -> int:
        out_file = os.path.join(
            self.out_dir, f"callgrind.{contender.key.replace('/', '-')}.{tasks}.{ops}"
        )
        command = [
            self.valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            self.python,
            os.path.abspath(__file__),
            "--child",
            contender.key,
            str(ops),
            str(tasks),
            self.dsn_file,
        ]
        # A fixed hash seed: the same dict and set layouts, so the same work, every run.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT
            )
        except subprocess.TimeoutExpired as error:
            raise RunFailed(f"no result after {CHILD_TIMEOUT:.0f} s") from error
        if done.returncode != 0 or f"done {ops}" not in done.stdout:
            raise RunFailed(last_error_line(done.stderr) or f"exit status {done.returncode}")
        return collected(done.stderr, out_file)


def collected(stderr: str, out_file: str) -> int:
    """The total Ir: valgrind's "Collected : N" line, else the out file's summary."""
    match = re.search(r"^==\d+== Collected : (\d+)\s*$", stderr, re.MULTILINE)
    if match:
        return int(match.group(1))
    with open(out_file, encoding="utf-8") as f:
        match = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    if match:
        return int(match.group(1))
    raise RunFailed("no instruction count in valgrind's output")


def last_error_line(stderr: str) -> str:
    """The child's own last line of stderr (valgrind's lines start with ==pid==)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("==")]
    return lines[-1][:160] if lines else ""


@dataclass
class Result:
    contender: Contender
    tasks: int
    per_op: float | None = None  # instructions per operation
    error: str | None = None


def counted(runner: Runner, contender: Contender, tasks: int, ops: int) -> int | str:
    """One counted run: its instructions, or why it failed. Says so on stderr when done."""
    started = time.monotonic()
    try:
        outcome: int | str = runner.count(contender, ops, tasks)
    except RunFailed as error:
        outcome = str(error)
    shown = f"{outcome:,} instructions" if isinstance(outcome, int) else f"FAILED: {outcome}"
    print(
        f"  {contender.key}, {tasks} task(s), {ops} ops: {shown} "
        f"({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return outcome


def per_op(contender: Contender, tasks: int, runs: dict[int, int | str]) -> Result:
    """Instructions per op: the long run minus the short run, over the ops in between."""
    (short, short_ir), (long, long_ir) = sorted(runs.items())
    if isinstance(short_ir, str):
        return Result(contender, tasks, error=short_ir)
    if isinstance(long_ir, str):
        return Result(contender, tasks, error=long_ir)
    return Result(contender, tasks, per_op=(long_ir - short_ir) / (long - short))


def pick(choice: str, every: tuple[str, ...]) -> tuple[str, ...]:
    if choice == "all":
        return every
    if choice == "async":
        return tuple(name for name in every if name in ASYNC_DRIVERS)
    if choice == "sync":
        return tuple(name for name in every if name in SYNC_DRIVERS)
    return (choice,)


def contenders(args: argparse.Namespace) -> list[Contender]:
    return [
        Contender(library, driver, role)
        for role in pick(args.role, ROLES)
        for driver in pick(args.driver, DRIVERS)
        for library in LIBRARIES
    ]


# -- reporting ------------------------------------------------------------------


def ratio(result: Result, results: list[Result]) -> float | None:
    """This result's instructions per op over the bare pool's (same driver, role, tasks)."""
    base = baseline(result, results)
    if result.per_op is None or base is None or base.per_op is None:
        return None
    return result.per_op / base.per_op


def baseline(result: Result, results: list[Result]) -> Result | None:
    return next(
        (
            other
            for other in results
            if other.contender == Contender("bare", result.contender.driver, result.contender.role)
            and other.tasks == result.tasks
        ),
        None,
    )


def section_title(role: str, tasks: int, sync: bool = False) -> str:
    verb = "acquire_master()" if role == "primary" else "acquire_replica()"
    unit = "thread" if sync else "task"
    shape = f"sequential (1 {unit})" if tasks == 1 else f"concurrent ({tasks} {unit}s)"
    return f"== {role.upper()} ({verb}) — {shape}, acquire + SELECT 1 + release"


def table(results: list[Result]) -> str:
    header = (
        f"{'contender':<18} {'instr/op':>10} {'vs bare':>13} {'+instr/op':>10}  "
        f"within {TARGET_RATIO - 1:.0%}"
    )
    lines: list[str] = []
    sections = dict.fromkeys(
        (r.contender.driver in SYNC_DRIVERS, r.contender.role, r.tasks) for r in results
    )
    for sync, role, tasks in sections:
        lines += ["", section_title(role, tasks, sync), header]
        group = [
            r
            for r in results
            if r.contender.role == role
            and r.tasks == tasks
            and (r.contender.driver in SYNC_DRIVERS) == sync
        ]
        lines += [row(result, group) for result in group]
    return "\n".join(lines)


def row(result: Result, group: list[Result]) -> str:
    name = result.contender.name
    if result.per_op is None:
        return f"{name:<18} FAILED: {result.error}"
    if result.contender.library == "bare":
        return f"{name:<18} {result.per_op:>10,.0f} {'(floor)':>13}"
    share = ratio(result, group)
    base = baseline(result, group)
    if share is None or base is None or base.per_op is None:
        return f"{name:<18} {result.per_op:>10,.0f} {'n/a (no bare)':>13}"
    within = "yes" if share <= TARGET_RATIO else "NO"
    return (
        f"{name:<18} {result.per_op:>10,.0f} {f'{share:.2f}x instr':>13} "
        f"{result.per_op - base.per_op:>+10,.0f}  {within}"
    )


def verdict(results: list[Result]) -> str:
    """One line: for every pgrouter row, is its overhead within 15 % of the bare pool's?"""
    checked = [r for r in results if r.contender.library == "pgrouter"]
    if not checked:
        return "VERDICT: no pgrouter result to judge"
    parts, good = [], 0
    for result in checked:
        unit = "thread" if result.contender.driver in SYNC_DRIVERS else "task"
        shape = f"1 {unit}" if result.tasks == 1 else f"{result.tasks} {unit}s"
        where = f"{result.contender.driver} {result.contender.role} {shape}"
        share = ratio(result, results)
        if share is None:
            parts.append(f"{where} not measured")
        elif share <= TARGET_RATIO:
            good += 1
            parts.append(f"{where} {share:.2f}x yes")
        else:
            parts.append(f"{where} {share:.2f}x NO")
    outcome = "on every row" if good == len(checked) else "NOT on every row"
    return (
        f"VERDICT: pgrouter's overhead is within {TARGET_RATIO - 1:.0%} (<= {TARGET_RATIO:.2f}x "
        f"the bare pool's instr/op) {outcome}, on {good} of {len(checked)}: " + "; ".join(parts)
    )


def valgrind_version(valgrind: str) -> str:
    done = subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "valgrind (unknown version)"


# -- main -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2500, help="long run's ops (short: a fifth)")
    parser.add_argument(
        "--tasks",
        type=int,
        nargs="+",
        default=[64, 1],
        help="tasks sharing the pool (async drivers); one table each",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[16, 1],
        help="threads sharing the pool or manager (sync drivers); one table each",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="valgrind runs at a time (default: 2, for 2 cores)"
    )
    parser.add_argument(
        "--driver",
        choices=(*DRIVERS, "async", "sync", "all"),
        default="async",
        help="async: asyncpg and psycopg (the default); sync: the blocking face's two",
    )
    parser.add_argument("--role", choices=(*ROLES, "all"), default="all")
    args = parser.parse_args(argv)
    if args.ops < 10:
        parser.error("--ops must be at least 10")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if min(args.tasks) < 1 or min(args.threads) < 1:
        parser.error("--tasks and --threads must be at least 1")
    return args


def run(args: argparse.Namespace, runner: Runner) -> list[Result]:
    """Every counted run, ``--jobs`` at a time: the counts do not depend on what else runs."""
    counts = (args.ops, args.ops // 5)  # the long runs first: they set the end
    pairs = [
        (contender, tasks)
        for contender in contenders(args)
        for tasks in (args.threads if contender.driver in SYNC_DRIVERS else args.tasks)
    ]
    pairs.sort(key=lambda pair: -pair[1])  # the table order: most concurrent first
    with ThreadPoolExecutor(max_workers=args.jobs) as executor:
        runs = {
            (contender, tasks, ops): executor.submit(counted, runner, contender, tasks, ops)
            for contender, tasks in pairs
            for ops in counts
        }
        return [
            per_op(contender, tasks, {ops: runs[contender, tasks, ops].result() for ops in counts})
            for contender, tasks in pairs
        ]


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        return child_main(*argv[1:])
    args = parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print(
            "valgrind is not installed: this benchmark counts instructions with callgrind.\n"
            "Install it with: apt-get install valgrind",
            file=sys.stderr,
        )
        return 2
    # The pyenv `python` is a shell script; valgrind must run the interpreter itself.
    python = os.path.realpath(sys.executable)

    from pgrouter.testing import LocalCluster

    started = time.monotonic()
    print("starting a local cluster (primary + 2 replicas)...", file=sys.stderr, flush=True)
    with (
        LocalCluster(replicas=2) as cluster,
        tempfile.TemporaryDirectory(prefix="pgrouter-instr-") as out_dir,
    ):
        dsn_file = os.path.join(out_dir, "dsns.json")
        with open(dsn_file, "w", encoding="utf-8") as f:
            dsns = {
                "primary": cluster.primary.dsn(),
                "replicas": [replica.dsn() for replica in cluster.replicas],
                "cluster": cluster.dsn(),
            }
            json.dump(dsns, f)
        server = cluster.primary.sql("SHOW server_version").strip()
        results = run(args, Runner(valgrind, python, dsn_file, out_dir))
    elapsed = time.monotonic() - started

    versions = describe_versions(
        "pgrouter", "asyncpg", "psycopg", "psycopg-pool", "psycopg2-binary"
    )
    print(
        f"pgrouter instructions benchmark — Python {platform.python_version()}, "
        f"PostgreSQL {server}, {valgrind_version(valgrind)}\n{versions}\n"
        f"pool min=max={POOL_SIZE} per host; instr/op = (Ir of {args.ops} ops - Ir of "
        f"{args.ops // 5} ops) / {args.ops - args.ops // 5}, client process only, "
        "counted by callgrind.\n"
        "vs bare = instr/op / the bare pool's (same driver, role and tasks); "
        "+instr/op = instr/op minus the bare pool's."
    )
    print(table(results))
    print("\n" + verdict(results))
    print(f"(took {elapsed:.0f} s)", file=sys.stderr)
    return 0 if all(r.per_op is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
