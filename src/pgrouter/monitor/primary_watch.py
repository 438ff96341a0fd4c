"""Watches the snapshots for primary trouble: none at all, or more than one.

With no primary, writes wait, so every host is checked again on a short
backoff instead of at the next ``refresh_delay`` tick: the promoted replica is
seen within one backoff step of its promotion, and the waiting writers are
woken by that snapshot. The same happens while the primary is *suspect* (its
check hangs far longer than usual, as when it is frozen): a replica promoted
meanwhile then shows up as a second primary on a newer timeline, and the
split-brain rule sends writes to it before the frozen one's check times out.
Several hosts claiming primary (split brain) is reported once per episode;
:class:`~pgrouter.topology.TopologySnapshot` decides which one gets the writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence

from ..bounded import stop_task
from ..topology import TopologyBoard, TopologySnapshot

logger = logging.getLogger("pgrouter")

#: First re-check delay while no primary is seen.
HUNT_FIRST_DELAY = 0.02
#: For this long the delay stays at its first value (a promotion takes ~0.1-1 s),
#: then it doubles up to ``refresh_delay``.
HUNT_FAST_PHASE = 2.0


class PrimaryWatch:
    """Re-checks every host quickly while no primary is known; reports split brains."""

    def __init__(
        self,
        board: TopologyBoard,
        request_checks: Sequence[Callable[[], None]],
        refresh_delay: float,
    ) -> None:
        self._board = board
        self._request_checks = request_checks
        self._refresh_delay = refresh_delay
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pgrouter-primary-watch")

    def abandon(self) -> None:
        """Stop watching without waiting (the manager was dropped unclosed)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _run(self) -> None:
        reported_split: tuple[int, ...] = ()
        while True:
            snapshot = await self._board.wait_for(
                lambda s, seen=reported_split: _needs_hunt(s) or _split_key(s) != seen,  # type: ignore[misc]
                None,
            )
            split = _split_key(snapshot)
            if split != reported_split:
                reported_split = split
                if split:
                    logger.error(
                        "pgrouter: split brain: %s",
                        "; ".join(map(snapshot.describe_host, snapshot.claimed_primaries)),
                    )
                continue
            if all(host.check_count > 0 for host in snapshot):
                await self._hunt()
            else:  # the first checks are still running; they will publish
                await self._board.wait_for(functools.partial(_newer_than, snapshot), None)

    async def _hunt(self) -> None:
        """Ask every host for a check on a short backoff until a sound primary shows up."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = HUNT_FIRST_DELAY
        primaries = self._board.current.primaries
        if primaries:
            logger.warning(
                "pgrouter: primary %s is slow to answer; re-checking every host",
                primaries[0].address,
            )
        else:
            logger.warning("pgrouter: no primary; re-checking every host until one appears")
        while True:
            for request_check in self._request_checks:
                request_check()
            try:
                snapshot = await self._board.wait_for(_has_sound_primary, delay)
            except asyncio.TimeoutError:
                if loop.time() - started > HUNT_FAST_PHASE:
                    delay = min(delay * 2, self._refresh_delay)
                continue
            logger.warning(
                "pgrouter: primary is %s, found %.0f ms after the hunt began",
                snapshot.primaries[0].address,
                (loop.time() - started) * 1000,
            )
            return


def _needs_hunt(snapshot: TopologySnapshot) -> bool:
    """No primary, or one whose check hangs (frozen?): a promoted replica may be out there."""
    return not _has_sound_primary(snapshot)


def _has_sound_primary(snapshot: TopologySnapshot) -> bool:
    primaries = snapshot.primaries
    return bool(primaries) and not primaries[0].suspect


def _newer_than(old: TopologySnapshot, snapshot: TopologySnapshot) -> bool:
    return snapshot.version > old.version


def _split_key(snapshot: TopologySnapshot) -> tuple[int, ...]:
    return tuple(host.index for host in snapshot.claimed_primaries) if snapshot.split_brain else ()
