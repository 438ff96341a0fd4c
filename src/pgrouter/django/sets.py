"""The database sets of ``settings.DATABASES``, each watched by one monitor, and which alias
serves a read or a write now.

A :class:`DatabaseSet` is one cluster: its aliases by host index and a
:class:`~pgrouter.sync.cluster_watch.ClusterWatch` over every host (a
:class:`~pgrouter.dsn.HostDsn` per alias, built from that alias's own
settings; the password stays in those objects, whose ``str`` hides it). The
answers come from the routing layer, never from a copy of it: the primary is
the snapshot's (split brain, fencing and superseded hosts included), a read
goes where the balancer's eligibility and lag bounds allow, a read after a
write token where :func:`~pgrouter.routing.consistency.plan_token_read` says
a replica has replayed it (another timeline, a token no replica has reached
yet: the primary). The monitor starts on the first query routed to the set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..balancer_policy import AbstractBalancerPolicy
from ..dsn import DEFAULT_HOST, DEFAULT_PORT, HostDsn
from ..errors import DsnError
from ..routing.consistency import plan_token_read
from ..routing.reads import ReadRule
from ..routing.tokens import WriteToken
from ..sync.cluster_watch import ClusterWatch
from ..topology import HostState, TopologySnapshot
from .config import HOST_KEY, SET_KEY, RouterSettings
from .connections import OpenConnections, follow, install
from .errors import ConfigError

logger = logging.getLogger("pgrouter")

#: libpq options of a Django ``OPTIONS`` dict that the checks' connections need too.
_PROBE_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "passfile",
    "connect_timeout",
    "gssencmode",
    "channel_binding",
    "require_auth",
)


def _no_pool(host: HostState) -> int:
    """Django owns the connections: no pool is fuller than another."""
    return 0


def _checked(snapshot: TopologySnapshot) -> bool:
    return all(host.check_count > 0 for host in snapshot.hosts)


def _has_primary(snapshot: TopologySnapshot) -> bool:
    return bool(snapshot.primaries)


class DatabaseSet:
    """One cluster's aliases and its monitor (see the module docstring)."""

    def __init__(self, name: str, aliases: tuple[str, ...], watch: ClusterWatch) -> None:
        self.name = name
        self.aliases = aliases  # by host index; aliases[0] is the set's name
        self.names = aliases  # and any extra alias of a host ('default', populate_replicas)
        self.watch = watch
        self._last_primary = 0  # where writes went last (kept while no primary is known)
        self._primary_wait = 0.0
        self._balancer: AbstractBalancerPolicy | None = None
        self._rule: ReadRule | None = None
        self._ready = False  # every host checked once (see snapshot())
        self._started_at: dict[int, float] = {}  # each host's server start, first seen
        self._first_names: tuple[str, ...] = (aliases[0],)
        self.open_connections = OpenConnections(len(aliases))

    def __repr__(self) -> str:
        return f"<DatabaseSet {self.name} aliases={list(self.aliases)}>"

    def snapshot(self) -> TopologySnapshot:
        """The current snapshot; on first use, after every host's first check (bounded by
        ``PGROUTER_PRIMARY_WAIT``), so the first reads are not all sent to the primary."""
        snapshot = self.watch.topology
        if not self._ready:
            try:
                snapshot = self.watch.wait_for(_checked, self._primary_wait)
            except TimeoutError:
                snapshot = self.watch.topology
            self._ready = True
        return snapshot

    def atomic_candidates(self, primary: int) -> tuple[str, ...]:
        """The aliases a ``transaction.atomic()`` of this set is opened on: its first alias
        (and the extra names of that host: ``default``), and the current primary's."""
        if primary == 0:
            return self._first_names
        return (*self._first_names, self.aliases[primary])

    def restarted(self, index: int, snapshot: TopologySnapshot) -> bool:
        """True once host ``index``'s server was seen restarted since this process's first
        look at it (connections opened before may be dead)."""
        now = snapshot.hosts[index].server_started_at
        if now is None:
            return False
        return self._started_at.setdefault(index, now) != now

    def primary_index(self, snapshot: TopologySnapshot | None = None) -> int:
        """The host writes go to now; with none known, wait up to ``PGROUTER_PRIMARY_WAIT``
        for the monitor to find one, then the last one (the query raises Django's error)."""
        if snapshot is None:
            snapshot = self.snapshot()
        primaries = snapshot.primaries
        if not primaries:
            try:
                primaries = self.watch.wait_for(_has_primary, self._primary_wait).primaries
            except TimeoutError:
                return self._last_primary
        index = primaries[0].index
        self._last_primary = index
        return index

    def write_alias(self) -> str:
        """The alias of the current primary (noted as work, for its heartbeat)."""
        index = self.primary_index()
        self.watch.note_work(index)
        return self.aliases[index]

    def known_primary(self) -> int:
        """The primary now, without waiting: the last one while none is known."""
        primaries = self.snapshot().primaries
        return primaries[0].index if primaries else self._last_primary

    def read_index(self, token: WriteToken | None) -> int:
        """A replica within the lag bounds (and past ``token``), else the primary."""
        snapshot = self.snapshot()
        rule = self._rule
        if token is not None:
            plan = plan_token_read(snapshot, token, rule)
            if not plan.ignore:
                if plan.first is None:  # no replica has it yet: the primary has
                    return self.primary_index(snapshot)
                rule = plan.first
        assert self._balancer is not None
        host = self._balancer.pick(
            snapshot,
            read_only=True,
            fallback_master=False,
            master_as_replica_weight=0.0,
            free_size=_no_pool,
            rule=rule,
        )
        if host is None:
            return self.primary_index(snapshot)
        return host.index

    def read_alias(self, token: WriteToken | None) -> str:
        return self.aliases[self.read_index(token)]

    def configure(self, settings: RouterSettings) -> None:
        self._primary_wait = settings.primary_wait
        self._balancer = settings.monitor.balancer
        self._rule = settings.monitor.read_rule


class SetRegistry:
    """Every database set of ``DATABASES``, and the set (and host) of each alias."""

    def __init__(self, databases: Mapping[str, Mapping[str, Any]], settings: RouterSettings):
        self.settings = settings
        members: dict[str, dict[int, str]] = {}
        for alias, entry in databases.items():
            name = entry.get(SET_KEY)
            if name is None:
                continue
            index = entry.get(HOST_KEY)
            if not isinstance(name, str) or isinstance(index, bool) or not isinstance(index, int):
                raise ConfigError(
                    f"database {alias!r}: {SET_KEY} must be a set's name and {HOST_KEY} "
                    "its host's index (use populate_replicas() or database_set())"
                )
            hosts = members.setdefault(name, {})
            if index in hosts and alias != "default":
                raise ConfigError(
                    f"database set {name!r}: aliases {hosts[index]!r} and {alias!r} "
                    f"are both host {index}"
                )
            if alias == "default" and alias != name:
                continue  # an extra name of a master (populate_replicas)
            hosts[index] = alias
        self.sets: dict[str, DatabaseSet] = {}
        self.members: dict[str, tuple[DatabaseSet, int]] = {}
        for name, hosts in members.items():
            if name not in databases or databases[name].get(SET_KEY) != name:
                raise ConfigError(
                    f"database set {name!r} has no master: no alias {name!r} in DATABASES"
                )
            if sorted(hosts) != list(range(len(hosts))):
                raise ConfigError(
                    f"database set {name!r}: host indexes {sorted(hosts)} are not 0..n-1"
                )
            aliases = tuple(hosts[index] for index in range(len(hosts)))
            dsns = [_host_dsn(alias, databases[alias]) for alias in aliases]
            monitor = settings.monitor
            watch = ClusterWatch(
                dsns,
                refresh_delay=monitor.refresh_delay,
                refresh_timeout=monitor.refresh_timeout,
                primary_heartbeat=monitor.primary_heartbeat,
                event_driven_checks=monitor.event_driven_checks,
                stopwatch_window_size=monitor.stopwatch_window_size,
                name=f"django-{name}",
            )
            database_set = DatabaseSet(name, aliases, watch)
            database_set.configure(settings)
            follow(database_set)
            self.sets[name] = database_set
            for index, alias in enumerate(aliases):
                self.members[alias] = (database_set, index)
        for alias, entry in databases.items():
            name = entry.get(SET_KEY)
            if alias == "default" and name is not None and name != alias:
                self.members[alias] = (self.sets[name], int(entry[HOST_KEY]))
                self.sets[name].names += (alias,)
                if int(entry[HOST_KEY]) == 0:
                    self.sets[name]._first_names += (alias,)
        self.databases = databases

    def member(self, alias: str) -> tuple[DatabaseSet, int] | None:
        """The set and host index of ``alias``; ``None`` for an alias in no set."""
        found = self.members.get(alias)
        if found is None and alias not in self.databases:
            raise ConfigError(f"a router chose database {alias!r}, which is not in DATABASES")
        return found

    def set_named(self, alias: str) -> DatabaseSet:
        """The set ``alias`` belongs to (any of its aliases names it)."""
        found = self.member(alias)
        if found is None:
            raise ConfigError(f"database {alias!r} is in no database set")
        return found[0]

    def close(self) -> None:
        for database_set in self.sets.values():
            database_set.watch.close()


def _host_dsn(alias: str, entry: Mapping[str, Any]) -> HostDsn:
    """The checks' DSN for one alias: its own host, port, user, password, database."""
    options = entry.get("OPTIONS") or {}
    port = entry.get("PORT") or DEFAULT_PORT
    try:
        return HostDsn(
            host=str(entry.get("HOST") or DEFAULT_HOST),
            port=int(port),
            user=entry.get("USER") or None,
            password=entry.get("PASSWORD") or None,
            dbname=entry.get("NAME") or None,
            options=tuple(
                (key, str(options[key])) for key in _PROBE_OPTIONS if options.get(key) is not None
            ),
        )
    except (DsnError, ValueError, TypeError) as error:
        raise ConfigError(f"database {alias!r}: {error}") from None


_lock = threading.Lock()
_registry: SetRegistry | None = None


def registry() -> SetRegistry:
    """The sets of ``settings.DATABASES``, built on first use (Django's settings are read once)."""
    global _registry
    found = _registry
    if found is not None:
        return found
    with _lock:
        if _registry is None:
            from django.conf import settings

            from .config import router_settings

            _registry = SetRegistry(settings.DATABASES, router_settings(settings))
            _follow_setting_changes()
            install(registry)  # before any connection of a set is opened through us
        return _registry


def reset_registry() -> None:
    """Forget the sets and stop their monitors (tests that change settings; process exit)."""
    global _registry
    with _lock:
        found, _registry = _registry, None
    if found is not None:
        found.close()


def _follow_setting_changes() -> None:
    """``override_settings()`` of ``DATABASES`` or a ``PGROUTER_*`` setting (tests) rebuilds
    the sets on next use."""
    from django.core.signals import setting_changed

    def changed(*, setting: str, **kwargs: Any) -> None:
        if setting == "DATABASES" or setting.startswith("PGROUTER_"):
            reset_registry()

    setting_changed.connect(changed, weak=False, dispatch_uid="pgrouter.django.sets")


__all__ = ["DatabaseSet", "SetRegistry", "registry", "reset_registry"]
