"""Which replicas a read may use: lag bounds and the position a token asks for.

A :class:`ReadRule` is what a read asks beyond "a replica": at most so many
bytes or seconds behind the primary, or at least at a WAL position (a write
token already replayed there). The balancer's eligibility filters replicas
through :func:`serves`; the rest of routing (primary or replicas, fallback)
is unchanged. A replica whose lag cannot be measured (no primary position
known yet, or it streams another timeline) fails every bound: a bounded read
trusts nothing it cannot measure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..topology import HostState


@dataclass(frozen=True, slots=True)
class ReadRule:
    """What a read asks of a replica besides being one (``None``: no such demand)."""

    max_lag_bytes: int | None = None
    max_lag_seconds: float | None = None
    #: A replica must be known (by its last check) to have replayed this far.
    min_lsn: int | None = None

    @property
    def is_bounded(self) -> bool:
        return self.max_lag_bytes is not None or self.max_lag_seconds is not None

    def at_least(self, lsn: int) -> ReadRule:
        """This rule, and a replica already at ``lsn`` or past it."""
        return replace(self, min_lsn=lsn)

    def describe(self) -> str:
        parts = []
        if self.max_lag_bytes is not None:
            parts.append(f"at most {self.max_lag_bytes} B behind")
        if self.max_lag_seconds is not None:
            parts.append(f"at most {self.max_lag_seconds:g} s behind")
        if self.min_lsn is not None:
            parts.append(f"replayed up to {format_lsn(self.min_lsn)}")
        return " and ".join(parts) or "any replica"


#: No demand at all: every replica serves.
ANY_REPLICA = ReadRule()


def serves(replica: HostState, rule: ReadRule) -> bool:
    """True when ``replica`` meets ``rule`` as its last check saw it."""
    if rule.max_lag_bytes is not None and (
        replica.lag_bytes is None or replica.lag_bytes > rule.max_lag_bytes
    ):
        return False
    if rule.max_lag_seconds is not None and (
        replica.lag_seconds is None or replica.lag_seconds > rule.max_lag_seconds
    ):
        return False
    return rule.min_lsn is None or (replica.wal_lsn is not None and replica.wal_lsn >= rule.min_lsn)


def format_lsn(lsn: int) -> str:
    """A byte position in PostgreSQL's ``X/Y`` form (as ``pg_lsn`` prints it)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


__all__ = ["ANY_REPLICA", "ReadRule", "format_lsn", "serves"]
