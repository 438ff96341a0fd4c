"""The gDBPool facade (pgrouter.gdbpool) on real clusters, with threads and under gevent.

Without gevent's patching, ``run()`` gives a :class:`PendingResult` (a Future
with ``get()``): queries, functions with and without a cursor, dry runs,
partial transactions holding a row lock, named pools, errors, and
``listen_on()`` with a ``queue.Queue`` and a ``threading.Event``. Under gevent
(a fresh interpreter, scripts/gdbpool_examples.py), gDBPool's README examples
run as written, and go on through a kill -9 of the primary and a promotion.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgrouter.gdbpool import (
    DBInteractionException,
    DBInteractionPool,
    PendingResult,
    unmarshal_payload,
)
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

CHILD = Path(__file__).parent / "scripts" / "gdbpool_examples.py"
CHILD_DEADLINE = 30
PATIENCE = 20.0

#: The examples' table (as gDBPool's README describes it): an insert NOTIFYs
#: notify_test_values with the row as key:value pairs.
SCHEMA = """
CREATE TABLE IF NOT EXISTS test_values (id serial PRIMARY KEY, val1 int, val2 int);
INSERT INTO test_values (val1, val2) SELECT i % 5, i % 3 FROM generate_series(1, 300) i;
CREATE OR REPLACE FUNCTION notify_test_values() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('notify_test_values',
                    'id:' || NEW.id || '|val1:' || NEW.val1 || '|val2:' || NEW.val2);
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS test_values_notify ON test_values;
CREATE TRIGGER test_values_notify AFTER INSERT ON test_values
  FOR EACH ROW EXECUTE FUNCTION notify_test_values();
"""


def make_schema(cluster: LocalCluster) -> None:
    cluster.primary.sql(SCHEMA)
    cluster.wait_replicas_caught_up()


@pytest.fixture(scope="module")
def examples_cluster(shared_cluster: LocalCluster) -> LocalCluster:
    make_schema(shared_cluster)
    return shared_cluster


@pytest.fixture
def ipool(examples_cluster: LocalCluster) -> Iterator[DBInteractionPool]:
    pool = DBInteractionPool(examples_cluster.dsn(), pool_size=4)
    pool.pool.ready(timeout=PATIENCE)
    try:
        yield pool
    finally:
        pool.close()


def test_unmarshal_payload() -> None:
    assert unmarshal_payload("id:1|val1:a:b|val2:") == {"id": "1", "val1": "a:b", "val2": ""}
    assert unmarshal_payload("plain text") == "plain text"
    assert unmarshal_payload("") == ""
    assert unmarshal_payload("a:1|b") == "a:1|b"


def test_run_sql_function_and_dry_run_with_threads(ipool: DBInteractionPool) -> None:
    pending = ipool.run(
        "SELECT val1, count(id) AS n FROM test_values WHERE val2 = %s GROUP BY val1 ORDER BY val1",
        interaction_args=(2,),
        is_write=False,
    )
    assert isinstance(pending, PendingResult)
    rows = pending.get(timeout=PATIENCE)
    assert [row["val1"] for row in rows] == [0, 1, 2, 3, 4] and sum(r["n"] for r in rows) == 100

    def with_cursor(factor: int, conn: Any, cursor: Any, offset: int = 0) -> Any:
        cursor.execute("SELECT pg_is_in_recovery(), %s * 2 + %s", (factor, offset))
        return cursor.fetchone()

    # Writes go to the primary, reads to a replica.
    assert ipool.run(with_cursor, None, True, True, None, None, None, False, False, 21).get(
        timeout=PATIENCE
    ) == (False, 42)
    read = ipool.run(with_cursor, is_write=False, offset=3)
    with pytest.raises(DBInteractionException):  # factor missing: the function's TypeError
        read.get(timeout=PATIENCE)

    def conn_only(conn: Any) -> Any:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery()")
            return cursor.fetchone()[0]

    assert ipool.run(conn_only, is_write=False).get(timeout=PATIENCE) is True
    assert (
        ipool.run("SELECT %s, %s", interaction_args=("it's", None), dry_run=True).get(PATIENCE)
        == "SELECT 'it''s', NULL"
    )
    assert ipool.run("SELECT 1", get_result=False).get(timeout=PATIENCE) is True
    assert ipool("SELECT 2 AS two").get(timeout=PATIENCE) == [{"two": 2}]


def test_errors_name_the_problem(ipool: DBInteractionPool, examples_cluster: LocalCluster) -> None:
    failed = ipool.run("SELECT * FROM no_such_table")
    with pytest.raises(DBInteractionException, match="no_such_table") as caught:
        failed.get(timeout=PATIENCE)
    assert type(caught.value.__cause__).__name__ == "UndefinedTable"
    with pytest.raises(DBInteractionException, match="no pool named 'nope'"):
        ipool.run("SELECT 1", pool="nope")
    with pytest.raises(DBInteractionException, match="already have a pool named 'default'"):
        ipool.add_pool(dsn=examples_cluster.dsn(), pool_name="default")
    with pytest.raises(TypeError, match="partial_txn"):
        ipool.run("SELECT 1", conn=object())
    with pytest.raises(ValueError, match="64 bytes"):
        ipool.listen_on(queue.Queue(), "x" * 64, cancel_event=threading.Event())


def test_partial_txn_holds_a_row_lock_until_commit(
    ipool: DBInteractionPool, examples_cluster: LocalCluster
) -> None:
    ipool.add_pool(dsn=examples_cluster.dsn(), pool_name="second", pool_size=2)
    held = ipool.run("SELECT id FROM test_values WHERE id = 1 FOR UPDATE", partial_txn=True).get(
        timeout=PATIENCE
    )
    assert held["result"] == [{"id": 1}]
    blocked = ipool.run("UPDATE test_values SET val2 = val2 WHERE id = 1", pool="second")
    with pytest.raises(TimeoutError):
        blocked.get(timeout=0.5)  # the other writer waits on the lock
    again = ipool.run(
        "UPDATE test_values SET val1 = val1 WHERE id = %s",
        interaction_args=(1,),
        get_result=False,
        conn=held["connection"],
        partial_txn=True,
    ).get(timeout=PATIENCE)
    assert again["connection"] is held["connection"]
    held["connection"].commit()
    assert blocked.get(timeout=PATIENCE) == []  # it ran once the lock was gone


def test_listen_on_with_a_queue_and_an_event(ipool: DBInteractionPool) -> None:
    results: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    listener = threading.Thread(
        target=ipool.listen_on,
        kwargs={
            "result_queue": results,
            "channel_name": "notify_test_values",
            "cancel_event": stop,
            "sleep_cycle": 0.05,
        },
    )
    listener.start()
    try:
        deadline = time.monotonic() + PATIENCE
        got: Any = None
        while got is None and time.monotonic() < deadline:
            # Inserted until the listener (started in its thread) LISTENs.
            ipool.run("INSERT INTO test_values (val1, val2) VALUES (9, 9)", get_result=False).get(
                timeout=PATIENCE
            )
            with contextlib.suppress(queue.Empty):
                got = results.get(timeout=0.2)
        assert isinstance(got, dict) and got["val1"] == "9" and got["val2"] == "9", got
    finally:
        stop.set()
        listener.join(PATIENCE)
    assert not listener.is_alive(), "listen_on() did not end after its cancel event"


# -- under gevent -------------------------------------------------------------------


@pytest.mark.timeout(CHILD_DEADLINE + 60)
def test_readme_examples_under_gevent_through_a_primary_kill(
    tmp_path: Path,
) -> None:
    with LocalCluster(replicas=1) as cluster:
        make_schema(cluster)
        stderr = open(tmp_path / "child.stderr", "w+")  # noqa: SIM115 - read in failures
        child = subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(
                os.environ,
                PGROUTER_TEST_DSN=cluster.dsn(),
                PGROUTER_TEST_DEADLINE=str(CHILD_DEADLINE),
            ),
        )
        try:
            examples = _message(child, "examples", stderr)
            assert examples["gevent_result"], examples  # a gevent.event.AsyncResult
            assert [row["val1"] for row in examples["query"]] == [0, 1, 2, 3, 4], examples
            assert len(examples["function"]) == 15, examples  # 5 x 3 (val1, val2) groups
            assert (
                examples["dry_run"].strip().endswith("WHERE val2 = 2 GROUP BY val1 order by val1;")
            )
            assert examples["notifies"][0]["val1"] == "7", examples
            assert examples["error"] == "UndefinedTable", examples
            _message(child, "ready", stderr)
            cluster.primary.kill()
            cluster.failover()
            assert child.stdin is not None
            child.stdin.write("killed\n")
            child.stdin.flush()
            done = _message(child, "done", stderr)
            assert done["queried_after_failover"], done
            assert done["gap_seen"] and done["after"], done
            # An insert's notification from the new primary: the worker's (1) or the last (70).
            assert done["after"][0]["val1"] in ("1", "70"), done
            assert done["close_seconds"] < 5, done
            assert child.wait(20) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
            stderr.close()


def _message(child: subprocess.Popen[str], event: str, stderr: Any) -> dict[str, Any]:
    assert child.stdout is not None
    line = child.stdout.readline()  # the child bounds every wait by its deadline
    if not line:
        stderr.flush()
        stderr.seek(0)
        pytest.fail(f"the child exited before {event!r}:\n{stderr.read()[-3000:]}")
    message: dict[str, Any] = json.loads(line)
    assert message["event"] == event, message
    return message
