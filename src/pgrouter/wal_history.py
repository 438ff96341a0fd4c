"""The primary's recent WAL positions over time, so a replica's lag can be told in seconds.

A replica's lag in bytes is plain arithmetic on two positions. In seconds it
is *how long ago the primary was where the replica is now*: the history of
(check time, position) pairs of the primary says when the primary first went
past the replica's position, and the lag is the time from then to the
replica's own check. This is not ``now() - pg_last_xact_replay_timestamp()``,
which grows without bound on an idle primary (no transaction to replay is
not lag). Its resolution is one check interval of the primary: the primary
is seen past a position at its first check after it got there.
"""

from __future__ import annotations

import bisect
from collections import deque

#: Positions kept: at one check per 0.1 s (the heartbeat) about 7 minutes;
#: a replica further behind than the oldest is at least that far behind.
HISTORY_SIZE = 4096


class WalHistory:
    """(monotonic time, WAL position) of one primary's checks, oldest first."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._times: deque[float] = deque(maxlen=size)
        self._positions: deque[int] = deque(maxlen=size)
        #: When the primary was last checked (at any position), None before.
        self.last_seen: float | None = None

    def __len__(self) -> int:
        return len(self._positions)

    def clear(self) -> None:
        """Forget every position (another host took the writes: a new history)."""
        self._times.clear()
        self._positions.clear()
        self.last_seen = None

    def record(self, at: float, position: int) -> None:
        """A check of the primary at ``at`` saw ``position``.

        Positions only grow on one timeline; one seen lower than the last
        (a different server answering, a restore) starts the history anew.
        """
        if self._positions and position < self._positions[-1]:
            self.clear()
        self.last_seen = at
        if self._positions and position == self._positions[-1]:
            return  # idle: the first time it was here is what lag needs
        self._times.append(at)
        self._positions.append(position)

    @property
    def latest(self) -> tuple[float, int] | None:
        """The last (time, position) recorded."""
        if not self._positions:
            return None
        return self._times[-1], self._positions[-1]

    def position_at(self, at: float) -> int | None:
        """Where the primary was at ``at``, as its checks saw it (the oldest kept if earlier)."""
        if not self._positions:
            return None
        index = bisect.bisect_right(self._times, at)
        return self._positions[max(index - 1, 0)]

    def lag_seconds(self, position: int, at: float) -> float | None:
        """How long before ``at`` the primary was first seen past ``position``.

        0 when the primary was never seen past it (the replica has all the
        primary had at its checks); ``None`` with no history at all. Past the
        oldest position kept, the oldest time is the bound (a lower one).
        """
        if not self._positions:
            return None
        index = bisect.bisect_right(self._positions, position)
        if index == len(self._positions):
            return 0.0
        return max(0.0, at - self._times[index])


__all__ = ["HISTORY_SIZE", "WalHistory"]
