"""The cluster's topology as immutable data, and the board that publishes it.

Only host checkers write: each finished check replaces the whole snapshot.
Balancers and waiters only read. Waiting for a primary is awaiting the next
snapshot (an event the board sets on publish), never sleeping in a loop.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import sys
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from .alarms import AlarmClock
from .bounded import wait_event
from .dsn import HostDsn
from .wal_history import WalHistory


class HostRole(enum.Enum):
    """What a host was found to be at its last check."""

    UNKNOWN = "unknown"  # not checked yet, or the last check failed
    PRIMARY = "primary"
    REPLICA = "replica"

    # Members are singletons compared by identity: hash them in C, not through
    # Enum's Python-level __hash__ (roles key the waits parked on every pool).
    __hash__ = object.__hash__


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
    # A primary's current timeline (split-brain tie breaker); a replica's streamed
    # one where its role may see it (pg_read_all_stats), else None.
    timeline: int | None = None
    server_started_at: float | None = None  # a change means the server restarted
    system_identifier: int | None = None  # the cluster's (replicas share it)
    server_port: int | None = None  # the port the server listens on, however reached
    last_error: str | None = None  # why the last check failed (redacted), None if it passed
    checked_at: float | None = None  # time.monotonic() of the last finished check
    check_count: int = 0  # finished checks, pass or fail
    # A replica's lag, set by the board on every publish (None: not a replica,
    # or not measurable, as on another timeline). See wal_history.py.
    lag_bytes: int | None = None
    lag_seconds: float | None = None

    @property
    def address(self) -> str:
        return self.dsn.address

    @property
    def server_key(self) -> tuple[int, float, int | None] | None:
        """Names the server behind this host: two DSN entries with one key are one server.

        The system identifier alone is shared by a primary and its replicas;
        with the postmaster's start time (microseconds) and the port it listens
        on (its setting, the same through any address or its unix socket) it
        tells servers apart, also two replicas of one machine started at once.
        """
        if self.system_identifier is None or self.server_started_at is None:
            return None
        return (self.system_identifier, self.server_started_at, self.server_port)

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
        lag = ""
        if self.lag_bytes is not None:
            lag = f", lag {self.lag_bytes} B"
            if self.lag_seconds is not None:
                lag += f" / {self.lag_seconds:.2f} s"
        return f"{self.address}: {self.role.value}{latency}{lag}{suspect}"


@dataclass(frozen=True)
class TopologySnapshot:
    """Every host's state at one moment. Replaced as a whole, never mutated."""

    hosts: tuple[HostState, ...]
    version: int = 0
    created_at: float = field(default_factory=time.monotonic)
    #: The newest timeline any primary of this cluster was seen on (by this
    #: board, over its life): a primary on an older one was superseded.
    newest_timeline: int | None = None
    #: Hosts that were the write target and lost it to another host (see
    #: :class:`TopologyBoard`): their connections are cut, they get no work,
    #: until they are seen as replicas again.
    superseded: frozenset[int] = frozenset()

    def __iter__(self) -> Iterator[HostState]:
        return iter(self.hosts)

    @functools.cached_property
    def aliases(self) -> dict[int, int]:
        """Host index -> index of the earlier DSN entry naming the same server.

        One server listed under two names (``localhost`` and ``127.0.0.1``, a
        service name beside node names) is one server: the first name serves
        it, the others get no work of their own and are no split brain.
        """
        first: dict[tuple[int, float, int | None], int] = {}
        aliases: dict[int, int] = {}
        for host in self.hosts:
            key = host.server_key if host.healthy else None
            if key is None:
                continue
            if key in first:
                aliases[host.index] = first[key]
            else:
                first[key] = host.index
        return aliases

    @functools.cached_property
    def claimed_primaries(self) -> list[HostState]:
        """Every server (not name) healthy and not in recovery; more than one is a split brain."""
        aliases = self.aliases
        return [host for host in self.hosts if host.claims_primary and host.index not in aliases]

    @functools.cached_property
    def primaries(self) -> list[HostState]:
        """The primary writes go to: at most one, even in a split brain.

        Rule when several hosts claim primary: the highest timeline wins (a
        promotion starts a new timeline, so an old primary that came back
        without being demoted loses), then the first in DSN order. A claimant
        on a timeline older than the newest one seen, or one superseded as
        write target, never gets writes, even alone: it is an old primary
        back from a freeze or a crash whose successor is out of sight, and
        its writes would be lost at the next rewind. The losers are fenced:
        no reads, no writes, until they rejoin as replicas.
        """
        newest = self.newest_timeline
        claimed = [
            host
            for host in self.claimed_primaries
            if host.index not in self.superseded
            and (newest is None or host.timeline is None or host.timeline >= newest)
        ]
        if len(claimed) <= 1:
            return claimed
        return [max(claimed, key=lambda host: (host.timeline or -1, -host.index))]

    @functools.cached_property
    def fenced(self) -> list[HostState]:
        """Hosts claiming primary that lost the split-brain rule (or were superseded)."""
        winners = self.primaries
        return [host for host in self.claimed_primaries if host not in winners]

    @property
    def split_brain(self) -> bool:
        return len(self.claimed_primaries) > 1

    @functools.cached_property
    def replicas(self) -> list[HostState]:
        aliases = self.aliases
        return [
            host
            for host in self.hosts
            if host.healthy and host.role is HostRole.REPLICA and host.index not in aliases
        ]

    @functools.cached_property
    def replica_indices(self) -> frozenset[int]:
        return frozenset(host.index for host in self.replicas)

    @functools.cached_property
    def unusable(self) -> frozenset[int]:
        """Hosts whose connections must not be reset through their socket, only cut.

        Down (its last check failed), fenced, or superseded: a release that
        talks to such a server may wait on a dead socket, or let a stale
        primary acknowledge something.
        """
        fenced = {host.index for host in self.fenced}
        down = {host.index for host in self.hosts if not host.healthy and host.check_count}
        return frozenset(fenced | down | self.superseded)

    def is_primary(self, host: HostState) -> bool:
        return any(primary.index == host.index for primary in self.primaries)

    def is_replica(self, host: HostState) -> bool:
        return host.index in self.replica_indices

    def replication_lag_bytes(self, host: HostState) -> int | None:
        """How far a replica's replay is behind the primary, in WAL bytes.

        Both positions come from checks made at slightly different times, so
        this is an estimate good to about one check interval of traffic.
        While no primary is reachable: against the last position seen.
        """
        return self.hosts[host.index].lag_bytes

    def replication_lag_seconds(self, host: HostState) -> float | None:
        """How long ago the primary was where this replica is now, in seconds.

        Estimated from the primary's positions over time (:mod:`pgrouter.wal_history`),
        to one check interval. Stays near 0 on an idle primary with caught-up
        replicas. While no primary is reachable it grows with the time since
        one was last seen: the primary may have written since, unseen.
        """
        return self.hosts[host.index].lag_seconds

    def follows_another_timeline(self, host: HostState) -> bool:
        """True when a replica is known to stream a timeline other than the primary's.

        It follows a fenced or superseded host (or has not switched yet):
        positions on two timelines are not comparable, so it has no lag.
        Unknown (the role may not read the WAL receiver) is False.
        """
        primaries = self.primaries
        if not primaries or host.role is not HostRole.REPLICA or host.timeline is None:
            return False
        return primaries[0].timeline is not None and host.timeline != primaries[0].timeline

    def describe(self) -> str:
        return "; ".join(self.describe_host(host) for host in self.hosts)

    def describe_host(self, host: HostState) -> str:
        line = host.describe()
        if host.index in self.aliases:
            line += f" (same server as {self.hosts[self.aliases[host.index]].address})"
        elif host in self.fenced:
            if self.primaries:
                winner = self.primaries[0]
                line += (
                    f" FENCED (split brain: timeline {host.timeline} vs {winner.timeline}"
                    f" of {winner.address})"
                )
            else:
                line += (
                    f" FENCED (superseded: timeline {host.timeline},"
                    f" newest seen {self.newest_timeline})"
                )
        elif host.index in self.superseded and host.healthy:
            line += " (superseded primary)"
        elif self.follows_another_timeline(host):
            line += f" (follows timeline {host.timeline}, not the primary's)"
        return line


def serves(snapshot: TopologySnapshot, index: int, role: HostRole) -> bool:
    """True while ``snapshot`` has host ``index`` healthy in ``role`` and not cut off."""
    now = snapshot.hosts[index]
    return now.healthy and now.role is role and index not in snapshot.unusable


def checked_since(host: HostState, snapshot: TopologySnapshot) -> bool:
    """True once ``snapshot`` holds a newer check of ``host`` than ``host`` itself."""
    return snapshot.hosts[host.index].check_count > host.check_count


def newly_cut(old: TopologySnapshot, new: TopologySnapshot) -> frozenset[int]:
    """Hosts superseded or fenced in ``new`` and not in ``old``: every face cuts their
    connections (borrowed ones too) the instant it sees them."""
    before = old.superseded.union(host.index for host in old.fenced)
    return new.superseded.union(host.index for host in new.fenced) - before


def newly_failed(old: TopologySnapshot, new: TopologySnapshot) -> list[int]:
    """Hosts whose check failed between ``old`` and ``new``: their pools are stale."""
    return [
        host.index
        for host in new.hosts
        if host.check_count > old.hosts[host.index].check_count and host.last_error is not None
    ]


class TopologyBoard:
    """Holds the current snapshot and wakes everyone waiting for the next one."""

    def __init__(self, dsns: Sequence[HostDsn]) -> None:
        self._snapshot = TopologySnapshot(
            hosts=tuple(HostState(index=i, dsn=dsn) for i, dsn in enumerate(dsns))
        )
        self._changed = asyncio.Event()
        # The host writes went to last (kept while no host is primary), and its
        # positions over time, for lag in seconds.
        self._writer: int | None = None
        self._history = WalHistory()
        self._listeners: list[Callable[[TopologySnapshot, TopologySnapshot], None]] = []
        # Waiting rooms (see wait_for): room key -> (predicate, its waiters' futures),
        # and one loop timer for all their deadlines.
        self._rooms: dict[
            Hashable,
            tuple[Callable[[TopologySnapshot], bool], set[asyncio.Future[None]]],
        ] = {}
        self._alarms = AlarmClock()

    @property
    def current(self) -> TopologySnapshot:
        return self._snapshot

    def listen(self, listener: Callable[[TopologySnapshot, TopologySnapshot], None]) -> None:
        """Call ``listener(old, new)`` synchronously on every publish, before waiters wake.

        For what must happen in the same instant as the change (cutting a
        superseded primary's connections), not a loop iteration later. A bound
        method is held weakly: the checks, which hold the board, must not keep
        alive a manager its owner dropped (it warns, and stops them, when
        collected).
        """
        if hasattr(listener, "__self__"):
            weak = weakref.WeakMethod(listener)  # type: ignore[arg-type]

            def call(old: TopologySnapshot, new: TopologySnapshot) -> None:
                method = weak()
                if method is not None:
                    method(old, new)

            self._listeners.append(call)
        else:
            self._listeners.append(listener)

    def publish(self, state: HostState) -> TopologySnapshot:
        """Replace one host's state; wake every waiter with the new snapshot.

        Also decides which hosts are superseded: the host writes went to
        loses that title, for good, once another host is the write target
        (a newer timeline won, or the writer was fenced, or it went down and
        another became primary). A writer that is merely down or slow, with
        no other primary in sight, is not superseded: its in-flight work may
        still finish. A superseded host is forgiven once seen as a replica.
        """
        old = self._snapshot
        hosts = list(old.hosts)
        hosts[state.index] = state
        newest = old.newest_timeline
        for host in hosts:
            if host.claims_primary and host.timeline is not None:
                newest = host.timeline if newest is None else max(newest, host.timeline)
        superseded = {
            index for index in old.superseded if hosts[index].role is not HostRole.REPLICA
        }
        new = TopologySnapshot(
            hosts=tuple(hosts),
            version=old.version + 1,
            newest_timeline=newest,
            superseded=frozenset(superseded),
        )
        writer = new.primaries[0].index if new.primaries else None
        if writer is not None and writer != self._writer:
            previous = None if self._writer is None else hosts[self._writer]
            if (
                previous is not None
                and previous.index not in superseded
                and (
                    previous.server_key is None
                    or previous.server_key != new.primaries[0].server_key
                )
            ):
                superseded.add(previous.index)
                new = TopologySnapshot(
                    hosts=new.hosts,
                    version=new.version,
                    newest_timeline=newest,
                    superseded=frozenset(superseded),
                )
            self._writer = writer
            self._history.clear()
        new = self._with_lags(new, state)
        self._snapshot = new
        for listener in self._listeners:
            listener(old, new)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._rooms:
            # One evaluation per room, not per waiter: a room's waiters wake
            # only on a snapshot that can serve them.
            for key, (predicate, waiters) in list(self._rooms.items()):
                if predicate(new):
                    del self._rooms[key]
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        return new

    def update(self, index: int, **changes: object) -> TopologySnapshot:
        return self.publish(replace(self._snapshot.hosts[index], **changes))  # type: ignore[arg-type]

    def _with_lags(self, snapshot: TopologySnapshot, checked: HostState) -> TopologySnapshot:
        """``snapshot`` with every replica's lag, after recording the writer's new position."""
        primaries = snapshot.primaries
        writer = primaries[0] if primaries else None
        if (
            writer is not None
            and writer.index == checked.index
            and writer.wal_lsn is not None
            and writer.checked_at is not None
        ):
            self._history.record(writer.checked_at, writer.wal_lsn)
        latest = self._history.latest
        hosts = list(snapshot.hosts)
        changed = False
        for host in snapshot.hosts:
            lag_bytes, lag_seconds = None, None
            if (
                host.index in snapshot.replica_indices
                and host.wal_lsn is not None
                and latest is not None
                and not snapshot.follows_another_timeline(host)
            ):
                at = host.checked_at if host.checked_at is not None else latest[0]
                # Against where the primary was when the replica was checked, not
                # where it is now: the writes between two checks are not lag.
                reference = self._history.position_at(at)
                lag_bytes = max(0, (latest[1] if reference is None else reference) - host.wal_lsn)
                lag_seconds = self._history.lag_seconds(host.wal_lsn, at)
                last_seen = self._history.last_seen
                if writer is None and lag_seconds is not None and last_seen is not None:
                    # Unseen writes may have happened since the primary's last check.
                    lag_seconds += max(0.0, at - last_seen)
            if (lag_bytes, lag_seconds) != (host.lag_bytes, host.lag_seconds):
                hosts[host.index] = replace(host, lag_bytes=lag_bytes, lag_seconds=lag_seconds)
                changed = True
        if not changed:
            return snapshot
        return TopologySnapshot(
            hosts=tuple(hosts),
            version=snapshot.version,
            newest_timeline=snapshot.newest_timeline,
            superseded=snapshot.superseded,
        )

    async def wait_for(
        self,
        predicate: Callable[[TopologySnapshot], bool],
        timeout: float | None,
        *,
        room: Hashable | None = None,
    ) -> TopologySnapshot:
        """Return the first snapshot (current or future) that satisfies ``predicate``.

        Raises ``asyncio.TimeoutError`` when none does within ``timeout``.

        ``room``: waiters that pass the same key promise the same predicate.
        They share one waiting room, whose predicate the board evaluates once
        per publish, waking them only when it holds: ten thousand acquires
        waiting for a primary cost one check per snapshot, not ten thousand.
        Without a room, the waiter evaluates its own predicate on every snapshot.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if room is not None:
            return await self._wait_in_room(room, predicate, deadline)
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

    async def _wait_in_room(
        self,
        room: Hashable,
        predicate: Callable[[TopologySnapshot], bool],
        deadline: float | None,
    ) -> TopologySnapshot:
        """A future per waiter, woken by the room; one loop timer for every deadline."""
        loop = asyncio.get_running_loop()
        while True:
            snapshot = self._snapshot
            if predicate(snapshot):
                return snapshot
            if deadline is not None and deadline <= loop.time():
                raise asyncio.TimeoutError
            entry = self._rooms.get(room)
            if entry is None:
                entry = self._rooms[room] = (predicate, set())
            waiter = loop.create_future()
            entry[1].add(waiter)
            try:
                if deadline is None or sys.version_info >= (3, 11):
                    with self._alarms.timeout_at(deadline):
                        await waiter
                else:  # 3.10: no Task.uncancel(), so no alarm clock (see alarms.py)
                    await asyncio.wait_for(waiter, deadline - loop.time())
            finally:
                entry[1].discard(waiter)
