"""Database sets as Django settings, and the ``PGROUTER_*`` settings, checked once.

A *database set* is one cluster: one ``DATABASES`` entry (alias) per host,
the same settings but ``HOST``/``PORT``. Its first alias is the set's name
(pindb's *master* alias); the others are ``<name>-1``, ``<name>-2``, ... Every
entry of a set carries two keys of ours, ``PGROUTER_SET`` (the set's name)
and ``PGROUTER_HOST`` (the host's index), so the router finds the sets in
``settings.DATABASES`` alone, however they were written. Which alias serves
a query is the monitor's to say (:mod:`pgrouter.django.sets`): the first
alias is where writes go only until the monitor sees another primary.

Two ways to write them:

- :func:`populate_replicas` (django-pindb's form): masters and, per set, the
  replicas as overrides of their master's settings;
- :func:`database_set`: one multi-host DSN per set.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import arguments
from ..balancer_policy import AbstractBalancerPolicy, GreedyBalancerPolicy
from ..dsn import split_dsn
from ..settings import ManagerSettings, manager_settings
from .errors import ConfigError

#: The keys of ours in a ``DATABASES`` entry (Django keeps keys it does not know).
SET_KEY = "PGROUTER_SET"
HOST_KEY = "PGROUTER_HOST"

POSTGRESQL_ENGINE = "django.db.backends.postgresql"


def replica_alias(name: str, number: int) -> str:
    """The alias of a set's ``number``-th replica (1-based), as pindb names it."""
    return f"{name}-{number}"


def populate_replicas(
    masters: Mapping[str, Mapping[str, Any]],
    sets: Mapping[str, Sequence[Mapping[str, Any]]],
    unmanaged_default: bool = False,
) -> dict[str, dict[str, Any]]:
    """``DATABASES`` from masters and, per set, its replicas as overrides of the master.

    ``masters`` maps an alias to Django's settings of one database;
    ``sets`` maps the name of a master to a list of dicts, each one
    replica's settings that differ from the master's (``HOST``, ``PORT``...).
    A master named in no set is passed through untouched (the routers leave
    its queries alone). Replica aliases get ``TEST: {"MIRROR": <master>}``.

    ``default``: with a set (or master) named so, that one. Else, unless
    ``unmanaged_default``, ``default`` is one more alias of the first set's
    master host (Django sends to ``default`` whatever no router placed). With
    ``unmanaged_default`` a master named ``default`` must exist and be in no set.
    Raises :class:`ConfigError` naming the set or alias at fault.
    """
    if not isinstance(masters, Mapping) or not masters:
        raise ConfigError("populate_replicas(): MASTER_DATABASES must be a non-empty dict")
    if not isinstance(sets, Mapping):
        raise ConfigError("populate_replicas(): DATABASE_SETS must be a dict of lists")
    databases: dict[str, dict[str, Any]] = {}
    for alias, master in masters.items():
        _check_entry(alias, master)
        databases[alias] = copy.deepcopy(dict(master))
    for name, replicas in sets.items():
        if name not in masters:
            raise ConfigError(
                f"database set {name!r} has no master: add {name!r} to MASTER_DATABASES"
            )
        if isinstance(replicas, (str, bytes, Mapping)) or not isinstance(replicas, Sequence):
            raise ConfigError(
                f"database set {name!r}: its replicas must be a list of dicts, "
                f"got {type(replicas).__name__}"
            )
        master = databases[name]
        _check_postgresql(name, master)
        master[SET_KEY], master[HOST_KEY] = name, 0
        for number, override in enumerate(replicas, start=1):
            alias = replica_alias(name, number)
            if not isinstance(override, Mapping):
                raise ConfigError(
                    f"database set {name!r}: replica {number} must be a dict of settings, "
                    f"got {type(override).__name__}"
                )
            if alias in databases:
                raise ConfigError(
                    f"database set {name!r}: replica alias {alias!r} is also a master's alias"
                )
            replica = copy.deepcopy({k: v for k, v in master.items() if k != "TEST"})
            replica.update(copy.deepcopy(dict(override)))
            replica["TEST"] = {**dict(replica.get("TEST") or {}), "MIRROR": name}
            replica[SET_KEY], replica[HOST_KEY] = name, number
            _check_postgresql(alias, replica)
            databases[alias] = replica
    if unmanaged_default:
        if "default" not in masters:
            raise ConfigError("unmanaged_default=True needs a master named 'default'")
        if "default" in sets:
            raise ConfigError("unmanaged_default=True, but 'default' is a database set")
    elif "default" not in databases:
        if not sets:
            raise ConfigError(
                "no database set and no 'default' alias: name a set in DATABASE_SETS "
                "(or pass unmanaged_default=True with a 'default' master)"
            )
        first = next(iter(sets))
        databases["default"] = copy.deepcopy(databases[first])  # its SET_KEY/HOST_KEY too
    return databases


def database_set(name: str, dsn: str, **settings: Any) -> dict[str, dict[str, Any]]:
    """The aliases of every host of one multi-host DSN: ``name``, ``name-1``, ...

    ``settings`` are Django's keys for every alias (``CONN_MAX_AGE``,
    ``OPTIONS``, ``TEST``...); ``ENGINE`` defaults to PostgreSQL's. The DSN's
    user, password, database and options fill ``USER``, ``PASSWORD``,
    ``NAME`` and ``OPTIONS`` (``settings`` win). Merge the result into
    ``DATABASES``. A bad DSN raises :class:`ConfigError` naming the set and
    the bad part, never the password.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"database_set(): the set's name must be a non-empty str, got {name!r}")
    try:
        hosts = split_dsn(dsn)
    except (ValueError, TypeError) as error:  # DsnError is a ValueError; its text is redacted
        raise ConfigError(f"database set {name!r}: {error}") from None
    unknown = sorted(key for key in settings if key != key.upper())
    if unknown:
        raise ConfigError(
            f"database set {name!r}: settings are Django's upper-case keys, got {unknown}"
        )
    databases: dict[str, dict[str, Any]] = {}
    for index, host in enumerate(hosts):
        entry: dict[str, Any] = {
            "ENGINE": POSTGRESQL_ENGINE,
            "NAME": host.dbname or "",
            "USER": host.user or "",
            "PASSWORD": host.password or "",
            "HOST": host.host,
            "PORT": str(host.port),
        }
        options = dict(host.options)
        extra = copy.deepcopy(settings)
        options.update(extra.pop("OPTIONS", None) or {})
        entry.update(extra)
        entry["HOST"], entry["PORT"] = host.host, str(host.port)
        if options:
            entry["OPTIONS"] = options
        alias = name if index == 0 else replica_alias(name, index)
        if index:
            entry["TEST"] = {**dict(entry.get("TEST") or {}), "MIRROR": name}
        entry[SET_KEY], entry[HOST_KEY] = name, index
        _check_postgresql(alias, entry)
        databases[alias] = entry
    return databases


def _check_entry(alias: Any, entry: Any) -> None:
    if not isinstance(alias, str) or not alias:
        raise ConfigError(f"a database alias must be a non-empty str, got {alias!r}")
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"database {alias!r}: settings must be a dict, got {type(entry).__name__}"
        )


def _check_postgresql(alias: str, entry: Mapping[str, Any]) -> None:
    engine = str(entry.get("ENGINE", ""))
    if "postgresql" not in engine and "postgis" not in engine:
        raise ConfigError(
            f"database {alias!r}: a database set needs a PostgreSQL ENGINE, got {engine!r}"
        )


# -- the PGROUTER_* settings ------------------------------------------------------


@dataclass(frozen=True)
class RouterSettings:
    """The ``PGROUTER_*`` settings, read and checked once (see :func:`router_settings`)."""

    enabled: bool
    delegate_routers: tuple[Any, ...]
    pinning_cookie: str
    pinning_seconds: float
    #: How long a query waits for the monitor to know a primary (first use, failover).
    primary_wait: float
    monitor: ManagerSettings  # checks, lag bounds, balancer: validated as the managers'


#: Every ``PGROUTER_*`` setting and its default.
DEFAULTS: dict[str, Any] = {
    "PGROUTER_ENABLED": True,
    "PGROUTER_DELEGATE_ROUTERS": (),
    "PGROUTER_PINNING_COOKIE": "pgrouter_pins",
    "PGROUTER_PINNING_SECONDS": 15.0,
    "PGROUTER_MAX_LAG_SECONDS": None,
    "PGROUTER_MAX_LAG_BYTES": None,
    "PGROUTER_REFRESH_DELAY": 1.0,
    "PGROUTER_REFRESH_TIMEOUT": 1.0,
    "PGROUTER_PRIMARY_HEARTBEAT": 0.1,
    "PGROUTER_EVENT_DRIVEN_CHECKS": True,
    "PGROUTER_PRIMARY_WAIT": 2.0,
    "PGROUTER_BALANCER_POLICY": GreedyBalancerPolicy,
}


def router_settings(settings: Any) -> RouterSettings:
    """Read the ``PGROUTER_*`` settings of Django's ``settings``; :class:`ConfigError` names
    the bad one."""
    from django.utils.module_loading import import_string

    values = {key: getattr(settings, key, default) for key, default in DEFAULTS.items()}
    enabled = values["PGROUTER_ENABLED"]
    if not isinstance(enabled, bool):
        raise ConfigError(f"PGROUTER_ENABLED must be True or False, got {enabled!r}")
    cookie = values["PGROUTER_PINNING_COOKIE"]
    if not isinstance(cookie, str) or not cookie:
        raise ConfigError(f"PGROUTER_PINNING_COOKIE must be a cookie name, got {cookie!r}")
    delegates = values["PGROUTER_DELEGATE_ROUTERS"]
    if isinstance(delegates, (str, bytes)) or not isinstance(delegates, Sequence):
        raise ConfigError("PGROUTER_DELEGATE_ROUTERS must be a list of routers or dotted paths")
    routers = []
    for delegate in delegates:
        if isinstance(delegate, str):
            try:
                delegate = import_string(delegate)()
            except ImportError as error:
                raise ConfigError(f"PGROUTER_DELEGATE_ROUTERS: {error}") from None
        routers.append(delegate)
    policy = values["PGROUTER_BALANCER_POLICY"]
    if isinstance(policy, str):
        try:
            policy = import_string(policy)
        except ImportError as error:
            raise ConfigError(f"PGROUTER_BALANCER_POLICY: {error}") from None
    names = {
        "refresh_delay": "PGROUTER_REFRESH_DELAY",
        "refresh_timeout": "PGROUTER_REFRESH_TIMEOUT",
        "primary_heartbeat": "PGROUTER_PRIMARY_HEARTBEAT",
        "event_driven_checks": "PGROUTER_EVENT_DRIVEN_CHECKS",
        "max_lag_bytes": "PGROUTER_MAX_LAG_BYTES",
        "max_lag_seconds": "PGROUTER_MAX_LAG_SECONDS",
        "balancer_policy": "PGROUTER_BALANCER_POLICY",
    }
    try:
        monitor = manager_settings(
            acquire_timeout=1.0,  # unused: Django owns the connections
            refresh_delay=values["PGROUTER_REFRESH_DELAY"],
            refresh_timeout=values["PGROUTER_REFRESH_TIMEOUT"],
            fallback_master=True,
            master_as_replica_weight=0.0,
            balancer_policy=_policy(policy),
            stopwatch_window_size=128,
            pool_factory_kwargs=None,
            event_driven_checks=values["PGROUTER_EVENT_DRIVEN_CHECKS"],
            primary_heartbeat=values["PGROUTER_PRIMARY_HEARTBEAT"],
            max_lag_bytes=values["PGROUTER_MAX_LAG_BYTES"],
            max_lag_seconds=values["PGROUTER_MAX_LAG_SECONDS"],
            staleness=None,
            name="django",
            causal_wait=0.0,  # unused: a token not yet replayed goes to the primary
        )
    except (ValueError, TypeError) as error:
        text = str(error)
        for keyword, setting in names.items():
            if text.startswith(keyword):
                text = setting + text[len(keyword) :]
                break
        raise ConfigError(text) from None
    try:
        pinning_seconds = arguments.seconds(
            "PGROUTER_PINNING_SECONDS", values["PGROUTER_PINNING_SECONDS"]
        )
        primary_wait = arguments.seconds(
            "PGROUTER_PRIMARY_WAIT", values["PGROUTER_PRIMARY_WAIT"], zero=True
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    return RouterSettings(
        enabled=enabled,
        delegate_routers=tuple(routers),
        pinning_cookie=cookie,
        pinning_seconds=pinning_seconds,
        primary_wait=primary_wait,
        monitor=monitor,
    )


def _policy(policy: Any) -> type[AbstractBalancerPolicy] | AbstractBalancerPolicy:
    return policy  # type: ignore[no-any-return]  # checked by manager_settings


__all__ = [
    "DEFAULTS",
    "HOST_KEY",
    "SET_KEY",
    "RouterSettings",
    "database_set",
    "populate_replicas",
    "replica_alias",
    "router_settings",
]
