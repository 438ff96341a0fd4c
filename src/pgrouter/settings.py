"""A manager's settings, checked once by name: the same for every face.

The async manager and the blocking ones take the same keywords with the same
meaning; :func:`manager_settings` checks them (a bad one raises ``ValueError``
or ``TypeError`` naming it, see :mod:`pgrouter.arguments`) and resolves what
depends on others (``staleness=`` into lag bounds, a heartbeat of 0 into off),
so a face only reads the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from . import arguments
from .balancer_policy import AbstractBalancerPolicy, GreedyBalancerPolicy
from .routing.reads import ReadRule
from .routing.requests import ReadDefaults
from .staleness import StalenessPolicy, bounds_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_ACQUIRE_TIMEOUT = 1.0
DEFAULT_REFRESH_DELAY = 1.0
DEFAULT_REFRESH_TIMEOUT = 1.0
DEFAULT_STOPWATCH_WINDOW_SIZE = 128
#: The primary is checked this often (seconds) besides every refresh_delay: one
#: tiny query on the check connection, so a frozen primary is suspected within
#: a fraction of a second. None turns it off.
DEFAULT_PRIMARY_HEARTBEAT = 0.1
#: How long a read with a write token waits for a replica to replay it before
#: it goes to the primary (seconds). Replicas that keep up replay within
#: milliseconds; a paused or far-behind one should cost a read little.
DEFAULT_CAUSAL_WAIT = 0.25
#: How long a transaction held over several calls (``run(partial_txn=True)``,
#: ``transaction()``) may stay open before pgrouter rolls it back (seconds):
#: far longer than the steps of one request or job take, short enough that a
#: forgotten one (or one whose caller hangs) frees its row locks, its pool
#: slot and vacuum's horizon within a minute.
DEFAULT_TXN_TIMEOUT = 60.0


class ManagerOptions(TypedDict, total=False):
    """Every keyword a manager takes, async or blocking: one list, one set of defaults.

    The faces take them as ``**options`` (typed by this dict) and hand them
    here, so a keyword, its meaning and its default exist once; README's API
    section explains each.
    """

    acquire_timeout: float
    refresh_delay: float
    refresh_timeout: float
    fallback_master: bool
    master_as_replica_weight: float
    balancer_policy: type[AbstractBalancerPolicy] | AbstractBalancerPolicy
    stopwatch_window_size: int
    pool_factory_kwargs: dict[str, Any] | None
    event_driven_checks: bool
    primary_heartbeat: float | None
    max_lag_bytes: int | None
    max_lag_seconds: float | None
    staleness: StalenessPolicy | None
    name: str
    causal_wait: float
    txn_timeout: float


#: What a keyword not given means.
DEFAULTS: ManagerOptions = {
    "acquire_timeout": DEFAULT_ACQUIRE_TIMEOUT,
    "refresh_delay": DEFAULT_REFRESH_DELAY,
    "refresh_timeout": DEFAULT_REFRESH_TIMEOUT,
    "fallback_master": False,
    "master_as_replica_weight": 0.0,
    "balancer_policy": GreedyBalancerPolicy,
    "stopwatch_window_size": DEFAULT_STOPWATCH_WINDOW_SIZE,
    "pool_factory_kwargs": None,
    "event_driven_checks": True,
    "primary_heartbeat": DEFAULT_PRIMARY_HEARTBEAT,
    "max_lag_bytes": None,
    "max_lag_seconds": None,
    "staleness": None,
    "name": "default",
    "causal_wait": DEFAULT_CAUSAL_WAIT,
    "txn_timeout": DEFAULT_TXN_TIMEOUT,
}


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


def manager_settings(owner: str = "manager", **options: Unpack[ManagerOptions]) -> ManagerSettings:
    """Every manager keyword checked by name, and resolved (see the module docstring).

    ``owner`` names the class in the error for a keyword no manager takes.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"{owner} got unknown keyword argument(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(DEFAULTS)}"
        )
    given: dict[str, Any] = {**DEFAULTS, **options}
    pool_factory_kwargs = given["pool_factory_kwargs"]
    if pool_factory_kwargs is not None and not isinstance(pool_factory_kwargs, dict):
        raise TypeError(
            "pool_factory_kwargs must be a dict of keywords for the driver's pool, "
            f"got {type(pool_factory_kwargs).__name__}"
        )
    max_lag_bytes, max_lag_seconds = given["max_lag_bytes"], given["max_lag_seconds"]
    staleness = given["staleness"]
    if staleness is not None:
        if max_lag_bytes is not None or max_lag_seconds is not None:
            raise ValueError("give staleness= or max_lag_bytes=/max_lag_seconds=, not both")
        max_lag_bytes, max_lag_seconds = bounds_of(staleness)
    name = given["name"]
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (the cluster's name), got {name!r}")
    # 0 turns the heartbeat off, as None does: "check the primary every 0 s"
    # has no meaning, and a probe loop with no pause would take a core.
    heartbeat = arguments.optional_seconds(
        "primary_heartbeat", given["primary_heartbeat"], zero=True
    )
    return ManagerSettings(
        acquire_timeout=arguments.seconds("acquire_timeout", given["acquire_timeout"], zero=True),
        refresh_delay=arguments.seconds("refresh_delay", given["refresh_delay"]),
        refresh_timeout=arguments.seconds("refresh_timeout", given["refresh_timeout"]),
        fallback_master=arguments.flag("fallback_master", given["fallback_master"]),
        master_as_replica_weight=arguments.weight(
            "master_as_replica_weight", given["master_as_replica_weight"]
        ),
        balancer=arguments.balancer(given["balancer_policy"]),
        stopwatch_window_size=arguments.positive_int(
            "stopwatch_window_size", given["stopwatch_window_size"]
        ),
        pool_kwargs=dict(pool_factory_kwargs or {}),
        event_driven_checks=arguments.flag("event_driven_checks", given["event_driven_checks"]),
        primary_heartbeat=heartbeat or None,
        read_rule=arguments.read_rule(max_lag_bytes, max_lag_seconds),
        name=name,
        causal_wait=arguments.seconds("causal_wait", given["causal_wait"], zero=True),
        txn_timeout=arguments.seconds("txn_timeout", given["txn_timeout"]),
    )


__all__ = ["DEFAULTS", "ManagerOptions", "ManagerSettings", "manager_settings"]
