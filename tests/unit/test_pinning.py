"""pinning.py: pins and blocks per context, expiry, nesting, no leaks between tasks or threads.

Real asyncio tasks, real threads and real sleeps; nothing is mocked. Every test
runs inside a :func:`pinning_context`, so no pin outlives its test.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import pytest

from pgrouter.pinning import (
    is_pinned,
    pin,
    pin_until,
    pinned_names,
    pinning_context,
    reads_go_to_primary,
    unpin_all,
    unpinned_replica,
    use_primary,
)
from pgrouter.routing import pinning as routing_pinning

T = TypeVar("T")


@pytest.fixture(autouse=True)
def fresh_pins() -> Iterator[None]:
    with pinning_context():
        yield


def run_in_new_thread(work: Callable[[], T]) -> T:
    """Run ``work`` on a thread of its own (a fresh context) and return its result."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(work())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    return results[0]


class Rendezvous:
    """Every task waits in :meth:`wait` until all ``parties`` have arrived."""

    def __init__(self, parties: int) -> None:
        self._parties = parties
        self._arrived = 0
        self._everyone = asyncio.Event()

    async def wait(self) -> None:
        self._arrived += 1
        if self._arrived == self._parties:
            self._everyone.set()
        await self._everyone.wait()


# --- each function, on its own ----------------------------------------------


def test_nothing_is_pinned_at_first() -> None:
    assert not is_pinned()
    assert not is_pinned("other")
    assert not reads_go_to_primary("default")
    assert pinned_names() == {}


def test_pin_sends_reads_of_that_name_only_to_the_primary() -> None:
    pin()
    pin("reports")
    assert is_pinned() and is_pinned("default")
    assert is_pinned("reports")
    assert not is_pinned("billing")
    assert reads_go_to_primary("default")
    assert reads_go_to_primary("reports")
    assert not reads_go_to_primary("billing")
    assert pinned_names() == {"default": None, "reports": None}


def test_unpin_all_drops_every_pin() -> None:
    pin()
    pin("reports", seconds=60)
    unpin_all()
    assert not is_pinned()
    assert not is_pinned("reports")
    assert not reads_go_to_primary("default")
    assert pinned_names() == {}
    unpin_all()  # nothing to drop: fine
    assert pinned_names() == {}


@pytest.mark.parametrize("seconds", [0, -1, math.nan])
def test_pin_refuses_a_duration_that_is_not_above_zero(seconds: float) -> None:
    with pytest.raises(ValueError, match="above zero"):
        pin(seconds=seconds)
    assert not is_pinned()


def test_pinned_names_is_a_copy_the_caller_may_change() -> None:
    pin()
    names = pinned_names()
    names.clear()
    names["billing"] = None
    assert is_pinned()
    assert not is_pinned("billing")


# --- expiry -----------------------------------------------------------------


def test_a_pin_with_seconds_ends_after_them() -> None:
    pin(seconds=0.3)
    pin("reports")
    assert is_pinned()
    assert reads_go_to_primary("default")
    assert set(pinned_names()) == {"default", "reports"}
    time.sleep(0.4)
    assert not is_pinned()
    assert not reads_go_to_primary("default")
    assert pinned_names() == {"reports": None}
    assert is_pinned("reports")


def test_pinning_again_never_shortens_a_pin() -> None:
    pin(seconds=0.2)
    pin(seconds=30)  # later: extends
    pin(seconds=0.01)  # earlier: ignored
    pin("reports")
    pin("reports", seconds=0.01)  # open-ended stays open-ended
    time.sleep(0.3)
    assert is_pinned()
    assert is_pinned("reports")
    assert pinned_names()["reports"] is None


def test_an_expired_pin_can_be_made_again() -> None:
    pin(seconds=0.05)
    time.sleep(0.1)
    assert not is_pinned()
    pin(seconds=30)
    assert is_pinned()


def test_pinned_names_gives_wall_clock_expiries() -> None:
    pin(seconds=30)
    pin("reports")
    names = pinned_names()
    expires_at = names["default"]
    assert expires_at is not None
    assert abs(expires_at - (time.time() + 30)) < 1
    assert names["reports"] is None


def test_pin_until_a_wall_clock_time() -> None:
    pin_until("default", time.time() + 0.3)
    pin_until("reports", None)
    assert is_pinned()
    assert is_pinned("reports")
    time.sleep(0.4)
    assert not is_pinned()
    assert is_pinned("reports")


def test_pin_until_a_time_already_past_pins_nothing() -> None:
    pin_until("default", time.time() - 1)
    assert not is_pinned()
    assert pinned_names() == {}


def test_pin_until_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pin_until("default", math.nan)


def test_pins_carried_in_a_cookie_come_back_in_the_next_request() -> None:
    with pinning_context():
        pin(seconds=30)
        pin("reports")
        cookie = json.dumps(pinned_names())
    assert not is_pinned()

    def next_request() -> tuple[bool, bool, dict[str, float | None]]:
        # Another thread: a context that never saw the pins, as another process.
        assert not is_pinned()
        with pinning_context():
            for name, expires_at in json.loads(cookie).items():
                pin_until(name, expires_at)
            return is_pinned(), is_pinned("reports"), pinned_names()

    default_pinned, reports_pinned, names = run_in_new_thread(next_request)
    assert default_pinned and reports_pinned
    expires_at = names["default"]
    assert expires_at is not None
    assert abs(expires_at - (time.time() + 30)) < 1
    assert names["reports"] is None


# --- blocks and nesting -----------------------------------------------------


def test_use_primary_sends_reads_to_the_primary_inside_only() -> None:
    with use_primary():
        assert reads_go_to_primary("default")
        assert not reads_go_to_primary("reports")
        assert not is_pinned()  # a block is not a pin
    assert not reads_go_to_primary("default")


def test_use_primary_nests() -> None:
    with use_primary():
        with use_primary():
            assert reads_go_to_primary("default")
        assert reads_go_to_primary("default")
        with use_primary("reports"):
            assert reads_go_to_primary("default")
            assert reads_go_to_primary("reports")
        assert not reads_go_to_primary("reports")
    assert not reads_go_to_primary("default")


def test_blocks_are_restored_when_their_body_raises() -> None:
    with pytest.raises(KeyError), use_primary():
        raise KeyError("boom")
    assert not reads_go_to_primary("default")
    pin()
    with pytest.raises(KeyError), unpinned_replica():
        raise KeyError("boom")
    assert reads_go_to_primary("default")


def test_unpinned_replica_sends_reads_to_replicas_despite_a_pin() -> None:
    pin()
    with unpinned_replica():
        assert not reads_go_to_primary("default")
        assert is_pinned()  # the pin is still there, just not obeyed here
        with unpinned_replica():
            assert not reads_go_to_primary("default")
        assert not reads_go_to_primary("default")
    assert reads_go_to_primary("default")


def test_unpinned_replica_without_a_pin_changes_nothing() -> None:
    with unpinned_replica():
        assert not reads_go_to_primary("default")
    assert not reads_go_to_primary("default")


def test_the_innermost_block_wins() -> None:
    pin()
    with use_primary():
        with unpinned_replica():
            assert not reads_go_to_primary("default")
            with use_primary():
                assert reads_go_to_primary("default")
            assert not reads_go_to_primary("default")
        assert reads_go_to_primary("default")
    with unpinned_replica(), use_primary():
        assert reads_go_to_primary("default")


def test_blocks_are_per_name() -> None:
    pin()
    pin("reports")
    with unpinned_replica("reports"):
        assert reads_go_to_primary("default")
        assert not reads_go_to_primary("reports")
    with use_primary("billing"):
        assert reads_go_to_primary("billing")
        assert not reads_go_to_primary("search")


def test_pins_made_inside_a_block_outlive_it() -> None:
    with unpinned_replica():
        pin()
        assert not reads_go_to_primary("default")
    assert reads_go_to_primary("default")
    with use_primary():
        unpin_all()
        assert reads_go_to_primary("default")  # the block still applies
    assert not reads_go_to_primary("default")


def test_a_block_object_is_single_use() -> None:
    block = use_primary()
    with block:
        with pytest.raises(RuntimeError, match="single-use"), block:
            pass
        assert reads_go_to_primary("default")
    assert not reads_go_to_primary("default")
    with pytest.raises(RuntimeError, match="single-use"), block:
        pass


def test_a_block_must_end_in_the_context_it_began_in() -> None:
    block = use_primary()
    block.__enter__()
    elsewhere = contextvars.copy_context()
    with pytest.raises(ValueError):
        elsewhere.run(block.__exit__, None, None, None)
    block.__exit__(None, None, None)
    assert not reads_go_to_primary("default")


def test_nothing_pinned_returns_to_the_shared_empty_state() -> None:
    # The hot path tests the state by identity: every change that leaves nothing
    # pinned and no block open must bring that one object back.
    def state_is_empty() -> bool:
        return routing_pinning._state.get() is routing_pinning._NOTHING

    assert state_is_empty()
    with use_primary(), unpinned_replica("reports"):
        pin()
    assert not state_is_empty()
    unpin_all()
    assert state_is_empty()
    with use_primary():
        pin()
        unpin_all()
    assert state_is_empty()


# --- pinning_context --------------------------------------------------------


def test_pinning_context_starts_empty_and_restores_the_outer_pins() -> None:
    pin()
    pin("reports", seconds=60)
    outer = pinned_names()
    with pinning_context():
        assert not is_pinned()
        assert pinned_names() == {}
        pin("billing")
        assert reads_go_to_primary("billing")
        with pinning_context():
            assert pinned_names() == {}
            pin("search")
        assert set(pinned_names()) == {"billing"}
        unpin_all()
    assert pinned_names().keys() == outer.keys()
    assert is_pinned()
    assert not is_pinned("billing")


def test_pinning_context_restores_after_an_error() -> None:
    pin()
    with pytest.raises(KeyError), pinning_context():
        pin("billing")
        raise KeyError("boom")
    assert set(pinned_names()) == {"default"}


def test_pinning_context_keeps_the_blocks_around_it() -> None:
    with use_primary(), pinning_context():
        assert reads_go_to_primary("default")
        assert not is_pinned()
    pin()
    with unpinned_replica(), pinning_context():
        pin()
        assert not reads_go_to_primary("default")


async def test_pinning_context_isolates_units_of_work_in_one_task() -> None:
    pin("outer")
    for request in range(3):
        with pinning_context():
            assert pinned_names() == {}
            pin(f"request-{request}")
            await asyncio.sleep(0)
            assert set(pinned_names()) == {f"request-{request}"}
    assert set(pinned_names()) == {"outer"}


# --- asyncio tasks ----------------------------------------------------------


async def test_blocks_hold_across_awaits() -> None:
    pin()
    with unpinned_replica():
        await asyncio.sleep(0.01)
        assert not reads_go_to_primary("default")
        with use_primary():
            await asyncio.sleep(0)
            assert reads_go_to_primary("default")
    assert reads_go_to_primary("default")


async def test_a_task_inherits_the_pins_of_its_creation_and_no_more() -> None:
    pin("before")
    parent_pinned = asyncio.Event()
    child_done = asyncio.Event()

    async def child() -> set[str]:
        await parent_pinned.wait()
        seen = set(pinned_names())
        unpin_all()
        pin("from-child")
        child_done.set()
        return seen

    task = asyncio.create_task(child())
    pin("after")
    parent_pinned.set()
    seen_by_child = await task
    assert seen_by_child == {"before"}
    assert child_done.is_set()
    assert set(pinned_names()) == {"before", "after"}


async def test_a_thousand_tasks_half_pinned_see_only_their_own_pins() -> None:
    # Every task inherits the parent's pin: a state shared by reference, not
    # replaced on change, would carry one task's pins into all the others.
    pin("parent")
    tasks = 1000
    pinned_phase = Rendezvous(tasks)
    flipped_phase = Rendezvous(tasks)

    async def check(own: set[str], primary: bool) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            assert set(pinned_names()) == own
            assert is_pinned() is ("default" in own)
            assert reads_go_to_primary("default") is primary

    async def work(i: int) -> None:
        pinner = i % 2 == 0
        mine = f"task-{i}"
        if pinner:
            pin()
            pin(mine, seconds=60)
        await pinned_phase.wait()
        await check({"parent", "default", mine} if pinner else {"parent"}, primary=pinner)

        # Every task flips: the pinners unpin, the others pin, and half of all
        # tasks hold a block open across the awaits.
        if pinner:
            unpin_all()
        else:
            pin(mine)
        after = set() if pinner else {"parent", mine}
        if i % 4 < 2:
            with use_primary():
                await flipped_phase.wait()
                await check(after, primary=True)
        elif not pinner:
            with unpinned_replica(mine):
                await flipped_phase.wait()
                await check(after, primary=False)
                assert not reads_go_to_primary(mine)
        else:
            await flipped_phase.wait()
            await check(after, primary=False)
        assert reads_go_to_primary(mine) is not pinner

    await asyncio.gather(*(work(i) for i in range(tasks)))
    assert pinned_names().keys() == {"parent"}
    assert not reads_go_to_primary("default")


# --- threads ----------------------------------------------------------------


@pytest.mark.skipif(
    bool(getattr(sys.flags, "thread_inherit_context", 0)),
    reason="this Python copies the caller's context into new threads",
)
def test_a_new_thread_starts_with_no_pins() -> None:
    pin()
    with use_primary("reports"):
        seen = run_in_new_thread(
            lambda: (is_pinned(), reads_go_to_primary("reports"), pinned_names())
        )
    assert seen == (False, False, {})
    assert is_pinned()


async def test_to_thread_carries_a_copy_of_the_pins() -> None:
    pin()

    def in_thread() -> bool:
        pinned = is_pinned()
        unpin_all()
        return pinned

    assert await asyncio.to_thread(in_thread)
    assert is_pinned()


def test_sixteen_threads_half_pinned_see_only_their_own_pins() -> None:
    # Half the threads start in a copy of this context (as asyncio.to_thread
    # does), holding the parent's pin; the others start fresh.
    pin("parent")
    threads = 16
    barrier = threading.Barrier(threads, timeout=10)
    errors: list[BaseException] = []

    def check(own: set[str], primary: bool) -> None:
        for _ in range(3):
            time.sleep(0.001)
            assert set(pinned_names()) == own
            assert is_pinned() is ("default" in own)
            assert reads_go_to_primary("default") is primary

    def work(i: int, inherited: set[str]) -> None:
        pinner = i % 2 == 0
        mine = f"thread-{i}"
        if pinner:
            pin()
            pin(mine, seconds=60)
        barrier.wait()
        check(inherited | {"default", mine} if pinner else inherited, primary=pinner)
        barrier.wait()
        if pinner:
            unpin_all()
        else:
            pin()
        after = set() if pinner else inherited | {"default"}
        if i % 3 == 0:
            with use_primary():
                barrier.wait()
                check(after, primary=True)
        else:
            barrier.wait()
            check(after, primary=not pinner)
        barrier.wait()
        with pinning_context():
            check(set(), primary=False)
        check(after, primary=not pinner)

    def guarded(i: int, inherited: set[str]) -> None:
        try:
            work(i, inherited)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    workers = []
    for i in range(threads):
        if i % 4 < 2:
            run = contextvars.copy_context().run
            target = partial(run, guarded, i, {"parent"})
        else:
            target = partial(contextvars.Context().run, guarded, i, set())
        workers.append(threading.Thread(target=target))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers)
    first_failures = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    assert not first_failures, first_failures
    assert not errors
    assert pinned_names().keys() == {"parent"}
