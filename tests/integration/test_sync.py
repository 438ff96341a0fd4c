"""The blocking face (``pgrouter.sync``) against real clusters, for both sync managers.

The sync twins of test_manager_api.py, test_topology_changes.py and
test_consistency.py: plain functions, real threads, no event loop in the test.
Tests that leave the cluster as they found it share one per module (pausing a
replica's replay is undone by its fixture); the ones that kill or freeze nodes
get a fresh cluster each.
"""

from __future__ import annotations

import importlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgrouter import (
    NoHostAvailableError,
    PoolManagerClosedError,
    current_token,
    pinning,
    read_your_writes,
)
from pgrouter.testing import LocalCluster, Node

pytestmark = pytest.mark.cluster

#: Sync manager modules by driver id, with each driver's keywords for a pool of 5.
SYNC_MANAGERS: dict[str, tuple[str, dict[str, int]]] = {
    "psycopg": ("pgrouter.sync.psycopg", {"min_size": 1, "max_size": 5}),
    "psycopg2": ("pgrouter.sync.psycopg2", {"minconn": 1, "maxconn": 5}),
}
SMALL_POOL_MAX_SIZE = 5

FAST_CHECKS = {"refresh_delay": 0.1, "refresh_timeout": 0.5}
#: Checks often enough that lag is measured within a tenth of a second.
FAST_LAG = {"refresh_delay": 0.1, "refresh_timeout": 1.0}


# -- fixtures (these override conftest's async driver matrix in this module) -------


@pytest.fixture(params=sorted(SYNC_MANAGERS))
def sync_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager_cls(sync_driver: str) -> Any:
    return importlib.import_module(SYNC_MANAGERS[sync_driver][0]).PoolManager


@pytest.fixture
def small_pools(sync_driver: str) -> dict[str, int]:
    return dict(SYNC_MANAGERS[sync_driver][1])


@pytest.fixture
def paused(shared_cluster: LocalCluster) -> Iterator[Node]:
    """The shared cluster with replay paused on its first replica, a fresh ``seen`` table.

    Replay resumes, and both replicas catch up, when the test ends.
    """
    shared_cluster.primary.sql(
        "DROP TABLE IF EXISTS seen; CREATE TABLE seen (id bigint PRIMARY KEY)"
    )
    shared_cluster.wait_replicas_caught_up()
    replica = shared_cluster.replicas[0]
    replica.pause_replay()
    try:
        yield replica
    finally:
        replica.resume_replay()
        shared_cluster.wait_replicas_caught_up()


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


# -- routing and the API -----------------------------------------------------------


def test_writes_go_to_the_primary_and_reads_to_replicas(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    primary_port = shared_cluster.primary.port
    replica_ports = {node.port for node in shared_cluster.replicas}
    with manager_cls(shared_cluster.dsn()) as pm:
        pm.ready(timeout=10)
        assert_no_aliases(pm)
        seen = set()
        for _ in range(20):
            with pm.acquire_master() as conn:
                assert server_port(conn) == primary_port
                assert fetchval(conn, "SELECT pg_is_in_recovery()") is False
            with pm.acquire_replica() as conn:
                port = server_port(conn)
                assert port in replica_ports
                assert fetchval(conn, "SELECT pg_is_in_recovery()") is True
                seen.add(port)
            with pm.acquire(read_only=True) as conn:
                assert server_port(conn) in replica_ports
            with pm.acquire() as conn:
                assert server_port(conn) == primary_port
        assert seen == replica_ports  # both replicas serve reads
        topology = pm.topology
        assert [h.dsn.port for h in topology.primaries] == [primary_port]
        assert {h.dsn.port for h in topology.replicas} == replica_ports


def test_plain_acquire_and_release(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    replica_ports = {node.port for node in shared_cluster.replicas}
    with manager_cls(shared_cluster.dsn()) as pm:
        pm.ready()
        conn = pm.acquire(read_only=True)
        port = server_port(conn)
        assert port in replica_ports
        (pool,) = [
            p
            for p in pm.get_replica_pools()
            if pm.get_pool_freesize(p) == pm._driver.max_size(p) - 1
        ]
        assert pm.is_connection_closed(conn) is False
        pm.release(conn)
        assert pm.get_pool_freesize(pool) == pm._driver.max_size(pool)
        with pytest.raises(ValueError, match="did not hand out"):
            pm.release(conn)

        # The driver's connection itself may be given back too.
        master = pm.acquire_master()
        raw = master.connection
        assert fetchval(raw, "SELECT 1") == 1
        raw.commit()
        pm.release(raw)
        assert every_pool_whole(pm)
        with pytest.raises(ValueError, match="did not hand out"):
            pm.release(master)


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


def test_ready_and_wait_helpers(shared_cluster: LocalCluster, manager_cls: Any) -> None:
    pm = manager_cls(shared_cluster.dsn(), refresh_delay=0.1)
    try:
        pm.ready(masters_count=1, replicas_count=0, timeout=10)
        pm.wait_masters_ready(1)
        pm.wait_replicas_ready(2)
        pm.wait_all_ready()
        pm.ready()
        assert all(host.healthy for host in pm.topology)
        started = time.monotonic()
        with pytest.raises(NoHostAvailableError, match="3 replica"):
            pm.ready(masters_count=1, replicas_count=3, timeout=0.3)
        assert time.monotonic() - started < 2
        before = [host.check_count for host in pm.topology]
        pm.wait_next_pool_check(timeout=5)
        assert all(h.check_count > b for h, b in zip(pm.topology, before))
    finally:
        pm.close()


def test_pool_level_api(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    with manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools) as pm:
        pm.ready()
        masters, replicas = pm.get_master_pools(), pm.get_replica_pools()
        assert len(masters) == 1 and len(replicas) == 2
        assert len(pm.pools) == 3 and set(map(id, pm.pools)) == set(map(id, masters + replicas))
        assert pm.get_pool(read_only=False) is masters[0]
        for _ in range(10):
            assert pm.get_pool(read_only=True) in replicas
        for pool in pm.pools:
            assert pm._driver.max_size(pool) == SMALL_POOL_MAX_SIZE
            assert pm.get_pool_freesize(pool) == SMALL_POOL_MAX_SIZE
        # Every connection of the primary's pool can be taken: the checks use none of them.
        held = [pm.acquire_master() for _ in range(SMALL_POOL_MAX_SIZE)]
        assert pm.get_pool_freesize(masters[0]) == 0
        with pytest.raises(NoHostAvailableError, match="no free connection"):
            pm.acquire_master(timeout=0.2)
        for conn in held:
            pm.release(conn)
        assert every_pool_whole(pm)


def test_timeout_error_names_every_host_and_no_password(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    secret = "s3cr3t-Pa55"
    port = shared_cluster.primary.port
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:{port},127.0.0.1:1/postgres"
    with manager_cls(dsn, acquire_timeout=0.5) as pm:
        pm.ready(masters_count=1, replicas_count=0)
        started = time.monotonic()
        with pytest.raises(NoHostAvailableError) as caught:
            pm.acquire_replica()
        assert 0.4 < time.monotonic() - started < 2
        message = str(caught.value)
        assert secret not in message and secret not in repr(pm)
        assert f"127.0.0.1:{port}: primary" in message
        assert "127.0.0.1:1: down" in message
        assert "within 0.5 s" in message
        assert all(secret not in str(host) for host in pm.hosts)
        with pytest.raises(NoHostAvailableError) as caught:
            pm.ready(timeout=0.2)
        assert secret not in str(caught.value) and "127.0.0.1:1: down" in str(caught.value)


def test_close_is_graceful_and_stops_the_checks(
    shared_cluster: LocalCluster, manager_cls: Any, sync_driver: str
) -> None:
    name = f"closing-{sync_driver}"
    pm = manager_cls(shared_cluster.dsn(), refresh_delay=0.05, name=name)
    pm.ready()
    assert len(monitor_threads(name)) == 1
    conn = pm.acquire_master()
    closing = threading.Thread(target=pm.close, daemon=True)
    closing.start()
    time.sleep(0.1)
    assert closing.is_alive(), "close() must wait for the borrowed connection"
    with pytest.raises(PoolManagerClosedError):
        pm.acquire_master()
    assert fetchval(conn, "SELECT 42") == 42  # still usable until released
    pm.release(conn)
    closing.join(5)
    assert not closing.is_alive() and pm.closed
    with pytest.raises(PoolManagerClosedError):
        pm.acquire_replica()
    with pytest.raises(PoolManagerClosedError):
        pm.ready()
    counts = [host.check_count for host in pm.topology]
    time.sleep(0.3)
    assert [host.check_count for host in pm.topology] == counts
    assert not monitor_threads(name), "the monitor's thread outlived close()"


def test_terminate_cuts_borrowed_connections(
    shared_cluster: LocalCluster, manager_cls: Any, sync_driver: str
) -> None:
    name = f"terminating-{sync_driver}"
    pm = manager_cls(shared_cluster.dsn(), name=name)
    pm.ready()
    conn = pm.acquire_master()
    started = time.monotonic()
    pm.terminate()
    assert time.monotonic() - started < 5
    assert pm.is_connection_closed(conn)  # cut at its socket: closed already
    with pytest.raises(Exception):  # noqa: B017 - each driver's own connection error
        fetchval(conn, "SELECT 1")
    assert pm.is_connection_closed(conn)
    pm.release(conn)  # a no-op after terminate, not an error
    with pytest.raises(PoolManagerClosedError):
        pm.acquire_master()
    assert not monitor_threads(name)


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


# -- consistency (replay paused on one replica of the shared cluster) -----------------


def _write(pm: Any, row_id: int) -> None:
    with pm.acquire_master() as conn:
        execute(conn, f"INSERT INTO seen VALUES ({row_id})")


def _wait_for_lag(pm: Any, port: int, seconds: float = 0.2) -> None:
    """Write once, then wait until the paused replica at ``port`` shows over ``seconds`` of lag."""
    _write(pm, -port)
    wait_until(
        lambda: any(
            h.dsn.port == port and (h.lag_bytes or 0) > 0 and (h.lag_seconds or 0) > seconds
            for h in pm.topology
        ),
        what="the paused replica's lag to show",
    )


def test_write_then_read_with_a_token_never_misses_its_write(
    shared_cluster: LocalCluster, paused: Node, manager_cls: Any
) -> None:
    """400 pairs of a write and a read of it from 8 threads, half with a token, half in a scope."""
    pairs = 400
    misses: list[int] = []
    errors: list[BaseException] = []
    with manager_cls(shared_cluster.dsn(), **FAST_LAG) as pm:
        pm.ready()
        _wait_for_lag(pm, paused.port)

        def pair(row_id: int) -> None:
            if row_id % 2:
                with pm.acquire_master() as conn:
                    execute(conn, f"INSERT INTO seen VALUES ({row_id})")
                    conn.commit()
                    token = pm.write_token(conn)
                reading = pm.acquire_replica(after=token, timeout=5)
            else:
                with read_your_writes():
                    _write(pm, row_id)
                    assert current_token() is not None
                    reading = pm.acquire_replica(timeout=5)
            with reading as conn:
                if fetchval(conn, f"SELECT count(*) FROM seen WHERE id = {row_id}") != 1:
                    misses.append(row_id)

        def worker(start: int) -> None:
            try:
                for row_id in range(start, pairs, 8):
                    pair(row_id)
            except BaseException as error:
                errors.append(error)

        run_threads(8, worker, timeout=60)
        counts = pm.token_read_counts
        assert every_pool_whole(pm)
    assert not errors, errors[:3]
    assert not misses, f"{len(misses)} reads missed their write: {misses[:10]}"
    assert counts["primary"] < pairs / 2, counts  # the live replica served most of them
    assert counts["replica"] + counts["replica_after_wait"] > 0, counts
    assert current_token() is None  # the scopes were the threads' own


def test_a_lag_bound_keeps_reads_off_a_paused_replica(
    shared_cluster: LocalCluster, paused: Node, manager_cls: Any
) -> None:
    (live,) = [node for node in shared_cluster.replicas if node.port != paused.port]
    with manager_cls(shared_cluster.dsn(), **FAST_LAG, max_lag_seconds=0.5) as pm:
        pm.ready()
        _wait_for_lag(pm, paused.port, seconds=0.7)
        for row_id in range(30):
            _write(pm, row_id)
            with pm.acquire_replica() as conn:  # the manager's bound
                assert server_port(conn) == live.port
            with pm.acquire_replica(max_lag_bytes=0) as conn:  # the call's own
                assert server_port(conn) == live.port
        lagging = next(h for h in pm.topology if h.dsn.port == paused.port)
        assert pm.topology.replication_lag_seconds(lagging) > 0.5
        live_pool = next(pm.pools[h.index] for h in pm.topology if h.dsn.port == live.port)
        for _ in range(10):
            assert pm.get_pool(True, max_lag_bytes=0) in (live_pool, None)
            assert pm.get_pool(True) is live_pool
    # Without a bound, the paused replica still serves (it is healthy).
    with manager_cls(shared_cluster.dsn(), **FAST_LAG) as pm:
        pm.ready()
        ports = set()
        for _ in range(40):
            with pm.acquire_replica() as conn:
                ports.add(server_port(conn))
        assert paused.port in ports


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
