"""Celery tasks in pgrouter's units of work: a task queued right after a write reads that write.

:func:`setup` connects three of Celery's task signals:

- ``before_task_publish``: the enqueuing code's state (per set: a write token
  taken now on the alias its writes went to, or a pin's expiry; see
  :func:`pgrouter.django.state.outgoing`) goes into the task's headers, under
  :data:`HEADER`;
- ``task_prerun``: the task runs in a fresh unit of work (pins, writes,
  tokens) started from those headers, so its reads of a set go to a replica
  that has replayed the enqueuing request's write, else to the primary;
- ``task_postrun``: that unit of work ends (the task's pins are dropped).

In eager mode (``task_always_eager``) nothing is published: the task runs at
once in the caller's thread, and its unit of work starts from the caller's
state as a publish would have carried it. Headers that are not pgrouter's
form are ignored (a debug log line), never trusted.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from typing import Any

from . import state
from .sets import registry

logger = logging.getLogger("pgrouter")

#: The task header that carries the enqueuing code's state.
HEADER = "pgrouter_carried"

#: Open units of work by task id (prerun and postrun of one task run on one thread).
_open: dict[str, AbstractContextManager[None]] = {}
_open_lock = threading.Lock()
_connected = False


def setup() -> None:
    """Connect the task signals (see the module docstring); safe to call again."""
    global _connected
    from celery import signals

    with _open_lock:
        if _connected:
            return
        signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=HEADER)
        signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=HEADER)
        signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=HEADER)
        _connected = True


def _carried_now() -> dict[str, Any] | None:
    sets = registry()
    if not sets.settings.enabled:
        return None
    carried = state.outgoing(sets.settings.pinning_seconds, frozenset(sets.sets))
    return state.encode(carried) if carried else None


def _on_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if headers is None:
        return
    carried = _carried_now()
    if carried is not None:
        headers[HEADER] = carried


def _header_of(task: Any) -> Any:
    request = getattr(task, "request", None)
    if request is None:
        return None
    found = getattr(request, HEADER, None)
    if found is None:
        headers = getattr(request, "headers", None) or {}
        found = headers.get(HEADER) if isinstance(headers, dict) else None
    return found


def _on_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if task_id is None:
        return
    sets = registry()
    if not sets.settings.enabled:
        return
    data = _header_of(task)
    if data is None and getattr(getattr(task, "request", None), "is_eager", False):
        data = _carried_now()
    carried: state.Carried = {}
    if data is not None:
        try:
            carried = state.carried_in(data, frozenset(sets.sets))
        except ValueError as error:
            logger.debug("pgrouter: task %s: headers ignored (%s)", task_id, error)
    unit = state.unit_of_work(carried)
    unit.__enter__()
    with _open_lock:
        _open[task_id] = unit


def _on_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id is None:
        return
    with _open_lock:
        unit = _open.pop(task_id, None)
    if unit is not None:
        unit.__exit__(None, None, None)


__all__ = ["HEADER", "setup"]
