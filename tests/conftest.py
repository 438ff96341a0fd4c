"""Shared fixtures: real local PostgreSQL clusters and the driver matrix.

``shared_cluster`` is one cluster per test module for tests that leave the
topology as they found it; ``cluster`` is a fresh one per test, for tests that
kill, stop or promote nodes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pgrouter.testing import LocalCluster

#: Manager modules by driver id. Every conformance test runs for each selected driver.
ALL_DRIVERS = {
    "asyncpg": "pgrouter.asyncpg",
    "psycopg": "pgrouter.psycopg3",
    "aiopg": "pgrouter.aiopg",
    "sqlalchemy": "pgrouter.sqlalchemy",
    # SQLAlchemy < 1.5 only: tested in the legacy environment (scripts/test.sh).
    "aiopg_sa": "pgrouter.aiopg_sa",
    "asyncpgsa": "pgrouter.asyncpgsa",
}

#: The drivers of the main test environment; PGROUTER_TEST_DRIVERS=a,b selects others.
DEFAULT_DRIVERS = "asyncpg,psycopg,aiopg,sqlalchemy"


def _selected_drivers() -> dict[str, str]:
    names = [
        name.strip()
        for name in os.environ.get("PGROUTER_TEST_DRIVERS", DEFAULT_DRIVERS).split(",")
        if name.strip()
    ]
    unknown = sorted(set(names) - set(ALL_DRIVERS))
    if unknown or not names:
        raise pytest.UsageError(
            f"PGROUTER_TEST_DRIVERS: unknown driver(s) {unknown or names}; "
            f"known: {', '.join(ALL_DRIVERS)}"
        )
    selected = {name: ALL_DRIVERS[name] for name in names}
    # A selected driver that does not import is a broken environment: fail the
    # whole run here instead of skipping its tests.
    for name, module in selected.items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise pytest.UsageError(
                f"driver {name!r} was selected but {module} does not import: {error!r}"
            ) from error
    return selected


DRIVERS = _selected_drivers()

#: Every small pool has at most this many connections.
SMALL_POOL_MAX_SIZE = 5

#: Small pools whose connections open lazily, so acquires really connect
#: (and cancellations can land in the middle of a connect), in each driver's
#: own keywords. SQLAlchemy's mixes its fixed part and overflow connections.
SMALL_POOLS: dict[str, dict[str, int]] = {
    "asyncpg": {"min_size": 0, "max_size": SMALL_POOL_MAX_SIZE},
    "psycopg": {"min_size": 1, "max_size": SMALL_POOL_MAX_SIZE},
    "aiopg": {"minsize": 0, "maxsize": SMALL_POOL_MAX_SIZE},
    "aiopg_sa": {"minsize": 0, "maxsize": SMALL_POOL_MAX_SIZE},
    "asyncpgsa": {"min_size": 0, "max_size": SMALL_POOL_MAX_SIZE},
    "sqlalchemy": {"pool_size": 2, "max_overflow": SMALL_POOL_MAX_SIZE - 2},
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


@pytest.fixture
def small_pool_max_size() -> int:
    return SMALL_POOL_MAX_SIZE
