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


#: hasql 0.10's BasePoolManager keywords and their defaults.
HASQL_KEYWORDS = {
    "acquire_timeout": 1,
    "refresh_delay": 1,
    "refresh_timeout": 1,
    "fallback_master": False,
    "master_as_replica_weight": 0.0,
    "balancer_policy": None,  # a policy class; its default is checked below
    "stopwatch_window_size": 128,
    "pool_factory_kwargs": None,
}


def test_constructor_keywords_match_hasql() -> None:
    from pgrouter.balancer_policy import GreedyBalancerPolicy
    from pgrouter.base import BasePoolManager
    from pgrouter.settings import DEFAULTS, ManagerOptions, manager_settings

    # Both faces take their keywords as **options typed by ManagerOptions,
    # with one set of defaults (pgrouter.settings.DEFAULTS).
    assert set(DEFAULTS) == set(ManagerOptions.__annotations__)
    for keyword, default in HASQL_KEYWORDS.items():
        assert keyword in DEFAULTS, keyword
        if keyword != "balancer_policy":
            assert DEFAULTS[keyword] == default, keyword  # type: ignore[literal-required]
    assert DEFAULTS["balancer_policy"] is GreedyBalancerPolicy
    settings = manager_settings("BasePoolManager")
    assert isinstance(settings.balancer, GreedyBalancerPolicy)
    with pytest.raises(TypeError, match="BasePoolManager got unknown keyword argument"):
        manager_settings("BasePoolManager", acquire_timeot=1)  # type: ignore[call-arg]
    acquire = inspect.signature(BasePoolManager.acquire).parameters
    assert list(acquire)[1:5] == [
        "read_only",
        "fallback_master",
        "master_as_replica_weight",
        "timeout",
    ]
    ready = inspect.signature(BasePoolManager.ready).parameters
    assert ready["timeout"].default == 10


@pytest.mark.parametrize(
    "module",
    ["pgrouter.asyncpg", "pgrouter.psycopg3", "pgrouter.sync.psycopg", "pgrouter.sync.psycopg2"],
)
def test_a_mistyped_keyword_is_refused_by_name_on_every_face(module: str) -> None:
    manager = importlib.import_module(module).PoolManager
    with pytest.raises(
        TypeError, match=r"PoolManager got unknown keyword argument\(s\) acquire_timeot"
    ):
        manager("postgresql://u:secret@h1,h2/db", acquire_timeot=1)
    with pytest.raises(ValueError, match="acquire_timeout"):
        manager("postgresql://u:secret@h1,h2/db", acquire_timeout=-1)
