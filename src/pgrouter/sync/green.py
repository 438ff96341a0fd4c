"""Threads and wake-ups that work the same with and without gevent's monkey patching.

The monitor must run on a real OS thread (its event loop blocks in
``select()``), and the callers' waits must be woken from that thread. Plain
``threading`` does both without gevent. With ``gevent.monkey.patch_all()``,
``threading.Thread`` makes greenlets and ``threading.Condition`` is gevent's,
which must not be notified from another OS thread. So: the thread comes from
gevent's saved original ``threading`` module, and a waiting greenlet is woken
through a hub ``async`` watcher, gevent's thread-safe wake-up.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any


def _patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def real_thread(target: Callable[[], None], name: str) -> Any:
    """Start ``target`` on a daemon OS thread, even under gevent's patching."""
    if _patched():
        monkey = sys.modules["gevent.monkey"]
        original = monkey.get_original("threading", "Thread")
        thread = original(target=target, name=name, daemon=True)
    else:
        thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def original_lock() -> Any:
    """A real OS lock, even under gevent: the monitor's thread and the callers share it.

    Held only for a few bookkeeping steps, never across a wait.
    """
    if _patched():
        return sys.modules["gevent.monkey"].get_original("threading", "Lock")()
    return threading.Lock()


class Wakeups:
    """Wake-ups the monitor thread sends and any thread (or greenlet) waits for.

    A waiter registers *before* it looks at the snapshot, so a publish in
    between still wakes it. Without gevent each waiter is a
    ``threading.Event``; under gevent, a ``gevent.event.Event`` set through a
    hub watcher the notifying thread fires (``async_`` watchers are gevent's
    cross-thread wake-up).
    """

    def __init__(self) -> None:
        self._green = _patched()
        self._lock = original_lock()
        self._waiters: list[_Waiter] = []

    def register(self) -> _Waiter:
        waiter = _GreenWaiter() if self._green else _ThreadWaiter()
        with self._lock:
            self._waiters.append(waiter)
        return waiter

    def forget(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        waiter.close()

    def notify_all(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.wake()


class _Waiter:
    def wait(self, timeout: float | None) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop what the waiter holds (a hub watcher under gevent)."""


class _ThreadWaiter(_Waiter):
    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, timeout: float | None) -> None:
        self._event.wait(timeout)

    def wake(self) -> None:
        self._event.set()


class _GreenWaiter(_Waiter):
    def __init__(self) -> None:
        import gevent
        from gevent.event import Event

        self._event = Event()
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._event.set)

    def wait(self, timeout: float | None) -> None:
        self._event.wait(timeout)

    def wake(self) -> None:
        self._watcher.send()  # thread-safe: the hub sets the event in its own thread

    def close(self) -> None:
        self._watcher.close()


__all__ = ["Wakeups", "original_lock", "real_thread"]
