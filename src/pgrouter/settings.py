"""A manager's settings, checked once by name: the same for every face.

The async manager and the blocking ones take the same keywords with the same
meaning; :func:`manager_settings` checks them (a bad one raises ``ValueError``
or ``TypeError`` naming it, see :mod:`pgrouter.arguments`) and resolves what
depends on others (``staleness=`` into lag bounds, a heartbeat of 0 into off),
so a face only reads the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import arguments
from .balancer_policy import AbstractBalancerPolicy
from .routing.reads import ReadRule
from .routing.requests import ReadDefaults
from .staleness import StalenessPolicy, bounds_of

#: How long a transaction held over several calls (``run(partial_txn=True)``,
#: ``transaction()``) may stay open before pgrouter rolls it back (seconds):
#: far longer than the steps of one request or job take, short enough that a
#: forgotten one (or one whose caller hangs) frees its row locks, its pool
#: slot and vacuum's horizon within a minute.
DEFAULT_TXN_TIMEOUT = 60.0


@dataclass(frozen=True)
class ManagerSettings:
    acquire_timeout: float
    refresh_delay: float
    refresh_timeout: float
    fallback_master: bool
    master_as_replica_weight: float
    balancer: AbstractBalancerPolicy
    stopwatch_window_size: int
    pool_kwargs: dict[str, Any]
    event_driven_checks: bool
    primary_heartbeat: float | None  # None: off
    read_rule: ReadRule | None  # the lag bounds of reads that name none (None: no bound)
    name: str
    causal_wait: float
    txn_timeout: float = DEFAULT_TXN_TIMEOUT

    @property
    def read_defaults(self) -> ReadDefaults:
        return ReadDefaults(self.fallback_master, self.master_as_replica_weight, self.read_rule)


def manager_settings(
    *,
    acquire_timeout: Any,
    refresh_delay: Any,
    refresh_timeout: Any,
    fallback_master: Any,
    master_as_replica_weight: Any,
    balancer_policy: type[AbstractBalancerPolicy] | AbstractBalancerPolicy,
    stopwatch_window_size: Any,
    pool_factory_kwargs: Any,
    event_driven_checks: Any,
    primary_heartbeat: Any,
    max_lag_bytes: Any,
    max_lag_seconds: Any,
    staleness: StalenessPolicy | None,
    name: Any,
    causal_wait: Any,
    txn_timeout: Any = None,
) -> ManagerSettings:
    """Every manager keyword checked by name, and resolved (see the module docstring)."""
    if pool_factory_kwargs is not None and not isinstance(pool_factory_kwargs, dict):
        raise TypeError(
            "pool_factory_kwargs must be a dict of keywords for the driver's pool, "
            f"got {type(pool_factory_kwargs).__name__}"
        )
    if staleness is not None:
        if max_lag_bytes is not None or max_lag_seconds is not None:
            raise ValueError("give staleness= or max_lag_bytes=/max_lag_seconds=, not both")
        max_lag_bytes, max_lag_seconds = bounds_of(staleness)
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (the cluster's name), got {name!r}")
    # 0 turns the heartbeat off, as None does: "check the primary every 0 s"
    # has no meaning, and a probe loop with no pause would take a core.
    heartbeat = arguments.optional_seconds("primary_heartbeat", primary_heartbeat, zero=True)
    return ManagerSettings(
        acquire_timeout=arguments.seconds("acquire_timeout", acquire_timeout, zero=True),
        refresh_delay=arguments.seconds("refresh_delay", refresh_delay),
        refresh_timeout=arguments.seconds("refresh_timeout", refresh_timeout),
        fallback_master=arguments.flag("fallback_master", fallback_master),
        master_as_replica_weight=arguments.weight(
            "master_as_replica_weight", master_as_replica_weight
        ),
        balancer=arguments.balancer(balancer_policy),
        stopwatch_window_size=arguments.positive_int(
            "stopwatch_window_size", stopwatch_window_size
        ),
        pool_kwargs=dict(pool_factory_kwargs or {}),
        event_driven_checks=arguments.flag("event_driven_checks", event_driven_checks),
        primary_heartbeat=heartbeat or None,
        read_rule=arguments.read_rule(max_lag_bytes, max_lag_seconds),
        name=name,
        causal_wait=arguments.seconds("causal_wait", causal_wait, zero=True),
        txn_timeout=arguments.seconds(
            "txn_timeout", DEFAULT_TXN_TIMEOUT if txn_timeout is None else txn_timeout
        ),
    )


__all__ = ["ManagerSettings", "manager_settings"]
