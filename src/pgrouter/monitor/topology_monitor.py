"""The monitor of one cluster: a check per host, the board, the primary watch.

:class:`TopologyMonitor` is what a face holds to know the cluster: the current
snapshot, a way to wait for a better one, and the events a face feeds back (a
connection broke: check that host now; work started on a host: its
heartbeat resumes). It runs on the event loop it is started on: the caller's,
for the async manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..driver import Driver
from ..dsn import HostDsn
from ..topology import TopologyBoard, TopologySnapshot
from .host_monitor import Admit, HostMonitor
from .primary_watch import PrimaryWatch


class TopologyMonitor:
    """Checks every host of one cluster and publishes what it is, as snapshots."""

    def __init__(
        self,
        hosts: Sequence[HostDsn],
        *,
        driver: Driver[Any, Any],
        admit: Admit,
        refresh_delay: float,
        refresh_timeout: float,
        stopwatch_window_size: int,
        event_driven_checks: bool,
        primary_heartbeat: float | None,
        busy: Callable[[int], bool],
    ) -> None:
        self.board = TopologyBoard(hosts)
        self._event_driven_checks = event_driven_checks
        self.hosts = [
            HostMonitor(
                index=index,
                dsn=host,
                driver=driver,
                board=self.board,
                admit=admit,
                refresh_delay=refresh_delay,
                refresh_timeout=refresh_timeout,
                stopwatch_window_size=stopwatch_window_size,
                primary_heartbeat=primary_heartbeat if event_driven_checks else None,
                busy=_busy_of(busy, index),
            )
            for index, host in enumerate(hosts)
        ]
        # Event-driven checks: with no primary (or a suspect one) every host is
        # re-checked on a short backoff. Off, hosts are checked every
        # refresh_delay only (what hasql does).
        self._primary_watch = PrimaryWatch(
            self.board, [host.request_check for host in self.hosts], refresh_delay
        )

    @property
    def current(self) -> TopologySnapshot:
        return self.board.current

    def start(self) -> None:
        for host in self.hosts:
            host.start()
        if self._event_driven_checks:
            self._primary_watch.start()

    async def stop(self) -> None:
        await self._primary_watch.stop()
        await asyncio.gather(*(host.stop() for host in self.hosts))

    def abandon(self) -> None:
        """Stop every check without waiting (its face was dropped unclosed)."""
        self._primary_watch.abandon()
        for host in self.hosts:
            host.abandon()

    def request_check(self, index: int) -> None:
        """A connection to this host just failed: check it without waiting for the tick."""
        if self._event_driven_checks:
            self.hosts[index].request_check()

    def work_started(self, index: int) -> None:
        """A face handed out a connection to this host, none being out before."""
        self.hosts[index].work_started()


def _busy_of(busy: Callable[[int], bool], index: int) -> Callable[[], bool]:
    return lambda: busy(index)


__all__ = ["TopologyMonitor"]
