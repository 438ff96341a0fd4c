"""ClusterWatch (pgrouter.sync.cluster_watch): the monitor of one cluster with no pools.

Against real clusters: the topology it publishes, waits woken by publishes,
an asked-for check, the primary's heartbeat only while work is routed to it,
a fresh monitor in a forked child (the parent's keeps running), a kill -9 +
promotion seen, bad settings refused by name (never a password), and the
ResourceWarning of a watch dropped while running.
"""

from __future__ import annotations

import gc
import json
import os
import select
import time
import warnings
from collections.abc import Iterator

import pytest

from pgrouter.errors import ClusterError, DsnError, PoolManagerClosedError
from pgrouter.sync.cluster_watch import ClusterWatch
from pgrouter.testing import LocalCluster, find_pg_bin
from pgrouter.topology import TopologySnapshot

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)

#: Every wait ends by then (seconds): the machine is shared, so margins are wide.
PATIENCE = 20


def everyone_checked(snapshot: TopologySnapshot) -> bool:
    return len(snapshot.primaries) == 1 and len(snapshot.replicas) == 2


@pytest.fixture
def watch(shared_cluster: LocalCluster) -> Iterator[ClusterWatch]:
    with ClusterWatch(shared_cluster.dsn(), refresh_delay=30, name="watched") as watch:
        watch.wait_for(everyone_checked, PATIENCE)
        yield watch


def test_topology_names_the_primary_and_replicas(
    watch: ClusterWatch, shared_cluster: LocalCluster
) -> None:
    snapshot = watch.topology
    primary_port = shared_cluster.primary.port
    assert [host.dsn.port for host in snapshot.primaries] == [primary_port]
    assert sorted(host.dsn.port for host in snapshot.replicas) == sorted(
        node.port for node in shared_cluster.replicas
    )
    assert all(host.lag_bytes is not None for host in snapshot.replicas)
    assert watch.started and not watch.closed


def test_request_check_runs_a_check_before_the_tick(watch: ClusterWatch) -> None:
    replica = watch.topology.replicas[0]
    before = replica.check_count
    watch.request_check(replica.index)
    # refresh_delay is 30 s: only the request can make this check happen in time.
    started = time.monotonic()
    watch.wait_for(lambda s: s.hosts[replica.index].check_count > before, PATIENCE)
    assert time.monotonic() - started < PATIENCE


def test_heartbeat_runs_only_while_work_is_routed(shared_cluster: LocalCluster) -> None:
    with ClusterWatch(
        shared_cluster.dsn(), refresh_delay=1.5, primary_heartbeat=0.05, name="beat"
    ) as watch:
        watch.wait_for(everyone_checked, PATIENCE)
        primary = watch.topology.primaries[0].index
        # Idle: the primary is checked once per refresh_delay.
        time.sleep(0.3)
        idle_start = watch.topology.hosts[primary].check_count
        time.sleep(1.0)
        idle_checks = watch.topology.hosts[primary].check_count - idle_start
        assert idle_checks <= 1
        # Work routed to it every 50 ms: checked every heartbeat.
        busy_start = watch.topology.hosts[primary].check_count
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            watch.note_work(primary)
            time.sleep(0.05)
        busy_checks = watch.topology.hosts[primary].check_count - busy_start
        assert busy_checks >= 4, f"{busy_checks} checks in 1 s of work (heartbeat 0.05 s)"


def test_wait_for_times_out_and_closed_watch_refuses(shared_cluster: LocalCluster) -> None:
    watch = ClusterWatch(shared_cluster.dsn(), name="closing")
    watch.wait_for(everyone_checked, PATIENCE)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        watch.wait_for(lambda s: len(s.primaries) == 2, 0.3)
    assert time.monotonic() - started < 5
    watch.close()
    watch.close()  # idempotent
    assert watch.closed
    with pytest.raises(PoolManagerClosedError):
        watch.wait_for(everyone_checked, 1)
    with pytest.raises(PoolManagerClosedError):
        watch.topology  # noqa: B018 - the property starts the monitor


def test_forked_child_starts_its_own_monitor(watch: ClusterWatch) -> None:
    parent_thread = watch._process.thread if watch._process else None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            snapshot = watch.wait_for(everyone_checked, PATIENCE)
            child_state = watch._process
            report = {
                "primaries": len(snapshot.primaries),
                "fresh": child_state is not None and child_state.thread is not parent_thread,
                "pid": child_state.pid if child_state else None,
            }
            os.write(write_end, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], PATIENCE)
    assert ready, "the child did not report"
    report = json.loads(os.read(read_end, 4096).decode())
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == {"primaries": 1, "fresh": True, "pid": pid}
    # The parent's monitor is untouched and still publishing.
    assert watch._process is not None and watch._process.thread is parent_thread
    replica = watch.topology.replicas[0]
    watch.request_check(replica.index)
    watch.wait_for(lambda s: s.hosts[replica.index].check_count > replica.check_count, PATIENCE)


def test_kill_and_promote_is_seen(cluster: LocalCluster) -> None:
    with ClusterWatch(cluster.dsn(), refresh_delay=0.5, name="failover") as watch:
        watch.wait_for(everyone_checked, PATIENCE)
        old = cluster.primary
        old.kill()
        new = cluster.failover()
        snapshot = watch.wait_for(
            lambda s: [h.dsn.port for h in s.primaries] == [new.port], PATIENCE
        )
        assert all(host.dsn.port != old.port for host in snapshot.replicas)


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="refresh_delay"):
        ClusterWatch("postgresql://u:pw@h1,h2/db", refresh_delay=0)
    with pytest.raises(TypeError, match="event_driven_checks"):
        ClusterWatch("postgresql://u:pw@h1,h2/db", event_driven_checks="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stopwatch_window_size"):
        ClusterWatch("postgresql://u:pw@h1,h2/db", stopwatch_window_size=0)
    with pytest.raises(TypeError, match="name"):
        ClusterWatch("postgresql://u:pw@h1,h2/db", name="")
    with pytest.raises(DsnError) as error:
        ClusterWatch("postgresql://u:s3cret@h1:99999/db")
    assert "s3cret" not in str(error.value)
    # A heartbeat of 0 is off, as for the managers.
    assert (
        ClusterWatch("postgresql://h1/db", primary_heartbeat=0)._monitor_settings.primary_heartbeat
        is None
    )


def test_dropped_running_watch_warns(shared_cluster: LocalCluster) -> None:
    watch = ClusterWatch(shared_cluster.dsn(), name="dropped")
    watch.wait_for(everyone_checked, PATIENCE)
    thread = watch._process.thread if watch._process else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del watch
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert thread is not None
    deadline = time.monotonic() + PATIENCE
    while thread.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not thread.running
    # An unstarted watch dropped is no leak: no warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ClusterWatch(shared_cluster.dsn(), name="never-started")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_listeners_see_every_publish_on_the_monitor_thread(shared_cluster: LocalCluster) -> None:
    import threading

    seen: list[tuple[int, int, str]] = []
    watch = ClusterWatch(shared_cluster.dsn(), name="listened")
    watch.listen(
        lambda old, new: seen.append((old.version, new.version, threading.current_thread().name))
    )
    with watch:
        snapshot = watch.wait_for(everyone_checked, PATIENCE)
        with pytest.raises(RuntimeError, match="before"):
            watch.listen(lambda old, new: None)
    versions = [(old, new) for old, new, _ in seen]
    assert versions[: snapshot.version] == [(v, v + 1) for v in range(snapshot.version)]
    assert all(name.startswith("pgrouter-watch-listened") for _, _, name in seen)
