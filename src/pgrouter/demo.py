"""``pgrouter demo``: a live failover on a throwaway local cluster, measured.

Builds a primary and two replicas with :class:`~pgrouter.testing.LocalCluster`,
opens a manager on them with the library defaults (plus ``acquire_timeout=5``
so writers wait across the failover), runs concurrent reads and writes, then
``kill -9``s the primary and promotes a replica while the workload goes on.
It prints what a user would ask about: where the traffic went, which role
changes the manager saw and when, how long writes could not be done, which
calls failed, and whether every acknowledged write survived. Every figure is
measured during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .cli import DRIVER_MODULES, load_manager_class
from .status_report import format_topology
from .testing import LocalCluster, Node
from .topology import HostState, TopologySnapshot

WRITERS = 8
READERS = 16
#: How often the watcher looks at ``pm.topology``.
WATCH_INTERVAL = 0.01
#: Long enough that writers wait for the promoted replica instead of failing.
ACQUIRE_TIMEOUT = 5.0
#: How long a graceful close of the manager may take before it is terminated.
CLOSE_TIMEOUT = 5.0
#: After a failed call, so a broken host is not hammered in a tight loop.
RETRY_PAUSE = 0.01

TABLE = "pgrouter_demo_writes"
WRITE_QUERY = f"INSERT INTO {TABLE} (id) VALUES ($1) RETURNING inet_server_port()"
READ_QUERY = "SELECT inet_server_port()"


# -- counters -------------------------------------------------------------


@dataclass
class PhaseCounters:
    """Calls of one phase (before or after the kill): per-host successes, failures."""

    reads: Counter[int] = field(default_factory=Counter)  # server port -> successful reads
    writes: Counter[int] = field(default_factory=Counter)  # server port -> acknowledged writes
    failed_reads: int = 0
    failed_writes: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # "write: ErrorType" -> count
    error_samples: dict[str, str] = field(default_factory=dict)  # first message of each kind
    slowest_failure: dict[str, float] = field(default_factory=dict)  # kind -> seconds


@dataclass
class DemoRun:
    """Everything measured during one demo run."""

    before: PhaseCounters = field(default_factory=PhaseCounters)
    after: PhaseCounters = field(default_factory=PhaseCounters)
    killed: bool = False
    next_id: int = 1
    acknowledged: set[int] = field(default_factory=set)
    old_primary_port: int | None = None
    # time.monotonic() of each milestone; None until it happens.
    kill_started: float | None = None
    kill_done: float | None = None
    failover_started: float | None = None
    failover_done: float | None = None
    last_old_write: float | None = None  # last write acknowledged by the old primary
    first_new_write: float | None = None  # first write acknowledged by another host
    # (time.monotonic(), text): milestones and role changes seen by the watcher.
    events: list[tuple[float, str]] = field(default_factory=list)
    # Log lines of the library and the drivers: text -> [first time seen, count].
    log_lines: dict[str, list[float | int]] = field(default_factory=dict)

    @property
    def phase(self) -> PhaseCounters:
        return self.after if self.killed else self.before

    def take_id(self) -> int:
        # Single-threaded event loop: no lock needed for the increment.
        write_id, self.next_id = self.next_id, self.next_id + 1
        return write_id

    def millis_since_kill(self, moment: float | None) -> float | None:
        if moment is None or self.kill_started is None:
            return None
        return (moment - self.kill_started) * 1000


# -- driver-neutral SQL ---------------------------------------------------


async def fetch_rows(connection: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` (``$n`` placeholders) on an asyncpg or a psycopg connection."""
    if hasattr(connection, "fetchval"):  # asyncpg: autocommit unless in a transaction
        return [tuple(row) for row in await connection.fetch(query, *params)]
    cursor = await connection.execute(re.sub(r"\$\d+", "%s", query), params)
    rows: list[tuple[Any, ...]] = await cursor.fetchall() if cursor.description else []
    # psycopg pools hand out connections in a transaction: the write is only
    # acknowledged once this commit returns.
    await connection.commit()
    return rows


# -- workload -------------------------------------------------------------


async def writer(pm: Any, run: DemoRun, stop: asyncio.Event) -> None:
    while not stop.is_set():
        write_id = run.take_id()
        started = time.monotonic()
        try:
            async with pm.acquire_master() as connection:
                rows = await fetch_rows(connection, WRITE_QUERY, write_id)
        except Exception as error:  # a failed call is a result, not a crash
            record_failure(run.phase, "write", error, time.monotonic() - started)
            await asyncio.sleep(RETRY_PAUSE)
            continue
        port = int(rows[0][0])
        run.acknowledged.add(write_id)
        run.phase.writes[port] += 1
        if not run.killed:
            continue
        if port == run.old_primary_port:
            # Its backends keep answering until kill() has found and SIGKILLed them all.
            run.last_old_write = time.monotonic()
        elif run.first_new_write is None:
            run.first_new_write = time.monotonic()


async def reader(pm: Any, run: DemoRun, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with pm.acquire_replica() as connection:
                rows = await fetch_rows(connection, READ_QUERY)
        except Exception as error:
            record_failure(run.phase, "read", error, time.monotonic() - started)
            await asyncio.sleep(RETRY_PAUSE)
            continue
        run.phase.reads[int(rows[0][0])] += 1


def record_failure(counters: PhaseCounters, kind: str, error: Exception, elapsed: float) -> None:
    if kind == "write":
        counters.failed_writes += 1
    else:
        counters.failed_reads += 1
    key = f"{kind}: {type(error).__name__}"
    counters.errors[key] += 1
    counters.error_samples.setdefault(key, _one_line(str(error)))
    counters.slowest_failure[key] = max(elapsed, counters.slowest_failure.get(key, 0.0))


async def watch_topology(pm: Any, run: DemoRun, stop: asyncio.Event) -> None:
    """Log each change of a host's role or health, polling every ``WATCH_INTERVAL``."""
    seen = {host.index: _state_of(host) for host in pm.topology}
    while not stop.is_set():
        await asyncio.sleep(WATCH_INTERVAL)
        for host in pm.topology:
            state = _state_of(host)
            if state != seen[host.index]:
                reason = f" ({host.last_error})" if host.last_error else ""
                run.events.append(
                    (time.monotonic(), f"{host.address}: {seen[host.index]} -> {state}{reason}")
                )
                seen[host.index] = state


def _state_of(host: HostState) -> str:
    return f"{host.role.value}/{'healthy' if host.healthy else 'down'}"


class TimelineLogHandler(logging.Handler):
    """Puts log lines on the demo's timeline, once per distinct line, instead of stderr.

    The drivers' pools log every failed reconnect to the dead host, with a
    traceback: on stderr that buries the report, on the timeline it is one line.
    """

    def __init__(self, run: DemoRun) -> None:
        super().__init__(logging.INFO)
        self._run = run

    def emit(self, record: logging.LogRecord) -> None:
        message = _one_line(record.getMessage().removeprefix("pgrouter: "))
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f": {type(error).__name__}: {_one_line(str(error))}"
        text = f"[{record.name} {record.levelname.lower()}] {message}"
        seen = self._run.log_lines.setdefault(text, [time.monotonic(), 0])
        seen[1] += 1


#: Logger name -> lowest level put on the timeline.
CAPTURED_LOGGERS = {
    "pgrouter": logging.INFO,
    "asyncpg.pool": logging.WARNING,
    "psycopg.pool": logging.WARNING,
}


@contextlib.contextmanager
def logs_on_timeline(run: DemoRun) -> Iterator[None]:
    handler = TimelineLogHandler(run)
    levels = {}
    for name, level in CAPTURED_LOGGERS.items():
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(level)


# -- the steps --------------------------------------------------------------


async def start_cluster() -> LocalCluster:
    # Synchronous replication: an acknowledged write is on a replica before the
    # kill, so the "no acknowledged write lost" check holds by design.
    cluster = LocalCluster(replicas=2, settings={"synchronous_standby_names": "ANY 1 (*)"})
    started = time.monotonic()
    await asyncio.to_thread(cluster.start)
    print(f"Local cluster started in {_seconds(time.monotonic() - started)}:")
    for index, node in enumerate(cluster.nodes):
        # LocalCluster always builds node0 as the primary.
        print(f"  {node.name}  {node.host}:{node.port}  {'primary' if index == 0 else 'replica'}")
    return cluster


async def start_manager(manager_class: Any, cluster: LocalCluster) -> Any:
    started = time.monotonic()
    pm = manager_class(cluster.dsn(), acquire_timeout=ACQUIRE_TIMEOUT)
    await pm.ready(timeout=30)
    print(f"\nManager ready in {_seconds(time.monotonic() - started)}; its topology:")
    print(_indent(format_topology(pm.topology)))
    async with pm.acquire_master() as connection:
        await fetch_rows(connection, f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
    return pm


async def kill_and_promote(cluster: LocalCluster, run: DemoRun) -> Node:
    old_primary = cluster.nodes[0]
    run.old_primary_port = old_primary.port
    print(f"kill -9 {old_primary.name}, then promote a replica right away ...")
    run.killed = True
    run.kill_started = time.monotonic()
    run.events.append((run.kill_started, f"kill -9 {old_primary.name} starts"))
    await asyncio.to_thread(old_primary.kill)
    run.kill_done = time.monotonic()
    run.events.append((run.kill_done, f"{old_primary.name} killed (kill -9 done)"))
    run.failover_started = time.monotonic()
    new_primary = await asyncio.to_thread(cluster.failover)
    run.failover_done = time.monotonic()
    run.events.append((run.failover_done, f"{new_primary.name} promoted, replicas re-pointed"))
    return new_primary


async def missing_writes(pm: Any, run: DemoRun, new_primary: Node) -> tuple[set[int], int]:
    """Acknowledged ids absent on the primary, and the port the check ran on."""
    async with pm.acquire_master() as connection:
        rows = await fetch_rows(connection, f"SELECT id, inet_server_port() FROM {TABLE}")
        port = int((await fetch_rows(connection, READ_QUERY))[0][0])
    if port != new_primary.port:
        raise RuntimeError(f"the check ran on port {port}, not on {new_primary.name}")
    return run.acknowledged - {int(row[0]) for row in rows}, port


# -- report -----------------------------------------------------------------


def print_traffic(
    run: DemoRun,
    cluster: LocalCluster,
    first: TopologySnapshot,
    last: TopologySnapshot,
) -> None:
    roles_before = {host.dsn.port: host.role.value for host in first}
    roles_after = {host.dsn.port: _state_of(host) for host in last}
    rows = [("node", "address", "role before", "role after", "reads", "writes", "reads", "writes")]
    for node in cluster.nodes:
        port = node.port
        rows.append(
            (
                node.name,
                f"{node.host}:{port}",
                roles_before.get(port, "?"),
                roles_after.get(port, "?"),
                str(run.before.reads[port]),
                str(run.before.writes[port]),
                str(run.after.reads[port]),
                str(run.after.writes[port]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i >= 4 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]
    before_kill_at = sum(widths[:4]) + 2 * 4
    print("\nTraffic per host (successful calls):")
    print(
        "  " + " " * before_kill_at + "before kill".ljust(widths[4] + widths[5] + 4) + "after kill"
    )
    print(_indent("\n".join(lines)))


def print_timeline(run: DemoRun, old_primary: Node, new_primary: Node) -> None:
    events = list(run.events)
    if run.last_old_write is not None:
        events.append((run.last_old_write, f"last write acknowledged by {old_primary.name}"))
    if run.first_new_write is not None:
        events.append((run.first_new_write, f"first write acknowledged by {new_primary.name}"))
    for text, (moment, count) in run.log_lines.items():
        events.append((float(moment), text + (f" (x{count})" if count > 1 else "")))
    print("\nTimeline (ms relative to the kill; role/health as the manager saw it, log lines):")
    for moment, text in sorted(events):
        offset = run.millis_since_kill(moment)
        print(f"  {offset:+9.1f} ms  {text}" if offset is not None else f"  {text}")


def print_failover(run: DemoRun, new_primary: Node) -> None:
    assert run.kill_started is not None and run.kill_done is not None
    assert run.failover_started is not None and run.failover_done is not None
    print("\nFailover:")
    print(f"  kill -9 took                  {_ms(run.kill_done - run.kill_started)}")
    print(f"  promotion alone (failover())  {_ms(run.failover_done - run.failover_started)}")
    gap = run.millis_since_kill(run.first_new_write)
    if gap is None or run.first_new_write is None:
        print(f"  write gap                     no write reached {new_primary.name}")
        return
    print(
        f"  write gap                     {gap:.1f} ms"
        f"  (kill -> first acknowledged write on {new_primary.name})"
    )
    if run.last_old_write is not None:
        # The old primary's backends answer until kill() has SIGKILLed them all.
        print(
            f"  no write acknowledged for     {_ms(run.first_new_write - run.last_old_write)}"
            "  (last write on the old primary -> first on the new)"
        )


def print_failures(run: DemoRun) -> None:
    print("\nFailed calls:")
    for name, counters in (("before kill", run.before), ("after kill", run.after)):
        print(f"  {name:<12} reads {counters.failed_reads}, writes {counters.failed_writes}")
        for kind, count in counters.errors.most_common():
            slowest = _ms(counters.slowest_failure[kind])
            print(f"    {count:>4} x {kind}, failing after up to {slowest}:")
            sample = textwrap.wrap(counters.error_samples[kind], 96, max_lines=4)
            print(_indent("\n".join(sample), "           "))


# -- the demo ---------------------------------------------------------------


async def run_demo(driver: str | None, seconds: float) -> int:
    """Run the failover demo; 0 when every acknowledged write survived, else 1."""
    manager_class = load_manager_class(driver)
    driver_name = next(
        (name for name, module in DRIVER_MODULES.items() if module == manager_class.__module__),
        manager_class.__module__,
    )
    print(
        f"pgrouter demo: {driver_name} driver, {WRITERS} writers + {READERS} readers, "
        f"{seconds:g} s before and {seconds:g} s after a kill -9 of the primary\n"
    )
    run = DemoRun()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    cluster: LocalCluster | None = None
    pm: Any = None
    # Around the cleanup too: pools dying with the cluster log as they go.
    with logs_on_timeline(run):
        try:
            cluster = await start_cluster()
            pm = await start_manager(manager_class, cluster)
            first = pm.topology
            tasks = [asyncio.create_task(watch_topology(pm, run, stop))]
            tasks += [asyncio.create_task(writer(pm, run, stop)) for _ in range(WRITERS)]
            tasks += [asyncio.create_task(reader(pm, run, stop)) for _ in range(READERS)]
            print(f"\nWorkload running for {seconds:g} s ...")
            await asyncio.sleep(seconds)
            new_primary = await kill_and_promote(cluster, run)
            # The workload runs `seconds` after the kill, failover time included.
            assert run.kill_started is not None
            await asyncio.sleep(max(0.0, run.kill_started + seconds - time.monotonic()))
            stop.set()
            print("Workload stopped; waiting for the calls still in flight ...")
            await asyncio.gather(*tasks)
            last = pm.topology
            missing, port = await missing_writes(pm, run, new_primary)
        finally:
            await shut_down(stop, tasks, pm, cluster)

    print_traffic(run, cluster, first, last)
    print_timeline(run, cluster.nodes[0], new_primary)
    print_failover(run, new_primary)
    print_failures(run)
    print(
        f"\nAcknowledged writes: {len(run.acknowledged)}, checked on "
        f"{new_primary.name} ({new_primary.host}:{port}):"
    )
    if missing:
        shown = ", ".join(str(write_id) for write_id in sorted(missing)[:20])
        print(f"  LOST {len(missing)} acknowledged write(s): ids {shown}")
        return 1
    print(
        f"  no acknowledged write lost ({len(run.acknowledged)} of {len(run.acknowledged)} present)"
    )
    return 0 if run.first_new_write is not None else 1


async def shut_down(
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    pm: Any,
    cluster: LocalCluster | None,
) -> None:
    """Stop the workload, the manager, then the cluster; also on error or Ctrl-C."""
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        if pm is not None:
            # Graceful first: every connection is back once the tasks are done,
            # and a closed pool stops its own reconnect tasks.
            try:
                await asyncio.wait_for(pm.close(), CLOSE_TIMEOUT)
            except (Exception, asyncio.CancelledError):
                await pm.terminate()
    finally:
        if cluster is not None:
            # Synchronous on purpose: it must finish even while being cancelled (Ctrl-C).
            cluster.close()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _one_line(text: str) -> str:
    # Object addresses would make every repeat of a log line look distinct.
    return re.sub(r" at 0x[0-9a-f]+", "", " ".join(text.split()))


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


__all__ = ["run_demo"]
