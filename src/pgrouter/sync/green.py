"""Threads, loops and wake-ups that work the same with and without gevent's monkey patching.

The monitor runs on an OS thread of its own (its event loop blocks in its own
``select()``), and the callers' waits are woken from that thread. Plain
``threading`` does both without gevent. Under ``gevent.monkey.patch_all()``
almost nothing of ``threading`` is what it says:

- ``threading.Thread``, even gevent's saved original class, starts a greenlet
  (the class's module globals are patched), so :func:`real_thread` starts the
  thread with the saved original ``_thread.start_new_thread``. It makes sure
  the caller's hub exists first: a native thread that made the process's first
  hub would take libev's default loop, and the main thread's hub would then
  stop running.
- The selectors are gevent's, and thread pools start greenlets on the hub of
  the thread that asks, which never runs in a thread blocked in ``epoll``:
  :func:`new_event_loop` gives the monitor's thread a loop on the original
  selector, whose executor starts native threads.
- The callers' pools are the callers' hub's business: a pool whose workers
  are greenlets of another hub never runs them once that hub is gone. So the
  blocking work the monitor asks for (open a host's pool, close a retired
  one) runs through :class:`CallerSide`: in a worker thread without gevent, in
  a greenlet of the callers' hub under gevent.
- gevent's ``Event`` and ``Condition`` must not be set from another OS thread
  without care: a waiting greenlet is woken through a hub ``async`` watcher,
  gevent's thread-safe wake-up (:class:`Wakeups`, :class:`Signal`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _original(module: str, name: str) -> Any:
    return sys.modules["gevent.monkey"].get_original(module, name)


def original_lock() -> Any:
    """A real OS lock, even under gevent: the monitor's thread and the callers share it.

    Held only for a few bookkeeping steps, never across a wait: a greenlet
    that waited while holding it would block its whole hub for the next one.
    """
    if patched():
        return _original("_thread", "allocate_lock")()
    return threading.Lock()


class NativeThread:
    """A daemon OS thread that any thread or greenlet may join."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.name = name
        self._target = target
        self._done = Signal()

    def _run(self) -> None:
        try:
            self._target()
        finally:
            self._done.set()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def __repr__(self) -> str:
        return f"<NativeThread {self.name} {'alive' if self.is_alive() else 'done'}>"


def real_thread(target: Callable[[], None], name: str) -> Any:
    """Start ``target`` on a daemon OS thread, even under gevent's patching.

    Returns the thread (``join(timeout)``, ``is_alive()``); joining it from a
    greenlet lets the hub run.
    """
    if not patched():
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread
    import gevent

    gevent.get_hub()  # this thread's hub before the new thread's (see the module docstring)
    native = NativeThread(target, name)
    _original("_thread", "start_new_thread")(native._run, ())
    return native


class _NativeThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """The monitor loop's executor under gevent: each job on a native thread of its own.

    Only what an event loop sends to its default executor runs here (a host
    name to resolve): rare, so no pool of threads to keep. (A subclass only
    because ``set_default_executor`` wants one; none of its own threads start.)
    """

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        real_thread(run, name="pgrouter-executor")
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None  # nothing of its own runs: each job's thread ends with the job


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for a thread of pgrouter's own (see the module docstring)."""
    if not patched():
        return asyncio.new_event_loop()
    loop = asyncio.SelectorEventLoop(_original("selectors", "DefaultSelector")())
    loop.set_default_executor(_NativeThreadExecutor())
    return loop


class CallerSide:
    """Runs blocking work for the callers' pools, asked from the monitor's thread.

    Made in a caller's thread (the one that starts the monitor): under gevent it
    keeps that thread's hub, and the work runs in a new greenlet there, so the
    pools it opens belong to the hub their users run on. Without gevent the work
    runs in a worker thread.
    """

    def __init__(self) -> None:
        self._hub: Any = None
        if patched():
            import gevent

            self._hub = gevent.get_hub()

    async def run(self, work: Callable[[], T]) -> T:
        """Await ``work()`` from a coroutine on the monitor's loop."""
        if self._hub is None:
            return await asyncio.to_thread(work)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():
                return  # the waiter was cancelled (the monitor stopped)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def in_greenlet() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = work()
            except BaseException as raised:  # handed to the waiter, whatever it is
                error = raised
            with contextlib.suppress(RuntimeError):  # the monitor's loop closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        self._spawn(in_greenlet)
        return await future

    def start(self, work: Callable[[], None], name: str) -> None:
        """Run ``work()`` soon, in the background; from any thread, never waits."""
        if self._hub is None:
            real_thread(work, name=name)
        else:
            self._spawn(work)

    def _spawn(self, work: Callable[[], None]) -> None:
        import gevent

        # Callbacks run in the hub's own thread; the greenlet is spawned there.
        self._hub.loop.run_callback_threadsafe(gevent.spawn, work)


class Wakeups:
    """Wake-ups the monitor thread sends and any thread (or greenlet) waits for.

    A waiter registers *before* it looks at the snapshot, so a publish in
    between still wakes it. Without gevent each waiter is a
    ``threading.Event``; under gevent, a ``gevent.event.Event`` set through a
    hub watcher the notifying thread fires (``async_`` watchers are gevent's
    cross-thread wake-up). Each waiter is decided when it registers, so a
    greenlet on any thread's hub waits on its own hub.
    """

    def __init__(self) -> None:
        self._lock = original_lock()
        self._waiters: list[_Waiter] = []

    def register(self) -> _Waiter:
        waiter = _GreenWaiter() if patched() else _ThreadWaiter()
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


class Signal:
    """A one-shot event any thread sets and any thread or greenlet waits for."""

    def __init__(self) -> None:
        self._set = False
        self._wakeups = Wakeups()

    def set(self) -> None:
        self._set = True
        self._wakeups.notify_all()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        waiter = self._wakeups.register()  # before the look: a set() in between wakes it
        try:
            if not self._set:
                waiter.wait(timeout)
        finally:
            self._wakeups.forget(waiter)
        return self._set


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


__all__ = [
    "CallerSide",
    "NativeThread",
    "Signal",
    "Wakeups",
    "new_event_loop",
    "original_lock",
    "patched",
    "real_thread",
]
