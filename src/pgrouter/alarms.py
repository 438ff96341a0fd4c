"""One event-loop timer for many deadlines that almost never ring.

Every acquire that waits on a full pool needs a deadline, and every asyncpg
release a bound on its reset. Nearly all of them are disarmed long before
they are due. A loop timer each (``asyncio.timeout()``, or a driver's own
timeout) is costly exactly for that reason: a cancelled ``TimerHandle`` stays
in the loop's heap until it reaches the head, and each of the heap's
comparisons on the way is a Python-level ``TimerHandle.__lt__``. Under
contention that was most of what pgrouter cost on top of a bare asyncpg pool
(about 80 000 of its 100 000 extra CPU instructions per acquire + query +
release, counted with callgrind).

An :class:`AlarmClock` keeps its deadlines in a heap of plain tuples, compared
in C, and holds one loop timer, for the earliest deadline still armed.
Disarming only marks an alarm; marked ones are dropped when they reach the
head, or all at once when they outnumber the armed ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
from collections.abc import Callable
from types import TracebackType

#: Below this many entries the heap is never compacted.
_COMPACT_FLOOR = 256


class Alarm:
    """A callback due at a time; :meth:`disarm` it once it is no longer needed."""

    __slots__ = ("_callback", "_clock", "rang")

    def __init__(self, clock: AlarmClock, callback: Callable[[], object]) -> None:
        self._clock = clock
        self._callback: Callable[[], object] | None = callback
        #: True once the callback was called.
        self.rang = False

    @property
    def armed(self) -> bool:
        return self._callback is not None

    def disarm(self) -> None:
        if self._callback is not None:
            self._callback = None
            self._clock._armed -= 1


class AlarmClock:
    """Alarms on one event loop, served by a single loop timer."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # the first one to set an alarm
        # (when, sequence number, alarm): the number breaks ties, so alarms
        # themselves are never compared.
        self._heap: list[tuple[float, int, Alarm]] = []
        self._sequence = itertools.count()
        self._armed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = float("inf")

    def __len__(self) -> int:
        """Alarms still armed."""
        return self._armed

    def call_at(self, when: float, callback: Callable[[], object]) -> Alarm:
        """Call ``callback`` at loop time ``when`` unless the alarm is disarmed first."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        alarm = Alarm(self, callback)
        self._armed += 1
        heap = self._heap
        if len(heap) > _COMPACT_FLOOR and len(heap) > 2 * self._armed:
            heap[:] = [entry for entry in heap if entry[2]._callback is not None]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, next(self._sequence), alarm))
        if when < self._timer_when:
            self._set_timer(when)
        return alarm

    def timeout_at(self, when: float | None) -> Deadline:
        """``with clock.timeout_at(when):`` as ``asyncio.timeout_at(when)``, on this clock.

        ``None``: no deadline, but the wait can still be tripped (:meth:`Deadline.trip`).
        """
        return Deadline(self, when)

    def close(self) -> None:
        """Disarm everything and drop the loop timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = float("inf")
        for _, _, alarm in self._heap:
            alarm.disarm()
        self._heap.clear()

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None  # set by the first call_at()
        self._timer = self._loop.call_at(when, self._ring, when)
        self._timer_when = when

    def _ring(self, due: float) -> None:
        """The loop timer fired: call every alarm due by now, then wait for the next."""
        self._timer = None
        self._timer_when = float("inf")
        # The loop may run a timer a clock resolution early: what was due then is due.
        assert self._loop is not None
        now = max(self._loop.time(), due)
        heap = self._heap
        while heap:
            when, _, alarm = heap[0]
            callback = alarm._callback
            if callback is None:
                heapq.heappop(heap)
            elif when <= now:
                heapq.heappop(heap)
                alarm.disarm()
                alarm.rang = True
                callback()
            else:
                self._set_timer(when)
                return


class HostLeft(Exception):
    """A :class:`Deadline` was tripped: the host the task waited on left the rotation."""


class Deadline:
    """Cancels the current task at ``when``; the cancellation leaves the block as a timeout.

    The same contract as ``asyncio.timeout_at()``: ``asyncio.TimeoutError``
    (the builtin ``TimeoutError`` on 3.11+) replaces the ``CancelledError``
    the deadline caused, and a cancellation from outside still propagates as
    a cancellation, also when both happen at once.

    :meth:`trip` ends the wait early, for another reason than time: the
    block then ends with :class:`HostLeft`. ``when=None`` is a wait with no
    deadline of its own that can still be tripped.
    """

    __slots__ = ("_alarm", "_cancelling", "_clock", "_fired", "_task", "_tripped", "_when")

    def __init__(self, clock: AlarmClock, when: float | None) -> None:
        self._clock = clock
        self._when = when
        self._tripped = False
        self._fired = False

    @property
    def expired(self) -> bool:
        return self._alarm is not None and self._alarm.rang

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Deadline must be entered inside a task")
        self._task = task
        # Python 3.11 counts cancellation requests, so the deadline can tell its
        # own from one that came from outside (as asyncio.timeout() does).
        self._cancelling = 0
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        self._alarm: Alarm | None = (
            None if self._when is None else self._clock.call_at(self._when, self._ring)
        )
        return self

    def _ring(self) -> None:
        self._fired = True
        self._task.cancel()

    def trip(self) -> None:
        """End the wait now with :class:`HostLeft` (nothing if it already ended)."""
        if self._fired:
            return
        if self._alarm is not None:
            self._alarm.disarm()
        self._fired = self._tripped = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._fired:
            if self._alarm is not None:
                self._alarm.disarm()
            return
        if sys.version_info >= (3, 11) and self._task.uncancel() > self._cancelling:
            return  # cancelled from outside too: that cancellation goes on
        if exc_type is asyncio.CancelledError:
            if self._tripped:
                raise HostLeft from exc
            raise asyncio.TimeoutError from exc


__all__ = ["Alarm", "AlarmClock", "Deadline", "HostLeft"]
