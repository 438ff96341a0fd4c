"""One background check per host: is it up, which role, how fast. Knows no pool.

A :class:`HostMonitor` runs the probe on a dedicated connection (so the
callers' pools keep exactly the sizes asked for), keeps a window of probe
times whose median the weighted balancer uses, and publishes every finished
check on the :class:`~pgrouter.topology.TopologyBoard`. Before it publishes a
host as healthy it awaits the *admission* of the faces that serve it
(:data:`Admit`): an async manager's pool keeper opens or rebuilds the host's
pool there, so "healthy" keeps meaning "checked and ready to hand out
connections", while the monitor itself never touches a pool.

Checks run every ``refresh_delay`` seconds, or at once when someone calls
:meth:`HostMonitor.request_check` (a connection just broke on this host). The
host that writes go to is checked more often, every ``primary_heartbeat``
seconds, while connections to it are in use: a frozen primary raises no error,
and only a hanging check tells it apart from a busy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..bounded import abandon, stop_task, wait_bounded, wait_event
from ..driver import Driver, ProbeResult
from ..dsn import HostDsn, redact
from ..topology import HostRole, HostState, TopologyBoard

logger = logging.getLogger("pgrouter")

#: A probe slower than SUSPECT_FACTOR times the host's median probe time (and
#: at least SUSPECT_MIN_DELAY) marks the host suspect while the probe goes on.
SUSPECT_FACTOR = 20
SUSPECT_MIN_DELAY = 0.1

#: stop() waits this long (seconds) for a probe it cancelled to finish cancelling.
ABANDONED_PROBE_GRACE = 1.0

#: What the faces do before a host that passed its check is published healthy:
#: ``admit(index, restarted)`` (``restarted``: the server's start time changed,
#: so every connection opened before is dead). An exception makes the check a
#: failure, with the probe's role.
Admit = Callable[[int, bool], Awaitable[None]]


def describe_error(error: BaseException) -> str:
    """A short, redacted ``Type: message`` for logs and the topology."""
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return redact(f"{type(error).__name__}: {text}" if text else type(error).__name__)


class HostMonitor:
    """Checks one host in the background and publishes what it finds."""

    def __init__(
        self,
        *,
        index: int,
        dsn: HostDsn,
        driver: Driver[Any, Any],
        board: TopologyBoard,
        admit: Admit,
        refresh_delay: float,
        refresh_timeout: float,
        stopwatch_window_size: int,
        primary_heartbeat: float | None = None,
        busy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.index = index
        self.dsn = dsn
        self._driver = driver
        self._board = board
        self._admit = admit
        self._refresh_delay = refresh_delay
        self._primary_heartbeat = primary_heartbeat
        # True while the caller has connections to this host in use: only then
        # does the primary's heartbeat run (an idle manager probes each host
        # once per refresh_delay).
        self._busy = busy
        self._idle_sleep = False  # sleeping refresh_delay as an idle primary
        self._refresh_timeout = refresh_timeout
        self._response_times: deque[float] = deque(maxlen=stopwatch_window_size)
        self._probe_connection: Any = None
        self._abandoned_probe: asyncio.Future[Any] | None = None  # cancelled by stop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"pgrouter-check-{self.dsn.address}")

    async def stop(self) -> None:
        """Stop checking and close the check connection."""
        self._stopping = True
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        probe, self._abandoned_probe = self._abandoned_probe, None
        if probe is not None and not probe.done():
            # Let the driver finish cancelling its query (psycopg talks to the
            # server for it) before the check connection is closed under it.
            await asyncio.wait({probe}, timeout=ABANDONED_PROBE_GRACE)
        await self._drop_probe_connection()

    def abandon(self) -> None:
        """Stop checking without waiting (the manager was dropped unclosed)."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def request_check(self) -> None:
        """Run the next check now instead of at the next tick."""
        self._wake.set()

    @property
    def sleeping_idle(self) -> bool:
        """True while the check sleeps ``refresh_delay`` as an idle primary (readable from
        any thread: a face elsewhere wakes it only then, see :meth:`work_started`)."""
        return self._idle_sleep

    def work_started(self) -> None:
        """A connection to this host was just handed out, and none was before.

        A primary that slept as idle (refresh_delay) is checked now and then
        on its heartbeat, so a freeze under the new work is seen in time.
        Costs nothing unless the checker sleeps as an idle primary.
        """
        if self._idle_sleep:
            self._idle_sleep = False
            self._wake.set()

    def median_response_time(self) -> float | None:
        return statistics.median(self._response_times) if self._response_times else None

    # -- the loop ---------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the check, so a request made during it is not lost.
            self._wake.clear()
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the checks of this host
                logger.exception("pgrouter: check of %s crashed", self.dsn.address)
            await wait_event(self._wake, self._next_check_delay())
            self._idle_sleep = False

    def _next_check_delay(self) -> float:
        if self._primary_heartbeat is not None:
            snapshot = self._board.current
            if snapshot.is_primary(snapshot.hosts[self.index]):
                if self._busy():
                    return min(self._refresh_delay, self._primary_heartbeat)
                self._idle_sleep = True
        return self._refresh_delay

    async def check_once(self) -> HostState:
        """Probe the host, have the faces admit it, publish the result."""
        try:
            result, elapsed = await self._probe()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._drop_probe_connection()
            return self._publish_failure(error)

        self._response_times.append(elapsed)
        role = HostRole.REPLICA if result.in_recovery else HostRole.PRIMARY
        previous = self._board.current.hosts[self.index]
        # Restarted between two checks (a fast restart, a rewind): every
        # connection opened before died with the old server process.
        restarted = previous.server_started_at not in (None, result.server_started_at)
        if restarted:
            logger.info("pgrouter: %s restarted", self.dsn.address)
        try:
            await self._admit(self.index, restarted)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return self._publish_failure(error, role=role)
        return self._publish_success(role, result, elapsed)

    async def _probe(self) -> tuple[ProbeResult, float]:
        """Connect if needed and run the probe, all within ``refresh_timeout``.

        Bounded with :func:`wait_bounded`, not ``wait_for``: a frozen host must
        leave the rotation at the deadline, not when the driver has finished
        unwinding its cancellation.

        A check connection kept from an earlier check may have broken since
        (its backend terminated, the server restarted) while the host is fine:
        such a failure is retried once on a new connection, within the same
        deadline, before the host is declared down. A timeout is not retried.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._refresh_timeout
        reused = self._probe_connection is not None
        try:
            return await self._probe_until(deadline)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not reused or isinstance(error, asyncio.TimeoutError) or loop.time() >= deadline:
                raise
            logger.debug(
                "pgrouter: check connection to %s broke (%s); reconnecting",
                self.dsn.address,
                describe_error(error),
            )
            await self._drop_probe_connection()
            return await self._probe_until(deadline)

    async def _probe_until(self, deadline: float) -> tuple[ProbeResult, float]:
        loop = asyncio.get_running_loop()
        if self._probe_connection is None:
            remaining = max(deadline - loop.time(), 0.001)
            self._probe_connection = await wait_bounded(
                self._driver.connect_probe(self.dsn, remaining),
                remaining,
                dispose_late=self._driver.close_probe,
            )
        started = time.perf_counter()
        probing = asyncio.ensure_future(self._driver.probe(self._probe_connection))
        try:
            done, _ = await asyncio.wait({probing}, timeout=self._suspect_after())
            if not done:
                # Far slower than usual: the host may be frozen. Say so now, so a
                # promoted replica can be looked for before this probe times out.
                self._publish_suspect()
                done, _ = await asyncio.wait({probing}, timeout=max(deadline - loop.time(), 0))
        except asyncio.CancelledError:
            abandon(probing)
            self._abandoned_probe = probing
            raise
        if not done:
            abandon(probing)
            raise asyncio.TimeoutError
        return probing.result(), time.perf_counter() - started

    def _suspect_after(self) -> float:
        """How long a probe may take before the host is suspect: many times its usual."""
        median = self.median_response_time() or 0.0
        return min(max(SUSPECT_MIN_DELAY, SUSPECT_FACTOR * median), self._refresh_timeout)

    async def _drop_probe_connection(self) -> None:
        connection, self._probe_connection = self._probe_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await self._driver.close_probe(connection)

    # -- publishing -------------------------------------------------------

    def _publish_suspect(self) -> None:
        previous = self._board.current.hosts[self.index]
        if previous.healthy and not previous.suspect:
            logger.info("pgrouter: %s is slow to answer its check", self.dsn.address)
            self._board.update(self.index, suspect=True)

    def _publish_success(self, role: HostRole, result: ProbeResult, elapsed: float) -> HostState:
        previous = self._board.current.hosts[self.index]
        if previous.role is not role:
            logger.info(
                "pgrouter: %s is %s (was %s)", self.dsn.address, role.value, previous.role.value
            )
        return self._board.update(
            self.index,
            role=role,
            healthy=True,
            suspect=False,
            latency=self.median_response_time(),
            last_latency=elapsed,
            wal_lsn=result.wal_lsn,
            timeline=result.timeline,
            server_started_at=result.server_started_at,
            system_identifier=result.system_identifier,
            server_port=result.server_port,
            last_error=None,
            checked_at=time.monotonic(),
            check_count=previous.check_count + 1,
        ).hosts[self.index]

    def _publish_failure(
        self, error: BaseException, role: HostRole = HostRole.UNKNOWN
    ) -> HostState:
        previous = self._board.current.hosts[self.index]
        reason = describe_error(error)
        if previous.healthy or previous.check_count == 0:
            logger.warning("pgrouter: %s left the rotation: %s", self.dsn.address, reason)
        return self._board.update(
            self.index,
            role=role,
            healthy=False,
            suspect=False,
            last_error=reason,
            checked_at=time.monotonic(),
            check_count=previous.check_count + 1,
        ).hosts[self.index]
