"""hasql 0.10's ``staleness`` import path: ``from pgrouter.staleness import StalenessPolicy``.

hasql's checkers query each replica for its lag. pgrouter measures lag itself
on every health check (bytes from WAL positions, seconds from the primary's
position history), so these classes only carry bounds: :func:`bounds_of`
turns ``PoolManager(..., staleness=policy)`` into the manager's own
``max_lag_bytes`` / ``max_lag_seconds``. What hasql tuned that pgrouter does
its own way is accepted, kept, and has no effect:

- ``max_master_lsn_age``: hasql fails open when its cached primary position
  is older; pgrouter measures against the last primary position it saw and
  decides by its own documented rule whether that fails open or closed.
- ``grace_period``: hasql keeps a replica that turned stale eligible for a
  while; pgrouter drops it at once, which can only mean fewer stale reads.

A bound is met when the lag is at most the bound, as in hasql (stale means
strictly more).
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "BaseStalenessChecker",
    "BytesStalenessChecker",
    "StalenessPolicy",
    "TimeStalenessChecker",
    "bounds_of",
]

_DEFAULT_MASTER_LSN_AGE = timedelta(seconds=2)


class BaseStalenessChecker:
    """The base of hasql's checkers; pgrouter maps only the two it ships.

    A subclass with its own checks is refused by :func:`bounds_of`: pgrouter
    never runs a checker's queries.
    """

    __slots__ = ()


class BytesStalenessChecker(BaseStalenessChecker):
    """A replica more than ``max_lag_bytes`` of WAL behind the primary is not read from."""

    __slots__ = ("max_lag_bytes", "max_master_lsn_age")

    def __init__(
        self,
        max_lag_bytes: int,
        max_master_lsn_age: timedelta = _DEFAULT_MASTER_LSN_AGE,
    ) -> None:
        if not isinstance(max_lag_bytes, int) or isinstance(max_lag_bytes, bool):
            raise TypeError(f"max_lag_bytes must be an int, not {type(max_lag_bytes).__name__}")
        if max_lag_bytes < 0:
            raise ValueError(f"max_lag_bytes must be >= 0, not {max_lag_bytes}")
        self.max_lag_bytes = max_lag_bytes
        self.max_master_lsn_age = _non_negative("max_master_lsn_age", max_master_lsn_age)

    def __repr__(self) -> str:
        return f"BytesStalenessChecker(max_lag_bytes={self.max_lag_bytes})"


class TimeStalenessChecker(BaseStalenessChecker):
    """A replica more than ``max_lag`` behind the primary is not read from.

    pgrouter's seconds of lag are estimated from WAL positions over time, not
    from the last replayed transaction's timestamp, so an idle primary does
    not make caught-up replicas look stale.
    """

    __slots__ = ("max_lag", "max_master_lsn_age")

    def __init__(
        self,
        max_lag: timedelta,
        max_master_lsn_age: timedelta = _DEFAULT_MASTER_LSN_AGE,
    ) -> None:
        self.max_lag = _non_negative("max_lag", max_lag)
        self.max_master_lsn_age = _non_negative("max_master_lsn_age", max_master_lsn_age)

    def __repr__(self) -> str:
        return f"TimeStalenessChecker(max_lag={self.max_lag!r})"


class StalenessPolicy:
    """What ``PoolManager(..., staleness=...)`` takes: one checker, an optional grace period."""

    __slots__ = ("checker", "grace_period")

    def __init__(
        self,
        checker: BaseStalenessChecker,
        grace_period: timedelta | None = None,
    ) -> None:
        self.checker = checker
        self.grace_period = (
            None if grace_period is None else _non_negative("grace_period", grace_period)
        )

    def __repr__(self) -> str:
        return f"StalenessPolicy({self.checker!r}, grace_period={self.grace_period!r})"


def bounds_of(policy: StalenessPolicy | None) -> tuple[int | None, float | None]:
    """``(max_lag_bytes, max_lag_seconds)`` for a manager given ``staleness=policy``.

    ``None`` (no policy) gives no bounds. Raises ``TypeError`` naming what it
    got for anything pgrouter cannot map: a checker of its own (even one
    derived from the two here: its checks would be silently skipped), a
    checker passed without its policy, or hasql's own classes (imported from
    ``hasql.staleness`` instead of ``pgrouter.staleness``).
    """
    if policy is None:
        return None, None
    if not isinstance(policy, StalenessPolicy):
        hint = (
            f"; wrap it: StalenessPolicy({type(policy).__name__}(...))"
            if isinstance(policy, BaseStalenessChecker)
            else "; import it from pgrouter.staleness"
        )
        raise TypeError(f"staleness= takes a StalenessPolicy, not {_name(policy)}{hint}")
    checker = policy.checker
    if type(checker) is BytesStalenessChecker:
        return checker.max_lag_bytes, None
    if type(checker) is TimeStalenessChecker:
        return None, checker.max_lag.total_seconds()
    raise TypeError(
        f"pgrouter cannot map staleness checker {_name(checker)}: pgrouter measures lag "
        "itself and takes bounds only; use BytesStalenessChecker(max_lag_bytes=...) or "
        "TimeStalenessChecker(max_lag=...) from pgrouter.staleness, or pass max_lag_bytes= / "
        "max_lag_seconds= to the PoolManager"
    )


def _non_negative(name: str, value: timedelta) -> timedelta:
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a datetime.timedelta, not {type(value).__name__}")
    if value < timedelta(0):
        raise ValueError(f"{name} must not be negative, not {value!r}")
    return value


def _name(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
