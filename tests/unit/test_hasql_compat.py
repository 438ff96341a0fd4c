"""hasql users switch by changing the package name: the import paths and names exist."""

from __future__ import annotations

import importlib
import inspect

import pytest

MANAGER_METHODS = [
    "acquire", "acquire_master", "acquire_replica", "release", "get_pool",
    "get_master_pools", "get_replica_pools", "pool_is_master", "pool_is_replica",
    "get_pool_freesize", "acquire_from_pool", "release_to_pool", "is_connection_closed",
    "get_last_response_time", "register_connection", "ready", "wait_all_ready",
    "wait_masters_ready", "wait_replicas_ready", "wait_next_pool_check", "close", "terminate",
]  # fmt: skip


@pytest.mark.parametrize("module", ["pgrouter.asyncpg", "pgrouter.psycopg3"])
def test_manager_modules_export_pool_manager(module: str) -> None:
    manager = importlib.import_module(module).PoolManager
    for name in MANAGER_METHODS:
        assert callable(getattr(manager, name)), name


def test_base_and_balancer_paths() -> None:
    from pgrouter.balancer_policy import (
        GreedyBalancerPolicy,
        RandomWeightedBalancerPolicy,
        RoundRobinBalancerPolicy,
    )
    from pgrouter.base import BasePoolManager

    assert all(
        inspect.isclass(cls)
        for cls in (
            BasePoolManager,
            GreedyBalancerPolicy,
            RandomWeightedBalancerPolicy,
            RoundRobinBalancerPolicy,
        )
    )


def test_constructor_keywords_match_hasql() -> None:
    from pgrouter.base import BasePoolManager

    parameters = inspect.signature(BasePoolManager.__init__).parameters
    defaults = {name: p.default for name, p in parameters.items()}
    assert defaults["acquire_timeout"] == 1
    assert defaults["refresh_delay"] == 1
    assert defaults["refresh_timeout"] == 1
    assert defaults["fallback_master"] is False
    assert defaults["master_as_replica_weight"] == 0.0
    assert defaults["stopwatch_window_size"] == 128
    assert defaults["pool_factory_kwargs"] is None
    acquire = inspect.signature(BasePoolManager.acquire).parameters
    assert list(acquire)[1:5] == [
        "read_only",
        "fallback_master",
        "master_as_replica_weight",
        "timeout",
    ]
    ready = inspect.signature(BasePoolManager.ready).parameters
    assert ready["timeout"].default == 10
