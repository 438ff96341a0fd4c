"""What a listener received and its consumer has not taken yet: bounded, a gap on overflow.

The :class:`~pgrouter.interactions.listen.ListenPump` puts each batch it
receives with one :meth:`Backlog.put` (one wake-up per batch, not per
notification); the consumer pops :attr:`Backlog.items` one by one without a
lock or a wait while any are there. The pump runs on the monitor's loop, the
consumer on the caller's loop (async face) or thread (blocking face): only the
pump's thread writes anything but ``popleft()``, and a deque's ``append``,
``extend``, ``popleft`` and ``clear`` are atomic.

Notifications wait as the driver's plain ``(channel, payload, pid)`` tuples and
become :class:`~pgrouter.Notification` objects as they are taken
(``tuple.__new__(Notification, item)``): the garbage collector stops tracking
a plain tuple of str and int at its first pass, while a named tuple (or a
dataclass) stays tracked and, held in a backlog, is promoted to the oldest
generation; the full collections that followed (tens of ms in a large process)
ran once per 20 000 notifications and cost more than all the rest of the
listener.

The bound (``max_pending``, :data:`DEFAULT_MAX_PENDING`): a consumer that falls
behind would otherwise grow the backlog without limit while the server keeps
delivering. When a batch would take it past ``max_pending`` items, the whole
backlog (and the batch) is dropped and a
:class:`~pgrouter.interactions.listen_items.ListenGap` whose reason starts
with ``consumer too slow`` takes its place; what arrives next is kept. Why drop
the whole backlog rather than the overflow alone, or stop reading:

- a consumer handed a gap re-reads its state, after which the dropped items are
  stale anyway: it starts again from the present rather than working through
  ``max_pending`` outdated ones first;
- not reading would move the backlog into the server's notification queue,
  which every session of the cluster shares (a full one makes their NOTIFYs
  fail), and stall the liveness NOTIFY, ending in a reconnect and a gap anyway.

The default, 100 000, is generous: tens of MB of small notifications, and a
consumer that far behind has lost touch with the present already.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .listen_items import ListenGap

#: Items a listener keeps for its consumer by default before it drops them for a gap.
DEFAULT_MAX_PENDING = 100_000
#: The start of a gap's reason when the backlog was dropped.
TOO_SLOW = "consumer too slow"


#: A notification as the driver hands it over: ``(channel, payload, pid)``.
Received = tuple[str, str, int]


@dataclass(frozen=True)
class Ending:
    """The last item of a backlog: the pump stopped (``error`` None) or failed."""

    error: BaseException | None


def check_max_pending(max_pending: object) -> int:
    """``max_pending`` if it is an int >= 1; ``TypeError``/``ValueError`` naming it."""
    if isinstance(max_pending, bool) or not isinstance(max_pending, int):
        raise TypeError(f"max_pending must be an int, not {type(max_pending).__name__}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, not {max_pending}")
    return max_pending


class Backlog:
    """Items received and not yet taken, at most ``max_pending`` (see the module docstring).

    ``wake()`` runs after each :meth:`put` and at :meth:`end`, on the pump's
    thread: the face wakes a consumer waiting for :attr:`items`.
    """

    def __init__(self, max_pending: int, wake: Callable[[], None]) -> None:
        self.max_pending = check_max_pending(max_pending)
        self.items: collections.deque[Received | ListenGap | Ending] = collections.deque()
        self.ended = False  # end() was called
        self.received = 0  # notifications put, over the backlog's life
        self.dropped = 0  # of which dropped for a gap
        self._wake = wake
        self._last_put = time.time()
        # Everything that arrived by this time was taken (see put()).
        self._taken_by = self._last_put
        # The oldest gap still pending (dropped in turn, its since and the
        # reason of a reconnect are kept in the gap that replaces it).
        self._pending_since: float | None = None
        self._pending_reason: str | None = None

    def put(self, batch: Sequence[Received], now: float) -> None:
        """The pump's side: ``batch`` (received at ``now``), in order, after what is pending."""
        self._arrive(now)
        self.received += len(batch)
        self._add(batch, now)

    def put_gap(self, gap: ListenGap) -> None:
        """The pump's side: a reconnect's gap, in order."""
        self._arrive(gap.until)
        if self._pending_since is None or gap.since < self._pending_since:
            self._pending_since = gap.since
        if self._pending_reason is None:
            self._pending_reason = gap.reason
        self._add([gap], gap.until)

    def end(self, error: BaseException | None) -> None:
        """The pump's side: nothing follows; the consumer sees the end after what is pending."""
        self.ended = True
        self.items.append(Ending(error))
        self._wake()

    def _arrive(self, now: float) -> None:
        if not self.items:
            # The batch before this one was taken whole. (A consumer's popleft
            # racing with this look only makes _taken_by older: conservative.)
            self._taken_by = self._last_put
            self._pending_since = self._pending_reason = None
        self._last_put = now

    def _add(self, batch: Sequence[Received | ListenGap], now: float) -> None:
        items = self.items
        if len(items) + len(batch) > self.max_pending:
            self._drop(batch, now)
        else:
            items.extend(batch)
        self._wake()

    def _drop(self, batch: Sequence[Received | ListenGap], now: float) -> None:
        # A copy to count in: the consumer's thread may pop meanwhile (list() of
        # a deque runs in C, holding the GIL).
        pending = [*self.items, *batch]
        self.items.clear()
        since = self._taken_by
        if self._pending_since is not None:
            since = min(since, self._pending_since)
        notifications = sum(type(item) is tuple for item in pending)
        reason = (
            f"{TOO_SLOW}: {notifications} notifications pending,"
            f" max_pending={self.max_pending}; dropped"
        )
        if self._pending_reason is not None:  # a reconnect's gap was among them
            reason += f" (after a gap: {self._pending_reason})"
        self.items.append(ListenGap(since, now, reason))
        self.dropped += notifications
        self._pending_since = since


__all__ = [
    "DEFAULT_MAX_PENDING",
    "TOO_SLOW",
    "Backlog",
    "Ending",
    "Received",
    "check_max_pending",
]
