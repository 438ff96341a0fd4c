"""``pm.run()`` and dry runs against real clusters: every async driver and both sync managers.

- both forms (a SQL string, a function) on both sides, rows as dicts;
- dry runs: what they render is what the server gets (the rendered text run
  as is gives the rows the parameters give), and nothing is sent; pgrouter's
  own literals (for $n drivers) parsed back by the server to the same values,
  text through hypothesis, also with ``standard_conforming_strings`` off;
- the read retry: a read whose backend an admin ended (57P01) runs again and
  succeeds, a write so ended is not run again (every driver: each driver's
  errors are told apart its own way); a read on a replica killed with kill -9
  mid-query is served by the other replica (once per face: asyncpg and psycopg
  async, psycopg sync; the retry is driver-independent code).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import importlib
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DRIVERS, SMALL_POOLS
from pgrouter.interactions.literals import render_numbered
from pgrouter.testing import LocalCluster, Node

pytestmark = pytest.mark.cluster

#: Each driver's placeholder for parameter n (1-based).
PLACEHOLDERS = {
    "asyncpg": "${}",
    "asyncpgsa": "${}",
    "sqlalchemy": "${}",
    "psycopg": "%s",
    "aiopg": "%s",
    "aiopg_sa": "%s",
}
#: The sync managers among the selected drivers (PGROUTER_TEST_DRIVERS), by short name.
SYNC_MANAGERS = {
    name[len("sync_") :]: (DRIVERS[name], SMALL_POOLS[name])
    for name in sorted(DRIVERS)
    if name.startswith("sync_")
}
ASYNC_DRIVERS = sorted(name for name in DRIVERS if name in PLACEHOLDERS)


def _ph(driver: str, number: int) -> str:
    return PLACEHOLDERS[driver].format(number)


def _table(cluster: LocalCluster) -> str:
    name = f"run_{uuid.uuid4().hex[:8]}"
    cluster.primary.sql(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    return name


@pytest.fixture(params=ASYNC_DRIVERS)
def async_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def apm(shared_cluster: LocalCluster, async_driver: str) -> AsyncIterator[Any]:
    module = importlib.import_module(DRIVERS[async_driver])
    async with module.PoolManager(
        shared_cluster.dsn(), pool_factory_kwargs=dict(SMALL_POOLS[async_driver])
    ) as manager:
        await manager.ready()
        yield manager


@pytest.fixture(params=sorted(SYNC_MANAGERS))
def spm(shared_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    module_name, pools = SYNC_MANAGERS[request.param]
    module = importlib.import_module(module_name)
    with module.PoolManager(shared_cluster.dsn(), pool_factory_kwargs=dict(pools)) as manager:
        manager.ready()
        yield manager


# -- both forms, both sides -------------------------------------------------------


async def test_sql_string_on_both_sides(
    apm: Any, async_driver: str, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    p1, p2 = _ph(async_driver, 1), _ph(async_driver, 2)
    assert await apm.run(f"INSERT INTO {table} VALUES ({p1}, {p2})", (1, "one"), get_result=False)
    rows = await apm.run(f"INSERT INTO {table} VALUES ({p1}, {p2}) RETURNING *", [2, "two"])
    assert rows == [{"id": 2, "note": "two"}]
    # Committed: another session sees both rows.
    assert shared_cluster.primary.sql(f"SELECT count(*) FROM {table}") == "2"
    shared_cluster.wait_replicas_caught_up()
    rows = await apm.run(
        f"SELECT id, note, pg_is_in_recovery() AS replica FROM {table} WHERE id >= {p1} "
        "ORDER BY id",
        (1,),
        read_only=True,
    )
    assert rows == [
        {"id": 1, "note": "one", "replica": True},
        {"id": 2, "note": "two", "replica": True},
    ]
    assert await apm.run("SELECT 1 AS one WHERE false", read_only=True) == []


async def test_a_failed_write_commits_nothing(
    apm: Any, async_driver: str, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    p1 = _ph(async_driver, 1)
    await apm.run(f"INSERT INTO {table} VALUES ({p1}, 'a')", (1,), get_result=False)
    with pytest.raises(Exception, match="duplicate key"):
        await apm.run(f"INSERT INTO {table} VALUES ({p1}, 'b')", (1,))
    assert shared_cluster.primary.sql(f"SELECT note FROM {table}") == "a"
    # The connection went back clean: the next run works.
    assert await apm.run("SELECT 2 AS two") == [{"two": 2}]


async def test_function_on_both_sides(apm: Any) -> None:
    seen: list[Any] = []

    async def on_connection(connection: Any, tag: str, *, twice: bool = False) -> str:
        seen.append(connection)
        return tag * 2 if twice else tag

    assert await apm.run(on_connection, ("w",), twice=True) == "ww"
    assert await apm.run(on_connection, ["r"], read_only=True) == "r"
    # A plain (not async) function is called too.
    assert await apm.run(lambda connection: connection is not None, read_only=True) is True
    assert len(seen) == 2 and all(connection is not None for connection in seen)
    # Each went to the side asked for.
    assert await apm.run("SELECT pg_is_in_recovery() AS r", read_only=True) == [{"r": True}]
    assert await apm.run("SELECT pg_is_in_recovery() AS r") == [{"r": False}]


def test_sync_both_forms_on_both_sides(spm: Any, shared_cluster: LocalCluster) -> None:
    table = _table(shared_cluster)
    assert spm.run(f"INSERT INTO {table} VALUES (%s, %s)", (1, "one"), get_result=False) is True
    assert spm.run(
        f"INSERT INTO {table} VALUES (%(id)s, %(note)s) RETURNING id", {"id": 2, "note": "two"}
    ) == [{"id": 2}]
    assert shared_cluster.primary.sql(f"SELECT count(*) FROM {table}") == "2"
    shared_cluster.wait_replicas_caught_up()
    rows = spm.run(
        f"SELECT count(*) AS n, pg_is_in_recovery() AS replica FROM {table}", read_only=True
    )
    assert rows == [{"n": 2, "replica": True}]

    def on_connection(connection: Any, query: str) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]

    assert spm.run(on_connection, ("SELECT pg_is_in_recovery()",), read_only=True) is True
    assert spm.run(on_connection, ("SELECT pg_is_in_recovery()",)) is False
    # A function's write is committed at its clean end (as `with pm.acquire()`).
    spm.run(on_connection, (f"INSERT INTO {table} VALUES (3, 'three') RETURNING id",))
    assert shared_cluster.primary.sql(f"SELECT count(*) FROM {table}") == "3"


async def test_bad_calls_are_refused_by_name(apm: Any, shared_cluster: LocalCluster) -> None:
    with pytest.raises(TypeError, match="SQL string or a callable"):
        await apm.run(42)
    with pytest.raises(TypeError, match="keyword arguments tag go to a function"):
        await apm.run("SELECT 1", tag="x")
    with pytest.raises(ValueError, match="empty"):
        await apm.run("  ")
    with pytest.raises(TypeError, match="dry_run must be True or False"):
        await apm.run("SELECT 1", dry_run="yes")
    with pytest.raises(TypeError, match="a function has no SQL"):
        await apm.run(lambda connection: None, dry_run=True)
    with pytest.raises(TypeError, match="txn must be a transaction of this manager"):
        await apm.run("SELECT 1", txn=object())


# -- dry runs ----------------------------------------------------------------------------


async def test_dry_run_renders_what_the_server_gets(apm: Any, async_driver: str) -> None:
    values = ("it's a \\ back'slash", 42, -7, None, True, 2.5)
    casts = ("text", "int", "int", "text", "bool", "float8")
    query = "SELECT " + ", ".join(
        f"{_ph(async_driver, n + 1)}::{cast} AS c{n}" for n, cast in enumerate(casts)
    )
    rendered = await apm.run(query, values, dry_run=True)
    assert isinstance(rendered, str)
    assert "$1" not in rendered and "%s" not in rendered
    # The rendered text, run as it is, gives what the parameters give.
    assert await apm.run(rendered) == await apm.run(query, values)
    assert (await apm.run(rendered))[0] == {f"c{n}": value for n, value in enumerate(values)}


async def test_dry_run_sends_nothing(apm: Any, async_driver: str) -> None:
    # Run, this would fail: the table does not exist.
    query = f"INSERT INTO no_such_table_{uuid.uuid4().hex[:6]} VALUES ({_ph(async_driver, 1)})"
    rendered = await apm.run(query, ("x",), dry_run=True)
    assert rendered.startswith("INSERT INTO no_such_table_") and "'x'" in rendered
    assert await apm.run("SELECT 1 AS one", dry_run=True) == "SELECT 1 AS one"


def test_sync_dry_run(spm: Any) -> None:
    values = ("it's \\ x", 3, None)
    query = "SELECT %s::text AS a, %s::int AS b, %s::text AS c"
    rendered = spm.run(query, values, dry_run=True)
    assert "%s" not in rendered
    assert spm.run(rendered) == spm.run(query, values) == [{"a": values[0], "b": 3, "c": None}]
    assert spm.run("SELECT 100 %% 7", dry_run=True) == "SELECT 100 %% 7"  # no parameters: as is


#: Values and their SQL types, for pgrouter's own literals ($n drivers' dry runs).
TYPED_VALUES: list[Any] = [
    0,
    -(2**63),
    2**70,
    1.5,
    -0.0,
    1e-310,
    float("inf"),
    float("-inf"),
    decimal.Decimal("-1.25E+5"),
    decimal.Decimal("0.000001"),
    decimal.Decimal("NaN"),
    None,
    True,
    False,
    "",
    "a'b\\c\"d\n\te",
    "ünïcødé 🐘",
    b"",
    b"\x00\xff'\\",
    datetime.date(1999, 12, 31),
    datetime.time(23, 59, 59, 999999),
    datetime.time(1, 2, 3, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
    datetime.datetime(2024, 2, 29, 12, 0, 0, 1),
    datetime.datetime(2024, 2, 29, 12, 0, tzinfo=datetime.timezone.utc),
    datetime.timedelta(days=-3, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    [1, 2, None],
    [["a", "b"], ["c'", None]],
    {"a": [1, "x'y\\z"], "b": None},
]


@pytest.fixture(scope="module")
def observer(shared_cluster: LocalCluster) -> Iterator[Any]:
    """A plain psycopg connection to the primary, to let the server parse literals.

    pgrouter's own literals serve the $n drivers' dry runs: checked where asyncpg is
    selected (the legacy environment has no psycopg 3, and runs only its drivers).
    """
    if "asyncpg" not in DRIVERS:
        pytest.skip("pgrouter's literals are checked with the main environment's drivers")
    import psycopg

    with psycopg.connect(shared_cluster.primary.dsn(), autocommit=True) as connection:
        yield connection


def _parsed(connection: Any, rendered: str) -> Any:
    row = connection.execute(f"SELECT {rendered}").fetchone()
    assert row is not None
    return row[0]


def _same(parsed: Any, value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return isinstance(parsed, float) and math.isnan(parsed)
    if isinstance(value, decimal.Decimal) and value.is_nan():
        return isinstance(parsed, decimal.Decimal) and parsed.is_nan()
    if isinstance(value, float) and value == 0:
        return parsed == 0 and math.copysign(1, parsed) == math.copysign(1, value)
    if isinstance(value, bytes):
        return bytes(parsed) == value
    return bool(parsed == value)


@pytest.mark.parametrize("value", TYPED_VALUES, ids=repr)
def test_own_literals_read_back_as_the_same_value(observer: Any, value: Any) -> None:
    parsed = _parsed(observer, render_numbered("$1", (value,)))
    assert _same(parsed, value), (parsed, value)


def test_nan_float_reads_back(observer: Any) -> None:
    assert math.isnan(_parsed(observer, render_numbered("$1", (float("nan"),))))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
)
def test_own_text_literals_read_back_under_either_string_setting(observer: Any, text: str) -> None:
    rendered = render_numbered("$1::text", (text,))
    observer.execute("SET standard_conforming_strings = on")
    assert _parsed(observer, rendered) == text
    # The same literal means the same with the pre-9.1 setting (E'' wherever a backslash is).
    observer.execute("SET standard_conforming_strings = off")
    try:
        assert _parsed(observer, rendered) == text
    finally:
        observer.execute("SET standard_conforming_strings = on")


# -- the read retry --------------------------------------------------------------------


async def _end_backends_running(nodes: list[Node], marker: str, timeout: float = 15) -> Node:
    """Wait for a backend running the query marked ``marker`` on one of ``nodes``; end it
    with pg_terminate_backend() (the client gets 57P01, admin shutdown). Its node."""
    probe = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            if await asyncio.to_thread(node.sql, probe) != "0":
                return node
        await asyncio.sleep(0.02)
    pytest.fail(f"no backend ran the query marked {marker} within {timeout} s")


async def test_read_ended_by_an_admin_runs_again(apm: Any, shared_cluster: LocalCluster) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    query = f"SELECT 7 AS seven, (SELECT 1 FROM pg_sleep(0.4)) AS slept /* {marker} */"
    # Until the first is ended, no other run of it may start: only one is ended.
    running = asyncio.ensure_future(apm.run(query, read_only=True))
    await _end_backends_running(shared_cluster.replicas, marker)
    assert await asyncio.wait_for(running, 30) == [{"seven": 7, "slept": 1}]


async def test_write_ended_by_an_admin_is_not_run_again(
    apm: Any, shared_cluster: LocalCluster
) -> None:
    table = _table(shared_cluster)
    marker = f"m{uuid.uuid4().hex[:8]}"
    query = f"INSERT INTO {table} SELECT 1, 'x' FROM pg_sleep(0.4) /* {marker} */"
    running = asyncio.ensure_future(apm.run(query, get_result=False))
    await _end_backends_running([shared_cluster.primary], marker)
    with pytest.raises(Exception, match="terminat"):
        await asyncio.wait_for(running, 30)
    await asyncio.sleep(1)  # time for a retry to land, if there were one
    assert shared_cluster.primary.sql(f"SELECT count(*) FROM {table}") == "0"


#: The faces the kill -9 retry runs on: the retry is one piece of code per face,
#: and the drivers differ only in how they report a lost connection (covered for
#: every driver by the admin-shutdown tests above).
KILL_FACES = {
    name: (DRIVERS[name], SMALL_POOLS[name])
    for name in ("asyncpg", "psycopg", "sync_psycopg")
    if name in DRIVERS
}


async def _replica_running(replicas: list[Node], marker: str, timeout: float = 15) -> Node:
    probe = f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%'"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in replicas:
            # One query is this probe itself: more than one is the read.
            if int(await asyncio.to_thread(node.sql, probe)) > 1:
                return node
        await asyncio.sleep(0.02)
    pytest.fail(f"no replica ran the query marked {marker} within {timeout} s")


@pytest.mark.parametrize("face", sorted(KILL_FACES))
async def test_read_on_a_replica_killed_mid_query_is_served_by_the_other(
    cluster: LocalCluster, face: str
) -> None:
    module_name, pools = KILL_FACES[face]
    module = importlib.import_module(module_name)
    replicas = list(cluster.replicas)  # before the kill: it then lists the survivor only
    marker = f"m{uuid.uuid4().hex[:8]}"
    query = (
        f"SELECT inet_server_port() AS port, (SELECT 1 FROM pg_sleep(0.5)) AS slept /* {marker} */"
    )
    # A generous acquire timeout: the retry's budget on a busy 2-core machine.
    kwargs = {"pool_factory_kwargs": pools, "acquire_timeout": 10, "refresh_delay": 0.2}
    if face.startswith("sync_"):
        with module.PoolManager(cluster.dsn(), **kwargs) as pm:
            pm.ready()
            result: list[Any] = []
            worker = threading.Thread(
                target=lambda: result.append(pm.run(query, read_only=True)), daemon=True
            )
            worker.start()
            victim = await _replica_running(replicas, marker)
            victim.kill()
            await asyncio.to_thread(worker.join, 30)
            [rows] = result
    else:
        async with module.PoolManager(cluster.dsn(), **kwargs) as pm:
            await pm.ready()
            running = asyncio.ensure_future(pm.run(query, read_only=True))
            victim = await _replica_running(replicas, marker)
            victim.kill()
            rows = await asyncio.wait_for(running, 30)
    [survivor] = [node for node in replicas if node is not victim]
    assert rows == [{"port": survivor.port, "slept": 1}]


async def test_a_cancelled_run_gives_its_connection_back(
    shared_cluster: LocalCluster, async_driver: str
) -> None:
    module = importlib.import_module(DRIVERS[async_driver])
    async with module.PoolManager(
        shared_cluster.dsn(), pool_factory_kwargs=dict(SMALL_POOLS[async_driver])
    ) as pm:
        await pm.ready()
        for read_only in (False, True):
            running = asyncio.ensure_future(pm.run("SELECT pg_sleep(5)", read_only=read_only))
            await asyncio.sleep(0.3)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        assert await pm.run("SELECT 1 AS one") == [{"one": 1}]
        # Nothing is left borrowed: a graceful close waits for no one.
        await asyncio.wait_for(pm.close(), 15)
