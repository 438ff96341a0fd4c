"""The cluster's topology as immutable data, and the board that publishes it.

Only host checkers write: each finished check replaces the whole snapshot.
Balancers and waiters only read. Waiting for a primary is awaiting the next
snapshot (an event the board sets on publish), never sleeping in a loop.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from .bounded import wait_event
from .dsn import HostDsn


class HostRole(enum.Enum):
    """What a host was found to be at its last check."""

    UNKNOWN = "unknown"  # not checked yet, or the last check failed
    PRIMARY = "primary"
    REPLICA = "replica"


@dataclass(frozen=True)
class HostState:
    """One host as its checker last saw it.

    ``healthy`` means the last check succeeded *and* the host's pool is open,
    so the balancer may hand out its connections.
    """

    index: int
    dsn: HostDsn
    role: HostRole = HostRole.UNKNOWN
    healthy: bool = False
    suspect: bool = False  # healthy, but its check has been outstanding far longer than usual
    latency: float | None = None  # median probe time over the stopwatch window, seconds
    last_latency: float | None = None  # the last probe alone, seconds
    wal_lsn: int | None = None  # primary: current WAL position; replica: replayed position
    timeline: int | None = None  # a primary's current timeline (split-brain tie breaker)
    server_started_at: float | None = None  # a change means the server restarted
    last_error: str | None = None  # why the last check failed (redacted), None if it passed
    checked_at: float | None = None  # time.monotonic() of the last finished check
    check_count: int = 0  # finished checks, pass or fail

    @property
    def address(self) -> str:
        return self.dsn.address

    @property
    def claims_primary(self) -> bool:
        """Healthy and not in recovery; :attr:`TopologySnapshot.primaries` has the final say."""
        return self.healthy and self.role is HostRole.PRIMARY

    @property
    def is_replica(self) -> bool:
        return self.healthy and self.role is HostRole.REPLICA

    def describe(self) -> str:
        """One line for error messages and the CLI: where it is and why it is (un)usable."""
        if self.check_count == 0:
            return f"{self.address}: not checked yet"
        if self.last_error is not None:
            return f"{self.address}: down ({self.last_error})"
        if not self.healthy:
            return f"{self.address}: {self.role.value}, pool not open yet"
        latency = f", {self.latency * 1000:.1f} ms" if self.latency is not None else ""
        suspect = ", slow to answer its check" if self.suspect else ""
        return f"{self.address}: {self.role.value}{latency}{suspect}"


@dataclass(frozen=True)
class TopologySnapshot:
    """Every host's state at one moment. Replaced as a whole, never mutated."""

    hosts: tuple[HostState, ...]
    version: int = 0
    created_at: float = field(default_factory=time.monotonic)

    def __iter__(self) -> Iterator[HostState]:
        return iter(self.hosts)

    @functools.cached_property
    def claimed_primaries(self) -> list[HostState]:
        """Every healthy host not in recovery; more than one is a split brain."""
        return [host for host in self.hosts if host.claims_primary]

    @functools.cached_property
    def primaries(self) -> list[HostState]:
        """The primary writes go to: at most one, even in a split brain.

        Rule when several hosts claim primary: the highest timeline wins (a
        promotion starts a new timeline, so an old primary that came back
        without being demoted loses), then the first in DSN order. The losers
        are fenced: no reads, no writes, until they rejoin as replicas.
        """
        claimed = self.claimed_primaries
        if len(claimed) <= 1:
            return claimed
        return [max(claimed, key=lambda host: (host.timeline or -1, -host.index))]

    @property
    def fenced(self) -> list[HostState]:
        """Hosts claiming primary that lost the split-brain rule."""
        return [host for host in self.claimed_primaries if host not in self.primaries]

    @property
    def split_brain(self) -> bool:
        return len(self.claimed_primaries) > 1

    @functools.cached_property
    def replicas(self) -> list[HostState]:
        return [host for host in self.hosts if host.healthy and host.role is HostRole.REPLICA]

    def is_primary(self, host: HostState) -> bool:
        return any(primary.index == host.index for primary in self.primaries)

    def is_replica(self, host: HostState) -> bool:
        return any(replica.index == host.index for replica in self.replicas)

    def replication_lag_bytes(self, host: HostState) -> int | None:
        """How far a replica's replay is behind the primary, in WAL bytes.

        Both positions come from checks made at slightly different times, so
        this is an estimate good to about one check interval of traffic.
        """
        primaries = self.primaries
        if not self.is_replica(host) or host.wal_lsn is None or not primaries:
            return None
        primary_lsn = primaries[0].wal_lsn
        if primary_lsn is None:
            return None
        return max(0, primary_lsn - host.wal_lsn)

    def describe(self) -> str:
        return "; ".join(self.describe_host(host) for host in self.hosts)

    def describe_host(self, host: HostState) -> str:
        line = host.describe()
        if host in self.fenced:
            winner = self.primaries[0]
            line += (
                f" FENCED (split brain: timeline {host.timeline} vs {winner.timeline}"
                f" of {winner.address})"
            )
        return line

    def with_host(self, state: HostState) -> TopologySnapshot:
        hosts = list(self.hosts)
        hosts[state.index] = state
        return TopologySnapshot(hosts=tuple(hosts), version=self.version + 1)


class TopologyBoard:
    """Holds the current snapshot and wakes everyone waiting for the next one."""

    def __init__(self, dsns: Sequence[HostDsn]) -> None:
        self._snapshot = TopologySnapshot(
            hosts=tuple(HostState(index=i, dsn=dsn) for i, dsn in enumerate(dsns))
        )
        self._changed = asyncio.Event()

    @property
    def current(self) -> TopologySnapshot:
        return self._snapshot

    def publish(self, state: HostState) -> TopologySnapshot:
        """Replace one host's state; wake every waiter with the new snapshot."""
        self._snapshot = self._snapshot.with_host(state)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._snapshot

    def update(self, index: int, **changes: object) -> TopologySnapshot:
        return self.publish(replace(self._snapshot.hosts[index], **changes))  # type: ignore[arg-type]

    async def wait_for(
        self,
        predicate: Callable[[TopologySnapshot], bool],
        timeout: float | None,
    ) -> TopologySnapshot:
        """Return the first snapshot (current or future) that satisfies ``predicate``.

        Raises ``asyncio.TimeoutError`` when none does within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            # Take the event before reading the snapshot: a publish in between
            # sets this very event, so no snapshot can slip past unseen.
            changed = self._changed
            snapshot = self._snapshot
            if predicate(snapshot):
                return snapshot
            if deadline is None:
                await changed.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            await wait_event(changed, remaining)
