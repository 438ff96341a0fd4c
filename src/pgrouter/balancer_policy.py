"""Balancer policies: which healthy host serves the next acquire.

A policy reads one :class:`TopologySnapshot`; it never talks to a server.
:meth:`AbstractBalancerPolicy.pick` first narrows the snapshot to the hosts a
request may use (the routing rules, shared by every policy), then asks the
policy's :meth:`~AbstractBalancerPolicy.choose` to pick among them. Writing
your own policy means writing ``choose``.

Routing rules:

- a write goes to the primary;
- a read goes to the primary with probability ``master_as_replica_weight``
  (when there is one), otherwise to a replica; with no replica it goes to the
  primary only if ``fallback_master`` is set, else it waits.
"""

from __future__ import annotations

import abc
import itertools
import random
import sys
from collections.abc import Callable, Sequence

from .routing.reads import ReadRule, serves
from .topology import HostRole, HostState, TopologySnapshot

#: Live number of free connections in a host's pool (pools are not snapshot data),
#: minus the acquires already queued for them: negative when a queue has formed.
FreeSize = Callable[[HostState], int]


def eligible_hosts(
    snapshot: TopologySnapshot,
    *,
    read_only: bool,
    fallback_master: bool,
    master_as_replica_weight: float,
    rule: ReadRule | None = None,
) -> list[HostState]:
    """The hosts a request may use right now, before any balancing.

    ``rule`` narrows the replicas a read may use (lag bounds, a position a
    write token asks for: :mod:`pgrouter.routing.reads`); with none left, the
    read goes to the primary only with ``fallback_master``.
    """
    return _eligible(snapshot, read_only, fallback_master, master_as_replica_weight, rule)


def _eligible(
    snapshot: TopologySnapshot,
    read_only: bool,
    fallback_master: bool,
    master_as_replica_weight: float,
    rule: ReadRule | None,
    /,
) -> list[HostState]:
    """:func:`eligible_hosts` with positional arguments: the balancer's call, on every read."""
    primaries = snapshot.primaries
    if not read_only:
        return primaries
    if primaries and master_as_replica_weight > 0 and random.random() < master_as_replica_weight:
        return primaries
    replicas = snapshot.replicas
    if rule is not None:
        replicas = [replica for replica in replicas if serves(replica, rule)]
    if replicas:
        return replicas
    return primaries if fallback_master else []


def has_eligible_host(
    snapshot: TopologySnapshot,
    *,
    read_only: bool,
    fallback_master: bool,
    master_as_replica_weight: float,
    rule: ReadRule | None = None,
) -> bool:
    """True when :func:`eligible_hosts` can give this request a host on ``snapshot``.

    The same rules without the coin toss: what a waiting request is woken
    for. (A read that may go to the primary by chance is woken by a primary.)
    """
    if snapshot.primaries and (not read_only or fallback_master or master_as_replica_weight > 0):
        return True
    if not read_only:
        return False
    if rule is None:
        return bool(snapshot.replicas)
    return any(serves(replica, rule) for replica in snapshot.replicas)


class AbstractBalancerPolicy(abc.ABC):
    """Picks one host among the eligible ones. Subclass and write :meth:`choose`."""

    def pick(
        self,
        snapshot: TopologySnapshot,
        *,
        read_only: bool,
        fallback_master: bool = False,
        master_as_replica_weight: float = 0.0,
        free_size: FreeSize,
        rule: ReadRule | None = None,
    ) -> HostState | None:
        if read_only:
            candidates = _eligible(snapshot, True, fallback_master, master_as_replica_weight, rule)
        else:
            candidates = snapshot.primaries  # a write: the primary, nothing to weigh
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self.choose(candidates, free_size)

    @abc.abstractmethod
    def choose(self, candidates: Sequence[HostState], free_size: FreeSize) -> HostState:
        """Pick one of ``candidates`` (never empty, at least two)."""


class GreedyBalancerPolicy(AbstractBalancerPolicy):
    """The host whose pool has the most free connections; random among ties.

    With every pool full, the one with the shortest queue of acquires: free
    size counts queued acquires as negative, so waiting callers spread evenly
    instead of piling up on one host while another's connections sit idle.
    """

    def choose(self, candidates: Sequence[HostState], free_size: FreeSize) -> HostState:
        # This runs on every read: plain code, and the common case of two
        # replicas without a loop.
        if len(candidates) == 2:
            first, second = candidates
            difference = free_size(first) - free_size(second)
            if difference:
                return first if difference > 0 else second
            return first if random.random() < 0.5 else second
        best = [candidates[0]]
        most = free_size(candidates[0])
        for host in candidates[1:]:
            size = free_size(host)
            if size > most:
                most, best = size, [host]
            elif size == most:
                best.append(host)
        return best[0] if len(best) == 1 else best[int(random.random() * len(best))]


class RandomWeightedBalancerPolicy(AbstractBalancerPolicy):
    """Random, each host weighted by the inverse of its median probe time.

    A host twice as slow to answer the probe gets half the traffic. Until every
    candidate has a measured latency all weigh the same.
    """

    def choose(self, candidates: Sequence[HostState], free_size: FreeSize) -> HostState:
        latencies = [host.latency for host in candidates]
        if any(latency is None or latency <= 0 for latency in latencies):
            return random.choice(candidates)
        weights = [1.0 / latency for latency in latencies if latency is not None]
        return random.choices(candidates, weights=weights, k=1)[0]


class RoundRobinBalancerPolicy(AbstractBalancerPolicy):
    """Each eligible host in turn.

    One counter per set of candidates, so reads and writes each rotate
    evenly, and a host leaving or joining starts a fresh rotation.
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[int, ...], itertools.count[int]] = {}

    def choose(self, candidates: Sequence[HostState], free_size: FreeSize) -> HostState:
        key = tuple(host.index for host in candidates)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = itertools.count()
        return candidates[next(counter) % len(candidates)]


class LeastLagBalancerPolicy(AbstractBalancerPolicy):
    """The eligible host least behind the primary (in WAL bytes); the freest among ties.

    The primary, when eligible, is behind nobody. A replica whose lag cannot be
    measured counts as furthest behind.
    """

    def choose(self, candidates: Sequence[HostState], free_size: FreeSize) -> HostState:
        def behind(host: HostState) -> tuple[int, int]:
            if host.role is HostRole.PRIMARY:
                lag = 0
            else:
                lag = host.lag_bytes if host.lag_bytes is not None else sys.maxsize
            return lag, -free_size(host)

        return min(candidates, key=behind)


__all__ = [
    "AbstractBalancerPolicy",
    "FreeSize",
    "GreedyBalancerPolicy",
    "LeastLagBalancerPolicy",
    "RandomWeightedBalancerPolicy",
    "RoundRobinBalancerPolicy",
    "eligible_hosts",
]
