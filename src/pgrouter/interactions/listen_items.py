"""What ``pm.listen()`` yields: :class:`Notification` and :class:`ListenGap` (plain data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Notification(NamedTuple):
    """One notification: its channel, its payload, and the pid of the sending backend.

    A named tuple (as psycopg's ``Notify``, in the same order): immutable, and
    built by the listener from the driver's ``(channel, payload, pid)`` without
    a Python-level ``__init__`` - it is made once per notification received.
    """

    channel: str
    payload: str
    pid: int


@dataclass(frozen=True)
class ListenGap:
    """Notifications sent between ``since`` and ``until`` (epoch seconds) may be lost.

    After a lost connection: ``since`` is when the old connection was last known
    good (its last notification or answered liveness NOTIFY), ``until`` when
    LISTEN succeeded on the new one. After a backlog dropped for a slow consumer
    (``reason`` starts with ``consumer too slow``): ``since`` is when the
    consumer had last taken everything received, ``until`` when the backlog was
    dropped. ``reason`` says why (redacted).
    """

    since: float
    until: float
    reason: str


ListenItem = Notification | ListenGap

__all__ = ["ListenGap", "ListenItem", "Notification"]
