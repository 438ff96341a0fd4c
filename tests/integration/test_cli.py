"""The ``pgrouter`` command end to end: ``status`` and ``demo`` as subprocesses.

Run through ``python -m pgrouter`` exactly as a user would, against real local
clusters, so argument parsing, exit codes and redaction are all covered.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from pgrouter.errors import ClusterError
from pgrouter.testing import LocalCluster, find_pg_bin

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)

PASSWORD = "s3cret-pw"


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


def test_status_lists_every_host_with_its_role(shared_cluster: LocalCluster) -> None:
    done = pgrouter("status", shared_cluster.dsn(password=PASSWORD))

    assert done.returncode == 0, done.stderr
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

    assert done.returncode != 0
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

    assert done.returncode == 2
    assert bad_part in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


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
