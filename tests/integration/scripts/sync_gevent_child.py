"""The child of tests/integration/test_sync_gevent.py: a blocking manager under real gevent.

``python sync_gevent_child.py DRIVER MODE`` with ``PGROUTER_TEST_DSN`` set;
DRIVER is ``psycopg`` or ``psycopg2``. It patches before anything else
(gevent, and psycogreen for psycopg2), then runs greenlets through
``pgrouter.sync.<DRIVER>.PoolManager`` and speaks one JSON object a line on
stdout:

- MODE ``failover``: 200 greenlets read and write; ``{"event": "ready"}`` once
  both flow (the parent then kills the primary and promotes a replica), then
  ``{"event": "done"}`` with the counts once writes have gone on on another
  primary, or the deadline passed.
- MODE ``first-use``: 200 greenlets are the manager's first users, all at once
  (a gevent server's first requests); ``{"event": "done"}`` with the counts.

Throughout, a greenlet that sleeps 10 ms in a loop records the worst
overshoot: how long the hub was kept from running. Every wait is bounded, so a
hang ends in a report, not in a stuck process.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

DRIVER, MODE = sys.argv[1], sys.argv[2]
if DRIVER == "psycopg2":
    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()

import asyncio  # noqa: E402
import collections  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from pgrouter.errors import NoHostAvailableError  # noqa: E402

GREENLETS = 200
POOL_SIZE = 10
POOLS = {
    "psycopg": {"min_size": 2, "max_size": POOL_SIZE},
    "psycopg2": {"minconn": 1, "maxconn": POOL_SIZE},
}
#: The whole run ends by then, the failover included (the parent waits a little longer).
DEADLINE = float(os.environ.get("PGROUTER_TEST_DEADLINE", "30"))
#: Operations of each kind before the parent is told to kill the primary.
FLOWING = 500
#: Writes seen on the new primary before the run ends.
WRITES_AFTER = 200
ACQUIRE_TIMEOUT = 2.0


def say(**message: Any) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def fetch(conn: Any, sql: str, *args: Any) -> Any:
    """First column of the first row (a psycopg 3 or a psycopg2 connection)."""
    if DRIVER == "psycopg":
        row = conn.execute(sql, args or None).fetchone()
    else:
        with conn.cursor() as cursor:
            cursor.execute(sql, args or None)
            row = cursor.fetchone()
    return None if row is None else row[0]


class HubLatency:
    """The worst overshoot of a 10 ms sleep, overall and since the last ``mark()``."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.since_mark = 0.0
        self.samples = 0
        self.late: list[tuple[float, int]] = []  # (seconds into the run, ms) past 30 ms
        self._began = time.monotonic()
        self._stop = False
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stop:
            started = time.perf_counter()
            gevent.sleep(0.01)
            over = time.perf_counter() - started - 0.01
            self.worst = max(self.worst, over)
            self.since_mark = max(self.since_mark, over)
            self.samples += 1
            if over > 0.03 and len(self.late) < 50:
                self.late.append((round(time.monotonic() - self._began, 2), round(over * 1000)))

    def mark(self) -> None:
        self.since_mark = 0.0

    def stop(self) -> None:
        self._stop = True
        self._greenlet.join(1)


class Tally:
    """What the greenlets did: counts by kind, one example of each error."""

    def __init__(self, pm: Any) -> None:
        self._pm = pm
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: dict[str, str] = {}
        self.unexplained: dict[str, str] = {}

    def failed(self, kind: str, error: Exception) -> None:
        name = f"{kind}:{type(error).__name__}"
        self.counts[name] += 1
        self.errors.setdefault(name, str(error)[:300])
        # What a failover explains: no primary within the timeout, or the host's own error.
        if not isinstance(error, NoHostAvailableError) and not self._pm._driver.is_host_error(
            error
        ):
            self.unexplained.setdefault(name, repr(error)[:300])


def leaks(pm: Any) -> dict[str, Any]:
    """Borrowed connections and every current pool's free size (waits up to 5 s for them)."""
    by = time.monotonic() + 5
    while True:
        sizes = [
            (pm.get_pool_freesize(pool), pm._driver.max_size(pool))
            for pool in pm.pools
            if pool is not None
        ]
        whole = all(free == top for free, top in sizes)
        if whole or time.monotonic() > by:
            break
        gevent.sleep(0.05)
    state = pm._process
    return {"borrowed": len(state.borrowed) if state else 0, "pools": sizes, "whole": whole}


def asyncio_works() -> str:
    """``asyncio.run`` in a greenlet: the monitor's loop must not be running on this thread."""
    try:
        return str(asyncio.run(asyncio.sleep(0, "ok")))
    except RuntimeError as error:
        return f"RuntimeError: {error}"


def closed_in(pm: Any) -> float:
    started = time.monotonic()
    closing = gevent.spawn(pm.close, 5)
    closing.join(15)
    return round(time.monotonic() - started, 2) if closing.ready() else -1.0


def make_manager() -> Any:
    manager_cls = importlib.import_module(f"pgrouter.sync.{DRIVER}").PoolManager
    return manager_cls(
        os.environ["PGROUTER_TEST_DSN"],
        pool_factory_kwargs=dict(POOLS[DRIVER]),
        acquire_timeout=ACQUIRE_TIMEOUT,
        refresh_delay=0.2,
        refresh_timeout=1.0,
    )


def failover() -> None:
    latency = HubLatency()
    began = time.monotonic()
    deadline = began + DEADLINE
    pm = make_manager()
    pm.ready(timeout=15)
    tally = Tally(pm)
    ports: collections.Counter[int] = collections.Counter()
    first_port: list[int] = []
    stop = gevent.event.Event()
    flowing = gevent.event.Event()
    resumed = gevent.event.Event()

    def worker(number: int) -> None:
        step = number
        while not stop.is_set():
            step += 1
            kind = "write" if step % 2 else "read"
            try:
                if kind == "write":
                    with pm.acquire_master() as conn:
                        port = fetch(
                            conn,
                            "INSERT INTO gevent_writes (worker) VALUES (%s) "
                            "RETURNING inet_server_port()",
                            number,
                        )
                    ports[port] += 1
                    if not first_port:
                        first_port.append(port)
                    elif port != first_port[0] and ports[port] >= WRITES_AFTER:
                        resumed.set()
                else:
                    with pm.acquire_replica(fallback_master=True) as conn:
                        fetch(conn, "SELECT count(*) FROM gevent_writes WHERE worker = %s", number)
                tally.counts[kind] += 1
                if min(tally.counts["write"], tally.counts["read"]) >= FLOWING:
                    flowing.set()
            except Exception as error:
                tally.failed(kind, error)
                gevent.sleep(0.05)  # a failover is under way: do not spin

    workers = [gevent.spawn(worker, number) for number in range(GREENLETS)]
    flowing.wait(max(deadline - time.monotonic(), 0))
    before = dict(tally.counts)
    say(event="ready", flowing=flowing.is_set(), counts=before, errors=tally.errors)
    resumed.wait(max(deadline - time.monotonic(), 0))
    stop.set()
    stuck = len(workers) - len(gevent.joinall(workers, timeout=10))
    busy_worst = latency.worst
    # The manager alone for a second (the killed host still re-checked): the monitor's share.
    latency.mark()
    gevent.sleep(1.0)
    idle_worst = latency.since_mark
    asyncio_run = asyncio_works()
    left = leaks(pm)
    close_seconds = closed_in(pm)
    latency.stop()
    say(
        event="done",
        resumed=resumed.is_set(),
        first_primary=first_port[0] if first_port else None,
        ports={str(port): count for port, count in ports.items()},
        before_kill=before,
        counts=dict(tally.counts),
        errors=tally.errors,
        unexplained=tally.unexplained,
        stuck_greenlets=stuck,
        asyncio_run=asyncio_run,
        close_seconds=close_seconds,
        hub_worst_ms=round(max(busy_worst, latency.worst) * 1000, 1),
        hub_idle_worst_ms=round(idle_worst * 1000, 1),
        hub_samples=latency.samples,
        hub_late=latency.late,
        took=round(time.monotonic() - began, 2),
        **left,
    )


def first_use() -> None:
    latency = HubLatency()
    began = time.monotonic()
    pm = make_manager()  # not used yet: the greenlets below start its monitor, together
    tally = Tally(pm)

    def worker(number: int) -> None:
        for kind in ("write", "read"):
            try:
                if kind == "write":
                    with pm.acquire_master(timeout=10) as conn:
                        fetch(
                            conn,
                            "INSERT INTO gevent_writes (worker) VALUES (%s) RETURNING id",
                            number,
                        )
                else:
                    with pm.acquire_replica(timeout=10) as conn:
                        fetch(conn, "SELECT 1")
                tally.counts[kind] += 1
            except Exception as error:
                tally.failed(kind, error)

    workers = [gevent.spawn(worker, number) for number in range(GREENLETS)]
    stuck = len(workers) - len(gevent.joinall(workers, timeout=DEADLINE))
    left = leaks(pm)
    close_seconds = closed_in(pm)
    latency.stop()
    say(
        event="done",
        counts=dict(tally.counts),
        errors=tally.errors,
        stuck_greenlets=stuck,
        close_seconds=close_seconds,
        hub_worst_ms=round(latency.worst * 1000, 1),
        hub_late=latency.late,
        took=round(time.monotonic() - began, 2),
        **left,
    )


if __name__ == "__main__":
    {"failover": failover, "first-use": first_use}[MODE]()
