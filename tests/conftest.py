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
    # The blocking face, driven through the async API by tests/integration/sync_adapter.py,
    # in the modules marked sync_face only (see pytest_collection_modifyitems).
    "sync_psycopg": "pgrouter.sync.psycopg",
    "sync_psycopg2": "pgrouter.sync.psycopg2",
}

#: Driver ids of the blocking face (sync managers).
SYNC_DRIVERS = frozenset({"sync_psycopg", "sync_psycopg2"})

#: The drivers of the main test environment; PGROUTER_TEST_DRIVERS=a,b selects others.
DEFAULT_DRIVERS = "asyncpg,psycopg,aiopg,sqlalchemy,sync_psycopg,sync_psycopg2"


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
    "sync_psycopg": {"min_size": 1, "max_size": SMALL_POOL_MAX_SIZE},
    "sync_psycopg2": {"minconn": 1, "maxconn": SMALL_POOL_MAX_SIZE},
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sync_face: the module's driver-matrix tests run over the sync managers too",
    )
    config.addinivalue_line(
        "markers",
        "async_only(reason): skipped for the sync managers; the reason says why it does not apply",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The sync driver ids only where the module asks; ``async_only`` skipped for them.

    A module opts in with ``pytest.mark.sync_face``: the blocking face speaks the
    async API only through the test-side adapter, so a module written for the
    async managers alone (event-loop misuse, asyncio internals) never gets the
    sync ids (deselected). In an opted-in module, a test marked
    ``async_only(reason)`` is skipped for them, with the marker's reason. A test
    that parametrizes ``driver`` itself keeps whatever values it chose.
    """
    kept, deselected = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (
            callspec is None
            or callspec.params.get("driver") not in SYNC_DRIVERS
            or _parametrizes_driver_itself(item)
        ):
            kept.append(item)
            continue
        if item.get_closest_marker("sync_face") is None:
            deselected.append(item)
            continue
        kept.append(item)
        marker = item.get_closest_marker("async_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs["reason"]
            item.add_marker(pytest.mark.skip(reason=f"async face only: {reason}"))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def _parametrizes_driver_itself(item: pytest.Item) -> bool:
    for marker in item.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "driver" in names:
            return True
    return False


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
    """The driver's manager class; for a sync id, a factory of the async-API adapter."""
    cls = importlib.import_module(DRIVERS[driver]).PoolManager
    if driver in SYNC_DRIVERS:
        from sync_adapter import adapter_factory

        return adapter_factory(cls)
    return cls


@pytest.fixture
def small_pools(driver: str) -> dict[str, int]:
    return dict(SMALL_POOLS[driver])


@pytest.fixture
def small_pool_max_size() -> int:
    return SMALL_POOL_MAX_SIZE
