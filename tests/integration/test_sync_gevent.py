"""The blocking managers under real gevent (``monkey.patch_all()``), in a child process.

Patching must come before everything else, so each run is a fresh interpreter
(``scripts/sync_gevent_child.py``) against a cluster this process starts. The
parent kills the primary and promotes a replica when the child says its 200
greenlets are reading and writing; the child reports what happened as JSON.
What is checked: writes resume on the new primary, only what a failover
explains fails, nothing leaks (no borrowed connection, every pool whole),
``close()`` is bounded, the monitor's loop is not on the hub's thread
(``asyncio.run`` works in a greenlet), and the hub's loop latency stays under
:data:`HUB_BOUND` (a bound against blocking, not a speed target).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from pgrouter.errors import ClusterError
from pgrouter.testing import LocalCluster, find_pg_bin

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)

CHILD = Path(__file__).parent / "scripts" / "sync_gevent_child.py"
#: The child ends its run by this many seconds (PGROUTER_TEST_DEADLINE) ...
CHILD_DEADLINE = 30
#: ... and the parent gives up on it this much later.
PATIENCE = CHILD_DEADLINE + 25
#: The worst a 10 ms sleep may overshoot on the child's hub (milliseconds).
HUB_BOUND = 200
#: close() of a manager whose greenlets are done (seconds).
CLOSE_BOUND = 3.0

DRIVERS = ["psycopg", "psycopg2"]


def make_table(cluster: LocalCluster) -> None:
    cluster.primary.sql(
        "CREATE TABLE IF NOT EXISTS gevent_writes (id bigserial PRIMARY KEY, worker int)"
    )
    cluster.wait_replicas_caught_up()


class Child:
    """The child interpreter: JSON lines from its stdout, its stderr kept in a file."""

    def __init__(self, cluster: LocalCluster, driver: str, mode: str, stderr: IO[str]) -> None:
        env = dict(
            os.environ,
            PGROUTER_TEST_DSN=cluster.dsn(),
            PGROUTER_TEST_DEADLINE=str(CHILD_DEADLINE),
        )
        self._stderr = stderr
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), driver, mode],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def message(self, event: str, timeout: float) -> dict[str, Any]:
        """The child's next message, which must be ``event`` and come within ``timeout``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {event!r} from the child within {timeout} s{self.stderr_tail()}")
        if line is None:
            self.process.wait(5)
            pytest.fail(
                f"the child exited ({self.process.returncode}) before {event!r}"
                + self.stderr_tail()
            )
        message: dict[str, Any] = json.loads(line)
        assert message["event"] == event, message
        return message

    def stderr_tail(self) -> str:
        self._stderr.flush()
        with open(self._stderr.name) as log:
            tail = log.read()[-3000:]
        return f"\n--- child stderr ---\n{tail}" if tail else ""

    def finish(self) -> int:
        return self.process.wait(timeout=20)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def child_log(tmp_path: Path) -> Iterator[IO[str]]:
    with open(tmp_path / "child.stderr", "w+") as log:
        yield log


def common_checks(done: dict[str, Any], child: Child) -> None:
    context = json.dumps(done, indent=1) + child.stderr_tail()
    assert done["stuck_greenlets"] == 0, context
    assert done["borrowed"] == 0, context
    assert done["whole"], context
    assert 0 <= done["close_seconds"] < CLOSE_BOUND, context
    assert done["hub_worst_ms"] < HUB_BOUND, context


@pytest.mark.timeout(PATIENCE + 30)
@pytest.mark.parametrize("driver", DRIVERS)
def test_200_greenlets_through_a_primary_kill(
    cluster: LocalCluster, driver: str, child_log: IO[str]
) -> None:
    make_table(cluster)
    old = cluster.primary
    child = Child(cluster, driver, "failover", child_log)
    try:
        ready = child.message("ready", timeout=PATIENCE)
        assert ready["flowing"], ready
        # Nothing fails before the kill: 200 greenlets on 10 connections a host just wait.
        assert set(ready["counts"]) == {"read", "write"}, ready
        old.kill()
        new = cluster.failover()
        done = child.message("done", timeout=PATIENCE)
        code = child.finish()
    finally:
        child.kill()
    context = json.dumps(done, indent=1) + child.stderr_tail()
    assert code == 0, context
    assert done["first_primary"] == old.port, context
    assert done["resumed"], context
    assert done["ports"].get(str(new.port), 0) >= 200, context
    assert not done["unexplained"], context
    assert done["asyncio_run"] == "ok", context
    assert done["hub_idle_worst_ms"] < HUB_BOUND, context
    common_checks(done, child)
    # The writes the child saw acknowledged on the new primary are there.
    assert int(new.sql("SELECT count(*) FROM gevent_writes")) >= done["ports"][str(new.port)]


@pytest.mark.timeout(PATIENCE + 30)
@pytest.mark.parametrize("driver", DRIVERS)
def test_200_greenlets_are_the_first_users_at_once(
    shared_cluster: LocalCluster, driver: str, child_log: IO[str]
) -> None:
    """A gevent server's first requests all start the manager's monitor together."""
    make_table(shared_cluster)
    child = Child(shared_cluster, driver, "first-use", child_log)
    try:
        done = child.message("done", timeout=PATIENCE)
        code = child.finish()
    finally:
        child.kill()
    context = json.dumps(done, indent=1) + child.stderr_tail()
    assert code == 0, context
    assert done["counts"] == {"write": 200, "read": 200}, context
    common_checks(done, child)
