"""Shared fixtures: real local PostgreSQL clusters and the driver matrix.

``shared_cluster`` is one cluster per test module for tests that leave the
topology as they found it; ``cluster`` is a fresh one per test, for tests that
kill, stop or promote nodes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from pgrouter.testing import LocalCluster

#: Manager classes under test, by driver id. Every conformance test runs for each.
DRIVERS = {
    "asyncpg": "pgrouter.asyncpg",
    "psycopg": "pgrouter.psycopg3",
}

#: Small pools whose connections open lazily, so acquires really connect
#: (and cancellations can land in the middle of a connect).
SMALL_POOLS = {
    "asyncpg": {"min_size": 0, "max_size": 5},
    "psycopg": {"min_size": 1, "max_size": 5},
}


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=2) as cluster:
        yield cluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=2) as fresh:
        yield fresh


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager_cls(driver: str) -> Any:
    return importlib.import_module(DRIVERS[driver]).PoolManager


@pytest.fixture
def small_pools(driver: str) -> dict[str, int]:
    return dict(SMALL_POOLS[driver])
