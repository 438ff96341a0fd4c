"""Read-your-writes: the scope that carries a write's token to the reads after it.

``with pgrouter.read_your_writes():`` opens a scope (a request, a task): every
primary connection given back inside it records a :class:`WriteToken` (one
extra query, only inside a scope), and every read inside it asks for a host
that has replayed the newest one. With ``monotonic=True`` a replica read also
records the position it read at, so reads in the scope never go back in time.
:func:`current_token` gives the token to carry elsewhere (a cookie, a task's
headers); :func:`route_for_token` is the decision every face makes for a read
that carries one.

The scope lives in a :class:`~contextvars.ContextVar`: a task or thread
outside it never sees it. Tasks created *inside* the scope share it, by
design: the scope is one unit of work, and a write in a child task must be
seen by the reads that follow it in the parent. A nested scope starts with
the outer scope's token and hands its own back to the outer scope when it ends.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..driver import parse_lsn
from ..topology import TopologySnapshot
from .reads import ANY_REPLICA, ReadRule, format_lsn, serves
from .tokens import WRITE_TOKEN_QUERY, WriteToken, newest, token_from_row


class ReadYourWrites:
    """One read-your-writes scope: the newest token seen in it.

    ``unknown_write`` is set when a write in the scope could not be given a
    token (the query failed): the scope's reads then go to the primary, the
    one host sure to have it.
    """

    __slots__ = ("monotonic", "token", "unknown_write")

    def __init__(self, monotonic: bool, token: WriteToken | None = None) -> None:
        self.monotonic = monotonic
        self.token = token
        self.unknown_write = False

    def remember(self, token: WriteToken) -> None:
        self.token = newest(self.token, token)

    def __repr__(self) -> str:
        return f"<ReadYourWrites token={self.token} monotonic={self.monotonic}>"


_scope: contextvars.ContextVar[ReadYourWrites | None] = contextvars.ContextVar(
    "pgrouter_read_your_writes", default=None
)

#: The manager asks this on every release: no scope, no cost beyond the lookup.
current_scope = _scope.get


@contextmanager
def read_your_writes(monotonic: bool = False) -> Iterator[ReadYourWrites]:
    """A scope in which reads see the writes made before them (see the module docstring)."""
    outer = _scope.get()
    scope = ReadYourWrites(
        monotonic or (outer is not None and outer.monotonic),
        None if outer is None else outer.token,
    )
    scope.unknown_write = outer is not None and outer.unknown_write
    reset = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(reset)
        if outer is not None:
            if scope.token is not None:
                outer.remember(scope.token)
            outer.unknown_write |= scope.unknown_write


def current_token() -> WriteToken | None:
    """The newest token of the current scope, ``None`` outside one (or before a write)."""
    scope = _scope.get()
    return None if scope is None else scope.token


class TokenRoute(enum.Enum):
    """How a read that carries a token is served."""

    IGNORE = "ignore"  # a token of another cluster: read as if it had none
    REPLICA = "replica"  # a replica that has replayed it (or may, within causal_wait)
    PRIMARY = "primary"  # only the primary can be trusted to have it


def route_for_token(snapshot: TopologySnapshot, token: WriteToken) -> TokenRoute:
    """Where a read after ``token`` may go, on ``snapshot``.

    - Another cluster (its system identifier is not this one's): the token
      says nothing about this cluster, so the read goes as if it had none.
      It never waits for a position this cluster will never have.
    - An older timeline than the primary's (the write was made before a
      failover): whether it survived the failover is the primary's to say;
      replica positions on the new timeline do not compare. The primary.
    - A newer timeline than the primary's known one: only the primary
      (once checked again) can have it. The primary.
    - Otherwise a replica: one already past it, or one asked on its own
      connection for up to ``causal_wait``, then the primary. A token ahead of
      every position (forged, or of a write not yet checked) ends there too:
      it costs at most ``causal_wait``, never a hang or an error.
    """
    system_identifier = next(
        (host.system_identifier for host in snapshot if host.healthy and host.system_identifier),
        None,
    )
    if system_identifier is not None and not token.is_from(system_identifier):
        return TokenRoute.IGNORE
    primaries = snapshot.primaries
    timeline = primaries[0].timeline if primaries else snapshot.newest_timeline
    if timeline is not None and token.timeline != timeline:
        return TokenRoute.PRIMARY
    return TokenRoute.REPLICA


@dataclass(frozen=True)
class TokenReadPlan:
    """The steps of a read after a token, as every face takes them.

    ``first``: the rule for a replica already past the token (``None``: no
    such replica now). ``nearest``: else the rule for the replica nearest to
    it, to be asked on its own connection up to ``causal_wait`` (``None``: no
    replica at all). Either failing, the primary. ``ignore``: read as if the
    token were not there (it is of another cluster).
    """

    ignore: bool = False
    first: ReadRule | None = None
    nearest: ReadRule | None = None

    @property
    def primary_only(self) -> bool:
        return not self.ignore and self.first is None and self.nearest is None


def plan_token_read(
    snapshot: TopologySnapshot, token: WriteToken, rule: ReadRule | None
) -> TokenReadPlan:
    """How a read after ``token`` is served on ``snapshot`` (see :func:`route_for_token`)."""
    route = route_for_token(snapshot, token)
    if route is TokenRoute.IGNORE:
        return TokenReadPlan(ignore=True)
    if route is TokenRoute.PRIMARY:
        return TokenReadPlan()
    base = rule or ANY_REPLICA
    positions = [
        replica.wal_lsn
        for replica in snapshot.replicas
        if replica.wal_lsn is not None and serves(replica, base)
    ]
    if not positions:
        return TokenReadPlan()
    if max(positions) >= token.lsn:
        return TokenReadPlan(first=base.at_least(token.lsn))
    # The replicas nearest the token are the likeliest to reach it soon: those
    # within NEAR_SECONDS of the least lagging one, spread by the balancer (a
    # paused or far-behind replica is not asked to wait).
    lags = [
        replica.lag_seconds
        for replica in snapshot.replicas
        if replica.lag_seconds is not None and serves(replica, base)
    ]
    if not lags:
        return TokenReadPlan(nearest=base.at_least(max(positions)))
    near = min(lags) + NEAR_SECONDS
    if base.max_lag_seconds is not None:
        near = min(near, base.max_lag_seconds)
    return TokenReadPlan(nearest=replace(base, max_lag_seconds=near))


def replayed_query(token: WriteToken) -> str:
    """Asked on a replica's connection: has it replayed ``token``? (one boolean)"""
    return f"SELECT pg_last_wal_replay_lsn() >= '{format_lsn(token.lsn)}'::pg_lsn"


#: A replica's replayed position: a monotonic scope's floor for its later reads.
REPLAY_POSITION_QUERY = "SELECT pg_last_wal_replay_lsn()::text"
_UINT64 = (1 << 64) - 1


def position_query(
    scope: ReadYourWrites, snapshot: TopologySnapshot, index: int, read_on_primary: bool
) -> str | None:
    """What to ask a connection given back to host ``index`` so ``scope`` knows where it is.

    On the primary, the write's token (not after a read the primary served:
    it wrote nothing). On a replica, in a ``monotonic`` scope, its replayed
    position, a floor for the scope's later reads; it is a token only with the
    cluster's identity and the primary's timeline known. Otherwise nothing:
    ``None``. Both faces ask this, and record the answer with
    :func:`note_position`.
    """
    host = snapshot.hosts[index]
    if snapshot.is_primary(host):
        return None if read_on_primary else WRITE_TOKEN_QUERY
    if (
        scope.monotonic
        and snapshot.is_replica(host)
        and host.system_identifier is not None
        and snapshot.primaries
        and snapshot.primaries[0].timeline is not None
    ):
        return REPLAY_POSITION_QUERY
    return None


def note_position(
    scope: ReadYourWrites,
    snapshot: TopologySnapshot,
    index: int,
    query: str,
    row: Sequence[Any] | None,
) -> None:
    """Record in ``scope`` what ``query`` (:func:`position_query`) answered on host ``index``."""
    if query == WRITE_TOKEN_QUERY:
        scope.remember(token_from_row(row or ()))
        return
    lsn = parse_lsn(row[0] if row else None)
    host = snapshot.hosts[index]
    timeline = snapshot.primaries[0].timeline if snapshot.primaries else None
    if lsn is not None and host.system_identifier is not None and timeline is not None:
        scope.remember(WriteToken(host.system_identifier & _UINT64, timeline, lsn))


def position_lost(scope: ReadYourWrites, snapshot: TopologySnapshot, index: int) -> None:
    """The position query failed. On the primary the write may have landed unseen:
    only the primary can then be trusted with the scope's reads."""
    if snapshot.is_primary(snapshot.hosts[index]):
        scope.unknown_write = True


#: How reads with a write token were served, as the managers count them
#: (``token_read_counts``).
TOKEN_READ_KINDS = ("replica", "replica_after_wait", "primary", "ignored")


#: A read after a token that no replica covers yet waits on a replica at most this
#: far (seconds) behind the least lagging one.
NEAR_SECONDS = 1.0
#: A read after a token asks its replica again after this long, doubling up to the max.
CAUSAL_POLL_FIRST = 0.002
CAUSAL_POLL_MAX = 0.05


__all__ = [
    "CAUSAL_POLL_FIRST",
    "CAUSAL_POLL_MAX",
    "REPLAY_POSITION_QUERY",
    "TOKEN_READ_KINDS",
    "ReadYourWrites",
    "TokenReadPlan",
    "TokenRoute",
    "current_scope",
    "current_token",
    "note_position",
    "plan_token_read",
    "position_lost",
    "position_query",
    "read_your_writes",
    "replayed_query",
    "route_for_token",
]
