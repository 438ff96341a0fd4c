"""Idle benchmark: what a manager costs while nobody uses it, pgrouter vs hasql.

One throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and two
streaming replicas on loopback, ``log_statement = all``) serves every
contender. Each manager runs in a process of its own, so that the process's
CPU time is that manager's alone: it opens its manager (``refresh_delay`` 1 s,
small pools), waits for ``ready()``, and then sits idle. Every contender runs
in ``--copies`` processes (default 2: one process's idle CPU differs from the
next one's by up to ~1.7x here, whatever the library). All processes run at
the same time and measure the same windows (default: 3 windows of 20 s), so a
ratio between two contenders is taken over the same seconds of the same machine.

Measured per window and process:

- **CPU**: ``time.process_time()`` of the process (every thread, user +
  system) over the window, as a share of one core;
- **probes per host**: counted on the server side, exactly: every statement a
  server runs is in its log (``log_statement = all``), each process connects
  with its own ``application_name`` (the log line prefix shows it), and the
  window is the byte range of each node's log between the window's start and
  end, read by the process at those instants. A probe is a statement that is
  the library's health check (pgrouter: its ``pg_is_in_recovery()`` query;
  hasql: ``SHOW transaction_read_only``); every statement the process sent
  is counted too, to show any other traffic.

Besides the managers: ``bare`` rows (three driver pools and no manager: the
floor of an idle event loop holding connections) and ``busy`` rows (pgrouter
with one task holding a primary connection for the whole run: the primary's
heartbeat then runs, about 10 probes/s on the primary).

    python bench/idle.py [--seconds S] [--rounds N] [--copies N] [--refresh-delay S]

Target (issue 9, item 8): an idle pgrouter costs at most 2x hasql's CPU and
probes each host at most once per ``refresh_delay`` (one extra probe per
window is allowed: a window does not start on a check). bench/README.md holds
the figures of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from package_versions import describe_versions

from pgrouter.testing import LocalCluster

#: Idle pgrouter may cost at most this many times hasql's CPU (same driver).
TARGET_CPU_RATIO = 2.0
#: Seconds between the last contender being ready and the first window: the
#: first checks and the opening of the pools are over by then.
SETTLE = 2.0
#: Bound on a manager's ready() (every host checked and usable), and on a process's exit.
READY_TIMEOUT = 30.0
CLOSE_TIMEOUT = 30.0

#: Health-check statements, as the server logs them.
PROBE_MARKERS = {"pgrouter": "pg_is_in_recovery()", "hasql": "SHOW transaction_read_only"}

MANAGER_MODULES = {
    ("pgrouter", "asyncpg"): "pgrouter.asyncpg",
    ("pgrouter", "psycopg"): "pgrouter.psycopg3",
    ("hasql", "asyncpg"): "hasql.asyncpg",
    ("hasql", "psycopg"): "hasql.psycopg3",
}


@dataclass(frozen=True)
class Contender:
    name: str
    library: str  # "pgrouter", "hasql" or "bare"
    driver: str  # "asyncpg" or "psycopg"
    busy: bool = False  # holds a primary connection for the whole run

    @property
    def application_name(self) -> str:
        """The prefix of its processes' application_name (``-0``, ``-1``, ... follow)."""
        return "bench-idle-" + re.sub(r"[^a-z0-9]+", "-", self.name)


CONTENDERS = [
    Contender("bare/asyncpg", "bare", "asyncpg"),
    Contender("pgrouter/asyncpg", "pgrouter", "asyncpg"),
    Contender("hasql/asyncpg", "hasql", "asyncpg"),
    Contender("pgrouter/asyncpg busy", "pgrouter", "asyncpg", busy=True),
    Contender("bare/psycopg", "bare", "psycopg"),
    Contender("pgrouter/psycopg", "pgrouter", "psycopg"),
    Contender("hasql/psycopg", "hasql", "psycopg"),
    Contender("pgrouter/psycopg busy", "pgrouter", "psycopg", busy=True),
]


# --- the contender's process ---------------------------------------------------------


def pool_kwargs(driver: str, size: int) -> dict[str, Any]:
    sizes: dict[str, Any] = {"min_size": size, "max_size": size}
    if driver == "psycopg":
        sizes["kwargs"] = {"autocommit": True}
    return sizes


async def open_bare_pools(
    stack: contextlib.AsyncExitStack, driver: str, dsns: list[str], size: int
) -> None:
    """One driver pool per host and no manager: what holding connections costs by itself."""
    if driver == "asyncpg":
        import asyncpg

        for dsn in dsns:
            pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
            stack.push_async_callback(pool.close)
    else:
        import psycopg_pool

        for dsn in dsns:
            pool = psycopg_pool.AsyncConnectionPool(
                dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False
            )
            await pool.open(wait=True)
            stack.push_async_callback(pool.close)


def log_sizes(paths: list[str]) -> list[int]:
    return [os.stat(path).st_size for path in paths]


async def contender_main(spec: dict[str, Any]) -> None:
    """Open the contender, say ready, wait for the start time, mark every window boundary."""
    contender = Contender(**spec["contender"])
    async with contextlib.AsyncExitStack() as stack:
        if contender.library == "bare":
            await open_bare_pools(stack, contender.driver, spec["host_dsns"], spec["pool_size"])
        else:
            module = importlib.import_module(MANAGER_MODULES[contender.library, contender.driver])
            manager = module.PoolManager(
                spec["dsn"],
                refresh_delay=spec["refresh_delay"],
                pool_factory_kwargs=pool_kwargs(contender.driver, spec["pool_size"]),
            )
            stack.push_async_callback(manager.close)
            await manager.ready(timeout=READY_TIMEOUT)
            if contender.busy:
                await stack.enter_async_context(manager.acquire_master())
        print(json.dumps({"ready": True}), flush=True)
        start = float(await asyncio.to_thread(sys.stdin.readline))

        marks = []
        for boundary in range(spec["rounds"] + 1):
            await asyncio.sleep(max(start + boundary * spec["seconds"] - time.time(), 0))
            # The three stat() calls of a boundary count in the next window: microseconds.
            wall, cpu = time.monotonic(), time.process_time()
            marks.append({"wall": wall, "cpu": cpu, "logs": log_sizes(spec["logs"])})
        print(json.dumps({"marks": marks}), flush=True)


# --- the parent: cluster, processes, log counting, table ----------------------------


@dataclass
class Window:
    """One window of one process."""

    cpu_share: float  # process CPU time / wall time
    seconds: float
    probes: list[int]  # per host
    statements: list[int]  # per host, every statement of the process


@dataclass
class Result:
    contender: Contender
    copies: list[list[Window]] = field(default_factory=list)  # per process, its windows
    error: str | None = None

    def cpu_per_window(self) -> list[float]:
        """Per window, the mean CPU share of the contender's processes."""
        return [statistics.fmean(windows) for windows in zip(*self.cpu_shares())]

    def cpu_shares(self) -> list[list[float]]:
        return [[w.cpu_share for w in windows] for windows in self.copies]

    def all_windows(self) -> list[Window]:
        return [w for windows in self.copies for w in windows]


def count_statements(
    path: str, start: int, end: int, application_name: str, probe_marker: str | None
) -> tuple[int, int]:
    """(probes, statements) one process sent to one node within a byte range of its log."""
    with open(path, "rb") as log:
        log.seek(start)
        text = log.read(end - start).decode("utf-8", "replace")
    pattern = re.compile(
        rf"^\S+ \S+ \S+ \[\d+\] {re.escape(application_name)} LOG:  "
        r"(?:statement|execute [^:]*): (.*)$",
        re.MULTILINE,
    )
    statements = probes = 0
    for match in pattern.finditer(text):
        statements += 1
        if probe_marker is not None and probe_marker in match.group(1):
            probes += 1
    return probes, statements


@dataclass
class Process:
    """One contender process: which contender, its application_name, the child itself."""

    result: Result
    application_name: str
    child: subprocess.Popen[str]


def spawn(cluster: LocalCluster, result: Result, copy: int, args: argparse.Namespace) -> Process:
    contender = result.contender
    # Unique per process: the servers' log lines are told apart by it.
    application_name = f"{contender.application_name}-{copy}"
    query = {"application_name": application_name}
    spec = {
        "contender": contender.__dict__,
        "dsn": cluster.dsn(query=query),
        "host_dsns": [cluster.dsn(nodes=[node], query=query) for node in cluster.nodes],
        "logs": [node.log_file for node in cluster.nodes],
        "refresh_delay": args.refresh_delay,
        "pool_size": args.pool_size,
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Process(result, application_name, child)


def read_message(process: subprocess.Popen[str], key: str) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"exited with code {process.wait()} (its stderr is above)")
    message = json.loads(line)
    if key not in message:
        raise RuntimeError(f"unexpected message {line!r}")
    return message


def measure(cluster: LocalCluster, args: argparse.Namespace) -> list[Result]:
    logs = [node.log_file for node in cluster.nodes]
    results = [Result(contender) for contender in CONTENDERS]
    processes = []
    for result in results:
        for copy in range(args.copies):
            processes.append(spawn(cluster, result, copy, args))
    for process in processes:
        try:
            read_message(process.child, "ready")
        except Exception as error:
            process.result.error = f"{type(error).__name__}: {error}"
    # Every process measures the same windows, from a start time they all get.
    start = time.time() + SETTLE
    for process in processes:
        assert process.child.stdin is not None
        with contextlib.suppress(OSError):  # a child that failed has gone
            process.child.stdin.write(f"{start!r}\n")
            process.child.stdin.flush()
    print(
        f"# {len(processes)} processes ready; measuring {args.rounds} x {args.seconds:g} s",
        file=sys.stderr,
    )
    for process in processes:
        result = process.result
        if result.error is None:
            try:
                marks = read_message(process.child, "marks")["marks"]
            except Exception as error:
                result.error = f"{type(error).__name__}: {error}"
            else:
                result.copies.append(windows_of(process, marks, logs))
        assert process.child.stdin is not None
        with contextlib.suppress(OSError):
            process.child.stdin.close()
        try:
            process.child.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.child.kill()
            process.child.wait()
    return results


def windows_of(process: Process, marks: list[dict[str, Any]], logs: list[str]) -> list[Window]:
    """Each window's CPU share, and what the process sent to each host, from its marks."""
    marker = PROBE_MARKERS.get(process.result.contender.library)
    windows = []
    for before, after in itertools.pairwise(marks):
        seconds = after["wall"] - before["wall"]
        counts = [
            count_statements(
                path, before["logs"][i], after["logs"][i], process.application_name, marker
            )
            for i, path in enumerate(logs)
        ]
        windows.append(
            Window(
                cpu_share=(after["cpu"] - before["cpu"]) / seconds,
                seconds=seconds,
                probes=[probes for probes, _ in counts],
                statements=[statements for _, statements in counts],
            )
        )
    return windows


# --- report -----------------------------------------------------------------------------


def hasql_of(results: list[Result], driver: str) -> Result | None:
    for result in results:
        if result.contender.library == "hasql" and result.contender.driver == driver:
            return result if result.error is None and result.copies else None
    return None


def cpu_ratio(result: Result, hasql: Result | None) -> float | None:
    """Median over windows of this CPU / hasql's in the same window (means over processes)."""
    if hasql is None:
        return None
    ratios = [
        ours / theirs
        for ours, theirs in zip(result.cpu_per_window(), hasql.cpu_per_window())
        if theirs > 0
    ]
    return statistics.median(ratios) if ratios else None


def probe_limit(args: argparse.Namespace) -> int:
    """Probes one host may get in one window: one per refresh_delay, plus one."""
    return math.floor(args.seconds / args.refresh_delay) + 1


def report(results: list[Result], args: argparse.Namespace, header: list[str]) -> bool:
    for line in header:
        print(line)
    hosts = ["primary", "replica 1", "replica 2"]
    print()
    print(
        f"{'contender':<23}{'CPU % core':>11}{'(min-max)':>14}{'vs hasql':>10}"
        + "".join(f"{h + ' /s':>13}" for h in hosts)
        + f"{'max/window':>12}{'stmts/s':>9}"
    )
    limit = probe_limit(args)
    verdicts: list[tuple[str, bool]] = []
    for result in results:
        contender = result.contender
        judged = contender.library == "pgrouter" and not contender.busy
        if result.error is not None or not result.copies:
            print(f"{contender.name:<23}FAILED: {result.error}")
            if judged:
                verdicts.append((f"{contender.name} FAILED", False))
            continue
        windows = result.all_windows()
        every_share = [share * 100 for shares in result.cpu_shares() for share in shares]
        rates = [
            statistics.median(w.probes[i] / w.seconds for w in windows) for i in range(len(hosts))
        ]
        most = max(max(w.probes) for w in windows)
        statements = statistics.median(sum(w.statements) / w.seconds for w in windows)
        ratio = None
        if contender.library == "pgrouter":
            ratio = cpu_ratio(result, hasql_of(results, contender.driver))
        shown_ratio = f"{ratio:.2f}x" if ratio is not None else ""
        spread = f"({min(every_share):.3f}-{max(every_share):.3f})"
        most_shown = f"{most}" if contender.library != "bare" else "-"
        print(
            f"{contender.name:<23}{statistics.median(result.cpu_per_window()) * 100:>10.3f}%"
            f"{spread:>14}{shown_ratio:>10}"
            + "".join(f"{rate:>13.2f}" for rate in rates)
            + f"{most_shown:>12}{statements:>9.2f}"
        )
        if judged:
            cpu_ok = ratio is not None and ratio <= TARGET_CPU_RATIO
            probes_ok = most <= limit
            verdicts.append(
                (
                    f"{contender.name} CPU {shown_ratio or 'n/a'} of hasql's "
                    f"{'ok' if cpu_ok else 'NO'}, at most {most} probes per host per window "
                    f"{'ok' if probes_ok else 'NO'}",
                    cpu_ok and probes_ok,
                )
            )
    met = bool(verdicts) and all(ok for _, ok in verdicts)
    print()
    print(
        f"VERDICT: idle pgrouter {'MEETS' if met else 'MISSES'} the target "
        f"(CPU <= {TARGET_CPU_RATIO:g}x hasql's, same driver; each host probed at most "
        f"{limit} times per {args.seconds:g} s window at refresh_delay={args.refresh_delay:g}): "
        + "; ".join(text for text, _ in verdicts)
    )
    return met


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one window (s)")
    parser.add_argument("--rounds", type=int, default=3, help="consecutive windows")
    parser.add_argument("--refresh-delay", type=float, default=1.0, help="for every manager (s)")
    parser.add_argument("--pool-size", type=int, default=2, help="min = max size per host")
    parser.add_argument("--copies", type=int, default=2, help="processes per contender")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one contender
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        asyncio.run(contender_main(json.loads(args.child)))
        return 0
    print("# starting a LocalCluster (primary + 2 replicas, log_statement=all)", file=sys.stderr)
    with LocalCluster(replicas=2, settings={"log_statement": "all"}) as cluster:
        server = cluster.nodes[0].sql("SHOW server_version")
        results = measure(cluster, args)
    header = [
        f"pgrouter idle benchmark — Python {platform.python_version()}, "
        f"PostgreSQL {server}, {os.cpu_count()} CPUs",
        describe_versions("pgrouter", "hasql", "asyncpg", "psycopg", "psycopg-pool"),
        f"3 hosts (primary + 2 replicas), refresh_delay={args.refresh_delay:g} s, pool "
        f"min=max={args.pool_size} per host; {args.rounds} windows of {args.seconds:g} s, "
        f"{args.copies} processes per contender, all at the same time.",
        "CPU % core = process CPU time / wall time of a window, mean over the contender's "
        "processes, median over windows; (min-max) = over every process and window;",
        "vs hasql = median over windows of the ratio to hasql's CPU, same driver.",
        "<host> /s = health-check probes per second that host's server logged "
        "(log_statement=all, by application_name), median over windows;",
        "max/window = most probes one host got in one window; stmts/s = every statement "
        "the contender sent, all hosts together.",
    ]
    return 0 if report(results, args, header) else 1


if __name__ == "__main__":
    sys.exit(main())
