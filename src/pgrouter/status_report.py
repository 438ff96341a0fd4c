"""What ``pgrouter status`` says about one topology snapshot: a table, JSON, an exit code.

Plain functions over a :class:`~pgrouter.topology.TopologySnapshot`, apart from
the command line, so the demo prints the same table. Everything shown comes from
the snapshot, whose addresses and errors never hold a password.
"""

from __future__ import annotations

import enum
import textwrap
from collections.abc import Callable
from typing import Any

from .topology import HostState, TopologySnapshot


class StatusExit(enum.IntEnum):
    """``pgrouter status`` exit codes, distinct so a script can tell the failures apart."""

    OK = 0
    NO_SINGLE_PRIMARY = 1
    USAGE = 2
    HOST_DOWN = 3


_MEANINGS = {
    StatusExit.OK: "one primary, every host up and following it",
    StatusExit.NO_SINGLE_PRIMARY: "no usable primary, or several hosts claim primary (split brain)",
    StatusExit.USAGE: "malformed DSN or bad arguments (nothing was checked)",
    StatusExit.HOST_DOWN: "one primary, but a host is down (or not checked in time),"
    " or a replica follows another timeline (that of a fenced or superseded host)",
}

#: The exit codes as ``--help`` shows them.
EXIT_CODES_HELP = "exit codes of status:\n" + "\n".join(
    textwrap.fill(meaning, 79, initial_indent=f"  {int(code)}  ", subsequent_indent=" " * 5)
    for code, meaning in _MEANINGS.items()
)


def _lag_seconds_of(snapshot: TopologySnapshot) -> Callable[[HostState], float | None] | None:
    # Lag in seconds comes with a later version of the topology: shown once it exists.
    method = getattr(snapshot, "replication_lag_seconds", None)
    return method if callable(method) else None


def topology_note(snapshot: TopologySnapshot, host: HostState) -> str:
    """What the snapshot adds about a host: same server as, fenced, superseded, timeline.

    Taken from :meth:`TopologySnapshot.describe_host` (what it appends to the
    host's own description), so the wording lives in one place.
    """
    own = host.describe()
    line = snapshot.describe_host(host)
    return line[len(own) :].strip() if line.startswith(own) else ""


def _role(host: HostState) -> str:
    return "down" if host.last_error is not None and not host.healthy else host.role.value


def _notes(snapshot: TopologySnapshot, host: HostState) -> str:
    if host.check_count == 0:
        return "not checked yet"
    return topology_note(snapshot, host) or host.last_error or ""


def format_topology(snapshot: TopologySnapshot) -> str:
    """One aligned line per host: role, health, latency, lag and what is wrong with it."""
    lag_seconds = _lag_seconds_of(snapshot)
    header = ["host", "role", "healthy", "latency", "lag"]
    if lag_seconds is not None:
        header.append("lag time")
    rows = [[*header, "notes"]]
    for host in snapshot:
        lag = snapshot.replication_lag_bytes(host)
        row = [
            host.address,
            _role(host),
            "yes" if host.healthy else "no",
            "-" if host.latency is None else f"{host.latency * 1000:.2f} ms",
            "-" if lag is None else f"{lag} B",
        ]
        if lag_seconds is not None:
            seconds = lag_seconds(host)
            row.append("-" if seconds is None else f"{seconds:.3f} s")
        rows.append([*row, _notes(snapshot, host)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def _out_of_service(snapshot: TopologySnapshot) -> list[HostState]:
    return [
        host for host in snapshot if not host.healthy or snapshot.follows_another_timeline(host)
    ]


def verdict(snapshot: TopologySnapshot) -> tuple[StatusExit, list[str]]:
    """The exit code and, unless all is well, one line per problem (for stderr)."""
    claimed = snapshot.claimed_primaries
    if len(claimed) != 1:
        detail = "; ".join(snapshot.describe_host(host) for host in claimed) or "none"
        return StatusExit.NO_SINGLE_PRIMARY, [f"{len(claimed)} hosts claim primary: {detail}"]
    if not snapshot.primaries:
        # A lone claimant on an older timeline, or superseded: it gets no writes.
        lone = snapshot.describe_host(claimed[0])
        return StatusExit.NO_SINGLE_PRIMARY, [f"no usable primary: {lone}"]
    problems = [snapshot.describe_host(host) for host in _out_of_service(snapshot)]
    if problems:
        return StatusExit.HOST_DOWN, problems
    return StatusExit.OK, []


def host_report(snapshot: TopologySnapshot, host: HostState) -> dict[str, Any]:
    """One host as JSON data; ``lag_seconds`` only where the snapshot can tell it."""
    alias_of = snapshot.aliases.get(host.index)
    report: dict[str, Any] = {
        "address": host.address,
        "role": host.role.value,
        "healthy": host.healthy,
        "checked": host.check_count > 0,
        "latency_ms": None if host.latency is None else round(host.latency * 1000, 3),
        "lag_bytes": snapshot.replication_lag_bytes(host),
    }
    lag_seconds = _lag_seconds_of(snapshot)
    if lag_seconds is not None:
        report["lag_seconds"] = lag_seconds(host)
    report.update(
        {
            "timeline": host.timeline,
            "follows_another_timeline": snapshot.follows_another_timeline(host),
            "last_error": host.last_error,
            "fenced": host in snapshot.fenced,
            "superseded": host.index in snapshot.superseded,
            "alias_of": None if alias_of is None else snapshot.hosts[alias_of].address,
            "note": _notes(snapshot, host),
        }
    )
    return report


def json_report(snapshot: TopologySnapshot, version: str) -> dict[str, Any]:
    """The whole status as JSON data: the verdict first, then every host in DSN order."""
    code, problems = verdict(snapshot)
    primaries = snapshot.primaries
    return {
        "pgrouter_version": version,
        "exit_code": int(code),
        "status": code.name.lower(),
        "problems": problems,
        "primary": primaries[0].address if primaries else None,
        "hosts": [host_report(snapshot, host) for host in snapshot],
    }
