"""What only the blocking face (``pgrouter.sync``) has, against real clusters, both managers.

The conformance suite (test_manager_api.py, test_consistency.py,
test_topology_changes.py) runs over the sync managers too, through
sync_adapter.py. What stays here is what that suite cannot say in the async
API: ``with`` blocks that commit or roll back, the Borrowed proxy, the
monitor's daemon thread, real threads at once (64 acquiring, a storm of random
timeouts), pins per thread, and the two fault scenarios whose async form
bounds its calls with ``asyncio.wait_for`` or that run here under a writer
thread instead (kill -9 + promote, freeze + promote + thaw), once per manager.
Plain functions, real threads, no event loop in the test.
"""

from __future__ import annotations

import importlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pgrouter import NoHostAvailableError, PoolManagerClosedError, pinning
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster

#: Sync manager modules by driver id, with each driver's keywords for a pool of 5.
SYNC_MANAGERS: dict[str, tuple[str, dict[str, int]]] = {
    "psycopg": ("pgrouter.sync.psycopg", {"min_size": 1, "max_size": 5}),
    "psycopg2": ("pgrouter.sync.psycopg2", {"minconn": 1, "maxconn": 5}),
}
SMALL_POOL_MAX_SIZE = 5

FAST_CHECKS = {"refresh_delay": 0.1, "refresh_timeout": 0.5}


# -- fixtures (these override conftest's driver matrix in this module) -------------


@pytest.fixture(params=sorted(SYNC_MANAGERS))
def sync_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager_cls(sync_driver: str) -> Any:
    return importlib.import_module(SYNC_MANAGERS[sync_driver][0]).PoolManager


@pytest.fixture
def small_pools(sync_driver: str) -> dict[str, int]:
    return dict(SYNC_MANAGERS[sync_driver][1])


# -- helpers -----------------------------------------------------------------------


def fetchval(connection: Any, query: str) -> Any:
    """First column of the first row (psycopg 3 and psycopg2 alike); commits nothing."""
    with connection.cursor() as cursor:
        cursor.execute(query)
        row = cursor.fetchone()
    return None if row is None else row[0]


def execute(connection: Any, query: str) -> None:
    """Run ``query`` (psycopg 3 and psycopg2 alike); commits nothing."""
    with connection.cursor() as cursor:
        cursor.execute(query)


def server_port(connection: Any) -> int:
    return int(fetchval(connection, "SELECT inet_server_port()"))


def wait_until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds (a hang bound)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def every_pool_whole(pm: Any) -> bool:
    return all(
        pool is None or pm.get_pool_freesize(pool) == pm._driver.max_size(pool) for pool in pm.pools
    )


def assert_no_aliases(pm: Any) -> None:
    """Every node is a server of its own (else reads of the 'alias' would never be served).

    pgrouter tells servers apart by system identifier and postmaster start
    time; the harness starts both replicas at once, from one base backup.
    """
    topology = pm.topology
    assert not topology.aliases, (
        "distinct nodes taken for one server (same system identifier and start time): "
        + "; ".join(topology.describe_host(topology.hosts[i]) for i in topology.aliases)
    )


def run_threads(count: int, target: Callable[[int], None], timeout: float = 30) -> None:
    """Run ``target(number)`` in ``count`` threads; fail if one is still running at ``timeout``."""
    threads = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {count} threads still running after {timeout} s"


def monitor_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"pgrouter-monitor-{name}"]


# -- the with block, the Borrowed proxy, the monitor's thread ------------------------


def test_a_borrowed_or_its_driver_connection_can_be_given_back(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    """``conn = pm.acquire()`` is a Borrowed proxy; its driver connection may be released too."""
    with manager_cls(shared_cluster.dsn()) as pm:
        pm.ready()
        borrowed = pm.acquire_master()
        assert server_port(borrowed) == shared_cluster.primary.port  # attributes pass through
        raw = borrowed.connection
        assert fetchval(raw, "SELECT 1") == 1
        raw.commit()
        pm.release(raw)
        assert every_pool_whole(pm)
        with pytest.raises(ValueError, match="did not hand out"):
            pm.release(borrowed)  # the same connection: given back already


def test_commit_on_a_clean_exit_and_rollback_on_an_exception(
    shared_cluster: LocalCluster, manager_cls: Any, sync_driver: str
) -> None:
    table = f"sync_tx_{sync_driver}"
    with manager_cls(shared_cluster.dsn()) as pm:
        pm.ready()
        with pm.acquire_master() as conn:
            execute(conn, f"DROP TABLE IF EXISTS {table}")
            execute(conn, f"CREATE TABLE {table} (id int)")
        with pm.acquire_master() as conn:
            execute(conn, f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(RuntimeError, match="boom"), pm.acquire_master() as conn:
            execute(conn, f"INSERT INTO {table} VALUES (2)")
            raise RuntimeError("boom")
        # Seen from outside the manager: only the clean block's row was committed.
        rows = shared_cluster.primary.sql(f"SELECT string_agg(id::text, ',') FROM {table}")
        assert rows == "1"
        # A block that failed in SQL leaves a usable connection behind.
        with pytest.raises(Exception, match="division by zero"), pm.acquire_master() as conn:
            fetchval(conn, "SELECT 1/0")
        for _ in range(2 * SMALL_POOL_MAX_SIZE):
            with pm.acquire_master() as conn:
                assert fetchval(conn, f"SELECT count(*) FROM {table}") == 1
        assert every_pool_whole(pm)
        with pm.acquire_master() as conn:
            execute(conn, f"DROP TABLE {table}")


def test_the_monitor_thread_lives_from_first_use_to_close_or_terminate(
    shared_cluster: LocalCluster, manager_cls: Any, sync_driver: str
) -> None:
    """One daemon thread per manager runs the monitor; close() and terminate() end it."""
    name = f"closing-{sync_driver}"
    pm = manager_cls(shared_cluster.dsn(), name=name)
    assert not monitor_threads(name), "started before first use"
    pm.ready()
    assert len(monitor_threads(name)) == 1
    pm.close()
    assert not monitor_threads(name), "the monitor's thread outlived close()"
    with pytest.raises(PoolManagerClosedError):
        pm.ready()

    name = f"terminating-{sync_driver}"
    pm = manager_cls(shared_cluster.dsn(), name=name)
    pm.ready()
    conn = pm.acquire_master()
    pm.terminate()
    with pytest.raises(Exception):  # noqa: B017 - each driver's own connection error
        fetchval(conn, "SELECT 1")  # cut at its socket
    assert not monitor_threads(name), "the monitor's thread outlived terminate()"


# -- threads -----------------------------------------------------------------------


def test_64_threads_acquire_at_once(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    primary = shared_cluster.primary.port
    errors: list[BaseException] = []
    wrong: list[str] = []
    with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        pm.ready()
        start = threading.Barrier(64)

        def worker(number: int) -> None:
            read_only = number % 3 != 0
            try:
                start.wait(10)
                for _ in range(5):
                    with pm.acquire(read_only=read_only, timeout=20) as conn:
                        port = int(fetchval(conn, "SELECT inet_server_port() FROM pg_sleep(0.005)"))
                    if (port == primary) == read_only:
                        wrong.append(f"read_only={read_only} served by {port}")
            except BaseException as error:
                errors.append(error)

        run_threads(64, worker)
        assert not errors, errors[:3]
        assert not wrong, wrong[:3]
        assert not pm._state().borrowed
        assert every_pool_whole(pm)


def test_a_storm_of_timeouts_leaves_every_pool_whole(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """400 threads in waves of 100 at once on pools of 5, each with a random short timeout.

    The cancellation-free storm: many acquires time out while waiting on a
    full pool (half of them with a timeout of zero), the rest hold their
    connection 10 ms; none may leave a slot taken.
    """
    rng = random.Random(1234)
    timeouts = [rng.choice((0.0, rng.random() * 0.03)) for _ in range(400)]
    timed_out: list[int] = []
    errors: list[BaseException] = []
    with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        pm.ready()

        def worker(number: int, start: threading.Barrier) -> None:
            try:
                start.wait(10)
                with pm.acquire(read_only=number % 3 != 0, timeout=timeouts[number]) as conn:
                    fetchval(conn, "SELECT pg_sleep(0.01)")
            except NoHostAvailableError:
                timed_out.append(number)
            except BaseException as error:
                errors.append(error)

        for wave in range(0, 400, 100):
            barrier = threading.Barrier(100)
            run_threads(100, lambda n, w=wave, b=barrier: worker(w + n, b))
        assert not errors, errors[:3]
        assert len(timed_out) > 100, f"only {len(timed_out)} acquires timed out: no storm"
        assert len(timed_out) < 400
        assert not pm._state().borrowed
        wait_until(lambda: every_pool_whole(pm), what="every pool's free size back at its max")
        for read_only in (False, True):
            with pm.acquire(read_only=read_only) as conn:
                assert fetchval(conn, "SELECT 1") == 1


# -- failover (fresh clusters) -----------------------------------------------------


def test_kill_primary_promote_replica_writes_resume(
    cluster: LocalCluster, manager_cls: Any
) -> None:
    """kill -9 of the primary under a writer thread, then a promotion: writes resume.

    No restart of the manager; the writer's acquires wait (bounded) for the new
    primary instead of failing, and the first write lands on it within a second
    of the promotion.
    """
    old_primary = cluster.primary
    old_primary.sql("CREATE TABLE t (id int)")
    cluster.wait_replicas_caught_up()
    acked: list[tuple[float, int]] = []  # (monotonic time, port)
    stop = threading.Event()
    with manager_cls(cluster.dsn(), **FAST_CHECKS, acquire_timeout=10) as pm:
        pm.ready()
        assert_no_aliases(pm)

        def writer() -> None:
            row_id = 0
            while not stop.is_set():
                row_id += 1
                try:
                    with pm.acquire_master(timeout=5) as conn:
                        fetchval(conn, f"INSERT INTO t VALUES ({row_id}) RETURNING 1")
                        port = server_port(conn)
                    acked.append((time.monotonic(), port))
                except Exception:
                    pass  # the write in flight at the kill fails; the next one waits
                time.sleep(0.005)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        wait_until(lambda: len(acked) > 5, what="writes to the first primary")
        old_primary.kill()
        new_primary = cluster.failover()
        promoted = time.monotonic()
        wait_until(
            lambda: any(port == new_primary.port for _, port in acked),
            timeout=10,
            what="a write acknowledged by the promoted replica",
        )
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        first_new = min(at for at, port in acked if port == new_primary.port)
        assert first_new - promoted < 1.0, f"writes resumed {first_new - promoted:.2f} s late"

        with pm.acquire_master() as conn:
            assert server_port(conn) == new_primary.port
            execute(conn, "INSERT INTO t VALUES (-1)")
        assert [h.dsn.port for h in pm.topology.primaries] == [new_primary.port]
        with pm.acquire_replica(timeout=10) as conn:
            assert server_port(conn) not in (old_primary.port, new_primary.port)
    assert new_primary.sql("SELECT count(*) FROM t WHERE id = -1") == "1"


def test_frozen_primary_thawed_after_a_promotion_acknowledges_nothing(
    cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """Freeze the primary, promote a replica, thaw the old primary 1.5 s later.

    Asynchronous replication and a thread started every 5 ms, each one write.
    Once the promoted replica is seen, every connection to the frozen primary
    is cut at the socket: the threads blocked on it fail at once, and nothing
    the old primary says after its thaw reaches anyone. Checked: no write
    acknowledged after the freeze is missing on the new primary, and no write
    call outlasts the failover's detection by more than 0.3 s.

    ``freeze()`` stops the server's processes one by one, over a few
    milliseconds: a commit acknowledged meanwhile, after its walsender stopped,
    is the loss asynchronous replication allows, not pgrouter's (at most one per
    connection of the pool). Anything acknowledged once every process stood
    still can only have come through the thaw.
    """
    old = cluster.primary
    old.sql("CREATE TABLE thaw_log (id bigint PRIMARY KEY)")
    cluster.wait_replicas_caught_up()
    acked: dict[int, tuple[float, int]] = {}  # id -> (seconds after the freeze, port)
    durations: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
    writers: list[threading.Thread] = []
    frozen_at = time.monotonic() + 3600.0

    with manager_cls(cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        pm.ready()
        assert_no_aliases(pm)

        def write(row_id: int) -> None:
            started = time.monotonic()
            outcome = "acked"
            try:
                with pm.acquire_master(timeout=3) as conn:
                    port = fetchval(
                        conn, f"INSERT INTO thaw_log VALUES ({row_id}) RETURNING inet_server_port()"
                    )
                acked[row_id] = (time.monotonic() - frozen_at, int(port))
            except Exception as error:
                outcome = type(error).__name__
            durations.append((started, time.monotonic() - started, outcome))

        stop = threading.Event()

        def open_loop() -> None:
            row_id = 0
            while not stop.is_set():
                row_id += 1
                thread = threading.Thread(target=write, args=(row_id,), daemon=True)
                writers.append(thread)
                thread.start()
                time.sleep(0.005)

        spawner = threading.Thread(target=open_loop, daemon=True)
        spawner.start()
        time.sleep(0.5)
        frozen_at = time.monotonic()
        old.freeze()
        frozen = time.monotonic() - frozen_at  # every process of the old primary stopped
        try:
            new = cluster.failover()
            wait_until(
                lambda: [h.dsn.port for h in pm.topology.primaries] == [new.port],
                what="writes to move to the promoted replica",
            )
            detected = time.monotonic() - frozen_at
            time.sleep(1.5)
        finally:
            old.thaw()
        time.sleep(1.0)  # the thawed primary answers whatever it still had
        stop.set()
        spawner.join(5)
        deadline = time.monotonic() + 10
        for thread in list(writers):
            thread.join(max(deadline - time.monotonic(), 0))
        assert not any(thread.is_alive() for thread in writers), "a write still hangs"
        assert pm.topology.hosts[0].index in pm.topology.superseded
        assert not pm._state().borrowed

    present = {
        int(row) for row in new.sql("SELECT string_agg(id::text, ',') FROM thaw_log").split(",")
    }
    missing = sorted(set(acked) - present)
    lost = [i for i in missing if acked[i][0] > frozen]
    in_freeze = [i for i in missing if acked[i][0] <= frozen]
    assert not lost and len(in_freeze) <= SMALL_POOL_MAX_SIZE, (
        f"{len(missing)} acknowledged writes missing on the new primary (id: seconds after the "
        f"freeze, port; old primary {old.port}, frozen within {frozen:.3f} s, detected at "
        f"{detected:.3f} s): "
        + ", ".join(f"{i}: {acked[i][0]:.3f} s, {acked[i][1]}" for i in missing[:10])
    )
    slowest = max(durations, key=lambda entry: entry[1])
    assert slowest[1] <= detected + 0.3, (
        f"a write call took {slowest[1]:.3f} s ({slowest[2]}); the failover was detected "
        f"{detected:.3f} s after the freeze"
    )
    assert any(port == new.port for _, port in acked.values())
    assert any(at > frozen_at + detected for at, _, outcome in durations if outcome == "acked")


# -- contextvars per thread ---------------------------------------------------------


def test_pins_of_one_thread_never_reach_another(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    """16 threads at once, half pinned: pinned ones read the primary, the rest replicas."""
    primary = shared_cluster.primary.port
    wrong: list[str] = []
    errors: list[BaseException] = []
    with manager_cls(shared_cluster.dsn(), name="orders") as pm:
        pm.ready()
        start = threading.Barrier(16)

        def worker(number: int) -> None:
            pinned = number % 2 == 0
            try:
                if pinned:
                    pinning.pin("orders")
                start.wait(10)  # every pin is set before anyone reads
                for _ in range(20):
                    with pm.acquire_replica(timeout=10) as conn:
                        port = server_port(conn)
                    if (port == primary) != pinned:
                        wrong.append(f"thread {number} pinned={pinned} read from {port}")
                assert pinning.is_pinned("orders") is pinned
            except BaseException as error:
                errors.append(error)

        run_threads(16, worker)
    assert not errors, errors[:3]
    assert not wrong, wrong[:5]
    assert not pinning.is_pinned("orders")
