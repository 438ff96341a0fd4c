"""LISTEN/NOTIFY that follows the primary, on real clusters (issue 13).

A NOTIFY sent after a kill -9 + promote reaches the listener, after a
ListenGap (once per face's library family: asyncpg, psycopg 3 async, a sync
manager); a SIGSTOP'd primary is noticed within a few seconds; odd channel
names on one connection; 1 000 notifications a second with nothing lost;
stopping UNLISTENs and closes the dedicated connection; a listener turns on
its primary's heartbeat (both faces); a consumer too slow for its
``max_pending`` gets a gap, not an unbounded backlog (both faces).
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from pgrouter import ListenGap, Notification
from pgrouter.interactions.listen import APPLICATION_NAME
from pgrouter.interactions.listen_backlog import TOO_SLOW
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

ASYNC = {"asyncpg": "pgrouter.asyncpg", "psycopg": "pgrouter.psycopg3", "aiopg": "pgrouter.aiopg"}
SYNC = {"sync_psycopg": "pgrouter.sync.psycopg", "sync_psycopg2": "pgrouter.sync.psycopg2"}
#: A bound on what should happen at once (never a speed target: 2 shared cores).
PATIENCE = 20.0
ODD_NAMES = ("Foo", "foo", 'with "quotes"', "ünïcødé ☃", "x" * 63, "semi;colon -- x")


def manager_class(driver: str) -> Any:
    return importlib.import_module({**ASYNC, **SYNC}[driver]).PoolManager


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=1) as cluster:
        yield cluster


async def _next(items: Any, timeout: float = PATIENCE) -> Any:
    return await asyncio.wait_for(items.__anext__(), timeout)


async def _listening_backends(cluster: LocalCluster) -> int:
    """Backends of open listeners, on the primary (named by their application_name)."""
    connection = await asyncpg.connect(cluster.primary.dsn())
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                APPLICATION_NAME,
            )
        )
    finally:
        await connection.close()


# -- failover -------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_kill_and_promote_gap_then_notifications_from_the_new_primary(
    fresh_cluster: LocalCluster, driver: str
) -> None:
    async with manager_class(driver)(fresh_cluster.dsn()) as pm:
        await pm.ready(timeout=PATIENCE)
        async with pm.listen("jobs") as items:
            await pm.notify("jobs", "before")
            first = await _next(items)
            assert isinstance(first, Notification) and (first.channel, first.payload) == (
                "jobs",
                "before",
            )
            killed_at = time.time()
            fresh_cluster.primary.kill()
            fresh_cluster.failover()
            gap = await _next(items)
            assert isinstance(gap, ListenGap), gap
            assert gap.since <= killed_at + 1.5 and gap.since <= gap.until
            assert gap.until <= time.time()
            assert "127.0.0.1" in gap.reason and "password" not in gap.reason
            await pm.notify("jobs", "after")
            item = await _next(items)
            assert isinstance(item, Notification) and item.payload == "after"


def test_sync_manager_kill_and_promote(fresh_cluster: LocalCluster) -> None:
    with manager_class("sync_psycopg2")(fresh_cluster.dsn()) as pm:
        pm.ready(timeout=PATIENCE)
        with pm.listen("jobs", "other") as items:
            pm.notify("other", "before")
            first = items.get(PATIENCE)
            assert isinstance(first, Notification) and first.channel == "other"
            fresh_cluster.primary.kill()
            fresh_cluster.failover()
            gap = items.get(PATIENCE)
            assert isinstance(gap, ListenGap), gap
            pm.notify("jobs", "after")
            item = items.get(PATIENCE)
            assert isinstance(item, Notification) and (item.channel, item.payload) == (
                "jobs",
                "after",
            )


# -- a frozen primary ---------------------------------------------------------------


async def test_a_frozen_primary_is_noticed_within_seconds_and_listening_resumes(
    fresh_cluster: LocalCluster,
) -> None:
    async with manager_class("asyncpg")(fresh_cluster.dsn()) as pm:
        await pm.ready(timeout=PATIENCE)
        async with pm.listen("jobs") as items:
            node = fresh_cluster.primary
            node.freeze()
            try:
                noticed = await _seconds_until(lambda: not items.listening)
            finally:
                node.thaw()
            # Its liveness NOTIFY's deadline (2 s after a ping at most 1 s later) or the
            # monitor's check timeout: a few seconds, with margin for a loaded machine.
            assert noticed < 8, f"a frozen primary was noticed only after {noticed:.1f} s"
            # No failover: once thawed, the same primary is LISTENed on again, after a gap.
            gap = await _next(items)
            assert isinstance(gap, ListenGap), gap
            assert gap.since <= time.time() - noticed + 1.5, gap
            await pm.notify("jobs", "thawed", timeout=PATIENCE)
            item = await _next(items)
            assert isinstance(item, Notification) and item.payload == "thawed"


# -- channel names, several channels, stopping ---------------------------------------


# The conformance matrix's drivers (tests/conftest.py): every async manager of the
# main environment here, and aiopg.sa and asyncpgsa in the legacy one (scripts/test.sh).
async def test_odd_names_on_one_connection_and_exact_case(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    async with manager_cls(shared_cluster.dsn()) as pm:
        await pm.ready(timeout=PATIENCE)
        async with pm.listen(*ODD_NAMES) as items:
            assert await _listening_backends(shared_cluster) == 1  # one connection for all
            for name in ODD_NAMES:
                await pm.notify(name, f"to {name}")
            got = [await _next(items) for _ in ODD_NAMES]
            assert [(item.channel, item.payload) for item in got] == [
                (name, f"to {name}") for name in ODD_NAMES
            ]
            # "Foo" and "foo" are two channels: nothing arrives twice.
            await pm.notify("FOO", "nobody listens")
            await pm.notify("Foo", "last")
            assert (await _next(items)).payload == "last"
        assert await _wait_for_count(shared_cluster, 0), "the listening connection stayed open"


async def _wait_for_count(cluster: LocalCluster, expected: int) -> bool:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if await _listening_backends(cluster) == expected:
            return True
        await asyncio.sleep(0.05)
    return False


async def _seconds_until(condition: Callable[[], bool]) -> float:
    """How long ``condition`` took to hold (a test's poll, bounded by PATIENCE)."""
    started = time.monotonic()
    while time.monotonic() - started < PATIENCE:
        if condition():
            break
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# Not "driver": conftest keeps that parameter's sync ids for sync_face modules only.
@pytest.mark.parametrize("face", sorted(SYNC))
def test_sync_odd_names_and_close_from_another_thread(
    shared_cluster: LocalCluster, face: str
) -> None:
    with manager_class(face)(shared_cluster.dsn()) as pm:
        pm.ready(timeout=PATIENCE)
        items = pm.listen(*ODD_NAMES)
        items.ready(PATIENCE)
        for name in ODD_NAMES:
            pm.notify(name, name[::-1])
        got = [items.get(PATIENCE) for _ in ODD_NAMES]
        assert [(item.channel, item.payload) for item in got] == [
            (name, name[::-1]) for name in ODD_NAMES
        ]
        threading.Timer(0.3, items.close).start()
        started = time.monotonic()
        assert list(items) == []  # woken by close(), not by a timeout
        assert time.monotonic() - started < 5
        assert asyncio.run(_wait_for_count(shared_cluster, 0))


async def test_sqlalchemy_listens_and_notifies_through_its_plain_driver(
    shared_cluster: LocalCluster,
) -> None:
    async with importlib.import_module("pgrouter.sqlalchemy").PoolManager(
        shared_cluster.dsn()
    ) as pm:
        await pm.ready(timeout=PATIENCE)
        async with pm.listen("Foo", 'with "quotes"') as items:
            await pm.notify('with "quotes"', "through the SQL layer")
            item = await _next(items)
            assert (item.channel, item.payload) == ('with "quotes"', "through the SQL layer")


async def test_bad_names_raise_before_any_sql(shared_cluster: LocalCluster) -> None:
    async with manager_class("asyncpg")(shared_cluster.dsn()) as pm:
        with pytest.raises(ValueError, match="must not be empty"):
            pm.listen("")
        with pytest.raises(ValueError, match="64 bytes"):
            await pm.notify("x" * 64, "p")
        with pytest.raises(TypeError, match="not bytes"):
            pm.listen("ok", b"jobs")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="NUL"):
            await pm.notify("ok", "a\x00b")
        with pytest.raises(ValueError, match="at least one channel"):
            pm.listen()


async def test_closing_the_manager_ends_its_listeners(shared_cluster: LocalCluster) -> None:
    pm = manager_class("psycopg")(shared_cluster.dsn())
    await pm.ready(timeout=PATIENCE)
    items = pm.listen("jobs")
    await items.ready(PATIENCE)
    consumer = asyncio.ensure_future(_drain(items))
    await pm.close()
    assert await asyncio.wait_for(consumer, PATIENCE) == []
    assert await _wait_for_count(shared_cluster, 0)


async def _drain(items: Any) -> list[Any]:
    return [item async for item in items]


# -- throughput with nothing lost ----------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "seconds"), [("asyncpg", 10.0), ("psycopg", 2.0), ("aiopg", 2.0)]
)
async def test_a_thousand_a_second_nothing_lost(
    shared_cluster: LocalCluster, driver: str, seconds: float
) -> None:
    count = int(1000 * seconds)
    async with manager_class(driver)(shared_cluster.dsn()) as pm:
        await pm.ready(timeout=PATIENCE)
        async with pm.listen("bulk", "other") as items:
            received: list[str] = []

            async def consume() -> None:
                while len(received) < count:
                    item = await _next(items)
                    assert isinstance(item, Notification), item  # no gap: nothing failed
                    received.append(item.payload)

            consumer = asyncio.ensure_future(consume())
            sender = await asyncpg.connect(shared_cluster.primary.dsn())
            try:
                started = time.monotonic()
                for number in range(count):
                    # Paced at 1 000 a second (catching up after any stall).
                    ahead = started + number / 1000 - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    await sender.execute("SELECT pg_notify('bulk', $1)", str(number))
            finally:
                await sender.close()
            await asyncio.wait_for(consumer, PATIENCE)
    assert received == [str(number) for number in range(count)]


def test_sync_a_thousand_a_second_nothing_lost(shared_cluster: LocalCluster) -> None:
    import psycopg  # here, not at the top: the legacy environment has no psycopg

    count = 2000
    with manager_class("sync_psycopg")(shared_cluster.dsn()) as pm:
        pm.ready(timeout=PATIENCE)
        with pm.listen("bulk") as items:
            with psycopg.connect(shared_cluster.primary.dsn(), autocommit=True) as sender:
                started = time.monotonic()
                for number in range(count):
                    ahead = started + number / 1000 - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                    sender.execute("SELECT pg_notify('bulk', %s)", (str(number),))
            received = []
            for _ in range(count):
                item = items.get(PATIENCE)
                assert isinstance(item, Notification), item
                received.append(item.payload)
    assert received == [str(number) for number in range(count)]


# -- the heartbeat: a listener is work on its host --------------------------------------

#: An idle primary is checked every refresh_delay: so long that an idle window sees
#: next to none (a stalled probe marks the primary suspect, which re-checks every
#: host: a few at most), while the heartbeat (0.1 s) gives about ten a second.
SLOW_REFRESH = 30.0
WINDOW = 2.5
IDLE_CHECKS = 3
HEARTBEAT_CHECKS = 8  # ~25 expected; a wide margin for 2 shared cores


def _primary_checks(pm: Any) -> int:
    return int(pm.topology.primaries[0].check_count)


async def _checks_within(pm: Any, seconds: float) -> int:
    before = _primary_checks(pm)
    await asyncio.sleep(seconds)  # a window to count in, not a wait for a state
    return _primary_checks(pm) - before


async def test_a_listener_turns_on_the_primarys_heartbeat(shared_cluster: LocalCluster) -> None:
    async with manager_class("psycopg")(shared_cluster.dsn(), refresh_delay=SLOW_REFRESH) as pm:
        await pm.ready(timeout=PATIENCE)
        await asyncio.sleep(0.5)  # the start's checks done
        idle = await _checks_within(pm, WINDOW)
        async with pm.listen("jobs"):
            listening = await _checks_within(pm, WINDOW)
        await asyncio.sleep(0.5)  # the last heartbeat's check done
        after = await _checks_within(pm, WINDOW)
    assert idle <= IDLE_CHECKS and after <= IDLE_CHECKS, (idle, after)
    assert listening >= HEARTBEAT_CHECKS, f"{listening} checks in {WINDOW} s of listening"


def test_sync_a_listener_turns_on_the_primarys_heartbeat(shared_cluster: LocalCluster) -> None:
    def checks_within(pm: Any, seconds: float) -> int:
        before = _primary_checks(pm)
        time.sleep(seconds)
        return _primary_checks(pm) - before

    with manager_class("sync_psycopg2")(shared_cluster.dsn(), refresh_delay=SLOW_REFRESH) as pm:
        pm.ready(timeout=PATIENCE)
        time.sleep(0.5)
        idle = checks_within(pm, WINDOW)
        with pm.listen("jobs"):
            listening = checks_within(pm, WINDOW)
        time.sleep(0.5)
        after = checks_within(pm, WINDOW)
    assert idle <= IDLE_CHECKS and after <= IDLE_CHECKS, (idle, after)
    assert listening >= HEARTBEAT_CHECKS, f"{listening} checks in {WINDOW} s of listening"


# -- a bounded backlog ------------------------------------------------------------------

BURST = 1000
MAX_PENDING = 100
SEND_BURST = "SELECT count(pg_notify($1, g::text)) FROM generate_series(0, $2 - 1) g"


async def _burst(cluster: LocalCluster, channel: str) -> None:
    """BURST notifications in one commit: the server hands them out at once."""
    sender = await asyncpg.connect(cluster.primary.dsn())
    try:
        await sender.fetchval(SEND_BURST, channel, BURST)
    finally:
        await sender.close()


def _check_tail(gap: Any, tail: list[Any], sent_at: float) -> None:
    """A gap for the dropped backlog, then the newest notifications, none missing."""
    assert isinstance(gap, ListenGap), gap
    assert gap.reason.startswith(TOO_SLOW) and f"max_pending={MAX_PENDING}" in gap.reason, gap
    assert gap.since <= sent_at + 1 and gap.since <= gap.until <= time.time(), gap
    assert len(tail) < MAX_PENDING
    assert all(isinstance(item, Notification) for item in tail), tail
    assert [item.payload for item in tail] == [
        str(number) for number in range(BURST - len(tail), BURST)
    ]


async def test_a_consumer_too_slow_gets_a_gap_not_an_unbounded_backlog(
    shared_cluster: LocalCluster,
) -> None:
    async with manager_class("asyncpg")(shared_cluster.dsn()) as pm:
        await pm.ready(timeout=PATIENCE)
        with pytest.raises(ValueError, match="max_pending must be at least 1, not 0"):
            pm.listen("slow", max_pending=0)
        with pytest.raises(TypeError, match="max_pending must be an int, not str"):
            pm.listen("slow", max_pending="100")
        async with pm.listen("slow", max_pending=MAX_PENDING) as items:
            sent_at = time.time()
            await _burst(shared_cluster, "slow")  # and nothing taken meanwhile
            assert await _seconds_until(lambda: items.received == BURST) < PATIENCE
            assert items.pending <= MAX_PENDING
            assert items.dropped > BURST - MAX_PENDING, items.dropped
            gap = await _next(items)
            tail = [await _next(items) for _ in range(items.pending)]
            _check_tail(gap, tail, sent_at)
            assert items.dropped + len(tail) == BURST
            # The listener goes on: nothing lost once the consumer keeps up.
            await pm.notify("slow", "after")
            item = await _next(items)
            assert isinstance(item, Notification) and item.payload == "after", item


def test_sync_a_consumer_too_slow_gets_a_gap_not_an_unbounded_backlog(
    shared_cluster: LocalCluster,
) -> None:
    with manager_class("sync_psycopg")(shared_cluster.dsn()) as pm:
        pm.ready(timeout=PATIENCE)
        with pm.listen("slow", max_pending=MAX_PENDING) as items:
            sent_at = time.time()
            asyncio.run(_burst(shared_cluster, "slow"))
            deadline = time.monotonic() + PATIENCE
            while items.received < BURST and time.monotonic() < deadline:
                time.sleep(0.02)  # a test's poll of the monitor thread's count
            assert items.received == BURST and items.pending <= MAX_PENDING
            gap = items.get(PATIENCE)
            tail = [items.get(PATIENCE) for _ in range(items.pending)]
            _check_tail(gap, tail, sent_at)
            assert items.dropped + len(tail) == BURST
            pm.notify("slow", "after")
            item = items.get(PATIENCE)
            assert isinstance(item, Notification) and item.payload == "after", item
