"""A blocking manager made and used before ``fork()`` (gunicorn ``--preload``, Celery prefork).

The parent's manager has a running monitor, pools, an idle connection or two
and one borrowed across the fork. The child must start a fresh monitor and
fresh pools on first use and never touch what it inherited: closing or using
an inherited connection would send on a socket the parent still uses. So the
checks are the parent's: its backends are all alive after the child ran
queries and exited, every one of its connections (the borrowed one, the idle
ones) still answers, and the child's backends are other processes. Both
processes query after the fork. ``os.fork()`` directly (the child ends with
``os._exit``, reporting through a pipe), then ``multiprocessing`` with the
``fork`` start method.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from pgrouter.errors import ClusterError
from pgrouter.testing import LocalCluster, find_pg_bin

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)

POOL_SIZE = 4
POOLS = {
    "psycopg": {"min_size": 2, "max_size": POOL_SIZE},
    "psycopg2": {"minconn": 2, "maxconn": POOL_SIZE},
}
#: Every wait on a child ends by then (seconds).
PATIENCE = 30
BACKEND = "SELECT pg_backend_pid()"


def fetch(conn: Any, sql: str, *args: Any) -> Any:
    """First column of the first row, on a psycopg 3 or a psycopg2 connection."""
    if hasattr(conn, "execute"):
        row = conn.execute(sql, args or None).fetchone()
    else:
        with conn.cursor() as cursor:
            cursor.execute(sql, args or None)
            row = cursor.fetchone()
    return None if row is None else row[0]


@pytest.fixture(params=["psycopg", "psycopg2"])
def manager(request: pytest.FixtureRequest, shared_cluster: LocalCluster) -> Iterator[Any]:
    driver = str(request.param)
    shared_cluster.primary.sql(
        "CREATE TABLE IF NOT EXISTS fork_writes (id bigserial PRIMARY KEY, pid int)"
    )
    if driver == "psycopg":
        from pgrouter.sync.psycopg import PoolManager
    else:
        from pgrouter.sync.psycopg2 import PoolManager  # type: ignore[assignment]
    pm = PoolManager(
        shared_cluster.dsn(), pool_factory_kwargs=dict(POOLS[driver]), refresh_delay=0.2
    )
    try:
        pm.ready(timeout=15)
        yield pm
    finally:
        pm.terminate()


class Parent:
    """What the parent had at the fork: its backends, its pools, its monitor."""

    def __init__(self, pm: Any) -> None:
        self.pm = pm
        self.held = pm.acquire_master()  # borrowed across the fork
        self.held_pid = int(fetch(self.held, BACKEND))
        self.backends = {self.held_pid}
        for read_only in (False, True, True):  # given back: idle at the fork
            with pm.acquire(read_only=read_only) as conn:
                self.backends.add(int(fetch(conn, BACKEND)))
        self.pools = [id(pool) for pool in pm.pools if pool is not None]
        self.thread = id(pm._process.thread)
        self.queries = 0

    def query(self) -> None:
        """One round after the fork: the borrowed connection, a write, a read."""
        assert int(fetch(self.held, BACKEND)) == self.held_pid
        with self.pm.acquire_master() as conn:
            fetch(conn, "INSERT INTO fork_writes (pid) VALUES (%s) RETURNING id", os.getpid())
        with self.pm.acquire_replica() as conn:
            fetch(conn, "SELECT count(*) FROM fork_writes")
        self.queries += 1

    def still_whole(self, cluster: LocalCluster) -> None:
        """Every backend of the parent alive, every connection of its pools answering."""
        alive: set[int] = set()
        for node in cluster.nodes:
            text = node.sql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity")
            alive |= {int(pid) for pid in text.split(",") if pid}
        assert self.backends <= alive, f"the parent's backends gone: {self.backends - alive}"
        assert int(fetch(self.held, BACKEND)) == self.held_pid
        # Take every connection a pool has at once, so the idle ones are used too.
        for read_only in (False, True):
            taken = [self.pm.acquire(read_only=read_only) for _ in range(POOL_SIZE - 1)]
            try:
                for conn in taken:
                    fetch(conn, "SELECT 1")
            finally:
                for conn in taken:
                    self.pm.release(conn)
        self.pm.release(self.held)


def child_work(pm: Any, parent_pools: list[int], parent_thread: int) -> dict[str, Any]:
    """In the child: the manager works, on a monitor and pools of its own."""
    backends = set()
    for _ in range(20):
        with pm.acquire_master() as conn:
            backends.add(int(fetch(conn, BACKEND)))
            fetch(conn, "INSERT INTO fork_writes (pid) VALUES (%s) RETURNING id", os.getpid())
        with pm.acquire_replica() as conn:
            backends.add(int(fetch(conn, BACKEND)))
            fetch(conn, "SELECT count(*) FROM fork_writes")
    state = pm._process
    pools = [id(pool) for pool in pm.pools if pool is not None]
    result = {
        "pid": os.getpid(),
        "backends": sorted(backends),
        "state_pid": state.pid,
        "fresh_monitor": id(state.thread) != parent_thread and state.thread.running,
        "fresh_pools": bool(pools) and not set(pools) & set(parent_pools),
    }
    started = time.monotonic()
    pm.close(timeout=5)
    result["close_seconds"] = round(time.monotonic() - started, 2)
    return result


def run_forked(work: Callable[[], dict[str, Any]], write_fd: int) -> NoReturn:
    """The child's whole life after os.fork(): ``work()``'s report on the pipe, then _exit."""
    code = 1
    try:
        try:
            report = {"ok": True, **work()}
            code = 0
        except BaseException:
            report = {"ok": False, "error": traceback.format_exc()}
        data = json.dumps(report).encode()
        while data:
            data = data[os.write(write_fd, data) :]
    finally:
        os._exit(code)  # never the parent's atexit (it would stop the cluster) nor pytest's


def reap(pid: int, timeout: float) -> int:
    """The child's exit status, waiting at most ``timeout``; a child still running is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the child {pid} did not exit within {timeout} s")


def check_child(report: dict[str, Any], parent: Parent) -> None:
    assert report["ok"], report.get("error")
    assert report["state_pid"] == report["pid"] != os.getpid()
    assert report["fresh_monitor"], report
    assert report["fresh_pools"], report
    assert not set(report["backends"]) & parent.backends, report
    assert report["close_seconds"] < 5, report


@pytest.mark.timeout(90)
def test_os_fork(manager: Any, shared_cluster: LocalCluster) -> None:
    parent = Parent(manager)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        run_forked(lambda: child_work(manager, parent.pools, parent.thread), write_fd)
    os.close(write_fd)
    try:
        # The parent queries while the child does, until the child's report is in.
        chunks = []
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            parent.query()
            if select.select([read_fd], [], [], 0.01)[0]:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        else:
            pytest.fail(f"no report from the child within {PATIENCE} s")
    finally:
        os.close(read_fd)
        code = reap(pid, PATIENCE)
    report = json.loads(b"".join(chunks))
    assert code == 0, report
    check_child(report, parent)
    assert parent.queries > 0
    parent.query()  # after the child exited, too
    parent.still_whole(shared_cluster)
    assert manager._process.pid == os.getpid()
    assert id(manager._process.thread) == parent.thread  # the parent's own, untouched


#: The manager the multiprocessing children inherit (set before they fork).
_INHERITED_MANAGER: Any = None


def _process_main(results: Any, parent_pools: list[int], parent_thread: int) -> None:
    try:
        report = {"ok": True, **child_work(_INHERITED_MANAGER, parent_pools, parent_thread)}
    except BaseException:
        report = {"ok": False, "error": traceback.format_exc()}
    results.put(report)


@pytest.mark.timeout(90)
def test_multiprocessing_fork(manager: Any, shared_cluster: LocalCluster) -> None:
    global _INHERITED_MANAGER
    parent = Parent(manager)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    _INHERITED_MANAGER = manager
    children = [
        context.Process(target=_process_main, args=(results, parent.pools, parent.thread))
        for _ in range(2)
    ]
    try:
        for child in children:
            child.start()
        reports = []
        deadline = time.monotonic() + PATIENCE
        while len(reports) < len(children):
            assert time.monotonic() < deadline, f"reports from the children: {reports}"
            parent.query()
            try:
                reports.append(results.get(timeout=0.01))
            except Exception:  # queue.Empty: not yet
                continue
        for child in children:
            child.join(PATIENCE)
    finally:
        _INHERITED_MANAGER = None
        for child in children:
            if child.is_alive():
                child.kill()
                child.join(5)
    assert [child.exitcode for child in children] == [0, 0], reports
    for report in reports:
        check_child(report, parent)
    # Two children, two monitors and two sets of backends of their own.
    first, second = (set(report["backends"]) for report in reports)
    assert not first & second
    assert parent.queries > 0
    parent.query()
    parent.still_whole(shared_cluster)
