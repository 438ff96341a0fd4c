"""The cluster's topology as immutable data, and the board that publishes it.

Only host checkers write: each finished check replaces the whole snapshot.
Balancers and waiters only read. Waiting for a primary is awaiting the next
snapshot (an event the board sets on publish), never sleeping in a loop.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

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
    latency: float | None = None  # median probe time over the stopwatch window, seconds
    last_latency: float | None = None  # the last probe alone, seconds
    wal_lsn: int | None = None  # primary: current WAL position; replica: replayed position
    last_error: str | None = None  # why the last check failed (redacted), None if it passed
    checked_at: float | None = None  # time.monotonic() of the last finished check
    check_count: int = 0  # finished checks, pass or fail

    @property
    def address(self) -> str:
        return self.dsn.address

    @property
    def is_primary(self) -> bool:
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
        return f"{self.address}: {self.role.value}{latency}"


@dataclass(frozen=True)
class TopologySnapshot:
    """Every host's state at one moment. Replaced as a whole, never mutated."""

    hosts: tuple[HostState, ...]
    version: int = 0
    created_at: float = field(default_factory=time.monotonic)

    def __iter__(self) -> Iterator[HostState]:
        return iter(self.hosts)

    @property
    def primaries(self) -> list[HostState]:
        return [host for host in self.hosts if host.is_primary]

    @property
    def replicas(self) -> list[HostState]:
        return [host for host in self.hosts if host.is_replica]

    def replication_lag_bytes(self, host: HostState) -> int | None:
        """How far a replica's replay is behind the primary, in WAL bytes.

        Both positions come from checks made at slightly different times, so
        this is an estimate good to about one check interval of traffic.
        """
        primaries = self.primaries
        if not host.is_replica or host.wal_lsn is None or len(primaries) != 1:
            return None
        primary_lsn = primaries[0].wal_lsn
        if primary_lsn is None:
            return None
        return max(0, primary_lsn - host.wal_lsn)

    def describe(self) -> str:
        return "; ".join(host.describe() for host in self.hosts)

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
            await asyncio.wait_for(changed.wait(), remaining)
