"""Bad arguments fail at the call, with an error naming the argument (issue: misuse)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pgrouter import arguments
from pgrouter.asyncpg import PoolManager

DSN = "postgresql://app:S3cretPw@db1,db2/app"


@pytest.mark.parametrize(
    ("keywords", "error", "name"),
    [
        ({"primary_heartbeat": -0.1}, ValueError, "primary_heartbeat"),
        ({"primary_heartbeat": math.nan}, ValueError, "primary_heartbeat"),
        ({"primary_heartbeat": "0.1"}, TypeError, "primary_heartbeat"),
        ({"refresh_delay": math.nan}, ValueError, "refresh_delay"),
        ({"refresh_delay": 0}, ValueError, "refresh_delay"),
        ({"refresh_timeout": math.inf}, ValueError, "refresh_timeout"),
        ({"acquire_timeout": math.nan}, ValueError, "acquire_timeout"),
        ({"acquire_timeout": -1}, ValueError, "acquire_timeout"),
        ({"master_as_replica_weight": 1.5}, ValueError, "master_as_replica_weight"),
        ({"master_as_replica_weight": math.nan}, ValueError, "master_as_replica_weight"),
        ({"stopwatch_window_size": -1}, ValueError, "stopwatch_window_size"),
        ({"stopwatch_window_size": 1.5}, TypeError, "stopwatch_window_size"),
        ({"balancer_policy": int}, TypeError, "balancer_policy"),
        ({"balancer_policy": "greedy"}, TypeError, "balancer_policy"),
        ({"fallback_master": "yes"}, TypeError, "fallback_master"),
        ({"pool_factory_kwargs": [("min_size", 1)]}, TypeError, "pool_factory_kwargs"),
    ],
)
def test_a_bad_manager_argument_is_refused_by_name(
    keywords: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name) as raised:
        PoolManager(DSN, **keywords)
    assert "S3cretPw" not in str(raised.value)


def test_a_heartbeat_of_zero_means_off() -> None:
    manager = PoolManager(DSN, primary_heartbeat=0)
    assert all(host._primary_heartbeat is None for host in manager._monitor.hosts)


@pytest.mark.parametrize("timeout", [-5, math.nan, math.inf, "1"])
def test_a_bad_acquire_timeout_is_refused_at_the_call(timeout: Any) -> None:
    manager = PoolManager(DSN)
    with pytest.raises((ValueError, TypeError), match="timeout"):
        manager.acquire(timeout=timeout)
    with pytest.raises((ValueError, TypeError), match="timeout"):
        manager.acquire_replica(timeout=timeout)


def test_a_bad_weight_is_refused_by_acquire_and_get_pool() -> None:
    manager = PoolManager(DSN)
    with pytest.raises(ValueError, match="master_as_replica_weight"):
        manager.acquire_replica(master_as_replica_weight=1.5)


async def test_get_pool_refuses_a_bad_weight() -> None:
    manager = PoolManager(DSN, refresh_timeout=0.2)
    try:
        with pytest.raises(ValueError, match="master_as_replica_weight"):
            await manager.get_pool(True, master_as_replica_weight=1.5)
    finally:
        await manager.terminate()


def test_the_checks_themselves() -> None:
    assert arguments.seconds("x", 2) == 2.0
    assert arguments.seconds("x", 0, zero=True) == 0.0
    assert arguments.optional_seconds("x", None) is None
    with pytest.raises(TypeError, match="x must be a number"):
        arguments.seconds("x", True)
    assert arguments.weight("w", 1) == 1.0
    assert arguments.positive_int("n", 3) == 3
    with pytest.raises(TypeError):
        arguments.flag("f", None)
