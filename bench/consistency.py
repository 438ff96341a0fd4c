"""Consistency benchmark: what a lag bound, a write token and a read-your-writes scope cost a read.

On a throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and two
streaming replicas on loopback), for pgrouter's asyncpg and psycopg managers:

1. **Read cost**, as ratios to a plain ``acquire_replica()`` + ``SELECT 1`` +
   release run in the same round: a read with ``max_lag_seconds=5``, one with
   ``after=token`` (a token the replicas' last checks already cover) and one
   inside ``read_your_writes()`` with no write in it; one task looping
   (sequential) and ``--concurrency`` tasks sharing the manager (concurrent).
   Contenders interleaved per round, medians over rounds, as bench/acquire.py.
2. **Token reads under a steady write load**: one task INSERTs in a loop
   (``acquire_master()`` + ``write_token()``) while ``--pairs`` write-then-read
   pairs read their own row with ``acquire_replica(after=token)``: how those
   reads were served (``pm.token_read_counts``, and how many asks each wait
   took) and their latency against plain reads made the same way, at the
   default ``refresh_delay`` and at ``--fast-refresh``.

    python bench/consistency.py [--rounds N] [--seconds S] [--pairs N] [--quick]

bench/README.md explains the columns and holds the figures of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from package_versions import package_versions

import pgrouter
import pgrouter.asyncpg
import pgrouter.psycopg3
from pgrouter.drivers.asyncpg import AsyncpgDriver
from pgrouter.drivers.psycopg import PsycopgDriver
from pgrouter.manager import BasePoolManager
from pgrouter.testing import LocalCluster

#: Operations between two clock reads in the sequential loop (reading the clock costs too).
BATCH = 16

#: The table the write load and the pairs write to.
TABLE = "bench_consistency_writes"

#: How the manager asks a replica whether it has replayed a token (manager._replayed).
#: Counted by the drivers of part 2 to tell a wait that ended at the first ask
#: from one that needed polls.
REPLAY_ASK_PREFIX = "SELECT pg_last_wal_replay_lsn() >="

DRIVERS = ("asyncpg", "psycopg")
KINDS = ("plain", "lag bound", "token", "rw scope")
#: The row label of each kind (the README says what each call is).
KIND_LABEL = {
    "plain": "plain",
    "lag bound": "max_lag_seconds=5",
    "token": "after=token (covered)",
    "rw scope": "read_your_writes(), no write",
}


# -- what a query does, per driver -----------------------------------------------


async def asyncpg_value(connection: Any, query: str) -> Any:
    return await connection.fetchval(query)


async def psycopg_value(connection: Any, query: str) -> Any:
    cursor = await connection.execute(query)
    row = await cursor.fetchone()
    return None if row is None else row[0]


VALUE = {"asyncpg": asyncpg_value, "psycopg": psycopg_value}


async def asyncpg_select_1(connection: Any) -> None:
    await connection.fetchval("SELECT 1")


async def psycopg_select_1(connection: Any) -> None:
    cursor = await connection.execute("SELECT 1")
    await cursor.fetchone()


SELECT_1 = {"asyncpg": asyncpg_select_1, "psycopg": psycopg_select_1}


def manager_kwargs(pool_size: int, driver: str) -> dict[str, Any]:
    sizes: dict[str, Any] = {"min_size": pool_size, "max_size": pool_size}
    if driver == "psycopg":
        sizes["kwargs"] = {"autocommit": True}  # as bench/acquire.py, for fairness
    # The benchmark's waits are bounded by its run time, not a 1 s acquire timeout.
    return {"pool_factory_kwargs": sizes, "acquire_timeout": 30}


async def write_row(pm: Any, driver: str) -> tuple[int, pgrouter.WriteToken]:
    """One INSERT on the primary (autocommit: committed when it returns) and its token."""
    async with pm.acquire_master() as connection:
        row_id = await VALUE[driver](
            connection, f"INSERT INTO {TABLE} (payload) VALUES ('x') RETURNING id"
        )
        return int(row_id), await pm.write_token(connection)


# -- part 1: what each kind of read costs ----------------------------------------


class Reader:
    """One kind of read on one manager: ``read()`` is acquire + SELECT 1 + release."""

    def __init__(self, driver: str, kind: str) -> None:
        self.driver, self.kind = driver, kind
        self.pm: Any = None
        self.token: pgrouter.WriteToken | None = None
        self.error: str | None = None
        select_1 = SELECT_1[driver]

        # One shape for every kind (a coroutine function around `async with`),
        # so the ratios compare what the kinds do, not how they are called.
        async def plain() -> None:
            async with self.pm.acquire_replica() as connection:
                await select_1(connection)

        async def lag_bound() -> None:
            async with self.pm.acquire_replica(max_lag_seconds=5) as connection:
                await select_1(connection)

        async def token() -> None:
            async with self.pm.acquire_replica(after=self.token) as connection:
                await select_1(connection)

        async def scope() -> None:
            with pgrouter.read_your_writes():
                async with self.pm.acquire_replica() as connection:
                    await select_1(connection)

        self.read: Callable[[], Awaitable[None]] = {
            "plain": plain,
            "lag bound": lag_bound,
            "token": token,
            "rw scope": scope,
        }[kind]

    @property
    def name(self) -> str:
        return f"{self.driver} {self.kind}"


async def run_sequential(reader: Reader, seconds: float) -> tuple[float, float]:
    """Reads per second of one task looping for ``seconds``, and client CPU µs per read."""
    read = reader.read
    done = 0
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            await read()
        done += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), (time.process_time() - cpu) * 1e6 / done


async def run_concurrent(reader: Reader, seconds: float, tasks: int) -> tuple[float, float]:
    """Reads per second of ``tasks`` tasks looping together for ``seconds``, CPU µs per read."""
    read = reader.read
    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> int:
        done = 0
        while time.perf_counter() < deadline:  # after every read: runs end on time
            await read()
            done += 1
        return done

    counts = await asyncio.gather(*(worker() for _ in range(tasks)))
    done = sum(counts)
    return done / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / done


@dataclass
class Cell:
    """The runs of one reader in one shape (sequential or concurrent)."""

    reader: Reader
    concurrent: bool
    ops_per_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # vs plain, same driver and round
    # Client CPU (this process: the library, the driver, the loop) per read, and
    # its excess over plain's in the same round: what the kind of read costs
    # in work, far less moved by the other processes on the machine than ops/s.
    cpu_us: list[float] = field(default_factory=list)
    cpu_extra_us: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median_ops(self) -> float:
        return statistics.median(self.ops_per_s)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text.splitlines()[0][:120]


async def cover_with_token(pm: Any, driver: str, timeout: float = 5) -> pgrouter.WriteToken:
    """A fresh write's token, once every replica's last check shows it replayed.

    A write whose token no replica reaches within ``timeout`` (one whose last
    WAL record ended on a page boundary: the token's insert position is then
    past the next page header, which nothing is replayed to until more WAL
    comes) is followed by another write, up to three times.
    """
    for _ in range(3):
        _, token = await write_row(pm, driver)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replicas = pm.topology.replicas
            if replicas and all(r.wal_lsn is not None and r.wal_lsn >= token.lsn for r in replicas):
                return token
            await asyncio.sleep(0.05)
    raise RuntimeError(f"replicas' checks did not reach a write's token ({token}) 3 times")


async def read_costs(
    managers: dict[str, Any],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> tuple[list[Cell], list[str]]:
    """Part 1: every kind of read, interleaved per round; returns cells and notes."""
    readers = {(d, k): Reader(d, k) for d in DRIVERS for k in KINDS}
    for (driver, _), reader in readers.items():
        reader.pm = managers[driver]
    cells: list[Cell] = []
    notes: list[str] = []

    async def attempt(cell: Cell, length: float) -> tuple[float, float] | None:
        if cell.error:
            return None
        gc.collect()
        try:
            if cell.concurrent:
                run = run_concurrent(cell.reader, length, concurrency)
            else:
                run = run_sequential(cell.reader, length)
            return await asyncio.wait_for(run, timeout=length * 5 + 10)
        except Exception as error:
            cell.error = describe(error)
            return None

    for concurrent in (False, True):
        shape = f"concurrent ({concurrency} tasks)" if concurrent else "sequential"
        group = {key: Cell(reader, concurrent) for key, reader in readers.items()}
        cells += group.values()
        # The token of this shape's token reads: taken once, covered by the
        # replicas' last checks before any of them runs (served at once).
        before: dict[str, dict[str, int]] = {}
        for driver in DRIVERS:
            try:
                readers[driver, "token"].token = await cover_with_token(managers[driver], driver)
            except Exception as error:
                group[driver, "token"].error = describe(error)
            before[driver] = managers[driver].token_read_counts
        progress(f"warm-up: {shape}")
        for cell in group.values():
            await attempt(cell, warmup)
        for round_number in range(rounds):
            progress(f"round {round_number + 1}/{rounds}: {shape}")
            # One driver's kinds back to back (ratios of runs a second apart),
            # rotated so nobody always runs first; the drivers swap places.
            order = list(DRIVERS) if round_number % 2 == 0 else list(reversed(DRIVERS))
            results: dict[tuple[str, str], tuple[float, float]] = {}
            for driver in order:
                shift = round_number % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    result = await attempt(group[driver, kind], seconds)
                    if result is not None:
                        group[driver, kind].ops_per_s.append(result[0])
                        group[driver, kind].cpu_us.append(result[1])
                        results[driver, kind] = result
            for (driver, kind), (ops, cpu_us) in results.items():
                base = results.get((driver, "plain"))
                if base:
                    group[driver, kind].ratios.append(ops / base[0])
                    group[driver, kind].cpu_extra_us.append(cpu_us - base[1])
        for driver in DRIVERS:
            after = managers[driver].token_read_counts
            served = {k: after[k] - before[driver][k] for k in after}
            notes.append(
                f"{driver} token reads, {shape}: "
                + ", ".join(f"{k} {v:,}" for k, v in served.items())
            )
    return cells, notes


def cost_table(cells: list[Cell], concurrency: int) -> str:
    header = (
        f"{'read':<36} {'ops/s':>9} {'µs/op':>8} {'vs plain':>14} {'middle half':>13} "
        f"{'+µs/op':>8}  {'spread':>7} {'cpu µs/op':>10} {'+cpu µs':>8}"
    )
    lines: list[str] = []
    for concurrent in (False, True):
        shape = f"concurrent ({concurrency} tasks)" if concurrent else "sequential"
        lines += ["", f"== READ COST — {shape}, acquire + SELECT 1 + release", header]
        for driver in DRIVERS:
            group = [c for c in cells if c.concurrent == concurrent and c.reader.driver == driver]
            base = next(c for c in group if c.reader.kind == "plain")
            for cell in group:
                lines.append(cost_row(cell, base))
    return "\n".join(lines)


def cost_row(cell: Cell, base: Cell) -> str:
    name = f"{cell.reader.driver} {KIND_LABEL[cell.reader.kind]}"
    if cell.error or not cell.ops_per_s:
        return f"{name:<36} FAILED: {cell.error or 'no successful run'}"
    us = 1e6 / cell.median_ops
    middle = extra = cpu_extra = ""
    if cell is base:
        versus = "(floor)"
    else:
        versus = f"{statistics.median(cell.ratios):.2f}x plain" if cell.ratios else "n/a"
        if base.ops_per_s:
            extra = f"{us - 1e6 / base.median_ops:+.1f}"
        if len(cell.ratios) >= 2:
            low, _, high = statistics.quantiles(cell.ratios, n=4, method="inclusive")
            middle = f"{low:.2f}-{high:.2f}x"
        if cell.cpu_extra_us:
            cpu_extra = f"{statistics.median(cell.cpu_extra_us):+.1f}"
    runs = cell.ops_per_s
    spread = f"±{(max(runs) - min(runs)) / 2 / statistics.median(runs) * 100:.0f}%"
    return (
        f"{name:<36} {cell.median_ops:>9,.0f} {us:>8.1f} {versus:>14} {middle:>13} "
        f"{extra:>8}  {spread:>7} {statistics.median(cell.cpu_us):>10.1f} {cpu_extra:>8}"
    ).rstrip()


# -- part 2: token reads under a steady write load -------------------------------


class _AskCounting:
    """A driver mixin that counts the manager's replay asks (one per query sent)."""

    asks = 0

    async def fetch_row(self, connection: Any, query: str) -> tuple[Any, ...]:
        if query.startswith(REPLAY_ASK_PREFIX):
            self.asks += 1
        return await super().fetch_row(connection, query)  # type: ignore[misc, no-any-return]


class AskCountingAsyncpgDriver(_AskCounting, AsyncpgDriver):
    pass


class AskCountingPsycopgDriver(_AskCounting, PsycopgDriver):
    pass


#: pgrouter.asyncpg.PoolManager and pgrouter.psycopg3.PoolManager are
#: BasePoolManager over these drivers; part 2 uses the same with the counting ones.
COUNTING_DRIVER = {"asyncpg": AskCountingAsyncpgDriver, "psycopg": AskCountingPsycopgDriver}


@dataclass
class PairRun:
    """N write-then-read pairs of one driver and refresh_delay, and what happened."""

    driver: str
    refresh_delay: float
    pairs: int = 0
    served: Counter[str] = field(default_factory=Counter)  # replica, first ask, polls, primary
    polls: Counter[int] = field(default_factory=Counter)  # waits on a replica by polls needed
    token_us: dict[str, list[float]] = field(default_factory=dict)  # by how served
    plain_us: list[float] = field(default_factory=list)
    token_missed: int = 0  # token reads that did not see their row: must stay 0
    plain_missed: int = 0  # plain reads that did not (what the token is for)
    plain_on_replica: int = 0
    token_on_replica: int = 0  # what the servers said: must match the counts
    load_writes_per_s: float = 0.0
    # The largest lag of a replica in pm.topology seen after a read (from its checks).
    max_lag_bytes: int = 0
    max_lag_seconds: float = 0.0
    token_ports: Counter[int] = field(default_factory=Counter)  # reads per server port
    plain_ports: Counter[int] = field(default_factory=Counter)
    counts: dict[str, int] = field(default_factory=dict)  # pm.token_read_counts' delta
    error: str | None = None

    @property
    def all_token_us(self) -> list[float]:
        return [us for values in self.token_us.values() for us in values]


async def token_pairs(
    dsn: str, driver: str, refresh_delay: float, pairs: int, pool_size: int
) -> PairRun:
    """Part 2 for one driver and refresh_delay: a write load, then ``pairs`` pairs of each kind.

    Each pair writes one row and reads it right back, alternately with the
    write's token (``acquire_replica(after=token)``) and without (a plain
    ``acquire_replica()``), timing the read (acquire + SELECT + release).
    """
    run = PairRun(driver, refresh_delay)
    counting: Any = COUNTING_DRIVER[driver]()
    pm: Any = BasePoolManager(
        dsn,
        driver=counting,
        refresh_delay=refresh_delay,
        **manager_kwargs(pool_size, driver),
    )
    value = VALUE[driver]
    stop = asyncio.Event()
    load_writes = 0

    async def write_load() -> None:
        nonlocal load_writes
        while not stop.is_set():
            await write_row(pm, driver)
            load_writes += 1

    async def one_pair(with_token: bool) -> None:
        row_id, token = await write_row(pm, driver)
        # One query for both kinds: did it see the row, and on which kind of host.
        query = (
            f"SELECT count(*)::text || ' ' || pg_is_in_recovery()::text "
            f"|| ' ' || inet_server_port()::text FROM {TABLE} WHERE id = {row_id}"
        )
        counts, asks = pm.token_read_counts, counting.asks
        start = time.perf_counter()
        if with_token:
            async with pm.acquire_replica(after=token) as connection:
                answer = await value(connection, query)
        else:
            async with pm.acquire_replica() as connection:
                answer = await value(connection, query)
        us = (time.perf_counter() - start) * 1e6
        seen, in_recovery, port = answer.split()
        for replica in pm.topology.replicas:
            run.max_lag_bytes = max(run.max_lag_bytes, replica.lag_bytes or 0)
            run.max_lag_seconds = max(run.max_lag_seconds, replica.lag_seconds or 0.0)
        (run.token_ports if with_token else run.plain_ports)[int(port)] += 1
        if not with_token:
            run.plain_us.append(us)
            run.plain_missed += seen != "1"
            run.plain_on_replica += in_recovery == "true"
            return
        run.token_missed += seen != "1"
        run.token_on_replica += in_recovery == "true"
        delta = {k: v - counts[k] for k, v in pm.token_read_counts.items()}
        asked = counting.asks - asks
        if delta["replica"]:
            how = "replica at once"
        elif delta["replica_after_wait"]:
            how = "replica, first ask" if asked == 1 else "replica, after polls"
            run.polls[asked - 1] += 1
        elif delta["primary"]:
            how = "primary after a wait" if asked else "primary"
        else:
            how = "ignored"
        run.served[how] += 1
        run.token_us.setdefault(how, []).append(us)

    try:
        await pm.ready(timeout=10)
        load = asyncio.create_task(write_load())
        try:
            for index in range(100):  # warm-up: connections opened, the load running
                await one_pair(index % 2 == 0)
            run = PairRun(driver, refresh_delay)  # keep none of the warm-up
            before, asks_before = pm.token_read_counts, counting.asks
            load_before, load_start = load_writes, time.perf_counter()
            for index in range(2 * pairs):
                await one_pair(index % 2 == 0)
            run.load_writes_per_s = (load_writes - load_before) / (time.perf_counter() - load_start)
            run.counts = {k: v - before[k] for k, v in pm.token_read_counts.items()}
            run.counts["asks"] = counting.asks - asks_before
            run.pairs = pairs
        finally:
            stop.set()
            await load
    except Exception as error:
        run.error = describe(error)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pm.close(), timeout=10)
    return run


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


SERVED_ORDER = (
    "replica at once",
    "replica, first ask",
    "replica, after polls",
    "primary after a wait",
    "primary",
    "ignored",
)


def pairs_table(runs: list[PairRun], servers: dict[int, str]) -> str:
    lines = [
        "",
        "== TOKEN READS UNDER A WRITE LOAD — how they were served (pm.token_read_counts, "
        "and the asks each wait took)",
        f"{'driver, refresh_delay':<24} {'reads':>6} {'replica':>9} {'by replica':>11} "
        f"{'at once':>8} {'1st ask':>8} {'polls':>7} {'primary':>8} {'missed':>7} "
        f"{'polls of waits (1/2/3+)':>24}",
    ]
    for run in runs:
        label = f"{run.driver}, {run.refresh_delay:g} s"
        if run.error:
            lines.append(f"{label:<24} FAILED: {run.error}")
            continue
        if run.counts.get("replica_after_wait") and not run.counts.get("asks"):
            lines.append(
                f"{label:<24} (no ask counted: has the query REPLAY_ASK_PREFIX names changed?)"
            )
        s = run.served
        on_replica = s["replica at once"] + s["replica, first ask"] + s["replica, after polls"]
        primary = s["primary after a wait"] + s["primary"]
        polls = f"{run.polls[1]}/{run.polls[2]}/{sum(v for k, v in run.polls.items() if k >= 3)}"
        lines.append(
            f"{label:<24} {run.pairs:>6,} {on_replica:>9,} {on_replica / run.pairs:>10.1%} "
            f"{s['replica at once']:>8,} {s['replica, first ask']:>8,} "
            f"{s['replica, after polls']:>7,} {primary:>8,} {run.token_missed:>7} {polls:>24}"
        )
    lines += [
        "",
        "== TOKEN READS UNDER A WRITE LOAD — latency of a read (acquire + SELECT + release), "
        "µs, vs a plain read right after its write",
        f"{'driver, refresh_delay':<24} {'token p50':>10} {'p90':>7} {'p99':>7} "
        f"{'plain p50':>10} {'p90':>7} {'p99':>7} {'p50 ratio':>10} {'plain missed':>13} "
        f"{'load w/s':>9} {'max lag B':>10} {'max lag s':>10}",
    ]
    for run in runs:
        if run.error:
            continue
        token, plain = run.all_token_us, run.plain_us
        lines.append(
            f"{run.driver + ', ' + format(run.refresh_delay, 'g') + ' s':<24} "
            f"{statistics.median(token):>10.0f} {percentile(token, 0.9):>7.0f} "
            f"{percentile(token, 0.99):>7.0f} {statistics.median(plain):>10.0f} "
            f"{percentile(plain, 0.9):>7.0f} {percentile(plain, 0.99):>7.0f} "
            f"{statistics.median(token) / statistics.median(plain):>9.2f}x "
            f"{run.plain_missed:>6}/{len(plain):<6} {run.load_writes_per_s:>9,.0f} "
            f"{run.max_lag_bytes:>10,} {run.max_lag_seconds:>10.3f}"
        )
    lines += ["", "token read p50 by how it was served (µs):"]
    for run in runs:
        if run.error:
            continue
        parts = [
            f"{how} {statistics.median(run.token_us[how]):.0f} (n={len(run.token_us[how])})"
            for how in SERVED_ORDER
            if run.token_us.get(how)
        ]
        lines.append(f"  {run.driver}, {run.refresh_delay:g} s: " + "; ".join(parts))
    lines += ["", "where the reads went (token / plain):"]
    for run in runs:
        if run.error:
            continue
        parts = [
            f"{name} {run.token_ports[port]}/{run.plain_ports[port]}"
            for port, name in sorted(servers.items(), key=lambda item: item[1])
        ]
        lines.append(f"  {run.driver}, {run.refresh_delay:g} s: " + ", ".join(parts))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="length of one run (s)")
    parser.add_argument("--rounds", type=int, default=25, help="alternating rounds")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up run length (s)")
    parser.add_argument("--concurrency", type=int, default=64, help="tasks when concurrent")
    parser.add_argument("--pool-size", type=int, default=10, help="min = max size per host")
    parser.add_argument("--pairs", type=int, default=2000, help="token pairs per config")
    parser.add_argument(
        "--fast-refresh", type=float, default=0.1, help="the second refresh_delay of part 2"
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s, 200 pairs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.pairs = 0.2, 3, 200
    if args.warmup is None:
        args.warmup = min(args.seconds, 0.5)
    return args


async def run(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    """Both parts, the tables printed; returns the results as JSON data."""

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    cluster.primary.sql(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, payload text)"
    )
    dsn = cluster.dsn()
    servers = {cluster.primary.port: "primary"}
    for number, replica in enumerate(cluster.replicas, 1):
        servers[replica.port] = f"replica {number}"
    started = time.perf_counter()
    progress("part 1: read costs")
    managers: dict[str, Any] = {
        "asyncpg": pgrouter.asyncpg.PoolManager(dsn, **manager_kwargs(args.pool_size, "asyncpg")),
        "psycopg": pgrouter.psycopg3.PoolManager(dsn, **manager_kwargs(args.pool_size, "psycopg")),
    }
    try:
        for pm in managers.values():
            await pm.ready(timeout=10)
        cells, notes = await read_costs(
            managers,
            seconds=args.seconds,
            warmup=args.warmup,
            rounds=args.rounds,
            concurrency=args.concurrency,
            progress=progress,
        )
    finally:
        for pm in managers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pm.close(), timeout=10)

    runs: list[PairRun] = []
    for refresh_delay in (1.0, args.fast_refresh):
        for driver in DRIVERS:
            progress(f"part 2: {args.pairs} token pairs, {driver}, refresh_delay={refresh_delay:g}")
            runs.append(await token_pairs(dsn, driver, refresh_delay, args.pairs, args.pool_size))

    server = cluster.primary.sql("SHOW server_version").strip()
    versions = package_versions("pgrouter", "asyncpg", "psycopg", "psycopg-pool")
    print(
        f"pgrouter consistency benchmark — Python {platform.python_version()}, PostgreSQL "
        f"{server}, {os.cpu_count()} CPUs\n"
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f" (pgrouter from {os.path.dirname(pgrouter.__file__)})"
        + f"\npool min=max={args.pool_size} per host; part 1: {args.rounds} rounds of "
        f"{args.seconds:g} s, kinds interleaved; medians over rounds; vs plain = ops/s / the "
        "plain read's (same driver and round), median over rounds; middle half = its quartiles.\n"
        f"part 2: {args.pairs} token reads + {args.pairs} plain reads per config, each right "
        f"after its own INSERT, one task INSERTing in a loop meanwhile; causal_wait 0.25 s "
        f"(default). Total {time.perf_counter() - started:.0f} s."
    )
    print(cost_table(cells, args.concurrency))
    print("\n" + "\n".join(notes))
    print(pairs_table(runs, servers))
    return {
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "postgresql": server,
            "versions": versions,
            **{k: v for k, v in vars(args).items() if k != "json"},
        },
        "read_costs": [
            {
                "driver": c.reader.driver,
                "kind": c.reader.kind,
                "concurrent": c.concurrent,
                "ops_per_s": c.ops_per_s,
                "ratios_to_plain": c.ratios,
                "cpu_us_per_op": c.cpu_us,
                "cpu_us_over_plain": c.cpu_extra_us,
                "error": c.error,
            }
            for c in cells
        ],
        "token_reads": [
            {
                "driver": r.driver,
                "refresh_delay": r.refresh_delay,
                "pairs": r.pairs,
                "served": dict(r.served),
                "polls": dict(r.polls),
                "token_read_counts": r.counts,
                "token_us": r.token_us,
                "plain_us": r.plain_us,
                "token_missed": r.token_missed,
                "plain_missed": r.plain_missed,
                "plain_on_replica": r.plain_on_replica,
                "token_on_replica": r.token_on_replica,
                "load_writes_per_s": r.load_writes_per_s,
                "max_lag_bytes": r.max_lag_bytes,
                "max_lag_seconds": r.max_lag_seconds,
                "token_reads_by_port": dict(r.token_ports),
                "plain_reads_by_port": dict(r.plain_ports),
                "error": r.error,
            }
            for r in runs
        ],
    }


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
