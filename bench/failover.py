"""Failover benchmark: how long writes stop when the primary dies, pgrouter vs hasql.

Each run starts a fresh :class:`~pgrouter.testing.LocalCluster` (a primary and
two streaming replicas on loopback), opens one manager on it, runs a steady
write + read workload, then hits the primary with a fault and promotes a
replica right away (``cluster.failover()``):

- **kill -9**: ``node.kill()`` (postmaster and every backend), a crashed machine;
- **SIGSTOP**: ``node.freeze()``, a hung machine: connections stay open, nothing answers.

It measures, from the moment the fault starts: the write gap (until the first
write acknowledged by the new primary, as ``inet_server_port()`` tells), the
promotion alone (until the promoted replica accepts writes, seen by a direct
connection: the floor no library can beat), when ``failover()`` returned,
when the manager dropped the old primary from its rotation, and the calls that
failed. Contenders run in interleaved order, several runs each; medians.

``--face sync`` runs the blocking managers instead (``pgrouter.sync.psycopg``
and ``pgrouter.sync.psycopg2``), each workload call a blocking call in a thread
of its own, next to the async manager of ``--driver`` as the reference.

    python bench/failover.py [--runs N] [--driver asyncpg|psycopg] [--face async|sync] [--log]

bench/README.md explains the columns and holds the figures of a run.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from package_versions import describe_versions

from pgrouter.demo import fetch_rows
from pgrouter.testing import LocalCluster, Node

#: Targets the verdict checks (pgrouter with defaults, every run).
TARGET_GAP_OVER_PROMOTION_MS = 150.0
TARGET_FROZEN_OUT_MS = 2000.0

WRITERS = 4
READERS = 4
#: Writes wait across the failover instead of failing (hasql's default is 1 s).
ACQUIRE_TIMEOUT = 10.0
#: Workload before the fault, so pools and balancers are warm.
WARMUP = 1.0
#: A workload task stops waiting for a call after this long and issues the next
#: one; the slow call goes on in the background and still counts when it ends.
#: Without this, writers stuck on a frozen primary would measure their own hang.
PATIENCE = 0.2
#: After a failed call, so a broken host is not hammered in a tight loop.
RETRY_PAUSE = 0.01
#: How often the watcher looks at the manager's view of the hosts.
WATCH_INTERVAL = 0.005
#: Once every milestone is seen, the workload runs this much longer (late errors count).
SETTLE = 0.5
#: How often the floor probe asks the replicas whether they left recovery.
FLOOR_POLL = 0.002
#: A write still running this long when the run ends counts as stuck.
STUCK_AFTER = 1.0
#: Upper bound of one scenario, fault to end: a hanging contender is reported, not waited for.
SCENARIO_TIMEOUT = 30.0
#: Bounds on opening and closing a manager.
OPEN_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0

TABLE = "bench_failover_writes"
WRITE_QUERY = f"INSERT INTO {TABLE} (id) VALUES ($1) RETURNING inet_server_port()"
READ_QUERY = "SELECT inet_server_port()"
#: Threads for the blocking face's calls: each workload call blocks one, and
#: calls stuck on a frozen primary keep theirs until it thaws.
SYNC_THREADS = 128

SCENARIOS = {"kill": "kill -9 the primary + promote", "sigstop": "SIGSTOP the primary + promote"}


# -- contenders -----------------------------------------------------------------


class Contender(abc.ABC):
    """One manager configuration: how to build it and how to ask it about a host."""

    name: str

    @abc.abstractmethod
    def make(self, dsn: str, driver: str) -> Any:
        """A manager over every host of ``dsn`` (not opened yet)."""

    @abc.abstractmethod
    def in_rotation(self, pm: Any, index: int) -> bool:
        """Whether the manager would still hand out the ``index``-th host's connections."""

    @abc.abstractmethod
    def is_primary(self, pm: Any, index: int) -> bool:
        """Whether the manager sees the ``index``-th host as the primary."""

    # The calls the run makes: an async manager's by default.

    async def ready(self, pm: Any) -> None:
        await pm.ready(timeout=OPEN_TIMEOUT)

    async def execute(self, pm: Any, query: str) -> None:
        async with pm.acquire_master() as connection:
            await fetch_rows(connection, query)

    async def write(self, pm: Any, write_id: int) -> int:
        """One write; the port of the server that acknowledged it."""
        async with pm.acquire_master() as connection:
            rows = await fetch_rows(connection, WRITE_QUERY, write_id)
        return int(rows[0][0])

    async def read(self, pm: Any) -> None:
        async with pm.acquire_replica() as connection:
            await fetch_rows(connection, READ_QUERY)

    async def close(self, pm: Any) -> None:
        try:
            await asyncio.wait_for(pm.close(), CLOSE_TIMEOUT)
        except (Exception, asyncio.TimeoutError):
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(pm.terminate(), CLOSE_TIMEOUT)


def pool_kwargs(driver: str) -> dict[str, Any]:
    sizes: dict[str, Any] = {"min_size": 2, "max_size": 10}
    if driver == "psycopg":
        sizes["kwargs"] = {"autocommit": True}
    return sizes


class PgrouterContender(Contender):
    MODULES = {"asyncpg": "pgrouter.asyncpg", "psycopg": "pgrouter.psycopg3"}

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self._options = options

    def make(self, dsn: str, driver: str) -> Any:
        cls = importlib.import_module(self.MODULES[driver]).PoolManager
        return cls(
            dsn,
            acquire_timeout=ACQUIRE_TIMEOUT,
            pool_factory_kwargs=pool_kwargs(driver),
            **self._options,
        )

    def in_rotation(self, pm: Any, index: int) -> bool:
        # A healthy host can still be out: fenced, when it lost a split brain.
        snapshot = pm.topology
        host = snapshot.hosts[index]
        return bool(snapshot.is_primary(host) or snapshot.is_replica(host))

    def is_primary(self, pm: Any, index: int) -> bool:
        return pm.topology.hosts[index] in pm.topology.primaries


class SyncPgrouterContender(PgrouterContender):
    """A blocking manager of pgrouter.sync: every call blocks a thread of its own.

    The same workload as the async contenders (the loops, their patience, the
    milestones) runs on the event loop; each write or read is one blocking
    ``with pm.acquire_master() as conn:`` block in a worker thread, as a thread
    of a WSGI server or a Celery worker would run it.
    """

    SIZES = {
        "psycopg": {"min_size": 2, "max_size": 10, "kwargs": {"autocommit": True}},
        "psycopg2": {"minconn": 2, "maxconn": 10, "autocommit": True},
    }

    def __init__(self, name: str, driver: str) -> None:
        super().__init__(name)
        self.driver = driver
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None

    def make(self, dsn: str, driver: str) -> Any:
        cls = importlib.import_module(f"pgrouter.sync.{self.driver}").PoolManager
        self._threads = concurrent.futures.ThreadPoolExecutor(
            SYNC_THREADS, thread_name_prefix="bench-sync"
        )
        return cls(
            dsn,
            acquire_timeout=ACQUIRE_TIMEOUT,
            pool_factory_kwargs=dict(self.SIZES[self.driver]),
        )

    async def _blocking(self, call: Callable[..., Any], *args: Any) -> Any:
        assert self._threads is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(call, *args))

    async def ready(self, pm: Any) -> None:
        await self._blocking(functools.partial(pm.ready, timeout=OPEN_TIMEOUT))

    async def execute(self, pm: Any, query: str) -> None:
        await self._blocking(blocking_query, pm.acquire_master, query)

    async def write(self, pm: Any, write_id: int) -> int:
        rows = await self._blocking(blocking_query, pm.acquire_master, SYNC_WRITE_QUERY, write_id)
        return int(rows[0][0])

    async def read(self, pm: Any) -> None:
        await self._blocking(blocking_query, pm.acquire_replica, READ_QUERY)

    async def close(self, pm: Any) -> None:
        # close(timeout=) bounds the wait for calls still stuck; terminate() cuts them.
        with contextlib.suppress(Exception):
            await self._blocking(functools.partial(pm.close, timeout=CLOSE_TIMEOUT))
        with contextlib.suppress(Exception):
            await self._blocking(pm.terminate)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None


#: WRITE_QUERY in the DB-API's placeholders (psycopg 3 and psycopg2 alike).
SYNC_WRITE_QUERY = WRITE_QUERY.replace("$1", "%s")


def blocking_query(acquire: Callable[[], Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    """One ``with acquire() as conn:`` block running ``query``: acknowledged once it ends.

    The contenders' pools are in autocommit; without it, the block's end would
    commit before the rows are returned: either way a returned write is acknowledged.
    """
    with acquire() as connection, connection.cursor() as cursor:
        cursor.execute(query, params or None)
        rows = cursor.fetchall() if cursor.description else []
    return [tuple(row) for row in rows]


class HasqlContender(Contender):
    name = "hasql 0.10"
    MODULES = {"asyncpg": "hasql.asyncpg", "psycopg": "hasql.psycopg3"}

    def make(self, dsn: str, driver: str) -> Any:
        # Imported here: a broken hasql install shows up in its row, not as a crash.
        cls = importlib.import_module(self.MODULES[driver]).PoolManager
        return cls(dsn, acquire_timeout=ACQUIRE_TIMEOUT, pool_factory_kwargs=pool_kwargs(driver))

    # hasql has no public per-host state: its pool sets are what its balancer reads.
    def in_rotation(self, pm: Any, index: int) -> bool:
        state = pm._pool_state
        pool = state.pools[index]
        return pool is not None and (
            state.pool_is_master(pool) or state.pool_is_replica(pool) or state.pool_is_stale(pool)
        )

    def is_primary(self, pm: Any, index: int) -> bool:
        state = pm._pool_state
        pool = state.pools[index]
        return pool is not None and bool(state.pool_is_master(pool))


ASYNC_CONTENDERS: list[Contender] = [
    PgrouterContender("pgrouter"),
    PgrouterContender("pgrouter, no events", event_driven_checks=False),
    HasqlContender(),
]

#: ``--face sync``: the async manager of ``--driver`` first, as the reference.
SYNC_CONTENDERS: list[Contender] = [
    PgrouterContender("pgrouter (async)"),
    SyncPgrouterContender("pgrouter.sync psycopg", "psycopg"),
    SyncPgrouterContender("pgrouter.sync psycopg2", "psycopg2"),
]

#: The contenders of this run (set by main() from ``--face``).
CONTENDERS: list[Contender] = ASYNC_CONTENDERS


# -- one run --------------------------------------------------------------------


@dataclass
class Outcome:
    """One scenario run of one contender. Times are ms since the fault started."""

    contender: str
    scenario: str
    gap: float | None = None  # first write acknowledged by the new primary
    promotion: float | None = None  # the promoted replica accepts writes (the floor)
    failover: float | None = None  # failover() returned: the other replica re-pointed too
    old_out: float | None = None  # the manager stopped handing out the old primary
    new_seen: float | None = None  # the manager saw the new primary as primary
    read_errors: int = 0
    write_errors: int = 0
    stuck_writes: int = 0  # writes waiting for STUCK_AFTER or more when the run ended
    error_kinds: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # the run itself failed (open, fault, ...)
    timed_out: bool = False
    fault_at: float | None = None  # time.monotonic() when the fault started
    log: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, "pgrouter" line)

    @property
    def added(self) -> float | None:
        if self.gap is None or self.promotion is None:
            return None
        return self.gap - self.promotion


class Workload:
    """Writers and readers through one manager; records what happens after the fault."""

    def __init__(self, contender: Contender, pm: Any, outcome: Outcome) -> None:
        self.contender = contender
        self.pm = pm
        self.outcome = outcome
        self.next_id = 1
        self.fault_at: float | None = None
        self.old_port: int | None = None
        self.first_new_write: float | None = None
        self.stopped = False
        self.loops: list[asyncio.Task[None]] = []
        self.calls: set[asyncio.Task[bool]] = set()  # every call still running
        self.writes: dict[asyncio.Task[bool], float] = {}  # the writes among them: start time

    def start(self) -> None:
        self.loops = [asyncio.create_task(self._loop(self._write)) for _ in range(WRITERS)]
        self.loops += [asyncio.create_task(self._loop(self._read)) for _ in range(READERS)]

    async def _loop(self, call: Callable[[], Any]) -> None:
        while not self.stopped:
            task = asyncio.create_task(call())
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)
            if call == self._write:
                self.writes[task] = time.monotonic()
                task.add_done_callback(self.writes.pop)
            await asyncio.wait({task}, timeout=PATIENCE)
            if task.done() and not task.result():
                await asyncio.sleep(RETRY_PAUSE)

    async def _write(self) -> bool:
        write_id, self.next_id = self.next_id, self.next_id + 1
        try:
            port = await self.contender.write(self.pm, write_id)
        except Exception as error:  # a failed call is a result, not a crash
            self._failed("write", error)
            return False
        now = time.monotonic()
        if self.fault_at is not None and port != self.old_port and self.first_new_write is None:
            self.first_new_write = now
        return True

    async def _read(self) -> bool:
        try:
            await self.contender.read(self.pm)
        except Exception as error:
            self._failed("read", error)
            return False
        return True

    def _failed(self, kind: str, error: Exception) -> None:
        if self.stopped:
            return  # the run is being torn down: not the fault's doing
        if kind == "write":
            self.outcome.write_errors += 1
        else:
            self.outcome.read_errors += 1
        key = f"{kind}: {type(error).__name__}"
        self.outcome.error_kinds[key] = self.outcome.error_kinds.get(key, 0) + 1

    async def stop(self) -> None:
        self.stopped = True
        for loop in self.loops:
            loop.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)
        calls = set(self.calls)
        now = time.monotonic()
        self.outcome.stuck_writes = sum(
            1 for started in self.writes.values() if now - started >= STUCK_AFTER
        )
        for task in calls:
            task.cancel()
        if calls:
            # A call stuck on a dead connection may not even finish cancelling.
            await asyncio.wait(calls, timeout=CLOSE_TIMEOUT)


class LogCapture(logging.Handler):
    """Keeps the "pgrouter" log lines of the current run; drops every other record.

    Installed on the root logger, it also keeps the drivers' and hasql's reconnect
    warnings (with tracebacks) off stderr, where they would bury the table.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.lines is not None and record.name.startswith("pgrouter"):
            message = record.getMessage().removeprefix("pgrouter: ")
            self.lines.append((time.monotonic(), f"{record.levelname.lower()}: {message}"))


LOG = LogCapture()


async def run_scenario(contender: Contender, scenario: str, driver: str) -> Outcome:
    outcome = Outcome(contender.name, scenario)
    cluster = LocalCluster(replicas=2)
    try:
        await asyncio.to_thread(cluster.start)
        LOG.lines = outcome.log
        await measure(contender, scenario, driver, cluster, outcome)
    except Exception as error:
        outcome.error = describe(error)
    finally:
        LOG.lines = None
        await asyncio.to_thread(cluster.close)  # stops every node, frozen ones included
    return outcome


async def measure(
    contender: Contender, scenario: str, driver: str, cluster: LocalCluster, outcome: Outcome
) -> None:
    old = cluster.nodes[0]  # LocalCluster always builds node0 as the primary
    pm = contender.make(cluster.dsn(), driver)
    workload = Workload(contender, pm, outcome)
    fault: asyncio.Task[tuple[Node, float]] | None = None
    floor: asyncio.Task[float] | None = None
    probes: list[asyncpg.Connection] = []
    try:
        await contender.ready(pm)
        await contender.execute(pm, f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
        workload.old_port = old.port
        workload.start()
        # Straight to the replicas, outside any manager: sees the floor.
        probes = [await asyncpg.connect(node.dsn()) for node in cluster.nodes[1:]]
        await asyncio.sleep(WARMUP)

        started = workload.fault_at = outcome.fault_at = time.monotonic()
        floor = asyncio.create_task(first_writable(probes))
        fault = asyncio.create_task(asyncio.to_thread(fault_and_promote, cluster, old, scenario))
        new: Node | None = None
        deadline = started + SCENARIO_TIMEOUT
        settle_until: float | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            if floor.done() and outcome.promotion is None:
                outcome.promotion = ms(floor.result() - started)
            if fault.done() and new is None:
                new, failover_done = fault.result()  # raises if the fault failed
                outcome.failover = ms(failover_done - started)
            if outcome.old_out is None and not contender.in_rotation(pm, 0):
                outcome.old_out = ms(now - started)
            seen = new is not None and contender.is_primary(pm, cluster.nodes.index(new))
            if outcome.new_seen is None and seen:
                outcome.new_seen = ms(now - started)
            if outcome.gap is None and workload.first_new_write is not None:
                outcome.gap = ms(workload.first_new_write - started)
            if settle_until is None and None not in (outcome.gap, outcome.old_out, new):
                settle_until = now + SETTLE
            if settle_until is not None and now >= settle_until:
                break
        else:
            outcome.timed_out = True
    finally:
        await workload.stop()
        if floor is not None:
            floor.cancel()
        for probe in probes:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe.close(), CLOSE_TIMEOUT)
        if fault is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(fault), SCENARIO_TIMEOUT)
        # Back before closing, so pools can say goodbye instead of hanging on it.
        await asyncio.to_thread(old.thaw)
        await contender.close(pm)


def fault_and_promote(cluster: LocalCluster, old: Node, scenario: str) -> tuple[Node, float]:
    """Runs in a thread: the fault, then the promotion; returns the new primary and when."""
    if scenario == "kill":
        old.kill()
    else:
        old.freeze()
    new = cluster.failover()
    return new, time.monotonic()


async def first_writable(probes: list[asyncpg.Connection]) -> float:
    """When one of the replicas behind ``probes`` left recovery (it accepts writes from then).

    Not when ``failover()`` returned: that waits for the other replica to stream
    from the new primary too, and ``pg_ctl promote -w`` polls every 100 ms, so
    it comes a few hundred ms after the new primary accepts writes.
    """
    while True:
        for probe in probes:
            if not await probe.fetchval("SELECT pg_is_in_recovery()"):
                return time.monotonic()
        await asyncio.sleep(FLOOR_POLL)


def ms(seconds: float) -> float:
    return seconds * 1000


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text.splitlines()[0][:120]


# -- report ---------------------------------------------------------------------

#: (header, the figure in an Outcome, column width): times first, then counts.
COLUMNS: list[tuple[str, Callable[[Outcome], float | None], int]] = [
    ("write gap", lambda o: o.gap, 20),
    ("writable", lambda o: o.promotion, 16),
    ("gap-promo", lambda o: o.added, 20),
    ("failover()", lambda o: o.failover, 16),
    ("new seen", lambda o: o.new_seen, 20),
    ("old out", lambda o: o.old_out, 20),
    ("read err", lambda o: o.read_errors, 14),
    ("write err", lambda o: o.write_errors, 14),
    ("stuck", lambda o: o.stuck_writes, 8),
]


def summary(values: list[float | None], runs: int) -> str:
    """Median (min-max) of the runs that have the figure; "timeout" when none has it."""
    known = [v for v in values if v is not None]
    if not known:
        return "timeout"
    fmt = "{:.0f}"
    median = fmt.format(statistics.median(known))
    text = median if min(known) == max(known) else f"{median} ({fmt.format(min(known))}-"
    if min(known) != max(known):
        text += f"{fmt.format(max(known))})"
    if len(known) < runs:
        text += f" [{runs - len(known)} t/o]"
    return text


def table(outcomes: list[Outcome], scenario: str, runs: int) -> str:
    header = f"{'contender':<24}" + "".join(f"{name:>{width}}" for name, _, width in COLUMNS)
    lines = [
        f"== {SCENARIOS[scenario]}: ms since the fault, median (min-max) over {runs} runs",
        header,
    ]
    for contender in CONTENDERS:
        mine = [o for o in outcomes if o.contender == contender.name and o.scenario == scenario]
        failed = [o for o in mine if o.error]
        row = f"{contender.name:<24}"
        usable = [o for o in mine if not o.error]
        if not usable:
            error = failed[0].error if failed else "no run"
            lines.append(f"{row}FAILED: {error}")
            continue
        for _, read, width in COLUMNS:
            row += f"{summary([read(o) for o in usable], len(usable)):>{width}}"
        lines.append(row)
        if failed:
            lines.append(f"{'':<24}{len(failed)} run(s) FAILED: {failed[0].error}")
        kinds: dict[str, int] = {}
        for o in usable:
            for kind_name, count in o.error_kinds.items():
                kinds[kind_name] = kinds.get(kind_name, 0) + count
        if kinds:
            listed = ", ".join(f"{count} x {name}" for name, count in sorted(kinds.items()))
            lines.append(f"{'':<24}errors over all runs: {listed}")
    return "\n".join(lines)


def judged() -> list[Contender]:
    """Whose targets the verdict checks: pgrouter with defaults, each face's managers."""
    if CONTENDERS is SYNC_CONTENDERS:
        return list(CONTENDERS)
    return [CONTENDERS[0]]


def verdict(outcomes: list[Outcome], name: str) -> str:
    """Judges one pgrouter contender (with defaults) on its worst run, not its median."""
    mine = [o for o in outcomes if o.contender == name]
    problems: list[str] = []
    for scenario in SCENARIOS:
        runs = [o for o in mine if o.scenario == scenario]
        if not runs or any(o.error or o.added is None for o in runs):
            problems.append(f"{scenario}: a run failed or timed out")
            continue
        worst = max(o.added or 0.0 for o in runs)
        if worst > TARGET_GAP_OVER_PROMOTION_MS:
            problems.append(f"{scenario}: write gap {worst:.0f} ms over the promotion")
    frozen = [o for o in mine if o.scenario == "sigstop" and not o.error]
    out = [o.old_out for o in frozen]
    if not out or None in out:
        problems.append("sigstop: the frozen primary never left the rotation")
    elif max(v for v in out if v is not None) > TARGET_FROZEN_OUT_MS:
        problems.append(f"sigstop: frozen primary out after {max(out):.0f} ms")  # type: ignore[type-var]
    worst_gap = max((o.added for o in mine if o.added is not None), default=float("nan"))
    worst_out = max((v for v in out if v is not None), default=float("nan"))
    target = (
        f"write gap within {TARGET_GAP_OVER_PROMOTION_MS:.0f} ms of the promotion "
        f"(worst run: +{worst_gap:.0f} ms) and frozen primary out within "
        f"{TARGET_FROZEN_OUT_MS / 1000:g} s (worst run: {worst_out:.0f} ms), in every run"
    )
    if problems:
        return f"VERDICT: {name} MISSES the targets ({target}): " + "; ".join(problems)
    return f"VERDICT: {name} MEETS the targets: {target}"


def ratios(outcomes: list[Outcome]) -> str:
    """Write gap / (promotion + 150 ms) per contender and scenario: at most 1 meets the target."""
    allowed = TARGET_GAP_OVER_PROMOTION_MS
    lines = [f"== write gap / (writable + {allowed:.0f} ms), median (min-max) over the runs"]
    for contender in CONTENDERS:
        cells = []
        for scenario in SCENARIOS:
            values = [
                o.gap / (o.promotion + allowed)
                for o in outcomes
                if o.contender == contender.name and o.scenario == scenario
                if o.gap is not None and o.promotion is not None and not o.error
            ]
            if not values:
                cells.append(f"{scenario}: -")
                continue
            cells.append(
                f"{scenario}: {statistics.median(values):.2f} "
                f"({min(values):.2f}-{max(values):.2f})"
            )
        lines.append(f"{contender.name:<24}" + "   ".join(cells))
    return "\n".join(lines)


def print_logs(outcomes: list[Outcome]) -> None:
    """The "pgrouter" log lines of every pgrouter run, ms relative to the fault."""
    for o in outcomes:
        if not o.log:
            continue
        print(f"\n-- {o.contender}, {o.scenario}: 'pgrouter' log lines (ms since the fault)")
        for moment, text in o.log:
            if o.fault_at is None:
                print(f"  {text}")
            else:
                print(f"  {(moment - o.fault_at) * 1000:+8.1f}  {text}")


# -- main -----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per contender and scenario")
    parser.add_argument("--driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    parser.add_argument(
        "--face",
        choices=["async", "sync"],
        default="async",
        help="async: pgrouter and hasql on --driver; sync: pgrouter.sync psycopg and "
        "psycopg2, next to pgrouter's async manager on --driver",
    )
    parser.add_argument("--log", action="store_true", help="print pgrouter's log of every run")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> list[Outcome]:
    outcomes: list[Outcome] = []
    total = args.runs * len(SCENARIOS) * len(CONTENDERS)
    for number in range(args.runs):
        for scenario in SCENARIOS:
            # Rotated each round: nobody always runs first on a freshly busy machine.
            shift = number % len(CONTENDERS)
            for contender in CONTENDERS[shift:] + CONTENDERS[:shift]:
                started = time.monotonic()
                outcome = await run_scenario(contender, scenario, args.driver)
                outcomes.append(outcome)
                note = outcome.error or ("timeout" if outcome.timed_out else "")
                print(
                    f"  [{len(outcomes)}/{total}] {scenario:<7} {contender.name:<24} "
                    f"gap {fmt_ms(outcome.gap)}, writable {fmt_ms(outcome.promotion)}, "
                    f"old out {fmt_ms(outcome.old_out)} "
                    f"({time.monotonic() - started:.1f} s) {note}",
                    file=sys.stderr,
                    flush=True,
                )
    return outcomes


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    global CONTENDERS
    args = parse_args(argv)
    CONTENDERS = SYNC_CONTENDERS if args.face == "sync" else ASYNC_CONTENDERS
    logging.getLogger().addHandler(LOG)
    logging.getLogger().setLevel(logging.INFO)
    outcomes = asyncio.run(run(args))
    packages = ["pgrouter", "hasql", "asyncpg", "psycopg"]
    if args.face == "sync":
        packages = ["pgrouter", "psycopg", "psycopg-pool", "psycopg2-binary", args.driver]
    versions = describe_versions(*dict.fromkeys(packages))
    face = "the blocking face (a thread per call) vs async" if args.face == "sync" else "async"
    print(
        f"\npgrouter failover benchmark — {face}, {args.driver} driver for async, Python "
        f"{platform.python_version()}\n{versions}\n"
        f"{WRITERS} writers + {READERS} readers, acquire_timeout={ACQUIRE_TIMEOUT:g} s, "
        "refresh_delay and refresh_timeout left at each library's default; "
        "fresh cluster per run, contenders interleaved.\n"
        "writable = the promoted replica accepts writes (the floor, polled every 2 ms outside "
        "the managers);\ngap-promo = write gap minus writable (what the library adds); "
        "failover() = cluster.failover() returned (the other replica re-pointed too);\n"
        "new seen / old out = when the manager listed the new primary / stopped handing out "
        f"the old one; stuck = writes waiting >= {STUCK_AFTER:g} s when the run ended.\n"
    )
    for scenario in SCENARIOS:
        print(table(outcomes, scenario, args.runs) + "\n")
    print(ratios(outcomes) + "\n")
    for contender in judged():
        print(verdict(outcomes, contender.name))
    if args.log:
        print_logs(outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
