"""The real-cluster harness (:mod:`pgrouter.testing.cluster`) against real servers.

Every other integration test trusts this harness, so its fault injections are
checked here the way a test would observe them: through SQL and ``/proc``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pgrouter.errors import ClusterError
from pgrouter.testing import LocalCluster, Node, find_pg_bin

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=2) as local:
        yield local


def live_postgres_pids(data_dir: str | None = None) -> set[int]:
    """Live (non-zombie) postgres processes, optionally only those of ``data_dir``.

    A backend's command line is its process title, so children are matched by
    their parent chain rather than by argv.
    """
    stats: dict[int, tuple[str, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                raw = stat_file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = raw[raw.find("(") + 1 : raw.rfind(")")]
        state, ppid = raw[raw.rfind(")") + 2 :].split()[:2]
        if comm == "postgres" and state not in ("Z", "X"):
            stats[int(entry)] = (cmdline, state, int(ppid))
    if data_dir is None:
        return set(stats)
    roots = {pid for pid, (cmdline, _, _) in stats.items() if f"-D {data_dir} " in cmdline}
    return {pid for pid in stats if pid in roots or stats[pid][2] in roots}


def count_rows(node: Node) -> int:
    return int(node.sql("SELECT count(*) FROM harness"))


def wait_for_rows(node: Node, expected: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while count_rows(node) != expected:
        assert time.monotonic() < deadline, f"{node.name} never saw {expected} rows"
        time.sleep(0.02)


def test_start_gives_one_primary_and_streaming_replicas(cluster: LocalCluster) -> None:
    primary = cluster.primary
    assert primary is cluster.nodes[0]
    assert cluster.replicas == cluster.nodes[1:]
    streaming = primary.sql(
        "SELECT string_agg(application_name, ',' ORDER BY application_name) "
        "FROM pg_stat_replication WHERE state = 'streaming'"
    )
    assert streaming == "node1,node2"
    ports = {node.port for node in cluster.nodes}
    assert len(ports) == 3
    assert cluster.dsn(query={"target_session_attrs": "read-write"}) == (
        "postgresql://postgres@"
        + ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
        + "/postgres?target_session_attrs=read-write"
    )
    assert primary.dsn(password="p@ss/word") == (
        f"postgresql://postgres:p%40ss%2Fword@127.0.0.1:{primary.port}/postgres"
    )


def test_rows_written_on_primary_reach_replicas(cluster: LocalCluster) -> None:
    cluster.primary.sql("CREATE TABLE harness (id int)")
    cluster.primary.sql("INSERT INTO harness SELECT generate_series(1, 10)")
    cluster.wait_replicas_caught_up()
    for replica in cluster.replicas:
        assert count_rows(replica) == 10


def test_kill_leaves_no_process_and_node_restarts(cluster: LocalCluster) -> None:
    replica = cluster.nodes[1]
    assert live_postgres_pids(replica.data_dir)
    replica.kill()
    assert not live_postgres_pids(replica.data_dir)
    assert not replica.is_running()
    with pytest.raises(ClusterError):
        replica.sql("SELECT 1", timeout=2)

    replica.start()
    replica.wait_streaming(source=cluster.nodes[0])
    assert replica.sql("SELECT 1") == "1"


def test_kill_of_primary_takes_its_backends_too(cluster: LocalCluster) -> None:
    primary = cluster.primary
    pids = live_postgres_pids(primary.data_dir)
    assert len(pids) > 3  # postmaster, checkpointer, walsenders, ...
    primary.kill()
    assert not pids & live_postgres_pids()
    primary.start()
    assert not primary.is_in_recovery()


def test_freeze_hangs_queries_and_thaw_resumes(cluster: LocalCluster) -> None:
    node = cluster.nodes[2]
    node.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(ClusterError, match="timed out"):
            node.sql("SELECT 1", timeout=1)
        assert time.monotonic() - started < 5
        assert node.is_running()
        assert node not in cluster.replicas  # a frozen node is not asked
    finally:
        node.thaw()
    assert node.sql("SELECT 1") == "1"


def test_failover_promotes_and_repoints(cluster: LocalCluster) -> None:
    old_primary, new_primary, other = cluster.nodes
    old_primary.sql("CREATE TABLE harness (id int)")
    cluster.wait_replicas_caught_up()
    old_primary.kill()

    assert cluster.failover(new_primary) is new_primary
    assert cluster.primary is new_primary
    assert not new_primary.is_in_recovery()
    assert cluster.replicas == [other]

    new_primary.sql("INSERT INTO harness VALUES (1)")
    wait_for_rows(other, 1)


def test_rewind_brings_old_primary_back_as_replica(cluster: LocalCluster) -> None:
    old_primary = cluster.nodes[0]
    old_primary.sql("CREATE TABLE harness (id int)")
    cluster.wait_replicas_caught_up()
    old_primary.kill()
    new_primary = cluster.failover()
    assert new_primary is cluster.nodes[1]
    new_primary.sql("INSERT INTO harness VALUES (1)")

    old_primary.rewind_as_replica(new_primary)

    assert old_primary.is_in_recovery()
    assert sorted(node.name for node in cluster.replicas) == ["node0", "node2"]
    new_primary.sql("INSERT INTO harness VALUES (2)")
    cluster.wait_replicas_caught_up()
    assert count_rows(old_primary) == 2
    sender = new_primary.sql(
        "SELECT state FROM pg_stat_replication WHERE application_name = 'node0'"
    )
    assert sender == "streaming"


def test_rewind_after_clean_stop(cluster: LocalCluster) -> None:
    old_primary = cluster.nodes[0]
    old_primary.stop()
    new_primary = cluster.failover()
    old_primary.rewind_as_replica(new_primary)
    assert old_primary.is_in_recovery()


def test_pause_and_resume_replay(cluster: LocalCluster) -> None:
    primary, replica = cluster.nodes[0], cluster.nodes[1]
    primary.sql("CREATE TABLE harness (id int)")
    cluster.wait_replicas_caught_up()
    replica.pause_replay()
    primary.sql("INSERT INTO harness VALUES (1)")
    wait_for_rows(cluster.nodes[2], 1)
    time.sleep(0.2)
    assert count_rows(replica) == 0
    with pytest.raises(ClusterError):
        cluster.wait_replicas_caught_up(timeout=0.3)

    replica.resume_replay()
    wait_for_rows(replica, 1)


def test_close_removes_every_process_and_the_directory() -> None:
    before = live_postgres_pids()
    local = LocalCluster(replicas=2).start()
    base_dir = local.base_dir
    assert base_dir is not None and os.path.isdir(base_dir)
    local.nodes[1].freeze()  # close must cope with a hung node
    local.nodes[2].kill()
    assert live_postgres_pids() - before

    local.close()
    local.close()  # idempotent

    assert not os.path.exists(base_dir)
    assert live_postgres_pids() - before == set()


def test_failed_start_cleans_up() -> None:
    local = LocalCluster(replicas=1, settings={"shared_buffers": "not-a-size"})
    with pytest.raises(ClusterError, match="could not start") as raised:
        local.start()
    assert "shared_buffers" in str(raised.value)  # the log tail explains why
    assert local.base_dir is not None and not os.path.exists(local.base_dir)
