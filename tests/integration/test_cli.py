"""The ``pgrouter`` command end to end: ``status`` and ``demo`` as subprocesses.

Run through ``python -m pgrouter`` exactly as a user would, against real local
clusters, so argument parsing, exit codes and redaction are all covered.
"""

from __future__ import annotations

import importlib.metadata
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pgrouter.errors import ClusterError
from pgrouter.testing import LocalCluster, find_pg_bin
from pgrouter.topology import TopologySnapshot

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)

PASSWORD = "s3cret-pw"
APP_ROLE = "pgr_app"

#: The ``pgrouter status`` exit codes README and ``--help`` document.
EXIT_OK, EXIT_NO_SINGLE_PRIMARY, EXIT_USAGE, EXIT_HOST_DOWN = 0, 1, 2, 3


def pgrouter(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgrouter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def unused_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on (bound, read, released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def line_of(output: str, address: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(address)]
    assert len(lines) == 1, f"expected one line for {address} in:\n{output}"
    return lines[0]


def hosts_by_address(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {host["address"]: host for host in report["hosts"]}


@pytest.fixture(scope="module")
def app_dsn(shared_cluster: LocalCluster) -> Iterator[str]:
    """A DSN of an ordinary role that has a password (pg_hba trusts loopback anyway)."""
    shared_cluster.primary.sql(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{PASSWORD}'")
    shared_cluster.wait_replicas_caught_up()
    yield shared_cluster.dsn(user=APP_ROLE, password=PASSWORD)


def test_status_lists_every_host_with_its_role(shared_cluster: LocalCluster, app_dsn: str) -> None:
    done = pgrouter("status", app_dsn)

    assert done.returncode == EXIT_OK, done.stderr
    primary, *replicas = shared_cluster.nodes
    assert line_of(done.stdout, f"{primary.host}:{primary.port}").split()[1:3] == ["primary", "yes"]
    for replica in replicas:
        assert line_of(done.stdout, f"{replica.host}:{replica.port}").split()[1:3] == [
            "replica",
            "yes",
        ]
    assert PASSWORD not in done.stdout + done.stderr


def test_status_with_every_host_down_fails_and_says_why() -> None:
    ports = unused_ports(2)
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)

    done = pgrouter("status", f"postgresql://app:{PASSWORD}@{hosts}/db")

    assert done.returncode == EXIT_NO_SINGLE_PRIMARY
    for port in ports:
        role, healthy, *rest = line_of(done.stdout, f"127.0.0.1:{port}").split()[1:]
        assert (role, healthy) == ("down", "no")
        assert "refused" in " ".join(rest).lower()  # the reason it is down
    assert "0 hosts claim primary" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("dsn", "bad_part"),
    [
        (f"postgresql://app:{PASSWORD}@h1:notaport,h2/db", "notaport"),
        (f"postgresql://app:{PASSWORD}@[bad/db", "[bad"),
    ],
)
def test_status_with_a_malformed_dsn_exits_2_naming_the_bad_part(dsn: str, bad_part: str) -> None:
    done = pgrouter("status", dsn)

    assert done.returncode == EXIT_USAGE
    assert bad_part in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_status_json_has_every_host_and_no_password(
    shared_cluster: LocalCluster, app_dsn: str
) -> None:
    done = pgrouter("status", "--json", app_dsn)

    assert done.returncode == EXIT_OK, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == EXIT_OK
    assert report["status"] == "ok"
    assert report["problems"] == []
    assert report["pgrouter_version"] == importlib.metadata.version("pgrouter")
    primary, *replicas = shared_cluster.nodes
    assert report["primary"] == f"{primary.host}:{primary.port}"
    hosts = hosts_by_address(report)
    assert list(hosts) == [f"{node.host}:{node.port}" for node in shared_cluster.nodes]
    has_lag_seconds = hasattr(TopologySnapshot, "replication_lag_seconds")
    for node, host in zip(shared_cluster.nodes, hosts.values()):
        assert host["role"] == ("primary" if node is primary else "replica")
        assert host["healthy"] is True
        assert host["latency_ms"] > 0
        assert host["last_error"] is None
        assert (host["fenced"], host["superseded"], host["alias_of"]) == (False, False, None)
        assert host["follows_another_timeline"] is False
        # Lag in seconds is shown once the topology can tell it, not before.
        assert ("lag_seconds" in host) == has_lag_seconds
    assert hosts[report["primary"]]["lag_bytes"] is None
    for node in replicas:
        lag = hosts[f"{node.host}:{node.port}"]["lag_bytes"]
        assert isinstance(lag, int) and lag >= 0


def test_status_exits_3_for_a_host_down_and_1_once_the_primary_is_down_too(
    cluster: LocalCluster,
) -> None:
    primary, _, stopped = cluster.nodes
    stopped.stop()
    dsn = cluster.dsn(password=PASSWORD)

    text = pgrouter("status", "--timeout", "1", dsn)
    as_json = pgrouter("status", "--timeout", "1", "--json", dsn)

    assert text.returncode == EXIT_HOST_DOWN, text.stdout + text.stderr
    assert line_of(text.stdout, f"{stopped.host}:{stopped.port}").split()[1:3] == ["down", "no"]
    assert f"{stopped.host}:{stopped.port}: down" in text.stderr
    assert as_json.returncode == EXIT_HOST_DOWN, as_json.stderr
    report = json.loads(as_json.stdout)
    assert (report["exit_code"], report["status"]) == (EXIT_HOST_DOWN, "host_down")
    down = hosts_by_address(report)[f"{stopped.host}:{stopped.port}"]
    assert down["healthy"] is False
    assert "refused" in down["last_error"].lower()
    assert [host["healthy"] for host in report["hosts"]] == [True, True, False]

    primary.stop()
    done = pgrouter("status", "--timeout", "1", dsn)

    # No primary outranks a host down.
    assert done.returncode == EXIT_NO_SINGLE_PRIMARY, done.stdout + done.stderr
    assert "0 hosts claim primary" in done.stderr
    for output in (text, as_json, done):
        assert PASSWORD not in output.stdout + output.stderr


def test_status_shows_a_replica_following_a_fenced_host(cluster: LocalCluster) -> None:
    old_primary, promoted, left_behind = cluster.nodes
    # A promotion the third node was never told about: it still streams timeline 1
    # from the old primary, which keeps running (a split brain).
    promoted.promote()
    address = f"{left_behind.host}:{left_behind.port}"
    # The superuser may read the WAL receiver, so replicas' timelines are known.
    dsn = cluster.dsn(password=PASSWORD)

    text = pgrouter("status", dsn)
    as_json = pgrouter("status", "--json", dsn)

    assert text.returncode == EXIT_NO_SINGLE_PRIMARY, text.stdout + text.stderr
    line = line_of(text.stdout, address)
    _, role, healthy, _latency, ms, lag, *_ = line.split()
    assert (role, healthy, ms, lag) == ("replica", "yes", "ms", "-")  # no lag in bytes
    assert "follows timeline 1, not the primary's" in line
    assert "FENCED" in line_of(text.stdout, f"{old_primary.host}:{old_primary.port}")
    report = json.loads(as_json.stdout)
    assert report["primary"] == f"{promoted.host}:{promoted.port}"
    hosts = hosts_by_address(report)
    behind = hosts[address]
    assert (behind["role"], behind["healthy"]) == ("replica", True)
    assert behind["follows_another_timeline"] is True
    assert behind["timeline"] == 1
    assert behind["lag_bytes"] is None  # not computed against another timeline
    assert hosts[f"{old_primary.host}:{old_primary.port}"]["fenced"] is True
    assert hosts[f"{promoted.host}:{promoted.port}"]["timeline"] == 2
    assert PASSWORD not in text.stdout + text.stderr + as_json.stdout + as_json.stderr


def test_version_is_the_installed_package_version() -> None:
    done = pgrouter("--version")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pgrouter {importlib.metadata.version('pgrouter')}"


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"]])
def test_help_is_plain_text_and_lists_the_exit_codes(args: list[str]) -> None:
    done = pgrouter(*args)

    assert done.returncode == 0, done.stderr
    assert "`" not in done.stdout  # no reST markup
    codes = done.stdout.split("exit codes of status:", 1)[1]
    for code in (EXIT_OK, EXIT_NO_SINGLE_PRIMARY, EXIT_USAGE, EXIT_HOST_DOWN):
        assert f"\n  {code}  " in codes


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_demo_runs_a_failover_end_to_end(driver: str) -> None:
    done = pgrouter("demo", "--driver", driver, "--seconds", "1", timeout=90)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"{driver} driver" in out
    assert "Traffic per host" in out
    for node in ("node0", "node1", "node2"):
        assert node in out.split("Traffic per host", 1)[1].split("Timeline", 1)[0]
    assert "write gap" in out
    assert "ms  (kill -> first acknowledged write on" in out
    assert "promotion alone (failover())" in out
    assert "no acknowledged write lost" in out
    assert "Traceback" not in done.stderr
