"""What an acquire asks for: the caller's arguments and context, resolved once.

Every face (the async manager, the blocking one) takes the same arguments for
an acquire: ``read_only``, ``fallback_master``, ``master_as_replica_weight``,
the lag bounds and ``after``, plus what the caller's context says (a pin of
the cluster, a read-your-writes scope). :func:`resolve_read` turns them into
one :class:`ReadRequest`, and :func:`check_write_arguments` refuses the
arguments a write cannot take, so both faces decide alike and a face only
carries the request out, with its own blocking or awaiting.

A read with no argument of its own, in no scope and unpinned (the common case)
gets the manager's :attr:`ReadDefaults.request` itself: no object is built on
that path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import arguments
from .consistency import current_scope
from .pinning import reads_go_to_primary
from .reads import ReadRule
from .tokens import WriteToken


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Where a read may go: the primary only, or replicas under these terms."""

    #: Pinned, in a ``use_primary()`` block, or after a write that left no token.
    to_primary: bool
    fallback_master: bool = False
    master_as_replica_weight: float = 0.0
    #: Lag bounds, ``None`` for none.
    rule: ReadRule | None = None
    #: A write the read must see (passed, or the scope's last one).
    after: WriteToken | None = None


#: The request of a read that only the primary may serve.
TO_PRIMARY = ReadRequest(to_primary=True)


@dataclass(frozen=True, slots=True)
class ReadDefaults:
    """A manager's own terms for reads, checked once at its construction."""

    fallback_master: bool
    master_as_replica_weight: float
    rule: ReadRule | None
    request: ReadRequest = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "request",
            ReadRequest(
                to_primary=False,
                fallback_master=self.fallback_master,
                master_as_replica_weight=self.master_as_replica_weight,
                rule=self.rule,
            ),
        )


def check_write_arguments(
    master_as_replica_weight: Any, max_lag_bytes: Any, max_lag_seconds: Any, after: Any
) -> None:
    """Refuse, by name, the read-only arguments passed to a write."""
    if master_as_replica_weight is not None:
        raise ValueError("master_as_replica_weight is used only when read_only is True")
    if max_lag_bytes is not None or max_lag_seconds is not None or after is not None:
        raise ValueError("max_lag_bytes, max_lag_seconds and after are for reads only")


def resolve_read(
    cluster: str,
    defaults: ReadDefaults,
    fallback_master: bool | None,
    master_as_replica_weight: float | None,
    max_lag_bytes: int | None,
    max_lag_seconds: float | None,
    after: WriteToken | None,
) -> ReadRequest:
    """The request of a read of cluster ``cluster`` with these arguments, here and now.

    Pins and ``use_primary()`` blocks (:mod:`pgrouter.routing.pinning`) send it
    to the primary; so does a read-your-writes scope whose write left no
    token. Otherwise the scope's last write token, unless ``after`` names one,
    is what the read must see. Arguments are checked by name.
    """
    if reads_go_to_primary(cluster):
        return TO_PRIMARY
    if after is None:
        scope = current_scope()
        if scope is not None:
            if scope.unknown_write:
                return TO_PRIMARY  # a write in this scope left no token: only the primary is sure
            after = scope.token
    elif not isinstance(after, WriteToken):
        raise TypeError(f"after must be a pgrouter.WriteToken, got {type(after).__name__}")
    if (
        fallback_master is None
        and master_as_replica_weight is None
        and max_lag_bytes is None
        and max_lag_seconds is None
        and after is None
    ):
        return defaults.request
    rule = defaults.rule
    if max_lag_bytes is not None or max_lag_seconds is not None:
        rule = arguments.read_rule(max_lag_bytes, max_lag_seconds)
    return _request(defaults, fallback_master, master_as_replica_weight, rule, after)


def resolve_pool_pick(
    cluster: str,
    defaults: ReadDefaults,
    read_only: bool,
    fallback_master: bool | None,
    master_as_replica_weight: float | None,
    max_lag_bytes: int | None,
    max_lag_seconds: float | None,
) -> ReadRequest:
    """What ``get_pool()`` asks for: as :func:`resolve_read`, without a wait or a token.

    hasql's ``get_pool()`` weighs the primary at 0 unless told otherwise, and
    honours lag bounds and pins; a write, or a pinned read, is the primary's.
    """
    weight = 0.0 if master_as_replica_weight is None else master_as_replica_weight
    rule = defaults.rule
    if max_lag_bytes is not None or max_lag_seconds is not None:
        rule = arguments.read_rule(max_lag_bytes, max_lag_seconds)
    request = _request(defaults, fallback_master, weight, rule, None)
    if not read_only or reads_go_to_primary(cluster):
        return ReadRequest(to_primary=True, fallback_master=request.fallback_master)
    return request


def _request(
    defaults: ReadDefaults,
    fallback_master: bool | None,
    master_as_replica_weight: float | None,
    rule: ReadRule | None,
    after: WriteToken | None,
) -> ReadRequest:
    return ReadRequest(
        to_primary=False,
        fallback_master=(
            defaults.fallback_master
            if fallback_master is None
            else arguments.flag("fallback_master", fallback_master)
        ),
        master_as_replica_weight=(
            defaults.master_as_replica_weight
            if master_as_replica_weight is None
            else arguments.weight("master_as_replica_weight", master_as_replica_weight)
        ),
        rule=rule,
        after=after,
    )


__all__ = [
    "TO_PRIMARY",
    "ReadDefaults",
    "ReadRequest",
    "check_write_arguments",
    "resolve_pool_pick",
    "resolve_read",
]
