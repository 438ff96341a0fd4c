"""The child of tests/integration/test_gdbpool.py: gDBPool's documented examples under gevent.

``python gdbpool_examples.py`` with ``PGROUTER_TEST_DSN`` (a multi-host DSN of
a cluster with the README's ``test_values`` table) and ``PGROUTER_TEST_DEADLINE``.
After ``monkey.patch_all()`` it runs the examples of gDBPool's README as
written there, with ``pgrouter.gdbpool``'s import path: a DBInteractionPool of
16 connections with logging, a query, a function, a dry run, and
``listen_on()`` with a gevent queue and a stop event. It speaks one JSON
object a line on stdout: ``{"event": "examples", ...}`` with what each gave,
then ``{"event": "ready"}`` while a greenlet keeps running the query and the
listener listens (the parent then kills the primary and promotes a replica),
then ``{"event": "done", ...}`` once a query and a notification went through
the new primary, or the deadline passed.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.queue  # noqa: E402
from gevent.queue import Empty as QueueEmptyException  # noqa: E402

from pgrouter import ListenGap  # noqa: E402
from pgrouter.gdbpool import DBInteractionException, DBInteractionPool  # noqa: E402

dsn = os.environ["PGROUTER_TEST_DSN"]
DEADLINE = time.monotonic() + float(os.environ.get("PGROUTER_TEST_DEADLINE", "30"))


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


# --- the README's examples, as written there ----------------------------------------

ipool = DBInteractionPool(dsn, pool_size=16, do_log=True)

sql = """
SELECT val1, count(id) FROM test_values WHERE val2 = %s GROUP BY val1 order by val1;
"""
async_res = ipool.run(sql, interaction_args=(2,))
res = async_res.get()


def interaction(conn):  # type: ignore[no-untyped-def]
    curs = conn.cursor()
    sql = """
    SELECT val1, val2, count(id) FROM test_values GROUP BY val1, val2 order by val1, val2;
    """
    curs.execute(sql)
    res = curs.fetchall()
    curs.close()
    return res


async_res = ipool.run(interaction)
res_function = async_res.get()

dry = ipool.run(sql, interaction_args=(2,), dry_run=True).get()

rq = gevent.queue.Queue(maxsize=None)
stop_event = gevent.event.Event()
gevent.spawn(
    ipool.listen_on, result_queue=rq, channel_name="notify_test_values", cancel_event=stop_event
)
gevent.sleep(0.5)  # the listener LISTENs (the README leaves this to the reader)
ipool.run(
    "INSERT INTO test_values (val1, val2) VALUES (%s, %s)",
    interaction_args=(7, 8),
    get_result=False,
).get()
notifies = []
while 1:
    if notifies or time.monotonic() > DEADLINE:
        break
    try:
        notify = rq.get_nowait()
        notifies.append(notify)
    except QueueEmptyException:
        gevent.sleep(0.01)

try:
    ipool.run("SELECT * FROM no_such_table").get()
    error = None
except DBInteractionException as caught:
    error = type(caught.__cause__).__name__

say(
    "examples",
    query=res,
    function=res_function,
    dry_run=dry,
    notifies=notifies,
    error=error,
    gevent_result=isinstance(async_res, gevent.event.AsyncResult),
)

# --- a kill -9 of the primary while it runs -----------------------------------------

failures: list[str] = []
ok_after: list[float] = []
killed = gevent.event.Event()


def keep_querying() -> None:
    while time.monotonic() < DEADLINE and not ok_after:
        try:
            ipool.run(sql, interaction_args=(2,), is_write=False).get(timeout=5)
            ipool.run(
                "INSERT INTO test_values (val1, val2) VALUES (1, 1)",
                get_result=False,
            ).get(timeout=5)
            if killed.is_set():
                ok_after.append(time.monotonic())
        except Exception as caught:  # a failover explains some
            failures.append(type(caught).__name__)
            gevent.sleep(0.05)


worker = gevent.spawn(keep_querying)
say("ready")
sys.stdin.readline()  # the parent has killed the primary and promoted a replica
killed.set()
worker.join(timeout=max(DEADLINE - time.monotonic(), 0))
after: list[Any] = []
gap_seen = False
while time.monotonic() < DEADLINE and not after:
    try:
        item = rq.get(timeout=0.2)
    except QueueEmptyException:
        if ok_after:
            ipool.run(
                "INSERT INTO test_values (val1, val2) VALUES (%s, %s)",
                interaction_args=(70, 80),
                get_result=False,
            ).get(timeout=5)
        continue
    if isinstance(item, ListenGap):
        gap_seen = True
    elif gap_seen:
        after.append(item)
stop_event.set()
gevent.sleep(0.3)
started = time.monotonic()
ipool.close()
say(
    "done",
    queried_after_failover=bool(ok_after),
    failures=failures,
    gap_seen=gap_seen,
    after=after,
    close_seconds=time.monotonic() - started,
)
