"""What a face waits for, and what it says when it does not come: one set of rules.

``ready()``, the ``wait_*`` helpers and an acquire that finds no host are the
same questions over a snapshot whichever face asks (the async manager awaits
the board, the blocking one waits on its monitor thread). The questions and
the error messages live here, as plain functions, so the faces only wait.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .errors import NoHostAvailableError
from .routing.reads import ReadRule
from .topology import TopologySnapshot

Predicate = Callable[[TopologySnapshot], bool]


class Readiness:
    """``ready(masters_count, replicas_count)``: what counts as ready, and its error.

    No count at all means every host healthy. ``config_error`` is asked on
    each snapshot: a driver that refused ``pool_factory_kwargs`` ends the wait
    at once (a configuration error is no outage to wait out); the face then
    raises it.
    """

    __slots__ = ("config_error", "everyone", "masters", "replicas")

    def __init__(
        self,
        masters_count: int | None,
        replicas_count: int | None,
        config_error: Callable[[], Exception | None],
    ) -> None:
        self.everyone = masters_count is None and replicas_count is None
        self.masters = masters_count or 0
        self.replicas = replicas_count or 0
        self.config_error = config_error

    def __call__(self, snapshot: TopologySnapshot) -> bool:
        if self.config_error() is not None:
            return True  # the face raises it
        if self.everyone:
            return all(host.healthy for host in snapshot)
        return len(snapshot.primaries) >= self.masters and len(snapshot.replicas) >= self.replicas

    def timed_out(self, timeout: float, snapshot: TopologySnapshot) -> NoHostAvailableError:
        wanted = (
            "every host"
            if self.everyone
            else f"{self.masters} primary(ies) and {self.replicas} replica(s)"
        )
        return NoHostAvailableError(
            f"not ready within {timeout:g} s, waiting for {wanted}; hosts: " + snapshot.describe()
        )


def one_more_check(snapshot: TopologySnapshot) -> Predicate:
    """``wait_next_pool_check()``: every host finished one more check than on ``snapshot``."""
    seen = [host.check_count for host in snapshot]
    return lambda later: all(host.check_count > seen[host.index] for host in later)


def first_checks_done(snapshot: TopologySnapshot) -> bool:
    """``wait_first_checks()``: every host has had one verdict, up or down."""
    return all(host.check_count > 0 for host in snapshot)


def raise_rejected_pool_kwargs(driver: str, error: Exception | None) -> None:
    """Raise the driver's refusal of ``pool_factory_kwargs`` (if any) as a ``TypeError``."""
    if error is not None:
        raise TypeError(
            f"pool_factory_kwargs rejected by the {driver} driver's pool: {error}"
        ) from error


def no_host_error(
    snapshot: TopologySnapshot,
    read_only: bool,
    fallback_master: bool,
    timeout: float,
    failures: Mapping[int, str],
    rule: ReadRule | None = None,
) -> NoHostAvailableError:
    """An acquire found no host in ``timeout``: what it wanted, and every host's state.

    ``failures`` says, per host index, why that host's pool gave nothing.
    """
    replica = "a replica" if rule is None else f"a replica {rule.describe()}"
    wanted = (
        replica + (" or the primary" if fallback_master else "") if read_only else "the primary"
    )
    lines = []
    for host in snapshot:
        line = host.describe()
        if host.index in failures:
            line += f" [acquire failed: {failures[host.index]}]"
        lines.append(line)
    return NoHostAvailableError(
        f"no connection to {wanted} within {timeout:g} s; hosts: " + "; ".join(lines)
    )


__all__ = [
    "Readiness",
    "first_checks_done",
    "no_host_error",
    "one_more_check",
    "raise_rejected_pool_kwargs",
]
